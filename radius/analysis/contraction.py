r"""The anchor contraction factor tau (P3.2): exact quadratics, refinement, amortised check.

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

(the second needs one H for all masks b). Three levels of evidence live here:

1. exact optima of random quadratics (:func:`anchored_quadratic_optimum`,
   :func:`random_psd`), where both inequalities are theorems;
2. per-user latent refinement on a trained decoder (:func:`refine_latents`): the true
   f_b is the masked multinomial NLL plus the prior, not a quadratic, so tau computed
   from the top Hessian eigenvalue at the optimum is a local approximation;
3. the amortised encoder (:func:`amortised_mask_spread`): across-mask variance of
   :math:`\mu_\phi(x \odot b)`, a direction check only (the encoder is not the argmin
   of f_b).

Glossary: U users, B masks per user, I items, d latent dimension, P = U B problems.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor, nn

from radius.model.protocol import encode_masked

__all__ = [
    "SPECTRA",
    "contraction_factor",
    "contraction_sq_envelope",
    "directional_variance_bound",
    "anchored_quadratic_optimum",
    "deviation_ratio",
    "variance_ratio",
    "random_psd",
    "item_centroid",
    "bernoulli_masks",
    "batched_lbfgs",
    "lanczos_extreme_eigenvalues",
    "masked_objective",
    "RefinementResult",
    "refine_latents",
    "AmortisedSpread",
    "amortised_mask_spread",
]

SPECTRA = ("isotropic", "uniform", "loguniform", "lowrank")


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
def item_centroid(x: Tensor, anchors: Tensor) -> Tensor:
    r"""Centroid :math:`\bar e_x = \frac1n \sum_{i \in S_x} e_i` of each row's items, (U, d).

    ``x`` (U, I) clean rows (support = x > 0), ``anchors`` (I, d). A user with no
    items gets the zero vector.
    """
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
    """Masks b ~ Bernoulli(keep_rate)^I, (n_users, n_masks, n_items) float32 of 0/1."""
    if not (0.0 < keep_rate <= 1.0):
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    if n_users < 1 or n_masks < 1 or n_items < 1:
        raise ValueError(
            f"sizes must be >= 1, got n_users={n_users}, n_masks={n_masks}, n_items={n_items}"
        )
    u = torch.rand((n_users, n_masks, n_items), generator=generator)
    return (u < keep_rate).to(torch.float32)


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

    Batched Lanczos with full re-orthogonalisation, k = min(n_iter, d) steps; ``hvp``
    maps V (P, d) to (H_p v_p)_p. The Ritz values lie inside each spectrum, so the
    largest is a lower estimate of :math:`\lambda_{\max}` (exact when k = d or the
    Krylov space is invariant; a breakdown restarts on a fresh orthogonal vector).

    Returns
    -------
    lam_max, lam_min : (P,) each.
    """
    if n_iter < 1 or dim < 1 or n_problems < 1:
        raise ValueError(f"need n_iter, dim, n_problems >= 1, got {n_iter}, {dim}, {n_problems}")
    k = min(n_iter, dim)

    def orth(w: Tensor, basis: list[Tensor]) -> Tensor:
        vm = torch.stack(basis)  # (j, P, d)
        for _ in range(2):
            w = w - torch.einsum("jp,jpd->pd", torch.einsum("pd,jpd->jp", w, vm), vm)
        return w

    v = torch.randn((n_problems, dim), generator=generator, dtype=dtype)
    v = v / v.norm(dim=-1, keepdim=True)
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
    t = torch.diag_embed(torch.stack(alphas, -1))  # (P, k, k)
    if betas:
        off = torch.diag_embed(torch.stack(betas, -1), offset=1)
        t = t + off + off.transpose(-1, -2)
    eig = torch.linalg.eigvalsh(t)  # (P, k) ascending
    return eig[:, -1], eig[:, 0]


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
    """Per-user latent refinement with and without the anchor term (P3.2).

    Attributes (U users, B masks, d latent)
    ---------------------------------------
    m : (U, B, d) optima of f_b without the anchor term (:math:`m_b`).
    mu_star : (U, B, d) optima with the anchor term (:math:`\\mu^*_b`).
    e_bar : (U, d) item centroids.
    lipschitz : (U, B) top Hessian eigenvalue of f_b (no anchor) at :math:`m_b`.
    min_curvature : (U, B) smallest Ritz value there (negative: not a local minimum).
    grad_norm_m, grad_norm_star : (U, B) gradient norms at the returned optima.
    n_iter : L-BFGS iterations used (both runs together, max over the two).
    lambda_a, beta : the weights used.
    curvature_var : (U, B) curvature of f_b at :math:`m_b` along
        :math:`\\delta_b = m_b - \\bar m_u` (Rayleigh quotient; NaN where
        :math:`\\delta_b = 0`).
    curvature_dev : (U, B) the same along :math:`m_b - \\bar e`.
    curvature_var_at_star : (U, B) curvature of f_b (no anchor term) along
        :math:`\\delta_b` at :math:`\\mu^*_b` (a diagnostic: equal to ``curvature_var``
        in the quadratic model).
    """

    m: np.ndarray
    mu_star: np.ndarray
    e_bar: np.ndarray
    lipschitz: np.ndarray
    min_curvature: np.ndarray
    grad_norm_m: np.ndarray
    grad_norm_star: np.ndarray
    n_iter: int
    lambda_a: float
    beta: float
    curvature_var: np.ndarray | None = None
    curvature_dev: np.ndarray | None = None
    curvature_var_at_star: np.ndarray | None = None

    def tau_mask(self, *, lambda_scale: float = 1.0) -> np.ndarray:
        """(U, B) tau_b = L_b / (L_b + 2 lambda_scale lambda_A)."""
        return contraction_factor(self.lipschitz, lambda_scale * self.lambda_a)

    def tau_user(self, *, lambda_scale: float = 1.0) -> np.ndarray:
        """(U,) tau with L_u = max_b L_b (one H per user is what the variance bound needs)."""
        return contraction_factor(self.lipschitz.max(-1), lambda_scale * self.lambda_a)

    def deviation(self) -> np.ndarray:
        """(U, B) ||mu*_b - e_bar|| / ||m_b - e_bar||."""
        return deviation_ratio(self.mu_star, self.m, self.e_bar)

    def variance(self) -> np.ndarray:
        """(U,) tr Cov_b(mu*_b) / tr Cov_b(m_b)."""
        return variance_ratio(self.mu_star, self.m)

    def variance_bound(self, *, lambda_scale: float = 1.0) -> np.ndarray:
        """(U,) :func:`directional_variance_bound` with kappa_b = ``curvature_var`` and
        L_u = max_b L_b."""
        if self.curvature_var is None:
            raise ValueError("this RefinementResult has no directional curvatures")
        return directional_variance_bound(
            self.m, self.curvature_var, self.lipschitz.max(-1), lambda_scale * self.lambda_a
        )

    def deviation_bound(self, *, lambda_scale: float = 1.0) -> np.ndarray:
        """(U, B) sqrt of :func:`contraction_sq_envelope` along m_b - e_bar with L_b."""
        if self.curvature_dev is None:
            raise ValueError("this RefinementResult has no directional curvatures")
        k = np.nan_to_num(self.curvature_dev)
        return np.sqrt(contraction_sq_envelope(k, self.lipschitz, lambda_scale * self.lambda_a))


