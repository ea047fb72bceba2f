r"""Outcomes and intervals: the one verdict type of every claim check and experiment.

Every empirical statement in ``radius`` (an ordering step of the ablation, a cohort
gain, T2.5's clean-versus-masked contrast, the beta sweep) is decided from an interval,
never from a point estimate, with three outcomes:

* ``PASS`` (the statement *holds*): the interval lies wholly on the claimed side of the
  decision point;
* ``FAIL`` (the statement is *contradicted*): the interval lies wholly on the other side;
* ``INCONCLUSIVE``: the interval contains the decision point, or there is too little
  evidence to form one (no cases, fewer than ``min_n``): more data could decide;
* ``VACUOUS``: the statement's premise holds for no real case (no user pair inside
  T2.3's sharing radius), or, for an effect with a minimum size stated up front, the
  interval lies wholly inside ``(-min_effect, +min_effect)``: the effect is absent at the
  stated size (a mechanism "not observed"). More data would not change it.

Bounds and identities use the same type: a bound that holds is ``PASS``, one that is
violated ``FAIL``, one that was checked on no case ``INCONCLUSIVE``.

Training seeds. An empirical statement about trained models is only as good as the
spread between training runs allows: :func:`seed_user_interval` is the one two-stage
bootstrap (seeds, then users) every such check uses, and :func:`holm` controls the
family-wise error where several interval checks decide one claim.

The bootstrap is the percentile bootstrap over the resampled units (users, pairs):

.. math::

    \hat\theta^{*}_b = T(X_{I_b}),\quad I_b \sim \mathrm{Uniform}\{1..n\}^n,\qquad
    [\hat\theta^{*}_{(\alpha/2)}, \hat\theta^{*}_{(1-\alpha/2)}].

Paired comparisons resample the *same* units for both arms (the per-user difference),
so the interval reflects the sampling of users, not the between-user spread.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from enum import Enum
from typing import Any

import numpy as np

__all__ = [
    "Outcome",
    "Interval",
    "EXIT_CODES",
    "exit_code",
    "combine",
    "decide",
    "bootstrap",
    "bootstrap_mean",
    "paired_bootstrap",
    "seed_spread",
    "seed_user_interval",
    "p_value",
    "holm",
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_DRAWS",
]

BOOTSTRAP_LEVEL = 0.95  # two-sided level of every bootstrap interval unless stated
BOOTSTRAP_DRAWS = 2000  # resamples per bootstrap interval unless stated


class Outcome(str, Enum):
    """The outcomes. How each reads depends on what a check is about (:meth:`word`):
    for an empirical statement PASS reads *holds* and FAIL *contradicted*; for an
    assumption *met* / *not met*; for a mechanism VACUOUS reads *not observed*."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"
    VACUOUS = "VACUOUS"

    def word(self, kind: str = "bound", role: str = "statement") -> str:
        """The printed label of this outcome for a check of ``kind`` (identity, bound,
        empirical) and ``role`` (statement, assumption, mechanism, implementation)."""
        if role == "assumption":
            return {"PASS": "MET", "FAIL": "NOT MET"}.get(self.value, self.value)
        if role == "mechanism":
            return {"PASS": "HOLDS", "FAIL": "CONTRADICTED", "VACUOUS": "NOT OBSERVED"}.get(
                self.value, self.value
            )
        if kind == "empirical":
            return {"PASS": "HOLDS", "FAIL": "CONTRADICTED"}.get(self.value, self.value)
        return self.value

    @classmethod
    def of(cls, passed: bool) -> Outcome:
        return cls.PASS if passed else cls.FAIL

    def __str__(self) -> str:  # "PASS", not "Outcome.PASS", in f-strings and tables
        return self.value


# Exit codes of every command that returns a verdict (documented in the README).
EXIT_CODES: dict[str, int] = {
    "PASS": 0,
    "FAIL": 1,
    "BAD_INPUT": 2,
    "INCONCLUSIVE": 3,
    "VACUOUS": 4,
}


def exit_code(outcome: Outcome | str) -> int:
    """0 PASS, 1 FAIL, 3 INCONCLUSIVE, 4 VACUOUS (2 is reserved for bad input)."""
    return EXIT_CODES[Outcome(outcome).value]


def combine(outcomes: Iterable[Outcome | str]) -> Outcome:
    """The worst outcome: FAIL if any FAIL; else INCONCLUSIVE if any INCONCLUSIVE or none
    given; else VACUOUS if any VACUOUS (a part of the statement applies to no real case);
    else PASS."""
    seen = [Outcome(o) for o in outcomes]
    if not seen:
        return Outcome.INCONCLUSIVE
    for worst in (Outcome.FAIL, Outcome.INCONCLUSIVE, Outcome.VACUOUS):
        if worst in seen:
            return worst
    return Outcome.PASS


