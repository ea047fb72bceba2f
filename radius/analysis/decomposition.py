r"""The beta-KL decomposition of the prior term (theory.md, "beta-KL decomposition").

For N sampled inputs :math:`x_1,\dots,x_N` (users x masks, :math:`x_h = x\odot b`) with
diagonal Gaussian posteriors :math:`q_j = \mathcal N(m_j, \operatorname{diag} s_j^2)`, the
aggregate posterior is the uniform mixture :math:`q_h = \frac1N\sum_j q_j`. With J uniform
on {1..N} and :math:`Z\mid J=j\sim q_j`, and :math:`p = \mathcal N(0, I)`:

.. math::

    \underbrace{\frac1N\sum_j \mathrm{KL}(q_j\,\|\,p)}_{\mathbb E\,\mathrm{KL}}
    = \underbrace{\frac1N\sum_j \mathbb E_{q_j}[\log q_j(z) - \log q_h(z)]}_{I_q(X_h;Z)}
    + \underbrace{\mathbb E_{q_h}[\log q_h(z) - \log p(z)]}_{\mathrm{KL}(q_h\|p)} .

Glossary: N inputs, d latent dimensions, S Monte Carlo draws per component.

Notes
-----
*What the identity does and does not test.* The two right-hand terms telescope: for any
density r used in place of :math:`q_h` in *both* terms (the second averaged under the
mixture) the sum is still :math:`\mathbb E\,\mathrm{KL}`. What makes the first term the
mutual information is :math:`r = q_h` with every component, the sample's own included:
then :math:`0\le\log q_j(z)-\log q_h(z)\le\log N` pointwise (since
:math:`q_h\ge q_j/N`), so :math:`0\le I\le\log N`, and :math:`\mathrm{KL}(q_h\|p)\ge0`.
A wrong aggregate r gives :math:`I(r) = I + \mathrm{KL}(q_h\|r)` and lowers the second
term by the same amount; it is exposed by the log N bound (``max_pointwise_mi``), not
by the sum.

*Estimator.* Stratified Monte Carlo: S draws from each component; the I term uses one
draw set and the KL(q_h || p) term an independent one, so the two estimates are
independent. Each is unbiased for its term *of the sampled mixture*, with standard error

.. math::

    \widehat{\mathrm{se}}^2 = \frac{1}{N^2}\sum_j \frac{\hat v_j}{S},

:math:`\hat v_j` the within-component sample variance of the integrand. As estimates of
the population terms (mixture over all users and masks) :math:`\hat I` is the InfoNCE
lower bound (:math:`\mathbb E\hat I \le I_{\mathrm{pop}}`, and :math:`\hat I\le\log N`),
so :math:`\widehat{\mathrm{KL}}(q_h\|p)` is biased upward by the same amount; their sum
is unbiased. The log-densities of the mixture are N x (N S) Gaussian evaluations in
float64, chunked (memory ``chunk_size x N``).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.spatial.distance import cdist
from scipy.special import logsumexp

from radius.model.protocol import encode_masked as protocol_encode_masked

__all__ = [
    "AGGREGATES",
    "KLDecomposition",
    "kl_to_standard_normal",
    "gaussian_log_density",
    "mixture_log_density",
    "moment_matched_gaussian",
    "kl_decomposition",
    "mean_pairwise_w2",
    "per_input_mean_w2",
    "unit_activity",
    "active_units",
    "unit_information",
    "unit_kl",
    "unit_moments",
    "information_from_moments",
    "spearman",
    "encode_masked",
    "reconstruction_nll",
]

LOG_2PI = math.log(2.0 * math.pi)

# Aggregate posteriors ``kl_decomposition`` can use: the correct mixture, and two wrong
# ones kept as negative controls (leave-one-out mixture, moment-matched Gaussian).
AGGREGATES = ("mixture", "leave_one_out", "gaussian")


def _as_float_array(a: Any, name: str) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    arr = np.asarray(a)
    if arr.dtype.kind not in "fiu":
        raise TypeError(f"{name} must be a numeric array, got dtype {arr.dtype}")
    return arr.astype(np.float64, copy=False)


def _check_gaussians(mu: Any, logvar: Any, *, min_n: int = 1) -> tuple[np.ndarray, np.ndarray]:
    mu_a = _as_float_array(mu, "mu")
    lv_a = _as_float_array(logvar, "logvar")
    if mu_a.ndim != 2:
        raise ValueError(f"mu must be 2-D (N, d), got shape {mu_a.shape}")
    if mu_a.shape != lv_a.shape:
        raise ValueError(f"mu {mu_a.shape} and logvar {lv_a.shape} must have the same shape")
    if mu_a.shape[0] < min_n or mu_a.shape[1] < 1:
        raise ValueError(f"need at least {min_n} posteriors and d >= 1, got shape {mu_a.shape}")
    if not (np.all(np.isfinite(mu_a)) and np.all(np.isfinite(lv_a))):
        raise ValueError("mu and logvar must be finite")
    return mu_a, lv_a


def kl_to_standard_normal(mu: Any, logvar: Any) -> np.ndarray:
    r"""Closed-form KL of diagonal Gaussians to the prior :math:`\mathcal N(0, I)`.

    .. math:: \tfrac12\sum_k \big(e^{\ell_k} + m_k^2 - 1 - \ell_k\big)

    Parameters
    ----------
    mu, logvar : (N, d) means and log-variances.

    Returns
    -------
    (N,) float64 KL per posterior.
    """
    m, lv = _check_gaussians(mu, logvar)
    return 0.5 * np.sum(np.exp(lv) + m * m - 1.0 - lv, axis=1)


def gaussian_log_density(z: Any, mu: Any, logvar: Any) -> np.ndarray:
    r"""Row-matched diagonal Gaussian log-density :math:`\log\mathcal N(z_r; m_r, e^{\ell_r})`.

    Parameters
    ----------
    z, mu, logvar : (M, d) each (row r of z is evaluated under row r of mu/logvar).

    Returns
    -------
    (M,) float64.
    """
    m, lv = _check_gaussians(mu, logvar)
    zz = _as_float_array(z, "z")
    if zz.shape != m.shape:
        raise ValueError(f"z {zz.shape} must have the shape of mu {m.shape}")
    return -0.5 * np.sum((zz - m) ** 2 * np.exp(-lv) + lv + LOG_2PI, axis=1)


def mixture_log_density(
    z: Any,
    mu: Any,
    logvar: Any,
    *,
    exclude: Any | None = None,
    chunk_size: int = 1024,
) -> np.ndarray:
    r"""Log-density of the uniform mixture of N diagonal Gaussians at M points.

    .. math::

        \log q_h(z) = \operatorname{logsumexp}_k \log\mathcal N(z; m_k, \operatorname{diag}s_k^2)
        - \log N

    evaluated in float64 through the expansion
    :math:`\sum (z-m)^2/s^2 = z^2\cdot s^{-2} - 2 z\cdot (m s^{-2}) + m^2\cdot s^{-2}`
    (three matrix products per chunk of points).

    Parameters
    ----------
    z : (M, d) points.
    mu, logvar : (N, d) mixture components.
    exclude : optional (M,) component index per point to leave out (the leave-one-out
        mixture over the other N - 1 components; a *wrong* aggregate posterior, kept for
        negative controls).
    chunk_size : points per chunk (memory ``chunk_size x N`` float64).

    Returns
    -------
    (M,) float64.
    """
    m, lv = _check_gaussians(mu, logvar)
    zz = _as_float_array(z, "z")
    if zz.ndim != 2 or zz.shape[1] != m.shape[1]:
        raise ValueError(f"z must be (M, {m.shape[1]}), got shape {zz.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n, d = m.shape
    ex = None
    if exclude is not None:
        ex = np.asarray(exclude)
        if ex.shape != (zz.shape[0],) or ex.dtype.kind not in "iu":
            raise ValueError(f"exclude must be an integer array of shape ({zz.shape[0]},)")
        if n < 2:
            raise ValueError("leaving a component out needs at least 2 components")
        if np.any((ex < 0) | (ex >= n)):
            raise ValueError(f"exclude indices must lie in [0, {n})")
    prec = np.exp(-lv)  # (N, d)
    mp = m * prec  # (N, d)
    const = np.sum(m * mp, axis=1) + np.sum(lv, axis=1) + d * LOG_2PI  # (N,)
    log_norm = math.log(n - 1 if ex is not None else n)
    out = np.empty(zz.shape[0])
    for s in range(0, zz.shape[0], chunk_size):
        zc = zz[s : s + chunk_size]  # (c, d)
        quad = (zc * zc) @ prec.T - 2.0 * (zc @ mp.T)  # (c, N)
        logc = -0.5 * (quad + const[None, :])  # (c, N) log N(z; m_k, s_k^2)
        if ex is not None:
            logc[np.arange(zc.shape[0]), ex[s : s + chunk_size]] = -np.inf
        out[s : s + chunk_size] = logsumexp(logc, axis=1) - log_norm
    return out


def moment_matched_gaussian(mu: Any, logvar: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""Diagonal Gaussian with the mixture's mean and per-dimension variance.

    .. math::

        \bar m = \tfrac1N\sum_j m_j,\qquad
        \bar s^2 = \tfrac1N\sum_j (s_j^2 + m_j^2) - \bar m^2

    A *wrong* aggregate posterior (kept for negative controls).

    Returns
    -------
    mean (d,), logvar (d,).
    """
    m, lv = _check_gaussians(mu, logvar)
    mean = m.mean(axis=0)
    var = np.mean(np.exp(lv) + m * m, axis=0) - mean * mean
    return mean, np.log(np.maximum(var, np.finfo(np.float64).tiny))


