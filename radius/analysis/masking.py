r"""Masking laws: stochastic contraction and expansion of user distances (T2.6).

Every user u draws an independent keep-mask :math:`b_u \in \{0,1\}^I`, i.i.d.
Bernoulli(:math:`\rho`) per item; the masked input is :math:`x_u \odot b_u`.

Pair law (T2.6, a reconstruction). For users u, v with supports :math:`S_u, S_v`,
clean distance :math:`d = |S_u \triangle S_v|` and overlap :math:`s = |S_u \cap S_v|`,
the masked Hamming distance :math:`D = \|x_u b_u - x_v b_v\|_1` is

.. math::

    D \sim \operatorname{Bin}(d, \rho) + \operatorname{Bin}(s, q), \qquad
    q = 2\rho(1-\rho), \qquad
    \mathbb E D = \rho d + q s, \qquad
    \operatorname{Var} D = d\rho(1-\rho) + s q (1-q),

the two terms independent: an item of exactly one support disagrees iff its owner
keeps it, a shared item iff exactly one of the two keeps it. Masking is therefore not
a uniform contraction by :math:`\rho`: shared items add :math:`q s` expected
disagreement, so near neighbours (large s) are pushed apart relative to distant pairs.

Tails: with :math:`n = d + s` independent Bernoulli terms and :math:`\mu = \mathbb E D`,

.. math::

    P(D \ge \mu + t),\ P(D \le \mu - t) &\le e^{-2t^2/n}
        && \text{(Hoeffding)}\\
    P(D \ge (1+\delta)\mu) &\le e^{-\mu[(1+\delta)\ln(1+\delta) - \delta]}
        && \text{(Chernoff)}\\
    P(D \le (1-\delta)\mu) &\le e^{-\mu[(1-\delta)\ln(1-\delta) + \delta]} \\
    P(D \ge \mu + t) &\le e^{-n\,\mathrm{kl}(\bar p + t/n \,\|\, \bar p)}, \ \bar p = \mu / n
        && \text{(Chernoff-Hoeffding)}

with :math:`\delta = t/\mu` and :math:`\mathrm{kl}` the Bernoulli relative entropy
(Hoeffding 1963, Thm. 1; the lower tail by symmetry).

Triple law (neighbourhood drift). For u, a near neighbour v and a far user w, with
three independent masks (u's mask is shared by both distances),
:math:`\Delta = D_{uw} - D_{uv} = \sum_i \xi_i`, independent per-item terms in
:math:`[-1, 1]` whose law depends only on the item's pattern
:math:`(x_{ui}, x_{vi}, x_{wi})`, coded :math:`c = x_u + 2x_v + 4x_w \in 1..7`:

==== ============ ================ ================ =========
code pattern      P(xi = +1)       P(xi = -1)       range c_i
==== ============ ================ ================ =========
1    (1, 0, 0)    0                0                0
2    (0, 1, 0)    0                rho              1
3    (1, 1, 0)    rho^2            rho (1 - rho)    2
4    (0, 0, 1)    rho              0                1
5    (1, 0, 1)    rho (1 - rho)    rho^2            2
6    (0, 1, 1)    rho (1 - rho)    rho (1 - rho)    2
7    (1, 1, 1)    rho (1 - rho)    rho (1 - rho)    2
==== ============ ================ ================ =========

So :math:`\Delta` is a convolution of at most six binomial-type laws (one per code;
codes 6 and 7 share a law), the rank-flip probability :math:`P(\Delta \le 0)` is
exact, and with :math:`m = \mathbb E\Delta > 0` Hoeffding gives
:math:`P(\Delta \le 0) \le \exp(-2 m^2 / \sum_i c_i^2)`.

Exact laws are computed by direct convolution of non-negative arrays (no FFT), so
tail probabilities keep their relative accuracy far out in the tails and can be
compared with bounds exactly. Monte Carlo (:func:`simulate_pair_distance`,
:func:`simulate_triple_delta`) draws the masks on the actual item sets and never
uses the formulas, so it is an independent check of them.

Glossary: d clean distance, s overlap, rho keep rate, q shared-item flip rate,
t deviation from the mean, K number of cases (pairs or triples), E number of
(case, item) entries, R number of keep rates.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import scipy.sparse as sp
from scipy import stats

__all__ = [
    "BOUND_KINDS",
    "PAIR_LAWS",
    "TRIPLE_LAWS",
    "LatticeLaw",
    "MaskEntries",
    "shared_flip_rate",
    "pair_mean",
    "pair_var",
    "relative_expansion",
    "pair_law",
    "tail_threshold",
    "pair_tail",
    "pair_tail_bound",
    "pair_entries",
    "pair_entries_from_counts",
    "pair_counts",
    "triple_entries",
    "triple_entries_from_counts",
    "triple_pattern_counts",
    "triple_pair_counts",
    "triple_term_probs",
    "triple_mean",
    "triple_law",
    "triple_flip_prob",
    "triple_flip_bound",
    "simulate_pair_distance",
    "simulate_triple_delta",
    "clopper_pearson",
    "sample_near_pairs",
    "sample_random_pairs",
    "sample_triples",
]

PAIR_LAWS = ("masked", "uniform", "contraction")
TRIPLE_LAWS = ("masked", "independent")
BOUND_KINDS = ("hoeffding", "chernoff", "kl")

# Per-item range c_i of the triple term xi_i, by pattern code 1..7 (index 0 unused).
_TRIPLE_RANGE = np.array([0, 0, 1, 2, 1, 2, 2, 2], dtype=np.float64)
_GRID_BUDGET = 1 << 22  # entries of one vectorised convolution grid
_SNAP = 1e-9  # relative distance at which mean +- t is taken to be an integer


# --------------------------------------------------------------------------- validation
def _check_rho(rho: float) -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float, np.floating, np.integer)):
        raise TypeError(f"rho must be a real number, got {type(rho).__name__}")
    rho = float(rho)
    if not (0.0 < rho <= 1.0):
        raise ValueError(f"rho must be in (0, 1], got {rho!r}")
    return rho


def _check_counts(name: str, a: object) -> np.ndarray:
    arr = np.asarray(a)
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise ValueError(f"{name} must hold non-negative integers")
        arr = arr.astype(np.int64)
    elif arr.dtype.kind not in "iu":
        raise TypeError(f"{name} must be an integer array, got dtype {arr.dtype}")
    if np.any(arr < 0):
        raise ValueError(f"{name} must hold non-negative integers")
    return arr.astype(np.int64)


def _check_t(t: object) -> np.ndarray:
    arr = np.asarray(t, dtype=np.float64)
    if not np.all(np.isfinite(arr)) or np.any(arr < 0):
        raise ValueError("t must be finite and non-negative")
    return arr


def _check_side(side: str) -> None:
    if side not in ("upper", "lower"):
        raise ValueError(f"side must be 'upper' or 'lower', got {side!r}")


def _check_csr(x: object) -> sp.csr_matrix:
    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy.sparse matrix, got {type(x).__name__}")
    x = sp.csr_matrix(x)
    if x.nnz and not np.all(x.data == 1):
        raise ValueError("x must be binary (stored values all 1)")
    return x


def _check_users(name: str, idx: object, n_users: int) -> np.ndarray:
    arr = np.asarray(idx)
    if arr.dtype.kind not in "iu" or arr.ndim != 1:
        raise TypeError(f"{name} must be a 1-d integer array")
    if arr.size and (arr.min() < 0 or arr.max() >= n_users):
        raise ValueError(f"{name} must index rows 0..{n_users - 1}")
    return arr.astype(np.int64)


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise TypeError(f"seed must be an int or numpy Generator, got {type(seed).__name__}")
    return np.random.default_rng(int(seed))


# --------------------------------------------------------------------------- lattice laws
@dataclass(frozen=True)
class LatticeLaw:
    r"""Laws of K integer random variables, padded into one array.

    :math:`P(X_k = \mathrm{lo}_k + j) = \mathrm{pmf}_{kj}` for
    :math:`0 \le j < \mathrm{size}_k`; entries at and beyond ``size`` are 0.

    Attributes
    ----------
    pmf : (K, L) float64, non-negative.
    lo : (K,) int64, smallest support point.
    size : (K,) int64, support length (1 <= size <= L).
    """

    pmf: np.ndarray
    lo: np.ndarray
    size: np.ndarray

    def __len__(self) -> int:
        return int(self.pmf.shape[0])

    def take(self, idx: np.ndarray) -> LatticeLaw:
        """The laws of cases ``idx`` (K',)."""
        size = self.size[idx]
        width = int(size.max()) if size.size else 1
        return LatticeLaw(self.pmf[idx, :width], self.lo[idx], size)

    def total(self) -> np.ndarray:
        """(K,) total mass (1 up to rounding)."""
        return self.pmf.sum(axis=1)

    def mean(self) -> np.ndarray:
        """(K,) mean."""
        j = np.arange(self.pmf.shape[1])
        return self.lo + self.pmf @ j

    def var(self) -> np.ndarray:
        """(K,) variance (computed about the support start, then centred)."""
        j = np.arange(self.pmf.shape[1], dtype=np.float64)
        m1 = self.pmf @ j
        return self.pmf @ (j * j) - m1 * m1

    def _index(self, k: np.ndarray) -> np.ndarray:
        return np.broadcast_to(np.asarray(k, dtype=np.int64), self.lo.shape) - self.lo

    def prob_le(self, k: np.ndarray) -> np.ndarray:
        """(K,) :math:`P(X_k \\le k_k)`, summed from the left (accurate lower tails)."""
        j = self._index(k)
        cdf = np.cumsum(self.pmf, axis=1)
        jj = np.clip(j, 0, self.pmf.shape[1] - 1)
        out = np.take_along_axis(cdf, jj[:, None], axis=1)[:, 0]
        return np.where(j < 0, 0.0, out)

    def prob_ge(self, k: np.ndarray) -> np.ndarray:
        """(K,) :math:`P(X_k \\ge k_k)`, summed from the right (accurate upper tails)."""
        j = self._index(k)
        sf = np.cumsum(self.pmf[:, ::-1], axis=1)[:, ::-1]
        jj = np.clip(j, 0, self.pmf.shape[1] - 1)
        out = np.take_along_axis(sf, jj[:, None], axis=1)[:, 0]
        out = np.where(j <= 0, sf[:, 0], out)
        return np.where(j >= self.size, 0.0, out)

    def prob_eq(self, k: np.ndarray) -> np.ndarray:
        """(K,) :math:`P(X_k = k_k)`."""
        j = self._index(k)
        jj = np.clip(j, 0, self.pmf.shape[1] - 1)
        out = np.take_along_axis(self.pmf, jj[:, None], axis=1)[:, 0]
        return np.where((j < 0) | (j >= self.size), 0.0, out)


def _binomial_law(n: np.ndarray, p: np.ndarray | float) -> LatticeLaw:
    """Bin(n_k, p_k) for each case; n (K,) int64."""
    n = np.asarray(n, dtype=np.int64)
    p = np.broadcast_to(np.asarray(p, dtype=np.float64), n.shape)
    width = int(n.max()) + 1 if n.size else 1
    j = np.arange(width)
    pmf = stats.binom.pmf(j[None, :], n[:, None], p[:, None])  # (K, L)
    pmf = np.where(j[None, :] <= n[:, None], pmf, 0.0)
    return LatticeLaw(pmf, np.zeros(n.shape, dtype=np.int64), n + 1)


def _negate(law: LatticeLaw) -> LatticeLaw:
    """Law of -X (each row reversed within its support)."""
    width = law.pmf.shape[1]
    idx = law.size[:, None] - 1 - np.arange(width)[None, :]  # (K, L)
    pmf = np.where(idx >= 0, np.take_along_axis(law.pmf, np.clip(idx, 0, None), axis=1), 0.0)
    return LatticeLaw(pmf, -(law.lo + law.size - 1), law.size.copy())


def _chunks(work: np.ndarray, budget: int) -> list[np.ndarray]:
    """Split case indices 0..K-1 into contiguous groups of about ``budget`` total work."""
    start = np.concatenate([[0], np.cumsum(work)[:-1]])
    group = start // max(budget, 1)
    _, first = np.unique(group, return_index=True)
    return np.split(np.arange(work.size), first[1:])


def _ragged_grid(na: np.ndarray, nb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All (case, i, j) with i < na[case], j < nb[case], as flat (T,) arrays."""
    g = na * nb
    total = int(g.sum())
    case = np.repeat(np.arange(na.size), g)
    within = np.arange(total) - np.repeat(np.cumsum(g) - g, g)
    i = within // nb[case]
    j = within - i * nb[case]
    return case, i, j


def _convolve(a: LatticeLaw, b: LatticeLaw, *, budget: int = _GRID_BUDGET) -> LatticeLaw:
    r"""Law of X + Y, X ~ a, Y ~ b independent (per case), by direct convolution.

    :math:`P(X+Y = k) = \sum_j P(X = k - j) P(Y = j)`, a sum of non-negative terms
    accumulated with ``np.bincount`` over a ragged (case, i, j) grid, so the result
    keeps its relative accuracy in the tails. Work is :math:`\sum_k |a_k| |b_k|`.
    """
    size = a.size + b.size - 1  # (K,)
    width = int(size.max()) if size.size else 1
    pmf = np.zeros((a.pmf.shape[0], width))
    for idx in _chunks(a.size * b.size, budget):
        if idx.size == 0:
            continue
        case, i, j = _ragged_grid(a.size[idx], b.size[idx])
        w = a.pmf[idx[case], i] * b.pmf[idx[case], j]
        flat = np.bincount(case * width + i + j, weights=w, minlength=idx.size * width)
        pmf[idx] = flat.reshape(idx.size, width)
    return LatticeLaw(pmf, a.lo + b.lo, size)


def _trinomial_sum_law(
    n: np.ndarray, q_minus: float, q_plus: float, *, budget: int = _GRID_BUDGET
) -> LatticeLaw:
    r"""Law of a sum of n_k i.i.d. terms in {-1, 0, +1} with P(-1) = q_-, P(+1) = q_+.

    With :math:`M \sim \operatorname{Bin}(n, q_- + q_+)` non-zero terms and
    :math:`A \mid M \sim \operatorname{Bin}(M, q_+/(q_- + q_+))` of them +1, the sum is
    :math:`2A - M`: :math:`P(S = 2a - m) \mathrel{+}= P(M = m) P(A = a \mid M = m)`.
    """
    n = np.asarray(n, dtype=np.int64)
    q_nz = q_minus + q_plus
    r = q_plus / q_nz if q_nz > 0 else 0.0
    size = 2 * n + 1
    width = int(size.max()) if size.size else 1
    pmf = np.zeros((n.size, width))
    for idx in _chunks((n + 1) ** 2, budget):
        if idx.size == 0:
            continue
        case, m, a = _ragged_grid(n[idx] + 1, n[idx] + 1)
        keep = a <= m
        case, m, a = case[keep], m[keep], a[keep]
        w = stats.binom.pmf(m, n[idx][case], q_nz) * stats.binom.pmf(a, m, r)
        flat = np.bincount(
            case * width + 2 * a - m + n[idx][case], weights=w, minlength=idx.size * width
        )
        pmf[idx] = flat.reshape(idx.size, width)
    return LatticeLaw(pmf, -n, size)


# --------------------------------------------------------------------------- pair law
def shared_flip_rate(rho: float) -> float:
    r"""Probability :math:`q = 2\rho(1-\rho)` that a shared item disagrees after masking."""
    rho = _check_rho(rho)
    return 2.0 * rho * (1.0 - rho)


def pair_mean(d: np.ndarray, s: np.ndarray, rho: float) -> np.ndarray:
    r""":math:`\mathbb E D = \rho d + 2\rho(1-\rho) s` (T2.6), broadcast over d, s."""
    d, s = _check_counts("d", d), _check_counts("s", s)
    rho = _check_rho(rho)
    return rho * d + shared_flip_rate(rho) * s


def pair_var(d: np.ndarray, s: np.ndarray, rho: float) -> np.ndarray:
    r""":math:`\operatorname{Var} D = d\rho(1-\rho) + s q(1-q)`, :math:`q = 2\rho(1-\rho)`."""
    d, s = _check_counts("d", d), _check_counts("s", s)
    rho = _check_rho(rho)
    q = shared_flip_rate(rho)
    return d * rho * (1.0 - rho) + s * q * (1.0 - q)


def relative_expansion(
    d: np.ndarray, s: np.ndarray, rho: float, *, flip_scale: float = 1.0
) -> np.ndarray:
    r"""Expected masked distance over the uniform contraction, :math:`\mathbb E D / (\rho d)
    = 1 + 2(1-\rho)\, s / d` (T2.6), for pairs with :math:`d > 0` (NaN where d = 0).

    A value above 1 is the expansion shared items add; the uniform-contraction law
    (:math:`D \sim \mathrm{Bin}(d, \rho)`) gives exactly 1. ``flip_scale`` multiplies the
    shared-item flip rate q (1: the masking law; 0: the uniform contraction), for power
    tables.
    """
    d, s = _check_counts("d", d), _check_counts("s", s)
    rho = _check_rho(rho)
    if not 0.0 <= flip_scale:
        raise ValueError(f"flip_scale must be >= 0, got {flip_scale}")
    num = rho * d + flip_scale * shared_flip_rate(rho) * s
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(d > 0, num / (rho * np.maximum(d, 1)), np.nan)


def pair_law(
    d: np.ndarray,
    s: np.ndarray,
    rho: float,
    *,
    law: Literal["masked", "uniform", "contraction"] = "masked",
) -> LatticeLaw:
    r"""Exact law of the masked distance D of K pairs (T2.6).

    .. math::

        D \sim \operatorname{Bin}(d, \rho) * \operatorname{Bin}(s, 2\rho(1-\rho))

    computed once per distinct (d, s) by direct convolution.

    Parameters
    ----------
    d, s : (K,) non-negative integers: clean distance and overlap of each pair.
    rho : keep rate in (0, 1].
    law : ``"masked"`` is the law above. The others are deliberately wrong laws kept
        as negative controls: ``"uniform"`` is a uniform contraction
        :math:`\operatorname{Bin}(d + s, \rho)`, ``"contraction"`` is
        :math:`\operatorname{Bin}(d, \rho)` (overlap ignored).

    Returns
    -------
    LatticeLaw with K rows.
    """
    d, s = _check_counts("d", d), _check_counts("s", s)
    rho = _check_rho(rho)
    if law not in PAIR_LAWS:
        raise ValueError(f"law must be one of {', '.join(map(repr, PAIR_LAWS))}, got {law!r}")
    d, s = (a.ravel() for a in np.broadcast_arrays(np.atleast_1d(d), np.atleast_1d(s)))
    if d.size == 0:
        return LatticeLaw(np.zeros((0, 1)), np.zeros(0, np.int64), np.zeros(0, np.int64))
    uniq, inv = np.unique(np.stack([d, s], axis=1), axis=0, return_inverse=True)
    inv = inv.ravel()
    ud, us = uniq[:, 0], uniq[:, 1]
    if law == "uniform":
        out = _binomial_law(ud + us, rho)
    elif law == "contraction":
        out = _binomial_law(ud, rho)
    else:
        out = _convolve(_binomial_law(ud, rho), _binomial_law(us, shared_flip_rate(rho)))
    return out.take(inv)


def tail_threshold(
    mean: np.ndarray, t: np.ndarray, *, side: Literal["upper", "lower"] = "upper"
) -> np.ndarray:
    r"""Integer threshold of the tail event of an integer variable.

    ``upper``: :math:`D \ge \mu + t \iff D \ge \lceil \mu + t \rceil`;
    ``lower``: :math:`D \le \mu - t \iff D \le \lfloor \mu - t \rfloor`. A value within
    relative 1e-9 of an integer is taken to be that integer (floating-point rounding
    of :math:`\mu + t` must not drop the boundary point from the event).
    """
    _check_side(side)
    x = np.asarray(mean, dtype=np.float64) + (1.0 if side == "upper" else -1.0) * _check_t(t)
    near = np.round(x)
    snap = np.abs(x - near) <= _SNAP * np.maximum(1.0, np.abs(x))
    edge = np.ceil(x) if side == "upper" else np.floor(x)
    return np.where(snap, near, edge).astype(np.int64)


def pair_tail(
    d: np.ndarray,
    s: np.ndarray,
    rho: float,
    t: np.ndarray,
    *,
    side: Literal["upper", "lower"] = "upper",
    law: Literal["masked", "uniform", "contraction"] = "masked",
) -> np.ndarray:
    r"""Exact :math:`P(D \ge \mathbb E D + t)` (``upper``) or :math:`P(D \le \mathbb E D - t)`.

    d, s, t broadcast to (K,); :math:`\mathbb E D` is the mean of the chosen ``law``.
    """
    _check_side(side)
    t = _check_t(t)
    d, s = _check_counts("d", d), _check_counts("s", s)
    d, s, t = (a.ravel() for a in np.broadcast_arrays(d, s, t))
    lw = pair_law(d, s, rho, law=law)
    k = tail_threshold(lw.mean(), t, side=side)
    return lw.prob_ge(k) if side == "upper" else lw.prob_le(k)


def _kl_bernoulli(a: np.ndarray, p: np.ndarray) -> np.ndarray:
    """Bernoulli relative entropy kl(a || p) for a, p in [0, 1] (0 log 0 = 0)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t1 = np.where(a > 0, a * np.log(a / p), 0.0)
        t2 = np.where(a < 1, (1 - a) * np.log((1 - a) / (1 - p)), 0.0)
    return t1 + t2


def pair_tail_bound(
    d: np.ndarray,
    s: np.ndarray,
    rho: float,
    t: np.ndarray,
    *,
    side: Literal["upper", "lower"] = "upper",
    kind: Literal["hoeffding", "chernoff", "kl"] = "hoeffding",
    scale: float = 1.0,
) -> np.ndarray:
    r"""Tail bound on :math:`P(D \ge \mu + t)` or :math:`P(D \le \mu - t)` (T2.6).

    With :math:`n = d + s`, :math:`\mu = \rho d + 2\rho(1-\rho) s`, :math:`\delta = t/\mu`,
    :math:`\bar p = \mu/n`:

    - ``hoeffding``: :math:`e^{-2t^2/n}` (both sides);
    - ``chernoff`` (multiplicative): upper
      :math:`e^{-\mu[(1+\delta)\ln(1+\delta) - \delta]}`, lower
      :math:`e^{-\mu[(1-\delta)\ln(1-\delta) + \delta]}` for :math:`\delta \le 1`
      (:math:`e^{-\mu}` for :math:`\delta > 1`, where the event is empty);
    - ``kl`` (Chernoff-Hoeffding): :math:`e^{-n\,\mathrm{kl}(\bar p \pm t/n \,\|\, \bar p)}`,
      0 when :math:`\bar p \pm t/n` leaves [0, 1] (empty event).

    ``scale`` multiplies every exponent (``scale > 1`` gives a deliberately too-tight
    bound, a negative control). The bound is capped at 1. Degenerate cases: n = 0 or
    :math:`\mu = 0` means D is constant, the bound is 1 at t = 0 and 0 for t > 0.
    """
    _check_side(side)
    if kind not in BOUND_KINDS:
        raise ValueError(f"kind must be one of {', '.join(map(repr, BOUND_KINDS))}, got {kind!r}")
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    rho = _check_rho(rho)
    t = _check_t(t)
    d, s = _check_counts("d", d), _check_counts("s", s)
    d, s, t = np.broadcast_arrays(d, s, t)
    n = (d + s).astype(np.float64)
    mu = np.asarray(pair_mean(d, s, rho), dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        if kind == "hoeffding":
            expo = 2.0 * t * t / n
        elif kind == "chernoff":
            delta = t / mu
            if side == "upper":
                expo = mu * ((1 + delta) * np.log1p(delta) - delta)
            else:
                dl = np.minimum(delta, 1.0)
                core = np.where(dl < 1, (1 - dl) * np.log1p(-dl), 0.0)
                expo = mu * (core + dl)
        else:
            p = mu / n
            a = p + t / n if side == "upper" else p - t / n
            expo = np.where((a < 0) | (a > 1), np.inf, n * _kl_bernoulli(np.clip(a, 0, 1), p))
    degenerate = (n == 0) | (mu == 0) if kind != "hoeffding" else n == 0
    expo = np.where(degenerate, np.where(t > 0, np.inf, 0.0), expo)
    expo = np.where(t == 0, 0.0, expo)
    return np.minimum(1.0, np.exp(-scale * np.maximum(expo, 0.0)))


# --------------------------------------------------------------------------- entries
@dataclass(frozen=True)
class MaskEntries:
    """The (case, item) entries that masking can touch, for K pairs or triples.

    Attributes
    ----------
    code : (E,) uint8, membership bits of the entry: bit 0 user u, bit 1 user v,
        bit 2 user w (triples only).
    case : (E,) int64, sorted, which pair/triple the entry belongs to.
    n_cases : K.
    """

    code: np.ndarray
    case: np.ndarray
    n_cases: int

    @staticmethod
    def concat(parts: list[MaskEntries]) -> MaskEntries:
        """The cases of ``parts`` one after another (case ids offset)."""
        offsets = np.cumsum([0] + [p.n_cases for p in parts])
        code = np.concatenate([p.code for p in parts]) if parts else np.zeros(0, np.uint8)
        case = (
            np.concatenate([p.case + o for p, o in zip(parts, offsets)])
            if parts
            else np.zeros(0, np.int64)
        )
        return MaskEntries(code.astype(np.uint8), case.astype(np.int64), int(offsets[-1]))

    def pattern_counts(self, n_codes: int) -> np.ndarray:
        """(K, n_codes) number of entries per code 1..n_codes."""
        flat = np.bincount(
            self.case * (n_codes + 1) + self.code, minlength=self.n_cases * (n_codes + 1)
        )
        return flat.reshape(self.n_cases, n_codes + 1)[:, 1:]


def _entries_from_rows(x: sp.csr_matrix, rows: list[np.ndarray]) -> MaskEntries:
    mat = sum((2**j) * x[r] for j, r in enumerate(rows))  # (K, I), values = codes
    mat = sp.csr_matrix(mat)
    mat.sum_duplicates()
    mat.eliminate_zeros()
    code = np.rint(mat.data).astype(np.uint8)
    case = np.repeat(np.arange(mat.shape[0]), np.diff(mat.indptr))
    return MaskEntries(code, case, int(mat.shape[0]))


def _entries_from_counts(counts: np.ndarray) -> MaskEntries:
    k, p = counts.shape
    code = np.repeat(np.tile(np.arange(1, p + 1, dtype=np.uint8), k), counts.ravel())
    case = np.repeat(np.arange(k), counts.sum(axis=1))
    return MaskEntries(code, case, int(k))


def pair_entries(x: sp.spmatrix, u: np.ndarray, v: np.ndarray) -> MaskEntries:
    """Entries of pairs (u_k, v_k) of rows of binary x: code 1 only u, 2 only v, 3 both."""
    x = _check_csr(x)
    u = _check_users("u", u, x.shape[0])
    v = _check_users("v", v, x.shape[0])
    if u.shape != v.shape:
        raise ValueError(f"u and v must have the same shape, got {u.shape} and {v.shape}")
    return _entries_from_rows(x, [u, v])


def pair_entries_from_counts(
    n_only_u: np.ndarray, n_only_v: np.ndarray, n_shared: np.ndarray
) -> MaskEntries:
    """Entries of generated pairs with the given numbers of only-u, only-v, shared items."""
    a, b, c = (
        _check_counts(nm, x)
        for nm, x in (("n_only_u", n_only_u), ("n_only_v", n_only_v), ("n_shared", n_shared))
    )
    a, b, c = (z.ravel() for z in np.broadcast_arrays(a, b, c))
    return _entries_from_counts(np.stack([a, b, c], axis=1))


def pair_counts(x: sp.spmatrix, u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Clean distance :math:`d = |S_u \triangle S_v|`, overlap :math:`s = |S_u \cap S_v|`, (K,)."""
    c = pair_entries(x, u, v).pattern_counts(3)
    return c[:, 0] + c[:, 1], c[:, 2]


def triple_entries(x: sp.spmatrix, u: np.ndarray, v: np.ndarray, w: np.ndarray) -> MaskEntries:
    """Entries of triples (u_k, v_k, w_k): code = x_u + 2 x_v + 4 x_w in 1..7."""
    x = _check_csr(x)
    u = _check_users("u", u, x.shape[0])
    v = _check_users("v", v, x.shape[0])
    w = _check_users("w", w, x.shape[0])
    if not (u.shape == v.shape == w.shape):
        raise ValueError(
            f"u, v and w must have the same shape, got {u.shape}, {v.shape}, {w.shape}"
        )
    return _entries_from_rows(x, [u, v, w])


def triple_entries_from_counts(counts: np.ndarray) -> MaskEntries:
    """Entries of generated triples from (K, 7) pattern counts (codes 1..7)."""
    return _entries_from_counts(_check_pattern_counts(counts))


def _check_pattern_counts(counts: object) -> np.ndarray:
    c = _check_counts("counts", counts)
    if c.ndim != 2 or c.shape[1] != 7:
        raise ValueError(f"counts must have shape (K, 7), got {c.shape}")
    return c


def triple_pattern_counts(
    x: sp.spmatrix, u: np.ndarray, v: np.ndarray, w: np.ndarray
) -> np.ndarray:
    """(K, 7) number of items of each pattern code 1..7 (code = x_u + 2 x_v + 4 x_w)."""
    return triple_entries(x, u, v, w).pattern_counts(7)


def triple_pair_counts(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(d_uv, s_uv, d_uw, s_uw), each (K,), from (K, 7) pattern counts."""
    c = _check_pattern_counts(counts)
    n = np.concatenate([np.zeros((c.shape[0], 1), np.int64), c], axis=1)  # n[:, code]
    d_uv = n[:, 1] + n[:, 5] + n[:, 2] + n[:, 6]
    s_uv = n[:, 3] + n[:, 7]
    d_uw = n[:, 1] + n[:, 3] + n[:, 4] + n[:, 6]
    s_uw = n[:, 5] + n[:, 7]
    return d_uv, s_uv, d_uw, s_uw


# --------------------------------------------------------------------------- triple law
def triple_term_probs(rho: float) -> np.ndarray:
    r"""(8, 2) :math:`(P(\xi = -1), P(\xi = +1))` per pattern code 0..7 (row 0 unused)."""
    rho = _check_rho(rho)
    a, b = rho * (1 - rho), rho * rho
    return np.array(
        [[0, 0], [0, 0], [rho, 0], [a, b], [0, rho], [b, a], [a, a], [a, a]], dtype=np.float64
    )


def triple_mean(counts: np.ndarray, rho: float) -> np.ndarray:
    r""":math:`m = \mathbb E[D_{uw} - D_{uv}] = \sum_c n_c (P_c(+1) - P_c(-1))`, (K,)."""
    c = _check_pattern_counts(counts)
    q = triple_term_probs(rho)[1:]  # (7, 2)
    return c @ (q[:, 1] - q[:, 0])


def triple_law(
    counts: np.ndarray, rho: float, *, law: Literal["masked", "independent"] = "masked"
) -> LatticeLaw:
    r"""Exact law of :math:`\Delta = D_{uw} - D_{uv}` for K triples (T2.6, drift).

    ``masked``: convolution over pattern codes of Bin(n_4, rho), -Bin(n_2, rho) and the
    {-1, 0, 1}-valued sums of codes 3, 5 and 6+7 (see the module table).
    ``independent`` is a deliberately wrong law (negative control): :math:`D_{uw}` and
    :math:`D_{uv}` with their correct pair laws but independent, i.e. u's mask drawn
    twice.

    Parameters
    ----------
    counts : (K, 7) pattern counts, codes 1..7.
    rho : keep rate in (0, 1].
    """
    c = _check_pattern_counts(counts)
    rho = _check_rho(rho)
    if law not in TRIPLE_LAWS:
        raise ValueError(f"law must be one of {', '.join(map(repr, TRIPLE_LAWS))}, got {law!r}")
    if law == "independent":
        d_uv, s_uv, d_uw, s_uw = triple_pair_counts(c)
        return _convolve(pair_law(d_uw, s_uw, rho), _negate(pair_law(d_uv, s_uv, rho)))
    uniq, inv = np.unique(c, axis=0, return_inverse=True)
    inv = inv.ravel()
    q = triple_term_probs(rho)
    n = np.concatenate([np.zeros((uniq.shape[0], 1), np.int64), uniq], axis=1)
    out = _convolve(_binomial_law(n[:, 4], rho), _negate(_binomial_law(n[:, 2], rho)))
    out = _convolve(out, _trinomial_sum_law(n[:, 3], q[3, 0], q[3, 1]))
    out = _convolve(out, _trinomial_sum_law(n[:, 5], q[5, 0], q[5, 1]))
    out = _convolve(out, _trinomial_sum_law(n[:, 6] + n[:, 7], q[6, 0], q[6, 1]))
    return out.take(inv)


def triple_flip_prob(
    counts: np.ndarray, rho: float, *, law: Literal["masked", "independent"] = "masked"
) -> np.ndarray:
    r"""Exact rank-flip probability :math:`P(D_{uw} \le D_{uv}) = P(\Delta \le 0)`, (K,)."""
    return triple_law(counts, rho, law=law).prob_le(np.zeros(len(np.asarray(counts)), np.int64))


def triple_flip_bound(counts: np.ndarray, rho: float, *, scale: float = 1.0) -> np.ndarray:
    r"""Hoeffding bound on the flip probability, (K,).

    .. math::

        P(\Delta \le 0) \le \exp\!\Big(-\frac{2 m^2}{\sum_i c_i^2}\Big), \qquad m > 0,

    with :math:`c_i` the range of item i's term (module table); 1 when :math:`m \le 0`
    (the expected order is already reversed, no bound). ``scale`` multiplies the
    exponent (negative control).
    """
    c = _check_pattern_counts(counts)
    if not np.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be positive and finite, got {scale!r}")
    m = triple_mean(c, rho)
    denom = c @ (_TRIPLE_RANGE[1:] ** 2)
    with np.errstate(divide="ignore", invalid="ignore"):
        expo = np.where(denom > 0, 2.0 * m * m / denom, np.inf)
    return np.where(m > 0, np.minimum(1.0, np.exp(-scale * expo)), 1.0)


# --------------------------------------------------------------------------- Monte Carlo
def _simulate(
    entries: MaskEntries,
    rhos: np.ndarray,
    n_mc: int,
    *,
    n_users: int,
    stat: Callable[[list[np.ndarray]], np.ndarray],
    seed: int | np.random.Generator,
    max_block: int,
) -> np.ndarray:
    rhos = np.asarray([_check_rho(r) for r in np.atleast_1d(rhos)])
    if isinstance(n_mc, bool) or not isinstance(n_mc, (int, np.integer)) or n_mc < 1:
        raise ValueError(f"n_mc must be a positive integer, got {n_mc!r}")
    rng = _rng(seed)
    e = entries.code.size
    member = [((entries.code >> j) & 1).astype(bool) for j in range(n_users)]  # (E,) each
    counts = np.bincount(entries.case, minlength=entries.n_cases)  # (K,)
    nonempty = np.nonzero(counts)[0]
    starts = (np.cumsum(counts) - counts)[nonempty]  # segment starts of non-empty cases
    out = np.zeros((rhos.size, n_mc, entries.n_cases), dtype=np.int32)
    if e == 0:
        return out
    block = max(1, min(n_mc, max_block // max(1, n_users * e)))
    for lo in range(0, n_mc, block):
        m = min(block, n_mc - lo)
        u = rng.random((n_users, m, e))  # one uniform per (user, draw, entry), shared over rho
        for r, rho in enumerate(rhos):
            kept = [(u[j] < rho) & member[j] for j in range(n_users)]  # (m, E): x * b
            val = stat(kept)  # (m, E) bool or int8, per-entry contribution
            seg = np.add.reduceat(val.view(np.int8), starts, axis=1, dtype=np.int32)
            out[r][lo : lo + m, nonempty] = seg  # out[r] is a view
    return out


def simulate_pair_distance(
    entries: MaskEntries,
    rhos: np.ndarray | float,
    n_mc: int,
    *,
    seed: int | np.random.Generator,
    max_block: int = 1 << 23,
) -> np.ndarray:
    r"""Monte Carlo masked distances :math:`D = \|x_u b_u - x_v b_v\|_1`, (R, n_mc, K) int32.

    Draws :math:`b_u, b_v` item by item on the actual supports (no use of the law).
    The same uniforms serve every keep rate (common random numbers: the estimates for
    different rho are dependent, each is exact in law).
    """
    return _simulate(
        entries, rhos, n_mc, n_users=2, stat=lambda k: k[0] ^ k[1], seed=seed, max_block=max_block
    )


def simulate_triple_delta(
    entries: MaskEntries,
    rhos: np.ndarray | float,
    n_mc: int,
    *,
    seed: int | np.random.Generator,
    max_block: int = 1 << 23,
) -> np.ndarray:
    r"""Monte Carlo :math:`\Delta = D_{uw} - D_{uv}` with one mask per user, (R, n_mc, K) int32."""

    def stat(k: list[np.ndarray]) -> np.ndarray:
        return (k[0] ^ k[2]).astype(np.int8) - (k[0] ^ k[1]).astype(np.int8)

    return _simulate(entries, rhos, n_mc, n_users=3, stat=stat, seed=seed, max_block=max_block)


def clopper_pearson(
    k: np.ndarray, n: np.ndarray | int, *, confidence: float
) -> tuple[np.ndarray, np.ndarray]:
    r"""Two-sided Clopper-Pearson interval for a binomial proportion, each (K,).

    :math:`[B^{-1}(\alpha/2; k, n-k+1),\ B^{-1}(1-\alpha/2; k+1, n-k)]`,
    :math:`\alpha = 1 - \mathrm{confidence}`, with 0 / 1 at k = 0 / k = n. Coverage is at
    least the confidence for every true proportion.
    """
    if not (0.0 < confidence < 1.0):
        raise ValueError(f"confidence must be in (0, 1), got {confidence!r}")
    k = np.asarray(k, dtype=np.float64)
    n = np.broadcast_to(np.asarray(n, dtype=np.float64), k.shape)
    if np.any(k < 0) or np.any(k > n):
        raise ValueError("k must satisfy 0 <= k <= n")
    alpha = 1.0 - confidence
    with np.errstate(invalid="ignore"):
        lo = np.where(k > 0, stats.beta.ppf(alpha / 2, k, n - k + 1), 0.0)
        hi = np.where(k < n, stats.beta.ppf(1 - alpha / 2, k + 1, n - k), 1.0)
    return lo, hi


# --------------------------------------------------------------------------- sampling
def _jaccard_to_candidates(
    x: sp.csr_matrix, anchors: np.ndarray, cand: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(K, C) overlaps s and Jaccard s / (n_u + n_c - s) of anchors to candidates."""
    n = np.diff(x.indptr)
    s = np.asarray((x[anchors] @ x[cand].T).todense(), dtype=np.float64)  # (K, C)
    union = n[anchors][:, None] + n[cand][None, :] - s
    jac = np.where(union > 0, s / np.maximum(union, 1), 0.0)
    return s, jac


def _pools(
    x: sp.csr_matrix, n: int, n_candidates: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    n_users = x.shape[0]
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if n_users < 3:
        raise ValueError(f"x must have at least 3 rows, got {n_users}")
    anchors = rng.choice(n_users, size=min(n, n_users), replace=False)
    cand = rng.choice(n_users, size=min(max(n_candidates, 3), n_users), replace=False)
    return anchors, cand


def sample_near_pairs(
    x: sp.spmatrix, n: int, *, n_candidates: int = 2000, seed: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (u, v): u uniform over rows (without replacement), v its most Jaccard-similar
    user among a uniform candidate pool of ``n_candidates`` rows (u excluded).

    Returns (u, v), each (min(n, n_rows),) int64.
    """
    x = _check_csr(x)
    rng = _rng(seed)
    anchors, cand = _pools(x, n, n_candidates, rng)
    _, jac = _jaccard_to_candidates(x, anchors, cand)
    jac[cand[None, :] == anchors[:, None]] = -1.0
    return anchors.astype(np.int64), cand[np.argmax(jac, axis=1)].astype(np.int64)


def sample_random_pairs(
    x: sp.spmatrix, n: int, *, seed: int | np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """Pairs (u, v) of distinct rows drawn uniformly (typically distant users), (n,) each."""
    x = _check_csr(x)
    rng = _rng(seed)
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if x.shape[0] < 2:
        raise ValueError(f"x must have at least 2 rows, got {x.shape[0]}")
    u = rng.integers(0, x.shape[0], size=n)
    v = (u + rng.integers(1, x.shape[0], size=n)) % x.shape[0]
    return u.astype(np.int64), v.astype(np.int64)


def sample_triples(
    x: sp.spmatrix,
    n: int,
    *,
    far: Literal["next", "random"] = "random",
    n_candidates: int = 2000,
    seed: int | np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""Triples (u, v, w): v the most Jaccard-similar candidate of u, w a farther user.

    w is drawn among the candidates (u, v excluded) with :math:`d_{uw} > d_{uv}`:
    ``far="next"`` takes the most Jaccard-similar of them (a competing neighbour),
    ``far="random"`` a uniform one. Anchors without such a w are dropped.

    Returns (u, v, w), each (K,) int64 with K <= n.
    """
    if far not in ("next", "random"):
        raise ValueError(f"far must be 'next' or 'random', got {far!r}")
    x = _check_csr(x)
    rng = _rng(seed)
    anchors, cand = _pools(x, n, n_candidates, rng)
    s, jac = _jaccard_to_candidates(x, anchors, cand)
    rows = np.diff(x.indptr)
    self_ = cand[None, :] == anchors[:, None]
    jac[self_] = -1.0
    best = np.argmax(jac, axis=1)  # (K,)
    v = cand[best]
    d = rows[anchors][:, None] + rows[cand][None, :] - 2 * s  # (K, C)
    d_uv = d[np.arange(anchors.size), best]
    ok = (d > d_uv[:, None]) & ~self_ & (cand[None, :] != v[:, None])
    score = jac if far == "next" else rng.random(jac.shape)
    score = np.where(ok, score, -np.inf)
    pick = np.argmax(score, axis=1)
    has = ok.any(axis=1)
    return (
        anchors[has].astype(np.int64),
        v[has].astype(np.int64),
        cand[pick[has]].astype(np.int64),
    )
