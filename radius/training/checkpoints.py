"""Checkpoints: written atomically, read back with their config, refused for other data.

A checkpoint carries the format number, the config (``key_dict``), the data hash,
the best weights, metrics, the history and, while training runs, the state to resume.
Checkpoints written before ``input_convention`` existed load as ``"mask-normalize"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radius.data.dataset import Dataset
from radius.errors import CheckpointError
from radius.io import atomic_path, atomic_write_json
from radius.training.build import build_model, resolve_device
from radius.training.config import TrainConfig
from radius.version import code_version

__all__ = [
    "CHECKPOINT_FORMAT",
    "TRAINING_REVISION",
    "LEGACY_INPUT_CONVENTION",
    "_save",
    "_write",
    "_read_checkpoint",
    "_check_compatible",
    "LoadedCheckpoint",
    "load_checkpoint",
    "_rng_state",
]


CHECKPOINT_FORMAT = 1


# Bumped whenever a code change alters what training computes, so the content-keyed
# cache never serves a model trained by older code.
# 4: input convention "normalize-mask" by default (recorded in every config), per-model
#    defaults (Multi-VAE 200 epochs / patience 20 / anneal 50; RecVAE's reference recipe)
# 5: PIA's anchor terms by an embedding bag (about 6x faster; float32 sums in another
#    order), cached models trained on one thread
# 6: RecVAE as ilya-shenbin/RecVAE does it: the first encoder layer starts as nn.Linear
#    does (U(+-1/sqrt(I)), bias too; was Xavier, zero bias), the prior's frozen encoder
#    starts from its own random weights (was a copy), every pass of an epoch reshuffles
#    the users (was one order for the four passes); RecVAE's default budget is 200
#    epochs with patience 20 (was run.py's 50), so early stopping ends its runs
TRAINING_REVISION = 6


# the convention of checkpoints written before ``input_convention`` existed
LEGACY_INPUT_CONVENTION = "mask-normalize"


def _rng_state(gen: torch.Generator, np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state}


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def _write(
    path,
    model,
    trainer,
    gen,
    np_rng,
    config,
    dataset,
    history,
    best,
    step,
    epoch,
    *,
    val,
    test,
    finished,
) -> None:
    stopped = _stopped(history, finished)
    notes = _cap_warnings(stopped, config, best["epoch"], history[-1]["epoch"]) if stopped else []
    payload = {
        "format": CHECKPOINT_FORMAT,
        "config": config.key_dict(),
        "input_convention": config.input_convention,
        "stopped": stopped,
        "warnings": notes,
        "n_items": dataset.n_items,
        "data_hash": dataset.hash,
        "data_name": dataset.name,
        "code_version": code_version(),
        "model_state": best["state"] if best["state"] is not None else model.state_dict(),
        "best_epoch": best["epoch"],
        "val": val if val is not None else {"ndcg@100": best["ndcg@100"]},
        "test": test,
        "history": history,
        "train_state": None
        if finished
        else {
            "model": model.state_dict(),
            "optimizer": trainer.state_dict(),
            "rng": _rng_state(gen, np_rng),
            "step": step,
            "epoch": epoch,
        },
    }
    _save(path, payload)
    atomic_write_json(
        Path(str(path) + ".log.json"),
        {
            "config": config.key_dict(),
            "input_convention": config.input_convention,
            "stopped": stopped,
            "warnings": notes,
            "data_hash": dataset.hash,
            "history": history,
            "best_epoch": best["epoch"],
            "val": payload["val"],
            "test": test,
            "finished": finished,
        },
    )


def _read_checkpoint(path: Path) -> dict[str, Any]:
    try:
        payload = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # corrupt or not a checkpoint
        raise CheckpointError(
            f"{path}: not a readable radius checkpoint ({type(e).__name__}: {e})"
        ) from e
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a radius checkpoint (format {CHECKPOINT_FORMAT} expected)"
        )
    return payload


def _check_compatible(
    payload: dict[str, Any], dataset: Dataset, config: TrainConfig | None, path: Path
) -> None:
    if payload["data_hash"] != dataset.hash:
        raise CheckpointError(
            f"{path}: checkpoint was trained on data {payload['data_name']!r} (hash "
            f"{payload['data_hash']}), not on {dataset.name!r} (hash {dataset.hash})"
        )
    if config is not None and payload["config"] != config.key_dict():
        diff = sorted(
            k for k in config.key_dict() if payload["config"].get(k) != config.key_dict()[k]
        )
        raise CheckpointError(f"{path}: checkpoint config differs from the requested one in {diff}")


@dataclass
class LoadedCheckpoint:
    model: nn.Module
    config: TrainConfig
    payload: dict[str, Any]


def load_checkpoint(
    path: str | os.PathLike, dataset: Dataset | None = None, *, device: str = "cpu"
) -> LoadedCheckpoint:
    """Load the best-validation model; refuse a checkpoint made for other data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    payload = _read_checkpoint(path)
    if dataset is not None:
        _check_compatible(payload, dataset, None, path)
    cfg = dict(payload["config"])
    cfg["hidden_dims"] = tuple(cfg["hidden_dims"])
    # written before the field existed: those models masked the raw row, then normalised
    cfg.setdefault("input_convention", LEGACY_INPUT_CONVENTION)
    config = TrainConfig(**cfg, device=device)
    model = build_model(config, payload["n_items"])
    model.load_state_dict(payload["model_state"])
    model.to(resolve_device(device)).eval()
    model.radius_warnings = list(payload.get("warnings") or [])
    model.radius_config = config  # what a warm start from this model trains (beta sweeps)
    return LoadedCheckpoint(model=model, config=config, payload=payload)


def _cap_warnings(stopped: str, config: TrainConfig, best_epoch: int, last_epoch: int) -> list[str]:
    """The warning of a run that hit its epoch budget (empty when early stopping ended it,
    or when the config keeps the last epoch: a fixed fine-tuning budget by design)."""
    if stopped != "cap" or config.keep == "last":
        return []
    return [
        f"training hit its epoch cap ({config.epochs} epochs; best validation nDCG@100 at "
        f"epoch {best_epoch}, last epoch {last_epoch}) before early stopping (patience "
        f"{config.patience}) ended it: the model may be under-trained; raise epochs"
    ]


def _stopped(history: list[dict[str, Any]], finished: bool) -> str | None:
    if not finished or not history:
        return None
    return history[-1].get("stopped", "cap")