@dataclass(frozen=True)
class Interval:
    """A point estimate with a two-sided interval.

    Attributes
    ----------
    estimate : the statistic on the full sample.
    low, high : interval ends (NaN when it could not be formed).
    level : two-sided coverage, e.g. 0.95.
    method : how it was formed (``"percentile bootstrap over 812 users, 2000 draws"``).
    n : number of resampled units.
    seeds : the statistic of each training seed on its own, when the interval spans
        training seeds (``seed_user_interval``); None otherwise.
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int
    seeds: tuple[float, ...] | None = None

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def excludes(self, value: float = 0.0) -> bool:
        return self.defined and (self.low > value or self.high < value)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["seeds"] = list(self.seeds) if self.seeds is not None else None
        return d

    def __str__(self) -> str:
        if not self.defined:
            return f"{self.estimate:+.4g} [no interval]"
        return f"{self.estimate:+.4g} [{self.low:+.4g}, {self.high:+.4g}]"


def decide(
    interval: Interval,
    *,
    direction: int = +1,
    threshold: float = 0.0,
    min_n: int = 2,
    min_effect: float = 0.0,
) -> Outcome:
    """Outcome of "the quantity is above ``threshold``" (``direction=+1``) or below it
    (``direction=-1``), from ``interval``, with an optional minimum effect.

    With ``min_effect = m >= 0`` (stated before computing) the band
    ``[threshold - m, threshold + m]`` is "no effect of the stated size":

    * PASS when the interval lies wholly on the claimed side beyond ``threshold + m``;
    * FAIL when it lies wholly on the other side beyond ``threshold - m``;
    * VACUOUS when ``m > 0`` and the interval lies wholly inside the band: the effect is
      absent at the stated size (more data would not produce it);
    * INCONCLUSIVE otherwise: the interval straddles a band edge, is undefined, or
      rests on fewer than ``min_n`` units.

    With ``m = 0`` this is the plain three-way decision on ``threshold``.
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if not min_effect >= 0:
        raise ValueError(f"min_effect must be >= 0, got {min_effect}")
    if interval.n < min_n or not interval.defined:
        return Outcome.INCONCLUSIVE
    lo, hi = (interval.low, interval.high) if direction > 0 else (-interval.high, -interval.low)
    t = threshold * direction
    if lo > t + min_effect:
        return Outcome.PASS
    if hi < t - min_effect:
        return Outcome.FAIL
    if min_effect > 0 and lo >= t - min_effect and hi <= t + min_effect:
        return Outcome.VACUOUS
    return Outcome.INCONCLUSIVE


def p_value(interval: Interval, threshold: float = 0.0) -> float:
    r"""Two-sided p-value of "the quantity equals ``threshold``", read off an interval.

    Normal approximation: :math:`se = (high - low) / (2 z_{(1+level)/2})`,
    :math:`z = (estimate - threshold) / se`, :math:`p = 2(1 - \Phi(|z|))`. Used only to
    order and adjust several interval checks of one claim (:func:`holm`); each check is
    still decided from its own interval. NaN when the interval is undefined.
    """
    from scipy.stats import norm

    if not interval.defined or not np.isfinite(interval.estimate):
        return float("nan")
    width = interval.high - interval.low
    if width <= 0:
        return 0.0 if interval.estimate != threshold else 1.0
    se = width / (2 * norm.ppf((1 + interval.level) / 2))
    z = abs(interval.estimate - threshold) / se
    return float(2 * norm.sf(z))


def holm(p_values: Sequence[float], alpha: float = 1 - BOOTSTRAP_LEVEL) -> list[bool]:
    """Holm's step-down procedure: which of ``m`` hypotheses are rejected at family-wise
    error ``alpha``. Sorted ascending, the i-th smallest p (1-based) is rejected while
    ``p_(i) <= alpha / (m - i + 1)``; the first that is not stops the procedure. NaN
    p-values are never rejected."""
    p = np.asarray(p_values, dtype=np.float64)
    m = int(p.size)
    out = [False] * m
    order = np.argsort(np.where(np.isfinite(p), p, np.inf), kind="stable")
    for rank, i in enumerate(order):
        if not np.isfinite(p[i]) or p[i] > alpha / (m - rank):
            break
        out[int(i)] = True
    return out


