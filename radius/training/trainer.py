r"""Training: Adam on the (masked, annealed) beta-ELBO plus the PIA anchor loss.

.. math::

    \mathcal L = \mathbb E_b\Big[-\sum_i x_i \log\operatorname{softmax}(f_\theta(z))_i
        + \beta\,\mathrm{KL}(q(z\mid x, b)\,\|\,\mathcal N(0, I))\Big]
        + \lambda_A\,\mathbb E_b[L_A(x\odot b, x)],\qquad z\sim q(z\mid x, b)

where :math:`q(z \mid x, b)` encodes the input the config's ``input_convention`` builds
from x and the keep mask b (``radius.model.multvae``: by default the reference codes'
:math:`x/\|x\| \odot b/\rho`). beta rises linearly from 0 to ``beta_cap`` over
``anneal_steps`` gradient steps. Early stopping keeps the weights with the best
validation nDCG@100; every result records whether patience ran out
(``stopped="early"``) or the epoch budget did (``stopped="cap"``, with a warning). Checkpoints are
written atomically and carry the config, the data hash, metrics and code version;
``resume`` continues an interrupted run bit-for-bit on the CPU. ``get_model`` caches
trained checkpoints by a content key (data hash + config), so the same request never
trains twice. Under torchrun (``WORLD_SIZE > 1``) ``train`` runs data-parallel with
DistributedDataParallel: see ``radius.training.distributed``.
"""

from __future__ import annotations

import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from radius.data.dataset import Dataset
from radius.errors import CheckpointError
from radius.training.build import build_model, resolve_device
from radius.training.checkpoints import _cap_warnings, _check_compatible, _read_checkpoint, _write
from radius.training.config import TrainConfig
from radius.training.metrics import evaluate
from radius.training.trainers import make_trainer
from radius.version import code_version

__all__ = ["train", "TrainResult", "EpochCapWarning"]


class EpochCapWarning(RuntimeWarning):
    """Training reached its epoch budget before early stopping ended it."""


