"""Shared test set-up: a derandomised hypothesis profile for CI, headless matplotlib."""

from __future__ import annotations

import os

import matplotlib

matplotlib.use("Agg")

from hypothesis import HealthCheck, settings  # noqa: E402

settings.register_profile(
    "ci",
    derandomize=True,
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", max_examples=40, deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else os.environ.get("HYPOTHESIS_PROFILE", "dev"))


# --------------------------------------------------------------------------- fixtures
import pytest  # noqa: E402

TINY_SYNTH = dict(n_users=600, n_items=300, n_communities=6, n_max=150, activity_median=15.0)


@pytest.fixture(scope="session")
def tiny_dataset():
    """A small planted synthetic dataset (about 480 train users x 300 items)."""
    from radius.data.synthetic import SyntheticParams, default_dataset

    return default_dataset(SyntheticParams(**TINY_SYNTH, seed=1))


@pytest.fixture(scope="session")
def tiny_config():
    """A training config whose models train in a few seconds on 2 cores."""
    from radius.training.config import TrainConfig

    return TrainConfig(
        hidden_dims=(32,), latent_dim=8, epochs=8, patience=8, batch_size=100, anneal_epochs=4
    )


@pytest.fixture(scope="session")
def tiny_ctx(tiny_dataset, tiny_config, tmp_path_factory):
    """A VerifyContext on the tiny dataset with quick options and a private model cache."""
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    return VerifyContext(
        dataset=tiny_dataset,
        options=VerifyOptions(seed=0, n_pairs=80, n_users=40, n_mc=800, seeds=2, quick=True),
        base_config=tiny_config,
        cache_dir=tmp_path_factory.mktemp("models"),
    )


@pytest.fixture(scope="session")
def tiny_recvae_ctx(tiny_dataset, tiny_config, tmp_path_factory):
    """The tiny context with RecVAE models (one encoder pass per epoch, a few seconds)."""
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    return VerifyContext(
        dataset=tiny_dataset,
        options=VerifyOptions(seed=0, n_pairs=80, n_users=40, n_mc=800, seeds=2, quick=True),
        base_config=tiny_config.replace(model="recvae", enc_epochs=1, epochs=6, patience=6),
        cache_dir=tmp_path_factory.mktemp("recvae-models"),
    )
