"""Multi-process training with PyTorch's DistributedDataParallel (launched by torchrun).

``torchrun --nproc_per_node=N --no-python radius train ...`` starts N processes; each
sees ``WORLD_SIZE``, ``RANK`` and ``LOCAL_RANK`` in its environment, and
``radius.training.trainer.train`` then:

- joins the process group (NCCL on CUDA, one GPU per process at ``cuda:LOCAL_RANK``;
  gloo on the CPU);
- builds the same model on every rank (same seed; DDP also broadcasts rank 0's
  weights) and routes every loss through ``DistributedDataParallel``, which averages
  the gradients over the ranks in backward;
- draws the same user permutation on every rank and gives rank r the r-th of N equal
  shards (``shard``: the permutation is cut to a multiple of N, so every rank runs the
  same number of steps and the mean of the N shard means is the mean over the batch),
  with a per-rank batch of ceil(batch_size / N): one optimiser step still sees about
  ``batch_size`` users;
- seeds each rank's sampling generator (masks, reparameterisation noise) from
  (seed, rank, epoch), so a resumed run draws what the uninterrupted run would;
- takes early-stopping decisions from rank 0's validation nDCG@100 (broadcast), and
  writes checkpoints and reports on rank 0 only.

A single process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) trains exactly as before.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from radius.errors import RadiusError

__all__ = [
    "DistInfo",
    "dist_info",
    "setup",
    "shard",
    "epoch_seed",
    "LossStep",
    "wrap",
    "broadcast_float",
    "barrier",
]


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size, local rank (GPU index)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise RadiusError(f"environment variable {name}={raw!r} is not an integer") from None


def dist_info() -> DistInfo:
    """Rank and world size from torch.distributed when initialised, else torchrun's env."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return DistInfo(
            dist.get_rank(), dist.get_world_size(), _env_int("LOCAL_RANK", dist.get_rank())
        )
    world = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    if world < 1 or not 0 <= rank < world:
        raise RadiusError(f"bad torchrun environment: RANK={rank}, WORLD_SIZE={world}")
    return DistInfo(rank, world, _env_int("LOCAL_RANK", rank))


def setup(device: torch.device) -> tuple[DistInfo, torch.device]:
    """Join the process group when launched with WORLD_SIZE > 1; the device of this rank.

    CUDA: NCCL, device ``cuda:LOCAL_RANK``; CPU: gloo. A process group initialised by
    the caller is used as it is.
    """
    info = dist_info()
    if not info.enabled:
        return info, device
    import torch.distributed as dist

    if device.type == "cuda":
        if info.local_rank >= torch.cuda.device_count():
            raise RadiusError(
                f"LOCAL_RANK {info.local_rank} but only {torch.cuda.device_count()} CUDA "
                "device(s) visible: start at most one process per GPU"
            )
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return dist_info(), device


def shard(perm: np.ndarray, info: DistInfo) -> np.ndarray:
    """Rank ``info.rank``'s equal share of ``perm`` (cut to a multiple of the world size)."""
    if not info.enabled:
        return perm
    usable = (len(perm) // info.world_size) * info.world_size
    if usable == 0:
        raise RadiusError(
            f"{len(perm)} training users cannot be shared by {info.world_size} processes"
        )
    return perm[:usable][info.rank :: info.world_size]


def epoch_seed(seed: int, info: DistInfo, epoch: int) -> int:
    """Seed of a rank's sampling generator for one epoch (distinct per rank and epoch)."""
    return int(np.random.SeedSequence([seed, info.rank, epoch]).generate_state(1)[0])


class LossStep(nn.Module):
    """``forward(*args)`` = ``fn(model, *args)``: a training loss as a module's forward,
    so DistributedDataParallel can wrap it (DDP reduces gradients only for losses
    computed through its own forward)."""

    def __init__(self, model: nn.Module, fn: Callable[..., Any]) -> None:
        super().__init__()
        self.model = model
        self.fn = fn

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.fn(self.model, *args, **kwargs)


def wrap(step: LossStep, info: DistInfo, device: torch.device, *, unused: bool) -> nn.Module:
    """DDP around a loss step (``unused``: some parameters skip some steps, e.g. RecVAE's
    anchors in its decoder phase)."""
    from torch.nn.parallel import DistributedDataParallel

    ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(step, device_ids=ids, find_unused_parameters=unused)


def broadcast_float(value: float, info: DistInfo, device: torch.device) -> float:
    """Rank 0's ``value`` on every rank (float64)."""
    if not info.enabled:
        return value
    import torch.distributed as dist

    t = torch.tensor([value], dtype=torch.float64, device=device)
    dist.broadcast(t, src=0)
    return float(t.item())


def barrier(info: DistInfo) -> None:
    """Wait for every rank (so rank 0's checkpoint is complete when train returns)."""
    if info.enabled:
        import torch.distributed as dist

        dist.barrier()
