"""Warm starts and keep rules of the trainer (radius.training.warm, TrainConfig.keep)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from radius.errors import CheckpointError, RadiusError
from radius.training.cache import cache_key, get_model
from radius.training.checkpoints import load_checkpoint
from radius.training.config import TrainConfig, setting_config
from radius.training.trainer import train
from radius.training.warm import (
    WarmStart,
    get_warm_model,
    state_key,
    subsample_rows,
    subsample_users,
    train_warm_many,
)


@pytest.fixture(scope="module")
def parent_cfg(tiny_config):
    return setting_config("masking", tiny_config, epochs=3, patience=3)


@pytest.fixture(scope="module")
def parent(tiny_dataset, parent_cfg, tmp_path_factory):
    """A trained masking model and its cache folder."""
    cache = tmp_path_factory.mktemp("warm-cache")
    return get_model(tiny_dataset, parent_cfg, cache_dir=cache), cache


def _states_equal(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_new_fields_leave_old_cache_keys_unchanged(tiny_config):
    """init_from and keep are left out of key_dict at their defaults (earlier keys stay
    valid) and enter it when set, so warm and keep-rule models get keys of their own."""
    d = tiny_config.key_dict()
    assert "init_from" not in d and "keep" not in d
    assert tiny_config.replace(init_from="abc").key_dict()["init_from"] == "abc"
    assert tiny_config.replace(keep="last").key_dict()["keep"] == "last"
    with pytest.raises(
        RadiusError, match=r"^keep must be one of \['best', 'best-at-cap', 'last'\]"
    ):
        tiny_config.replace(keep="first")
    with pytest.raises(RadiusError, match=r"^anneal_steps must be >= 0 or None, got -1$"):
        tiny_config.replace(anneal_steps=-1)


def test_anneal_steps_zero_puts_beta_at_its_cap_from_the_first_step(tiny_dataset, tiny_config):
    """anneal_steps=0: no annealing; every epoch's last beta is the cap."""
    res = train(
        tiny_dataset,
        tiny_config.replace(anneal_steps=0, epochs=2, beta_cap=0.7),
        progress=False,
        evaluate_test=False,
    )
    assert [h["beta"] for h in res.history] == [0.7, 0.7]


def test_best_at_cap_keeps_only_epochs_wholly_at_the_cap(tiny_dataset, tiny_config, monkeypatch):
    """keep='best-at-cap': epochs before the cap are recorded but never kept (the issue's
    sweep model kept beta 0.835 instead of 2); the kept epoch trained at the cap.
    Validation is scripted to peak during the anneal (epoch 1), as collapse makes it."""
    from radius.training import trainer as trainer_mod

    calls = []

    def scripted(self):
        calls.append(1)
        return {
            "ndcg@100": [0.30, 0.35, 0.33, 0.20, 0.22, 0.21][(len(calls) - 1) % 6],
            "recall@20": 0.0,
        }

    monkeypatch.setattr(trainer_mod._Run, "validate", scripted)
    # 480 users / batch 100 = 5 steps per epoch; cap reached at step 12 -> first epoch 3
    cfg = tiny_config.replace(anneal_steps=12, epochs=6, patience=6, beta_cap=2.0)
    best = train(tiny_dataset, cfg, progress=False, evaluate_test=False)
    at_cap = train(
        tiny_dataset, cfg.replace(keep="best-at-cap"), progress=False, evaluate_test=False
    )
    hist = at_cap.history
    assert [bool(h.get("before_cap")) for h in hist] == [True, True, True, False, False, False]
    assert at_cap.meta["best_epoch"] == 4 and hist[4]["beta"] == 2.0
    assert hist[4]["step"] - 5 >= 12  # the epoch's first step was already at the cap
    # negative control: the same run without the rule keeps epoch 1, inside the anneal
    assert best.meta["best_epoch"] == 1 and best.history[1]["beta"] < 2.0
    with pytest.raises(CheckpointError, match=r"^keep='best-at-cap': beta reaches its cap only"):
        train(tiny_dataset, cfg.replace(keep="best-at-cap", epochs=3, patience=3), progress=False)


