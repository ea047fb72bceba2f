r"""Adapter: a plain PyTorch encoder and decoder as a ``VAEModel`` (the model protocol).

``wrap(encoder, decoder)`` turns an encoder returning ``(mu, logvar)`` (or one
``(B, 2d)`` tensor, split in halves as in dawenl/vae_cf) and a decoder returning
multinomial logits into a model every claim of radius can check:

.. math::

    q_\phi(z \mid x) = \mathcal N(\mu_\phi(\tilde x), \operatorname{diag} e^{\ell_\phi(\tilde x)}),
    \qquad \operatorname{decode}(z) = h(z) W^\top + b,

where :math:`\tilde x` is the encoder input under the model's *input convention*
(theory.md, "What the encoder sees"), :math:`(W, b)` the decoder's output layer and
:math:`h(z)` the features feeding it (``decoder_features``).

The output layer is the decoder's last ``nn.Linear`` unless named (``output_layer=
"net.4"`` or the module itself, the way captum asks for a layer). ``decoder_features``
runs the decoder up to that layer: by slicing when the decoder is an ``nn.Sequential``
ending in it, else by a forward hook that records the layer's input. ``wrap`` and
``validate`` run the model on a dummy batch and raise ``ModelError`` (a ``RadiusError``:
exit 2 on the command line) naming the member and the shape when anything disagrees.

The declared posterior. A model that samples :math:`z = \mu + c\,\sigma\,\epsilon`
(RecBole's MultiVAE and RecVAE use :math:`c = 0.01`) has the posterior
:math:`\mathcal N(\mu, c^2\sigma^2)`, not :math:`\mathcal N(\mu, \sigma^2)`;
``wrap(..., posterior_scale=c)`` declares it, and ``encode`` then returns
:math:`\ell + 2\ln c` for the encoder's :math:`\ell`, so every claim (W2, KL, L2.4's
sigma head, T2.3's samples) reads the posterior the model samples from.

Warnings. A model that looks degenerate gets human-readable strings in
``radius_warnings`` (a list; ``verify`` prints them under the verdicts of the claims
that used the model): a KL weight under ``KL_WEIGHT_MIN``, a declared posterior scale
other than 1, and (``posterior_warnings``, on data) a logvar outside ``LOGVAR_SANE``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from radius.errors import RadiusError

__all__ = [
    "wrap",
    "validate",
    "WrappedVAE",
    "ModelError",
    "CONVENTIONS",
    "EPS_NORM",
    "KL_WEIGHT_MIN",
    "LOGVAR_SANE",
    "posterior_warnings",
    "add_warning",
]

EPS_NORM = 1e-8  # same epsilon as radius.model.multvae
CONVENTIONS: tuple[str, ...] = ("normalize-mask", "mask-normalize", "none")
"""``normalize-mask``: :math:`\\tilde x = x/(\\|x\\|_2+\\epsilon)\\odot b/\\rho` (the
reference codes'); ``mask-normalize``: :math:`(x\\odot b)/(\\|x\\odot b\\|_2+\\epsilon)`;
``none``: the encoder gets the raw masked row :math:`x\\odot b` (it normalises, if at
all, itself)."""

KL_WEIGHT_MIN = 1e-3
"""A KL weight (beta at the end of training) under this leaves the posterior nearly
unregularised: ``wrap(..., kl_weight=...)`` attaches a warning."""

LOGVAR_SANE: tuple[float, float] = (-20.0, 5.0)
"""Range of the posterior's log-variance (the one radius uses, scale included) that is
not flagged: above 5 a coordinate's sigma exceeds e^2.5 = 12 times the N(0, I) prior's
(the encoder is not held to the prior: a tiny KL weight), below -20 sigma is under
4.5e-5 (a point mass). ``posterior_warnings`` reports encodings outside it."""


class ModelError(RadiusError):
    """A model that breaks the protocol (missing member, wrong shape, NaN output)."""


def _normalize(x: Tensor) -> Tensor:
    return x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + EPS_NORM)


class WrappedVAE(nn.Module):
    """A user's encoder + decoder behind the ``VAEModel`` protocol (built by ``wrap``).

    Attributes
    ----------
    encoder, decoder : the user's modules (their parameters are this model's).
    n_items, latent_dim : I and d (read from the output layer and a dummy encoding).
    input_convention : one of ``CONVENTIONS``.
    input_normalization : ``"l2"`` (the encoder sees L2-normalised rows) or ``"none"``;
        L2.4 certifies the raw-input bound through it.
    keep_rate : rho of the input mask the model was trained with (1: clean).
    lambda_a : weight of the anchor loss it was trained with (0 without anchors).
    posterior_scale : c of the sampler z = mu + c sigma eps (1: the usual one).
    logvar_offset : 2 ln c, added to the encoder's logvar by ``encode`` (0 when c = 1).
    kl_weight : the KL weight (beta) at the end of training, when declared, else None.
    radius_warnings : list of warnings about the model (strings), shown under verdicts.
    """

    def __init__(
        self,
        encoder: nn.Module,
        decoder: nn.Module,
        out_layer: nn.Linear,
        out_name: str,
        *,
        n_items: int,
        latent_dim: int,
        split_output: bool,
        input_convention: str,
        keep_rate: float,
        lambda_a: float,
        anchors: Tensor | None,
        posterior_scale: float = 1.0,
        kl_weight: float | None = None,
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.decoder = decoder
        self._out_name = out_name
        self._out = [out_layer]  # a list: not registered twice as a submodule
        self.n_items = int(n_items)
        self.latent_dim = int(latent_dim)
        self.split_output = bool(split_output)
        self.input_convention = input_convention
        self.input_normalization = "none" if input_convention == "none" else "l2"
        self.keep_rate = float(keep_rate)
        self.lambda_a = float(lambda_a)
        self.posterior_scale = float(posterior_scale)
        self.logvar_offset = 2.0 * math.log(self.posterior_scale)
        self.kl_weight = None if kl_weight is None else float(kl_weight)
        self.radius_warnings: list[str] = []
        if anchors is None:
            self.register_parameter("anchor_table", None)
        else:
            self.anchor_table = (
                anchors if isinstance(anchors, nn.Parameter) else nn.Parameter(anchors.detach())
            )
        seq = decoder if isinstance(decoder, nn.Sequential) else None
        self._slice = seq is not None and len(seq) > 0 and seq[-1] is out_layer

    # ------------------------------------------------------------- encoder
    def _encoder_out(self, xin: Tensor) -> tuple[Tensor, Tensor]:
        out = self.encoder(xin)
        if self.split_output:
            d = out.shape[-1] // 2
            mu, logvar = out[..., :d], out[..., d:]
        else:
            mu, logvar = out[0], out[1]
        if self.logvar_offset:  # the declared posterior N(mu, c^2 sigma^2)
            logvar = logvar + self.logvar_offset
        return mu, logvar

    def encoder_input(self, x: Tensor, b: Tensor | None = None) -> Tensor:
        """The encoder input of raw rows x (B, I) under keep mask b (None: clean)."""
        if self.input_convention == "none":
            return x if b is None else x * b
        if b is None:
            return _normalize(x)
        if self.input_convention == "normalize-mask":
            return _normalize(x) * b / self.keep_rate
        return _normalize(x * b)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """x (B, I) raw rows -> (mu, logvar), each (B, d), of the declared posterior
        (``logvar`` includes ``logvar_offset``)."""
        return self._encoder_out(self.encoder_input(x))

    def encode_masked(self, x: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x_h) under keep mask b (B, I) as the model saw it in training."""
        return self._encoder_out(self.encoder_input(x, b))

    # ------------------------------------------------------------- decoder
    def decode(self, z: Tensor) -> Tensor:
        """z (..., d) -> logits (..., I)."""
        return self.decoder(z)

    def decoder_features(self, z: Tensor) -> Tensor:
        """The input (..., H) of the output layer, so ``decode(z) = h W^T + b``."""
        if self._slice:
            return self.decoder[:-1](z)
        seen: list[Tensor] = []

        def hook(_m: nn.Module, inputs: tuple[Tensor, ...]) -> None:
            seen.append(inputs[0])

        handle = self._out[0].register_forward_pre_hook(hook)
        try:
            self.decoder(z)
        finally:
            handle.remove()
        if len(seen) != 1:
            raise ModelError(
                f"decoder_features: output layer {self._out_name!r} ran {len(seen)} times in "
                "one decoder pass (expected once); name the output layer explicitly"
            )
        return seen[0]

    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        """(W (I, H), b (I,) or None) of the decoder's output layer."""
        lin = self._out[0]
        return lin.weight, lin.bias

    def decoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.decoder.named_parameters())

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return list(self.encoder.named_parameters())

    @property
    def anchors(self) -> Tensor | None:
        return self.anchor_table

    def extra_repr(self) -> str:
        return (
            f"n_items={self.n_items}, latent_dim={self.latent_dim}, "
            f"input_convention={self.input_convention!r}, keep_rate={self.keep_rate}, "
            f"posterior_scale={self.posterior_scale:g}, output_layer={self._out_name!r}"
        )


