"""The model protocol: the only way analysis code talks to a model.

Multi-VAE, RecVAE and a user's own PyTorch VAE go through every check as long as
they provide these members. Inputs ``x`` are raw (un-normalised) interaction rows,
already masked where a mask applies; the model does its own input normalisation.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["VAEModel", "check_model", "encode_masked", "input_convention"]


@runtime_checkable
class VAEModel(Protocol):
    """Members every model provides.

    - ``n_items``, ``latent_dim``: I and d.
    - ``encode(x) -> (mu, logvar)``: x (B, I) -> two (B, d) tensors.
    - ``decode(z) -> logits``: z (..., d) -> (..., I) multinomial logits.
    - ``decoder_features(z) -> h``: (..., H) features feeding the output layer, so that
      ``decode(z) == h @ W.T + b`` with ``(W, b) = output_layer()``.
    - ``output_layer() -> (W, b)``: W (I, H), b (I,) or None.
    - ``decoder_parameters()`` / ``encoder_parameters()``: named parameter lists.
    - ``anchors``: (I, d) PIA anchors, or None when PIA is off.
    """

    n_items: int
    latent_dim: int

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]: ...

    def decode(self, z: Tensor) -> Tensor: ...

    def decoder_features(self, z: Tensor) -> Tensor: ...

    def output_layer(self) -> tuple[Tensor, Tensor | None]: ...

    def decoder_parameters(self) -> list[tuple[str, nn.Parameter]]: ...

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]: ...

    @property
    def anchors(self) -> Tensor | None: ...


def check_model(model: object) -> VAEModel:
    """Raise ``TypeError`` naming the missing members if ``model`` breaks the protocol."""
    need = [
        "n_items",
        "latent_dim",
        "encode",
        "decode",
        "decoder_features",
        "output_layer",
        "decoder_parameters",
        "encoder_parameters",
        "anchors",
    ]
    missing = [m for m in need if not hasattr(model, m)]
    if missing:
        raise TypeError(
            f"{type(model).__name__} does not follow the VAEModel protocol: missing {missing}"
        )
    return model  # type: ignore[return-value]


def model_device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def input_convention(model: object) -> str:
    """How the model's encoder saw a masked input in training: ``"normalize-mask"``
    (L2-normalise, then keep-mask with the 1/rho rescale, the reference codes') or
    ``"mask-normalize"`` (mask the raw row, then normalise). A model that does not say
    is taken to mask its raw input (``encode(x * b)``)."""
    return str(getattr(model, "input_convention", "mask-normalize"))


def encode_masked(model: object, x: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """q(z | x_h) as the model saw it in training under keep mask ``b`` (0/1, x's shape).

    Uses the model's own ``encode_masked(x, b)`` where it has one (its input
    convention decides the encoder input), else ``encode(x * b)``.
    """
    fn = getattr(model, "encode_masked", None)
    if fn is not None:
        return fn(x, b)
    return model.encode(x * b)  # type: ignore[attr-defined]
