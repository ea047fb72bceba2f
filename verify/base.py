"""The verdict types shared by every claim module.

A claim module exposes ``run(ctx: VerifyContext) -> ClaimResult``. A ``ClaimResult``
holds one or more ``Check``s; each check states its measured value, the bound it is
held against, the slack (how far inside the bound it is; negative means violated),
the tolerance stated up front, its *kind*, its *role* and its outcome
(``radius.stats.Outcome``: PASS, FAIL, INCONCLUSIVE or VACUOUS).

Kinds (how a check is decided):

* ``identity``: maths or implementation (closed form = direct sum, exact law = Monte
  Carlo);
* ``bound``: an inequality that a trained model could violate;
* ``empirical``: a statistical statement decided from an interval (holds / contradicted
  / inconclusive).

Roles (what a check is about; design.md, "A verdict must be able to fail"). A verdict
is a sentence about the paper's claim, so the report keeps these apart:

* ``statement``: follows from the claim as proved (paper_checks.md derives each in a
  line or two). Only these decide the claim's verdict. A statement check that no
  realistic model could violate carries ``weak`` (why), and the verdict says "weak
  evidence";
* ``assumption``: a premise the proof needs (P3.2's local quadratic model, T2.3's
  L_thz estimate), checked on the model and data: MET / NOT MET. Where one is not met
  the verdict says the statement was checked outside its premises;
* ``mechanism``: the paper's informal consequences in trained models (masking helps,
  PIA lowers across-mask variance, clean input separates cohorts): empirical, with an
  interval that includes the training-seed spread, a minimum effect stated before
  computing, and its own outcome line; never the statement's verdict;
* ``implementation``: identities and constructed probes: a failure is a bug in radius
  (the claim then FAILs: its measurements cannot be trusted), a pass is no evidence
  about the model.

A check's role defaults from its kind and evidence: identities and probes are
``implementation``, bound and empirical checks on real data ``statement``.

VACUOUS is an outcome of its own: the statement's premise holds for no real case (no
user pair inside T2.3's sharing radius at any training point), reported with how far
the data are from it; INCONCLUSIVE means more data could decide. When several empirical
statement checks decide one claim, their outcomes are adjusted by Holm's procedure
(family-wise error 5%) before they are combined.

A claim module may also expose ``power(ctx) -> list[PowerRow]``: graded perturbations
of the real trained model and the smallest grade that flips each check's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from radius.stats import BOOTSTRAP_LEVEL, Interval, Outcome, combine, decide, holm, p_value

__all__ = [
    "Check",
    "ClaimResult",
    "VerifyOptions",
    "PowerRow",
    "KINDS",
    "EVIDENCE",
    "ROLES",
    "ROLE_TITLES",
    "apply_holm",
]

KINDS: tuple[str, ...] = ("identity", "bound", "empirical")
EVIDENCE: tuple[str, ...] = ("real", "probe")
ROLES: tuple[str, ...] = ("statement", "assumption", "mechanism", "implementation")
ROLE_TITLES: dict[str, str] = {
    "statement": "statement (follows from the claim as proved; decides the verdict)",
    "assumption": "assumptions (premises of the proof, checked on this model and data)",
    "mechanism": "mechanism (the paper's informal consequences in trained models; never decides)",
    "implementation": "implementation (identities and constructed probes: a failure is a "
    "bug in radius, a pass is no evidence about the model)",
}
FAMILY_ALPHA = 1 - BOOTSTRAP_LEVEL  # family-wise error of the Holm adjustment


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
    note : what was measured, against what and by how much (plain words; every check
        that is not PASS carries one).
    role : ``statement``, ``assumption``, ``mechanism`` or ``implementation`` (module
        docstring); "" derives it: identities and probes are ``implementation``, the
        rest ``statement``.
    weak : for a statement check, why a PASS is weak evidence ("an identity of the
        loss: holds for any model"); "" when it is not known to be weak.
    min_effect : the minimum effect stated before computing (empirical checks; 0: none).
    adjustment : how the outcome was adjusted for multiplicity (Holm), or None.
    threshold : the decision point of an interval check (``from_interval``), or None.
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
    role: str = ""
    weak: str = ""
    min_effect: float = 0.0
    adjustment: dict[str, Any] | None = None
    threshold: float | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"check {self.name!r}: kind must be one of {KINDS}, got {self.kind!r}")
        if self.evidence not in EVIDENCE:
            raise ValueError(
                f"check {self.name!r}: evidence must be one of {EVIDENCE}, got {self.evidence!r}"
            )
        role = self.role or (
            "implementation" if self.kind == "identity" or self.evidence == "probe" else "statement"
        )
        if role not in ROLES:
            raise ValueError(f"check {self.name!r}: role must be one of {ROLES}, got {role!r}")
        if role != "implementation" and self.evidence == "probe":
            raise ValueError(
                f"check {self.name!r}: a check on constructed probes is about the "
                f"implementation, not the {role}"
            )
        object.__setattr__(self, "role", role)
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
        role: str = "",
        min_effect: float = 0.0,
        weak: str = "",
    ) -> Check:
        """An empirical check decided by ``radius.stats.decide`` on ``interval``: the claim
        is "above ``threshold``" (``direction=+1``) or "below" (-1), by at least
        ``min_effect`` when one is stated. Slack is the distance of the interval's near
        end from ``threshold + min_effect`` (positive: HOLDS). When the outcome is not
        HOLDS and no ``note`` is given, the note says in words what was measured, against
        what, and by how much."""
        iv = interval
        edge = threshold + direction * min_effect
        if not iv.defined:
            slack = float("nan")
        elif direction > 0:
            slack = iv.low - edge
        else:
            slack = edge - iv.high
        outcome = decide(
            iv, direction=direction, threshold=threshold, min_n=min_n, min_effect=min_effect
        )
        if not note and outcome is not Outcome.PASS:
            note = interval_note(
                iv,
                outcome,
                direction=direction,
                threshold=threshold,
                min_effect=min_effect,
                min_n=min_n,
            )
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
            outcome=outcome,
            interval=iv,
            evidence=evidence,
            note=note,
            role=role,
            min_effect=float(min_effect),
            weak=weak,
            threshold=float(threshold),
        )

    @property
    def decides(self) -> bool:
        """Does this check count towards the claim's verdict? (statement checks only)"""
        return self.role == "statement"

    @property
    def label(self) -> str:
        """The outcome as printed: HOLDS / CONTRADICTED for empirical checks, MET / NOT
        MET for assumptions, NOT OBSERVED for a vacuous mechanism."""
        return Outcome(self.outcome).word(self.kind, self.role)

    def replace(self, **changes: Any) -> Check:
        """A copy with ``changes`` (``dataclasses.replace``)."""
        import dataclasses

        return dataclasses.replace(self, **changes)