def _find_output_layer(
    decoder: nn.Module, output_layer: str | nn.Module | None
) -> tuple[str, nn.Linear]:
    named = dict(decoder.named_modules())
    if output_layer is None:
        lins = [(n, m) for n, m in named.items() if isinstance(m, nn.Linear)]
        if not lins:
            raise ModelError(
                f"decoder {type(decoder).__name__} has no nn.Linear; pass output_layer= the "
                "layer whose output are the logits"
            )
        name, layer = lins[-1]
    elif isinstance(output_layer, str):
        if output_layer not in named:
            import difflib

            close = difflib.get_close_matches(output_layer, [n for n in named if n], n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else ""
            raise ModelError(f"decoder has no submodule {output_layer!r}{hint}")
        name, layer = output_layer, named[output_layer]
    elif isinstance(output_layer, nn.Module):
        match = [n for n, m in named.items() if m is output_layer]
        if not match:
            raise ModelError("output_layer is not a submodule of the decoder")
        name, layer = match[0], output_layer
    else:
        raise TypeError(
            f"output_layer must be None, a submodule name or an nn.Module, got "
            f"{type(output_layer).__name__}"
        )
    if not isinstance(layer, nn.Linear):
        raise ModelError(
            f"output layer {name!r} is a {type(layer).__name__}; the protocol needs an nn.Linear "
            "(decode(z) = h W^T + b)"
        )
    return name or "<decoder>", layer


def wrap(
    encoder: nn.Module,
    decoder: nn.Module,
    *,
    output_layer: str | nn.Module | None = None,
    input_convention: str = "normalize-mask",
    keep_rate: float = 1.0,
    lambda_a: float = 0.0,
    anchors: Tensor | None = None,
    n_items: int | None = None,
    posterior_scale: float = 1.0,
    kl_weight: float | None = None,
) -> WrappedVAE:
    r"""Turn a plain encoder and decoder into a ``VAEModel`` and validate it.

    Parameters
    ----------
    encoder : ``nn.Module`` mapping the encoder input (B, I) to ``(mu, logvar)``, two
        (B, d) tensors, or to one (B, 2d) tensor whose halves are mu and logvar.
    decoder : ``nn.Module`` mapping z (B, d) to logits (B, I).
    output_layer : the decoder's output ``nn.Linear``: None (its last ``nn.Linear``), a
        submodule name (``"net.4"``) or the module itself.
    input_convention : how the encoder saw a masked row in training, one of
        ``CONVENTIONS`` (default ``"normalize-mask"``: L2-normalise, then keep-mask with
        the 1/rho rescale).
    keep_rate : rho of the training mask (1.0: clean input).
    lambda_a : weight of the anchor loss in training (0 without anchors).
    anchors : (I, d) PIA anchors, or None.
    n_items : I, when known; checked against the output layer.
    posterior_scale : c > 0 when the model samples z = mu + c sigma eps in training (RecBole:
        0.01); the posterior radius uses is then N(mu, c^2 exp(logvar)) (default 1).
    kl_weight : the KL weight (beta) the model ended training with, when known; under
        ``KL_WEIGHT_MIN`` it adds a warning (the posterior is barely regularised).

    Returns
    -------
    WrappedVAE in eval mode, validated on a dummy batch (``validate``), with its
    ``radius_warnings`` (posterior scale other than 1, KL weight under the minimum).

    Raises
    ------
    ModelError
        The output layer cannot be found or is no ``nn.Linear``, an output has the wrong
        shape or is not finite, or ``decode`` is not ``decoder_features`` times the
        output layer.
    """
    if not isinstance(encoder, nn.Module) or not isinstance(decoder, nn.Module):
        raise TypeError(
            f"encoder and decoder must be nn.Modules, got {type(encoder).__name__} and "
            f"{type(decoder).__name__}"
        )
    if input_convention not in CONVENTIONS:
        raise ValueError(
            f"input_convention must be one of {list(CONVENTIONS)}, got {input_convention!r}"
        )
    if not (0.0 < float(keep_rate) <= 1.0):
        raise ValueError(f"keep_rate (rho) must be in (0, 1], got {keep_rate}")
    if not (float(lambda_a) >= 0.0):
        raise ValueError(f"lambda_a must be >= 0, got {lambda_a}")
    if not (math.isfinite(float(posterior_scale)) and float(posterior_scale) > 0.0):
        raise ValueError(f"posterior_scale must be a finite number > 0, got {posterior_scale}")
    if kl_weight is not None and not (math.isfinite(float(kl_weight)) and float(kl_weight) >= 0.0):
        raise ValueError(f"kl_weight must be a finite number >= 0 or None, got {kl_weight}")
    name, layer = _find_output_layer(decoder, output_layer)
    items = int(layer.out_features)
    if n_items is not None and int(n_items) != items:
        raise ModelError(
            f"output layer {name!r} has {items} outputs, but the data has {n_items} items"
        )
    was_training = encoder.training
    encoder.eval()
    with torch.no_grad():
        x = _dummy_rows(items, 4, next(iter(encoder.parameters()), torch.zeros(())).device)
        probe = WrappedVAE(
            encoder,
            decoder,
            layer,
            name,
            n_items=items,
            latent_dim=1,
            split_output=False,
            input_convention=input_convention,
            keep_rate=keep_rate,
            lambda_a=lambda_a,
            anchors=None,
        )
        try:
            out = encoder(probe.encoder_input(x))
        except Exception as e:  # noqa: BLE001 - reported as a model error naming shapes
            raise ModelError(
                f"encoder failed on a dummy batch of shape {tuple(x.shape)} (n_items = "
                f"{items}, the outputs of output layer {name!r}): {type(e).__name__}: {e}"
            ) from e
        finally:
            encoder.train(was_training)
    if isinstance(out, Tensor):
        if out.ndim != 2 or out.shape[0] != x.shape[0] or out.shape[1] % 2:
            raise ModelError(
                f"encoder returned one tensor of shape {tuple(out.shape)}; expected (mu, logvar) "
                f"or one (B, 2d) tensor, B = {x.shape[0]}"
            )
        split, d = True, out.shape[1] // 2
    elif isinstance(out, Sequence) and len(out) == 2 and all(isinstance(t, Tensor) for t in out):
        split, d = False, int(out[0].shape[-1])
    else:
        raise ModelError(
            f"encoder must return (mu, logvar) or one (B, 2d) tensor, got {type(out).__name__}"
            + (f" of length {len(out)}" if isinstance(out, Sequence) else "")
        )
    model = WrappedVAE(
        encoder,
        decoder,
        layer,
        name,
        n_items=items,
        latent_dim=d,
        split_output=split,
        input_convention=input_convention,
        keep_rate=keep_rate,
        lambda_a=lambda_a,
        anchors=anchors,
        posterior_scale=posterior_scale,
        kl_weight=kl_weight,
    )
    model.eval()
    validate(model)
    for note in _declared_warnings(model):
        add_warning(model, note)
    return model


def add_warning(model: Any, note: str) -> None:
    """Append ``note`` to ``model.radius_warnings`` (created if absent), once."""
    notes = getattr(model, "radius_warnings", None)
    if not isinstance(notes, list):
        notes = []
        model.radius_warnings = notes
    if note not in notes:
        notes.append(note)


def _declared_warnings(model: WrappedVAE) -> list[str]:
    """Warnings that follow from what the model declares (no data needed)."""
    out = []
    c = model.posterior_scale
    if c != 1.0:
        out.append(
            f"posterior scale {c:g}: the model samples z = mu + {c:g} sigma eps, so its "
            f"posterior is N(mu, ({c:g} sigma)^2), not N(mu, exp(logvar)); radius uses the "
            f"sampled one (logvar {model.logvar_offset:+.3g}), while the model's own KL term "
            "was computed on exp(logvar)"
        )
    w = model.kl_weight
    if w is not None and w < KL_WEIGHT_MIN:
        out.append(
            f"KL weight {w:.3g} < {KL_WEIGHT_MIN:g} at the end of training: the posterior is "
            "barely held to the prior (e.g. an annealing schedule that had not ramped up), so "
            "posterior widths and beta-KL read a nearly unregularised encoder"
        )
    return out


@torch.no_grad()
def posterior_warnings(model: Any, x: Any, *, max_rows: int = 2000, seed: int = 0) -> list[str]:
    r"""Encode rows of ``x`` and warn when the posterior's logvar leaves ``LOGVAR_SANE``.

    Parameters
    ----------
    model : a protocol model (its ``encode`` gives the posterior radius uses).
    x : (U, I) raw interaction rows (scipy sparse or dense); at most ``max_rows`` of
        them, drawn with ``seed``, are encoded.

    Returns
    -------
    The new warnings (also appended to ``model.radius_warnings``); empty when none.
    """
    import numpy as np
    import scipy.sparse as sp

    n = int(x.shape[0])
    if n == 0:
        return []
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(np.random.default_rng(seed).choice(n, size=max_rows, replace=False))
    sub = x[rows]
    dense = np.asarray(sub.todense() if sp.issparse(sub) else sub, dtype=np.float32)
    was = model.training
    model.eval()
    try:
        p = next(model.parameters())
        xt = torch.from_numpy(dense).to(device=p.device, dtype=p.dtype)
        lv = torch.cat([model.encode(xt[s : s + 512])[1] for s in range(0, len(xt), 512)])
    finally:
        model.train(was)
    lo, hi = float(lv.min()), float(lv.max())
    out = []
    if lo < LOGVAR_SANE[0] or hi > LOGVAR_SANE[1]:
        out_frac = float(((lv < LOGVAR_SANE[0]) | (lv > LOGVAR_SANE[1])).double().mean())
        offset = float(getattr(model, "logvar_offset", 0.0))
        scale = f" (posterior scale included: logvar {offset:+.3g})" if offset else ""
        out.append(
            f"posterior logvar ranges over [{lo:.3g}, {hi:.3g}] on {len(rows)} training users"
            f"{scale}, outside the sane range [{LOGVAR_SANE[0]:g}, {LOGVAR_SANE[1]:g}] for "
            f"{100 * out_frac:.3g}% of the coordinates: sigma from {math.exp(lo / 2):.3g} to "
            f"{math.exp(hi / 2):.3g} against the prior's 1"
        )
    for note in out:
        add_warning(model, note)
    return out


def _dummy_rows(n_items: int, n: int, device: Any) -> Tensor:
    """n binary rows (n, I), each with at least one item, deterministic."""
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(n, n_items, generator=gen) < min(0.5, 8.0 / max(n_items, 1))).float()
    x[torch.arange(n), torch.arange(n) % n_items] = 1.0
    return x.to(device)


