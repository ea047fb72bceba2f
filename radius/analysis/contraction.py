r"""The anchor contraction factor tau (P3.2): exact quadratics, refinement, amortised spread.

Local quadratic model of one user's objective under mask b (P3.2):

.. math::

    f_b(\mu) = \tfrac12 (\mu - m_b)^\top H (\mu - m_b), \qquad 0 \preceq H \preceq L I,

with :math:`m_b` the unregularised optimum. Adding the anchor term
:math:`\lambda_A \|\mu - \bar e\|^2` moves the optimum to

.. math::

    \mu^*_b = (H + 2\lambda_A I)^{-1} (H m_b + 2\lambda_A \bar e),
    \qquad \mu^*_b - \bar e = (H + 2\lambda_A I)^{-1} H\, (m_b - \bar e),

whose matrix has eigenvalues :math:`h/(h + 2\lambda_A) \le \tau`, so with

.. math::

    \tau = \frac{L}{L + 2\lambda_A}:\qquad
    \|\mu^*_b - \bar e\| \le \tau \|m_b - \bar e\|, \qquad
    \operatorname{tr}\operatorname{Cov}_b(\mu^*_b) \le \tau^2
    \operatorname{tr}\operatorname{Cov}_b(m_b)

(the second needs one H for all masks b).

A non-quadratic f_b (a trained decoder). With :math:`\nabla f_b(m_b) = 0` and the anchored
optimum's :math:`\nabla f_b(\mu^*_b) = -2\lambda_A(\mu^*_b - \bar e)`, the mean-value form

.. math::

    \nabla f_b(\mu^*_b) - \nabla f_b(m_b) = \bar H_b\,(\mu^*_b - m_b), \qquad
    \bar H_b = \int_0^1 \nabla^2 f_b\big(m_b + t(\mu^*_b - m_b)\big)\,dt,

gives the same :math:`\mu^*_b - \bar e = (\bar H_b + 2\lambda_A I)^{-1}\bar H_b (m_b - \bar
e)` exactly, so the tau bound holds whenever :math:`0 \preceq \bar H_b \preceq L_b I`, with
:math:`L_b` the largest Hessian eigenvalue *on the segment* :math:`[m_b, \mu^*_b]` (not only
at :math:`m_b`). Optimiser residuals :math:`r_m = \nabla f_b(m_b)`, :math:`r_* = \nabla(f_b +
\lambda_A\|\cdot - \bar e\|^2)(\mu^*_b)` add :math:`(\bar H_b + 2\lambda_A I)^{-1}(r_* - r_m)`,
of norm at most :math:`(\|r_m\| + \|r_*\|)/(2\lambda_A)` when :math:`\bar H_b \succeq 0`. For
the variance, with per-mask :math:`A_b = (\bar H_b + 2\lambda_A I)^{-1}\bar H_b` and
:math:`\bar w = \bar m - \bar e` (:math:`\bar m` the mean of :math:`m_b` over masks),
:math:`\mu^*_b - \bar e = A_b\delta_b + A_b\bar w`, :math:`\delta_b = m_b - \bar m`, so by
Minkowski

.. math::

    \sqrt{\operatorname{tr}\operatorname{Cov}_b\mu^*_b} \le \tau_u
    \sqrt{\operatorname{tr}\operatorname{Cov}_b m_b} + \sqrt{\operatorname{tr}
    \operatorname{Cov}_b (A_b \bar w)},

and the last term, the heterogeneity of the per-mask Hessians, vanishes under the
theory's premise of one H for all masks.

Three levels of evidence live here:

1. exact optima of random quadratics (:func:`anchored_quadratic_optimum`,
   :func:`random_psd`), where both inequalities are theorems;
2. per-user latent refinement on a trained decoder (:func:`refine_latents`): both optima,
   the Hessian's extreme eigenvalues at the ends and the midpoint of each segment
   (Lanczos), the mean Hessian :math:`\bar H_b` by Simpson's rule on those three points
   (its extreme eigenvalues, the mean-value residual, and :math:`A_b\bar w` by a Lanczos
   (= conjugate-gradient) solve);
3. the amortised encoder (:func:`amortised_mask_spread`): across-mask variance of
   :math:`\mu_\phi(x \odot b)` (the encoder is not the argmin of f_b: no bound).

Masks are drawn on each user's own items only (:func:`masked_rows`: the masked input
:math:`x \odot b` as sparse rows), and every dense (rows, I) block is built one chunk at a
time, so memory follows the chunk, not users x masks x items.

Glossary: U users, B masks per user, I items, d latent dimension, P = U B problems.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
import torch
from torch import Tensor, nn

from radius.model.protocol import encode_masked

__all__ = [
    "SPECTRA",
    "SEGMENT_NODES",
    "SEGMENT_WEIGHTS",
    "contraction_factor",
    "contraction_sq_envelope",
    "directional_variance_bound",
    "anchored_quadratic_optimum",
    "deviation_ratio",
    "variance_ratio",
    "random_psd",
    "item_centroid",
    "bernoulli_masks",
    "masked_rows",
    "rows_from_dense_masks",
    "batched_lbfgs",
    "Lanczos",
    "lanczos",
    "lanczos_extreme_eigenvalues",
    "masked_objective",
    "RefinementResult",
    "refine_latents",
    "flip_factor",
    "AmortisedSpread",
    "amortised_mask_spread",
]

SPECTRA = ("isotropic", "uniform", "loguniform", "lowrank")
SEGMENT_NODES = (0.0, 0.5, 1.0)  # t on [m_b, mu*_b] where the Hessian is probed
SEGMENT_WEIGHTS = (1.0 / 6.0, 4.0 / 6.0, 1.0 / 6.0)  # Simpson's rule for the mean Hessian
CHUNK_ELEMENTS = 2**20  # dense (rows, I) elements per chunk (8 MB in float64)


# --------------------------------------------------------------------------- quadratics
def contraction_factor(lipschitz: np.ndarray | float, lambda_a: float) -> np.ndarray:
    r"""Anchor contraction factor :math:`\tau = L / (L + 2\lambda_A)` (P3.2).

    Parameters
    ----------
    lipschitz : L >= 0, the top curvature (any shape).
    lambda_a : anchor weight :math:`\lambda_A \ge 0`.

    Returns
    -------
    tau : same shape as ``lipschitz``, in [0, 1]; 1 where :math:`\lambda_A = 0`
        (no contraction), 0 where L = 0 and :math:`\lambda_A > 0`.
    """
    lip = np.asarray(lipschitz, dtype=np.float64)
    if not np.all(np.isfinite(lip)) or np.any(lip < 0):
        raise ValueError(f"lipschitz must be finite and >= 0, got min {np.min(lip)}")
    if not np.isfinite(lambda_a) or lambda_a < 0:
        raise ValueError(f"lambda_a must be finite and >= 0, got {lambda_a}")
    if lambda_a == 0:
        return np.ones_like(lip)
    return lip / (lip + 2.0 * lambda_a)


def contraction_sq_envelope(
    kappa: np.ndarray | float, lipschitz: np.ndarray | float, lambda_a: float
) -> np.ndarray:
    r"""Directional bound on the squared contraction (P3.2, tightened variance check).

    For :math:`A = (H + 2\lambda_A I)^{-1} H` with :math:`0 \preceq H \preceq L I` and a
    direction :math:`\delta`, write :math:`\psi(h) = (h / (h + c))^2`, :math:`c =
    2\lambda_A`, and :math:`p_k = \delta_k^2 / \|\delta\|^2` (the weights of
    :math:`\delta` on the eigenvectors of H). Then

    .. math::

        \frac{\|A\delta\|^2}{\|\delta\|^2} = \sum_k p_k\,\psi(h_k)
        \le \hat\psi_L(\kappa),\qquad
        \kappa = \frac{\delta^\top H \delta}{\delta^\top\delta} = \sum_k p_k h_k,

    by Jensen's inequality for the concave envelope :math:`\hat\psi_L` of :math:`\psi` on
    [0, L]. :math:`\psi'' = 2c(c - 2h)/(h + c)^4`, so :math:`\psi` is convex on
    [0, c/2] and concave beyond; the tangent from the origin touches it at h = c
    (:math:`\psi(h)/h = \psi'(h) \iff h = c`), hence with :math:`t = \min(c, L)`

    .. math::

        \hat\psi_L(\kappa) = \kappa\,\frac{t}{(t + c)^2}\ (\kappa \le t),\qquad
        \hat\psi_L(\kappa) = \Big(\frac{\kappa}{\kappa + c}\Big)^2\ (\kappa \ge t).

    :math:`\hat\psi_L` is nondecreasing, so :math:`\hat\psi_L(\kappa) \le \psi(L) =
    \tau^2`: never looser than the top-eigenvalue bound, and much tighter when the
    directions that matter have curvature well below L. It is the best bound that uses
    only :math:`\kappa` and L (the envelope is attained by two-point spectra).

    Parameters
    ----------
    kappa : curvature along the direction (Rayleigh quotient); clipped to [0, L_eff].
    lipschitz : L, top eigenvalue (broadcast with kappa); L_eff = max(L, kappa), so a
        Lanczos estimate of L below kappa cannot make the bound invalid.
    lambda_a : :math:`\lambda_A \ge 0`; 0 gives 1 (no contraction).
    """
    k = np.asarray(kappa, dtype=np.float64)
    lip = np.asarray(lipschitz, dtype=np.float64)
    if not np.isfinite(lambda_a) or lambda_a < 0:
        raise ValueError(f"lambda_a must be finite and >= 0, got {lambda_a}")
    if np.any(~np.isfinite(k)) or np.any(~np.isfinite(lip)) or np.any(lip < 0):
        raise ValueError("kappa and lipschitz must be finite, lipschitz >= 0")
    k, lip = np.broadcast_arrays(k, lip)
    if lambda_a == 0:
        return np.ones(k.shape)
    c = 2.0 * lambda_a
    k = np.maximum(k, 0.0)
    lip = np.maximum(lip, k)
    t = np.minimum(c, lip)
    with np.errstate(invalid="ignore", divide="ignore"):
        linear = k * np.where(t > 0, t / (t + c) ** 2, 0.0)
    return np.where(k <= t, linear, (k / (k + c)) ** 2)


def directional_variance_bound(
    m: np.ndarray, kappa: np.ndarray, lipschitz: np.ndarray | float, lambda_a: float
) -> np.ndarray:
    r"""Upper bound on :math:`\operatorname{tr}\operatorname{Cov}_b\mu^*_b /
    \operatorname{tr}\operatorname{Cov}_b m_b` from the curvature along each mask's
    deviation :math:`\delta_b = m_b - \bar m` (P3.2).

    With one H for all masks, :math:`\mu^*_b - \bar{\mu^*} = A\delta_b`, so

    .. math::

        \frac{\operatorname{tr}\operatorname{Cov}_b\mu^*_b}{\operatorname{tr}
        \operatorname{Cov}_b m_b} = \frac{\sum_b \|A\delta_b\|^2}{\sum_b \|\delta_b\|^2}
        \le \frac{\sum_b \hat\psi_L(\kappa_b)\,\|\delta_b\|^2}{\sum_b \|\delta_b\|^2},
        \qquad \kappa_b = \frac{\delta_b^\top H\delta_b}{\|\delta_b\|^2}

    (:func:`contraction_sq_envelope` per mask), which is :math:`\le \tau^2`.

    Parameters
    ----------
    m : (..., B, d) unanchored optima; kappa : (..., B) curvature along
        :math:`\delta_b` (NaN where :math:`\delta_b = 0`, weight 0 there);
    lipschitz : (...) or scalar L; lambda_a : :math:`\lambda_A`.

    Returns (...) bounds, NaN where m does not vary over masks.
    """
    m = np.asarray(m, dtype=np.float64)
    k = np.asarray(kappa, dtype=np.float64)
    if m.ndim < 2 or k.shape != m.shape[:-1]:
        raise ValueError(f"need m (..., B, d) and kappa (..., B), got {m.shape} and {k.shape}")
    w = ((m - m.mean(axis=-2, keepdims=True)) ** 2).sum(-1)  # (..., B) ||delta_b||^2
    lip = np.asarray(lipschitz, dtype=np.float64)[..., None]
    psi = contraction_sq_envelope(np.where(w > 0, np.nan_to_num(k), 0.0), lip, lambda_a)
    den = w.sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, (psi * w).sum(-1) / np.where(den > 0, den, 1.0), np.nan)


def anchored_quadratic_optimum(
    hessian: np.ndarray, m: np.ndarray, e_bar: np.ndarray, lambda_a: float
) -> np.ndarray:
    r"""Exact optimum of :math:`f_b(\mu) + \lambda_A\|\mu - \bar e\|^2` for a quadratic f_b.

    .. math:: \mu^*_b = (H + 2\lambda_A I)^{-1} (H m_b + 2\lambda_A \bar e)

    Parameters
    ----------
    hessian : (d, d) symmetric PSD H, shared by all masks.
    m : (B, d) unregularised optima :math:`m_b`.
    e_bar : (d,) item centroid.
    lambda_a : :math:`\lambda_A > 0` (H + 2 lambda_A I must be invertible).

    Returns
    -------
    mu_star : (B, d), from a linear solve (no eigendecomposition).
    """
    h = np.asarray(hessian, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    e = np.asarray(e_bar, dtype=np.float64)
    if h.ndim != 2 or h.shape[0] != h.shape[1]:
        raise ValueError(f"hessian must be a square (d, d) matrix, got shape {h.shape}")
    d = h.shape[0]
    if m.ndim != 2 or m.shape[1] != d or e.shape != (d,):
        raise ValueError(
            f"need m (B, {d}) and e_bar ({d},) to match hessian ({d}, {d}), "
            f"got m {m.shape} and e_bar {e.shape}"
        )
    if not np.isfinite(lambda_a) or lambda_a <= 0:
        raise ValueError(f"lambda_a must be finite and > 0, got {lambda_a}")
    a = h + 2.0 * lambda_a * np.eye(d)  # (d, d)
    rhs = m @ h.T + 2.0 * lambda_a * e[None, :]  # (B, d)
    return np.linalg.solve(a, rhs.T).T


def deviation_ratio(mu: np.ndarray, m: np.ndarray, e_bar: np.ndarray) -> np.ndarray:
    r""":math:`\|\mu_b - \bar e\| / \|m_b - \bar e\|` per mask, (..., B).

    ``mu``, ``m`` are (..., B, d), ``e_bar`` (..., d). NaN where
    :math:`m_b = \bar e` (0/0: no deviation to contract).
    """
    mu = np.asarray(mu, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    e = np.asarray(e_bar, dtype=np.float64)[..., None, :]
    num = np.linalg.norm(mu - e, axis=-1)
    den = np.linalg.norm(m - e, axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def variance_ratio(mu: np.ndarray, m: np.ndarray) -> np.ndarray:
    r"""Across-mask variance ratio :math:`\operatorname{tr}\operatorname{Cov}_b(\mu_b) /
    \operatorname{tr}\operatorname{Cov}_b(m_b)`.

    ``mu``, ``m`` are (..., B, d) with B >= 2; returns (...), NaN where m does not
    vary over masks.
    """
    mu = np.asarray(mu, dtype=np.float64)
    m = np.asarray(m, dtype=np.float64)
    if mu.shape != m.shape or mu.ndim < 2 or mu.shape[-2] < 2:
        raise ValueError(f"need mu and m of one shape (..., B >= 2, d), got {mu.shape}, {m.shape}")
    num = mu.var(axis=-2, ddof=1).sum(-1)
    den = m.var(axis=-2, ddof=1).sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def random_psd(d: int, *, lipschitz: float, spectrum: str, rng: np.random.Generator) -> np.ndarray:
    """A random (d, d) PSD matrix whose top eigenvalue is exactly ``lipschitz``.

    ``spectrum``: ``"isotropic"`` (H = L I, where both P3.2 bounds are equalities),
    ``"uniform"`` (eigenvalues U(0, L)), ``"loguniform"`` (10^U(-4, 0) L) or
    ``"lowrank"`` (about half the eigenvalues 0, the rest U(0, L)). The top one is set to
    L; the eigenbasis is Haar-random.
    """
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise ValueError(f"d must be an integer >= 1, got {d!r}")
    if not np.isfinite(lipschitz) or lipschitz < 0:
        raise ValueError(f"lipschitz must be finite and >= 0, got {lipschitz}")
    if spectrum == "isotropic":
        eig = np.full(d, float(lipschitz))
    elif spectrum == "uniform":
        eig = rng.uniform(0.0, lipschitz, size=d)
    elif spectrum == "loguniform":
        eig = lipschitz * 10.0 ** rng.uniform(-4.0, 0.0, size=d)
    elif spectrum == "lowrank":
        eig = rng.uniform(0.0, lipschitz, size=d) * (rng.random(d) < 0.5)
    else:
        raise ValueError(f"spectrum must be one of {SPECTRA}, got {spectrum!r}")
    eig[int(np.argmax(eig))] = lipschitz
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    q = q * np.sign(np.diag(r))[None, :]  # Haar: fix column signs
    h = (q * eig[None, :]) @ q.T
    return 0.5 * (h + h.T)


# --------------------------------------------------------------------------- data helpers
def item_centroid(x: Tensor | sp.spmatrix, anchors: Tensor) -> Tensor:
    r"""Centroid :math:`\bar e_x = \frac1n \sum_{i \in S_x} e_i` of each row's items, (U, d).

    ``x`` (U, I) clean rows, a dense tensor or a scipy sparse matrix (support = x > 0);
    ``anchors`` (I, d). A user with no items gets the zero vector. A sparse ``x`` gives a
    float64 result.
    """
    if sp.issparse(x):
        if x.ndim != 2 or anchors.ndim != 2 or x.shape[1] != anchors.shape[0]:
            raise ValueError(
                f"need x (U, I) and anchors (I, d) with matching I, got {tuple(x.shape)} "
                f"and {tuple(anchors.shape)}"
            )
        s = sp.csr_matrix(x > 0, dtype=np.float64)
        n = np.maximum(np.asarray(s.sum(axis=1)).ravel(), 1.0)
        cent = (s @ anchors.detach().double().cpu().numpy()) / n[:, None]
        return torch.as_tensor(cent)
    if x.ndim != 2 or anchors.ndim != 2 or x.shape[1] != anchors.shape[0]:
        raise ValueError(
            f"need x (U, I) and anchors (I, d) with matching I, got {tuple(x.shape)} "
            f"and {tuple(anchors.shape)}"
        )
    s = (x > 0).to(anchors.dtype)  # (U, I)
    n = s.sum(-1).clamp_min(1.0)  # (U,)
    return (s @ anchors) / n[:, None]


def bernoulli_masks(
    n_users: int, n_masks: int, n_items: int, keep_rate: float, generator: torch.Generator
) -> Tensor:
    """Dense masks b ~ Bernoulli(keep_rate)^I, (n_users, n_masks, n_items) float32 of 0/1.

    For small cases and tests only: its memory is users x masks x items. The claim draws
    masks on each user's items with :func:`masked_rows`.
    """
    if not (0.0 < keep_rate <= 1.0):
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if n_users < 1 or n_masks < 1 or n_items < 1:
        raise ValueError(
            f"sizes must be >= 1, got n_users={n_users}, n_masks={n_masks}, n_items={n_items}"
        )
    u = torch.rand((n_users, n_masks, n_items), generator=generator)
    return (u < keep_rate).to(torch.float32)


def masked_rows(
    x: sp.spmatrix,
    n_masks: int,
    keep_rate: float,
    rng: np.random.Generator,
    *,
    nonempty: bool = False,
) -> sp.csr_matrix:
    r"""Masked inputs :math:`x_u \odot b` for B Bernoulli(keep_rate) masks per user, as
    sparse rows (U B, I): row u B + b is user u under mask b.

    A mask matters only on the user's own items (the encoder input and f_b are supported
    on :math:`x \odot b`), so only those are drawn: nnz(x) x B uniforms, in one call
    (the result does not depend on any chunking). ``nonempty=True`` redraws a mask that
    keeps none of the user's items (then f_b is the prior alone and the decoder plays no
    part) until it keeps one; every row of ``x`` must then have an item.

    Parameters
    ----------
    x : (U, I) clean rows (support = stored entries > 0); values are carried over.
    n_masks : B >= 1; keep_rate : rho in (0, 1]; rng : numpy generator.
    """
    if not sp.issparse(x) or x.ndim != 2:
        raise ValueError(f"x must be a 2-d scipy sparse matrix, got {type(x).__name__}")
    if not (0.0 < keep_rate <= 1.0):
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    x = sp.csr_matrix(x, dtype=np.float32, copy=True)
    x.data[x.data < 0] = 0.0  # the support is the positive entries
    x.eliminate_zeros()
    x.sort_indices()
    n_users, n_items = x.shape
    counts = np.diff(x.indptr)
    keep = rng.random((x.nnz, n_masks)) < keep_rate  # (nnz, B)
    if nonempty:
        if np.any(counts == 0):
            bad = int(np.flatnonzero(counts == 0)[0])
            raise ValueError(f"nonempty masks need an item in every row; row {bad} has none")

        def kept_per_mask() -> np.ndarray:  # (U, B)
            cs = np.vstack([np.zeros((1, n_masks), np.int64), np.cumsum(keep, axis=0)])
            return cs[x.indptr[1:]] - cs[x.indptr[:-1]]

        empty = np.argwhere(kept_per_mask() == 0)
        while empty.size:
            for u, b in empty:
                lo, hi = x.indptr[u], x.indptr[u + 1]
                keep[lo:hi, b] = rng.random(hi - lo) < keep_rate
            empty = np.argwhere(kept_per_mask() == 0)
    entry, mask = np.nonzero(keep)  # entries of x (sorted), mask index
    user = np.repeat(np.arange(n_users), counts)[entry]
    out = sp.csr_matrix(
        (x.data[entry], (user * n_masks + mask, x.indices[entry])),
        shape=(n_users * n_masks, n_items),
    )
    out.sort_indices()
    return out


def rows_from_dense_masks(x: Tensor, masks: Tensor) -> sp.csr_matrix:
    """Masked rows (U B, I) of :func:`masked_rows`'s form from dense x (U, I) and masks
    (U, B, I) of 0/1 (small cases and tests)."""
    if (
        x.ndim != 2
        or masks.ndim != 3
        or masks.shape[0] != x.shape[0]
        or masks.shape[2] != x.shape[1]
    ):
        raise ValueError(
            f"need x (U, I) and masks (U, B, I), got {tuple(x.shape)} and {tuple(masks.shape)}"
        )
    xb = (x[:, None, :] * masks).reshape(-1, x.shape[1]).detach().cpu().numpy()
    return sp.csr_matrix(xb.astype(np.float32))


def _dense(rows: sp.spmatrix, dtype: torch.dtype) -> Tensor:
    return torch.as_tensor(rows.toarray()).to(dtype)


def _users_per_chunk(n_masks: int, n_items: int, chunk_elements: int) -> int:
    return max(1, int(chunk_elements) // max(1, n_masks * n_items))


# --------------------------------------------------------------------------- optimisers
def _value_and_grad(
    fun: Callable[[Tensor, Tensor | None], Tensor], x: Tensor, idx: Tensor | None = None
) -> tuple[Tensor, Tensor]:
    with torch.enable_grad():
        x = x.detach().requires_grad_(True)
        f = fun(x, idx)  # (P,) or (len(idx),)
        (g,) = torch.autograd.grad(f.sum(), x)
    return f.detach(), g.detach()


def batched_lbfgs(
    fun: Callable[[Tensor, Tensor | None], Tensor],
    x0: Tensor,
    *,
    max_iter: int = 300,
    gtol: float = 1e-6,
    history: int = 10,
    c1: float = 1e-4,
    max_backtrack: int = 30,
) -> tuple[Tensor, Tensor, int]:
    """Minimise P independent objectives at once with per-problem L-BFGS.

    ``fun(x, idx)`` maps rows x (k, d) of the problems ``idx`` (k,) (all P problems when
    ``idx`` is None) to their (k,) values, problem p depending only on its own row. Each
    problem has its own two-loop recursion, curvature pairs (a pair with s^T y <= 0 is
    dropped) and Armijo backtracking step (at the round-off floor of f, a step that does
    not raise f beyond 8 eps |f| and lowers the gradient norm is accepted); only problems
    still running are evaluated. A problem stops once its gradient norm is <= ``gtol`` or
    when backtracking fails along steepest descent (precision floor).

    Returns
    -------
    x : (P, d) minimisers, grad_norm : (P,) at x, n_iter : iterations used.
    """
    if x0.ndim != 2:
        raise ValueError(f"x0 must be (P, d), got shape {tuple(x0.shape)}")
    if max_iter < 0 or history < 1 or gtol < 0:
        raise ValueError(
            f"need max_iter >= 0, history >= 1, gtol >= 0, got {max_iter}, {history}, {gtol}"
        )
    x = x0.detach().clone()
    n_prob, d = x.shape
    eps = torch.finfo(x.dtype).eps
    f, g = _value_and_grad(fun, x)
    s_hist = x.new_zeros(history, n_prob, d)
    y_hist = x.new_zeros(history, n_prob, d)
    rho = x.new_zeros(history, n_prob)  # 0 disables an entry
    frozen = torch.zeros(n_prob, dtype=torch.bool)
    newest = -1
    it = 0
    for it in range(1, max_iter + 1):  # noqa: B007 (it is returned)
        gn = g.norm(dim=-1)
        active = (gn > gtol) & ~frozen & torch.isfinite(gn)
        if not bool(active.any()):
            it -= 1
            break
        # two-loop recursion, newest pair first
        order = [(newest - k) % history for k in range(history)] if newest >= 0 else []
        q = g.clone()
        alphas = {}
        for i in order:
            a = rho[i] * (s_hist[i] * q).sum(-1)
            q -= a[:, None] * y_hist[i]
            alphas[i] = a
        if order:
            sy = (s_hist[newest] * y_hist[newest]).sum(-1)
            yy = (y_hist[newest] * y_hist[newest]).sum(-1)
            gamma = torch.where(rho[newest] > 0, sy / yy.clamp_min(1e-300), torch.ones_like(sy))
        else:
            gamma = torch.ones_like(gn)
        r = gamma[:, None] * q
        for i in reversed(order):
            b = rho[i] * (y_hist[i] * r).sum(-1)
            r += s_hist[i] * (alphas[i] - b)[:, None]
        p = -r
        gtp = (g * p).sum(-1)
        no_hist = rho.eq(0).all(0)  # (P,) steepest descent this step
        bad = (gtp >= 0) | ~torch.isfinite(gtp)
        p = torch.where(bad[:, None], -g, p)
        gtp = torch.where(bad, -(gn**2), gtp)
        no_hist = no_hist | bad
        p = torch.where(active[:, None], p, torch.zeros_like(p))
        t = torch.where(no_hist, (1.0 / gn.clamp_min(1e-300)).clamp(max=1.0), torch.ones_like(gn))
        # Armijo backtracking on the pending problems only (the first trial is usually it)
        done = ~active
        x_new, f_new, g_new = x.clone(), f.clone(), g.clone()
        for _ in range(max_backtrack):
            pend = torch.nonzero(~done).squeeze(1)  # (k,)
            xt = x[pend] + t[pend, None] * p[pend]
            ft, gt = _value_and_grad(fun, xt, pend)
            f0 = f[pend]
            armijo = ft <= f0 + c1 * t[pend] * gtp[pend]
            # at the round-off floor of f, accept a step that lowers the gradient norm instead
            flat = (ft <= f0 + 8 * eps * f0.abs()) & (gt.norm(dim=-1) < gn[pend])
            ok = torch.isfinite(ft) & (armijo | flat)
            acc = pend[ok]
            x_new[acc], f_new[acc], g_new[acc] = xt[ok], ft[ok], gt[ok]
            done[acc] = True
            if bool(done.all()):
                break
            t = torch.where(done, t, 0.5 * t)
        failed = ~done
        frozen |= failed & no_hist
        s = x_new - x
        y = g_new - g
        sy = (s * y).sum(-1)
        keep = ~failed & (sy > 1e-12 * s.norm(dim=-1) * y.norm(dim=-1)) & (sy > 0)
        newest = (newest + 1) % history
        s_hist[newest], y_hist[newest] = s, y
        rho[newest] = torch.where(keep, 1.0 / sy.clamp_min(1e-300), torch.zeros_like(sy))
        rho[:, failed] = 0.0  # a failed line search restarts that problem's memory
        x, f, g = x_new, f_new, g_new
    return x, g.norm(dim=-1), it


# --------------------------------------------------------------------------- Lanczos
@dataclass
class Lanczos:
    r"""k steps of batched Lanczos on P symmetric (d, d) operators (:func:`lanczos`).

    Attributes
    ----------
    alpha : (P, k) diagonal and ``beta`` (P, k - 1) off-diagonal of the tridiagonal
        :math:`T_k = V_k^\top H V_k` (a zero off-diagonal marks a restart after an
        invariant Krylov space).
    basis : (k, P, d) orthonormal Lanczos vectors :math:`V_k`, the first the start.
    start_norm : (P,) norm of the start vector.
    beta_next : (P,) norm of the residual after the last step (:math:`\beta_k`).
    """

    alpha: Tensor
    beta: Tensor
    basis: Tensor
    start_norm: Tensor
    beta_next: Tensor

    def tridiagonal(self) -> Tensor:
        """(P, k, k) :math:`T_k`."""
        t = torch.diag_embed(self.alpha)
        if self.beta.shape[-1]:
            off = torch.diag_embed(self.beta, offset=1)
            t = t + off + off.transpose(-1, -2)
        return t

    def extremes(self) -> tuple[Tensor, Tensor]:
        r"""(P,) largest and smallest Ritz values: inside each spectrum, so the largest is
        a lower estimate of :math:`\lambda_{\max}` and the smallest an upper estimate of
        :math:`\lambda_{\min}` (exact when k = d or the Krylov space is invariant)."""
        eig = torch.linalg.eigvalsh(self.tridiagonal())  # (P, k) ascending
        return eig[:, -1], eig[:, 0]

    def solve_shifted(self, shift: float) -> tuple[Tensor, Tensor]:
        r"""Galerkin solution of :math:`(H + s I) z = v_0` in the Krylov space (the
        conjugate-gradient iterate after k steps): :math:`z = \|v_0\| V_k (T_k + s
        I)^{-1} e_1`.

        Returns z (P, d) and the relative residual :math:`\|(H + sI) z - v_0\| /
        \|v_0\| = \beta_k |y_k|` (0 when the Krylov space is invariant).
        """
        t = self.tridiagonal() + shift * torch.eye(self.alpha.shape[-1], dtype=self.alpha.dtype)
        e1 = torch.zeros_like(self.alpha)
        e1[:, 0] = 1.0
        y = torch.linalg.solve(t, e1)  # (P, k)
        z = torch.einsum("kpd,pk->pd", self.basis, y) * self.start_norm[:, None]
        return z, (self.beta_next * y[:, -1]).abs()


def lanczos(
    hvp: Callable[[Tensor], Tensor],
    start: Tensor,
    *,
    n_iter: int,
    generator: torch.Generator,
) -> Lanczos:
    r"""Batched Lanczos with full re-orthogonalisation from ``start`` (P, d).

    ``hvp`` maps V (P, d) to :math:`(H_p v_p)_p`; k = min(n_iter, d) steps. A start of
    norm 0 is replaced by a random vector; a breakdown (invariant Krylov space) restarts
    on a fresh random vector orthogonal to the basis (``generator``), with a zero
    off-diagonal, so the Ritz values stay exact for the invariant part.
    """
    if start.ndim != 2:
        raise ValueError(f"start must be (P, d), got shape {tuple(start.shape)}")
    n_problems, dim = start.shape
    if n_iter < 1 or dim < 1 or n_problems < 1:
        raise ValueError(f"need n_iter, dim, n_problems >= 1, got {n_iter}, {dim}, {n_problems}")
    k = min(n_iter, dim)
    dtype = start.dtype

    def orth(w: Tensor, basis: list[Tensor]) -> Tensor:
        vm = torch.stack(basis)  # (j, P, d)
        for _ in range(2):
            w = w - torch.einsum("jp,jpd->pd", torch.einsum("pd,jpd->jp", w, vm), vm)
        return w

    norm = start.norm(dim=-1)
    if bool((norm == 0).any()):
        r = torch.randn((n_problems, dim), generator=generator, dtype=dtype)
        start = torch.where((norm == 0)[:, None], r, start)
    v = start / start.norm(dim=-1, keepdim=True)
    basis = [v]
    alphas: list[Tensor] = []
    betas: list[Tensor] = []
    w = hvp(v)
    a = (w * v).sum(-1)
    alphas.append(a)
    w = w - a[:, None] * v
    scale = a.abs()
    for _ in range(1, k):
        w = orth(w, basis)
        b = w.norm(dim=-1)
        scale = torch.maximum(scale, b)
        broke = b <= 1e-10 * scale.clamp_min(1e-300)
        if bool(broke.any()):
            r = torch.randn((n_problems, dim), generator=generator, dtype=dtype)
            r = orth(r, basis)
            r = r / r.norm(dim=-1, keepdim=True)
            v_new = torch.where(broke[:, None], r, w / b.clamp_min(1e-300)[:, None])
            b = torch.where(broke, torch.zeros_like(b), b)
        else:
            v_new = w / b[:, None]
        betas.append(b)
        basis.append(v_new)
        w = hvp(v_new) - b[:, None] * basis[-2]
        a = (w * v_new).sum(-1)
        alphas.append(a)
        scale = torch.maximum(scale, a.abs())
        w = w - a[:, None] * v_new
    w = orth(w, basis)
    return Lanczos(
        alpha=torch.stack(alphas, -1),
        beta=torch.stack(betas, -1) if betas else torch.zeros((n_problems, 0), dtype=dtype),
        basis=torch.stack(basis),
        start_norm=norm,
        beta_next=w.norm(dim=-1),
    )


def lanczos_extreme_eigenvalues(
    hvp: Callable[[Tensor], Tensor],
    n_problems: int,
    dim: int,
    *,
    n_iter: int = 30,
    generator: torch.Generator,
    dtype: torch.dtype = torch.float64,
) -> tuple[Tensor, Tensor]:
    r"""Largest and smallest eigenvalue of P symmetric (d, d) matrices seen through ``hvp``.

    :func:`lanczos` from a random start (``generator``), k = min(n_iter, d) steps. The
    Ritz values lie inside each spectrum, so the largest is a lower estimate of
    :math:`\lambda_{\max}` (exact when k = d or the Krylov space is invariant).

    Returns
    -------
    lam_max, lam_min : (P,) each.
    """
    if n_iter < 1 or dim < 1 or n_problems < 1:
        raise ValueError(f"need n_iter, dim, n_problems >= 1, got {n_iter}, {dim}, {n_problems}")
    v = torch.randn((n_problems, dim), generator=generator, dtype=dtype)
    return lanczos(hvp, v, n_iter=n_iter, generator=generator).extremes()


# --------------------------------------------------------------------------- refinement
def masked_objective(
    model: nn.Module, xb: Tensor, e_bar: Tensor, *, beta: float, lambda_a: Tensor | float
) -> Callable[[Tensor], Tensor]:
    r"""Per-problem objective for latent refinement under masks (P3.2).

    .. math::

        f_b(\mu) = -\sum_i (x \odot b)_i \log \operatorname{softmax}(f_\theta(\mu))_i
                   + \tfrac{\beta}{2}\|\mu\|^2 + \lambda_A \|\mu - \bar e\|^2

    The prior term :math:`\tfrac\beta2\|\mu\|^2` is the mean part of
    :math:`\beta\,\mathrm{KL}(q\,\|\,N(0, I))` (the variance part does not involve mu).

    Parameters
    ----------
    model : decoder (``decode(z) -> logits``), parameters left untouched.
    xb : (P, I) masked counts x * b; e_bar : (P, d); lambda_a : scalar or (P,).

    Returns ``fun(mu, idx=None)``: mu (k, d) rows of the problems ``idx`` (k,) (all P
    when None) -> (k,) values, the form :func:`batched_lbfgs` takes.
    """

    lam = torch.as_tensor(lambda_a, dtype=e_bar.dtype)
    lam = lam.expand(xb.shape[0]) if lam.ndim == 0 else lam  # (P,)

    def fun(mu: Tensor, idx: Tensor | None = None) -> Tensor:  # mu (k, d) -> (k,)
        xs, es, ls = (xb, e_bar, lam) if idx is None else (xb[idx], e_bar[idx], lam[idx])
        logp = torch.log_softmax(model.decode(mu), dim=-1)  # (k, I)
        nll = -(xs * logp).sum(-1)
        prior = 0.5 * beta * (mu * mu).sum(-1)
        anchor = ls * ((mu - es) ** 2).sum(-1)
        return nll + prior + anchor

    return fun


@dataclass
class RefinementResult:
    r"""Per-user latent refinement with and without the anchor term (P3.2).

    Attributes (U users, B masks, d latent, J = len(SEGMENT_NODES))
    ---------------------------------------------------------------
    m : (U, B, d) optima of f_b without the anchor term (:math:`m_b`).
    mu_star : (U, B, d) optima with the anchor term (:math:`\mu^*_b`).
    e_bar : (U, d) item centroids.
    grad_norm_m, grad_norm_star : (U, B) gradient norms at the returned optima
        (:math:`\|r_m\|`, :math:`\|r_*\|`).
    n_iter : L-BFGS iterations used (both stages, the largest over chunks).
    lambda_a, beta : the weights used.
    node_max, node_min : (U, B, J) largest / smallest Ritz value of :math:`\nabla^2 f_b`
        at :math:`m_b + t(\mu^*_b - m_b)`, t in ``SEGMENT_NODES`` (ends and midpoint).
    mean_max, mean_min : (U, B) the same for the mean Hessian :math:`\bar H_b` (Simpson's
        rule on the three nodes).
    mean_value_residual : (U, B) :math:`\|\bar H_b s_b - (\nabla f_b(\mu^*_b) - \nabla
        f_b(m_b))\| / \|\nabla f_b(\mu^*_b) - \nabla f_b(m_b)\|`, :math:`s_b = \mu^*_b -
        m_b`: how well the quadrature reproduces the segment (0 for a quadratic).
    common_image : (U, B, d) :math:`A_b \bar w_u`, :math:`A_b = (\bar H_b + 2\lambda_A
        I)^{-1}\bar H_b`, :math:`\bar w_u = \bar m_u - \bar e_u` (for the heterogeneity).
    solve_residual : (U, B) relative residual of that solve.
    curvature_var : (U, B) :math:`\delta_b^\top \nabla^2 f_b(m_b) \delta_b /
        \|\delta_b\|^2` along :math:`\delta_b = m_b - \bar m_u` (NaN where
        :math:`\delta_b = 0`), for the directional bound of the local quadratic model.
    n_lanczos : Lanczos steps per eigenvalue problem.
    """

    m: np.ndarray
    mu_star: np.ndarray
    e_bar: np.ndarray
    grad_norm_m: np.ndarray
    grad_norm_star: np.ndarray
    n_iter: int
    lambda_a: float
    beta: float
    node_max: np.ndarray
    node_min: np.ndarray
    mean_max: np.ndarray
    mean_min: np.ndarray
    mean_value_residual: np.ndarray
    common_image: np.ndarray
    solve_residual: np.ndarray
    curvature_var: np.ndarray
    n_lanczos: int = 20

    # ------------------------------------------------------------------ curvature
    def lipschitz(self, where: str = "segment") -> np.ndarray:
        """(U, B) L_b: the largest Hessian eigenvalue on the segment (``"segment"``: max
        over its ends and midpoint) or at :math:`m_b` only (``"at_m"``), clipped at 0."""
        if where == "segment":
            lip = self.node_max.max(-1)
        elif where == "at_m":
            lip = self.node_max[..., 0]
        else:
            raise ValueError(f"where must be 'segment' or 'at_m', got {where!r}")
        return np.maximum(lip, 0.0)

    def tau_mask(
        self, *, where: str = "segment", lambda_scale: float = 1.0, l_scale: float = 1.0
    ) -> np.ndarray:
        """(U, B) tau_b = L_b / (L_b + 2 lambda_A) with L_b x ``l_scale`` and lambda_A x
        ``lambda_scale`` (controls: a too small tau)."""
        return contraction_factor(self.lipschitz(where) * l_scale, lambda_scale * self.lambda_a)

    def tau_user(
        self, *, where: str = "segment", lambda_scale: float = 1.0, l_scale: float = 1.0
    ) -> np.ndarray:
        """(U,) tau with L_u = max_b L_b (one H for all masks: the variance bound)."""
        lip = self.lipschitz(where).max(-1) * l_scale
        return contraction_factor(lip, lambda_scale * self.lambda_a)

    # ------------------------------------------------------------------ deviation
    def optimiser_slack(self) -> np.ndarray:
        r"""(U, B) :math:`(\|r_m\| + \|r_*\|) / (2\lambda_A)`: how far the residual
        gradients can move :math:`\mu^*_b - \bar e` when :math:`\bar H_b \succeq 0`."""
        return (self.grad_norm_m + self.grad_norm_star) / (2.0 * self.lambda_a)

    def deviation_parts(self) -> tuple[np.ndarray, np.ndarray]:
        r"""(U, B) :math:`\|\mu^*_b - \bar e\|` and :math:`\|m_b - \bar e\|`."""
        e = self.e_bar[:, None, :]
        return np.linalg.norm(self.mu_star - e, axis=-1), np.linalg.norm(self.m - e, axis=-1)

    def deviation(self) -> np.ndarray:
        """(U, B) ||mu*_b - e_bar|| / ||m_b - e_bar||."""
        return deviation_ratio(self.mu_star, self.m, self.e_bar)

    def deviation_margin(self, **tau: float | str) -> np.ndarray:
        r"""(U, B) :math:`\tau_b\|m_b - \bar e\| + \text{slack}_b - \|\mu^*_b - \bar e\|`:
        >= 0 where the tau bound holds (``tau``: :meth:`tau_mask`'s options)."""
        num, den = self.deviation_parts()
        return self.tau_mask(**tau) * den + self.optimiser_slack() - num  # type: ignore[arg-type]

    # ------------------------------------------------------------------ variance
    def _across(self, a: np.ndarray) -> np.ndarray:
        return a.var(axis=1, ddof=1).sum(-1)  # (U,) tr Cov over masks

    def variance_parts(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        r"""(U,) :math:`\operatorname{tr}\operatorname{Cov}_b\mu^*_b`,
        :math:`\operatorname{tr}\operatorname{Cov}_b m_b` and the optimiser's allowance
        :math:`\varepsilon_u = \sqrt{\sum_b \text{slack}_b^2 / (B - 1)}` on the square
        root of the first."""
        eps = np.sqrt((self.optimiser_slack() ** 2).sum(-1) / max(self.m.shape[1] - 1, 1))
        return self._across(self.mu_star), self._across(self.m), eps

    def variance(self) -> np.ndarray:
        """(U,) tr Cov_b(mu*_b) / tr Cov_b(m_b)."""
        return variance_ratio(self.mu_star, self.m)

    def variance_margin(self, **tau: float | str) -> np.ndarray:
        r"""(U,) :math:`\tau_u\sqrt{V_m} + \varepsilon_u - \sqrt{V_*}`: >= 0 where the
        tau^2 bound holds (``tau``: :meth:`tau_user`'s options)."""
        v_star, v_m, eps = self.variance_parts()
        return self.tau_user(**tau) * np.sqrt(v_m) + eps - np.sqrt(v_star)  # type: ignore[arg-type]

    def heterogeneity(self) -> np.ndarray:
        r"""(U,) :math:`h_u = \sqrt{\operatorname{tr}\operatorname{Cov}_b(A_b\bar w_u) /
        \operatorname{tr}\operatorname{Cov}_b m_b}`: 0 with one H for all masks; the
        variance bound without that premise is :math:`(\tau_u + h_u)^2`."""
        _, v_m, _ = self.variance_parts()
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.sqrt(self._across(self.common_image) / v_m)

    def variance_bound(self, *, lambda_scale: float = 1.0) -> np.ndarray:
        """(U,) :func:`directional_variance_bound` of the local quadratic model at
        :math:`m_b`: kappa_b = ``curvature_var``, L_u = max_b of the top eigenvalue at
        :math:`m_b`."""
        return directional_variance_bound(
            self.m, self.curvature_var, self.lipschitz("at_m").max(-1), lambda_scale * self.lambda_a
        )


def flip_factor(
    value: np.ndarray, scale: np.ndarray, slack: np.ndarray, lipschitz: np.ndarray, lambda_a: float
) -> np.ndarray:
    r"""How far L / lambda_A may be overstated before ``value <= tau scale + slack`` fails.

    With :math:`\tau_s = L / (L + 2 s \lambda_A)` (lambda_A x s, or L / s) the bound fails
    exactly when :math:`\tau_s < q = (\text{value} - \text{slack}) / \text{scale}`, i.e.
    for :math:`s > s^* = L (1 - q) / (2\lambda_A q)`. Returns :math:`s^*` per case: inf
    where q <= 0 (no tau can fail it), 0 where q >= 1 (every tau fails it); :math:`s^* <
    1` means the bound fails as measured.
    """
    v, sc, sl, lip = (np.asarray(a, dtype=np.float64) for a in (value, scale, slack, lipschitz))
    with np.errstate(invalid="ignore", divide="ignore"):
        q = (v - sl) / sc
        s = lip * (1.0 - q) / (2.0 * lambda_a * q)
    s = np.where(q <= 0, np.inf, np.where(q >= 1, 0.0, s))
    return np.where(np.isfinite(q) | np.isinf(q), s, np.nan)


class _DecodeModule(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, z: Tensor) -> Tensor:
        return self.model.decode(z)  # type: ignore[operator]


class _DecoderIn:
    """``model.decode`` with the parameters it uses (and the model's floating buffers) cast
    to ``dtype`` and detached, through ``torch.func.functional_call``: no copy of the
    encoder or the anchors, no gradient for the weights. The parameters ``decode`` uses
    are found once by autograd on a zero latent (``allow_unused``)."""

    def __init__(self, model: nn.Module, dtype: torch.dtype, latent_dim: int) -> None:
        named = dict(model.named_parameters())
        flags = {n: p.requires_grad for n, p in named.items()}
        try:
            for p in named.values():
                p.requires_grad_(True)
            ref = next(iter(named.values()))
            with torch.enable_grad():
                out = model.decode(torch.zeros(1, latent_dim, dtype=ref.dtype))  # type: ignore[operator]
                grads = torch.autograd.grad(out.sum(), list(named.values()), allow_unused=True)
        finally:
            for n, p in named.items():
                p.requires_grad_(flags[n])
        self.tensors = {
            f"model.{n}": p.detach().to(dtype)
            for (n, p), g in zip(named.items(), grads)
            if g is not None
        }
        self.tensors.update(
            {f"model.{n}": b.to(dtype) for n, b in model.named_buffers() if b.is_floating_point()}
        )
        self.module = _DecodeModule(model)

    def decode(self, z: Tensor) -> Tensor:
        return torch.func.functional_call(self.module, self.tensors, (z,))


def refine_latents(
    model: nn.Module,
    x: Tensor | sp.spmatrix,
    masked: sp.spmatrix,
    e_bar: Tensor,
    *,
    n_masks: int,
    lambda_a: float,
    beta: float,
    start: Tensor | None = None,
    max_iter: int = 300,
    gtol: float = 1e-5,
    n_lanczos: int = 20,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
    coarse_dtype: torch.dtype | None = torch.float32,
    curvature_dtype: torch.dtype | None = torch.float32,
    chunk_elements: int = CHUNK_ELEMENTS,
) -> RefinementResult:
    r"""Per-user latent refinement under masks on a fixed decoder (P3.2, trained decoder).

    For each user u and mask b, minimise :func:`masked_objective` without the anchor term
    (:math:`m_b`) and with it (:math:`\mu^*_b`) by batched L-BFGS from one common start
    per user (``coarse_dtype`` first to 10 ``gtol``, then ``dtype`` to ``gtol``). Then,
    on the segment :math:`[m_b, \mu^*_b]` of the unanchored f_b, by Hessian-vector
    products (double backward in ``curvature_dtype``):

    * the extreme eigenvalues of :math:`\nabla^2 f_b` at t = 0, 1/2, 1 (Lanczos, k =
      ``n_lanczos`` steps, random starts drawn for all problems up front);
    * the mean Hessian :math:`\bar H_b` by Simpson's rule on those points: its extreme
      eigenvalues and :math:`A_b\bar w_u` from one Lanczos run started at
      :math:`\bar w_u = \bar m_u - \bar e_u` (the Galerkin solve of :math:`(\bar H_b +
      2\lambda_A I) z = \bar w_u`, :math:`A_b\bar w_u = \bar w_u - 2\lambda_A z`), and
      the mean-value residual;
    * the curvature at :math:`m_b` along :math:`\delta_b = m_b - \bar m_u`.

    Users are processed in chunks of about ``chunk_elements`` dense (rows, I) entries, so
    memory follows the chunk. The decoder runs in each dtype through the parameters
    ``decode`` uses, cast once (no copy of the encoder or anchors); the model itself is
    not modified (it is put in eval mode for the call and restored).

    Parameters
    ----------
    model : a trained VAE (``decode``; ``encode`` when ``start`` is None).
    x : (U, I) clean rows (dense or scipy sparse), for the default start.
    masked : (U B, I) masked rows :math:`x_u \odot b` (:func:`masked_rows`).
    e_bar : (U, d) item centroids; n_masks : B.
    lambda_a : anchor weight :math:`\lambda_A > 0`; beta : prior weight >= 0.
    start : (U, d) common start per user; default :math:`\mu_\phi(x)` on the clean input.
    max_iter, gtol : L-BFGS budget per stage and gradient-norm tolerance.
    n_lanczos : Lanczos steps per eigenvalue problem (20: the top eigenvalue to about
        1e-6 relative on the default's decoder; the bottom one converges more slowly, so
        ``node_min`` / ``mean_min`` are upper estimates).
    seed : seed of the Lanczos start vectors.
    dtype : the optimum's precision (float64: gtol 1e-5 needs it).
    coarse_dtype : the first L-BFGS stage's (float32 saves about a third; None: one stage).
    curvature_dtype : the Hessian-vector products' (float32 agrees with float64 to about
        1e-6 relative on the default's decoder and is about a third cheaper; None: dtype).
    chunk_elements : dense (rows, I) entries per chunk of users.
    """
    n_users = x.shape[0]
    n_items = x.shape[1]
    if x.ndim != 2 or not sp.issparse(masked) or masked.shape != (n_users * n_masks, n_items):
        raise ValueError(
            f"need x (U, I) and masked rows (U B, I) for B = {n_masks}, got {tuple(x.shape)} "
            f"and {tuple(masked.shape)}"
        )
    if not lambda_a > 0:
        raise ValueError(f"lambda_a must be > 0, got {lambda_a}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    masked = sp.csr_matrix(masked)
    xs = sp.csr_matrix(x) if sp.issparse(x) else None
    was_training = model.training
    model.eval()
    try:
        d = int(torch.as_tensor(e_bar).shape[-1])
        dec = _DecoderIn(model, dtype, d)
        coarse = None
        if coarse_dtype is not None and coarse_dtype != dtype:
            coarse = _DecoderIn(model, coarse_dtype, d)
        cdt = curvature_dtype or dtype
        cdec = (
            dec if cdt == dtype else (coarse if cdt == coarse_dtype else _DecoderIn(model, cdt, d))
        )
        per = _users_per_chunk(n_masks, n_items, chunk_elements)
        with torch.no_grad():
            if start is None:
                parts = []
                for lo in range(0, n_users, per):
                    xc = (
                        _dense(xs[lo : lo + per], torch.float32)
                        if xs is not None
                        else torch.as_tensor(x[lo : lo + per]).float()
                    )
                    parts.append(model.encode(xc)[0])
                start = torch.cat(parts)  # (U, d)
            start = start.to(dtype)
            e_all = torch.as_tensor(e_bar).to(dtype)
        return _refine_chunks(
            dec, coarse, cdec, masked, start, e_all, n_masks=n_masks, lambda_a=lambda_a,
            beta=beta, max_iter=max_iter, gtol=gtol, n_lanczos=n_lanczos, seed=seed,
            dtype=dtype, coarse_dtype=coarse_dtype, cdt=cdt, per=per,
        )  # fmt: skip
    finally:
        model.train(was_training)


def _refine_chunks(
    dec: _DecoderIn,
    coarse: _DecoderIn | None,
    cdec: _DecoderIn,
    masked: sp.csr_matrix,
    start: Tensor,
    e_all: Tensor,
    *,
    n_masks: int,
    lambda_a: float,
    beta: float,
    max_iter: int,
    gtol: float,
    n_lanczos: int,
    seed: int,
    dtype: torch.dtype,
    coarse_dtype: torch.dtype | None,
    cdt: torch.dtype,
    per: int,
) -> RefinementResult:
    """The chunk loop of :func:`refine_latents`."""
    n_users = start.shape[0]
    d = start.shape[-1]
    gen = torch.Generator().manual_seed(seed)
    starts = torch.randn((len(SEGMENT_NODES), n_users * n_masks, d), generator=gen, dtype=dtype)
    c = 2.0 * lambda_a
    out: dict[str, list[Tensor]] = {}
    n_iter = 0

    def keep(**arrays: Tensor) -> None:
        for k, v in arrays.items():
            out.setdefault(k, []).append(v.detach())

    for lo in range(0, n_users, per):
        hi = min(n_users, lo + per)
        nu, p = hi - lo, (hi - lo) * n_masks
        rows = slice(lo * n_masks, hi * n_masks)
        xb = _dense(masked[rows], dtype)  # (p, I)
        e = e_all[lo:hi, None, :].expand(nu, n_masks, d).reshape(p, d)
        x0 = start[lo:hi, None, :].expand(nu, n_masks, d).reshape(p, d)
        # one batch of 2p problems: the first p without anchor, the next p with it
        lam = torch.cat([torch.zeros(p, dtype=dtype), torch.full((p,), lambda_a, dtype=dtype)])
        x_init, it0 = torch.cat([x0, x0]), 0
        if coarse is not None:
            fc = masked_objective(
                coarse, torch.cat([xb, xb]).to(coarse_dtype), torch.cat([e, e]).to(coarse_dtype),
                beta=beta, lambda_a=lam.to(coarse_dtype),
            )  # fmt: skip
            sol_c, _, it0 = batched_lbfgs(
                fc, x_init.to(coarse_dtype), max_iter=max_iter, gtol=10 * gtol
            )
            sol_c = sol_c.to(dtype)
            x_init = torch.where(torch.isfinite(sol_c).all(-1, keepdim=True), sol_c, x_init)
        fun = masked_objective(dec, torch.cat([xb, xb]), torch.cat([e, e]), beta=beta, lambda_a=lam)
        sol, gnorm, it1 = batched_lbfgs(fun, x_init, max_iter=max_iter, gtol=gtol)
        n_iter = max(n_iter, it0 + it1)
        m, mu = sol[:p], sol[p:]
        # curvature on the segment, in curvature_dtype
        mc, muc = m.to(cdt), mu.to(cdt)
        f0 = masked_objective(cdec, xb.to(cdt), e.to(cdt), beta=beta, lambda_a=0.0)
        hvps, grads = [], []
        with torch.enable_grad():
            for t in SEGMENT_NODES:
                pt = (mc + t * (muc - mc)).detach().requires_grad_(True)
                (g,) = torch.autograd.grad(f0(pt, None).sum(), pt, create_graph=True)

                def hvp(v: Tensor, g: Tensor = g, pt: Tensor = pt) -> Tensor:
                    (hv,) = torch.autograd.grad(g, pt, grad_outputs=v, retain_graph=True)
                    return hv.detach()

                hvps.append(hvp)
                grads.append(g.detach())
            node = [
                lanczos(h, starts[j, rows].to(cdt), n_iter=n_lanczos, generator=gen).extremes()
                for j, h in enumerate(hvps)
            ]

            def hbar(v: Tensor, hvps: list = hvps) -> Tensor:
                return sum(w * h(v) for w, h in zip(SEGMENT_WEIGHTS, hvps))  # type: ignore[return-value]

            m3 = mc.reshape(nu, n_masks, d)
            delta = (m3 - m3.mean(dim=1, keepdim=True)).reshape(p, d)
            vv = (delta * delta).sum(-1)
            kappa = torch.where(
                vv > 0, (delta * hvps[0](delta)).sum(-1) / torch.where(vv > 0, vv, 1.0), torch.nan
            )
            w_bar = (m3.mean(dim=1) - e_all[lo:hi].to(cdt))[:, None, :].expand(nu, n_masks, d)
            w_bar = w_bar.reshape(p, d)
            lz = lanczos(hbar, w_bar, n_iter=n_lanczos, generator=gen)
            z, solve_res = lz.solve_shifted(c)
            dg = grads[-1] - grads[0]
            dgn = dg.norm(dim=-1)
            mv = (hbar(muc - mc) - dg).norm(dim=-1) / torch.where(dgn > 0, dgn, 1.0)
            mv = torch.where(dgn > 0, mv, torch.zeros_like(mv))
        mean_max, mean_min = lz.extremes()
        keep(
            m=m, mu=mu, gm=gnorm[:p], gs=gnorm[p:],
            node_max=torch.stack([a for a, _ in node], -1),
            node_min=torch.stack([b for _, b in node], -1),
            mean_max=mean_max, mean_min=mean_min, mv=mv,
            image=w_bar - c * z, solve=solve_res, kappa=kappa,
        )  # fmt: skip
        del hvps, grads, lz

    def un(key: str, *shape: int) -> np.ndarray:
        t = torch.cat([a.to(torch.float64) for a in out[key]])
        return t.reshape(n_users, n_masks, *shape).cpu().numpy().astype(np.float64)

    j = len(SEGMENT_NODES)
    return RefinementResult(
        m=un("m", d),
        mu_star=un("mu", d),
        e_bar=e_all.cpu().numpy().astype(np.float64),
        grad_norm_m=un("gm"),
        grad_norm_star=un("gs"),
        n_iter=int(n_iter),
        lambda_a=float(lambda_a),
        beta=float(beta),
        node_max=un("node_max", j),
        node_min=un("node_min", j),
        mean_max=un("mean_max"),
        mean_min=un("mean_min"),
        mean_value_residual=un("mv"),
        common_image=un("image", d),
        solve_residual=un("solve"),
        curvature_var=un("kappa"),
        n_lanczos=int(n_lanczos),
    )


# --------------------------------------------------------------------------- amortised
@dataclass
class AmortisedSpread:
    """Across-mask spread of the amortised encoder mean (P3.2 mechanism).

    mask_var : (U,) tr Cov_b mu_phi(x_u * b) (raw, in the latent's own units).
    between_var : tr Cov_u mu_phi(x_u) over the users given (clean input).
    centroid_dist : (U,) ||mu_phi(x_u) - e_bar_u|| (NaN when no centroid was given).
    clean_mu : (U, d) mu_phi(x_u) on the clean rows (for resampling users).
    """

    mask_var: np.ndarray
    between_var: float
    centroid_dist: np.ndarray
    clean_mu: np.ndarray | None = None

    @property
    def relative_mask_var(self) -> float:
        """mean_u mask_var / between_var: mask noise relative to the spread of users
        (invariant to rescaling and rotating the latent space)."""
        if self.between_var <= 0:
            return float("nan")
        return float(np.mean(self.mask_var) / self.between_var)


@torch.no_grad()
def amortised_mask_spread(
    model: nn.Module,
    x: Tensor | sp.spmatrix,
    masked: sp.spmatrix,
    *,
    n_masks: int,
    e_bar: Tensor | None = None,
    chunk_elements: int = 2 * CHUNK_ELEMENTS,
) -> AmortisedSpread:
    r"""Across-mask variance :math:`\operatorname{tr}\operatorname{Cov}_b \mu_\phi(x \odot b)`.

    ``x`` (U, I) clean rows (dense or scipy sparse), ``masked`` (U B, I) masked rows
    (:func:`masked_rows`) with B = ``n_masks`` >= 2, ``e_bar`` (U, d) or None. Encodes the
    masked rows through ``radius.model.protocol.encode_masked`` (the model's own input
    convention; the mask is the support of the masked row) a chunk of users at a time,
    in float32 (about ``chunk_elements`` dense entries per chunk).
    """
    n_users, n_items = x.shape
    if n_masks < 2:
        raise ValueError(f"need at least 2 masks per user, got {n_masks}")
    if x.ndim != 2 or not sp.issparse(masked) or masked.shape != (n_users * n_masks, n_items):
        raise ValueError(
            f"need x (U, I) and masked rows (U B, I) for B = {n_masks}, got {tuple(x.shape)} "
            f"and {tuple(masked.shape)}"
        )
    masked = sp.csr_matrix(masked)
    xs = sp.csr_matrix(x) if sp.issparse(x) else None
    per = _users_per_chunk(n_masks, n_items, chunk_elements)
    mask_var, clean = [], []
    for lo in range(0, n_users, per):
        hi = min(n_users, lo + per)
        xc = _dense(xs[lo:hi], torch.float32) if xs is not None else x[lo:hi].float()
        clean.append(model.encode(xc)[0].double())
        rows = masked[lo * n_masks : hi * n_masks]
        b = torch.as_tensor((rows != 0).toarray(), dtype=torch.float32)
        xr = xc.repeat_interleave(n_masks, dim=0)
        mu = encode_masked(model, xr, b)[0].double().reshape(hi - lo, n_masks, -1)
        mask_var.append(mu.var(dim=1, unbiased=True).sum(-1))
    mu_clean = torch.cat(clean)
    between = float(mu_clean.var(dim=0, unbiased=True).sum()) if n_users > 1 else float("nan")
    if e_bar is None:
        dist = np.full(n_users, np.nan)
    else:
        dist = (mu_clean - torch.as_tensor(e_bar).double()).norm(dim=-1).cpu().numpy()
    return AmortisedSpread(
        mask_var=torch.cat(mask_var).cpu().numpy(),
        between_var=between,
        centroid_dist=dist,
        clean_mu=mu_clean.cpu().numpy(),
    )