def interval_note(
    iv: Interval,
    outcome: Outcome,
    *,
    direction: int = +1,
    threshold: float = 0.0,
    min_effect: float = 0.0,
    min_n: int = 2,
) -> str:
    """Plain words for an interval decision that is not HOLDS: the estimate and its
    interval against the decision point (and the minimum effect), and by how much."""
    side = "above" if direction > 0 else "below"
    other = "below" if direction > 0 else "above"
    point = f"{threshold:+.4g}" + (f" by the stated minimum {min_effect:g}" if min_effect else "")
    if iv.n < min_n:
        return f"only {iv.n} units (need {min_n}): no evidence"
    if not iv.defined:
        return f"estimate {iv.estimate:+.4g}, no interval could be formed: no evidence"
    text = f"estimate {iv.estimate:+.4g}, interval [{iv.low:+.4g}, {iv.high:+.4g}]"
    if outcome is Outcome.FAIL:
        return f"{text} lies wholly {other} {point}: the claimed direction ({side}) is contradicted"
    if outcome is Outcome.VACUOUS:
        return (
            f"{text} lies inside +-{min_effect:g} of {threshold:+.4g}: no effect of the "
            "stated minimum size"
        )
    return f"{text} contains {point}: the data cannot decide"


def apply_holm(checks: list[Check], *, alpha: float = FAMILY_ALPHA) -> list[Check]:
    """Holm's step-down adjustment over the empirical statement checks of one claim.

    The family is every ``role="statement"`` empirical check with an interval and no
    minimum effect; with fewer than two there is nothing to adjust. Each check's
    p-value is read off its interval (``radius.stats.p_value``, normal approximation);
    a check whose own interval decided HOLDS or CONTRADICTED but whose hypothesis Holm
    does not reject at family-wise error ``alpha`` becomes INCONCLUSIVE, saying so.
    INCONCLUSIVE and VACUOUS checks stay as they are (Holm only makes decisions
    stricter). Idempotent: a check already adjusted keeps its adjustment.
    """
    family = [
        i
        for i, c in enumerate(checks)
        if c.role == "statement"
        and c.kind == "empirical"
        and c.interval is not None
        and c.min_effect == 0
    ]
    if len(family) < 2 or any(checks[i].adjustment is not None for i in family):
        return list(checks)
    pv = [
        p_value(checks[i].interval, checks[i].threshold or 0.0)  # type: ignore[arg-type]
        for i in family
    ]
    rejected = holm(pv, alpha)
    out = list(checks)
    m = len(family)
    for i, p, rej in zip(family, pv, rejected):
        c = checks[i]
        record = {"method": "Holm", "family": m, "alpha": alpha, "p": p, "rejected": rej}
        if c.outcome in (Outcome.PASS, Outcome.FAIL) and not rej:
            note = (
                f"{c.note + '; ' if c.note else ''}its interval alone would read "
                f"{c.label}, but after Holm's correction over the {m} interval checks that "
                f"decide this claim it is not significant (p = {p:.3g})"
            )
            out[i] = c.replace(
                outcome=Outcome.INCONCLUSIVE,
                passed=False,
                note=note,
                adjustment={**record, "raw_outcome": c.outcome.value},
            )
        else:
            out[i] = c.replace(adjustment={**record, "raw_outcome": c.outcome.value})
    return out


