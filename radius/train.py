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
DistributedDataParallel: see ``radius.distributed``.
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

from radius import code_version
from radius.config import TrainConfig
from radius.data.dataset import Dataset
from radius.errors import CheckpointError, RadiusError
from radius.io import atomic_path, atomic_write_json, stable_hash
from radius.metrics import evaluate
from radius.model.multvae import (
    MultVAE,
    SparseBatch,
    keep_to_dense,
    kl_std_normal,
    reparameterize,
)
from radius.model.pia import anchor_terms_sparse

__all__ = [
    "resolve_device",
    "build_model",
    "train",
    "TrainResult",
    "load_checkpoint",
    "get_model",
    "cache_key",
    "default_cache_dir",
    "draw_keep",
    "check_model_config",
    "EpochCapWarning",
]

CHECKPOINT_FORMAT = 1
# Bumped whenever a code change alters what training computes, so the content-keyed
# cache never serves a model trained by older code.
# 4: input convention "normalize-mask" by default (recorded in every config), per-model
#    defaults (Multi-VAE 200 epochs / patience 20 / anneal 50; RecVAE's reference recipe)
TRAINING_REVISION = 4
# the convention of checkpoints written before ``input_convention`` existed
LEGACY_INPUT_CONVENTION = "mask-normalize"


class EpochCapWarning(RuntimeWarning):
    """Training reached its epoch budget before early stopping ended it."""


