"""Tests of the T2.6 claim module: verdicts on a small dataset and negative controls."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radius.data.synthetic import SyntheticParams, default_dataset
from radius.stats import Outcome
from radius.verify import claim_module, t2_6
from radius.verify.base import VerifyOptions
from radius.verify.context import VerifyContext

MC_CHECKS = ("pair_exact_in_mc_ci", "triple_exact_in_mc_ci")
BOUND_CHECKS = (
    "pair_hoeffding_bound",
    "pair_chernoff_bound",
    "pair_kl_bound",
    "triple_hoeffding_bound",
)


@pytest.fixture(scope="module")
def small_ctx() -> VerifyContext:
    ds = default_dataset(SyntheticParams(n_users=600, n_items=300, n_communities=6, n_max=150))
    opts = VerifyOptions(seed=0, n_pairs=60, n_users=40, n_mc=1500, quick=True)
    return VerifyContext(ds, options=opts)


@pytest.fixture(scope="module")
def result(small_ctx):
    return t2_6.run(small_ctx)


def _by_name(res):
    return {c.name: c for c in res.checks}


def test_registered_with_constants():
    """The registry maps 2.6 to this module, which states a reconstruction."""
    assert claim_module("2.6") is t2_6
    assert t2_6.CLAIM_ID == "2.6" and t2_6.RECONSTRUCTION is True
    assert "Reconstruction" in t2_6.STATEMENT


def test_run_passes_with_evidence(result):
    """On real pairs and triples every check passes, over a non-empty set of cases; the
    laws, Monte Carlo agreements and tail bounds are identities, and the one statement
    about the data (neighbour expansion) is empirical with an interval and decides."""
    checks = _by_name(result)
    assert set(checks) == {"pair_law_moments", *MC_CHECKS, *BOUND_CHECKS, "neighbour_expansion"}
    for c in result.checks:
        assert c.passed, c
        assert c.n > 0 and c.tolerance
        want = "empirical" if c.name == "neighbour_expansion" else "identity"
        assert c.kind == want, c
    exp = checks["neighbour_expansion"]
    assert exp.decides and exp.interval is not None and exp.interval.low > 0
    assert exp.label == "HOLDS"
    assert result.implementation == "verified"
    assert result.passed and result.verdict == "PASS"
    json.dumps(result.to_dict())
    flip = result.details["real_next_triple_flip"]["0.5"]
    assert flip.low <= flip.estimate <= flip.high


def test_neighbour_expansion_three_outcomes():
    """Near pairs expanding more HOLDS, less is CONTRADICTED, equal or too few INCONCLUSIVE."""
    rng = np.random.default_rng(0)
    far = 1.0 + 0.1 * rng.random(50)
    c = t2_6.check_neighbour_expansion(far + 0.5, far)
    assert c.outcome is Outcome.PASS and c.label == "HOLDS" and c.interval.low > 0
    c = t2_6.check_neighbour_expansion(far - 0.5, far)
    assert c.outcome is Outcome.FAIL and c.label == "CONTRADICTED" and c.interval.high < 0
    c = t2_6.check_neighbour_expansion(rng.permutation(far), far)
    assert c.outcome is Outcome.INCONCLUSIVE and "contains 0" in c.note
    c = t2_6.check_neighbour_expansion(far[:5] + 1.0, far)
    assert c.outcome is Outcome.INCONCLUSIVE and "need" in c.note


def test_uniform_contraction_law_makes_expansion_inconclusive(small_ctx):
    """With q = 0 (the uniform contraction) near and distant pairs expand alike: no
    evidence either way, the claim is INCONCLUSIVE with the implementation verified."""
    res = t2_6.run(small_ctx, flip_scale=0.0)
    c = _by_name(res)["neighbour_expansion"]
    assert c.outcome is Outcome.INCONCLUSIVE and c.measured == 0.0
    assert res.implementation == "verified" and res.outcome is Outcome.INCONCLUSIVE


def test_power_rows_flip_when_applied(small_ctx, result):
    """power() grades the empirical check; each reported flip, applied through run(),
    gives the outcome the row reports, and the milder grades keep the baseline."""
    rows = t2_6.power(small_ctx)
    assert {r.check for r in rows} == {"neighbour_expansion"}
    base = _by_name(result)["neighbour_expansion"]
    for r in rows:
        assert r.baseline == base.outcome.value
    by = {r.perturbation.split(":")[0]: r for r in rows}
    q = by["wrong masking law"]
    assert q.flips_at == "q x0"
    near = next(r for r in rows if r.perturbation.startswith("near pairs"))
    assert near.flips_at is not None
    for g in near.grades:
        frac = float(g["grade"].rstrip("%")) / 100
        got = _by_name(t2_6.run(small_ctx, near_replaced=frac))["neighbour_expansion"]
        assert got.outcome.value == g["outcome"]
        assert got.measured == pytest.approx(g["measured"])


def test_details_report_expansion_and_flips(result):
    """Near pairs expand: E[D]/d and the excess q s exceed the distant pairs' at every rho < 1."""
    pairs = result.details["pairs"]
    for rho, near in pairs["near"]["per_rho"].items():
        far = pairs["distant"]["per_rho"][rho]
        assert near["mean_excess_q_s"] > far["mean_excess_q_s"]
        assert near["mean_ED_over_d"] > far["mean_ED_over_d"] >= float(rho)
    flips = result.details["triples"]
    assert set(flips) == {"0.25", "0.5", "0.75", "0.9"}
    for per in flips.values():
        assert 0.0 <= per["next"]["mean_flip"] <= 1.0
        assert abs(per["next"]["mean_flip"] - per["next"]["mean_mc_flip"]) < 0.05