@dataclass
class ClaimResult:
    """All checks of one claim plus the data behind them (JSON-able).

    ``warnings`` lists what the reader must know about the models the claim used
    (an epoch cap hit before early stopping, a degenerate posterior): the report prints
    them under the claim's verdict.
    """

    claim: str
    title: str
    statement: str
    reconstruction: bool
    checks: list[Check]
    method: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    context: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.checks = apply_holm(list(self.checks))

    def by_role(self, role: str) -> list[Check]:
        if role not in ROLES:
            raise ValueError(f"role must be one of {ROLES}, got {role!r}")
        return [c for c in self.checks if c.role == role]

    @property
    def implementation(self) -> str:
        """``verified`` (every identity and probe check passes), ``BROKEN`` (one fails:
        a bug in radius), ``incomplete`` (none fails, one could not be resolved, e.g. a
        Monte Carlo too coarse) or ``none`` (the claim has no such checks)."""
        own = self.by_role("implementation")
        if not own:
            return "none"
        if any(c.outcome is Outcome.FAIL for c in own):
            return "BROKEN"
        if any(c.outcome is not Outcome.PASS for c in own):
            return "incomplete"
        return "verified"

    @property
    def assumptions(self) -> str:
        """``met`` (every assumption check MET), ``not met`` (one is not), ``unresolved``
        (none fails, one could not be checked) or ``none`` (the claim states none)."""
        own = self.by_role("assumption")
        if not own:
            return "none"
        if any(c.outcome is Outcome.FAIL for c in own):
            return "not met"
        if any(c.outcome is not Outcome.PASS for c in own):
            return "unresolved"
        return "met"

    @property
    def mechanism(self) -> str:
        """The mechanism checks' outcomes in words (``HOLDS``, ``CONTRADICTED``,
        ``2 HOLDS, 1 NOT OBSERVED``) or ``none``; never part of the verdict."""
        own = self.by_role("mechanism")
        if not own:
            return "none"
        labels = [c.label for c in own]
        uniq = list(dict.fromkeys(labels))
        if len(uniq) == 1:
            return uniq[0]
        return ", ".join(f"{labels.count(u)} {u}" for u in uniq)

    @property
    def outcome(self) -> Outcome:
        """combine() over the statement checks; FAIL when the implementation is broken."""
        if self.implementation == "BROKEN":
            return Outcome.FAIL
        return combine(c.outcome for c in self.by_role("statement"))

    @property
    def passed(self) -> bool:
        return self.outcome is Outcome.PASS

    @property
    def verdict(self) -> str:
        return self.outcome.value

    @property
    def weak_evidence(self) -> list[str]:
        """Why a PASS of this claim is weak evidence: the ``weak`` reasons of its passing
        statement checks (empty when none is known to be weak)."""
        return [
            f"{c.name}: {c.weak}"
            for c in self.by_role("statement")
            if c.weak and c.outcome is Outcome.PASS
        ]

    @property
    def verdict_text(self) -> str:
        """The verdict as one sentence: outcome, "weak evidence" where it applies, and
        "checked outside its premises" where an assumption is not met."""
        parts = [self.verdict]
        if self.outcome is Outcome.PASS and self.weak_evidence:
            parts.append("holds; weak evidence")
        if self.implementation == "BROKEN":
            parts.append("an implementation check failed: the measurements cannot be trusted")
        not_met = [c.name for c in self.by_role("assumption") if c.outcome is Outcome.FAIL]
        if not_met and self.by_role("statement"):
            parts.append(f"checked outside its premises ({', '.join(not_met)} not met)")
        return "; ".join(parts)

    def checks_by_kind(self) -> dict[str, list[Check]]:
        return {k: [c for c in self.checks if c.kind == k] for k in KINDS}

    def checks_by_role(self) -> dict[str, list[Check]]:
        return {r: self.by_role(r) for r in ROLES}

    def to_dict(self) -> dict[str, Any]:
        from radius.io import to_jsonable

        return {
            "claim": self.claim,
            "title": self.title,
            "statement": self.statement,
            "reconstruction": self.reconstruction,
            "verdict": self.verdict,
            "verdict_text": self.verdict_text,
            "passed": self.passed,
            "implementation": self.implementation,
            "assumptions": self.assumptions,
            "mechanism": self.mechanism,
            "weak_evidence": self.weak_evidence,
            "warnings": list(self.warnings),
            "method": self.method,
            "checks_by_kind": {k: [c.name for c in v] for k, v in self.checks_by_kind().items()},
            "checks_by_role": {r: [c.name for c in v] for r, v in self.checks_by_role().items()},
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
    seeds : training seeds of every mechanism check (``seed``, ``seed + 1``, ...): its
        interval spans them (``radius.stats.seed_user_interval``).
    quick : smaller sizes everywhere (tests).
    """

    seed: int = 0
    n_pairs: int = 400
    n_users: int = 200
    n_mc: int = 4000
    confidence: float = 0.999
    min_fraction: float = 0.99
    seeds: int = 3
    quick: bool = False

    def __post_init__(self) -> None:
        if int(self.seeds) < 1:
            raise ValueError(f"seeds must be >= 1, got {self.seeds}")
