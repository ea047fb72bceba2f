"""The verdict framework: outcomes (VACUOUS), minimum effects, the two-stage seed
bootstrap, Holm's adjustment, roles (statement / assumption / mechanism /
implementation), claim-level verdict text, rendering and exit codes.

Each outcome a claim can print is pinned here on a constructed case: a statement that
holds, one that fails, a vacuous one, an assumption not met, a mechanism contradicted
while the statement holds, weak evidence, and a Holm adjustment.
"""

from __future__ import annotations

import numpy as np
import pytest

from radius.stats import (
    Interval,
    Outcome,
    combine,
    decide,
    exit_code,
    holm,
    p_value,
    seed_user_interval,
)
from radius.verify.base import Check, ClaimResult, apply_holm
from radius.verify.render import claim_block, format_table, summary_table


def _iv(est, lo, hi, n=100, level=0.95):
    return Interval(est, lo, hi, level, "test", n)


def _bound(name, ok, *, role="", weak="", note=""):
    return Check(
        name, "a <= b", 1.0, 1.0, 0.0, "every case", ok, 10, role=role, weak=weak, note=note
    )


def _claim(checks, **kw):
    return ClaimResult("9.9", "test claim", "s", False, list(checks), **kw)


# ------------------------------------------------------------------ outcomes
def test_vacuous_ranks_between_inconclusive_and_pass():
    """combine: FAIL > INCONCLUSIVE > VACUOUS > PASS; exit codes 1, 3, 4, 0."""
    V, P, I, F = Outcome.VACUOUS, Outcome.PASS, Outcome.INCONCLUSIVE, Outcome.FAIL
    assert combine([P, V]) is V and combine([V, I]) is I and combine([V, F]) is F
    assert combine([P, P]) is P and combine([]) is I
    assert [exit_code(o) for o in (P, F, I, V)] == [0, 1, 3, 4]


@pytest.mark.parametrize(
    "kind,role,words",
    [
        ("bound", "statement", ("PASS", "FAIL", "INCONCLUSIVE", "VACUOUS")),
        ("empirical", "statement", ("HOLDS", "CONTRADICTED", "INCONCLUSIVE", "VACUOUS")),
        ("bound", "assumption", ("MET", "NOT MET", "INCONCLUSIVE", "VACUOUS")),
        ("empirical", "mechanism", ("HOLDS", "CONTRADICTED", "INCONCLUSIVE", "NOT OBSERVED")),
    ],
)
def test_outcome_words_depend_on_role(kind, role, words):
    """An outcome reads differently for each role: MET for an assumption, NOT OBSERVED
    for a vacuous mechanism."""
    got = tuple(o.word(kind, role) for o in Outcome)
    assert got == words


# ------------------------------------------------------------------ minimum effect
@pytest.mark.parametrize(
    "lo,hi,expected",
    [
        (0.03, 0.05, Outcome.PASS),  # wholly beyond +m
        (0.01, 0.05, Outcome.INCONCLUSIVE),  # straddles +m
        (-0.01, 0.01, Outcome.VACUOUS),  # inside (-m, m): no effect of the stated size
        (-0.05, -0.03, Outcome.FAIL),  # wholly beyond -m
        (-0.03, -0.01, Outcome.INCONCLUSIVE),  # straddles -m
    ],
)
def test_decide_with_minimum_effect(lo, hi, expected):
    """With a minimum effect m = 0.02 the band [-m, m] is 'no effect of the stated size'."""
    assert decide(_iv((lo + hi) / 2, lo, hi), min_effect=0.02) is expected


def test_decide_without_minimum_effect_is_three_way():
    """m = 0: an interval inside a tiny band still reads INCONCLUSIVE when it contains 0."""
    assert decide(_iv(0.0, -1e-9, 1e-9)) is Outcome.INCONCLUSIVE
    assert decide(_iv(0.001, 0.0005, 0.002)) is Outcome.PASS
    with pytest.raises(ValueError, match="min_effect must be >= 0"):
        decide(_iv(0, -1, 1), min_effect=-0.1)


def test_from_interval_notes_say_what_against_what():
    """A check that is not HOLDS carries a note in words: estimate, interval, decision point."""
    c = Check.from_interval(
        "x",
        "d",
        _iv(-0.004, -0.006, -0.002),
        tolerance="t",
        min_n=2,
        min_effect=0.02,
        role="mechanism",
    )
    assert c.label == "NOT OBSERVED"
    assert "inside +-0.02" in c.note and "-0.004" in c.note
    c2 = Check.from_interval("y", "d", _iv(-0.1, -0.2, -0.05), tolerance="t", min_n=2)
    assert c2.label == "CONTRADICTED" and "lies wholly below +0" in c2.note