@dataclass(frozen=True)
class KLDecomposition:
    """Monte Carlo estimates of the three terms of the beta-KL decomposition.

    Attributes
    ----------
    n_inputs : N, components of the aggregate posterior.
    n_samples : S, draws per component (per term).
    aggregate : the aggregate posterior used (``"mixture"`` is the correct one).
    e_kl : closed-form mean KL(q_j || p) (exact, no Monte Carlo error).
    e_kl_mc, e_kl_mc_se : Monte Carlo estimate of the same (draw set of the I term).
    mutual_info, mutual_info_se : estimate of I_q(X_h; Z) and its standard error.
    kl_aggregate, kl_aggregate_se : estimate of KL(q_h || p) and its standard error.
    max_pointwise_mi : largest sampled log q_j(z) - log q_h(z) (<= log N for the mixture).
    log_n : log N.
    mi_per_input, kl_aggregate_per_input : (N,) each component's stratum mean of the I
        and KL(q_h || p) integrands; their means are ``mutual_info`` and ``kl_aggregate``
        (both terms are averages over the components, so they split per input, and per
        user by averaging a user's masks: what the sweep's paired intervals resample).
    """

    n_inputs: int
    n_samples: int
    aggregate: str
    e_kl: float
    e_kl_mc: float
    e_kl_mc_se: float
    mutual_info: float
    mutual_info_se: float
    kl_aggregate: float
    kl_aggregate_se: float
    max_pointwise_mi: float
    log_n: float
    mi_per_input: np.ndarray | None = field(default=None, repr=False, compare=False)
    kl_aggregate_per_input: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def gap(self) -> float:
        """E KL - (I + KL(q_h || p)); zero in expectation."""
        return self.e_kl - (self.mutual_info + self.kl_aggregate)

    @property
    def gap_se(self) -> float:
        """Standard error of ``gap`` (the two terms use independent draws)."""
        return math.hypot(self.mutual_info_se, self.kl_aggregate_se)

    def to_dict(self) -> dict[str, Any]:
        """Scalars only (the per-input arrays are left out)."""
        d = {k: v for k, v in asdict(self).items() if not k.endswith("_per_input")}
        return {**d, "gap": self.gap, "gap_se": self.gap_se}


