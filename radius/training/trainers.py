"""Epoch runners: Multi-VAE's joint Adam steps and RecVAE's alternating phases.

``make_trainer(model, config)`` picks one; ``radius.training.trainer.train`` drives it.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from radius.model.multvae import SparseBatch
from radius.model.recvae import RecVAE
from radius.training.config import TrainConfig
from radius.training.losses import multvae_loss, recvae_loss

__all__ = ["make_adam", "MultVAETrainer", "make_trainer", "RecVAETrainer"]


def make_adam(params: list[nn.Parameter], config: TrainConfig) -> torch.optim.Optimizer:
    """Adam, fused (one kernel for all parameters) where this torch supports it."""
    try:
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay, fused=True)
    except (RuntimeError, TypeError):
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)


class MultVAETrainer:
    """One Adam optimizer over all parameters; one gradient step per batch."""

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        from radius.training.distributed import LossStep

        self.model, self.config = model, config
        self.opt = make_adam(list(model.parameters()), config)
        self.step: nn.Module = LossStep(model, multvae_loss)

    def distribute(self, info, device: torch.device) -> None:
        """Route the loss through DistributedDataParallel (``radius.training.distributed``)."""
        from radius.training.distributed import wrap

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
            beta = cfg.beta_cap * (min(1.0, step / anneal_steps) if anneal_steps > 0 else 1.0)
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
        return RecVAETrainer(model, config)
    return MultVAETrainer(model, config)


class RecVAETrainer:
    """Alternating phases: ``enc_epochs`` encoder passes, refresh prior, one decoder pass."""

    def __init__(self, model: RecVAE, config: TrainConfig) -> None:
        self.model, self.config = model, config
        enc_params = [p for _, p in model.encoder_parameters()]
        if model.anchors is not None:
            enc_params.append(model.anchors)
        self.opt_enc = make_adam(enc_params, config)
        self.opt_dec = make_adam([p for _, p in model.decoder_parameters()], config)
        from radius.training.distributed import LossStep

        self.step: nn.Module = LossStep(model, recvae_loss)

    def distribute(self, info, device: torch.device) -> None:
        """Route the loss through DistributedDataParallel (``radius.training.distributed``); the
        anchors sit out the decoder phase, so DDP looks for unused parameters."""
        from radius.training.distributed import wrap

        self.step = wrap(self.step, info, device, unused=True)

    def state_dict(self) -> dict[str, Any]:
        return {"enc": self.opt_enc.state_dict(), "dec": self.opt_dec.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_enc.load_state_dict(state["enc"])
        self.opt_dec.load_state_dict(state["dec"])

    def _pass(self, train_csr, perm, opt, gen, *, keep_rate, with_anchor, sums) -> int:
        cfg, device = self.config, next(self.model.parameters()).device
        n = 0
        for s in range(0, len(perm), cfg.batch_size):
            idx = np.sort(perm[s : s + cfg.batch_size])
            batch = SparseBatch.from_csr(train_csr[idx], device=device)
            loss, parts = self.step(batch, cfg, gen, keep_rate=keep_rate, with_anchor=with_anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
        return n

    @staticmethod
    def _reshuffle(perm: np.ndarray, gen: torch.Generator) -> np.ndarray:
        """The same users in a fresh order drawn from ``gen`` (the reference shuffles
        before every pass; under DDP each rank reshuffles its own shard)."""
        order = torch.randperm(len(perm), generator=gen, device=gen.device).cpu().numpy()
        return perm[order]

    def run_epoch(self, train_csr, perm, step, anneal_steps, gen):
        """Encoder phase (masked, + PIA), prior refresh, decoder phase (clean); every pass
        after the first goes over the users in a fresh order."""
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        for k in range(self.config.enc_epochs):
            n += self._pass(
                train_csr,
                perm if k == 0 else self._reshuffle(perm, gen),
                self.opt_enc,
                gen,
                keep_rate=self.config.keep_rate,
                with_anchor=True,
                sums=sums,
            )
        self.model.prior.refresh(self.model.encoder)
        n += self._pass(
            train_csr,
            self._reshuffle(perm, gen),
            self.opt_dec,
            gen,
            keep_rate=1.0,
            with_anchor=False,
            sums=sums,
        )
        return sums, n, step + n, self.config.gamma
