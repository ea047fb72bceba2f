"""Models: Multi-VAE, RecVAE, PIA anchors, the model protocol and the adapter ``wrap``.

``wrap(encoder, decoder, ...)`` turns a plain PyTorch encoder and decoder into a model
that follows ``VAEModel`` (``radius.model.protocol``), so every claim can check it.
"""

from __future__ import annotations

from radius.model.protocol import (
    VAEModel,
    check_model,
    encode_masked,
    input_convention,
    posterior_scale,
)
from radius.model.wrap import ModelError, WrappedVAE, posterior_warnings, validate, wrap

__all__ = [
    "VAEModel",
    "check_model",
    "encode_masked",
    "input_convention",
    "posterior_scale",
    "posterior_warnings",
    "wrap",
    "validate",
    "WrappedVAE",
    "ModelError",
]