def _stratified_mean(values: np.ndarray) -> tuple[float, float]:
    """Mean and standard error of an (N, S) stratified sample (S draws per stratum)."""
    n, s = values.shape
    var = values.var(axis=1, ddof=1)  # (N,)
    return float(values.mean()), float(math.sqrt(max(var.sum(), 0.0) / s) / n)


def kl_decomposition(
    mu: Any,
    logvar: Any,
    *,
    n_samples: int = 4,
    seed: int | np.random.Generator = 0,
    aggregate: str = "mixture",
    chunk_size: int = 1024,
) -> KLDecomposition:
    r"""Estimate :math:`\mathbb E\,\mathrm{KL} = I_q(X_h;Z) + \mathrm{KL}(q_h\|p)` (beta-KL claim).

    .. math::

        \hat I = \frac1{NS}\sum_{j,s} \big[\log q_j(z_{js}) - \log q_h(z_{js})\big],\quad
        \widehat{\mathrm{KL}} = \frac1{NS}\sum_{j,s} \big[\log q_h(z'_{js}) - \log p(z'_{js})\big],

    :math:`z_{js}, z'_{js}\sim q_j` independent (stratified draws of the mixture).

    Parameters
    ----------
    mu, logvar : (N, d) posteriors of the N sampled inputs.
    n_samples : S >= 2 draws per component and term (2 at least, for the standard error).
    seed : seed or generator of the draws.
    aggregate : ``"mixture"`` (the aggregate posterior, every component included),
        ``"leave_one_out"`` (drops the draw's own component) or ``"gaussian"``
        (moment-matched single Gaussian); the last two are wrong on purpose (negative
        controls) and are used in both terms.
    chunk_size : points per chunk of the mixture density.

    Returns
    -------
    KLDecomposition
    """
    m, lv = _check_gaussians(mu, logvar, min_n=2)
    if not isinstance(n_samples, (int, np.integer)) or n_samples < 2:
        raise ValueError(f"n_samples must be an integer >= 2, got {n_samples!r}")
    if aggregate not in AGGREGATES:
        raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    n, d = m.shape
    s = int(n_samples)
    sd = np.exp(0.5 * lv)  # (N, d)
    own = np.repeat(np.arange(n), s)  # (N S,) component of each draw

    def draws() -> np.ndarray:
        return (m[:, None, :] + sd[:, None, :] * rng.standard_normal((n, s, d))).reshape(n * s, d)

    if aggregate == "gaussian":
        g_mean, g_lv = moment_matched_gaussian(m, lv)

        def log_agg(z: np.ndarray) -> np.ndarray:
            return gaussian_log_density(
                z, np.broadcast_to(g_mean, z.shape), np.broadcast_to(g_lv, z.shape)
            )
    else:
        excl = own if aggregate == "leave_one_out" else None

        def log_agg(z: np.ndarray) -> np.ndarray:
            return mixture_log_density(z, m, lv, exclude=excl, chunk_size=chunk_size)

    def log_prior(z: np.ndarray) -> np.ndarray:
        return -0.5 * (np.sum(z * z, axis=1) + d * LOG_2PI)

    z_a = draws()  # (N S, d) for the I term
    log_own = gaussian_log_density(z_a, m[own], lv[own])  # (N S,)
    pointwise_mi = log_own - log_agg(z_a)  # (N S,)
    mi, mi_se = _stratified_mean(pointwise_mi.reshape(n, s))
    ekl_mc, ekl_mc_se = _stratified_mean((log_own - log_prior(z_a)).reshape(n, s))
    z_b = draws()  # (N S, d) independent draws for the KL(q_h || p) term
    kla_integrand = (log_agg(z_b) - log_prior(z_b)).reshape(n, s)
    kla, kla_se = _stratified_mean(kla_integrand)
    return KLDecomposition(
        n_inputs=n,
        n_samples=s,
        aggregate=aggregate,
        e_kl=float(kl_to_standard_normal(m, lv).mean()),
        e_kl_mc=ekl_mc,
        e_kl_mc_se=ekl_mc_se,
        mutual_info=mi,
        mutual_info_se=mi_se,
        kl_aggregate=kla,
        kl_aggregate_se=kla_se,
        max_pointwise_mi=float(pointwise_mi.max()),
        log_n=math.log(n),
        mi_per_input=pointwise_mi.reshape(n, s).mean(axis=1),
        kl_aggregate_per_input=kla_integrand.mean(axis=1),
    )


