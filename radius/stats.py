r"""Outcomes and intervals: the one verdict type of every claim check and experiment.

Every empirical statement in ``radius`` (an ordering step of the ablation, a cohort
gain, T2.5's clean-versus-masked contrast, the beta sweep) is decided from an interval,
never from a point estimate, with three outcomes:

* ``PASS`` (the statement *holds*): the interval lies wholly on the claimed side of the
  decision point;
* ``FAIL`` (the statement is *contradicted*): the interval lies wholly on the other side;
* ``INCONCLUSIVE``: the interval contains the decision point, or there is too little
  evidence to form one (no cases, fewer than ``min_n``).

Bounds and identities use the same type: a bound that holds is ``PASS``, one that is
violated ``FAIL``, one that was checked on no case ``INCONCLUSIVE``.

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
    "BOOTSTRAP_LEVEL",
    "BOOTSTRAP_DRAWS",
]

BOOTSTRAP_LEVEL = 0.95  # two-sided level of every bootstrap interval unless stated
BOOTSTRAP_DRAWS = 2000  # resamples per bootstrap interval unless stated


class Outcome(str, Enum):
    """The three outcomes. For an empirical statement PASS reads *holds* and FAIL
    *contradicted* (see :meth:`word`)."""

    PASS = "PASS"
    FAIL = "FAIL"
    INCONCLUSIVE = "INCONCLUSIVE"

    def word(self, kind: str = "bound") -> str:
        """``HOLDS`` / ``CONTRADICTED`` / ``INCONCLUSIVE`` for empirical checks, else the
        value itself."""
        if kind == "empirical":
            return {"PASS": "HOLDS", "FAIL": "CONTRADICTED"}.get(self.value, self.value)
        return self.value

    @classmethod
    def of(cls, passed: bool) -> Outcome:
        return cls.PASS if passed else cls.FAIL

    def __str__(self) -> str:  # "PASS", not "Outcome.PASS", in f-strings and tables
        return self.value


# Exit codes of every command that returns a verdict (documented in the README).
EXIT_CODES: dict[str, int] = {"PASS": 0, "FAIL": 1, "BAD_INPUT": 2, "INCONCLUSIVE": 3}


def exit_code(outcome: Outcome | str) -> int:
    """0 PASS, 1 FAIL, 3 INCONCLUSIVE (2 is reserved for bad input)."""
    return EXIT_CODES[Outcome(outcome).value]


def combine(outcomes: Iterable[Outcome | str]) -> Outcome:
    """FAIL if any FAIL; else INCONCLUSIVE if any INCONCLUSIVE or none given; else PASS."""
    seen = [Outcome(o) for o in outcomes]
    if not seen:
        return Outcome.INCONCLUSIVE
    if Outcome.FAIL in seen:
        return Outcome.FAIL
    if Outcome.INCONCLUSIVE in seen:
        return Outcome.INCONCLUSIVE
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
    """

    estimate: float
    low: float
    high: float
    level: float
    method: str
    n: int

    @property
    def defined(self) -> bool:
        return bool(np.isfinite(self.low) and np.isfinite(self.high))

    def excludes(self, value: float = 0.0) -> bool:
        return self.defined and (self.low > value or self.high < value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def __str__(self) -> str:
        if not self.defined:
            return f"{self.estimate:+.4g} [no interval]"
        return f"{self.estimate:+.4g} [{self.low:+.4g}, {self.high:+.4g}]"


def decide(
    interval: Interval, *, direction: int = +1, threshold: float = 0.0, min_n: int = 2
) -> Outcome:
    """Outcome of "the quantity is above ``threshold``" (``direction=+1``) or below it
    (``direction=-1``), from ``interval``.

    PASS when the interval lies strictly on the claimed side, FAIL when it lies strictly
    on the other side, INCONCLUSIVE when it contains ``threshold``, is undefined, or rests
    on fewer than ``min_n`` units.
    """
    if direction not in (-1, 1):
        raise ValueError(f"direction must be +1 or -1, got {direction}")
    if interval.n < min_n or not interval.defined:
        return Outcome.INCONCLUSIVE
    lo, hi = (interval.low, interval.high) if direction > 0 else (-interval.high, -interval.low)
    t = threshold * direction
    if lo > t:
        return Outcome.PASS
    if hi < t:
        return Outcome.FAIL
    return Outcome.INCONCLUSIVE


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
