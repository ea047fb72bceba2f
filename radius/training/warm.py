r"""Warm starts: a model fine-tuned from another one, cached under a key of its own.

A beta sweep (``radius.verify.beta_kl``) needs one model per KL weight. Training each
from scratch costs a full training per point (hours at MovieLens-20M size); a warm start
begins from the trained masking model (radius's own, or a checkpoint the user gave) and
fine-tunes it at the new weight for a few epochs, optionally on a subsample of the
training users. The fine-tuned model's config names its parent in ``init_from`` (the
parent's content key), so its cache key differs from a model trained from scratch with
the same fields, and from a warm start of another parent:

.. math::

    \mathrm{key}(\text{warm}) = H\big(\text{data}_{\text{sub}},\ \text{config} \cup
    \{\text{init\_from} = \mathrm{key}(\text{parent})\}\big)

with :math:`\mathrm{key}(\text{parent})` the parent's cache key (radius's own models)
or a hash of its weights (a given checkpoint), and :math:`\text{data}_{\text{sub}}` the
subsample's content hash (the full data when no subsample is drawn).

Workers: ``train_warm_many`` trains missing warm starts in separate processes, one
thread each (as ``radius.training.cache.train_many``), so the weights do not depend on
how many run together.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radius.data.dataset import Dataset
from radius.errors import RadiusError
from radius.training import cache as _cache
from radius.training.checkpoints import load_checkpoint
from radius.training.config import TrainConfig

__all__ = [
    "WarmStart",
    "state_key",
    "subsample_rows",
    "subsample_users",
    "get_warm_model",
    "train_warm_many",
]


def state_key(state: Mapping[str, torch.Tensor]) -> str:
    """Content hash (16 hex) of a state_dict: names, dtypes, shapes and values."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name]
        if not isinstance(t, torch.Tensor):
            continue
        a = t.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(a.dtype).encode())
        h.update(np.asarray(a.shape, dtype=np.int64).tobytes())
        h.update(a.numpy().tobytes() if a.dtype != torch.bfloat16 else a.float().numpy().tobytes())
    return h.hexdigest()[:16]


def subsample_rows(n_train: int, n_users: int | None, *, seed: int = 0) -> np.ndarray:
    """Sorted training rows of a seeded subsample of ``n_users`` users (all rows when
    ``n_users`` is None or at least ``n_train``)."""
    if n_users is None or n_users >= n_train:
        return np.arange(n_train)
    if n_users < 1:
        raise ValueError(f"n_users must be >= 1 or None, got {n_users}")
    return np.sort(np.random.default_rng([int(seed), int(n_users)]).choice(n_train, n_users, False))


def subsample_users(dataset: Dataset, n_users: int | None, *, seed: int = 0) -> Dataset:
    """The dataset with ``n_users`` training users drawn without replacement (seeded,
    ``subsample_rows``); validation and test users unchanged. ``None`` or ``n_users >=``
    the training users: the dataset itself. The subsample has its own content hash
    (hence cache keys)."""
    n_train = int(dataset.train.shape[0])
    if n_users is None or n_users >= n_train:
        return dataset
    rows = subsample_rows(n_train, n_users, seed=seed)
    manifest = {
        "name": f"{dataset.name}~{n_users}users",
        "subsample_of": dataset.hash,
        "subsample": {"train_users": int(n_users), "seed": int(seed)},
    }
    return Dataset(
        train=dataset.train[rows],
        val_tr=dataset.val_tr,
        val_te=dataset.val_te,
        test_tr=dataset.test_tr,
        test_te=dataset.test_te,
        manifest=manifest,
    )


@dataclass(frozen=True)
class WarmStart:
    """One warm-started model: ``config`` fine-tuned from ``parent``.

    Attributes
    ----------
    config : what the fine-tuning trains (``init_from`` is filled in from the parent).
    parent : radius's own model of a ``TrainConfig`` (from the cache; trained when
        missing) or a model given as an ``nn.Module`` (radius architecture whose
        ``state_dict`` fits ``config``).
    train_users : training users of the fine-tuning (None: all), drawn with
        ``subsample_seed``.
    subsample_seed : seed of the user subsample (the same for every training seed, so
        seeds differ by training randomness only).
    """

    config: TrainConfig
    parent: TrainConfig | nn.Module
    train_users: int | None = None
    subsample_seed: int = 0

    def parent_key(self, dataset: Dataset) -> str:
        """The parent's content key: its cache key, or the hash of the given weights."""
        if isinstance(self.parent, TrainConfig):
            return _cache.cache_key(dataset, self.parent)
        if isinstance(self.parent, nn.Module):
            return "weights:" + state_key(self.parent.state_dict())
        raise TypeError(
            f"parent must be a TrainConfig or an nn.Module, got {type(self.parent).__name__}"
        )

    def resolved(self, dataset: Dataset) -> TrainConfig:
        """``config`` with ``init_from`` naming the parent (what the cache key hashes)."""
        return self.config.replace(init_from=self.parent_key(dataset))

    def data(self, dataset: Dataset) -> Dataset:
        """The dataset the fine-tuning trains on (the subsample when one is asked for)."""
        return subsample_users(dataset, self.train_users, seed=self.subsample_seed)

    def path(self, dataset: Dataset, cache_dir: str | os.PathLike | None = None) -> Path:
        """Where the fine-tuned model is cached."""
        return _cache.cache_path(self.data(dataset), self.resolved(dataset), cache_dir)

    def parent_state(self, dataset: Dataset, cache_dir=None) -> dict[str, torch.Tensor]:
        if isinstance(self.parent, nn.Module):
            return {k: v.detach().cpu().clone() for k, v in self.parent.state_dict().items()}
        return _cache.get_model(dataset, self.parent, cache_dir=cache_dir).state_dict()


