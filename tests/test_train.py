"""Training: determinism, resume, atomic checkpoints, cache, refusal of foreign data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radius.errors import CheckpointError, RadiusError
from radius.training.build import resolve_device
from radius.training.cache import get_model
from radius.training.checkpoints import load_checkpoint
from radius.training.config import TrainConfig, setting_config
from radius.training.trainer import train


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return setting_config("pia", tiny_config, epochs=4, patience=4)


def test_same_command_twice_gives_identical_metrics(tiny_dataset, cfg, tmp_path):
    """Seeded CPU training is deterministic: same config twice -> same numbers to the last digit."""
    a = train(tiny_dataset, cfg, checkpoint=tmp_path / "a.pt", progress=False)
    b = train(tiny_dataset, cfg, checkpoint=tmp_path / "b.pt", progress=False)
    assert a.test["means"] == b.test["means"]
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    for (k, v), (_, w) in zip(a.model.state_dict().items(), b.model.state_dict().items()):
        assert torch.equal(v, w), k
    c = train(tiny_dataset, cfg.replace(seed=1), progress=False)
    assert c.test["means"] != a.test["means"]


def test_resume_continues_bit_for_bit(tiny_dataset, cfg, tmp_path):
    """Stopping after 2 epochs and resuming gives the same model as one uninterrupted run."""
    full = train(tiny_dataset, cfg, checkpoint=tmp_path / "full.pt", progress=False)
    part = train(tiny_dataset, cfg, checkpoint=tmp_path / "r.pt", progress=False, stop_after=2)
    assert part.meta["paused"] and len(part.history) == 2
    done = train(tiny_dataset, cfg, checkpoint=tmp_path / "r.pt", progress=False, resume=True)
    assert [h["loss"] for h in done.history] == [h["loss"] for h in full.history]
    assert done.test["means"] == full.test["means"]


def test_checkpoint_is_written_atomically_and_loads(tiny_dataset, cfg, tmp_path):
    """A finished checkpoint leaves no temporary files and reloads to the same predictions."""
    res = train(tiny_dataset, cfg, checkpoint=tmp_path / "m.pt", progress=False)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.pt", "m.pt.log.json"]
    loaded = load_checkpoint(tmp_path / "m.pt", tiny_dataset)
    x = torch.as_tensor(tiny_dataset.test_tr[:5].toarray())
    torch.testing.assert_close(loaded.model.encode(x)[0], res.model.encode(x)[0])
    assert loaded.payload["data_hash"] == tiny_dataset.hash
    assert loaded.payload["test"]["means"] == res.test["means"]


def test_checkpoint_for_other_data_is_refused(tiny_dataset, cfg, tmp_path):
    """Loading a checkpoint with a dataset of another hash raises CheckpointError naming both."""
    from radius.data.synthetic import SyntheticParams, default_dataset

    train(tiny_dataset, cfg, checkpoint=tmp_path / "m.pt", progress=False, stop_after=1)
    other = default_dataset(SyntheticParams(n_users=300, n_items=120, n_communities=4, n_max=100))
    with pytest.raises(CheckpointError, match=f"not on 'synthetic' \\(hash {other.hash}\\)"):
        load_checkpoint(tmp_path / "m.pt", other)
    with pytest.raises(CheckpointError, match="config differs"):
        train(tiny_dataset, cfg.replace(lr=0.01), checkpoint=tmp_path / "m.pt", resume=True)


def test_corrupt_checkpoint_is_a_clear_error(tmp_path):
    """A file that is not a checkpoint gives CheckpointError, not a pickle traceback."""
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable radius checkpoint"):
        load_checkpoint(bad)
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "missing.pt")


def test_get_model_trains_once(tiny_dataset, cfg, tmp_path, monkeypatch):
    """The content-keyed cache trains a config once; the second request loads it."""
    import radius.training.trainer as rt

    calls = []
    real = rt.train

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(rt, "train", counting)
    m1 = get_model(tiny_dataset, cfg, cache_dir=tmp_path)
    m2 = get_model(tiny_dataset, cfg, cache_dir=tmp_path)
    assert len(calls) == 1
    x = torch.as_tensor(tiny_dataset.test_tr[:3].toarray())
    torch.testing.assert_close(m1.encode(x)[0], m2.encode(x)[0])


def test_training_learns_something(tiny_dataset, tiny_config):
    """A trained model ranks held-out items far better than its untrained initialisation."""
    from radius.training.build import build_model
    from radius.training.metrics import evaluate

    res = train(tiny_dataset, tiny_config, progress=False)
    untrained = evaluate(
        build_model(tiny_config, tiny_dataset.n_items), tiny_dataset.test_tr, tiny_dataset.test_te
    ).means["ndcg@100"]
    assert res.test["means"]["ndcg@100"] > untrained + 0.05
    assert np.isfinite([h["loss"] for h in res.history]).all()


def test_cuda_request_without_cuda_is_a_clear_error():
    """--device cuda on a machine without CUDA names the problem instead of crashing later."""
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    else:
        with pytest.raises(RadiusError, match="CUDA is not available"):
            resolve_device("cuda")
    assert resolve_device("cpu").type == "cpu"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"keep_rate": 0.0}, "keep_rate \\(rho\\) must be in \\(0, 1\\], got 0.0"),
        ({"lambda_a": -1.0}, "lambda_a must be >= 0, got -1.0"),
        ({"model": "vae"}, "model must be 'multvae' or 'recvae', got 'vae'"),
        ({"device": "tpu"}, "device must be"),
    ],
)
def test_config_validation_messages(change, message):
    """Bad config values raise RadiusError with the exact problem."""
    with pytest.raises(RadiusError, match=message):
        TrainConfig().replace(**change)


def test_unknown_config_field_lists_valid_ones():
    """An unknown field name is refused with the list of valid names."""
    with pytest.raises(RadiusError, match="unknown config field\\(s\\) \\['bogus'\\]"):
        TrainConfig().replace(bogus=1)
    with pytest.raises(RadiusError, match="did you mean 'masking'"):
        setting_config("maskng")


# --------------------------------------------------------------------------- recipe (issue 10)
def test_defaults_are_the_reference_recipe():
    """Multi-VAE: 200 epochs, patience 20, beta annealed over 50 epochs, lr 1e-3, input
    normalised then keep-masked; PIA: lambda_A 1, anchors ~ N(0, 0.01^2)."""
    c = TrainConfig()
    assert (c.epochs, c.patience, c.anneal_epochs, c.lr) == (200, 20, 50.0, 1e-3)
    assert c.input_convention == "normalize-mask" and c.anchor_init_scale == 0.01
    pia = setting_config("pia")
    assert (pia.keep_rate, pia.lambda_a) == (0.5, 1.0)
    assert c.key_dict()["input_convention"] == "normalize-mask"


def test_recvae_preset_and_explicit_values_used_as_is():
    """model=recvae takes RecVAE's reference recipe (lr 5e-4, gamma 0.005, 3 encoder
    passes, rho 0.5, 600/200, batch 500) with a 200-epoch budget and patience 20; a value
    set explicitly (``--set``) survives a change of model, one left to its default
    re-resolves."""
    r = TrainConfig(model="recvae")
    assert (r.lr, r.epochs, r.gamma, r.enc_epochs, r.keep_rate) == (5e-4, 200, 0.005, 3, 0.5)
    assert r.patience == 20
    assert (r.hidden_dims, r.latent_dim, r.batch_size) == ((600,), 200, 500)
    assert r.input_convention == "normalize-mask"
    assert TrainConfig.for_model("recvae") == r
    assert TrainConfig().replace(model="recvae") == r
    assert setting_config("masking", TrainConfig(), model="recvae").lr == 5e-4
    kept = TrainConfig(lr=1e-3, epochs=7).replace(model="recvae")
    assert (kept.lr, kept.epochs) == (1e-3, 7)
    assert setting_config("pia", TrainConfig(), model="recvae", lr=2e-3, epochs=3).lr == 2e-3
    back = r.replace(model="multvae")
    assert (back.lr, back.epochs) == (1e-3, 200)
    with pytest.raises(RadiusError, match="input_convention must be one of"):
        TrainConfig(input_convention="dropout")


def test_stopped_early_is_recorded(tiny_dataset, tiny_config, tmp_path):
    """Patience running out is recorded as stopped="early" in meta, history, checkpoint
    and log JSON, with no warning; the convention is recorded beside it."""
    import json
    import warnings

    cfg = setting_config("masking", tiny_config, epochs=30, patience=1, lr=0.05)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no cap warning may be raised
        res = train(tiny_dataset, cfg, checkpoint=tmp_path / "e.pt", progress=False)
    assert res.meta["stopped"] == "early" and res.meta["warnings"] == []
    assert res.meta["epochs_run"] < 30 and res.history[-1]["stopped"] == "early"
    assert res.meta["input_convention"] == "normalize-mask"
    payload = load_checkpoint(tmp_path / "e.pt").payload
    assert payload["stopped"] == "early" and payload["input_convention"] == "normalize-mask"
    log = json.loads((tmp_path / "e.pt.log.json").read_text())
    assert log["stopped"] == "early" and log["config"]["input_convention"] == "normalize-mask"


def test_hitting_the_cap_is_recorded_and_warned(tiny_dataset, tiny_config, tmp_path):
    """A run that reaches its epoch budget is stopped="cap", warns (EpochCapWarning, on
    stderr) and lists the warning in meta, checkpoint and log."""
    import json

    from radius.training.trainer import EpochCapWarning

    cfg = setting_config("clean", tiny_config, epochs=2, patience=5)
    with pytest.warns(EpochCapWarning, match="epoch cap \\(2 epochs"):
        res = train(tiny_dataset, cfg, checkpoint=tmp_path / "c.pt", progress=False)
    assert res.meta["stopped"] == "cap" and len(res.meta["warnings"]) == 1
    assert load_checkpoint(tmp_path / "c.pt").payload["stopped"] == "cap"
    log = json.loads((tmp_path / "c.pt.log.json").read_text())
    assert log["stopped"] == "cap" and "epoch cap" in log["warnings"][0]


def test_paused_run_has_not_stopped(tiny_dataset, tiny_config, tmp_path):
    """A time-boxed (stop_after) run is neither early nor cap: stopped is None."""
    cfg = setting_config("clean", tiny_config, epochs=4, patience=4)
    part = train(tiny_dataset, cfg, checkpoint=tmp_path / "p.pt", progress=False, stop_after=1)
    assert part.meta["paused"] and part.meta["stopped"] is None
    assert load_checkpoint(tmp_path / "p.pt").payload["stopped"] is None


def test_old_checkpoint_without_convention_loads_as_mask_normalize(tiny_dataset, cfg, tmp_path):
    """A checkpoint written before ``input_convention`` existed loads as "mask-normalize"
    (what radius did then), and its model encodes masked inputs that way."""
    res = train(
        tiny_dataset,
        cfg.replace(input_convention="mask-normalize"),
        progress=False,
        checkpoint=tmp_path / "old.pt",
    )
    payload = torch.load(tmp_path / "old.pt", weights_only=False)
    for k in ("input_convention", "stopped", "warnings"):
        payload.pop(k)
    payload["config"].pop("input_convention")
    torch.save(payload, tmp_path / "old.pt")
    loaded = load_checkpoint(tmp_path / "old.pt", tiny_dataset)
    assert loaded.config.input_convention == "mask-normalize"
    assert loaded.model.input_convention == "mask-normalize"
    x = torch.as_tensor(tiny_dataset.test_tr[:4].toarray())
    b = (torch.rand(x.shape, generator=torch.Generator().manual_seed(0)) < 0.5).float()
    torch.testing.assert_close(loaded.model.encode_masked(x, b)[0], res.model.encode(x * b)[0])


def test_convention_changes_the_cache_key(tiny_dataset, cfg):
    """The two conventions train different models, so they never share a cache entry."""
    from radius.training.cache import cache_key

    other = cfg.replace(input_convention="mask-normalize")
    assert cache_key(tiny_dataset, cfg) != cache_key(tiny_dataset, other)


def test_pia_setting_keeps_a_given_lambda():
    """A lambda_A given in the base config (--set lambda_a=...) is used as is for pia;
    without one the model's PIA default applies; clean and masking always get 0."""
    from radius.training.config import PIA_LAMBDA, TrainConfig, setting_config

    assert setting_config("pia", TrainConfig(lambda_a=0.3)).lambda_a == 0.3
    assert setting_config("pia", TrainConfig()).lambda_a == PIA_LAMBDA["multvae"]
    assert setting_config("pia", TrainConfig(model="recvae")).lambda_a == PIA_LAMBDA["recvae"]
    assert setting_config("masking", TrainConfig(lambda_a=0.3)).lambda_a == 0.0
    assert setting_config("pia", TrainConfig(lambda_a=0.3), lambda_a=2.0).lambda_a == 2.0