def mean_pairwise_w2(
    mu: Any,
    logvar: Any,
    *,
    groups: Any | None = None,
    chunk_size: int = 1024,
) -> tuple[float, int]:
    r"""Mean 2-Wasserstein distance over pairs of diagonal Gaussian posteriors.

    .. math::

        W_2(q_i, q_j) = \sqrt{\|m_i - m_j\|^2 + \|s_i - s_j\|^2}
        = \big\|[m_i, s_i] - [m_j, s_j]\big\|_2

    (closed form for diagonal Gaussians: the Euclidean distance of the stacked vectors).

    Parameters
    ----------
    mu, logvar : (N, d).
    groups : optional (N,) labels (e.g. the user of each masked input); pairs within a
        group are skipped.
    chunk_size : rows per chunk (memory ``chunk_size x N``).

    Returns
    -------
    (mean W2 over the pairs i < j, number of pairs); (nan, 0) when there is no pair.
    """
    m, lv = _check_gaussians(mu, logvar)
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    n = m.shape[0]
    g = None
    if groups is not None:
        g = np.asarray(groups)
        if g.shape != (n,):
            raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    v = np.concatenate([m, np.exp(0.5 * lv)], axis=1)  # (N, 2d)
    total, count = 0.0, 0
    for s in range(0, n, chunk_size):
        dist = cdist(v[s : s + chunk_size], v)  # (c, N)
        rows = np.arange(s, min(s + chunk_size, n))[:, None]
        keep = np.arange(n)[None, :] > rows  # (c, N) pairs i < j
        if g is not None:
            keep &= g[s : s + chunk_size][:, None] != g[None, :]
        total += float(dist[keep].sum())
        count += int(keep.sum())
    return (total / count if count else float("nan")), count


