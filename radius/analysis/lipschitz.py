r"""Lipschitz constants: certified l1 -> l2 bounds of encoders (L2.4) and the estimated
Lipschitz constant of the decoder's gradient in z (T2.3's L_thz).

Encoders: Multi-VAE's tanh MLP, RecVAE's dense swish / layer-norm trunk and any encoder
built from standard layers (``CERTIFIED_LAYERS``) get a certified bound composed from
per-layer constants; an unknown layer raises ``UncertifiedLayerError`` naming it. The
input normalisation :math:`\tilde x = x / (\lVert x\rVert_2 + \epsilon)` is accounted for
by ``normalization_factor``. ``mixed_jacobian_lipschitz`` estimates (does not certify)
the spectral norm of :math:`\partial_z \nabla_\theta \ell` by power iteration.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from radius.analysis.geometry import _as_tensor, w2_diag

__all__ = [
    "MixedJacobianEstimate",
    "encode_double",
    "encoder_lipschitz_bound",
    "UncertifiedLayerError",
    "CERTIFIED_LAYERS",
    "normalization_factor",
    "empirical_local_lipschitz",
    "mixed_jacobian_lipschitz",
    "binary_l1_nearest",
]

ArrayLike = Tensor | np.ndarray


# --------------------------------------------------------------------------- encoder
def _spectral_norm(w: Tensor) -> float:
    """||w||_2 as sqrt of the top eigenvalue of the smaller Gram matrix (float64).

    Same value as ``torch.linalg.matrix_norm(w, ord=2)`` up to rounding (relative ~1e-15
    for the top singular value), several times faster than an SVD; inflated by a
    relative 1e-12 so that rounding cannot make a certified bound too small.
    """
    w = w.detach().double()
    g = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
    return float(torch.linalg.eigvalsh(g)[-1].clamp_min(0).sqrt()) * (1.0 + 1e-12)


SILU_LIPSCHITZ = 1.0999
"""Upper bound on sup |silu'(t)|: silu'(t) = s(t)(1 + t(1 - s(t))), s the logistic
function, takes values in [-0.09984, 1.09984] (extremes at t = -/+2.3994)."""


def _is_multvae(model: Any) -> bool:
    need = ("enc_in_weight", "enc_in_bias", "enc_layers", "latent_dim")
    return all(hasattr(model, n) for n in need)


def _is_recvae(model: Any) -> bool:
    from radius.model.recvae import RecVAEEncoder

    return isinstance(getattr(model, "encoder", None), RecVAEEncoder)


def _check_supported(model: Any) -> None:
    if not (_is_multvae(model) or _is_recvae(model)):
        raise TypeError(
            f"encoder_lipschitz_bound supports MultVAE-style encoders (enc_in_weight, "
            f"enc_layers) and RecVAE encoders, got {type(model).__name__}"
        )


def layernorm_lipschitz(ln: nn.LayerNorm) -> float:
    r"""Certified l2 Lipschitz constant of a LayerNorm over its last dimension.

    :math:`\mathrm{LN}(y) = \gamma\odot f(Py) + \beta`, P the centring projection
    (non-expansive) and :math:`f(c) = c / r(c)`, :math:`r = \sqrt{\lVert c\rVert^2/H +
    \epsilon}`. The Jacobian of f is :math:`(I - cc^\top/(H r^2))/r`, with eigenvalues
    :math:`1/r` (across c) and :math:`\epsilon/r^3` (along c), both :math:`\le
    1/\sqrt\epsilon`; the domain is convex, so
    :math:`\mathrm{Lip}(\mathrm{LN}) \le \max_k|\gamma_k| / \sqrt\epsilon`, attained at
    c = 0 when :math:`\gamma` is constant.
    """
    if len(ln.normalized_shape) != 1:
        raise ValueError(f"LayerNorm over one dimension expected, got {ln.normalized_shape}")
    g = 1.0 if ln.weight is None else float(ln.weight.detach().double().abs().max())
    return g / math.sqrt(ln.eps) * (1.0 + 1e-12)


def _param_or(p: Tensor | None, n: int, fill: float) -> Tensor:
    """An optional parameter (bias, layer-norm scale) in float64, or ``fill`` when absent."""
    return torch.full((n,), fill, dtype=torch.float64) if p is None else p.detach().double()


def _multvae_trunk(model: Any) -> tuple[float, Tensor, Tensor, Tensor, dict[str, Any]]:
    """B with ||dh_L||_2 <= B ||dx~||_1, the (2d, H_L) head weight and bias, the
    certified logvar range G (d,), and the factors (tanh is 1-Lipschitz, h_L in [-1, 1])."""
    d = int(model.latent_dim)
    w_in = model.enc_in_weight.detach().double()  # (I, H0)
    first = float(torch.linalg.vector_norm(w_in, dim=1).max())
    layers = list(model.enc_layers)
    hidden = [_spectral_norm(lin.weight) for lin in layers[:-1]]
    head = layers[-1]
    w_head = head.weight.detach().double()  # (2d, H_L)
    b_head = _param_or(head.bias, 2 * d, 0.0)
    global_max = w_head[d:].abs().sum(dim=1) + b_head[d:]  # (d,)
    trunk = first * (float(np.prod(hidden)) if hidden else 1.0)
    return (
        trunk,
        w_head[:d],
        w_head[d:],
        global_max,
        {
            "encoder": "multvae",
            "first_layer": first,
            "hidden": hidden,
        },
    )


def _recvae_trunk(model: Any) -> tuple[float, Tensor, Tensor, Tensor, dict[str, Any]]:
    r"""RecVAE's densely connected trunk (``radius.model.recvae.RecVAEEncoder``).

    :math:`h_1 = \mathrm{LN}_0(\mathrm{silu}(\tilde x W_{in} + b))`,
    :math:`h_{k+1} = \mathrm{LN}_k(\mathrm{silu}((W_k + I) h_k + \sum_{j<k} h_j + b_k))`.
    With :math:`\ell_k` the LayerNorm constants (``layernorm_lipschitz``) and
    :math:`s` = ``SILU_LIPSCHITZ``, by the triangle inequality
    :math:`\lVert\Delta h_j\rVert_2 \le B_j \lVert\Delta\tilde x\rVert_1` with
    :math:`B_1 = \ell_0 s \max_i\lVert W_{in}[i,:]\rVert_2` and
    :math:`B_{k+1} = \ell_k s (\lVert W_k + I\rVert_2 B_k + \sum_{j<k} B_j)`.
    Logvar range: the last layer's output is :math:`\gamma\odot f + \beta` with f
    centred and :math:`\lVert f\rVert_2 < \sqrt H`, so
    :math:`\mathrm{logvar}_k \le W_\ell[k]\cdot\beta + b_k + \sqrt H\,\lVert
    P(W_\ell[k]\odot\gamma)\rVert_2` for every input.
    """
    enc = model.encoder
    first = float(torch.linalg.vector_norm(enc.in_weight.detach().double(), dim=1).max())
    lns = [layernorm_lipschitz(ln) for ln in enc.lns]
    dense = []
    b = [lns[0] * SILU_LIPSCHITZ * first]
    for k, fc in enumerate(enc.fcs, start=1):
        w = fc.weight.detach().double()
        if w.shape[0] != w.shape[1]:
            raise ValueError(f"dense RecVAE layers must be square, got {tuple(w.shape)}")
        dense.append(_spectral_norm(w + torch.eye(w.shape[0], dtype=torch.float64)))
        b.append(lns[k] * SILU_LIPSCHITZ * (dense[-1] * b[-1] + sum(b[:-1])))
    last = enc.lns[-1]
    h = int(last.normalized_shape[0])
    gamma = _param_or(last.weight, h, 1.0)
    beta = _param_or(last.bias, h, 0.0)
    w_mu = enc.fc_mu.weight.detach().double()  # (d, H)
    w_lv = enc.fc_logvar.weight.detach().double()  # (d, H)
    b_lv = _param_or(enc.fc_logvar.bias, w_lv.shape[0], 0.0)
    wg = w_lv * gamma  # (d, H)
    wg = wg - wg.mean(dim=1, keepdim=True)  # P(W_l[k] * gamma): f is centred
    global_max = w_lv @ beta + b_lv + math.sqrt(h) * torch.linalg.vector_norm(wg, dim=1)
    return (
        b[-1],
        w_mu,
        w_lv,
        global_max,
        {
            "encoder": "recvae",
            "first_layer": first,
            "hidden": dense,
            "layernorm": lns,
            "silu": SILU_LIPSCHITZ,
            "trunk": b,
        },
    )


# ---------------------------------------------------------------- any standard encoder
class UncertifiedLayerError(TypeError):
    """An encoder layer with no certified Lipschitz constant (named in the message).

    Attributes
    ----------
    layer : the layer's path in the encoder (``"net.3"``) and type, e.g. ``"net.3 (GELU)"``.
    """

    def __init__(self, message: str, layer: str) -> None:
        super().__init__(message)
        self.layer = layer


ELEMENTWISE_LIPSCHITZ: dict[type, Any] = {
    nn.Tanh: lambda m: 1.0,
    nn.ReLU: lambda m: 1.0,
    nn.LeakyReLU: lambda m: max(1.0, abs(float(m.negative_slope))),
    nn.SiLU: lambda m: SILU_LIPSCHITZ,
    nn.Sigmoid: lambda m: 0.25,
    nn.Identity: lambda m: 1.0,
    nn.Dropout: lambda m: 1.0,  # identity at evaluation
}
"""Coordinate-wise Lipschitz constants (sup |f'|): they hold in l1 and l2 alike."""

CERTIFIED_LAYERS: tuple[str, ...] = (
    "Linear",
    "Tanh",
    "ReLU",
    "LeakyReLU",
    "SiLU",
    "Sigmoid",
    "LayerNorm",
    "Dropout (identity at eval)",
    "Identity",
    "Sequential",
)


def _flatten(module: nn.Module, prefix: str) -> list[tuple[str, nn.Module]]:
    """Leaves of nested ``nn.Sequential`` containers, in order, with their paths."""
    if isinstance(module, nn.Sequential):
        out: list[tuple[str, nn.Module]] = []
        for name, child in module.named_children():
            out += _flatten(child, f"{prefix}.{name}" if prefix else name)
        return out
    return [(prefix, module)]


def _encoder_layout(encoder: nn.Module) -> tuple[list[tuple[str, nn.Module]], list[nn.Linear]]:
    """(trunk leaves, heads): heads = [joint (2d)] or [mu, logvar], from the children.

    Layouts: an ``nn.Sequential`` (or a module whose children run in order) ending in one
    ``nn.Linear`` whose output is split into mu and logvar halves, or ending in two
    ``nn.Linear`` heads (mu, then logvar) reading the same trunk output. The layout is a
    reading of the registration order; ``_generic_trunk`` replays it and accepts it only
    when it reproduces ``model.encode``.
    """
    if isinstance(encoder, nn.Sequential):
        leaves = _flatten(encoder, "")
    else:
        leaves = []
        for name, child in encoder.named_children():
            leaves += _flatten(child, name)
    if (
        len(leaves) >= 2
        and isinstance(leaves[-1][1], nn.Linear)
        and isinstance(leaves[-2][1], nn.Linear)
        and leaves[-1][1].in_features == leaves[-2][1].in_features
        and leaves[-1][1].out_features == leaves[-2][1].out_features
    ):
        return leaves[:-2], [leaves[-2][1], leaves[-1][1]]
    if leaves and isinstance(leaves[-1][1], nn.Linear) and leaves[-1][1].out_features % 2 == 0:
        return leaves[:-1], [leaves[-1][1]]
    raise UncertifiedLayerError(
        f"encoder {type(encoder).__name__}: no (mu, logvar) head found (expected the last "
        "child(ren) to be one nn.Linear with 2d outputs or two nn.Linear of d outputs)",
        f"<heads> ({type(encoder).__name__})",
    )


def _model_input_map(model: Any) -> dict[str, Any]:
    """Candidate maps raw row -> encoder input: the model's own, else l2 and none."""
    own = getattr(model, "encoder_input", None)
    if callable(own):
        norm = str(getattr(model, "input_normalization", "l2"))
        return {norm: lambda x: own(x)}
    from radius.model.multvae import EPS_NORM

    return {
        "l2": lambda x: x / (torch.linalg.vector_norm(x, dim=-1, keepdim=True) + EPS_NORM),
        "none": lambda x: x,
    }


def _replay(trunk: list[tuple[str, nn.Module]], heads: list[nn.Linear], xin: Tensor):
    h = xin
    for _, m in trunk:
        h = m(h)
    if len(heads) == 1:
        out = heads[0](h)
        d = out.shape[-1] // 2
        return out[..., :d], out[..., d:], h
    return heads[0](h), heads[1](h), h


def _generic_trunk(model: Any) -> tuple[float, Tensor, Tensor, Tensor, dict[str, Any]]:
    r"""Any encoder built from standard layers (``model.encoder``), composed layer by layer.

    The trunk's constant is a product of per-layer constants, tracking which norm the
    difference is measured in: the input difference in l1, and from the first ``Linear``
    on in l2:

    - ``Linear`` W (out, in) in l1: :math:`\lVert W\Delta\rVert_2 \le \max_i
      \lVert W[:, i]\rVert_2\lVert\Delta\rVert_1` (max column 2-norm), then l2; in l2:
      the spectral norm;
    - coordinate-wise activations: :math:`\sup|f'|` (``ELEMENTWISE_LIPSCHITZ``: Tanh,
      ReLU 1, LeakyReLU max(1, |slope|), SiLU ``SILU_LIPSCHITZ``, Sigmoid 1/4), valid in
      l1 and l2; Dropout (eval) and Identity: 1;
    - ``LayerNorm``: ``layernorm_lipschitz`` in l2 (from l1 through
      :math:`\lVert\cdot\rVert_2 \le \lVert\cdot\rVert_1`).

    If the trunk stays in l1 (no Linear before the heads), the heads' factor is the max
    column 2-norm of :math:`[W_\mu; D W_\ell]` instead of its spectral norm
    (``details["head_input_norm"] = "l1"``). The global logvar range is certified when the
    trunk ends in Tanh (h in [-1, 1]), Sigmoid ([0, 1]) or LayerNorm (as for RecVAE), else
    infinite (the observed range plus margin is then what bounds sigma).

    The layout (``_encoder_layout``) is replayed in float64 on 8 random binary rows and
    must reproduce ``model.encode`` (relative 1e-9); otherwise ``UncertifiedLayerError``.
    """
    enc = getattr(model, "encoder", None)
    if not isinstance(enc, nn.Module):
        raise UncertifiedLayerError(
            f"{type(model).__name__} has no `encoder` module to certify layer by layer",
            f"<encoder> ({type(model).__name__})",
        )
    trunk, heads = _encoder_layout(enc)
    # replay the layout against model.encode (float64 copy)
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    trunk64, heads64 = _encoder_layout(m64.encoder)
    items = int(model.n_items)
    gen = torch.Generator().manual_seed(0)
    x = (torch.rand(8, items, generator=gen, dtype=torch.float64) < 0.3).double()
    x[torch.arange(8), torch.arange(8) % items] = 1.0
    mu_ref, lv_ref = m64.encode(x)
    lv_ref = lv_ref - float(getattr(model, "logvar_offset", 0.0))  # the head's own logvar
    maps = _model_input_map(m64)
    input_norm = None
    last_h = None
    for norm, fn in maps.items():
        try:
            mu, lv, h = _replay(trunk64, heads64, fn(x))
        except Exception:  # noqa: BLE001 - a layout that does not run is not the layout
            continue
        scale = 1.0 + float(torch.cat([mu_ref, lv_ref]).abs().max())
        if (
            mu.shape == mu_ref.shape
            and lv.shape == lv_ref.shape
            and float((mu - mu_ref).abs().max()) <= 1e-9 * scale
            and float((lv - lv_ref).abs().max()) <= 1e-9 * scale
        ):
            input_norm, last_h = norm, h
            break
    if input_norm is None:
        raise UncertifiedLayerError(
            f"encoder {type(enc).__name__}: its children read in order "
            f"({', '.join(n or '<root>' for n, _ in trunk)} -> heads) do not reproduce "
            "model.encode; its forward is not a plain chain of layers",
            f"<forward> ({type(enc).__name__})",
        )
    del last_h
    mode, trunk_bound, layers = "l1", 1.0, []
    for path, m in trunk:
        kind = type(m)
        if isinstance(m, nn.Dropout) and m.training and m.p > 0:
            raise ValueError(
                f"encoder layer {path!r} is an active Dropout: put the model in eval mode"
            )
        if isinstance(m, nn.Linear):
            w = m.weight.detach().double()  # (out, in)
            c = (
                float(torch.linalg.vector_norm(w, dim=0).max()) * (1.0 + 1e-12)
                if mode == "l1"
                else _spectral_norm(w)
            )
            layers.append({"layer": path, "type": "Linear", "norm": f"{mode}->l2", "constant": c})
            mode = "l2"
        elif isinstance(m, nn.LayerNorm):
            c = layernorm_lipschitz(m)
            layers.append(
                {"layer": path, "type": "LayerNorm", "norm": f"{mode}->l2", "constant": c}
            )
            mode = "l2"
        else:
            fn = next((f for t, f in ELEMENTWISE_LIPSCHITZ.items() if kind is t), None)
            if fn is None:
                raise UncertifiedLayerError(
                    f"encoder layer {path!r} ({kind.__name__}) has no certified Lipschitz "
                    f"constant (certified: {', '.join(CERTIFIED_LAYERS)})",
                    f"{path} ({kind.__name__})",
                )
            c = float(fn(m))
            layers.append({"layer": path, "type": kind.__name__, "norm": mode, "constant": c})
        trunk_bound *= c
    if len(heads) == 1:
        w = heads[0].weight.detach().double()
        d = w.shape[0] // 2
        b = _param_or(heads[0].bias, 2 * d, 0.0)
        w_mu, w_lv, b_lv = w[:d], w[d:], b[d:]
    else:
        w_mu = heads[0].weight.detach().double()
        w_lv = heads[1].weight.detach().double()
        d = w_mu.shape[0]
        b_lv = _param_or(heads[1].bias, d, 0.0)
    last = trunk[-1][1] if trunk else None
    if isinstance(last, nn.Tanh):
        global_max = w_lv.abs().sum(dim=1) + b_lv
    elif isinstance(last, nn.Sigmoid):
        global_max = w_lv.clamp_min(0).sum(dim=1) + b_lv
    elif isinstance(last, nn.LayerNorm) and len(last.normalized_shape) == 1:
        hdim = int(last.normalized_shape[0])
        gamma = _param_or(last.weight, hdim, 1.0)
        beta = _param_or(last.bias, hdim, 0.0)
        wg = w_lv * gamma
        wg = wg - wg.mean(dim=1, keepdim=True)
        global_max = w_lv @ beta + b_lv + math.sqrt(hdim) * torch.linalg.vector_norm(wg, dim=1)
    else:
        global_max = torch.full((d,), math.inf, dtype=torch.float64)
    return (
        trunk_bound,
        w_mu,
        w_lv,
        global_max,
        {
            "encoder": "generic",
            "encoder_type": type(enc).__name__,
            "layers": layers,
            "heads": "joint (2d, split)" if len(heads) == 1 else "mu, logvar",
            "input_normalization": input_norm,
            "head_input_norm": mode,
            "layout_replay": "reproduces model.encode on 8 random rows (float64, rel 1e-9)",
        },
    )


@torch.no_grad()
def encode_double(
    model: nn.Module, x: ArrayLike, *, chunk_size: int = 1024
) -> tuple[Tensor, Tensor]:
    """``model.encode`` in float64 on a float64 copy of the model (eval mode, CPU).

    Parameters
    ----------
    x : (B, I) dense raw input (or a scipy sparse matrix).

    Returns
    -------
    mu, logvar : (B, d) float64.
    """
    import scipy.sparse as sp

    if sp.issparse(x):
        x = np.asarray(x.todense())
    xt = _as_tensor("x", x).to(torch.float64)
    m = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    mus, lvs = [], []
    for s in range(0, xt.shape[0], chunk_size):
        mu, lv = m.encode(xt[s : s + chunk_size])
        mus.append(mu)
        lvs.append(lv)
    if not mus:
        d = int(model.latent_dim)
        return torch.zeros(0, d, dtype=torch.float64), torch.zeros(0, d, dtype=torch.float64)
    return torch.cat(mus), torch.cat(lvs)


@torch.no_grad()
def encoder_lipschitz_bound(
    model: nn.Module,
    *,
    logvar_observed: ArrayLike | None = None,
    logvar_margin: float = 0.5,
) -> tuple[float, dict[str, Any]]:
    r"""Certified l1 -> l2 Lipschitz constant of :math:`\tilde x \mapsto (\mu, \sigma)` (L2.4).

    The Multi-VAE encoder is
    :math:`\tilde x \mapsto h_0 = \tanh(\tilde x W_{in} + b) \mapsto \dots \mapsto
    h_L \mapsto (\mu, \mathrm{logvar}) = (W_\mu h_L + b_\mu, W_\ell h_L + b_\ell)`,
    :math:`\sigma = e^{\mathrm{logvar}/2}`. The constant is the product

    .. math::

        L_\phi = \max_i \lVert W_{in}[i, :]\rVert_2 \cdot \prod_k \lVert W_k\rVert_2
            \cdot \Bigl\lVert \begin{bmatrix} W_\mu \\ D W_\ell \end{bmatrix}\Bigr\rVert_2,
        \qquad D = \operatorname{diag}(e^{M_k/2}/2)

    - first layer, on the (I, H0) table: :math:`\lVert (\tilde x - \tilde y) W_{in}\rVert_2
      \le \sum_i |\Delta\tilde x_i|\,\lVert W_{in}[i,:]\rVert_2 \le \max_i\lVert W_{in}[i,:]
      \rVert_2 \lVert\Delta\tilde x\rVert_1` (max ROW 2-norm);
    - hidden ``enc_layers`` except the last: spectral norms (top eigenvalue of the Gram
      matrix, equal to ``matrix_norm(ord=2)`` to rounding);
      tanh is 1-Lipschitz coordinate-wise, hence in l2;
    - heads: coordinate-wise, by the mean value theorem on :math:`e^{t/2}`,
      :math:`|\Delta\sigma_k| \le \tfrac12 e^{M_k/2}|\Delta\mathrm{logvar}_k|` whenever both
      logvars are :math:`\le M_k`, so
      :math:`\lVert(\Delta\mu, \Delta\sigma)\rVert_2 \le \lVert[W_\mu; D W_\ell]\Delta h_L\rVert_2`.

    Since :math:`W_2 = \lVert(\Delta\mu, \Delta\sigma)\rVert_2`,
    :math:`W_2(q(\cdot|x), q(\cdot|y)) \le L_\phi \lVert\tilde x - \tilde y\rVert_1` for the
    NORMALISED inputs. For raw inputs multiply by ``normalization_factor(x, y)``.

    Range of logvar. :math:`h_L \in [-1, 1]^H` (a tanh output), so every input satisfies
    :math:`\mathrm{logvar}_k \le G_k = \lVert W_\ell[k,:]\rVert_1 + b_{\ell,k}` (global,
    certified for all inputs). With ``logvar_observed`` the bound uses
    :math:`M_k = \min(G_k, \max_{\text{obs}} \mathrm{logvar}_k + \text{margin})`: certified
    for every pair whose two encodings lie in the observed range plus the margin (in
    particular for the observed encodings themselves), and for all inputs where
    :math:`G_k` is the smaller.

    RecVAE (``radius.model.recvae.RecVAE``): the same head factor, and in place of
    :math:`\max_i\lVert W_{in}[i,:]\rVert_2 \prod_k\lVert W_k\rVert_2` the bound
    :math:`B_L` of its densely connected swish / layer-norm trunk (``_recvae_trunk``:
    swish is ``SILU_LIPSCHITZ``-Lipschitz, a layer norm ``layernorm_lipschitz``, a dense
    connection adds the earlier layers' bounds); its global logvar range comes from the
    last layer norm's output norm. RecVAE normalises its input exactly as Multi-VAE does,
    so ``normalization_factor`` applies unchanged.

    A declared posterior scale c (``model.logvar_offset`` = 2 ln c, ``radius.model.wrap``)
    shifts every logvar by 2 ln c, so the range bounds :math:`G_k` and :math:`M_k` are
    shifted with it and the sigma factor scales by c.

    Parameters
    ----------
    model : a MultVAE (``enc_in_weight`` (I, H0), ``enc_layers``), a RecVAE, or any
        protocol model whose ``encoder`` is a chain of standard layers ending in mu /
        logvar heads (``_generic_trunk``; e.g. ``radius.model.wrap``), in eval mode.
    logvar_observed : (B, d) observed logvars, or None for the global range.
    logvar_margin : added to the observed per-coordinate maximum (>= 0).

    Returns
    -------
    (L_phi, details) : the constant (float) and a JSON-able dict of its factors:
    ``encoder`` ("multvae" / "recvae"), ``first_layer``, ``hidden`` (list: spectral norms
    of the hidden layers; for RecVAE of W_k + I), ``trunk_bound``, ``head``, ``mu_head``,
    ``logvar_head``,
    ``sigma_factor_max`` (max_k e^{M_k/2}/2), ``logvar_max`` (max_k M_k),
    ``logvar_range`` ("global" / "observed+margin" / "mixed"), ``l_mu`` (the constant of
    x -> mu alone), ``input`` ("normalised"); for RecVAE also ``layernorm`` (list),
    ``silu`` and ``trunk`` (the B_j).
    """
    if logvar_margin < 0:
        raise ValueError(f"logvar_margin must be >= 0, got {logvar_margin}")
    drop = getattr(model, "drop", None)
    if model.training and isinstance(drop, nn.Dropout) and drop.p > 0:
        raise ValueError("encoder_lipschitz_bound needs the model in eval mode (dropout is active)")
    if _is_multvae(model):
        trunk_fn = _multvae_trunk
    elif _is_recvae(model):
        trunk_fn = _recvae_trunk
    else:
        trunk_fn = _generic_trunk
    trunk, w_mu, w_lv, global_max, details = trunk_fn(model)
    offset = float(getattr(model, "logvar_offset", 0.0))
    if offset:  # a declared posterior scale c: logvar = head + 2 ln c (radius.model.wrap)
        global_max = global_max + offset
        details["logvar_offset"] = offset
    d = int(w_mu.shape[0])
    if logvar_observed is None:
        if not bool(torch.isfinite(global_max).all()):
            raise ValueError(
                "the encoder's logvar has no certified global range (its trunk does not end "
                "in Tanh, Sigmoid or LayerNorm): pass logvar_observed"
            )
        lv_max, rng_kind = global_max, "global"
    else:
        obs = _as_tensor("logvar_observed", logvar_observed).detach().double()
        if obs.ndim != 2 or obs.shape[1] != d or obs.shape[0] < 1:
            raise ValueError(
                f"logvar_observed must be (B, {d}) with B >= 1, got {tuple(obs.shape)}"
            )
        obs_max = obs.max(dim=0).values + logvar_margin
        lv_max = torch.minimum(global_max, obs_max)
        n_obs = int((obs_max <= global_max).sum())
        rng_kind = "observed+margin" if n_obs == d else ("global" if n_obs == 0 else "mixed")
    factor = 0.5 * torch.exp(0.5 * lv_max)  # (d,)
    joint = torch.cat([w_mu, factor[:, None] * w_lv], dim=0)  # (2d, H_L)
    if details.get("head_input_norm") == "l1":  # no Linear in the trunk: l1 -> l2 here
        head_norm = float(torch.linalg.vector_norm(joint, dim=0).max()) * (1.0 + 1e-12)
    else:
        head_norm = _spectral_norm(joint)
    mu_norm = _spectral_norm(w_mu)
    value = trunk * head_norm
    details.update(
        {
            "input": "normalised",
            "trunk_bound": trunk,
            "head": head_norm,
            "mu_head": mu_norm,
            "logvar_head": _spectral_norm(w_lv),
            "sigma_factor_max": float(factor.max()),
            "logvar_max": float(lv_max.max()),
            "logvar_global_max": float(global_max.max()),
            "logvar_margin": float(logvar_margin),
            "logvar_range": rng_kind,
            "l_mu": trunk * mu_norm,
            "l_phi": value,
        }
    )
    return value, details


def normalization_factor(x: ArrayLike, y: ArrayLike) -> Tensor:
    r"""Pair factor c with :math:`\lVert\tilde x - \tilde y\rVert_1 \le c(x,y)\lVert x - y\rVert_1`.

    General rows. With :math:`a = \lVert x\rVert_2 + \epsilon`,
    :math:`b = \lVert y\rVert_2 + \epsilon` (the encoder's own normalisation, ``EPS_NORM``):

    .. math::

        \Bigl\lVert \frac xa - \frac yb \Bigr\rVert_1
        \le \frac{\lVert x - y\rVert_1}{a} + \lVert y\rVert_1\Bigl|\frac1a - \frac1b\Bigr|
        = \frac{\lVert x - y\rVert_1}{a} + \frac{\lVert y\rVert_1}{ab}\,|a - b|
        \le \lVert x - y\rVert_1\,\frac{1 + \lVert y\rVert_1 / b}{a},

    using :math:`|a - b| = |\lVert x\rVert_2 - \lVert y\rVert_2| \le \lVert x - y\rVert_2
    \le \lVert x - y\rVert_1`; c is the smaller of this and its mirror image (swap x, y).
    For binary rows this gives :math:`c \le (1 + \sqrt{n_y})/\sqrt{n_x}`, up to
    :math:`1 + \sqrt n`.

    Binary rows (0/1 entries, each with >= 1 item): the normalisation is l1
    NON-EXPANSIVE, :math:`c = 1` is valid, so the factor returned is
    :math:`\min(c, 1)`. Proof: let n <= m be the row sizes and k the overlap. Without
    :math:`\epsilon`,
    :math:`\lVert\tilde x - \tilde y\rVert_1 = k(1/\sqrt n - 1/\sqrt m) + (n - k)/\sqrt n
    + (m - k)/\sqrt m = \sqrt n + \sqrt m - 2k/\sqrt m` and
    :math:`\lVert x - y\rVert_1 = n + m - 2k`. Their difference
    :math:`D(k) = n - \sqrt n + m - \sqrt m - 2k(1 - 1/\sqrt m)` falls with k, so it is
    smallest at the largest k allowed: if n = m (then k <= n - 1),
    :math:`D = 2 - 2/\sqrt n \ge 0`; if n < m (k <= n), with :math:`\alpha = \sqrt n`,
    :math:`\beta = \sqrt m > \alpha \ge 1`,
    :math:`D = (\beta - \alpha)(\beta + \alpha - 1 - 2\alpha/\beta)` and
    :math:`\beta^2 + (\alpha - 1)\beta - 2\alpha \ge \alpha^2 + 1 + (\alpha - 1)\alpha - 2\alpha
    = (2\alpha - 1)(\alpha - 1) \ge 0` since :math:`\beta^2 = m \ge n + 1`. With
    :math:`\epsilon > 0` every term of the left side only shrinks (:math:`t \mapsto
    1/(t + \epsilon)` has a smaller slope and value than :math:`1/t`). Real-valued rows
    can expand (x = (1, 0), y = (1, 0.1)), so the binary case is detected per row.

    Parameters
    ----------
    x, y : (B, I) or (I,) raw inputs (any real rows; zero rows allowed, then a = eps).

    Returns
    -------
    (B,) float64 tensor (a 0-d tensor for 1-D input).
    """
    xt = _as_tensor("x", x).double()
    yt = _as_tensor("y", y).double()
    if xt.shape != yt.shape:
        raise ValueError(
            f"x and y must have the same shape, got {tuple(xt.shape)} and {tuple(yt.shape)}"
        )
    from radius.model.multvae import EPS_NORM

    a = torch.linalg.vector_norm(xt, dim=-1) + EPS_NORM
    b = torch.linalg.vector_norm(yt, dim=-1) + EPS_NORM
    l1x = xt.abs().sum(dim=-1)
    l1y = yt.abs().sum(dim=-1)
    c = torch.minimum((1.0 + l1y / b) / a, (1.0 + l1x / a) / b)

    def binary_nonzero(t: Tensor) -> Tensor:
        return ((t == 0) | (t == 1)).all(dim=-1) & (t != 0).any(dim=-1)

    both = binary_nonzero(xt) & binary_nonzero(yt)
    return torch.where(both, torch.clamp(c, max=1.0), c)


def empirical_local_lipschitz(
    model: nn.Module, x_u: ArrayLike, x_v: ArrayLike, *, normalized: bool = False
) -> Tensor:
    r"""Empirical local constants :math:`W_2(q_u, q_v) / \lVert x_u - x_v\rVert_1` on pairs.

    Encodes in float64 (``encode_double``). With ``normalized=True`` the denominator is
    :math:`\lVert\tilde x_u - \tilde x_v\rVert_1` (the encoder's normalised inputs).
    Pairs with zero input distance give NaN (0/0 is not a Lipschitz ratio).

    Parameters
    ----------
    x_u, x_v : (B, I) raw inputs, row-aligned.

    Returns
    -------
    (B,) float64 tensor.
    """
    xu = _as_tensor("x_u", x_u).double()
    xv = _as_tensor("x_v", x_v).double()
    if xu.shape != xv.shape or xu.ndim != 2:
        raise ValueError(
            f"x_u and x_v must both be (B, I), got {tuple(xu.shape)} and {tuple(xv.shape)}"
        )
    mu_u, lv_u = encode_double(model, xu)
    mu_v, lv_v = encode_double(model, xv)
    w2 = w2_diag(mu_u, lv_u, mu_v, lv_v)
    if normalized:
        from radius.model.multvae import EPS_NORM

        xu = xu / (torch.linalg.vector_norm(xu, dim=-1, keepdim=True) + EPS_NORM)
        xv = xv / (torch.linalg.vector_norm(xv, dim=-1, keepdim=True) + EPS_NORM)
    dx = (xu - xv).abs().sum(dim=-1)
    return torch.where(dx > 0, w2 / torch.where(dx > 0, dx, 1.0), torch.full_like(w2, math.nan))


def binary_l1_nearest(
    x: Any, anchors: np.ndarray, *, chunk_size: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    r"""Nearest other row by l1 (Hamming) distance, for anchor rows of a binary matrix.

    For 0/1 rows :math:`\lVert x_a - x_b\rVert_1 = n_a + n_b - 2\langle x_a, x_b\rangle`,
    one sparse product per chunk of anchors; ties go to the lowest index.

    Parameters
    ----------
    x : (N, I) scipy sparse (CSR) binary matrix, N >= 2.
    anchors : (A,) row indices.
    chunk_size : anchors per chunk; memory O(chunk_size * N).

    Returns
    -------
    (neighbour (A,) int64, distance (A,) int64).
    """
    import scipy.sparse as sp

    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy sparse matrix, got {type(x).__name__}")
    x = sp.csr_matrix(x)
    if x.shape[0] < 2:
        raise ValueError(f"x needs at least 2 rows, got {x.shape[0]}")
    if x.nnz and not np.all(x.data == 1):
        raise ValueError("binary_l1_nearest needs a binary (0/1) matrix")
    anchors = np.asarray(anchors, dtype=np.int64)
    n = np.diff(x.indptr).astype(np.int64)  # (N,)
    nb = np.empty(anchors.shape[0], dtype=np.int64)
    dist = np.empty(anchors.shape[0], dtype=np.int64)
    xt = x.T.tocsc()
    for s in range(0, anchors.shape[0], chunk_size):
        idx = anchors[s : s + chunk_size]
        inner = np.asarray((x[idx] @ xt).todense(), dtype=np.int64)  # (C, N)
        dd = n[idx][:, None] + n[None, :] - 2 * inner
        dd[np.arange(idx.shape[0]), idx] = np.iinfo(np.int64).max  # not itself
        nb[s : s + chunk_size] = dd.argmin(axis=1)
        dist[s : s + chunk_size] = dd[np.arange(idx.shape[0]), nb[s : s + chunk_size]]
    return nb, dist


# --------------------------------------------------------------------------- T2.3 helper
@dataclass(frozen=True)
class MixedJacobianEstimate:
    """Power-iteration estimates of the mixed-Jacobian spectral norm (T2.3).

    max : the largest per-point estimate (the estimate of L_thz).
    per_point : (P,) estimates of ||d/dz grad_theta l_v(theta, z)||_2 at ``points``.
    points : (P, d) the latent points evaluated (given points, then segment points).
    n_iter : power iterations per point.
    parameters : names of the decoder parameters theta.
    """

    max: float
    per_point: Tensor
    points: Tensor
    n_iter: int
    parameters: tuple[str, ...]


class _Decoder(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, z: Tensor) -> Tensor:
        return self.m.decode(z)


def _segment_points(z: Tensor, n_segment: int) -> Tensor:
    """z (P, d) plus ``n_segment`` interior points on each segment z[k] -> z[k + 1]."""
    if n_segment == 0 or z.shape[0] < 2:
        return z
    t = torch.arange(1, n_segment + 1, dtype=z.dtype) / (n_segment + 1)  # (S,)
    a, b = z[:-1], z[1:]  # (P-1, d)
    seg = a[:, None, :] + t[None, :, None] * (b - a)[:, None, :]  # (P-1, S, d)
    return torch.cat([z, seg.reshape(-1, z.shape[1])])


def mixed_jacobian_lipschitz(
    model: nn.Module,
    x_v: ArrayLike,
    z_points: ArrayLike,
    *,
    n_iter: int = 20,
    n_segment: int = 0,
    seed: int = 0,
    chunk_size: int = 16,
) -> MixedJacobianEstimate:
    r"""Estimate L_thz, the Lipschitz constant of :math:`z \mapsto \nabla_\theta l_v` (T2.3).

    With :math:`l_v(\theta, z) = -\sum_i x_{v,i}\log\operatorname{softmax}(f_\theta(z))_i`
    and :math:`\theta` the decoder parameters (``model.decoder_parameters()``), the mixed
    Jacobian is :math:`M(z) = \partial_z \nabla_\theta l_v(\theta, z) \in
    \mathbb R^{P \times d}`, and :math:`L_{\theta z} = \sup_z \lVert M(z)\rVert_2`. At each
    point, power iteration on the d x d matrix :math:`M^\top M`:

    .. math::

        u \leftarrow M^\top M u / \lVert M^\top M u\rVert, \qquad
        M u = \mathrm{jvp}_z(\nabla_\theta l_v)(u), \qquad
        M^\top w = \nabla_z\langle w, \nabla_\theta l_v(\theta, z)\rangle \;(\mathrm{vjp}),

    returning :math:`\lVert M u\rVert` for the final unit u, a lower estimate of
    :math:`\lVert M(z)\rVert_2` that converges to it. The maximum over the points is an
    ESTIMATE of L_thz, not a certified bound (no cheap certificate exists).

    Parameters
    ----------
    model : a VAEModel; only ``decode`` and ``decoder_parameters`` are used.
    x_v : (I,) the interaction row of user v (raw counts).
    z_points : (P, d) latent points (e.g. posterior samples of u and v).
    n_iter : power iterations (>= 1).
    n_segment : interior points added on each segment z_points[k] -> z_points[k + 1].
    seed : seed of the initial directions.
    chunk_size : points per vmapped batch (memory ~ chunk_size x #decoder parameters).

    Returns
    -------
    MixedJacobianEstimate with ``per_point`` over the given points followed by the
    segment points (in order of segments, then of t).
    """
    from torch.func import functional_call, grad, jvp, vjp, vmap

    if n_iter < 1 or n_segment < 0 or chunk_size < 1:
        raise ValueError(
            f"need n_iter >= 1, n_segment >= 0, chunk_size >= 1, "
            f"got {n_iter}, {n_segment}, {chunk_size}"
        )
    x = _as_tensor("x_v", x_v).detach().to(torch.float32)
    z = _as_tensor("z_points", z_points).detach().to(torch.float32)
    if x.ndim != 1 or x.shape[0] != int(model.n_items):
        raise ValueError(f"x_v must be ({int(model.n_items)},), got {tuple(x.shape)}")
    if z.ndim != 2 or z.shape[1] != int(model.latent_dim) or z.shape[0] < 1:
        raise ValueError(
            f"z_points must be (P, {int(model.latent_dim)}) with P >= 1, got {tuple(z.shape)}"
        )
    dec = _Decoder(model)
    named = list(model.decoder_parameters())
    params = {f"m.{n}": p.detach() for n, p in named}

    def loss(p: dict[str, Tensor], zz: Tensor) -> Tensor:
        logits = functional_call(dec, p, (zz,))  # (I,)
        return -(x * torch.log_softmax(logits, dim=-1)).sum()

    grad_theta = grad(loss)

    def gz(zz: Tensor) -> dict[str, Tensor]:
        return grad_theta(params, zz)

    def mtm(zz: Tensor, u: Tensor) -> tuple[Tensor, Tensor]:
        _, mu = jvp(gz, (zz,), (u,))  # dict: M u
        _, pull = vjp(gz, zz)
        (back,) = pull(mu)  # (d,) M^T M u
        sq = sum((t * t).sum() for t in mu.values())
        return back, sq

    batched = vmap(mtm)
    pts = _segment_points(z, n_segment)  # (P', d)
    gen = torch.Generator().manual_seed(seed)
    u_all = torch.randn(pts.shape, generator=gen)
    est = torch.empty(pts.shape[0], dtype=torch.float64)
    for s in range(0, pts.shape[0], chunk_size):
        zc = pts[s : s + chunk_size]
        u = u_all[s : s + chunk_size]
        u = u / torch.linalg.vector_norm(u, dim=-1, keepdim=True).clamp_min(1e-30)
        sq = torch.zeros(zc.shape[0])
        for _ in range(n_iter):
            back, sq = batched(zc, u)
            nrm = torch.linalg.vector_norm(back, dim=-1, keepdim=True)
            u = torch.where(nrm > 0, back / nrm.clamp_min(1e-30), u)
        _, sq = batched(zc, u)
        est[s : s + chunk_size] = sq.double().clamp_min(0).sqrt()
    return MixedJacobianEstimate(
        max=float(est.max()),
        per_point=est,
        points=pts,
        n_iter=n_iter,
        parameters=tuple(n for n, _ in named),
    )
