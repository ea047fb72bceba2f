"""The verdict types shared by every claim module.

A claim module exposes ``run(ctx: VerifyContext) -> ClaimResult``. A ``ClaimResult``
holds one or more ``Check``s; each check states its measured value, the bound it is
held against, the slack (how far inside the bound it is; negative means violated),
the tolerance stated up front, its *kind* and its outcome (``radius.stats.Outcome``:
PASS, FAIL or INCONCLUSIVE).

Kinds (design.md, "A verdict must be able to fail"):

* ``identity``: maths or implementation (closed form = direct sum, exact law = Monte
  Carlo). A failure is a bug in radius; a pass is no evidence about the model.
* ``bound``: an inequality that a trained model could violate.
* ``empirical``: a statistical statement about trained models or data, decided from an
  interval (holds / contradicted / inconclusive).

The claim's verdict rests on its bound and empirical checks over *real* cases
(``evidence="real"``); identities and checks on constructed probes
(``evidence="probe"``) are reported as the implementation's verification. A claim with
no real bound or empirical check is INCONCLUSIVE; a failing identity makes it FAIL
(radius itself is broken).

A claim module may also expose ``power(ctx) -> list[PowerRow]``: graded perturbations
of the real trained model and the smallest grade that flips each check's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radius.stats import Interval, Outcome, combine, decide

__all__ = ["Check", "ClaimResult", "VerifyOptions", "PowerRow", "KINDS", "EVIDENCE"]

KINDS: tuple[str, ...] = ("identity", "bound", "empirical")
EVIDENCE: tuple[str, ...] = ("real", "probe")


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
    passed : True exactly when the outcome is PASS.
    n : number of cases (pairs, users, masks) the check is over; 0 means no evidence.
    kind : ``identity``, ``bound`` or ``empirical`` (see the module docstring).
    outcome : PASS / FAIL / INCONCLUSIVE; derived from ``passed`` when not given.
    interval : the interval an empirical check was decided from (None for others).
    evidence : ``real`` (the dataset's users) or ``probe`` (constructed cases: they show
        the code works and never decide the claim).
    note : one line of context (why INCONCLUSIVE, "vacuous at this model", ...).
    """

    name: str
    description: str
    measured: float
    bound: float
    slack: float
    tolerance: str
    passed: bool
    n: int = 0
    kind: str = "bound"
    outcome: Outcome | None = None
    interval: Interval | None = None
    evidence: str = "real"
    note: str = ""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"check {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.evidence not in EVIDENCE:
            raise ValueError(
                f"check {self.name!r}: evidence must be one of {EVIDENCE}, got {self.evidence!r}"
            )
        outcome = Outcome.of(bool(self.passed)) if self.outcome is None else Outcome(self.outcome)
        object.__setattr__(self, "outcome", outcome)
        object.__setattr__(self, "passed", outcome is Outcome.PASS)

    @classmethod
    def from_interval(
        cls,
        name: str,
        description: str,
        interval: Interval,
        *,
        tolerance: str,
        min_n: int,
        direction: int = +1,
        threshold: float = 0.0,
        measured: float | None = None,
        bound: float | None = None,
        evidence: str = "real",
        note: str = "",
    ) -> Check:
        """An empirical check decided by ``radius.stats.decide`` on ``interval``: the claim
        is "above ``threshold``" (``direction=+1``) or "below" (-1). Slack is the distance
        of the interval's near end from the threshold (positive: HOLDS)."""
        iv = interval
        if not iv.defined:
            slack = float("nan")
        elif direction > 0:
            slack = iv.low - threshold
        else:
            slack = threshold - iv.high
        return cls(
            name=name,
            description=description,
            measured=iv.estimate if measured is None else measured,
            bound=threshold if bound is None else bound,
            slack=slack,
            tolerance=tolerance,
            passed=False,
            n=iv.n,
            kind="empirical",
            outcome=decide(iv, direction=direction, threshold=threshold, min_n=min_n),
            interval=iv,
            evidence=evidence,
            note=note,
        )

    @property
    def decides(self) -> bool:
        """Does this check count towards the claim's verdict?"""
        return self.kind != "identity" and self.evidence == "real"

    @property
    def label(self) -> str:
        """The outcome as printed: HOLDS / CONTRADICTED for empirical checks."""
        return Outcome(self.outcome).word(self.kind)


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
    def implementation(self) -> str:
        """``verified`` (every identity and probe check passes), ``BROKEN`` (one fails:
        a bug in radius), ``incomplete`` (none fails, one could not be resolved, e.g. a
        Monte Carlo too coarse) or ``none`` (the claim has no such checks)."""
        own = [c for c in self.checks if not c.decides]
        if not own:
            return "none"
        if any(c.outcome is Outcome.FAIL for c in own):
            return "BROKEN"
        if any(c.outcome is Outcome.INCONCLUSIVE for c in own):
            return "incomplete"
        return "verified"

    @property
    def outcome(self) -> Outcome:
        """combine() over the deciding checks; FAIL when the implementation is broken."""
        if self.implementation == "BROKEN":
            return Outcome.FAIL
        return combine(c.outcome for c in self.checks if c.decides)

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def verdict(self) -> str:
        return self.outcome.value

    def checks_by_kind(self) -> dict[str, list[Check]]:
        return {k: [c for c in self.checks if c.kind == k] for k in KINDS}

    def to_dict(self) -> dict[str, Any]:
        from radius.io import to_jsonable

        return {
            "claim": self.claim,
            "title": self.title,
            "statement": self.statement,
            "reconstruction": self.reconstruction,
            "verdict": self.verdict,
            "passed": self.passed,
            "implementation": self.implementation,
            "method": self.method,
            "checks_by_kind": {k: [c.name for c in v] for k, v in self.checks_by_kind().items()},
            "deciding_checks": [c.name for c in self.checks if c.decides],
            "checks": [to_jsonable(c) for c in self.checks],
            "details": to_jsonable(self.details),
            "context": to_jsonable(self.context),
        }