def per_input_mean_w2(
    mu: Any, logvar: Any, *, groups: Any | None = None, chunk_size: int = 1024
) -> np.ndarray:
    r"""(N,) mean W2 from each posterior to the others (other groups only when ``groups``).

    :math:`\bar W_i = \frac{1}{|\{j: g_j \ne g_i\}|}\sum_{j: g_j \ne g_i} W_2(q_i, q_j)`;
    averaging :math:`\bar W_i` over inputs weights every pair twice, so its mean equals
    :func:`mean_pairwise_w2` when every input has the same number of partners (equal
    group sizes). NaN for an input without partners.
    """
    m, lv = _check_gaussians(mu, logvar)
    n = m.shape[0]
    g = np.arange(n) if groups is None else np.asarray(groups)
    if g.shape != (n,):
        raise ValueError(f"groups must have shape ({n},), got {g.shape}")
    v = np.concatenate([m, np.exp(0.5 * lv)], axis=1)  # (N, 2d)
    out = np.empty(n)
    for s in range(0, n, chunk_size):
        dist = cdist(v[s : s + chunk_size], v)  # (c, N)
        keep = g[s : s + chunk_size][:, None] != g[None, :]
        cnt = keep.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[s : s + chunk_size] = np.where(cnt > 0, (dist * keep).sum(axis=1) / cnt, np.nan)
    return out


def unit_activity(mu: Any) -> np.ndarray:
    r"""Per-dimension activity :math:`A_k = \operatorname{Var}_x\,\mathbb E_{q(z|x)}[z_k]`.

    Parameters
    ----------
    mu : (N, d) posterior means of N inputs (N >= 2).

    Returns
    -------
    (d,) sample variances (ddof = 1).
    """
    m = _as_float_array(mu, "mu")
    if m.ndim != 2 or m.shape[0] < 2:
        raise ValueError(f"mu must be 2-D with at least 2 rows, got shape {m.shape}")
    return m.var(axis=0, ddof=1)


def active_units(mu: Any, *, threshold: float = 0.01) -> int:
    r"""Number of active latent units: :math:`\#\{k : \operatorname{Var}_x \mu_k(x) > \delta\}`.

    Burda et al. (2016)'s criterion with :math:`\delta` = ``threshold`` (0.01).
    """
    if not threshold >= 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    return int(np.sum(unit_activity(mu) > threshold))


def unit_information(mu: Any, logvar: Any) -> np.ndarray:
    r"""Per-unit information bound :math:`I^G_k` in nats (the scale-free collapse rule).

    For latent unit k over N inputs with posteriors :math:`\mathcal N(m_{jk}, s^2_{jk})`
    the aggregate :math:`q_{h,k}` (the uniform mixture) has variance
    :math:`v_k = \operatorname{Var}_j m_{jk} + \overline{s^2_{k}}`; a Gaussian has the
    largest entropy at a given variance, so

    .. math::

        I(X_h; Z_k) = h(q_{h,k}) - \tfrac1N\sum_j h(q_{jk})
        \le I^G_k = \tfrac12\log v_k - \tfrac12\,\overline{\log s^2_{k}},

    with equality when the aggregate is Gaussian and :math:`s_{jk}` constant (then
    :math:`I^G_k = \tfrac12\log(1 + \operatorname{Var} m_k / s_k^2)`, a signal-to-noise
    ratio). :math:`I^G_k` is unchanged by :math:`z_k \to a z_k + c` (a reparametrisation
    the decoder absorbs), unlike Burda et al.'s :math:`\operatorname{Var}_x m_k > 0.01`.
    The per-unit KL to the prior splits exactly (Pythagoras for the moment-matched
    Gaussian) as

    .. math::

        \tfrac1N\sum_j \mathrm{KL}(q_{jk}\,\|\,\mathcal N(0,1)) = I^G_k
        + \mathrm{KL}(\mathcal N(\bar m_k, v_k)\,\|\,\mathcal N(0, 1)),

    so the per-unit KL rule adds the unit's scale mismatch with the prior to the
    information (:func:`unit_kl`). Variances here are population variances (ddof 0).

    Parameters
    ----------
    mu, logvar : (N, d) posteriors of N inputs (N >= 2).

    Returns
    -------
    (d,) float64, >= 0 up to rounding.
    """
    m, lv = _check_gaussians(mu, logvar, min_n=2)
    v = m.var(axis=0) + np.exp(lv).mean(axis=0)
    return 0.5 * (np.log(v) - lv.mean(axis=0))


