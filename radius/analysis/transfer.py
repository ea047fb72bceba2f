r"""Gradient transfer between users and the latent sharing radius (T2.3).

Glossary (``theory.md``, T2.3):

- :math:`x_u \in \{0,1\}^I` the **clean** input of user u, :math:`n_u = \sum_i x_{ui}`.
- :math:`q_u = q_\phi(\cdot \mid x_u) = \mathcal N(\mu_u, \operatorname{diag}\sigma_u^2)`
  computed from the clean input.
- :math:`l_u(\theta, z) = -\sum_i x_{ui}\log\operatorname{softmax}(f_\theta(z))_i`,
  :math:`L_u(\theta) = \mathbb E_{z\sim q_u} l_u(\theta, z)`,
  :math:`g_u = \nabla_\theta L_u` for a named set of decoder parameters
  (``"output"``: the output layer (W, b); ``"decoder"``: all decoder layers).

Every expectation is a Monte Carlo mean over M samples with **common random numbers**:
one draw :math:`\varepsilon_1..\varepsilon_M \sim \mathcal N(0, I_d)` serves every user,
:math:`z_{um} = \mu_u + \sigma_u \odot \varepsilon_m`. The estimate
:math:`\hat g_u` is then the exact gradient of the Monte Carlo objective
:math:`\hat L_u`, and :math:`z_{um}, z_{vm}` is the W2-optimal coupling of
:math:`q_u, q_v` (a monotone map per coordinate).

Output-layer factorisation: logits :math:`= h(z) W^\top + b` with ``h =
model.decoder_features(z)`` (H,), and :math:`\partial l_u / \partial\,\mathrm{logits}
= r_u(z) = n_u\,p(z) - x_u` with :math:`p = \operatorname{softmax}`. So with
:math:`\tilde h = (h, 1)` (the 1 carries the bias),

.. math::

    \hat g_u = \frac1M \sum_m r_{um} \tilde h_{um}^\top = \frac1M R_u^\top \tilde H_u,
    \qquad
    \langle \hat g_u, \hat g_v\rangle = \frac1{M^2}\sum_{m,m'}
        (r_{um}\cdot r_{vm'})\,(\tilde h_{um}\cdot \tilde h_{vm'}),

so inner products need the factors :math:`R_u` (M, I) and :math:`\tilde H_u` (M, H+1)
only: memory grows with users x M x (I + H), never with users x parameters.

All decoder layers (``"decoder"``): per-user gradients come from
``torch.func.vmap(torch.func.grad(...))`` over ``functional_call`` in chunks of users;
``transfer_gram`` accumulates Gram blocks chunk by chunk (memory 2 x chunk x P + N^2,
P = number of decoder parameters) and ``pair_transfer`` holds 3 x chunk x P.

:math:`L_{\theta z}` (the Lipschitz constant of :math:`z \mapsto \nabla_\theta l_v`)
is estimated, never certified: power iteration on the mixed Jacobian at points of the
coupling segments (closed form for the output layer, ``radius.analysis.geometry`` for all
decoder layers).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from radius.analysis.geometry import w2_diag
from radius.analysis.lipschitz import mixed_jacobian_lipschitz
from radius.analysis.neighbours import check_indices

__all__ = [
    "PARAM_SETS",
    "PARAM_SET_NAMES",
    "OutputFactors",
    "PairTransfer",
    "Screen",
    "FirstOrderResult",
    "common_eps",
    "posterior",
    "output_factors",
    "transfer_gram",
    "user_gradients",
    "naive_user_gradients",
    "pair_transfer",
    "screen_candidates",
    "output_jacobian_norm",
    "pair_lipschitz",
    "transfer_bound",
    "sharing_radius",
    "first_order_residuals",
    "loglog_slope",
]

PARAM_SETS = ("output", "decoder")
PARAM_SET_NAMES = {"output": "output layer", "decoder": "all decoder layers"}


# ---------------------------------------------------------------------------- input checks
def _check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    for name in ("encode", "decode", "decoder_features", "output_layer", "decoder_parameters"):
        if not hasattr(model, name):
            raise TypeError(f"model does not follow the VAEModel protocol: missing {name!r}")
    return model


def _check_param_set(param_set: str) -> None:
    if param_set not in PARAM_SETS:
        raise ValueError(f"param_set must be 'output' or 'decoder', got {param_set!r}")


def _check_positive(name: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")


def _dtype(model: nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype


def _n_rows(x: object, n_items: int) -> int:
    if not isinstance(x, (Tensor, np.ndarray)) and not sp.issparse(x):
        raise TypeError(
            f"x must be a torch.Tensor, numpy array or scipy sparse matrix, got {type(x).__name__}"
        )
    if len(x.shape) != 2 or x.shape[1] != n_items:
        raise ValueError(f"x must have shape (N, {n_items}), got {tuple(x.shape)}")
    return int(x.shape[0])


def _rows(x: Tensor | np.ndarray | sp.spmatrix, idx: np.ndarray, dtype: torch.dtype) -> Tensor:
    """Dense rows ``x[idx]`` (len(idx), I) as a tensor of ``dtype``."""
    if sp.issparse(x):
        return torch.as_tensor(x[idx].toarray(), dtype=dtype)
    if isinstance(x, np.ndarray):
        return torch.as_tensor(x[idx], dtype=dtype)
    return x[torch.as_tensor(idx, dtype=torch.long, device=x.device)].to(dtype)


def _check_pairs(pairs: object, n: int) -> np.ndarray:
    arr = np.asarray(pairs)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"pairs must have shape (P, 2), got {arr.shape}")
    return check_indices(arr, n, name="pair indices", unit="user")


# ---------------------------------------------------------------------------- sampling
def common_eps(
    n_samples: int, latent_dim: int, *, seed: int = 0, dtype: torch.dtype = torch.float64
) -> Tensor:
    """The common random numbers :math:`\\varepsilon_{1..M}` (M, d) shared by all users.

    Parameters
    ----------
    n_samples : M.
    latent_dim : d.
    seed : seed of a private ``torch.Generator`` (no global RNG state is touched).
    dtype : dtype of the result.
    """
    _check_positive("n_samples", n_samples)
    _check_positive("latent_dim", latent_dim)
    gen = torch.Generator().manual_seed(int(seed))
    return torch.randn(int(n_samples), int(latent_dim), generator=gen, dtype=torch.float64).to(
        dtype
    )


@torch.no_grad()
def posterior(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """Posterior mean and log-variance from the clean input: x (B, I) -> (B, d) x 2."""
    mu, logvar = model.encode(x)
    return mu, logvar


def _samples(mu: Tensor, logvar: Tensor, eps: Tensor) -> Tensor:
    """z_um = mu_u + sigma_u * eps_m: (B, d), (B, d), (M, d) -> (B, M, d)."""
    return mu[:, None, :] + torch.exp(0.5 * logvar)[:, None, :] * eps[None, :, :]


def _eps_for(model: nn.Module, n_samples: int, seed: int, eps: Tensor | None) -> Tensor:
    d = int(model.latent_dim)
    if eps is None:
        return common_eps(n_samples, d, seed=seed, dtype=_dtype(model))
    if not isinstance(eps, Tensor) or eps.ndim != 2 or eps.shape[1] != d:
        shape = tuple(eps.shape) if isinstance(eps, Tensor) else type(eps).__name__
        raise ValueError(f"eps must be a tensor of shape (M, {d}), got {shape}")
    return eps.to(_dtype(model))


# ---------------------------------------------------------------------------- output layer
@dataclass(frozen=True)
class OutputFactors:
    """Factors of the output-layer gradients of B users (T2.3).

    :math:`\\hat g_u = \\frac1M R_u^\\top \\tilde H_u` with :math:`R_u = n_u P_u - x_u`.

    Attributes
    ----------
    p : (B, M, I) softmax of the logits at :math:`z_{um}`.
    h : (B, M, H1) decoder features, with a column of ones appended when the output
        layer has a bias (H1 = H + 1), else H1 = H.
    x : (B, I) clean inputs.
    n : (B,) interaction counts.
    mu, logvar : (B, d) posterior parameters.
    """

    p: Tensor
    h: Tensor
    x: Tensor
    n: Tensor
    mu: Tensor
    logvar: Tensor

    def residual(self) -> Tensor:
        """(B, M, I) :math:`r_{um} = n_u p_{um} - x_u`."""
        return self.n[:, None, None] * self.p - self.x[:, None, :]


@torch.no_grad()
def output_factors(model: nn.Module, x: Tensor, *, eps: Tensor) -> OutputFactors:
    """Output-layer gradient factors of the users in the dense batch ``x`` (B, I).

    Memory: B x M x (I + H + 1) numbers.
    """
    mu, logvar = posterior(model, x)  # (B, d)
    z = _samples(mu, logvar, eps)  # (B, M, d)
    h = model.decoder_features(z)  # (B, M, H)
    w, b = model.output_layer()  # (I, H), (I,)
    logits = h @ w.T  # (B, M, I)
    if b is not None:
        logits = logits + b
        h = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)  # (B, M, H + 1)
    p = torch.softmax(logits, dim=-1)
    return OutputFactors(p=p, h=h, x=x, n=x.sum(-1), mu=mu, logvar=logvar)


def _block_inner(r_a: Tensor, h_a: Tensor, r_b: Tensor, h_b: Tensor) -> Tensor:
    """All inner products between users of two factor blocks -> (A, B).

    r_a (A, M, I), h_a (A, M, H1), r_b (B, M', I), h_b (B, M', H1).
    """
    a, m, _ = r_a.shape
    bb, m2, _ = r_b.shape
    rr = r_a.reshape(a * m, -1) @ r_b.reshape(bb * m2, -1).T  # (A M, B M')
    hh = h_a.reshape(a * m, -1) @ h_b.reshape(bb * m2, -1).T  # (A M, B M')
    return (rr * hh).reshape(a, m, bb, m2).sum(dim=(1, 3)) / (m * m2)


def _paired_sq(r_a: Tensor, h_a: Tensor, r_b: Tensor, h_b: Tensor) -> Tensor:
    """Row-paired inner products <R_a^T H_a, R_b^T H_b> / M^2 -> (C,).

    r_a (C, M, I), h_a (C, M, H1), r_b (C, M', I), h_b (C, M', H1).
    """
    rr = torch.bmm(r_a, r_b.transpose(1, 2))  # (C, M, M')
    hh = torch.bmm(h_a, h_b.transpose(1, 2))  # (C, M, M')
    return (rr * hh).sum(dim=(1, 2)) / (r_a.shape[1] * r_b.shape[1])


def _output_pair_sq(
    fu: OutputFactors, fv: OutputFactors
) -> tuple[Tensor, Tensor, Tensor, Tensor, dict[str, Tensor]]:
    r"""Row-paired ||g_u||^2, ||g_v||^2, <g_u, g_v>, Delta_x^2 from base Grams -> 4 x (C,),
    and the ends of each coupling path for its secants (``_ends``: v's loss at
    :math:`z_{um}` and :math:`z_{vm}`, from the Grams' diagonals).

    With :math:`r = n p - x` every M x M residual Gram expands into
    :math:`P P'^\top`, the M-vectors :math:`P x'` and the scalar :math:`x\cdot x'`, so
    no (C, M, I) residual is formed:
    :math:`R_u R_v^\top = n_u n_v P_u P_v^\top - n_u (P_u x_v) 1^\top
    - n_v 1 (P_v x_u)^\top + x_u\cdot x_v`.
    """
    pu, pv, hu, hv = fu.p, fv.p, fu.h, fv.h  # (C, M, I), (C, M, H1)
    xu, xv = fu.x[:, :, None], fv.x[:, :, None]  # (C, I, 1)
    nu, nv = fu.n[:, None, None], fv.n[:, None, None]  # (C, 1, 1)
    m2 = pu.shape[1] * pv.shape[1]
    pp_uu, pp_uv, pp_vv = (
        torch.bmm(a, b.transpose(1, 2)) for a, b in ((pu, pu), (pu, pv), (pv, pv))
    )
    hh_uu, hh_uv, hh_vv = (
        torch.bmm(a, b.transpose(1, 2)) for a, b in ((hu, hu), (hu, hv), (hv, hv))
    )
    a_uu, a_uv = torch.bmm(pu, xu), torch.bmm(pu, xv)  # (C, M, 1): P_u x_u, P_u x_v
    a_vu, a_vv = torch.bmm(pv, xu), torch.bmm(pv, xv)
    x_uu = (fu.x * fu.x).sum(-1)[:, None, None]  # (C, 1, 1)
    x_uv = (fu.x * fv.x).sum(-1)[:, None, None]
    x_vv = (fv.x * fv.x).sum(-1)[:, None, None]
    rr_uu = nu * nu * pp_uu - nu * (a_uu + a_uu.transpose(1, 2)) + x_uu  # (C, M, M)
    rr_vv = nv * nv * pp_vv - nv * (a_vv + a_vv.transpose(1, 2)) + x_vv
    rr_uv = nu * nv * pp_uv - nu * a_uv - nv * a_vu.transpose(1, 2) + x_uv
    dn = nv - nu
    b = a_uv - a_uu  # (C, M, 1): P_u (x_v - x_u)
    dd = dn * dn * pp_uu - dn * (b + b.transpose(1, 2)) + (x_vv - 2 * x_uv + x_uu)
    ends = {
        "pp1": torch.diagonal(pp_uu, dim1=1, dim2=2),  # (C, M): |p(z_um)|^2
        "pp2": torch.diagonal(pp_vv, dim1=1, dim2=2),
        "pp12": torch.diagonal(pp_uv, dim1=1, dim2=2),
        "a1": a_uv[..., 0],  # p(z_um) . x_v
        "a2": a_vv[..., 0],
        "hh1": torch.diagonal(hh_uu, dim1=1, dim2=2),
        "hh2": torch.diagonal(hh_vv, dim1=1, dim2=2),
        "hh12": torch.diagonal(hh_uv, dim1=1, dim2=2),
    }
    return (
        (rr_uu * hh_uu).sum(dim=(1, 2)) / m2,
        (rr_vv * hh_vv).sum(dim=(1, 2)) / m2,
        (rr_uv * hh_uv).sum(dim=(1, 2)) / m2,
        (dd * hh_uu).sum(dim=(1, 2)) / m2,
        ends,
    )


# ---------------------------------------------------------------------------- torch.func
class _Decode(nn.Module):
    """Wrapper whose forward is ``model.decode`` so ``functional_call`` can swap weights."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, z: Tensor) -> Tensor:
        return self.m.decode(z)


def _param_names(model: nn.Module, param_set: str) -> list[str]:
    """Names (in ``_Decode(model)``) of the parameters of ``param_set``."""
    _check_param_set(param_set)
    by_id = {id(p): n for n, p in model.named_parameters()}
    if param_set == "output":
        w, b = model.output_layer()
        params = [w] if b is None else [w, b]
    else:
        params = [p for _, p in model.decoder_parameters()]
    names = []
    for p in params:
        if id(p) not in by_id:
            raise TypeError(
                "model's decoder parameters are not registered parameters of the module"
            )
        names.append("m." + by_id[id(p)])
    return names


def _params(model: nn.Module, param_set: str) -> tuple[_Decode, dict[str, Tensor]]:
    wrap = _Decode(model)
    own = dict(wrap.named_parameters())
    return wrap, {n: own[n].detach() for n in _param_names(model, param_set)}


def _mc_loss(wrap: _Decode, params: dict[str, Tensor], z: Tensor, x: Tensor) -> Tensor:
    """:math:`\\hat L(\\theta) = \\frac1M\\sum_m l(\\theta, z_m)`, z (M, d), x (I,) -> scalar."""
    logits = torch.func.functional_call(wrap, params, (z,))  # (M, I)
    return -(torch.log_softmax(logits, dim=-1) * x).sum(-1).mean()


def _flat(g: dict[str, Tensor], names: list[str], c: int) -> Tensor:
    return torch.cat([g[k].reshape(c, -1) for k in names], dim=1)  # (C, P)


def _vmap_grads(wrap: _Decode, params: dict[str, Tensor], z: Tensor, x: Tensor) -> Tensor:
    """Flattened per-user gradients of the MC loss: z (C, M, d), x (C, I) -> (C, P)."""
    grad_fn = torch.func.vmap(
        torch.func.grad(lambda prm, zz, xx: _mc_loss(wrap, prm, zz, xx)), in_dims=(None, 0, 0)
    )
    return _flat(grad_fn(params, z, x), list(params), z.shape[0])


def user_gradients(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    *,
    n_samples: int = 8,
    seed: int = 0,
    eps: Tensor | None = None,
    param_set: str = "output",
    chunk_size: int = 64,
) -> Tensor:
    """Materialised gradients :math:`\\hat g_u` (N, P) via ``torch.func.vmap(grad)``.

    Memory N x P: for small cases and tests only (P = number of parameters in the set).
    """
    model = _check_model(model)
    _check_param_set(param_set)
    _check_positive("chunk_size", chunk_size)
    n = _n_rows(x, model.n_items)
    eps = _eps_for(model, n_samples, seed, eps)
    wrap, params = _params(model, param_set)
    out = []
    for s in range(0, n, chunk_size):
        xb = _rows(x, np.arange(s, min(n, s + chunk_size)), eps.dtype)  # (C, I)
        z = _samples(*posterior(model, xb), eps)  # (C, M, d)
        out.append(_vmap_grads(wrap, params, z, xb).detach())
    return torch.cat(out, dim=0)


def naive_user_gradients(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    *,
    n_samples: int = 8,
    seed: int = 0,
    eps: Tensor | None = None,
    param_set: str = "output",
) -> Tensor:
    """Reference: one ``torch.autograd.grad`` per user, in a Python loop -> (N, P).

    The baseline of ``bench/bench_transfer.py`` and the oracle of the tests. Memory
    N x P (the output is preallocated, rows filled in place).
    """
    model = _check_model(model)
    n = _n_rows(x, model.n_items)
    eps = _eps_for(model, n_samples, seed, eps)
    wrap, _ = _params(model, param_set)
    own = dict(wrap.named_parameters())
    plist = [own[k] for k in _param_names(model, param_set)]
    out = torch.empty(n, sum(p.numel() for p in plist), dtype=eps.dtype)  # (N, P)
    for u in range(n):
        xu = _rows(x, np.array([u]), eps.dtype)  # (1, I)
        z = _samples(*posterior(model, xu), eps)[0]  # (M, d)
        loss = -(torch.log_softmax(model.decode(z), dim=-1) * xu).sum(-1).mean()
        grads = torch.autograd.grad(loss, plist)
        torch.cat([g.reshape(-1) for g in grads], out=out[u])
    return out


# ---------------------------------------------------------------------------- all pairs
def transfer_gram(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    *,
    n_samples: int = 8,
    seed: int = 0,
    eps: Tensor | None = None,
    param_set: str = "output",
    chunk_size: int = 256,
) -> Tensor:
    """All-pairs transfer matrix :math:`G_{uv} = \\langle \\hat g_u, \\hat g_v\\rangle` (N, N).

    ``"output"``: from the factors, block by block over the upper triangle,

    .. math::

        G_{uv} = \\frac1{M^2}\\sum_{m,m'} (r_{um}\\cdot r_{vm'})
                 (\\tilde h_{um}\\cdot \\tilde h_{vm'}),

    memory N x M x (I + H + 1) for the factors plus chunk^2 x M^2 per block, time
    N^2 M^2 (I + H) / 2 multiply-adds.

    ``"decoder"``: flattened gradients of chunks of users by ``torch.func.vmap(grad)``;
    block (i, j) recomputes chunk j, so memory is 2 x chunk x P (P = decoder
    parameters) plus N^2, time (N / chunk)^2 / 2 chunk gradient passes.

    Returns
    -------
    (N, N) symmetric tensor in the model's dtype.
    """
    model = _check_model(model)
    _check_param_set(param_set)
    _check_positive("chunk_size", chunk_size)
    n = _n_rows(x, model.n_items)
    eps = _eps_for(model, n_samples, seed, eps)
    gram = torch.empty(n, n, dtype=eps.dtype)
    starts = list(range(0, n, chunk_size))
    if param_set == "output":
        rs, hs = [], []
        for s in starts:
            f = output_factors(
                model, _rows(x, np.arange(s, min(n, s + chunk_size)), eps.dtype), eps=eps
            )
            rs.append(f.residual())  # (C, M, I)
            hs.append(f.h)  # (C, M, H1)
        for i, si in enumerate(starts):
            for j in range(i, len(starts)):
                sj = starts[j]
                blk = _block_inner(rs[i], hs[i], rs[j], hs[j])
                gram[si : si + blk.shape[0], sj : sj + blk.shape[1]] = blk
                gram[sj : sj + blk.shape[1], si : si + blk.shape[0]] = blk.T
        return gram
    wrap, params = _params(model, param_set)

    def grads(s: int) -> Tensor:
        xb = _rows(x, np.arange(s, min(n, s + chunk_size)), eps.dtype)
        return _vmap_grads(wrap, params, _samples(*posterior(model, xb), eps), xb).detach()

    for i, si in enumerate(starts):
        gi = grads(si)  # (C, P)
        for j in range(i, len(starts)):
            sj = starts[j]
            gj = gi if j == i else grads(sj)
            blk = gi @ gj.T
            gram[si : si + blk.shape[0], sj : sj + blk.shape[1]] = blk
            gram[sj : sj + blk.shape[1], si : si + blk.shape[0]] = blk.T
    return gram


# ---------------------------------------------------------------------------- pairs
@dataclass(frozen=True)
class PairTransfer:
    """Transfer statistics of P ordered pairs (u, v): u receives, v takes the step.

    Attributes (all (P,) float64 arrays)
    ----------
    inner : :math:`\\langle \\hat g_u, \\hat g_v\\rangle`.
    norm_u, norm_v : :math:`\\|\\hat g_u\\|`, :math:`\\|\\hat g_v\\|`.
    diff_norm : :math:`\\|\\hat g_v - \\hat g_u\\|`.
    delta_x : :math:`\\Delta_x(u,v) = \\|\\hat{\\mathbb E}_{z\\sim q_u}
        [\\nabla l_v(\\theta,z) - \\nabla l_u(\\theta,z)]\\|` on u's samples.
    w2 : :math:`W_2(q_u, q_v)` in closed form (:func:`radius.analysis.geometry.w2_diag`).
    mu_dist : :math:`\\|\\mu_u - \\mu_v\\|` (lower end of the W1 sandwich).
    path_gap : :math:`\\frac1M\\sum_m \\|\\nabla l_v(z_{um}) - \\nabla l_v(z_{vm})\\|`, the
        latent part of :math:`\\|\\hat g_v - \\hat g_u\\|` along the M paths of the
        common-random-number coupling (output layer; NaN for ``"decoder"``).
    path_len : :math:`\\frac1M\\sum_m \\|z_{um} - z_{vm}\\|` (at most the coupling's
        Monte Carlo W2).
    secant : the largest measured secant ratio
        :math:`\\|\\nabla l_v(z) - \\nabla l_v(z')\\| / \\|z - z'\\|` over the M paths
        :math:`z_{um} \\to z_{vm}` and their pieces (``secant_split``): a certified
        **lower** bound on the Lipschitz constant :math:`L_{\\theta z}` of
        :math:`z \\mapsto \\nabla_\\theta l_v` (mean value inequality); NaN for
        ``"decoder"`` and where every path has zero length.
    """

    inner: np.ndarray
    norm_u: np.ndarray
    norm_v: np.ndarray
    diff_norm: np.ndarray
    delta_x: np.ndarray
    w2: np.ndarray
    mu_dist: np.ndarray
    path_gap: np.ndarray
    path_len: np.ndarray
    secant: np.ndarray


def _index_factors(f: OutputFactors, idx: Tensor) -> OutputFactors:
    return OutputFactors(
        p=f.p[idx], h=f.h[idx], x=f.x[idx], n=f.n[idx], mu=f.mu[idx], logvar=f.logvar[idx]
    )


def _gap(n: Tensor, xx: Tensor, d: dict[str, Tensor]) -> Tensor:
    r""":math:`\|G(z_1) - G(z_2)\|` with :math:`G(z) = r(z)\tilde h(z)^\top`,
    :math:`r(z) = n p(z) - x` (one output-layer gradient of the loss of input x), from dot
    products: a difference of two rank-one matrices,
    :math:`\|r_1 h_1^\top - r_2 h_2^\top\|^2 = |r_1|^2|h_1|^2 + |r_2|^2|h_2|^2
    - 2 (r_1\cdot r_2)(h_1\cdot h_2)` with :math:`|r_i|^2 = n^2 |p_i|^2 - 2 n\,p_i\cdot x
    + x\cdot x`. ``d`` holds (C, M) tensors pp1, pp2, pp12 (:math:`p_i\cdot p_j`), a1,
    a2 (:math:`p_i\cdot x`), hh1, hh2, hh12; n, xx (C,) -> (C, M)."""
    n_, xx_ = n[:, None], xx[:, None]
    r11 = n_ * n_ * d["pp1"] - 2 * n_ * d["a1"] + xx_
    r22 = n_ * n_ * d["pp2"] - 2 * n_ * d["a2"] + xx_
    r12 = n_ * n_ * d["pp12"] - n_ * (d["a1"] + d["a2"]) + xx_
    sq = r11 * d["hh1"] + r22 * d["hh2"] - 2 * r12 * d["hh12"]
    return sq.clamp_min(0).sqrt()


@torch.no_grad()
def _secants(
    model: nn.Module,
    fu: OutputFactors,
    fv: OutputFactors,
    eps: Tensor,
    ends: dict[str, Tensor],
    length: Tensor,
    split: int,
) -> tuple[Tensor, Tensor]:
    """The whole paths' gaps (C, M) and the largest secant ratio of G_v over each pair's
    coupling paths and their ``split`` pieces (C,) (NaN where every path has zero length).
    ``ends`` are the dot products at the two ends (``_output_pair_sq``), ``length`` the
    paths' lengths (C, M); each interior point costs one decoder pass per path."""
    xx = (fv.x * fv.x).sum(-1)
    gap = _gap(fv.n, xx, ends)
    ratios = [torch.where(length > 0, gap / length.clamp_min(1e-300), -torch.inf)]
    if split > 1:
        zu = _samples(fu.mu, fu.logvar, eps)  # (C, M, d)
        zv = _samples(fv.mu, fv.logvar, eps)
        w, b = model.output_layer()
        xv = fv.x[:, :, None]  # (C, I, 1)
        prev = {"p": fu.p, "h": fu.h, "pp": ends["pp1"], "a": ends["a1"], "hh": ends["hh1"]}
        for j in range(1, split + 1):
            if j < split:
                h = model.decoder_features(zu + (j / split) * (zv - zu))  # (C, M, H)
                p = torch.softmax(h @ w.T + (0 if b is None else b), dim=-1)  # (C, M, I)
                if b is not None:
                    h = torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
                cur = {
                    "p": p,
                    "h": h,
                    "pp": (p * p).sum(-1),
                    "a": torch.bmm(p, xv)[..., 0],
                    "hh": (h * h).sum(-1),
                }
            else:
                cur = {"p": fv.p, "h": fv.h, "pp": ends["pp2"], "a": ends["a2"], "hh": ends["hh2"]}
            dots = {
                "pp1": prev["pp"],
                "pp2": cur["pp"],
                "pp12": (prev["p"] * cur["p"]).sum(-1),
                "a1": prev["a"],
                "a2": cur["a"],
                "hh1": prev["hh"],
                "hh2": cur["hh"],
                "hh12": (prev["h"] * cur["h"]).sum(-1),
            }
            piece = length / split
            g = _gap(fv.n, xx, dots)
            ratios.append(torch.where(piece > 0, g / piece.clamp_min(1e-300), -torch.inf))
            prev = cur
    best = torch.stack(ratios, dim=-1).amax(dim=(1, 2))
    return gap, torch.where(torch.isfinite(best), best, torch.nan)


def _dz(mu_u: Tensor, lv_u: Tensor, mu_v: Tensor, lv_v: Tensor, eps: Tensor) -> Tensor:
    """:math:`\\|z_{um} - z_{vm}\\|` along the coupling paths -> (C, M)."""
    dmu = (mu_u - mu_v)[:, None, :]
    dsig = (torch.exp(0.5 * lv_u) - torch.exp(0.5 * lv_v))[:, None, :]
    return (dmu + dsig * eps[None]).norm(dim=-1)


def pair_transfer(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    pairs: np.ndarray | Sequence[tuple[int, int]],
    *,
    n_samples: int = 32,
    seed: int = 0,
    eps: Tensor | None = None,
    param_set: str = "output",
    chunk_size: int = 64,
    secant_split: int = 1,
) -> PairTransfer:
    """Inner products, norms, differences and :math:`\\Delta_x` for listed pairs (T2.3).

    With :math:`z` from :math:`q_u` the per-sample difference of gradients factorises:
    :math:`\\nabla_W l_v - \\nabla_W l_u = (r_v(z) - r_u(z))\\tilde h(z)^\\top`,
    :math:`r_v(z) - r_u(z) = (n_v - n_u) p(z) - (x_v - x_u)`, so

    .. math::

        \\Delta_x(u, v)^2 = \\frac1{M^2}\\sum_{m,m'} (d_{m}\\cdot d_{m'})
            (\\tilde h_{um}\\cdot\\tilde h_{um'}),\\quad d_m = (n_v - n_u)p_{um} - (x_v - x_u),

    and :math:`\\|\\hat g_v - \\hat g_u\\|^2 = \\|\\hat g_u\\|^2 + \\|\\hat g_v\\|^2
    - 2\\langle \\hat g_u, \\hat g_v\\rangle` (use float64: this cancels when
    :math:`\\hat g_u \\approx \\hat g_v`). The factors of each distinct user of a chunk
    are computed once. ``"decoder"`` materialises three gradients per pair with
    ``torch.func`` (memory 3 x chunk x P) and has no path secants.

    Secants (output layer): on each coupling path :math:`z_m(t) = z_{um} + t (z_{vm} -
    z_{um})`, at :math:`t_j = j / \\text{secant\\_split}`, the ratios
    :math:`\\|G_v(z_m(t_{j+1})) - G_v(z_m(t_j))\\| / \\|z_m(t_{j+1}) - z_m(t_j)\\|` and the
    whole path's are each at most :math:`\\sup_t \\|\\partial_z G_v\\|` on the path
    (:math:`G_v = \\nabla_{(W, b)} l_v`), so any Lipschitz constant must be at least
    their maximum. Each piece costs one more decoder pass per path (the ends are the
    factors already computed).

    Parameters
    ----------
    model : a VAEModel (``nn.Module``); its dtype sets the precision (use float64).
    x : (N, I) clean inputs (dense tensor/array or scipy sparse).
    pairs : (P, 2) row indices into ``x``, ordered (u, v).
    n_samples : M; ignored when ``eps`` is given.
    seed : seed of the common random numbers.
    eps : (M, d) explicit common random numbers.
    param_set : ``"output"`` or ``"decoder"``.
    chunk_size : pairs per chunk (memory 2 chunk x M x (I + H) for ``"output"``).
    secant_split : pieces of each coupling path whose secants are measured (1: the whole
        path only, free).
    """
    model = _check_model(model)
    _check_param_set(param_set)
    _check_positive("chunk_size", chunk_size)
    _check_positive("secant_split", secant_split)
    n = _n_rows(x, model.n_items)
    pairs = _check_pairs(pairs, n)
    eps = _eps_for(model, n_samples, seed, eps)
    keys = (
        "inner",
        "norm_u",
        "norm_v",
        "diff_norm",
        "delta_x",
        "w2",
        "mu_dist",
        "path_gap",
        "path_len",
        "secant",
    )
    out: dict[str, list[Tensor]] = {k: [] for k in keys}
    if param_set == "decoder":
        wrap, params = _params(model, param_set)
    given = pairs
    order = np.argsort(given[:, 0], kind="stable")  # a user's pairs share its factors
    pairs = given[order]
    for s in range(0, len(pairs), chunk_size):
        pc = pairs[s : s + chunk_size]
        if param_set == "output":
            uniq, inv = np.unique(pc.ravel(), return_inverse=True)
            f = output_factors(model, _rows(x, uniq, eps.dtype), eps=eps)  # distinct users
            inv = torch.as_tensor(inv.reshape(-1, 2))
            fu, fv = _index_factors(f, inv[:, 0]), _index_factors(f, inv[:, 1])
            sq_u, sq_v, inner, sq_dx, ends = _output_pair_sq(fu, fv)
            sq_diff = sq_u + sq_v - 2 * inner
            mu_u, lv_u, mu_v, lv_v = fu.mu, fu.logvar, fv.mu, fv.logvar
            length = _dz(fu.mu, fu.logvar, fv.mu, fv.logvar, eps)  # (C, M)
            gap, secant = _secants(model, fu, fv, eps, ends, length, secant_split)
            out["path_gap"].append(gap.mean(-1))
            out["path_len"].append(length.mean(-1))
            out["secant"].append(secant)
        else:
            xu, xv = _rows(x, pc[:, 0], eps.dtype), _rows(x, pc[:, 1], eps.dtype)  # (C, I)
            mu_u, lv_u = posterior(model, xu)
            mu_v, lv_v = posterior(model, xv)
            zu, zv = _samples(mu_u, lv_u, eps), _samples(mu_v, lv_v, eps)  # (C, M, d)
            gu = _vmap_grads(wrap, params, zu, xu).detach()  # (C, P)
            gv = _vmap_grads(wrap, params, zv, xv).detach()
            gvu = _vmap_grads(wrap, params, zu, xv).detach()  # grad of l_v on q_u's samples
            sq_u, sq_v = (gu * gu).sum(1), (gv * gv).sum(1)
            inner = (gu * gv).sum(1)
            sq_diff = ((gv - gu) ** 2).sum(1)
            sq_dx = ((gvu - gu) ** 2).sum(1)
            nan = torch.full((len(pc),), torch.nan, dtype=eps.dtype)
            out["path_gap"].append(nan)
            out["path_len"].append(_dz(mu_u, lv_u, mu_v, lv_v, eps).mean(-1))
            out["secant"].append(nan)
        out["inner"].append(inner)
        out["norm_u"].append(sq_u.clamp_min(0).sqrt())
        out["norm_v"].append(sq_v.clamp_min(0).sqrt())
        out["diff_norm"].append(sq_diff.clamp_min(0).sqrt())
        out["delta_x"].append(sq_dx.clamp_min(0).sqrt())
        out["w2"].append(w2_diag(mu_u, lv_u, mu_v, lv_v))
        out["mu_dist"].append((mu_u - mu_v).norm(dim=-1))
    back = np.empty_like(order)
    back[order] = np.arange(len(order))  # the order the pairs were given in
    arrays = {
        k: (torch.cat(v).detach().double().numpy()[back] if v else np.zeros(0))
        for k, v in out.items()
    }
    return PairTransfer(**arrays)


# ---------------------------------------------------------------------------- search
@dataclass(frozen=True)
class Screen:
    """The theorem's own quantities for candidate pairs (u, v) of anchors u (T2.3, 3.).

    Attributes
    ----------
    norm_u : (A,) :math:`\\|\\hat g_u\\|` of each anchor.
    delta_x : (A, K) :math:`\\Delta_x(u, v)` for each anchor's K candidates (NaN where
        the candidate slot is empty, index -1).
    """

    norm_u: np.ndarray
    delta_x: np.ndarray


def screen_candidates(
    model: nn.Module,
    x: sp.spmatrix,
    anchors: np.ndarray,
    candidates: np.ndarray,
    *,
    eps: Tensor,
    chunk_size: int = 64,
) -> Screen:
    r""":math:`\|\hat g_u\|` and :math:`\Delta_x(u, v)` for many candidates v per anchor u
    (T2.3's search by the theorem's own quantity :math:`\Delta_x / \|g_u\|`).

    Both depend on v only through :math:`x_v`: on u's samples, with the M x M Grams
    :math:`PP = P_u P_u^\top`, :math:`HH = \tilde H_u \tilde H_u^\top`, the row sums
    :math:`c = HH\,1`, :math:`S_{PH} = \sum PP \odot HH`, :math:`S_H = \sum HH`,
    :math:`b = P_u x_u` and, per candidate, :math:`a = P_u x_v - b`,
    :math:`\delta = x_v - x_u`, :math:`\Delta n = n_v - n_u`:

    .. math::

        M^2\|\hat g_u\|^2 = n_u^2 S_{PH} - 2 n_u\, b\cdot c + (x_u\cdot x_u) S_H,\qquad
        M^2\Delta_x^2 = \Delta n^2 S_{PH} - 2\Delta n\, a\cdot c + |\delta|^2 S_H,

    the same expansion as :func:`pair_transfer` with :math:`P_u x_v` gathered over the
    stored entries of :math:`x_v`. So each anchor costs one decoder pass over its M
    samples and each candidate M x nnz(x_v): thousands of candidates per second. The
    model's dtype sets the precision (float32 is enough to rank).

    Parameters
    ----------
    model : a VAEModel.
    x : (N, I) sparse clean inputs.
    anchors : (A,) row indices of the receiving users u.
    candidates : (A, K) row indices of the stepping users v (-1: no candidate).
    eps : (M, d) common random numbers.
    chunk_size : anchors per chunk (memory chunk x M x (I + H)).
    """
    model = _check_model(model)
    _check_positive("chunk_size", chunk_size)
    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy sparse matrix, got {type(x).__name__}")
    n = _n_rows(x, model.n_items)
    x = sp.csr_matrix(x)
    anchors = np.asarray(anchors)
    if anchors.ndim != 1:
        raise ValueError(f"anchors must be 1-d, got shape {anchors.shape}")
    anchors = check_indices(anchors, n, name="anchors", unit="user")
    cand = np.asarray(candidates)
    if cand.ndim != 2 or cand.shape[0] != len(anchors):
        raise ValueError(f"candidates must have shape ({len(anchors)}, K), got {cand.shape}")
    if cand.size and not np.issubdtype(cand.dtype, np.integer):
        raise TypeError(f"candidates must hold integer row indices, got dtype {cand.dtype}")
    cand = cand.astype(np.int64)
    if cand.size and (cand.min() < -1 or cand.max() >= n):
        raise ValueError(f"candidates must lie in [-1, {n}), got [{cand.min()}, {cand.max()}]")
    eps = _eps_for(model, eps.shape[0], 0, eps)
    dtype = eps.dtype
    m = eps.shape[0]
    k = cand.shape[1]
    norm_u = np.empty(len(anchors))
    delta_x = np.full((len(anchors), k), np.nan)
    for s in range(0, len(anchors), chunk_size):
        a = anchors[s : s + chunk_size]
        c = len(a)
        f = output_factors(model, _rows(x, a, dtype), eps=eps)  # p (C, M, I), h (C, M, H1)
        pp = torch.bmm(f.p, f.p.transpose(1, 2))  # (C, M, M)
        hh = torch.bmm(f.h, f.h.transpose(1, 2))
        crow = hh.sum(-1)  # (C, M)
        s_ph = (pp * hh).sum(dim=(1, 2))  # (C,)
        s_h = hh.sum(dim=(1, 2))
        b = torch.bmm(f.p, f.x[:, :, None])[..., 0]  # (C, M): P_u x_u
        xx_u = (f.x * f.x).sum(-1)  # (C,)
        sq_u = f.n**2 * s_ph - 2 * f.n * (b * crow).sum(-1) + xx_u * s_h
        norm_u[s : s + c] = (sq_u.clamp_min(0).sqrt() / m).double().numpy()
        cc = cand[s : s + c]  # (C, K)
        slot = np.flatnonzero(cc.ravel() >= 0)  # candidate slots filled
        if not len(slot):
            continue
        rows = x[cc.ravel()[slot]]  # (Q, I) sparse rows of the candidates
        q_owner = slot // k  # anchor (within the chunk) of each candidate
        ent_row = np.repeat(np.arange(len(slot)), np.diff(rows.indptr))  # entry -> candidate
        ent_item = torch.as_tensor(rows.indices.astype(np.int64))
        ent_val = torch.as_tensor(rows.data, dtype=dtype)
        owner = torch.as_tensor(q_owner[ent_row])
        # P_u x_v: gather p[u, :, item] * x_v[item] over v's stored entries, summed per v
        pt = f.p.transpose(1, 2)  # (C, I, M)
        contrib = pt[owner, ent_item] * ent_val[:, None]  # (E, M)
        pxv = torch.zeros(len(slot), m, dtype=dtype).index_add_(
            0, torch.as_tensor(ent_row), contrib
        )  # (Q, M)
        xu_at = f.x[owner, ent_item]  # x_u at v's items
        xuv = torch.zeros(len(slot), dtype=dtype).index_add_(
            0, torch.as_tensor(ent_row), xu_at * ent_val
        )  # (Q,) x_u . x_v
        xx_v = torch.as_tensor(np.asarray(rows.multiply(rows).sum(1)).ravel(), dtype=dtype)
        own = torch.as_tensor(q_owner)
        n_v = torch.as_tensor(np.asarray(rows.sum(1)).ravel(), dtype=dtype)  # (Q,)
        a_vec = pxv - b[own]  # (Q, M): P_u (x_v - x_u)
        dn = n_v - f.n[own]
        dd = xx_v - 2 * xuv + xx_u[own]  # |x_v - x_u|^2
        sq_dx = dn**2 * s_ph[own] - 2 * dn * (a_vec * crow[own]).sum(-1) + dd * s_h[own]
        vals = (sq_dx.clamp_min(0).sqrt() / m).double().numpy()
        block = np.full(c * k, np.nan)
        block[slot] = vals
        delta_x[s : s + c] = block.reshape(c, k)
    return Screen(norm_u=norm_u, delta_x=delta_x)


# ---------------------------------------------------------------------------- Lipschitz
def _power_output(model: nn.Module, z: Tensor, x: Tensor, w: Tensor, n_iter: int) -> Tensor:
    """Power iteration on :math:`J^\\top J` for the output layer, analytically.

    :math:`G(z) = (r h^\\top, r)`, :math:`r = n p - x`; with :math:`\\dot h = B w`
    (B = dh/dz), :math:`a = W \\dot h`, :math:`\\dot r = S a`,
    :math:`S = n(\\operatorname{diag}p - pp^\\top)`:

    .. math::

        \\|Jw\\|^2 = \\|\\dot r\\|^2(\\|h\\|^2 + 1) + 2(\\dot r\\cdot r)(h\\cdot\\dot h)
                    + \\|r\\|^2\\|\\dot h\\|^2,\\qquad
        J^\\top J w = B^\\top\\big[W^\\top S\\,y_I + y_H\\big],

    :math:`y_I = \\dot r(\\|h\\|^2 + 1) + r(\\dot h\\cdot h)`,
    :math:`y_H = h(\\dot r\\cdot r) + \\dot h\\|r\\|^2` (the +1 only with a bias).
    z (Q, d), x (Q, I), w (Q, d) unit -> (Q,) largest Rayleigh quotient's square root.
    """
    wmat, b = model.output_layer()
    wmat = wmat.detach()
    h, vjp_fn = torch.func.vjp(model.decoder_features, z)  # (Q, H)
    h = h.detach()
    with torch.no_grad():
        logits = h @ wmat.T + (0 if b is None else b.detach())
        p = torch.softmax(logits, dim=-1)  # (Q, I)
        n = x.sum(-1, keepdim=True)  # (Q, 1)
        r = n * p - x  # (Q, I)
        hh1 = (h * h).sum(-1, keepdim=True) + (0.0 if b is None else 1.0)
        rr = (r * r).sum(-1, keepdim=True)

        def s_apply(y: Tensor) -> Tensor:
            return n * (p * y - p * (p * y).sum(-1, keepdim=True))

    best = torch.zeros(z.shape[0], dtype=z.dtype)
    for _ in range(n_iter + 1):
        _, dh = torch.func.jvp(model.decoder_features, (z,), (w,))  # (Q, H)
        with torch.no_grad():
            dh = dh.detach()
            dr = s_apply(dh @ wmat.T)  # (Q, I)
            dr_r = (dr * r).sum(-1, keepdim=True)
            h_dh = (h * dh).sum(-1, keepdim=True)
            sq = (
                (dr * dr).sum(-1, keepdim=True) * hh1
                + 2 * dr_r * h_dh
                + rr * (dh * dh).sum(-1, keepdim=True)
            )
            best = torch.maximum(best, sq[:, 0].clamp_min(0))
            y_i = dr * hh1 + r * h_dh
            y_h = h * dr_r + dh * rr
            t = s_apply(y_i) @ wmat + y_h  # (Q, H)
        (v,) = vjp_fn(t)
        v = v.detach()
        w = v / v.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(v.dtype).tiny)
    return best.sqrt()