# ------------------------------------------------------------------ seeds
def test_seed_user_interval_carries_the_seed_spread():
    """Two seeds that disagree widen the interval beyond the one-seed (users only) one,
    and the per-seed statistics are kept."""
    rng = np.random.default_rng(0)
    users = rng.normal(0.0, 0.01, 400)
    one = seed_user_interval(users[None, :] + 0.05)
    two = seed_user_interval(np.stack([users + 0.05, users - 0.05]))
    assert one.seeds is not None and len(two.seeds) == 2
    assert (two.high - two.low) > 5 * (one.high - one.low)
    assert decide(one) is Outcome.PASS and decide(two) is Outcome.INCONCLUSIVE
    assert "2 training seeds x 400 users" in two.method


def test_seed_user_interval_with_a_statistic_and_bad_shapes():
    vals = np.arange(12.0).reshape(3, 4)
    iv = seed_user_interval(vals, statistic=lambda b: float(np.median(b)))
    assert iv.estimate == pytest.approx(np.median(vals))
    with pytest.raises(ValueError, match="values must be"):
        seed_user_interval(np.zeros((2, 2, 2)))
    nan = seed_user_interval(np.array([[1.0, np.nan, 2.0]]))
    assert not nan.defined


# ------------------------------------------------------------------ Holm
def test_p_value_from_interval():
    """A 95% interval whose end touches 0 has p about 0.05; one far from 0 has p ~ 0."""
    half = 1.959964
    assert p_value(_iv(half, 0.0, 2 * half)) == pytest.approx(0.05, rel=1e-3)
    assert p_value(_iv(1.0, 1 - half, 1 + half)) == pytest.approx(0.3173, rel=1e-3)
    assert p_value(_iv(10.0, 9.0, 11.0)) < 1e-10
    assert np.isnan(p_value(_iv(1.0, float("nan"), float("nan"))))


def test_holm_steps_down():
    """Holm rejects in order of p while p_(i) <= alpha / (m - i + 1)."""
    assert holm([0.01, 0.04, 0.03], 0.05) == [True, False, False]
    assert holm([0.01, 0.02, 0.03], 0.05) == [True, True, True]
    assert holm([0.2, 0.001], 0.05) == [False, True]
    assert holm([float("nan"), 0.001], 0.05) == [False, True]


def test_apply_holm_turns_a_marginal_decision_inconclusive():
    """Two marginal empirical statement checks (p ~ 0.04 each > 0.05 / 2): neither is
    rejected, both read INCONCLUSIVE with a note. Beside a strong one (p ~ 0, rejected at
    0.05 / 2) the marginal one is tested at 0.05 / 1 and keeps HOLDS (Holm, not
    Bonferroni)."""
    marginal = Check.from_interval("m", "d", _iv(0.3, 0.01, 0.59), tolerance="t", min_n=2)
    marginal2 = Check.from_interval("m2", "d", _iv(0.3, 0.01, 0.59), tolerance="t", min_n=2)
    assert marginal.label == "HOLDS"
    adjusted = apply_holm([marginal, marginal2])
    assert [c.outcome for c in adjusted] == [Outcome.INCONCLUSIVE] * 2
    assert "Holm" in adjusted[0].note and adjusted[0].adjustment["raw_outcome"] == "PASS"
    strong = Check.from_interval("s", "d", _iv(1.0, 0.9, 1.1), tolerance="t", min_n=2)
    adj2 = apply_holm([strong, marginal])
    assert adj2[0].outcome is Outcome.PASS  # p ~ 0: rejected at 0.05 / 2
    assert adj2[1].adjustment["rejected"] is True and adj2[1].outcome is Outcome.PASS
    # idempotent, and mechanism checks are not part of the family
    assert apply_holm(adj2) == adj2
    mech = marginal.replace(role="mechanism")
    assert apply_holm([strong, mech])[1].outcome is Outcome.PASS


def test_claim_applies_holm_on_construction():
    marginal = Check.from_interval("m", "d", _iv(0.3, 0.01, 0.59), tolerance="t", min_n=2)
    res = _claim([marginal, marginal.replace(name="m2")])
    assert res.verdict == "INCONCLUSIVE"
    assert all(c.adjustment is not None for c in res.checks)