def resolve_device(device: str) -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` without CUDA is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise RadiusError(
            f"--device {device} asked for, but CUDA is not available (torch {torch.__version__})"
        )
    return torch.device(device)


def build_model(config: TrainConfig, n_items: int) -> nn.Module:
    """The model a config describes, initialised from ``config.seed``."""
    torch.manual_seed(config.seed)
    if config.model == "recvae":
        from radius.model.recvae import RecVAE

        return RecVAE(
            n_items,
            hidden_dim=config.hidden_dims[0],
            latent_dim=config.latent_dim,
            use_anchors=config.lambda_a > 0,
            anchor_init=config.anchor_init,
            anchor_init_scale=config.anchor_init_scale,
            prior=config.recvae_prior,
            keep_rate=config.keep_rate,
            input_convention=config.input_convention,
        )
    return MultVAE(
        n_items,
        config.hidden_dims,
        config.latent_dim,
        use_anchors=config.lambda_a > 0,
        anchor_init=config.anchor_init,
        anchor_init_scale=config.anchor_init_scale,
        dropout_encoder=config.dropout_encoder,
        keep_rate=config.keep_rate,
        input_convention=config.input_convention,
    )


def draw_keep(
    batch: SparseBatch, keep_rate: float, generator: torch.Generator
) -> torch.Tensor | None:
    """Keep mask b ~ Bernoulli(keep_rate) on the stored entries, (nnz,) of 0/1 (None at 1)."""
    if keep_rate >= 1.0:
        return None
    keep = torch.rand(batch.values.shape, generator=generator, device=batch.values.device)
    return (keep < keep_rate).to(batch.values.dtype)


def check_model_config(model: nn.Module, config: TrainConfig) -> None:
    """``ValueError`` unless the model encodes masked inputs as ``config`` trains them
    (same keep rate and input convention), so ``model.encode_masked`` reproduces training."""
    got = (getattr(model, "keep_rate", None), getattr(model, "input_convention", None))
    want = (config.keep_rate, config.input_convention)
    if got[0] is None or got[1] is None or float(got[0]) != float(want[0]) or got[1] != want[1]:
        raise ValueError(
            f"model encodes with keep_rate={got[0]}, input_convention={got[1]!r} but the config "
            f"trains with keep_rate={want[0]}, input_convention={want[1]!r}: build the model "
            "with radius.train.build_model(config)"
        )


def mask_batch(batch: SparseBatch, keep_rate: float, generator: torch.Generator) -> SparseBatch:
    """x * b with b ~ Bernoulli(keep_rate) on the stored entries (zeros stay zero)."""
    if keep_rate >= 1.0:
        return batch
    keep = (
        torch.rand(batch.values.shape, generator=generator, device=batch.values.device) < keep_rate
    )
    return batch.with_values(batch.values * keep.to(batch.values.dtype))


def multvae_loss(
    model: MultVAE, batch: SparseBatch, config: TrainConfig, beta: float, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over the batch of the training objective; returns (loss, parts)."""
    check_model_config(model, config)
    keep = draw_keep(batch, config.keep_rate, generator)  # (nnz,) or None
    if config.sparse_input:
        mu, logvar = model.encode_sparse(batch, keep)  # (B, d)
    else:
        b = None if keep is None else keep_to_dense(batch, keep)  # (B, I)
        mu, logvar = model.encode_masked(batch.to_dense(), b)
    z = reparameterize(mu, logvar, generator)
    logsm = torch.log_softmax(model.decode(z), dim=-1)  # (B, I)
    nll = -(logsm[batch.rows, batch.indices] * batch.values).sum() / batch.n_rows
    kl = kl_std_normal(mu, logvar).mean()
    loss = nll + beta * kl
    parts = {"nll": nll.item(), "kl": kl.item()}
    if config.lambda_a > 0:
        terms = anchor_terms_sparse(batch, mu, logvar, model.anchors)
        la = terms.total(config.anchor_terms).mean()
        loss = loss + config.lambda_a * la
        parts.update(
            anchor=la.item(),
            anchor_align=terms.align.mean().item(),
            anchor_trace=terms.trace.mean().item(),
            anchor_spread=terms.spread.mean().item(),
        )
    return loss, parts


def make_adam(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused (one kernel for all parameters) where this torch supports it."""
    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class MultVAETrainer:
    """One Adam optimizer over all parameters; one gradient step per batch."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        from radius.distributed import LossStep

        self.model, self.config = model, config
        self.opt = make_adam(list(model.parameters()), config)
        self.step: nn.Module = LossStep(model, multvae_loss)

    def distribute(self, info, device: torch.device) -> None:
        """Route the loss through DistributedDataParallel (``radius.distributed``)."""
        from radius.distributed import wrap

        self.step = wrap(self.step, info, device, unused=False)

    def state_dict(self) -> dict[str, Any]:
        return {"opt": self.opt.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt.load_state_dict(state["opt"])

    def run_epoch(
        self, train_csr, perm: np.ndarray, step: int, anneal_steps: int, gen: torch.Generator
    ) -> tuple[dict[str, float], int, int, float]:
        """One pass over ``perm``; returns (summed parts, batches, step, last beta)."""
        cfg, device = self.config, next(self.model.parameters()).device
        sums: dict[str, float] = {}
        n_batches, beta = 0, 0.0
        self.model.train()
        for s in range(0, len(perm), cfg.batch_size):
            idx = np.sort(perm[s : s + cfg.batch_size])
            batch = SparseBatch.from_csr(train_csr[idx], device=device)
            beta = cfg.beta_cap * min(1.0, step / anneal_steps)
            loss, parts = self.step(batch, cfg, beta, gen)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            step += 1
            n_batches += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
        return sums, n_batches, step, beta


def make_trainer(model: nn.Module, config: TrainConfig):
    """The per-model epoch runner (Multi-VAE: joint steps; RecVAE: alternating phases)."""
    if config.model == "recvae":
        from radius.model.recvae import RecVAETrainer

        return RecVAETrainer(model, config)
    return MultVAETrainer(model, config)


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


def _rng_state(gen: torch.Generator, np_rng: np.random.Generator) -> dict[str, Any]:
    return {"torch": gen.get_state(), "numpy": np_rng.bit_generator.state}


def _save(path: Path, payload: dict[str, Any]) -> None:
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def train(
    dataset: Dataset,
    config: TrainConfig = TrainConfig(),
    *,
    checkpoint: str | os.PathLike | None = None,
    resume: bool = False,
    progress: bool = True,
    evaluate_test: bool = True,
    stop_after: int | None = None,
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
    """
    from radius import distributed

    info, device = distributed.setup(resolve_device(config.device))
    torch.manual_seed(config.seed)
    model = build_model(config, dataset.n_items).to(device)
    if info.enabled:  # each rank steps on its shard: ~batch_size users per step in all
        per_rank = config.replace(batch_size=-(-config.batch_size // info.world_size))
        trainer = make_trainer(model, per_rank)
        trainer.distribute(info, device)
        progress = progress and info.is_main  # rank 0 reports and writes checkpoints
    else:
        trainer = make_trainer(model, config)
    gen = torch.Generator(device=device).manual_seed(config.seed)
    np_rng = np.random.default_rng(config.seed)
    history: list[dict[str, Any]] = []
    step, start_epoch = 0, 0
    best = {"ndcg@100": -1.0, "epoch": -1, "state": None}
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    if resume:
        if ckpt_path is None or not ckpt_path.is_file():
            raise CheckpointError(f"cannot resume: no checkpoint at {ckpt_path}")
        payload = _read_checkpoint(ckpt_path)
        _check_compatible(payload, dataset, config, ckpt_path)
        state = payload["train_state"]
        if state is None:
            raise CheckpointError(f"{ckpt_path}: training already finished; nothing to resume")
        model.load_state_dict(state["model"])
        trainer.load_state_dict(state["optimizer"])
        gen.set_state(state["rng"]["torch"])
        np_rng.bit_generator.state = state["rng"]["numpy"]
        step, start_epoch = state["step"], state["epoch"] + 1
        history = payload["history"]
        best = {
            "ndcg@100": payload["val"].get("ndcg@100", -1.0),
            "epoch": payload["best_epoch"],
            "state": payload["model_state"],
        }
    n = dataset.train.shape[0]
    anneal_steps = config.anneal_steps or max(
        1, int(config.anneal_epochs * -(-n // config.batch_size))
    )
    epochs = range(start_epoch, config.epochs)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.epochs, initial=start_epoch, desc="train", unit="epoch")
    stale = 0 if not history else history[-1].get("stale", 0)

    def save(epoch_done: int, *, val, test, finished: bool) -> None:
        """Checkpoint (atomically) with the current best weights and training state."""
        if ckpt_path is not None and info.is_main:
            _write(
                ckpt_path,
                model,
                trainer,
                gen,
                np_rng,
                config,
                dataset,
                history,
                best,
                step,
                epoch_done,
                val=val,
                test=test,
                finished=finished,
            )

    for epoch in epochs:
        t0 = time.perf_counter()
        model.train()
        perm = np_rng.permutation(n)
        if info.enabled:
            gen.manual_seed(distributed.epoch_seed(config.seed, info, epoch))
            perm = distributed.shard(perm, info)
        sums, n_batches, step, beta = trainer.run_epoch(
            dataset.train, perm, step, anneal_steps, gen
        )
        val = evaluate(
            model, dataset.val_tr, dataset.val_te, metrics=(("ndcg", 100), ("recall", 20))
        )
        if info.enabled:  # every rank stops where rank 0 does
            val.means["ndcg@100"] = distributed.broadcast_float(val.means["ndcg@100"], info, device)
        rec = {k: v / n_batches for k, v in sums.items()}
        rec.update(
            epoch=epoch,
            step=step,
            beta=beta,
            seconds=time.perf_counter() - t0,
            **{f"val_{k}": v for k, v in val.means.items()},
        )
        if val.means["ndcg@100"] > best["ndcg@100"]:
            best = {
                "ndcg@100": val.means["ndcg@100"],
                "epoch": epoch,
                "state": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
            }
            stale = 0
        else:
            stale += 1
        rec["stale"] = stale
        history.append(rec)
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{rec['loss']:.2f}", val_ndcg100=f"{val.means['ndcg@100']:.4f}")
        early = stale >= config.patience
        done = early or epoch == config.epochs - 1
        paused = stop_after is not None and epoch - start_epoch + 1 >= stop_after and not done
        if done:
            rec["stopped"] = "early" if early else "cap"
        if not done:
            save(epoch, val=None, test=None, finished=False)
        if done or paused:
            break
    if bar is not None:
        bar.close()
    if paused:
        model.load_state_dict(best["state"])
        distributed.barrier(info)
        return TrainResult(
            model=model.eval(),
            config=config,
            history=history,
            val={},
            test=None,
            path=ckpt_path,
            meta={
                "best_epoch": best["epoch"],
                "paused": True,
                "stopped": None,
                "warnings": [],
                "input_convention": config.input_convention,
                "data_hash": dataset.hash,
            },
        )
    model.load_state_dict(best["state"])
    model.eval()
    val_final = evaluate(model, dataset.val_tr, dataset.val_te).means
    test = evaluate(model, dataset.test_tr, dataset.test_te).to_dict() if evaluate_test else None
    stopped = history[-1].get("stopped", "cap")
    notes = _cap_warnings(stopped, config, best["epoch"], history[-1]["epoch"])
    if info.is_main:
        for note in notes:
            warnings.warn(note, EpochCapWarning, stacklevel=2)
    meta = {
        "best_epoch": best["epoch"],
        "epochs_run": history[-1]["epoch"] + 1,
        "stopped": stopped,
        "warnings": notes,
        "input_convention": config.input_convention,
        "data_hash": dataset.hash,
        "code_version": code_version(),
    }
    save(history[-1]["epoch"], val=val_final, test=test, finished=True)
    distributed.barrier(info)
    return TrainResult(
        model=model,
        config=config,
        history=history,
        val=val_final,
        test=test,
        path=ckpt_path,
        meta=meta,
    )


def _cap_warnings(stopped: str, config: TrainConfig, best_epoch: int, last_epoch: int) -> list[str]:
    """The warning of a run that hit its epoch budget (empty when early stopping ended it)."""
    if stopped != "cap":
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
    return LoadedCheckpoint(model=model, config=config, payload=payload)


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
    result = train(dataset, config, checkpoint=path, progress=progress, resume=resume)
    return result.model