def output_jacobian_norm(
    model: nn.Module,
    z: Tensor,
    x: Tensor,
    *,
    n_iter: int = 10,
    seed: int = 0,
    start: Tensor | None = None,
    chunk_size: int = 2048,
) -> Tensor:
    """Spectral norm of the output-layer mixed Jacobian
    :math:`J(z) = \\partial_z \\nabla_{(W, b)} l(\\theta, z)` at each point (T2.3).

    Power iteration on the d x d matrix :math:`J^\\top J` from ``start`` (its rows of
    zero norm, or every row when None, from a seeded random start),
    with :math:`Jw` and :math:`J^\\top J w` in closed form (see ``_power_output``;
    memory chunk x (I + H)). Each iterate's Rayleigh quotient is a lower bound on
    :math:`\\|J\\|_2^2`; the largest is returned: an **estimate**, not a certified value.
    For all decoder layers use :func:`radius.analysis.lipschitz.mixed_jacobian_lipschitz`.

    Parameters
    ----------
    model : a VAEModel ``nn.Module`` (its dtype sets the precision).
    z : (Q, d) points.
    x : (Q, I) the clean input whose loss :math:`l` is differentiated at each point.
    n_iter : power iterations.
    seed : seed of the random start.
    start : (Q, d) start directions (e.g. the direction of the path a bound integrates
        along: the first Rayleigh quotient is then the derivative along it).
    chunk_size : points per chunk.

    Returns
    -------
    (Q,) tensor of estimated spectral norms.
    """
    model = _check_model(model)
    _check_positive("n_iter", n_iter)
    _check_positive("chunk_size", chunk_size)
    if not isinstance(z, Tensor) or not isinstance(x, Tensor):
        raise TypeError("z and x must be torch tensors")
    if z.ndim != 2 or x.ndim != 2 or z.shape[0] != x.shape[0]:
        raise ValueError(
            f"z (Q, d) and x (Q, I) must agree on Q, got {tuple(z.shape)} and {tuple(x.shape)}"
        )
    dtype = _dtype(model)
    gen = torch.Generator().manual_seed(int(seed))
    w0 = torch.randn(z.shape, generator=gen, dtype=torch.float64).to(dtype)
    if start is not None:
        if not isinstance(start, Tensor) or start.shape != z.shape:
            raise ValueError(f"start must have the shape of z {tuple(z.shape)}")
        given = start.to(dtype).norm(dim=-1, keepdim=True) > 0
        w0 = torch.where(given, start.to(dtype), w0)
    w0 = w0 / w0.norm(dim=-1, keepdim=True)
    out = []
    for s in range(0, z.shape[0], chunk_size):
        sl = slice(s, s + chunk_size)
        out.append(_power_output(model, z[sl].to(dtype), x[sl].to(dtype), w0[sl], n_iter))
    return torch.cat(out) if out else torch.zeros(0, dtype=dtype)


