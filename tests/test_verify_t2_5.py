"""Tests of the T2.5 claim module (compromise gap, latent geometry, cohort separation)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from radius.stats import Outcome, combine, decide
from radius.verify import t2_5

GAP_CHECKS = (
    "gap_nonnegative",
    "gap_zero_identical_inputs",
    "gap_zero_without_overlap",
    "gap_positive_with_overlap",
    "gap_monotone_in_overlap",
)


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return t2_5.run(tiny_ctx)


def _by_name(r):
    return {c.name: c for c in r.checks}


def test_module_constants():
    """The module states its claim id, title, statement and reconstruction flag."""
    assert t2_5.CLAIM_ID == "2.5" and t2_5.RECONSTRUCTION is True
    assert "p_bar" in t2_5.STATEMENT and t2_5.TITLE


EMPIRICAL = (
    "spearman_input_vs_latent_clean",
    "contrast_clean_vs_pia",
    "contrast_clean_vs_masking",
    "cohort_silhouette_clean_gt_pia",
)


@pytest.mark.slow
def test_gap_identities_pass_and_do_not_decide(result):
    """The exact-gap properties hold on trained models; they are identities, never deciding."""
    c = _by_name(result)
    for name in GAP_CHECKS:
        assert c[name].passed and c[name].kind == "identity" and not c[name].decides, c[name]
        assert c[name].n > 0 and c[name].tolerance
    assert c["gap_monotone_in_overlap"].measured >= 0.9
    assert result.implementation == "verified"
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_empirical_checks_carry_intervals(result):
    """Tracking, both contrasts and the silhouette difference are empirical checks decided
    from their intervals; the verdict combines exactly these."""
    c = _by_name(result)
    for name in EMPIRICAL:
        chk = c[name]
        assert chk.kind == "empirical" and chk.evidence == "real" and chk.interval is not None
        assert chk.interval.low <= chk.measured <= chk.interval.high
        assert chk.outcome == decide(chk.interval, direction=+1, threshold=0.0, min_n=20)
    assert result.outcome == combine(c[n].outcome for n in EMPIRICAL)
    # the tracking check HOLDS on the tiny clean model (activity-free input distance)
    assert c["spearman_input_vs_latent_clean"].label == "HOLDS"
    sp = result.details["spearman"]
    assert sp["clean"]["rho"] == pytest.approx(c["spearman_input_vs_latent_clean"].measured)
    diff = sp["clean"]["rho"] - sp["pia"]["rho"]
    assert c["contrast_clean_vs_pia"].measured == pytest.approx(diff)
    assert set(sp["input_convention"]) >= {"clean", "masking", "pia"}


@pytest.mark.slow
def test_permuted_inputs_cannot_hold(tiny_ctx, result):
    """Negative control: latent codes of permuted users: tracking no longer HOLDS and the
    claim's verdict is not PASS; the gap identities are untouched."""
    r = t2_5.run(tiny_ctx, control="permuted_inputs")
    c = _by_name(r)
    assert c["spearman_input_vs_latent_clean"].outcome is not Outcome.PASS
    assert r.verdict != "PASS"
    for name in GAP_CHECKS:
        assert c[name].passed == _by_name(result)[name].passed


@pytest.mark.slow
def test_power_rows_flip_and_the_flips_are_real(tiny_ctx):
    """power(): one row per empirical check (codes permuted; a planted cohort separation for
    the silhouette); each reported flip is a real change of outcome."""
    rows = t2_5.power(tiny_ctx)
    assert [r.check for r in rows] == list(EMPIRICAL)
    for row in rows:
        grades = t2_5.POWER_PLANT if row.check.startswith("cohort") else t2_5.POWER_FRACTIONS
        assert row.kind == "empirical" and len(row.grades) == len(grades)
        assert row.flips_at is not None, row  # the strongest grade flips each check here
        flipped = next(g for g in row.grades if g["grade"] == row.flips_at)
        assert flipped["outcome"] != row.baseline


@pytest.mark.slow
def test_unweighted_p_bar_fails_gap_checks(tiny_ctx):
    """Negative control: the unweighted mean as shared output breaks 'zero without overlap'
    and the monotone growth of G (identities: the implementation is BROKEN, verdict FAIL)."""
    r = t2_5.run(tiny_ctx, p_bar="unweighted")
    c = _by_name(r)
    assert not c["gap_zero_without_overlap"].passed
    assert not c["gap_monotone_in_overlap"].passed
    assert r.implementation == "BROKEN" and r.verdict == "FAIL"