@pytest.mark.parametrize("law", ["uniform", "contraction"])
def test_wrong_pair_law_fails(small_ctx, law):
    """Negative control: Bin(d+s, rho) or Bin(d, rho) as the law fails the MC and moment
    checks: the implementation is BROKEN and the claim FAILs."""
    res = t2_6.run(small_ctx, law=law)
    assert res.implementation == "BROKEN" and res.outcome is Outcome.FAIL
    checks = _by_name(res)
    assert not checks["pair_exact_in_mc_ci"].passed
    assert not checks["pair_law_moments"].passed
    assert checks["triple_exact_in_mc_ci"].passed


def test_independent_triple_law_fails(small_ctx):
    """Negative control: ignoring that u's mask is shared by both distances fails the MC check."""
    checks = _by_name(t2_6.run(small_ctx, triple_law="independent"))
    assert not checks["triple_exact_in_mc_ci"].passed
    assert checks["pair_exact_in_mc_ci"].passed


def test_too_tight_bounds_fail(small_ctx):
    """Negative control: every bound exponent multiplied by 4 fails every bound check."""
    checks = _by_name(t2_6.run(small_ctx, bound_scale=4.0))
    for name in BOUND_CHECKS:
        assert not checks[name].passed, name
    assert checks["pair_exact_in_mc_ci"].passed


def test_check_functions_decide_correctly():
    """The MC rule rejects an exact value far from its MC frequency; bounds must be >= exact."""
    count = np.array([500, 10, 0])
    ok, summary = t2_6.check_mc_agreement(
        "mc", "", np.array([0.5, 0.01, 0.0]), count, 1000, confidence=0.999
    )
    assert ok.passed and ok.n == 3 and summary["outside"] == 0
    bad, summary = t2_6.check_mc_agreement(
        "mc", "", np.array([0.6, 0.01, 0.0]), count, 1000, confidence=0.999
    )
    assert not bad.passed and summary["outside"] == 1
    assert t2_6.check_bound_dominates("b", "", np.array([0.1, 0.0]), np.array([0.1, 0.0])).passed
    assert not t2_6.check_bound_dominates("b", "", np.array([0.2]), np.array([0.1])).passed


def test_zero_cases_fail():
    """A check over zero cases reports FAIL (no evidence)."""
    empty = np.zeros(0)
    mc, _ = t2_6.check_mc_agreement("mc", "", empty, empty, 100, confidence=0.999)
    bound = t2_6.check_bound_dominates("b", "", empty, empty)
    assert not mc.passed and mc.n == 0
    assert not bound.passed and bound.n == 0


def test_run_validates_hooks(small_ctx):
    """Unknown laws are rejected with the documented messages."""
    with pytest.raises(ValueError, match="law must be one of 'masked', 'uniform', 'contraction'"):
        t2_6.run(small_ctx, law="poisson")
    with pytest.raises(ValueError, match="triple_law must be one of 'masked', 'independent'"):
        t2_6.run(small_ctx, triple_law="uniform")
    with pytest.raises(ValueError, match=r"rho must be in \(0, 1\]"):
        t2_6.run(small_ctx, rhos=(0.5, 0.0))