# ------------------------------------------------------------------ roles and verdicts
def test_roles_default_from_kind_and_evidence():
    ident = Check("i", "a = b", 0, 0, 0, "t", True, 1, kind="identity")
    probe = Check("p", "a <= b", 0, 0, 0, "t", True, 1, evidence="probe")
    real = Check("r", "a <= b", 0, 0, 0, "t", True, 1)
    assert (ident.role, probe.role, real.role) == ("implementation", "implementation", "statement")
    with pytest.raises(ValueError, match="role must be one of"):
        Check("x", "d", 0, 0, 0, "t", True, 1, role="vibe")
    with pytest.raises(ValueError, match="constructed probes is about the implementation"):
        Check("x", "d", 0, 0, 0, "t", True, 1, evidence="probe", role="statement")


def test_statement_fails():
    """A failing statement check makes the claim FAIL (exit 1)."""
    res = _claim([_bound("s", False, note="violated on 3 of 10 pairs")])
    assert res.verdict == "FAIL" and exit_code(res.outcome) == 1


def test_vacuous_statement_with_its_distance():
    """A statement whose premise holds for no real case: VACUOUS, exit 4, not INCONCLUSIVE."""
    vac = Check(
        "inside",
        "premise",
        0.09,
        1.0,
        -0.91,
        "t",
        False,
        0,
        outcome=Outcome.VACUOUS,
        note="no pair inside the radius; max r_share / W1 lower bound 0.09",
    )
    res = _claim([_bound("s", True), vac])
    assert res.verdict == "VACUOUS" and exit_code(res.outcome) == 4
    block = claim_block(res)
    assert "VACUOUS" in block and "max r_share / W1 lower bound 0.09" in block


def test_assumption_not_met_is_reported_not_decisive():
    """An assumption that is NOT MET leaves the verdict to the statement, which then says
    it was checked outside its premises."""
    res = _claim([_bound("s", True), _bound("quadratic model", False, role="assumption")])
    assert res.verdict == "PASS" and res.assumptions == "not met"
    assert "checked outside its premises (quadratic model not met)" in res.verdict_text
    assert "NOT MET" in claim_block(res)


def test_mechanism_contradicted_while_statement_holds():
    """A contradicted mechanism never decides: the statement holds, the mechanism line
    says CONTRADICTED."""
    mech = Check.from_interval(
        "pia lowers variance", "d", _iv(-0.2, -0.3, -0.1), tolerance="t", min_n=2, role="mechanism"
    )
    res = _claim([_bound("s", True), mech])
    assert res.verdict == "PASS" and res.mechanism == "CONTRADICTED"
    assert exit_code(res.outcome) == 0
    assert "mechanism: CONTRADICTED" in claim_block(res)


def test_weak_evidence_is_said_in_words():
    res = _claim([_bound("gap >= 0", True, weak="follows from KL >= 0 for any decoder")])
    assert res.verdict_text == "PASS; holds; weak evidence"
    assert res.weak_evidence == ["gap >= 0: follows from KL >= 0 for any decoder"]
    assert "weak evidence: gap >= 0: follows from KL >= 0" in claim_block(res)


def test_only_implementation_checks_is_inconclusive_and_broken_fails():
    ident = Check("i", "a = b", 0, 0, 0, "t", True, 1, kind="identity")
    assert _claim([ident]).verdict == "INCONCLUSIVE"
    broken = ident.replace(passed=False, outcome=Outcome.FAIL)
    res = _claim([_bound("s", True), broken])
    assert res.verdict == "FAIL" and res.implementation == "BROKEN"


def test_to_dict_names_every_role_and_warnings():
    mech = Check.from_interval(
        "m", "d", _iv(0.2, 0.1, 0.3), tolerance="t", min_n=2, role="mechanism"
    )
    res = _claim([_bound("s", True), mech], warnings=["the 'pia' model: hit its epoch cap"])
    d = res.to_dict()
    assert d["checks_by_role"]["mechanism"] == ["m"] and d["deciding_checks"] == ["s"]
    assert d["warnings"] == ["the 'pia' model: hit its epoch cap"]
    assert d["mechanism"] == "HOLDS" and d["assumptions"] == "none"
    assert "warning: the 'pia' model: hit its epoch cap" in claim_block(res)


# ------------------------------------------------------------------ rendering
def test_notes_wrap_and_are_never_cut():
    long = " ".join(f"word{i}" for i in range(60))
    res = _claim([_bound("s", False, note=long)])
    text = format_table({"9.9": res})
    assert "word59" in text and "word0" in text
    assert max(len(line) for line in claim_block(res).splitlines()) < 160
    assert "implementation  identities and constructed probes" in text  # the legend
    assert "9.9" in summary_table({"9.9": res})