def unit_kl(mu: Any, logvar: Any) -> np.ndarray:
    r"""(d,) per-unit KL to the prior averaged over inputs,
    :math:`\tfrac1N\sum_j \tfrac12(s_{jk}^2 + m_{jk}^2 - 1 - \log s_{jk}^2)` (nats);
    it depends on the latent scale (:func:`unit_information`)."""
    m, lv = _check_gaussians(mu, logvar)
    return 0.5 * np.mean(np.exp(lv) + m * m - 1.0 - lv, axis=0)


def unit_moments(mu: Any, logvar: Any, groups: Any) -> tuple[np.ndarray, np.ndarray]:
    r"""Per-group sums of the unit statistics, for bootstrapping :math:`I^G_k` over users.

    Returns ``(sums, counts)``: sums (G, 4, d) of :math:`m, m^2, s^2, \log s^2` over each
    group's inputs (groups in order of first appearance) and counts (G,) inputs per
    group. :func:`information_from_moments` turns weighted sums back into
    :math:`I^G_k` (with unit weights it equals :func:`unit_information`).
    """
    m, lv = _check_gaussians(mu, logvar, min_n=2)
    g = np.asarray(groups)
    if g.shape != (m.shape[0],):
        raise ValueError(f"groups must have shape ({m.shape[0]},), got {g.shape}")
    _, first, inv = np.unique(g, return_index=True, return_inverse=True)
    order = np.argsort(first)  # groups in order of first appearance
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    idx = rank[inv]
    n_g = order.size
    stats = np.stack([m, m * m, np.exp(lv), lv], axis=1)  # (N, 4, d)
    sums = np.zeros((n_g, 4, m.shape[1]))
    np.add.at(sums, idx, stats)
    return sums, np.bincount(idx, minlength=n_g).astype(np.float64)


def information_from_moments(
    sums: np.ndarray, counts: np.ndarray, weights: Any = None
) -> np.ndarray:
    r"""(d,) :math:`I^G_k` from :func:`unit_moments` output with group ``weights``
    (G,) (bootstrap multiplicities; None: every group once)."""
    w = np.ones(sums.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    n = float(w @ counts)
    if not n > 0:
        raise ValueError("no inputs: the group weights sum to zero")
    tot = np.tensordot(w, sums, axes=(0, 0)) / n  # (4, d): E m, E m^2, E s^2, E log s^2
    var_m = np.maximum(tot[1] - tot[0] ** 2, 0.0)
    return 0.5 * (np.log(var_m + tot[2]) - tot[3])


def spearman(x: Any, y: Any) -> float:
    """Spearman rank correlation of two 1-D arrays (average ranks for ties); NaN when
    either is constant or has fewer than 2 points."""
    from scipy.stats import rankdata

    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"x {a.shape} and y {b.shape} must have one length")
    if a.size < 2 or not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        return float("nan")
    ra, rb = rankdata(a) - (a.size + 1) / 2, rankdata(b) - (b.size + 1) / 2
    den = math.sqrt(float(ra @ ra) * float(rb @ rb))
    return float(ra @ rb) / den if den > 0 else float("nan")