def refine_latents(
    model: nn.Module,
    x: Tensor,
    masks: Tensor,
    e_bar: Tensor,
    *,
    lambda_a: float,
    beta: float,
    start: Tensor | None = None,
    max_iter: int = 300,
    gtol: float = 1e-5,
    n_lanczos: int = 20,
    seed: int = 0,
    dtype: torch.dtype = torch.float64,
) -> RefinementResult:
    r"""Per-user latent refinement under masks on a fixed decoder (P3.2, trained-decoder check).

    For each user u and mask b, minimise :func:`masked_objective` without the anchor term
    (:math:`m_b`) and with it (:math:`\mu^*_b`) by batched L-BFGS from one common start per
    user (both runs, every mask), then estimate the top Hessian eigenvalue
    :math:`L_b = \lambda_{\max}(\nabla^2 f_b(m_b))` by batched Lanczos on Hessian-vector
    products, and the curvatures :math:`\delta^\top H_b \delta / \|\delta\|^2` of f_b at
    :math:`m_b` along :math:`\delta_b = m_b - \bar m_u` and along :math:`m_b - \bar e`
    (one Hessian-vector product each; for :func:`directional_variance_bound`). The decoder
    is copied in ``dtype``; the model itself is not modified.

    Parameters
    ----------
    model : a trained VAE (``decode``; ``encode`` when ``start`` is None).
    x : (U, I) clean inputs; masks : (U, B, I) 0/1; e_bar : (U, d).
    lambda_a : anchor weight :math:`\lambda_A > 0`; beta : prior weight >= 0.
    start : (U, d) common start per user; default :math:`\mu_\phi(x)` on the clean input.
    max_iter, gtol : L-BFGS budget and gradient-norm tolerance.
    n_lanczos : Lanczos steps (capped at d).
    """
    if (
        x.ndim != 2
        or masks.ndim != 3
        or masks.shape[0] != x.shape[0]
        or masks.shape[2] != x.shape[1]
    ):
        raise ValueError(
            f"need x (U, I) and masks (U, B, I), got {tuple(x.shape)} and {tuple(masks.shape)}"
        )
    if not lambda_a > 0:
        raise ValueError(f"lambda_a must be > 0, got {lambda_a}")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    n_users, n_masks, _ = masks.shape
    dec = copy.deepcopy(model).to(dtype).eval()
    for p in dec.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        if start is None:
            start, _ = dec.encode(x.to(dtype))  # (U, d)
        start = start.to(dtype)
        d = start.shape[-1]
        xb = (x[:, None, :].to(dtype) * masks.to(dtype)).reshape(n_users * n_masks, -1)  # (P, I)
        e_rep = e_bar.to(dtype)[:, None, :].expand(n_users, n_masks, d).reshape(-1, d)  # (P, d)
        x0 = start[:, None, :].expand(n_users, n_masks, d).reshape(-1, d)
    # one batch of 2P problems: the first P without anchor, the next P with it
    lam = torch.cat(
        [torch.zeros(len(xb), dtype=dtype), torch.full((len(xb),), lambda_a, dtype=dtype)]
    )
    fun = masked_objective(
        dec, torch.cat([xb, xb]), torch.cat([e_rep, e_rep]), beta=beta, lambda_a=lam
    )
    sol, gnorm, n_iter = batched_lbfgs(fun, torch.cat([x0, x0]), max_iter=max_iter, gtol=gtol)
    m, mu_star = sol[: len(xb)], sol[len(xb) :]
    # Hessian of f_b (no anchor) at m_b through double backward
    f0 = masked_objective(dec, xb, e_rep, beta=beta, lambda_a=0.0)
    with torch.enable_grad():
        mv = m.detach().requires_grad_(True)
        (g,) = torch.autograd.grad(f0(mv, None).sum(), mv, create_graph=True)

        def hvp(v: Tensor) -> Tensor:
            (hv,) = torch.autograd.grad(g, mv, grad_outputs=v, retain_graph=True)
            return hv.detach()

        gen = torch.Generator().manual_seed(seed)
        lam_max, lam_min = lanczos_extreme_eigenvalues(
            hvp, len(xb), d, n_iter=n_lanczos, generator=gen, dtype=dtype
        )

        def rayleigh(v: Tensor) -> Tensor:  # (P, d) -> (P,) v^T H v / v^T v, NaN at v = 0
            vv = (v * v).sum(-1)
            q = (v * hvp(v)).sum(-1)
            return torch.where(vv > 0, q / torch.where(vv > 0, vv, 1.0), torch.nan)

        m_d = m.detach()
        delta = m_d.reshape(n_users, n_masks, d)
        delta = (delta - delta.mean(dim=1, keepdim=True)).reshape(-1, d)
        kappa_var = rayleigh(delta)
        kappa_dev = rayleigh(m_d - e_rep)
        # the same f_b's curvature along delta_b at the anchored optimum (diagnostic: the
        # quadratic model assumes it equals the one at m_b)
        ms = mu_star.detach().requires_grad_(True)
        (g_s,) = torch.autograd.grad(f0(ms, None).sum(), ms, create_graph=True)
        (hv_s,) = torch.autograd.grad(g_s, ms, grad_outputs=delta)
        vv = (delta * delta).sum(-1)
        kappa_var_star = torch.where(
            vv > 0, (delta * hv_s.detach()).sum(-1) / torch.where(vv > 0, vv, 1.0), torch.nan
        )

    def un(t: Tensor, *shape: int) -> np.ndarray:
        return t.detach().reshape(n_users, n_masks, *shape).cpu().numpy().astype(np.float64)

    return RefinementResult(
        m=un(m, d),
        mu_star=un(mu_star, d),
        e_bar=e_bar.detach().cpu().numpy().astype(np.float64),
        lipschitz=np.maximum(un(lam_max), 0.0),
        min_curvature=un(lam_min),
        grad_norm_m=un(gnorm[: len(xb)]),
        grad_norm_star=un(gnorm[len(xb) :]),
        n_iter=int(n_iter),
        lambda_a=float(lambda_a),
        beta=float(beta),
        curvature_var=un(kappa_var),
        curvature_dev=un(kappa_dev),
        curvature_var_at_star=un(kappa_var_star),
    )


