"""Training: determinism, resume, atomic checkpoints, cache, refusal of foreign data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radius.config import TrainConfig, setting_config
from radius.errors import CheckpointError, RadiusError
from radius.train import get_model, load_checkpoint, resolve_device, train


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
    import radius.train as rt

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
    from radius.metrics import evaluate
    from radius.train import build_model

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