@dataclass(frozen=True)
class PowerRow:
    """How hard one check is to flip on the real trained model.

    Attributes
    ----------
    check : the check's name.
    kind : its kind (bound or empirical; identities have no power row).
    perturbation : what is perturbed (``"L_thz scaled"``, ``"lambda_A in tau"``).
    grades : the grades tried, mildest first, with the outcome at each:
        ``[{"grade": "x0.9", "outcome": "PASS", "measured": ...}, ...]``.
    baseline : the outcome unperturbed.
    flips_at : the mildest grade whose outcome differs from ``baseline``; None when
        none does (then ``label`` says "cannot fail here").
    note : how to read it.
    """

    check: str
    kind: str
    perturbation: str
    grades: list[dict[str, Any]]
    baseline: str
    flips_at: str | None
    note: str = ""

    @property
    def label(self) -> str:
        return f"flips at {self.flips_at}" if self.flips_at is not None else "cannot fail here"

    @classmethod
    def from_grades(
        cls,
        check: str,
        kind: str,
        perturbation: str,
        baseline: Outcome | str,
        grades: list[tuple[str, Outcome | str, float]],
        note: str = "",
    ) -> PowerRow:
        """Build a row from ``(grade label, outcome, measured)`` triples, mildest first."""
        base = Outcome(baseline).value
        rows = [
            {"grade": g, "outcome": Outcome(o).value, "measured": float(m)} for g, o, m in grades
        ]
        flip = next((r["grade"] for r in rows if r["outcome"] != base), None)
        return cls(check, kind, perturbation, rows, base, flip, note)

    def to_dict(self) -> dict[str, Any]:
        return {
            "check": self.check,
            "kind": self.kind,
            "perturbation": self.perturbation,
            "grades": self.grades,
            "baseline": self.baseline,
            "flips_at": self.flips_at,
            "label": self.label,
            "note": self.note,
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