def pair_lipschitz(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    pairs: np.ndarray | Sequence[tuple[int, int]],
    *,
    n_samples: int = 32,
    seed: int = 0,
    eps: Tensor | None = None,
    n_paths: int = 2,
    n_segment: int = 3,
    n_iter: int = 10,
    param_set: str = "output",
    chunk_size: int = 64,
) -> np.ndarray:
    """Estimated :math:`L_{\\theta z}` of :math:`z \\mapsto \\nabla_\\theta l_v(\\theta, z)`
    per pair (u, v): the largest mixed-Jacobian norm over the points

    .. math::

        z = (1 - t) z_{um} + t z_{vm},\\quad m = 1..\\text{n\\_paths},\\;
        t \\in \\{0, \\tfrac1{k-1}, .., 1\\},\\; k = \\text{n\\_segment},

    the segments of the common-random-number (W2-optimal) coupling of :math:`q_u` and
    :math:`q_v`, which are the paths the transfer bound integrates along. A maximum
    over finitely many points of a power-iteration lower bound: an **estimate** of the
    supremum, not a certified constant.

    ``"output"`` uses :func:`output_jacobian_norm` (closed form, batched over pairs),
    each point's power iteration started from its path's direction :math:`z_{vm} -
    z_{um}` (the first Rayleigh quotient is the derivative along the path the bound
    integrates over);
    ``"decoder"`` calls :func:`radius.analysis.lipschitz.mixed_jacobian_lipschitz` (``torch.func``,
    float32, one call per pair and path: slow, for small pair sets).

    Returns
    -------
    (P,) float64 array.
    """
    model = _check_model(model)
    _check_param_set(param_set)
    _check_positive("n_paths", n_paths)
    _check_positive("n_segment", n_segment)
    _check_positive("chunk_size", chunk_size)
    if n_segment < 2:
        raise ValueError(f"n_segment must be >= 2 (both endpoints), got {n_segment}")
    n = _n_rows(x, model.n_items)
    pairs = _check_pairs(pairs, n)
    eps = _eps_for(model, n_samples, seed, eps)[:n_paths]  # (K, d)
    k = eps.shape[0]
    ts = torch.linspace(0.0, 1.0, n_segment, dtype=eps.dtype)  # (T,)
    out = []
    for s in range(0, len(pairs), chunk_size):
        pc = pairs[s : s + chunk_size]
        c = len(pc)
        xu, xv = _rows(x, pc[:, 0], eps.dtype), _rows(x, pc[:, 1], eps.dtype)
        zu = _samples(*posterior(model, xu), eps)  # (C, K, d)
        zv = _samples(*posterior(model, xv), eps)
        if param_set == "decoder":
            # radius.analysis.geometry works in float32
            m32 = model if _dtype(model) == torch.float32 else copy.deepcopy(model).float()
            for j in range(c):
                best = max(
                    mixed_jacobian_lipschitz(
                        m32,
                        xv[j],
                        torch.stack([zu[j, m], zv[j, m]]),
                        n_iter=n_iter,
                        n_segment=n_segment - 2,
                        seed=seed + s + j,
                    ).max
                    for m in range(k)
                )
                out.append(torch.tensor([best], dtype=torch.float64))
            continue
        pts = zu[:, :, None] + ts[None, None, :, None] * (zv - zu)[:, :, None]  # (C, K, T, d)
        q = k * len(ts)
        xq = xv[:, None, :].expand(c, q, xv.shape[1]).reshape(c * q, -1)  # (C Q, I)
        along = (zv - zu)[:, :, None].expand(c, k, len(ts), zu.shape[-1])  # path directions
        norms = output_jacobian_norm(
            model,
            pts.reshape(c * q, -1),
            xq,
            n_iter=n_iter,
            seed=seed + s,
            start=along.reshape(c * q, -1),
        )
        out.append(norms.reshape(c, q).max(dim=1).values)
    return torch.cat(out).double().numpy() if out else np.zeros(0)


