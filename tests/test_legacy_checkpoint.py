"""A checkpoint written by an earlier radius still loads and gives the same outputs.

``tests/data/legacy/`` holds two small checkpoints (Multi-VAE + PIA, RecVAE) written by
commit 1384584, before the input-convention field and the package's floors existed,
with the encoder and decoder outputs that code produced (``expected.json``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

LEGACY = Path(__file__).parent / "data" / "legacy"


@pytest.fixture(scope="module")
def expected():
    return json.loads((LEGACY / "expected.json").read_text())


@pytest.fixture(scope="module")
def legacy_dataset(expected):
    from radius.data.synthetic import SyntheticParams, default_dataset

    return default_dataset(SyntheticParams(**expected["data"]))


@pytest.mark.parametrize("name", ["multvae-pia", "recvae-masking"])
def test_legacy_checkpoint_same_outputs(name, expected, legacy_dataset):
    """Loading an old checkpoint reproduces its recorded mu, logvar and logits."""
    from radius.training.checkpoints import load_checkpoint

    assert legacy_dataset.hash == expected["data_hash"]
    loaded = load_checkpoint(LEGACY / f"{name}.pt", legacy_dataset)
    rec = expected["models"][name]
    x = torch.as_tensor(legacy_dataset.test_tr[:5].toarray(), dtype=torch.float32)
    with torch.no_grad():
        mu, logvar = loaded.model.encode(x)
        logits = loaded.model.decode(mu)
    np.testing.assert_allclose(mu.numpy(), rec["mu"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logvar.numpy(), rec["logvar"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(logits[0].numpy(), rec["logits_row0"], rtol=1e-5, atol=1e-5)
    # written before input conventions were named: it masked, then normalised
    assert loaded.config.input_convention == "mask-normalize"


def test_legacy_checkpoint_refuses_other_data(expected):
    """The same old checkpoint is refused for a dataset with another hash."""
    from radius.data.synthetic import SyntheticParams, default_dataset
    from radius.errors import CheckpointError
    from radius.training.checkpoints import load_checkpoint

    other = default_dataset(SyntheticParams(**{**expected["data"], "seed": 4}))
    with pytest.raises(CheckpointError, match="trained on data"):
        load_checkpoint(LEGACY / "multvae-pia.pt", other)
