"""The content-keyed model cache: the same (data, config) never trains twice.

Models are trained on one thread (``torch.set_num_threads(1)`` for the duration), so a
cached model's weights do not depend on the machine's core count; ``train_many`` trains
several missing configs in parallel processes, one thread each, and so gives the same
weights as training them one after the other.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from torch import nn

from radius.data.dataset import Dataset
from radius.errors import CheckpointError
from radius.io import stable_hash
from radius.training import trainer
from radius.training.checkpoints import CHECKPOINT_FORMAT, TRAINING_REVISION, load_checkpoint
from radius.training.config import TrainConfig

__all__ = ["default_cache_dir", "cache_key", "cache_path", "get_model", "train_many"]


def default_cache_dir() -> Path:
    """``$RADIUS_CACHE_DIR`` or ``~/.cache/radius/models``."""
    env = os.environ.get("RADIUS_CACHE_DIR")
    return Path(env) if env else Path.home() / ".cache" / "radius" / "models"


def cache_key(dataset: Dataset, config: TrainConfig) -> str:
    return stable_hash(
        {
            "data": dataset.hash,
            "config": config.key_dict(),
            "format": CHECKPOINT_FORMAT,
            "revision": TRAINING_REVISION,
        }
    )


def cache_path(
    dataset: Dataset, config: TrainConfig, cache_dir: str | os.PathLike | None = None
) -> Path:
    """Where the cached checkpoint of (dataset, config) lives."""
    return (
        Path(cache_dir or default_cache_dir()) / f"{config.model}-{cache_key(dataset, config)}.pt"
    )


@contextlib.contextmanager
def _one_thread() -> Iterator[None]:
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _cached(path: Path, dataset: Dataset, config: TrainConfig) -> tuple[nn.Module | None, bool]:
    """(model, resume): the finished cached model, or None and whether an interrupted
    run can be resumed (a corrupt file is removed)."""
    if not path.is_file():
        return None, False
    try:
        loaded = load_checkpoint(
            path, dataset, device=config.device if config.device != "auto" else "cpu"
        )
    except CheckpointError:
        path.unlink(missing_ok=True)  # corrupt: train again
        return None, False
    if loaded.payload["train_state"] is None:
        return loaded.model, False
    return None, True  # an interrupted training: continue it


def get_model(
    dataset: Dataset,
    config: TrainConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> nn.Module:
    """The trained model for (dataset, config): loaded from the cache or trained once (on
    one thread). The model's ``radius_warnings`` lists its training's warnings (an epoch
    cap hit before early stopping)."""
    path = cache_path(dataset, config, cache_dir)
    model, resume = _cached(path, dataset, config)
    if model is not None:
        return model
    with _one_thread():
        result = trainer.train(dataset, config, checkpoint=path, progress=progress, resume=resume)
    return result.model


_WORKER_DATA: dict[str, Dataset] = {}


def _init_worker(dataset: Dataset) -> None:
    _WORKER_DATA["dataset"] = dataset


def _train_one(args: tuple[dict, str]) -> str:
    """Worker of ``train_many``: train one config into the cache (a fresh process)."""
    cfg, cache_dir = args
    cfg = dict(cfg)
    cfg["hidden_dims"] = tuple(cfg["hidden_dims"])
    config = TrainConfig(**cfg)
    get_model(_WORKER_DATA["dataset"], config, cache_dir=cache_dir, progress=False)
    return config.describe()


def train_many(
    dataset: Dataset,
    configs: Sequence[TrainConfig],
    *,
    cache_dir: str | os.PathLike | None = None,
    workers: int | None = None,
    progress: bool = False,
) -> list[TrainConfig]:
    """Train the configs of ``configs`` that are missing from the cache, up to ``workers``
    at once in separate processes (default: the CPU count, at most the number missing),
    each on one thread, so the weights are those ``get_model`` gives one at a time.
    Returns the configs that were trained (in order)."""
    cache = Path(cache_dir or default_cache_dir())
    missing = [
        c
        for c in dict.fromkeys(configs)
        if _cached(cache_path(dataset, c, cache), dataset, c)[0] is None
    ]
    if not missing:
        return []
    n = min(len(missing), workers or os.cpu_count() or 1)
    if n <= 1:
        for c in missing:
            get_model(dataset, c, cache_dir=cache, progress=progress)
        return missing
    import multiprocessing as mp

    if progress:
        print(
            f"training {len(missing)} model(s) in {n} processes (one thread each) ...", flush=True
        )
    jobs = [({**c.as_dict(), "device": c.device}, str(cache)) for c in missing]
    ctx = mp.get_context("spawn")
    with ctx.Pool(n, initializer=_init_worker, initargs=(dataset,)) as pool:
        for label in pool.imap(_train_one, jobs):
            if progress:
                print(f"  trained {label}", flush=True)
    return missing