def _rng(seed: int | np.random.Generator) -> np.random.Generator:
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def bootstrap(
    statistic: Callable[[np.ndarray], float],
    n: int,
    *,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    seed: int | np.random.Generator = 0,
    unit: str = "units",
) -> Interval:
    """Percentile bootstrap of ``statistic(idx)`` where ``idx`` (n,) indexes the units.

    ``statistic`` receives the identity ``np.arange(n)`` for the estimate and resampled
    index arrays for the draws; draws where it returns NaN are dropped.
    """
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    est = float(statistic(np.arange(n))) if n > 0 else float("nan")
    method = f"percentile bootstrap over {n} {unit}, {n_boot} draws"
    if n < 2:
        return Interval(est, float("nan"), float("nan"), level, method, int(n))
    rng = _rng(seed)
    draws = np.array([statistic(rng.integers(0, n, n)) for _ in range(n_boot)], dtype=float)
    draws = draws[np.isfinite(draws)]
    if draws.size < max(10, n_boot // 2):
        return Interval(est, float("nan"), float("nan"), level, method, int(n))
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Interval(est, float(lo), float(hi), level, method, int(n))


def bootstrap_mean(
    values: Sequence[float] | np.ndarray,
    *,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    seed: int | np.random.Generator = 0,
    unit: str = "users",
) -> Interval:
    """Bootstrap interval of the mean of ``values`` (NaNs dropped first). Vectorised."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    est = float(v.mean()) if n else float("nan")
    method = f"percentile bootstrap over {n} {unit}, {n_boot} draws"
    if n < 2:
        return Interval(est, float("nan"), float("nan"), level, method, n)
    rng = _rng(seed)
    means = np.empty(n_boot)
    chunk = max(1, min(n_boot, 2_000_000 // max(n, 1)))
    for s in range(0, n_boot, chunk):
        k = min(chunk, n_boot - s)
        means[s : s + k] = v[rng.integers(0, n, (k, n))].mean(axis=1)
    a = (1 - level) / 2
    lo, hi = np.quantile(means, [a, 1 - a])
    return Interval(est, float(lo), float(hi), level, method, n)


def paired_bootstrap(
    lower: Sequence[float] | np.ndarray,
    higher: Sequence[float] | np.ndarray,
    **kwargs: Any,
) -> Interval:
    """Interval of mean(higher - lower) over units present in both (paired resampling)."""
    a = np.asarray(lower, dtype=np.float64).ravel()
    b = np.asarray(higher, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise ValueError(f"paired arrays differ in shape: {a.shape} vs {b.shape}")
    return bootstrap_mean(b - a, **kwargs)


def seed_user_interval(
    values: np.ndarray,
    *,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
    statistic: Callable[..., float] | None = None,
    unit: str = "users",
    pass_units: bool = False,
) -> Interval:
    r"""Two-stage bootstrap interval over training seeds, then users (or pairs).

    ``values`` is (S, U): a per-unit quantity (or a per-unit paired difference) for each
    of S training seeds on the same U units. Each draw resamples the seeds (rows) with
    replacement, then the units (columns) with replacement, and evaluates ``statistic``
    on the resampled (S, U) block (default: its mean), so the interval carries both the
    seed-to-seed spread (training randomness) and the sampling of units. With one seed it
    is the ordinary bootstrap over units. The per-seed statistics are kept in
    ``Interval.seeds``; this is the one function every empirical check over trained
    models uses for its seeds. With ``pass_units=True`` the statistic is called as
    ``statistic(block, units)``, ``units`` (U,) the resampled unit indices (for
    statistics that need a unit's label, e.g. its activity cohort).
    """
    d = np.asarray(values, dtype=np.float64)
    if d.ndim == 1:
        d = d[None, :]
    if d.ndim != 2:
        raise ValueError(f"values must be (seeds, {unit}), got shape {d.shape}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    n_s, n_u = d.shape
    if statistic is None:
        stat = lambda b, u: float(np.mean(b))  # noqa: E731
    elif pass_units:
        stat = statistic
    else:
        stat = lambda b, u: statistic(b)  # noqa: E731
    all_units = np.arange(n_u)
    finite = bool(d.size) and bool(np.all(np.isfinite(d)))
    est = float(stat(d, all_units)) if d.size else float("nan")
    per_seed = tuple(float(stat(d[i : i + 1], all_units)) for i in range(n_s)) if n_u else None
    method = (
        f"two-stage percentile bootstrap (seeds, then {unit}) over {n_s} training seed"
        f"{'s' if n_s != 1 else ''} x {n_u} {unit}, {n_boot} draws"
    )
    if n_u < 2 or n_s < 1 or not finite:
        return Interval(est, float("nan"), float("nan"), level, method, int(n_u), per_seed)
    rng = np.random.default_rng(seed)
    draws = np.empty(n_boot)
    for k in range(n_boot):
        si = rng.integers(0, n_s, n_s)
        ui = rng.integers(0, n_u, n_u)
        draws[k] = stat(d[si][:, ui], ui)
    draws = draws[np.isfinite(draws)]
    if draws.size < max(10, n_boot // 2):
        return Interval(est, float("nan"), float("nan"), level, method, int(n_u), per_seed)
    a = (1 - level) / 2
    lo, hi = np.quantile(draws, [a, 1 - a])
    return Interval(est, float(lo), float(hi), level, method, int(n_u), per_seed)


def seed_spread(values: Sequence[float] | np.ndarray) -> dict[str, Any]:
    """Mean, sample std (ddof 1), min, max and n of per-seed values (NaN-safe)."""
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    n = int(v.size)
    return {
        "mean": float(v.mean()) if n else float("nan"),
        "std": float(v.std(ddof=1)) if n > 1 else float("nan"),
        "min": float(v.min()) if n else float("nan"),
        "max": float(v.max()) if n else float("nan"),
        "n": n,
        "values": v.tolist(),
    }