def test_keep_last_returns_the_last_epoch_and_no_cap_warning(tiny_dataset, tiny_config):
    """keep='last': a fixed budget; the last epoch's weights, no epoch-cap warning."""
    res = train(
        tiny_dataset,
        tiny_config.replace(keep="last", epochs=3, patience=1),
        progress=False,
        evaluate_test=False,
    )
    assert res.meta["best_epoch"] == 2 and len(res.history) == 3
    assert res.meta["warnings"] == []
    assert res.model.radius_config == res.config  # as a loaded checkpoint's


def test_warm_start_begins_from_the_given_weights(tiny_dataset, parent, parent_cfg):
    """init_state replaces the seeded initialisation: with a vanishing learning rate the
    fine-tuned model is the parent; the two must be given together."""
    model, _ = parent
    cfg = parent_cfg.replace(lr=1e-12, epochs=1, keep="last", init_from="p")
    res = train(
        tiny_dataset, cfg, progress=False, init_state=model.state_dict(), evaluate_test=False
    )
    for k, v in model.state_dict().items():
        torch.testing.assert_close(res.model.state_dict()[k], v, rtol=0, atol=1e-8)
    scratch = train(tiny_dataset, cfg.replace(init_from=""), progress=False, evaluate_test=False)
    assert not _states_equal(scratch.model, model)
    with pytest.raises(CheckpointError, match=r"^init_state given but config.init_from is empty"):
        train(
            tiny_dataset, cfg.replace(init_from=""), init_state=model.state_dict(), progress=False
        )
    with pytest.raises(CheckpointError, match=r"^config is a warm start from 'p': pass"):
        train(tiny_dataset, cfg, progress=False)
    bad = {k: v[:1] for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"^init_state does not fit the multvae model"):
        train(tiny_dataset, cfg, init_state=bad, progress=False)


def test_warm_key_names_the_parent(tiny_dataset, parent, parent_cfg):
    """The warm model's cache key holds its parent's: another parent (another seed, or
    given weights) or a subsample gives another key; a model from scratch never shares it."""
    model, cache = parent
    cfg = parent_cfg.replace(beta_cap=1.0, epochs=1, keep="last", anneal_steps=0)
    job = WarmStart(cfg, parent_cfg)
    assert job.resolved(tiny_dataset).init_from == cache_key(tiny_dataset, parent_cfg)
    other = WarmStart(cfg, parent_cfg.replace(seed=5))
    given = WarmStart(cfg, model)
    sub = WarmStart(cfg, parent_cfg, train_users=100)
    paths = {j.path(tiny_dataset, cache) for j in (job, other, given, sub)}
    assert len(paths) == 4
    assert given.parent_key(tiny_dataset) == "weights:" + state_key(model.state_dict())
    assert cache_key(tiny_dataset, cfg) not in str(job.path(tiny_dataset, cache))


def test_get_warm_model_trains_once_then_loads(tiny_dataset, parent, parent_cfg):
    """The second call loads the cached fine-tune (same weights, same record)."""
    _, cache = parent
    cfg = parent_cfg.replace(beta_cap=2.0, epochs=2, patience=2, keep="last", anneal_steps=0)
    job = WarmStart(cfg, parent_cfg, train_users=200)
    a, rec_a = get_warm_model(tiny_dataset, job, cache_dir=cache)
    assert job.path(tiny_dataset, cache).is_file()
    b, rec_b = get_warm_model(tiny_dataset, job, cache_dir=cache)
    assert _states_equal(a, b) and rec_a == rec_b
    assert rec_a["best_epoch"] == 1 and rec_a["kl_weight_at_best_epoch"] == 2.0
    assert rec_a["train_users"] == 200 and rec_a["init_from"] == cache_key(tiny_dataset, parent_cfg)
    assert a.radius_config.init_from == rec_a["init_from"]
    assert train_warm_many(tiny_dataset, [job], cache_dir=cache) == []  # nothing missing