def validate(model: Any, *, n_items: int | None = None, name: str = "model") -> Any:
    r"""Check the protocol on a dummy batch; raise ``ModelError`` naming member and shape.

    Checks: every protocol member exists; ``encode`` returns two (B, d) finite tensors;
    ``decode`` (B, I) finite logits; ``decoder_features`` (B, H) with
    ``decode(z) = h W^T + b`` (relative 1e-4) for ``(W, b) = output_layer()`` with W
    (I, H); ``anchors`` (I, d) or None; ``n_items`` equal to the data's when given.

    Parameters
    ----------
    model : the model to check (any object).
    n_items : the dataset's item count I, or None.
    name : how messages name the model (``"the pia model"``).

    Returns
    -------
    The model, unchanged.
    """
    from radius.model.protocol import check_model

    try:
        check_model(model)
    except TypeError as e:
        raise ModelError(f"{name}: {e}") from None
    if not isinstance(model, nn.Module):
        raise ModelError(f"{name}: {type(model).__name__} is not an nn.Module")
    items, d = int(model.n_items), int(model.latent_dim)
    if n_items is not None and items != int(n_items):
        raise ModelError(
            f"{name}: n_items = {items}, but the data has {n_items} items (a checkpoint or "
            "model for other data?)"
        )
    try:
        device = next(model.parameters()).device
    except StopIteration:
        raise ModelError(f"{name}: has no parameters") from None
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            _validate_forward(model, items, d, name, device)
    finally:
        model.train(was)
    return model


