r"""The model protocol: the only way analysis code talks to a model.

Multi-VAE, RecVAE and a user's own PyTorch VAE go through every check as long as
they provide these members. Inputs ``x`` are raw (un-normalised) interaction rows; the
model does its own input normalisation. ``encode(x)`` is the clean input (b = 1, as at
evaluation). A masked input is encoded through ``encode_masked(model, x, b)``, never as
``encode(x * b)``: radius's models (``input_convention`` ``"normalize-mask"``, the
reference codes') feed the encoder ``x / ||x|| * b / rho``, which ``encode(x * b)``
would not reproduce.

The posterior. ``encode`` returns the posterior every claim reads: the one the model
samples from in training. A model whose sampler is :math:`z = \mu + c\,\sigma\,\epsilon`
with :math:`c \ne 1` declares ``posterior_scale = c`` and returns
:math:`\ell + 2\ln c` as its logvar (``radius.model.wrap`` does this: the only place
where the scale is applied, so W2, KL, the beta-KL terms, T2.3's samples and L2.4's sigma
head all see it). ``posterior_scale(model)`` reads the declared c (1 when undeclared).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import torch
from torch import Tensor, nn

__all__ = ["VAEModel", "check_model", "encode_masked", "input_convention", "posterior_scale"]


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

    Optional (radius's models have them; ``encode_masked`` / ``input_convention`` below
    fall back when they are absent): ``encode_masked(x, b)``, ``input_convention``
    (``"normalize-mask"`` or ``"mask-normalize"``) and ``keep_rate`` (rho in training);
    ``posterior_scale`` (c of z = mu + c sigma eps; ``encode`` already includes it) and
    ``logvar_offset`` (2 ln c); ``kl_weight`` (beta at the end of training);
    ``radius_warnings`` (a list of strings shown under the verdicts that used the model).
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
    r"""q(z | x, b) as the model saw it in training under keep mask ``b`` (0/1, x's shape).

    Uses the model's own ``encode_masked(x, b)`` where it has one (its input
    convention decides the encoder input: :math:`x/\|x\|\odot b/\rho` for
    ``"normalize-mask"``, :math:`(x\odot b)/\|x\odot b\|` for ``"mask-normalize"``),
    else ``encode(x * b)`` (a model that masks its raw input). Either way the encoder
    input is supported on x_h = x * b.
    """
    fn = getattr(model, "encode_masked", None)
    if fn is not None:
        return fn(x, b)
    return model.encode(x * b)  # type: ignore[attr-defined]


def posterior_scale(model: object) -> float:
    """c of the model's sampler z = mu + c sigma eps (1.0 when the model declares none).

    ``encode`` already returns the logvar of N(mu, c^2 sigma^2); this is for reports."""
    return float(getattr(model, "posterior_scale", 1.0))
