"""Along-training weights (T2.3's training points): the trainer's side file, its replay for
a model cached without one, resume, and refusal for other data or configs."""

from __future__ import annotations

import pytest
import torch

from radius.errors import CheckpointError
from radius.training import cache, trainer
from radius.training.build import build_model


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def cfg(tiny_config):
    return tiny_config.replace(epochs=4, patience=4)


@pytest.mark.slow
def test_side_file_holds_init_and_first_epochs(tiny_dataset, cfg, tmp_path):
    """Training with ``along`` writes the seeded initial weights and those after 1 and 3
    epochs; the last equal a 3-epoch run's final weights; training is unchanged."""
    side = tmp_path / "m.along.pt"
    res = trainer.train(tiny_dataset, cfg, along=side, progress=False, evaluate_test=False)
    plain = trainer.train(tiny_dataset, cfg, progress=False, evaluate_test=False)
    assert _same(res.model.state_dict(), plain.model.state_dict())  # along changes nothing
    payload = torch.load(side, weights_only=False)
    assert payload["epochs"] == {"init": 0, "epoch 1": 1, "epoch 3": 3}
    torch.manual_seed(cfg.seed)
    fresh = build_model(cfg, tiny_dataset.n_items)
    assert _same(payload["states"]["init"], fresh.state_dict())
    three = trainer._Run.setup(tiny_dataset, cfg.replace(epochs=3, patience=3), None)
    for e in range(3):
        three.epoch(e)
    assert _same(payload["states"]["epoch 3"], three.model.state_dict())


@pytest.mark.slow
def test_replay_gives_the_runs_own_weights(tiny_dataset, cfg, tmp_path):
    """A model cached without a side file gets one by replaying its first epochs: the same
    weights as a training that wrote it; a second call reads the file."""
    d1, d2 = tmp_path / "a", tmp_path / "b"
    cache.get_model(tiny_dataset, cfg, cache_dir=d1, along=True)  # writes while training
    cache.get_model(tiny_dataset, cfg, cache_dir=d2)  # no side file
    assert not cache.along_path(tiny_dataset, cfg, d2).exists()
    got = cache.get_along(tiny_dataset, cfg, cache_dir=d2)
    assert got.source == "replayed" and list(got.models) == ["init", "epoch 1", "epoch 3"]
    ref = cache.get_along(tiny_dataset, cfg, cache_dir=d1)
    assert ref.source == "side file" and ref.best_epoch == got.best_epoch is not None
    for label in ref.models:
        assert _same(ref.models[label].state_dict(), got.models[label].state_dict()), label
    again = cache.get_along(tiny_dataset, cfg, cache_dir=d2)
    assert again.source == "side file" and again.epochs == {"init": 0, "epoch 1": 1, "epoch 3": 3}


@pytest.mark.slow
def test_resume_keeps_the_side_file(tiny_dataset, cfg, tmp_path):
    """An interrupted run resumed later has the same along weights as an uninterrupted one."""
    ck, side = tmp_path / "m.pt", tmp_path / "m.along.pt"
    trainer.train(tiny_dataset, cfg, checkpoint=ck, along=side, stop_after=2, progress=False)
    assert set(torch.load(side, weights_only=False)["states"]) == {"init", "epoch 1"}
    trainer.train(tiny_dataset, cfg, checkpoint=ck, along=side, resume=True, progress=False)
    resumed = torch.load(side, weights_only=False)["states"]
    side2 = tmp_path / "n.along.pt"
    trainer.train(tiny_dataset, cfg, along=side2, progress=False, evaluate_test=False)
    whole = torch.load(side2, weights_only=False)["states"]
    assert set(resumed) == set(whole) == {"init", "epoch 1", "epoch 3"}
    for label in whole:
        assert _same(resumed[label], whole[label]), label


def test_load_along_refuses_other_config_and_files(tiny_dataset, tiny_config, tmp_path):
    """A side file for another config or a file that is not one: CheckpointError."""
    side = tmp_path / "s.along.pt"
    cfg = tiny_config.replace(epochs=1, patience=1)
    trainer.train(tiny_dataset, cfg, along=side, progress=False, evaluate_test=False)
    got = cache.load_along(side, tiny_dataset, cfg)
    assert list(got.models) == ["init", "epoch 1"]
    with pytest.raises(CheckpointError, match="made for other data or another config"):
        cache.load_along(side, tiny_dataset, cfg.replace(seed=5))
    bad = tmp_path / "bad.pt"
    torch.save({"format": 1}, bad)
    with pytest.raises(CheckpointError, match="not a radius along-training file"):
        cache.load_along(bad, tiny_dataset, cfg)
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(CheckpointError, match="not a readable along-training file"):
        cache.load_along(tmp_path / "junk.pt", tiny_dataset, cfg)