@pytest.mark.slow
def test_train_warm_many_in_processes_matches_one_at_a_time(
    tiny_dataset, parent, parent_cfg, tmp_path
):
    """Two workers (one thread each) give the weights of training one after the other,
    for a parent from the cache and for given weights."""
    model, cache = parent
    cfg = parent_cfg.replace(epochs=1, patience=1, keep="last", anneal_steps=0)
    jobs = [WarmStart(cfg.replace(beta_cap=b), parent_cfg, 200) for b in (0.5, 4.0)]
    jobs.append(WarmStart(cfg.replace(beta_cap=1.0), model))
    serial = [get_warm_model(tiny_dataset, j, cache_dir=cache)[0] for j in jobs]
    par_cache = tmp_path / "par"
    get_model(tiny_dataset, parent_cfg, cache_dir=par_cache)
    assert train_warm_many(tiny_dataset, jobs, cache_dir=par_cache, workers=2) == jobs
    for j, s in zip(jobs, serial):
        assert _states_equal(get_warm_model(tiny_dataset, j, cache_dir=par_cache)[0], s)


def test_subsample_is_seeded_and_has_its_own_hash(tiny_dataset):
    """The same (n, seed) gives the same rows; the subsample's hash differs; n >= all users
    or None is the dataset itself."""
    n = tiny_dataset.train.shape[0]
    rows = subsample_rows(n, 100, seed=3)
    assert rows.size == 100 and np.all(np.diff(rows) > 0)
    assert np.array_equal(rows, subsample_rows(n, 100, seed=3))
    assert not np.array_equal(rows, subsample_rows(n, 100, seed=4))
    sub = subsample_users(tiny_dataset, 100, seed=3)
    assert (sub.train != tiny_dataset.train[rows]).nnz == 0
    assert sub.hash != tiny_dataset.hash and sub.val_tr.shape == tiny_dataset.val_tr.shape
    assert subsample_users(tiny_dataset, None) is tiny_dataset
    assert subsample_users(tiny_dataset, n + 5) is tiny_dataset
    with pytest.raises(ValueError, match=r"^n_users must be >= 1 or None, got 0$"):
        subsample_rows(n, 0)


def test_state_key_follows_the_weights(parent):
    """state_key is stable and changes with any weight."""
    model, _ = parent
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert state_key(state) == state_key(model.state_dict())
    first = next(iter(state))
    state[first] = state[first] + 1e-6
    assert state_key(state) != state_key(model.state_dict())


def test_loaded_checkpoint_carries_its_config(tiny_dataset, parent, parent_cfg):
    """load_checkpoint sets model.radius_config (a warm start from a user's checkpoint)."""
    from radius.training.cache import cache_path

    _, cache = parent
    loaded = load_checkpoint(cache_path(tiny_dataset, parent_cfg, cache), tiny_dataset)
    assert isinstance(loaded.model.radius_config, TrainConfig)
    assert loaded.model.radius_config.key_dict() == parent_cfg.key_dict()


def test_save_every_epoch_false_writes_only_the_final_checkpoint(
    tiny_dataset, tiny_config, tmp_path, monkeypatch
):
    """save_every_epoch=False (warm starts): one checkpoint write, when training ends;
    the default writes one per epoch (resumable)."""
    from radius.training import trainer as trainer_mod

    writes = []
    original = trainer_mod._Run.save

    def counting(self, epoch_done, **kw):
        writes.append(kw["finished"])
        return original(self, epoch_done, **kw)

    monkeypatch.setattr(trainer_mod._Run, "save", counting)
    cfg = tiny_config.replace(epochs=3, patience=3, keep="last")
    train(
        tiny_dataset,
        cfg,
        checkpoint=tmp_path / "a.pt",
        progress=False,
        evaluate_test=False,
        save_every_epoch=False,
    )
    assert writes == [True] and load_checkpoint(tmp_path / "a.pt", tiny_dataset).payload
    writes.clear()
    train(tiny_dataset, cfg, checkpoint=tmp_path / "b.pt", progress=False, evaluate_test=False)
    assert writes == [False, False, True]