# --------------------------------------------------------------------------- amortised
@dataclass
class AmortisedSpread:
    """Across-mask spread of the amortised encoder mean (P3.2 direction check).

    mask_var : (U,) tr Cov_b mu_phi(x_u * b).
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
    model: nn.Module, x: Tensor, masks: Tensor, e_bar: Tensor | None = None, *, chunk: int = 2048
) -> AmortisedSpread:
    r"""Across-mask variance :math:`\operatorname{tr}\operatorname{Cov}_b \mu_\phi(x \odot b)`.

    ``x`` (U, I) clean rows, ``masks`` (U, B, I) with B >= 2, ``e_bar`` (U, d) or None.
    Encodes U B masked rows in chunks of ``chunk`` rows through
    ``radius.model.protocol.encode_masked`` (the model's own input convention).
    """
    if (
        x.ndim != 2
        or masks.ndim != 3
        or masks.shape[0] != x.shape[0]
        or masks.shape[2] != x.shape[1]
    ):
        raise ValueError(
            f"need x (U, I) and masks (U, B, I), got {tuple(x.shape)} and {tuple(masks.shape)}"
        )
    if masks.shape[1] < 2:
        raise ValueError(f"need at least 2 masks per user, got {masks.shape[1]}")
    n_users, n_masks, n_items = masks.shape
    flat_u = torch.arange(n_users).repeat_interleave(n_masks)  # (P,)
    flat_m = masks.reshape(-1, n_items)
    mus = []
    for lo in range(0, len(flat_u), chunk):
        xc = x[flat_u[lo : lo + chunk]]  # (c, I) clean rows
        mus.append(encode_masked(model, xc, flat_m[lo : lo + chunk])[0].double())
    mu = torch.cat(mus).reshape(n_users, n_masks, -1)  # (U, B, d)
    mask_var = mu.var(dim=1, unbiased=True).sum(-1).cpu().numpy()
    clean = torch.cat(
        [model.encode(x[lo : lo + chunk])[0].double() for lo in range(0, n_users, chunk)]
    )
    between = float(clean.var(dim=0, unbiased=True).sum()) if n_users > 1 else float("nan")
    if e_bar is None:
        dist = np.full(n_users, np.nan)
    else:
        dist = (clean - e_bar.double()).norm(dim=-1).cpu().numpy()
    return AmortisedSpread(
        mask_var=mask_var,
        between_var=between,
        centroid_dist=dist,
        clean_mu=clean.cpu().numpy(),
    )