def _record(payload_or_history: Any, best_epoch: int) -> dict[str, Any]:
    hist = payload_or_history or []
    rec = next((h for h in hist if h.get("epoch") == best_epoch), {})
    return {
        "best_epoch": int(best_epoch),
        "kl_weight_at_best_epoch": rec.get("beta"),
        "epochs_run": len(hist),
    }


def get_warm_model(
    dataset: Dataset,
    job: WarmStart,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> tuple[nn.Module, dict[str, Any]]:
    """The warm-started model of ``job``: loaded from the cache or fine-tuned once (one
    thread). Returns the model (CPU, eval) and a record of its training (best epoch,
    the KL weight at it, epochs run, the config's key fields)."""
    from radius.training import trainer

    data = job.data(dataset)
    config = job.resolved(dataset)
    path = _cache.cache_path(data, config, cache_dir)
    model, resume = _cache._cached(path, data, config)
    if model is not None:
        payload = load_checkpoint(path, data).payload
        record = _record(payload.get("history"), payload["best_epoch"])
    else:
        state = job.parent_state(dataset, cache_dir)
        with _cache._one_thread():
            res = trainer.train(
                data,
                config,
                checkpoint=path,
                progress=progress,
                resume=resume,
                init_state=state,
                save_every_epoch=False,
            )
        model = res.model
        record = _record(res.history, res.meta["best_epoch"])
    record.update(init_from=config.init_from, train_users=int(data.train.shape[0]))
    model.radius_config = config
    return model.cpu().eval(), record


def _job_args(job: WarmStart, cache_dir: str) -> tuple:
    cfg = {**job.config.as_dict(), "device": job.config.device}
    if isinstance(job.parent, TrainConfig):
        parent: tuple = ("config", {**job.parent.as_dict(), "device": job.parent.device})
    else:
        parent = ("state", {k: v.detach().cpu() for k, v in job.parent.state_dict().items()})
    return cfg, parent, job.train_users, job.subsample_seed, cache_dir


def _config(d: dict[str, Any]) -> TrainConfig:
    return TrainConfig(**{**d, "hidden_dims": tuple(d["hidden_dims"])})


class _StateParent(nn.Module):
    """A stand-in module holding a parent's state_dict (a worker's copy of a given model)."""

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self._state = state

    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:  # noqa: ARG002
        return dict(self._state)


def _train_warm_one(args: tuple) -> str:
    """Worker of ``train_warm_many`` (a fresh process with the dataset preloaded)."""
    cfg, (kind, parent), users, sub_seed, cache_dir = args
    par = _config(parent) if kind == "config" else _StateParent(parent)
    job = WarmStart(_config(cfg), par, users, sub_seed)
    get_warm_model(_cache._WORKER_DATA["dataset"], job, cache_dir=cache_dir)
    return job.config.describe()


def train_warm_many(
    dataset: Dataset,
    jobs: Sequence[WarmStart],
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> list[WarmStart]:
    """Fine-tune the warm starts of ``jobs`` missing from the cache, up to ``workers`` at
    once in separate processes (default: the CPU count, at most the number missing), one
    thread each, so the weights are those ``get_warm_model`` gives one at a time. The
    parents (radius's own) must be in the cache already or are trained by the workers.
    Returns the jobs that were trained (in order)."""
    cache = Path(cache_dir or _cache.default_cache_dir())
    if workers is not None and workers < 1:
        raise RadiusError(f"workers must be >= 1, got {workers}")
    missing = []
    for job in jobs:
        data = job.data(dataset)
        cfg = job.resolved(dataset)
        if _cache._cached(_cache.cache_path(data, cfg, cache), data, cfg)[0] is None:
            missing.append(job)
    if not missing:
        return []
    n = min(len(missing), workers or os.cpu_count() or 1)
    if n <= 1:
        for job in missing:
            get_warm_model(dataset, job, cache_dir=cache, progress=progress)
        return missing
    import multiprocessing as mp

    if progress:
        print(f"fine-tuning {len(missing)} warm start(s) in {n} processes ...", flush=True)
    ctx = mp.get_context("spawn")
    with ctx.Pool(n, initializer=_cache._init_worker, initargs=(dataset,)) as pool:
        for label in pool.imap(_train_warm_one, [_job_args(j, str(cache)) for j in missing]):
            if progress:
                print(f"  fine-tuned {label}", flush=True)
    return missing