@dataclass
class TrainResult:
    """A trained model (best validation weights) and where/how it was made."""

    model: nn.Module
    config: TrainConfig
    history: list[dict[str, Any]]
    val: dict[str, float]
    test: dict[str, Any] | None
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Run:
    """The state of one training run and its steps: set-up, resume, epoch, validation,
    best-weights update, stop rule, checkpoint, finish. ``train`` drives them in order."""

    dataset: Dataset
    config: TrainConfig
    model: nn.Module
    trainer: Any
    info: Any
    device: torch.device
    gen: torch.Generator
    np_rng: np.random.Generator
    ckpt_path: Path | None
    history: list[dict[str, Any]] = field(default_factory=list)
    step: int = 0
    start_epoch: int = 0
    stale: int = 0
    best: dict[str, Any] = field(
        default_factory=lambda: {"ndcg@100": -1.0, "epoch": -1, "state": None}
    )

    # ------------------------------------------------------------------ set-up
    @classmethod
    def setup(cls, dataset: Dataset, config: TrainConfig, ckpt_path: Path | None) -> _Run:
        """Device (DDP under torchrun), seeded model, trainer and generators."""
        from radius.training import distributed

        info, device = distributed.setup(resolve_device(config.device))
        torch.manual_seed(config.seed)
        model = build_model(config, dataset.n_items).to(device)
        if info.enabled:  # each rank steps on its shard: ~batch_size users per step in all
            per_rank = config.replace(batch_size=-(-config.batch_size // info.world_size))
            trainer = make_trainer(model, per_rank)
            trainer.distribute(info, device)
        else:
            trainer = make_trainer(model, config)
        gen = torch.Generator(device=device).manual_seed(config.seed)
        np_rng = np.random.default_rng(config.seed)
        return cls(dataset, config, model, trainer, info, device, gen, np_rng, ckpt_path)

    def resume(self) -> None:
        """Continue from ``ckpt_path`` (refused for other data, another config, or a
        finished run): weights, optimizer, generators, step, history and best so far."""
        path = self.ckpt_path
        if path is None or not path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {path}")
        payload = _read_checkpoint(path)
        _check_compatible(payload, self.dataset, self.config, path)
        state = payload["train_state"]
        if state is None:
            raise CheckpointError(f"{path}: training already finished; nothing to resume")
        self.model.load_state_dict(state["model"])
        self.trainer.load_state_dict(state["optimizer"])
        self.gen.set_state(state["rng"]["torch"])
        self.np_rng.bit_generator.state = state["rng"]["numpy"]
        self.step, self.start_epoch = state["step"], state["epoch"] + 1
        self.history = payload["history"]
        self.best = {
            "ndcg@100": payload["val"].get("ndcg@100", -1.0),
            "epoch": payload["best_epoch"],
            "state": payload["model_state"],
        }
        self.stale = self.history[-1].get("stale", 0) if self.history else 0

    @property
    def anneal_steps(self) -> int:
        """Gradient steps over which beta rises to its cap (0: at its cap from the start)."""
        cfg, n = self.config, self.dataset.train.shape[0]
        if cfg.anneal_steps is not None:
            return cfg.anneal_steps
        return max(1, int(cfg.anneal_epochs * -(-n // cfg.batch_size)))

    # ------------------------------------------------------------------ warm start, keep rules
    def warm_start(self, init_state: dict[str, Any] | None) -> None:
        """Load the weights a warm start begins from (``config.init_from`` names them).

        Both or neither: a warm start must name its parent in ``config.init_from`` so the
        cache key tells it apart, and a config that names one needs its weights."""
        named = bool(self.config.init_from)
        if init_state is None and named:
            raise CheckpointError(
                f"config is a warm start from {self.config.init_from!r}: pass that model's "
                "init_state"
            )
        if init_state is None:
            return
        if not named:
            raise CheckpointError(
                "init_state given but config.init_from is empty: name the parent model's key "
                "(radius.training.warm) so the warm-started model has its own cache key"
            )
        try:
            self.model.load_state_dict(init_state)
        except RuntimeError as e:
            raise CheckpointError(
                f"init_state does not fit the {self.config.model} model of this config: {e}"
            ) from e

    def first_epoch_at_cap(self) -> int:
        """The first epoch whose every step runs with beta at its cap (RecVAE: 0, its KL
        weight gamma is constant)."""
        if self.config.model == "recvae":
            return 0
        per_epoch = -(-self.dataset.train.shape[0] // self.config.batch_size)
        return -(-self.anneal_steps // per_epoch)

    def check_cap_reachable(self) -> None:
        """With ``keep="best-at-cap"`` some epoch must run wholly at the cap."""
        first = self.first_epoch_at_cap()
        if self.config.keep == "best-at-cap" and first >= self.config.epochs:
            raise CheckpointError(
                f"keep='best-at-cap': beta reaches its cap only from epoch {first}, but "
                f"training runs {self.config.epochs} epochs; shorten the annealing "
                "(anneal_steps / anneal_epochs) or raise epochs"
            )

    def before_cap(self, epoch: int) -> bool:
        """True for an epoch that ``keep="best-at-cap"`` leaves out of the kept weights."""
        return self.config.keep == "best-at-cap" and epoch < self.first_epoch_at_cap()

    # ------------------------------------------------------------------ one epoch
    def epoch(self, epoch: int) -> dict[str, Any]:
        """One pass over a fresh permutation (this rank's shard), then validation; the
        epoch's record (mean loss parts, step, beta, seconds, validation metrics)."""
        from radius.training import distributed

        t0 = time.perf_counter()
        self.model.train()
        perm = self.np_rng.permutation(self.dataset.train.shape[0])
        if self.info.enabled:
            self.gen.manual_seed(distributed.epoch_seed(self.config.seed, self.info, epoch))
            perm = distributed.shard(perm, self.info)
        sums, n_batches, self.step, beta = self.trainer.run_epoch(
            self.dataset.train, perm, self.step, self.anneal_steps, self.gen
        )
        val = self.validate()
        rec = {k: v / n_batches for k, v in sums.items()}
        rec.update(
            epoch=epoch,
            step=self.step,
            beta=beta,
            seconds=time.perf_counter() - t0,
            **{f"val_{k}": v for k, v in val.items()},
        )
        return rec

    def validate(self) -> dict[str, float]:
        """Validation nDCG@100 and Recall@20; under DDP every rank gets rank 0's nDCG."""
        from radius.training import distributed

        ds = self.dataset
        val = evaluate(self.model, ds.val_tr, ds.val_te, metrics=(("ndcg", 100), ("recall", 20)))
        if self.info.enabled:  # every rank stops where rank 0 does
            val.means["ndcg@100"] = distributed.broadcast_float(
                val.means["ndcg@100"], self.info, self.device
            )
        return val.means

    def update_best(self, rec: dict[str, Any]) -> None:
        """Keep the weights with the best validation nDCG@100; count stale epochs
        (``keep``: "best-at-cap" only from the first epoch wholly at the cap; "last"
        every epoch's weights replace the previous ones)."""
        if self.before_cap(rec["epoch"]):
            rec["stale"], rec["before_cap"] = self.stale, True
            return
        if self.config.keep == "last" or rec["val_ndcg@100"] > self.best["ndcg@100"]:
            self.best = {
                "ndcg@100": rec["val_ndcg@100"],
                "epoch": rec["epoch"],
                "state": {k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()},
            }
            self.stale = 0
        else:
            self.stale += 1
        rec["stale"] = self.stale

    def stop_rule(self, epoch: int) -> str | None:
        """``"early"`` when patience ran out, ``"cap"`` at the last budgeted epoch, else None."""
        if self.stale >= self.config.patience:
            return "early"
        return "cap" if epoch == self.config.epochs - 1 else None

    # ------------------------------------------------------------------ checkpoint
    def save(self, epoch_done: int, *, val, test, finished: bool) -> None:
        """Checkpoint (atomically, rank 0 only) with the best weights and training state."""
        if self.ckpt_path is not None and self.info.is_main:
            _write(
                self.ckpt_path,
                self.model,
                self.trainer,
                self.gen,
                self.np_rng,
                self.config,
                self.dataset,
                self.history,
                self.best,
                self.step,
                epoch_done,
                val=val,
                test=test,
                finished=finished,
            )

    # ------------------------------------------------------------------ finish
    def paused_result(self) -> TrainResult:
        """The best model so far of a time-boxed run (the checkpoint stays resumable)."""
        from radius.training import distributed

        if self.best["state"] is not None:  # None: paused before beta reached its cap
            self.model.load_state_dict(self.best["state"])
        distributed.barrier(self.info)
        meta = {
            "best_epoch": self.best["epoch"],
            "paused": True,
            "stopped": None,
            "warnings": [],
            "input_convention": self.config.input_convention,
            "data_hash": self.dataset.hash,
        }
        return TrainResult(
            model=self.model.eval(),
            config=self.config,
            history=self.history,
            val={},
            test=None,
            path=self.ckpt_path,
            meta=meta,
        )

    def finish(self, *, evaluate_test: bool) -> TrainResult:
        """Best weights, final validation (and test) metrics, cap warnings, last checkpoint."""
        from radius.training import distributed

        ds, config, model, history = self.dataset, self.config, self.model, self.history
        model.load_state_dict(self.best["state"])
        model.eval()
        val_final = evaluate(model, ds.val_tr, ds.val_te).means
        test = evaluate(model, ds.test_tr, ds.test_te).to_dict() if evaluate_test else None
        stopped = history[-1].get("stopped", "cap")
        notes = _cap_warnings(stopped, config, self.best["epoch"], history[-1]["epoch"])
        if self.info.is_main:
            for note in notes:
                warnings.warn(note, EpochCapWarning, stacklevel=3)
        meta = {
            "best_epoch": self.best["epoch"],
            "epochs_run": history[-1]["epoch"] + 1,
            "stopped": stopped,
            "warnings": notes,
            "input_convention": config.input_convention,
            "data_hash": ds.hash,
            "code_version": code_version(),
        }
        model.radius_warnings = list(notes)
        model.radius_config = config  # as load_checkpoint sets it (a warm start's parent)
        self.save(history[-1]["epoch"], val=val_final, test=test, finished=True)
        distributed.barrier(self.info)
        return TrainResult(
            model=model,
            config=config,
            history=history,
            val=val_final,
            test=test,
            path=self.ckpt_path,
            meta=meta,
        )


def train(
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate_test: bool = True,
    stop_after: int | None = None,
    init_state: dict[str, Any] | None = None,
    save_every_epoch: bool = True,
) -> TrainResult:
    """Train on ``dataset.train`` with early stopping on validation nDCG@100.

    Parameters
    ----------
    checkpoint : where to write the checkpoint (atomically, after every epoch, so
        ``resume=True`` can continue). A JSON log of the epochs goes beside it.
    resume : continue from ``checkpoint`` (refused if it was made for other data
        or another config).
    stop_after : stop after this many epochs of this call, leaving a resumable
        checkpoint (time-boxed training); the returned model is the best so far.
    init_state : warm start: the state_dict training begins from instead of the seeded
        initialisation (the optimizer starts fresh); ``config.init_from`` must name it
        (``radius.training.warm.get_warm_model`` does both). Which weights are returned
        follows ``config.keep``.
    save_every_epoch : False writes the checkpoint only when training ends (a warm start's
        few epochs are not worth resuming; each resumable write holds the weights, the
        best weights and the optimizer's moments).
    """
    run = _Run.setup(dataset, config, Path(checkpoint) if checkpoint is not None else None)
    run.warm_start(init_state)
    run.check_cap_reachable()
    progress = progress and run.info.is_main  # rank 0 reports and writes checkpoints
    if resume:
        run.resume()
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=run.start_epoch, desc="train", unit="epoch")
    paused = False
    for epoch in range(run.start_epoch, config.epochs):
        rec = run.epoch(epoch)
        run.update_best(rec)
        run.history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.2f}", val_ndcg100=f"{rec['val_ndcg@100']:.4f}")
        stopped = run.stop_rule(epoch)
        paused = stop_after is not None and epoch - run.start_epoch + 1 >= stop_after
        if stopped is not None:
            rec["stopped"] = stopped
            break
        if save_every_epoch or paused:
            run.save(epoch, val=None, test=None, finished=False)
        if paused:
            break
    if bar is not None:
        bar.close()
    if paused and run.history[-1].get("stopped") is None:
        return run.paused_result()
    return run.finish(evaluate_test=evaluate_test)
