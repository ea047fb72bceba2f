r"""The compromise gap of the multinomial decoder (T2.5).

Where two users' posteriors overlap, one decoder output must serve both. With
weights :math:`w_u = q_u(z)`, :math:`w_v = q_v(z)`, counts :math:`x_u, x_v` (row sums
:math:`n_u, n_v`) and empirical distributions :math:`p_u = x_u / n_u`, the shared output
minimising :math:`w_u n_u\,CE(p_u, p) + w_v n_v\,CE(p_v, p)` over the simplex is

.. math::

    \bar p = \frac{w_u n_u p_u + w_v n_v p_v}{w_u n_u + w_v n_v},

and the excess over the separate optima (:math:`p = p_u` for u, :math:`p = p_v` for v) is

.. math::

    \Delta(z) = w_u n_u\,KL(p_u \,\|\, \bar p) + w_v n_v\,KL(p_v \,\|\, \bar p) \;\ge 0,

zero iff :math:`p_u = p_v` or :math:`w_u w_v = 0`. The compromise gap is
:math:`G(u, v) = \int \Delta(z)\,dz`.

Structure used here
-------------------
- :math:`\Delta(w_u, w_v)` is 1-homogeneous and concave in :math:`(w_u, w_v)` (a linear
  term minus the perspective of the entropy). Hence, with
  :math:`r(z) = q_u / (q_u + q_v)` and :math:`h(r) = \Delta(r, 1 - r)`,

  .. math::

      G = \int (q_u + q_v)\,h(r(z))\,dz = E_{q_u}[h(r)] + E_{q_v}[h(r)],

  a bounded integrand sampled from the mixture :math:`(q_u + q_v)/2` (stratified: half
  the draws from each component); r is computed from log densities, so it is stable in
  high latent dimension. This is the seed's "(q_u + q_v) times a conjugate gap".
- Jensen for concave homogeneous functions gives
  :math:`G \le \Delta(1, 1) = n_u KL(p_u\|\bar p_{1}) + n_v KL(p_v\|\bar p_{1})`, with
  :math:`\bar p_1 = (x_u + x_v)/(n_u + n_v)`, attained iff :math:`q_u = q_v`
  (``gap_upper_bound``).
- :math:`\Delta` depends on the items only through the distinct pairs
  :math:`(p_{u,i}, p_{v,i})` on :math:`S_u \cup S_v`; for binary rows there are at most
  three (shared, u only, v only), so the cost does not grow with the item count.

Conventions: :math:`0 \log 0 = 0`. ``p_bar="unweighted"`` replaces :math:`\bar p` by
:math:`(p_u + p_v)/2`; it is WRONG on purpose and exists only as a negative control
(it no longer vanishes without overlap, and G stops depending on overlap).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = [
    "GapEstimate",
    "GapPath",
    "ItemGroups",
    "kl_categorical",
    "item_groups",
    "gap_pointwise",
    "gap_ratio",
    "gap_upper_bound",
    "compromise_gap_mc",
    "compromise_gap_path",
    "compromise_gap_quadrature",
    "gaussian_log_density",
    "log_bhattacharyya",
]

P_BAR_KINDS = ("optimal", "unweighted")


def _row(name: str, x: Any) -> np.ndarray:
    import scipy.sparse as sp

    if sp.issparse(x):
        x = np.asarray(x.todense()).ravel()
    elif hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    if not isinstance(x, np.ndarray):
        raise TypeError(f"{name} must be a numpy array, torch tensor or scipy sparse row")
    x = np.asarray(x, dtype=np.float64).ravel()
    if x.size == 0 or not np.all(np.isfinite(x)) or np.any(x < 0) or x.sum() <= 0:
        raise ValueError(f"{name} must be a finite non-negative row with a positive sum")
    return x


def _check_p_bar(p_bar: str) -> None:
    if p_bar not in P_BAR_KINDS:
        raise ValueError(f"p_bar must be 'optimal' or 'unweighted', got {p_bar!r}")


def kl_categorical(p: np.ndarray, q: np.ndarray) -> np.ndarray:
    r"""KL(p || q) over the last axis with :math:`0\log 0 = 0` (inf where p > 0 = q).

    .. math:: KL(p\|q) = \sum_{i: p_i > 0} p_i \log(p_i / q_i)
    """
    p = np.asarray(p, dtype=np.float64)
    q = np.asarray(q, dtype=np.float64)
    pos = p > 0
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(pos, p * (np.log(np.where(pos, p, 1.0)) - np.log(q)), 0.0)
    return terms.sum(axis=-1)


@dataclass(frozen=True)
class ItemGroups:
    """Distinct (p_u,i, p_v,i) pairs on the union support, with multiplicities.

    pu, pv, mult : (K,) arrays. n_u, n_v : row sums.
    """

    pu: np.ndarray
    pv: np.ndarray
    mult: np.ndarray
    n_u: float
    n_v: float


def item_groups(x_u: Any, x_v: Any) -> ItemGroups:
    """Collapse two count rows to their distinct item classes (see the module docstring)."""
    xu, xv = _row("x_u", x_u), _row("x_v", x_v)
    if xu.shape != xv.shape:
        raise ValueError(f"x_u and x_v must have the same length, got {xu.size} and {xv.size}")
    n_u, n_v = float(xu.sum()), float(xv.sum())
    union = (xu > 0) | (xv > 0)
    # distinct (p_u,i, p_v,i) pairs as complex keys (exact; faster than unique(axis=0))
    keys = xu[union] / n_u + 1j * (xv[union] / n_v)  # (|S_u u S_v|,)
    uniq, mult = np.unique(keys, return_counts=True)
    return ItemGroups(uniq.real.copy(), uniq.imag.copy(), mult.astype(np.float64), n_u, n_v)


def _delta(g: ItemGroups, a: np.ndarray, b: np.ndarray, p_bar: str) -> np.ndarray:
    """Delta at effective weights a = w_u n_u, b = w_v n_v, each (M,) -> (M,)."""
    a = a[:, None]  # (M, 1)
    b = b[:, None]
    s = a + b
    pu, pv = g.pu[None, :], g.pv[None, :]  # (1, K)
    if p_bar == "optimal":
        with np.errstate(invalid="ignore", divide="ignore"):
            pb = np.where(s > 0, (a * pu + b * pv) / np.where(s > 0, s, 1.0), 0.5 * (pu + pv))
        # one-sided weight: p_bar is exactly the other user's p (Delta exactly 0)
        pb = np.where(a == 0, pv, np.where(b == 0, pu, pb))
    else:
        pb = np.broadcast_to(0.5 * (pu + pv), (a.shape[0], pu.shape[1]))
    with np.errstate(divide="ignore", invalid="ignore"):
        lpb = np.log(np.where(pb > 0, pb, 1.0))
        tu = np.where(pu > 0, a * pu * (np.log(np.where(pu > 0, pu, 1.0)) - lpb), 0.0)
        tv = np.where(pv > 0, b * pv * (np.log(np.where(pv > 0, pv, 1.0)) - lpb), 0.0)
    return ((tu + tv) * g.mult[None, :]).sum(axis=1)


def gap_pointwise(x_u: Any, x_v: Any, w_u: Any, w_v: Any, *, p_bar: str = "optimal") -> np.ndarray:
    r"""Pointwise excess :math:`\Delta = w_u n_u KL(p_u\|\bar p) + w_v n_v KL(p_v\|\bar p)` (T2.5).

    Parameters
    ----------
    x_u, x_v : (I,) non-negative count rows (binary interactions or counts).
    w_u, w_v : (M,) non-negative weights (posterior densities at M latent points).
    p_bar : ``"optimal"`` (the weighted mean above) or ``"unweighted"`` (wrong; negative
        control only).

    Returns
    -------
    (M,) float64, >= 0 up to rounding; exactly 0 where w_u = w_v = 0.
    """
    _check_p_bar(p_bar)
    g = item_groups(x_u, x_v)
    wu = np.atleast_1d(np.asarray(w_u, dtype=np.float64))
    wv = np.atleast_1d(np.asarray(w_v, dtype=np.float64))
    if wu.shape != wv.shape or wu.ndim != 1:
        raise ValueError(
            f"w_u and w_v must be (M,) of the same length, got {wu.shape} and {wv.shape}"
        )
    if (
        np.any(wu < 0)
        or np.any(wv < 0)
        or not (np.all(np.isfinite(wu)) and np.all(np.isfinite(wv)))
    ):
        raise ValueError("w_u and w_v must be finite and non-negative")
    return _delta(g, wu * g.n_u, wv * g.n_v, p_bar)


def gap_ratio(
    groups: ItemGroups, r: np.ndarray, *, log_odds: bool = False, p_bar: str = "optimal"
) -> np.ndarray:
    r""":math:`h(r) = \Delta(w_u = r, w_v = 1 - r)`, (M,) -> (M,).

    Concave on [0, 1] with h(0) = h(1) = 0 (``p_bar="optimal"``). With
    ``log_odds=True`` the input is :math:`t = \log(q_u/q_v)` and the weights are
    :math:`r = \operatorname{expit}(t)`, :math:`1 - r = \operatorname{expit}(-t)`, each
    computed directly, so a weight of 1e-30 is not rounded to 0 (far-apart posteriors
    keep their tiny positive gap until the weight underflows, near :math:`|t| = 745`).
    """
    from scipy.special import expit

    _check_p_bar(p_bar)
    r = np.asarray(r, dtype=np.float64)
    if log_odds:
        wu, wv = expit(r), expit(-r)
    else:
        wu = np.clip(r, 0.0, 1.0)
        wv = 1.0 - wu
    return _delta(groups, wu * groups.n_u, wv * groups.n_v, p_bar)


def gap_upper_bound(x_u: Any, x_v: Any) -> float:
    r""":math:`\Delta(1, 1)`, the gap of identical posteriors and an upper bound on G.

    .. math::

        G(u, v) \le n_u KL(p_u\|\bar p_1) + n_v KL(p_v\|\bar p_1),\qquad
        \bar p_1 = \frac{x_u + x_v}{n_u + n_v}
    """
    g = item_groups(x_u, x_v)
    return float(_delta(g, np.array([g.n_u]), np.array([g.n_v]), "optimal")[0])


def gaussian_log_density(z: np.ndarray, mu: np.ndarray, logvar: np.ndarray) -> np.ndarray:
    r"""Log density of :math:`\mathcal N(\mu, \operatorname{diag} e^{\mathrm{logvar}})`.

    z (..., d), mu and logvar (d,) -> (...,).
    """
    z = np.asarray(z, dtype=np.float64)
    mu = np.asarray(mu, dtype=np.float64)
    lv = np.asarray(logvar, dtype=np.float64)
    q = (z - mu) ** 2 * np.exp(-lv)
    return -0.5 * (q.sum(-1) + lv.sum(-1) + mu.shape[-1] * math.log(2.0 * math.pi))


@dataclass(frozen=True)
class GapEstimate:
    """A compromise-gap estimate.

    value : the estimate of G(u, v).
    std_error : its Monte Carlo standard error (0 for quadrature).
    n_samples : draws per mixture component (MC) or grid points (quadrature).
    upper_bound : Delta(1, 1), the value for identical posteriors.
    method : ``"mc-mixture"`` or ``"quadrature"``.
    """

    value: float
    std_error: float
    n_samples: int
    upper_bound: float
    method: str


def _gaussian(*named: tuple[str, Any], ndim: int) -> tuple[np.ndarray, ...]:
    """Validate posterior parameters: finite arrays of one shape, (d,) or (L, d)."""
    arrs = []
    for name, a in named:
        if hasattr(a, "detach"):
            a = a.detach().cpu().numpy()
        a = np.asarray(a, dtype=np.float64)
        if ndim == 2 and a.ndim == 1:
            a = a[None, :]
        if a.ndim != ndim or a.shape[-1] < 1 or not np.all(np.isfinite(a)):
            want = "(d,)" if ndim == 1 else "(L, d)"
            raise ValueError(f"{name} must be a finite {want} array, got shape {a.shape}")
        arrs.append(a)
    if len({a.shape for a in arrs}) != 1:
        raise ValueError(
            f"posterior parameters must share one shape, got {[a.shape for a in arrs]}"
        )
    return tuple(arrs)


@dataclass(frozen=True)
class GapPath:
    """Compromise gaps along a sequence of v-posteriors that share their noise.

    values, std_errors : (L,) estimates and Monte Carlo standard errors.
    n_samples : draws per mixture component.
    upper_bound : Delta(1, 1) of the pair.
    step_std_errors : (L - 1,) standard errors of the steps ``values[l+1] - values[l]``
        under the common noise (the per-draw differences' spread, smaller than the
        ``hypot`` of the two standard errors when the steps are correlated).
    rise_std_error : standard error of ``values[-1] - values[0]``, likewise.
    """

    values: np.ndarray
    std_errors: np.ndarray
    n_samples: int
    upper_bound: float
    step_std_errors: np.ndarray
    rise_std_error: float


def compromise_gap_path(
    x_u: Any,
    x_v: Any,
    mu_u: Any,
    logvar_u: Any,
    mu_v: Any,
    logvar_v: Any,
    *,
    n_samples: int = 2000,
    seed: int | np.random.Generator = 0,
    p_bar: str = "optimal",
) -> GapPath:
    r"""G(u, v_l) for L posteriors :math:`q_{v_l}`, by mixture sampling with common noise (T2.5).

    Same estimator as ``compromise_gap_mc`` for each l, with the SAME standard normals
    :math:`\varepsilon, \eta` for every l (:math:`z^u = \mu_u + \sigma_u\varepsilon`,
    :math:`z^{v_l} = \mu_{v_l} + \sigma_{v_l}\eta`), so differences along the path are
    smooth. The log-ratio is evaluated in closed form from the noise, e.g. for the u
    stratum, with :math:`\delta = \mu_u - \mu_v`,

    .. math::

        \log\frac{q_u}{q_v}(z^u) = \tfrac12\sum_k\Bigl[\frac{(\delta_k + \sigma_{u,k}
            \varepsilon_k)^2}{\sigma_{v,k}^2} - \varepsilon_k^2\Bigr]
            + \sum_k \log\frac{\sigma_{v,k}}{\sigma_{u,k}},

    expanded into matrix products over the draws (cost O(L n d) in BLAS).

    Parameters
    ----------
    mu_u, logvar_u : (d,).
    mu_v, logvar_v : (L, d) (or (d,) for L = 1).
    """
    _check_p_bar(p_bar)
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    groups = item_groups(x_u, x_v)
    mu_u, lv_u = _gaussian(("mu_u", mu_u), ("logvar_u", logvar_u), ndim=1)
    mu_v, lv_v = _gaussian(("mu_v", mu_v), ("logvar_v", logvar_v), ndim=2)
    d = mu_u.shape[0]
    if mu_v.shape[1] != d:
        raise ValueError(f"mu_v must have {d} columns like mu_u, got shape {mu_v.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    eps = rng.standard_normal((n_samples, d))  # (n, d) noise of the u stratum
    eta = rng.standard_normal((n_samples, d))  # (n, d) noise of the v strata
    eps2, eta2 = eps * eps, eta * eta
    s_u, s_v = np.exp(0.5 * lv_u), np.exp(0.5 * lv_v)  # (d,), (L, d)
    delta = mu_u[None, :] - mu_v  # (L, d)
    log_det = 0.5 * (lv_v - lv_u[None, :]).sum(axis=1)  # (L,) sum log(s_v / s_u)
    iv_v, iv_u = 1.0 / (s_v * s_v), 1.0 / (s_u * s_u)  # (L, d), (d,)
    # np.einsum, not BLAS: these skinny products are faster without BLAS threads
    mm = lambda a, b: np.einsum("nd,ld->nl", a, b)  # (n, d), (L, d) -> (n, L)
    # u stratum: z = mu_u + s_u eps                                          (n, L)
    quad_u = ((delta**2) * iv_v).sum(axis=1)[None, :]
    lin_u = mm(eps, delta * s_u[None, :] * iv_v)
    sq_u = mm(eps2, (s_u * s_u)[None, :] * iv_v) - eps2.sum(axis=1, keepdims=True)
    diff_u = 0.5 * (quad_u + 2.0 * lin_u + sq_u) + log_det[None, :]
    # v stratum: z = mu_v + s_v eta, z - mu_u = -delta + s_v eta             (n, L)
    quad_v = ((delta**2) * iv_u[None, :]).sum(axis=1)[None, :]
    lin_v = mm(eta, delta * s_v * iv_u[None, :])
    sq_v = mm(eta2, s_v * s_v * iv_u[None, :]) - eta2.sum(axis=1, keepdims=True)
    diff_v = -0.5 * (quad_v - 2.0 * lin_v + sq_v) + log_det[None, :]
    vals, ses, step_var, rise_var = [], [], 0.0, 0.0
    for diff in (diff_u, diff_v):
        # h(r) with r = sigmoid(log q_u - log q_v), from the log-odds          (L, n)
        h = gap_ratio(groups, diff.T.ravel(), log_odds=True, p_bar=p_bar)
        h = h.reshape(mu_v.shape[0], n_samples)
        vals.append(h.mean(axis=1))
        ses.append(h.var(axis=1, ddof=1) / n_samples)
        # differences of the same draws (common noise): the variance of each step's mean
        step_var = step_var + np.diff(h, axis=0).var(axis=1, ddof=1) / n_samples  # (L-1,)
        rise_var = rise_var + float((h[-1] - h[0]).var(ddof=1)) / n_samples
    return GapPath(
        values=vals[0] + vals[1],
        std_errors=np.sqrt(ses[0] + ses[1]),
        n_samples=int(n_samples),
        upper_bound=gap_upper_bound(x_u, x_v),
        step_std_errors=np.sqrt(np.asarray(step_var, dtype=np.float64)).reshape(-1),
        rise_std_error=math.sqrt(rise_var),
    )


def log_bhattacharyya(mu_u: Any, logvar_u: Any, mu_v: Any, logvar_v: Any) -> np.ndarray:
    r"""Log Bhattacharyya coefficient of diagonal Gaussians, row-wise: (..., d) -> (...,).

    The overlap of two posteriors, :math:`BC = \int\sqrt{q_u q_v}\,dz \in (0, 1]`
    (1 iff :math:`q_u = q_v`), in closed form with
    :math:`\Sigma = (\Sigma_u + \Sigma_v)/2`:

    .. math::

        -\log BC = \tfrac18 (\mu_u - \mu_v)^\top \Sigma^{-1} (\mu_u - \mu_v)
            + \tfrac12 \log\frac{\det\Sigma}{\sqrt{\det\Sigma_u \det\Sigma_v}}.

    T2.5 reads "the posteriors overlap" as BC above a stated floor: the gap's integrand
    is positive wherever both densities are, so a pair's G is resolvable in float64 only
    where they share mass.
    """
    mu_u, lv_u, mu_v, lv_v = (
        np.asarray(a, dtype=np.float64) for a in (mu_u, logvar_u, mu_v, logvar_v)
    )
    if not mu_u.shape == lv_u.shape == mu_v.shape == lv_v.shape:
        raise ValueError(
            "posterior parameters must share one shape, got "
            f"{[a.shape for a in (mu_u, lv_u, mu_v, lv_v)]}"
        )
    # log of the mean variance, stable for very unequal variances
    lv_mean = np.logaddexp(lv_u, lv_v) - math.log(2.0)
    quad = ((mu_u - mu_v) ** 2 * np.exp(-lv_mean)).sum(axis=-1)
    log_det = (lv_mean - 0.5 * (lv_u + lv_v)).sum(axis=-1)
    return -(0.125 * quad + 0.5 * log_det)


def compromise_gap_mc(
    x_u: Any,
    x_v: Any,
    mu_u: Any,
    logvar_u: Any,
    mu_v: Any,
    logvar_v: Any,
    *,
    n_samples: int = 2000,
    seed: int | np.random.Generator = 0,
    p_bar: str = "optimal",
) -> GapEstimate:
    r"""G(u, v) by stratified sampling from the mixture :math:`(q_u + q_v)/2` (T2.5).

    .. math::

        \hat G = \frac1n\sum_{j} h(r(z^u_j)) + \frac1n\sum_{j} h(r(z^v_j)),\quad
        z^u_j \sim q_u,\; z^v_j \sim q_v,\quad
        r = \sigma(\log q_u - \log q_v),

    with standard error :math:`\sqrt{s_u^2/n + s_v^2/n}` (:math:`s^2` the sample variances
    of h in each stratum). Calls with the same seed share their noise.

    Parameters
    ----------
    x_u, x_v : (I,) count rows.
    mu_u, logvar_u, mu_v, logvar_v : (d,) posterior parameters.
    n_samples : draws per component (>= 2).
    seed : int or numpy Generator.
    p_bar : ``"optimal"`` or ``"unweighted"`` (negative control).
    """
    mu_v1, lv_v1 = _gaussian(("mu_v", mu_v), ("logvar_v", logvar_v), ndim=1)
    path = compromise_gap_path(
        x_u,
        x_v,
        mu_u,
        logvar_u,
        mu_v1[None, :],
        lv_v1[None, :],
        n_samples=n_samples,
        seed=seed,
        p_bar=p_bar,
    )
    return GapEstimate(
        value=float(path.values[0]),
        std_error=float(path.std_errors[0]),
        n_samples=path.n_samples,
        upper_bound=path.upper_bound,
        method="mc-mixture",
    )


def compromise_gap_quadrature(
    x_u: Any,
    x_v: Any,
    mu_u: Any,
    logvar_u: Any,
    mu_v: Any,
    logvar_v: Any,
    *,
    n_nodes: int = 200,
    width: float = 12.0,
    p_bar: str = "optimal",
) -> GapEstimate:
    r"""G(u, v) by tensor-product Gauss-Legendre quadrature of :math:`\int\Delta(q_u(z), q_v(z))dz`.

    Integrates the pointwise :math:`\Delta` with the DENSITIES as weights (not the
    ratio form of ``compromise_gap_mc``), over the box spanning
    :math:`\mu \pm \text{width}\cdot\sigma` of both posteriors; the mass outside is below
    :math:`2 d\,\Phi(-\text{width})`. For tests in d <= 3 (n_nodes^d points).
    """
    _check_p_bar(p_bar)
    mu_u, lv_u, mu_v, lv_v = _gaussian(
        ("mu_u", mu_u), ("logvar_u", logvar_u), ("mu_v", mu_v), ("logvar_v", logvar_v), ndim=1
    )
    d = mu_u.shape[0]
    if d > 3:
        raise ValueError(f"quadrature is for latent dimension <= 3, got {d}")
    if n_nodes < 2 or width <= 0:
        raise ValueError(f"need n_nodes >= 2 and width > 0, got {n_nodes}, {width}")
    s_u, s_v = np.exp(0.5 * lv_u), np.exp(0.5 * lv_v)
    lo = np.minimum(mu_u - width * s_u, mu_v - width * s_v)
    hi = np.maximum(mu_u + width * s_u, mu_v + width * s_v)
    t, w = np.polynomial.legendre.leggauss(n_nodes)  # on [-1, 1]
    axes = [lo[k] + (hi[k] - lo[k]) * (t + 1) / 2 for k in range(d)]
    wts = [w * (hi[k] - lo[k]) / 2 for k in range(d)]
    grid = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, d)  # (n^d, d)
    weight = np.prod(np.stack(np.meshgrid(*wts, indexing="ij"), axis=-1).reshape(-1, d), axis=1)
    qu = np.exp(gaussian_log_density(grid, mu_u, lv_u))
    qv = np.exp(gaussian_log_density(grid, mu_v, lv_v))
    delta = gap_pointwise(x_u, x_v, qu, qv, p_bar=p_bar)
    return GapEstimate(
        value=float((weight * delta).sum()),
        std_error=0.0,
        n_samples=int(grid.shape[0]),
        upper_bound=gap_upper_bound(x_u, x_v),
        method="quadrature",
    )