def _call(name: str, member: str, fn: Any, *args: Any) -> Any:
    try:
        return fn(*args)
    except ModelError:
        raise
    except Exception as e:  # noqa: BLE001 - reported as a model error naming shapes
        shapes = ", ".join(str(tuple(a.shape)) for a in args if isinstance(a, Tensor))
        raise ModelError(
            f"{name}: {member} failed on a dummy batch of shape {shapes}: {type(e).__name__}: {e}"
        ) from e


def _shape_error(name: str, member: str, got: Any, want: str) -> ModelError:
    return ModelError(f"{name}: {member} has shape {tuple(got)}, expected {want}")


def _finite(name: str, member: str, t: Tensor) -> None:
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise ModelError(
            f"{name}: {member} has {bad} non-finite values (NaN or inf) on a dummy batch"
        )


def _validate_forward(model: Any, items: int, d: int, name: str, device: Any) -> None:
    b = 4
    x = _dummy_rows(items, b, device)
    out = _call(name, "encode(x)", model.encode, x)
    if not (isinstance(out, tuple | list) and len(out) == 2):
        raise ModelError(f"{name}: encode(x) must return (mu, logvar), got {type(out).__name__}")
    mu, lv = out
    for member, t in (("encode(x)[0] (mu)", mu), ("encode(x)[1] (logvar)", lv)):
        if not isinstance(t, Tensor) or tuple(t.shape) != (b, d):
            raise _shape_error(
                name, member, getattr(t, "shape", ()), f"({b}, {d}) = (B, latent_dim)"
            )
        _finite(name, member, t)
    z = torch.randn(b, d, generator=torch.Generator().manual_seed(1)).to(
        device=device, dtype=mu.dtype
    )
    logits = _call(name, "decode(z)", model.decode, z)
    if not isinstance(logits, Tensor) or tuple(logits.shape) != (b, items):
        raise _shape_error(
            name, "decode(z)", getattr(logits, "shape", ()), f"({b}, {items}) = (B, n_items)"
        )
    _finite(name, "decode(z)", logits)
    w, bias = model.output_layer()
    if w.ndim != 2 or w.shape[0] != items:
        raise _shape_error(name, "output_layer()[0] (W)", w.shape, f"({items}, H)")
    if bias is not None and tuple(bias.shape) != (items,):
        raise _shape_error(name, "output_layer()[1] (b)", bias.shape, f"({items},)")
    h = _call(name, "decoder_features(z)", model.decoder_features, z)
    if not isinstance(h, Tensor) or tuple(h.shape) != (b, w.shape[1]):
        raise _shape_error(
            name, "decoder_features(z)", getattr(h, "shape", ()), f"({b}, {w.shape[1]}) = (B, H)"
        )
    rebuilt = h @ w.T + (0.0 if bias is None else bias)
    err = float((rebuilt - logits).abs().max())
    scale = float(logits.abs().max()) + 1.0
    if not math.isfinite(err) or err > 1e-4 * scale:
        raise ModelError(
            f"{name}: decode(z) differs from decoder_features(z) @ W.T + b by {err:.3g} "
            "(the output layer is not the decoder's last operation; name it with output_layer=)"
        )
    anchors = model.anchors
    if anchors is not None:
        if tuple(anchors.shape) != (items, d):
            raise _shape_error(
                name, "anchors", anchors.shape, f"({items}, {d}) = (n_items, latent_dim)"
            )
        _finite(name, "anchors", anchors)
    for member in ("decoder_parameters", "encoder_parameters"):
        params = getattr(model, member)()
        if not isinstance(params, list) or not all(
            isinstance(p, tuple) and len(p) == 2 and isinstance(p[1], Tensor) for p in params
        ):
            raise ModelError(f"{name}: {member}() must return a list of (name, parameter) pairs")
        for pname, p in params:
            _finite(name, f"{member}() {pname!r}", p)