def encode_masked(
    model: Any,
    x: sp.csr_matrix,
    users: Any,
    *,
    n_masks: int,
    keep_rate: float,
    seed: int | np.random.Generator = 0,
    chunk_size: int = 512,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Posteriors of masked inputs :math:`x_h = x_u\odot b`, :math:`b\sim\mathrm{Bern}(\rho)^I`.

    Parameters
    ----------
    model : a VAEModel; encoded through ``radius.model.protocol.encode_masked(model, x, b)``
        so the model's own input convention decides what its encoder sees (the mask is
        drawn on the support of x only: off the support x_i = 0 and b_i does not matter
        to x * b, so b_i = 1 there).
    x : (U, I) CSR interactions.
    users : (n,) row indices of the users to encode.
    n_masks : masks per user (N = n * n_masks inputs, user-major).
    keep_rate : rho, the keep probability.
    seed : seed or generator of the masks.
    chunk_size : inputs densified and encoded at a time.

    Returns
    -------
    mu (N, d), logvar (N, d) float64 and groups (N,) (the user of each input).
    """
    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy sparse matrix, got {type(x).__name__}")
    if n_masks < 1:
        raise ValueError(f"n_masks must be >= 1, got {n_masks}")
    if not (0.0 < keep_rate <= 1.0):
        raise ValueError(f"keep_rate must be in (0, 1], got {keep_rate}")
    u = np.asarray(users, dtype=np.int64)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    groups = np.repeat(u, n_masks)  # (N,)
    rows = sp.csr_matrix(x, dtype=np.float32)[groups]  # (N, I) clean rows
    keep = (rng.random(rows.nnz) < keep_rate).astype(np.float32)  # mask on the support
    drop = rows.copy()
    drop.data = 1.0 - keep  # 1 where a stored entry is masked out
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    mus, lvs = [], []
    with torch.no_grad():
        for s in range(0, rows.shape[0], chunk_size):
            dense = torch.as_tensor(rows[s : s + chunk_size].toarray(), dtype=dtype, device=device)
            b = 1.0 - torch.as_tensor(
                drop[s : s + chunk_size].toarray(), dtype=dtype, device=device
            )  # (c, I) keep mask: b_i ~ Bernoulli(rho) on S_x, 1 off it (x_i = 0 there)
            mu_c, lv_c = protocol_encode_masked(model, dense, b)  # (c, d) each
            mus.append(mu_c.double().cpu().numpy())
            lvs.append(lv_c.double().cpu().numpy())
    return np.concatenate(mus), np.concatenate(lvs), groups


def reconstruction_nll(
    model: Any,
    x: sp.csr_matrix,
    groups: Any,
    mu: Any,
    logvar: Any,
    *,
    seed: int | np.random.Generator = 0,
    chunk_size: int = 512,
) -> np.ndarray:
    r"""(N,) reconstruction term of the beta-ELBO, one posterior draw per input.

    .. math::

        R_j = -\sum_i x_{u_j i}\,\log\operatorname{softmax}(f_\theta(z_j))_i,\qquad
        z_j = m_j + s_j\odot\varepsilon_j,\ \varepsilon_j\sim\mathcal N(0, I),

    for input j of user :math:`u_j` (``groups``, e.g. from :func:`encode_masked`): the
    *clean* row is reconstructed from the posterior of the masked input, as in training.
    Averaged over a user's masks it is an unbiased estimate of the user's expected
    reconstruction loss. Memory: ``chunk_size x I`` floats.
    """
    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy sparse matrix, got {type(x).__name__}")
    m, lv = _check_gaussians(mu, logvar)
    g = np.asarray(groups, dtype=np.int64)
    if g.shape != (m.shape[0],):
        raise ValueError(f"groups must have shape ({m.shape[0]},), got {g.shape}")
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    z = m + np.exp(0.5 * lv) * rng.standard_normal(m.shape)  # (N, d)
    rows = sp.csr_matrix(x, dtype=np.float32)[g]  # (N, I)
    param = next(iter(model.parameters()), None) if hasattr(model, "parameters") else None
    device = param.device if param is not None else torch.device("cpu")
    dtype = param.dtype if param is not None else torch.float32
    out = np.empty(m.shape[0])
    with torch.no_grad():
        for s in range(0, m.shape[0], chunk_size):
            zc = torch.as_tensor(z[s : s + chunk_size], dtype=dtype, device=device)
            logp = torch.log_softmax(model.decode(zc), dim=-1)  # (c, I)
            xc = torch.as_tensor(rows[s : s + chunk_size].toarray(), dtype=dtype, device=device)
            out[s : s + chunk_size] = -(xc * logp).sum(dim=-1).double().cpu().numpy()
    return out