# --------------------------------------------------------------------------- constructed cases
def _pairs(n=200, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(n), rng


def test_tracking_holds_is_contradicted_and_inconclusive():
    """tracking_check: W2 increasing in d_x HOLDS, decreasing is CONTRADICTED, independent
    noise or too few pairs is INCONCLUSIVE."""
    d, rng = _pairs()
    noise = 0.2 * rng.standard_normal(d.size)
    assert t2_5.tracking_check(d, d + noise).label == "HOLDS"
    assert t2_5.tracking_check(d, -d + noise).label == "CONTRADICTED"
    indep = t2_5.tracking_check(d, np.random.default_rng(7).random(d.size))
    assert indep.label == "INCONCLUSIVE" and indep.interval.low < 0 < indep.interval.high
    few = t2_5.tracking_check(d[:10], d[:10])
    assert few.label == "INCONCLUSIVE" and few.n == 10


def test_contrast_holds_is_contradicted_and_inconclusive():
    """contrast_check (paired on the same pairs): a cleaner clean model HOLDS, a noisier one is
    CONTRADICTED, identical models are INCONCLUSIVE."""
    d, rng = _pairs()
    tight = d + 0.05 * rng.standard_normal(d.size)
    loose = d + 0.5 * rng.standard_normal(d.size)
    assert t2_5.contrast_check(d, tight, loose, other="pia").label == "HOLDS"
    assert t2_5.contrast_check(d, loose, tight, other="pia").label == "CONTRADICTED"
    same = t2_5.contrast_check(d, tight, tight, other="masking")
    assert same.label == "INCONCLUSIVE" and same.measured == 0.0
    assert same.name == "contrast_clean_vs_masking"


def test_silhouette_holds_is_contradicted_and_inconclusive():
    """silhouette_check: per-user silhouettes higher for clean HOLD, lower are CONTRADICTED,
    equal on average (noise) is INCONCLUSIVE."""
    rng = np.random.default_rng(3)
    other = rng.uniform(-0.5, 0.5, 300)
    assert t2_5.silhouette_check(other + 0.1, other).label == "HOLDS"
    assert t2_5.silhouette_check(other - 0.1, other).label == "CONTRADICTED"
    noise = rng.standard_normal(300) * 0.01
    assert t2_5.silhouette_check(other + noise - noise.mean(), other).label == "INCONCLUSIVE"


def test_silhouette_per_user_separates_planted_clusters():
    """silhouette_per_user is near 1 for well-separated labelled clusters, None for one label."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    mu = rng.standard_normal((60, 3)) * 0.1 + labels[:, None] * 10.0
    assert t2_5.silhouette_per_user(mu, labels).mean() > 0.9
    assert t2_5.silhouette_per_user(mu, np.zeros(60, dtype=int)) is None


def test_spearman_matches_scipy():
    """The bootstrap's Spearman equals scipy.stats.spearmanr (with ties)."""
    from scipy.stats import spearmanr

    a = np.array([1.0, 2, 2, 3, 5, 4, 7])
    b = np.array([0.5, 0.1, 0.3, 0.3, 0.9, 1.2, 0.8])
    assert t2_5.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    with pytest.raises(ValueError, match="must be 1-D of the same length"):
        t2_5.spearman_interval(a, b[:3])


def test_bad_options(tiny_ctx):
    """Bad options raise with exact messages."""
    with pytest.raises(ValueError, match="control must be None, 'permuted_inputs' or 'untrained'"):
        t2_5.run(tiny_ctx, control="shuffle")
    with pytest.raises(ValueError, match="p_bar must be 'optimal' or 'unweighted', got 'mean'"):
        t2_5.run(tiny_ctx, p_bar="mean")
    with pytest.raises(ValueError, match=r"min_monotone_fraction must be in \(0, 1\], got 0"):
        t2_5.run(tiny_ctx, min_monotone_fraction=0)
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1"):
        t2_5.run(tiny_ctx, level=1)


@pytest.mark.slow
def test_runs_on_recvae_with_baseline(tiny_recvae_ctx):
    """RecVAE: the claim runs unchanged and its untrained baseline is a fresh RecVAE."""
    from radius.model.recvae import RecVAE

    r = t2_5.run(tiny_recvae_ctx)
    sp = r.details["spearman"]
    assert {"untrained", "masking", "pia", "clean"} <= set(sp)
    assert isinstance(t2_5._untrained_like(tiny_recvae_ctx, 0), RecVAE)
    c = _by_name(r)["spearman_input_vs_latent_clean"]
    assert c.outcome == decide(c.interval, direction=+1, threshold=0.0, min_n=20)


def test_monotone_check_three_outcomes():
    """A decreasing step FAILs (a bug), an unresolved rise is INCONCLUSIVE, both fine PASS."""
    ok = np.ones(50, dtype=bool)
    assert t2_5._monotone_check(ok, ok, 0.9).outcome.value == "PASS"
    unresolved = ok.copy()
    unresolved[:10] = False  # rise within 3 s.e. on 20% of pairs, no step decreases
    c = t2_5._monotone_check(ok, unresolved, 0.9)
    assert c.outcome.value == "INCONCLUSIVE" and "resolution" in c.note
    decreasing = ok.copy()
    decreasing[:10] = False
    assert t2_5._monotone_check(decreasing, ok, 0.9).outcome.value == "FAIL"
    assert t2_5._monotone_check(ok[:0], ok[:0], 0.9).outcome.value == "INCONCLUSIVE"


def test_unresolved_identity_marks_implementation_incomplete():
    """An INCONCLUSIVE identity leaves the implementation 'incomplete', never 'verified'."""
    from radius.verify.base import Check, ClaimResult

    ok = np.ones(5, dtype=bool)
    ident = t2_5._monotone_check(ok, ~ok, 0.9)
    res = ClaimResult("2.5", "t", "s", False, [ident])
    assert res.implementation == "incomplete" and res.verdict == "INCONCLUSIVE"
    broken = t2_5._monotone_check(~ok, ok, 0.9)
    assert ClaimResult("2.5", "t", "s", False, [broken]).implementation == "BROKEN"
    assert isinstance(ident, Check)
