"""The model a config describes, and the device it trains on."""

from __future__ import annotations

import torch
from torch import nn

from radius.errors import RadiusError
from radius.model.multvae import MultVAE
from radius.training.config import TrainConfig

__all__ = ["resolve_device", "build_model"]


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
