"""The verdict types shared by every claim module.

A claim module exposes ``run(ctx: VerifyContext) -> ClaimResult``. A ``ClaimResult``
holds one or more ``Check``s; each check states its measured value, the bound it is
held against, the slack (how far inside the bound it is; negative means violated),
the tolerance stated up front, and PASS/FAIL. The claim passes only if every check
passes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = ["Check", "ClaimResult", "VerifyOptions"]


@dataclass(frozen=True)
class Check:
    """One verdict.

    Attributes
    ----------
    name : short identifier, e.g. ``"exact_inside_mc_ci"``.
    description : the inequality or property checked, in one line.
    measured : the measured quantity (a float; for fractions, the fraction).
    bound : what ``measured`` is held against.
    slack : signed margin, positive when the check holds with room to spare.
    tolerance : how the verdict is decided, stated before it is computed
        (e.g. ``"fraction >= 0.99"``, ``"99.9% Clopper-Pearson interval"``).
    passed : the verdict.
    n : number of cases (pairs, users, masks) the check is over; 0 means no evidence.
    """

    name: str
    description: str
    measured: float
    bound: float
    slack: float
    tolerance: str
    passed: bool
    n: int = 0


@dataclass
class ClaimResult:
    """All checks of one claim plus the data behind them (JSON-able)."""

    claim: str
    title: str
    statement: str
    reconstruction: bool
    checks: list[Check]
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)

    @property
    def verdict(self) -> str:
        return "PASS" if self.passed else "FAIL"

    def to_dict(self) -> dict[str, Any]:
        from radius.io import to_jsonable

        return {
            "claim": self.claim,
            "title": self.title,
            "statement": self.statement,
            "reconstruction": self.reconstruction,
            "verdict": self.verdict,
            "passed": self.passed,
            "method": self.method,
            "checks": [to_jsonable(c) for c in self.checks],
            "details": to_jsonable(self.details),
            "context": to_jsonable(self.context),
        }


@dataclass(frozen=True)
class VerifyOptions:
    """Options shared by the claim modules (each module documents what it uses).

    Attributes
    ----------
    seed : seed for every sampled pair, mask and Monte Carlo draw.
    n_pairs : number of user pairs sampled for pairwise checks.
    n_users : number of users sampled for per-user checks.
    n_mc : Monte Carlo sample size (masks or posterior samples).
    confidence : confidence level of Monte Carlo intervals.
    min_fraction : fraction of cases on which a "most cases" inequality must hold.
    quick : smaller sizes everywhere (tests).
    """

    seed: int = 0
    n_pairs: int = 400
    n_users: int = 200
    n_mc: int = 4000
    confidence: float = 0.999
    min_fraction: float = 0.99
    quick: bool = False