# ---------------------------------------------------------------------------- bound
def transfer_bound(lipschitz: np.ndarray, w2: np.ndarray, delta_x: np.ndarray) -> np.ndarray:
    """:math:`D_{uv} = L_{\\theta z} W_2(q_u, q_v) + \\Delta_x(u, v)` (T2.3, 2.).

    With W2 >= W1 the bound :math:`\\|g_v - g_u\\| \\le D_{uv}` stays valid for the true
    :math:`L_{\\theta z}`; with an estimated one it is an estimate.
    """
    lipschitz, w2, delta_x = (np.asarray(a, dtype=np.float64) for a in (lipschitz, w2, delta_x))
    if not (lipschitz.shape == w2.shape == delta_x.shape):
        raise ValueError(
            f"lipschitz, w2 and delta_x must have the same shape, got "
            f"{lipschitz.shape}, {w2.shape}, {delta_x.shape}"
        )
    return lipschitz * w2 + delta_x


def sharing_radius(norm_u: np.ndarray, delta_x: np.ndarray, lipschitz: np.ndarray) -> np.ndarray:
    """:math:`r_{share}(u, v) = [\\|g_u\\| - \\Delta_x(u, v)]_+ / L_{\\theta z}` (T2.3, 3.).

    If :math:`W_1(q_u, q_v) < r_{share}` then :math:`D_{uv} < \\|g_u\\|`, so
    :math:`\\langle g_u, g_v\\rangle \\ge \\|g_u\\|(\\|g_u\\| - D_{uv}) > 0`. A zero
    Lipschitz constant gives an infinite radius when the numerator is positive.
    """
    norm_u, delta_x, lipschitz = (
        np.asarray(a, dtype=np.float64) for a in (norm_u, delta_x, lipschitz)
    )
    if not (norm_u.shape == delta_x.shape == lipschitz.shape):
        raise ValueError(
            f"norm_u, delta_x and lipschitz must have the same shape, got "
            f"{norm_u.shape}, {delta_x.shape}, {lipschitz.shape}"
        )
    if np.any(lipschitz < 0):
        raise ValueError("lipschitz must be >= 0")
    num = np.maximum(norm_u - delta_x, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / lipschitz
    return np.where(lipschitz > 0, r, np.where(num > 0, np.inf, 0.0))


# ---------------------------------------------------------------------------- first order
@dataclass(frozen=True)
class FirstOrderResult:
    """One-step finite-difference test of T2.3, 1. for a pair (u, v).

    Attributes
    ----------
    etas : (K,) step sizes.
    delta_loss : (K,) :math:`\\hat L_u(\\theta - \\eta \\hat g_v) - \\hat L_u(\\theta)`.
    predicted : (K,) the first-order prediction, :math:`-s\\,\\eta\\langle \\hat g_u,
        \\hat g_v\\rangle` with ``s = first_order_scale`` (1 is the claim).
    residual : (K,) :math:`|\\text{delta\\_loss} - \\text{predicted}|`.
    inner : :math:`\\langle \\hat g_u, \\hat g_v\\rangle` from materialised gradients.
    norm_v : :math:`\\|\\hat g_v\\|`.
    slope : log-log slope of residual against eta (2 when the claim holds).
    """

    etas: np.ndarray
    delta_loss: np.ndarray
    predicted: np.ndarray
    residual: np.ndarray
    inner: float
    norm_v: float
    slope: float


def loglog_slope(etas: np.ndarray, residuals: np.ndarray) -> float:
    """Least-squares slope of log(residual) on log(eta); NaN if a residual is not > 0.

    A residual of exactly zero (a first-order prediction exact to rounding) has no
    logarithm, so the slope is undefined and reported as NaN.
    """
    etas = np.asarray(etas, dtype=np.float64)
    residuals = np.asarray(residuals, dtype=np.float64)
    if etas.ndim != 1 or etas.shape != residuals.shape or len(etas) < 2:
        raise ValueError(
            "etas and residuals must be 1-d of equal length >= 2, "
            f"got {etas.shape} and {residuals.shape}"
        )
    if np.any(etas <= 0) or not np.all(np.isfinite(etas)):
        raise ValueError("etas must be finite and > 0")
    if np.any(~np.isfinite(residuals)) or np.any(residuals <= 0):
        return float("nan")
    return float(np.polyfit(np.log(etas), np.log(residuals), 1)[0])


def first_order_residuals(
    model: nn.Module,
    x: Tensor | np.ndarray | sp.spmatrix,
    pair: tuple[int, int],
    *,
    etas: np.ndarray,
    n_samples: int = 32,
    seed: int = 0,
    eps: Tensor | None = None,
    param_set: str = "output",
    first_order_scale: float = 1.0,
    relative_step: bool = False,
) -> FirstOrderResult:
    """Finite-difference test of :math:`\\hat L_u(\\theta - \\eta \\hat g_v) - \\hat L_u(\\theta)
    = -\\eta\\langle \\hat g_u, \\hat g_v\\rangle + O(\\eta^2)` (T2.3, 1.).

    The same common random numbers define :math:`\\hat L_u` before and after the step,
    so the only change is :math:`\\theta` and the residual is exactly second order:
    its log-log slope against :math:`\\eta` is 2 (use float64: the smallest residual
    must stay above the rounding of :math:`\\hat L_u`). ``first_order_scale`` != 1
    (e.g. -1, 2) plants a wrong formula: the residual is then first order (slope 1).
    With ``relative_step`` the given ``etas`` are step lengths
    :math:`\\|\\eta \\hat g_v\\|` and are divided by :math:`\\|\\hat g_v\\|`.
    """
    model = _check_model(model)
    _check_param_set(param_set)
    n = _n_rows(x, model.n_items)
    ((u, v),) = _check_pairs([pair], n)
    etas = np.asarray(etas, dtype=np.float64)
    if etas.ndim != 1 or len(etas) < 2 or np.any(etas <= 0) or not np.all(np.isfinite(etas)):
        raise ValueError("etas must be a 1-d array of at least 2 finite values > 0")
    eps = _eps_for(model, n_samples, seed, eps)
    wrap, params = _params(model, param_set)
    xu, xv = _rows(x, np.array([u]), eps.dtype), _rows(x, np.array([v]), eps.dtype)  # (1, I)
    zu, zv = _samples(*posterior(model, xu), eps)[0], _samples(*posterior(model, xv), eps)[0]
    loss_u = lambda prm: _mc_loss(wrap, prm, zu, xu[0])
    gu = {k: t.detach() for k, t in torch.func.grad(loss_u)(params).items()}
    gv = torch.func.grad(lambda prm: _mc_loss(wrap, prm, zv, xv[0]))(params)
    gv = {k: t.detach() for k, t in gv.items()}
    inner = float(sum((gu[k] * gv[k]).sum() for k in params))
    norm_v = float(torch.sqrt(sum((gv[k] ** 2).sum() for k in params)))
    if relative_step:
        if norm_v == 0:
            raise ValueError("relative_step needs g_v != 0")
        etas = etas / norm_v
    with torch.no_grad():
        base = float(loss_u(params))
        delta = np.array(
            [float(loss_u({k: params[k] - float(e) * gv[k] for k in params})) - base for e in etas]
        )
    predicted = -float(first_order_scale) * etas * inner
    residual = np.abs(delta - predicted)
    return FirstOrderResult(
        etas=etas,
        delta_loss=delta,
        predicted=predicted,
        residual=residual,
        inner=inner,
        norm_v=norm_v,
        slope=loglog_slope(etas, residual),
    )
