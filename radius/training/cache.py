"""The content-keyed model cache: the same (data, config) never trains twice."""

from __future__ import annotations

import os
from pathlib import Path

from torch import nn

from radius.data.dataset import Dataset
from radius.errors import CheckpointError
from radius.io import stable_hash
from radius.training import trainer
from radius.training.checkpoints import CHECKPOINT_FORMAT, TRAINING_REVISION, load_checkpoint
from radius.training.config import TrainConfig

__all__ = ["default_cache_dir", "cache_key", "get_model"]


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


def get_model(
    dataset: Dataset,
    config: TrainConfig,
    *,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
) -> nn.Module:
    """The trained model for (dataset, config): loaded from the cache or trained once."""
    path = (
        Path(cache_dir or default_cache_dir()) / f"{config.model}-{cache_key(dataset, config)}.pt"
    )
    resume = False
    if path.is_file():
        try:
            loaded = load_checkpoint(
                path, dataset, device=config.device if config.device != "auto" else "cpu"
            )
            if loaded.payload["train_state"] is None:
                return loaded.model
            resume = True  # an interrupted training: continue it
        except CheckpointError:
            path.unlink(missing_ok=True)  # corrupt: train again
    result = trainer.train(dataset, config, checkpoint=path, progress=progress, resume=resume)
    return result.model
