"""Tests of the T2.3 claim module: kinds and evidence on a tiny trained model, negative
controls (wrong L_thz, wrong first-order formula), the power table's flips, and each
outcome of the pure checks on constructed cases."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from radius.stats import Outcome
from radius.verify import t2_3


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return t2_3.run(tiny_ctx)


@pytest.fixture(scope="module")
def control(tiny_ctx):
    """All three planted errors at once; each one touches a different check."""
    return t2_3.run(tiny_ctx, lipschitz_scale=0.01, first_order_scale=2.0, shuffle_latent=True)


def _check(res, name):
    return next(c for c in res.checks if c.name == name)


@pytest.mark.slow
def test_result_shape_and_json(result):
    """The result names its checks with their kinds and evidence, and serialises to JSON."""
    kinds = {c.name: (c.kind, c.evidence) for c in result.checks}
    assert kinds == {
        "first_order_slope[output]": ("identity", "real"),
        "first_order_slope[decoder]": ("identity", "real"),
        "transfer_bound": ("bound", "real"),
        "positive_inside_radius": ("bound", "real"),
        "transfer_decays_with_w2[jaccard]": ("empirical", "real"),
        "transfer_decays_with_w2[latent]": ("empirical", "real"),
        "transfer_decays_with_w2[random]": ("empirical", "real"),
        "transfer_bound[probe]": ("bound", "probe"),
        "positive_inside_radius[probe]": ("bound", "probe"),
    }
    assert all(c.tolerance for c in result.checks)
    assert all(c.interval is not None for c in result.checks if c.kind == "empirical")
    assert result.claim == "2.3" and result.context["dataset"]
    json.dumps(result.to_dict())
    d = result.details
    assert len(d["pairs"]) <= min(d["n_pairs"], t2_3.N_ROWS + d["n_inside_radius"] + 100)
    assert set(d["per_kind"]) == set(t2_3.KINDS)
    assert d["n_real_pairs"] + d["n_probe_pairs"] == d["n_pairs"]


@pytest.mark.slow
def test_identities_and_bound_hold_on_trained_model(result):
    """First order (both parameter sets) and the transfer bound hold; the implementation
    is verified; the factorised inner product is the one finite differences confirm."""
    for name in ("first_order_slope[output]", "first_order_slope[decoder]"):
        c = _check(result, name)
        assert c.passed and c.n == t2_3.N_FIRST_ORDER, c
    assert _check(result, "transfer_bound").passed
    assert result.implementation == "verified"
    for row in result.details["first_order"]["output"]:
        assert row["inner_factorised"] == pytest.approx(row["inner"], rel=1e-8)


@pytest.mark.slow
def test_bound_reported_with_and_without_latent_term(result):
    """D with and without L_thz W2 side by side; the check's note states the L = 0 fraction."""
    side = result.details["bound_with_and_without_latent_term"]["real"]
    assert side["fraction_holds_with_latent"] >= side["fraction_holds_delta_x_only"]
    c = _check(result, "transfer_bound")
    assert f"{side['fraction_holds_delta_x_only']:.1%}" in c.note
    rows = result.details["pairs"]
    assert all(r["bound"] == pytest.approx(r["latent_term"] + r["delta_x"]) for r in rows)


@pytest.mark.slow
def test_probes_never_decide(result):
    """Probe checks are excluded from the verdict: the verdict equals combine() over the
    real bound/empirical checks alone, and the real radius check counts real pairs only."""
    from radius.stats import combine

    real = [c for c in result.checks if c.decides]
    assert all(c.evidence == "real" and c.kind != "identity" for c in real)
    assert result.outcome is combine(c.outcome for c in real)
    c = _check(result, "positive_inside_radius")
    inside_real = [r for r in result.details["pairs"] if r["inside"] and r["kind"] != "edit"]
    assert c.n == result.details["n_inside_radius"] == len(inside_real)
    probe = _check(result, "positive_inside_radius[probe]")
    assert probe.n == result.details["n_inside_radius_probe"]
    # on the tiny model no real pair lies inside r_share, while the probes do: the real
    # radius check is INCONCLUSIVE (no evidence), the probes cannot make it PASS
    assert c.n < t2_3.MIN_INSIDE and c.outcome is Outcome.INCONCLUSIVE
    assert probe.n >= t2_3.MIN_INSIDE and probe.outcome is Outcome.PASS
    assert result.outcome is not Outcome.PASS


@pytest.mark.slow
def test_negative_controls_fail(result, control):
    """L_thz / 100 fails check 2, a factor-2 first order breaks the implementation."""
    assert _check(control, "transfer_bound").outcome is Outcome.FAIL
    assert not _check(control, "first_order_slope[output]").passed
    assert not _check(control, "first_order_slope[decoder]").passed
    assert control.implementation == "BROKEN" and control.outcome is Outcome.FAIL
    # the controls change only what they plant: the transfer statistics are identical
    a = {(r["u"], r["v"]): r["inner"] for r in result.details["pairs"]}
    b = {(r["u"], r["v"]): r["inner"] for r in control.details["pairs"]}
    common = set(a) & set(b)
    assert common and all(a[k] == b[k] for k in common)


@pytest.mark.slow
def test_power_rows_and_reported_flip_really_fails(tiny_ctx, result):
    """power() covers every bound/empirical real check; applying the reported L_thz flip
    to run() gives the outcome the power row reports (FAIL for the transfer bound)."""
    rows = t2_3.power(tiny_ctx)
    names = {r.check for r in rows}
    assert names == {c.name for c in result.checks if c.decides}
    for r in rows:
        assert r.baseline == _check(result, r.check).outcome.value
        assert [g["grade"] for g in r.grades]
    tb = next(r for r in rows if r.check == "transfer_bound")
    assert tb.flips_at is not None, tb
    scale = float(tb.flips_at.lstrip("x"))
    flipped = t2_3.run(tiny_ctx, lipschitz_scale=scale)
    assert _check(flipped, "transfer_bound").outcome is Outcome.FAIL
    want = next(g["outcome"] for g in tb.grades if g["grade"] == tb.flips_at)
    assert want == "FAIL"
    # the milder grades really hold
    for g in tb.grades[: [x["grade"] for x in tb.grades].index(tb.flips_at)]:
        milder = t2_3.run(tiny_ctx, lipschitz_scale=float(g["grade"].lstrip("x")))
        assert _check(milder, "transfer_bound").outcome is Outcome.PASS


def test_check_first_order_needs_evidence():
    """Slopes inside [1.7, 2.3] pass; a slope of 1, a NaN or no slope fails (identity)."""
    assert t2_3.check_first_order(np.array([1.95, 2.05])).passed
    assert t2_3.check_first_order(np.array([2.0])).kind == "identity"
    assert not t2_3.check_first_order(np.array([2.0, 1.0])).passed
    assert not t2_3.check_first_order(np.array([2.0, np.nan])).passed
    assert not t2_3.check_first_order(np.array([])).passed


def test_check_transfer_bound():
    """>= 99% of pairs: PASS; 1.5% violations: FAIL; no pairs: INCONCLUSIVE."""
    diff = np.ones(200)
    assert t2_3.check_transfer_bound(diff, np.full(200, 1.0)).outcome is Outcome.PASS
    bound = np.full(200, 2.0)
    bound[:3] = 0.5  # 1.5% violations
    assert t2_3.check_transfer_bound(diff, bound).outcome is Outcome.FAIL
    empty = t2_3.check_transfer_bound(np.zeros(0), np.zeros(0))
    assert empty.outcome is Outcome.INCONCLUSIVE and empty.n == 0
    c = t2_3.check_transfer_bound(diff, np.full(200, 1.5), delta_x=np.full(200, 0.5))
    assert "holds on 0.0% of the pairs" in c.note  # D = Delta_x alone never holds


def test_check_radius_three_outcomes():
    """Enough pairs inside, all positive: PASS; any negative inside: FAIL (even with few
    inside); no or too few pairs inside: INCONCLUSIVE."""
    w2 = np.linspace(0.1, 1.0, 10)
    inner = np.ones(10)
    assert t2_3.check_radius(inner, w2, np.full(10, 0.55)).outcome is Outcome.PASS  # 5 inside
    inner_bad = inner.copy()
    inner_bad[0] = -1.0
    assert t2_3.check_radius(inner_bad, w2, np.full(10, 0.55)).outcome is Outcome.FAIL
    assert t2_3.check_radius(inner_bad, w2, np.full(10, 0.15)).outcome is Outcome.FAIL  # 1 in
    few = t2_3.check_radius(inner, w2, np.full(10, 0.35))  # 3 inside
    assert few.outcome is Outcome.INCONCLUSIVE and few.n == 3 and "need 5" in few.note
    none = t2_3.check_radius(inner, w2, np.zeros(10))
    assert none.outcome is Outcome.INCONCLUSIVE and none.n == 0


def test_check_decay_three_outcomes():
    """A decreasing relation HOLDS; a planted positive correlation is CONTRADICTED; an
    unrelated one or too few pairs is INCONCLUSIVE."""
    rng = np.random.default_rng(0)
    w2 = rng.random(100)
    noise = 0.1 * rng.standard_normal(100)
    holds = t2_3.check_decay(w2, -w2 + noise)
    assert holds.outcome is Outcome.PASS and holds.label == "HOLDS"
    assert holds.interval.high < 0 and holds.kind == "empirical"
    contra = t2_3.check_decay(w2, w2 + noise)
    assert contra.outcome is Outcome.FAIL and contra.label == "CONTRADICTED"
    assert contra.interval.low > 0
    unrelated = t2_3.check_decay(w2, rng.standard_normal(100))
    assert unrelated.outcome is Outcome.INCONCLUSIVE
    assert unrelated.interval.low < 0 < unrelated.interval.high
    few = t2_3.check_decay(w2[:5], -w2[:5])
    assert few.outcome is Outcome.INCONCLUSIVE and "need" in few.note


def test_spearman_matches_scipy():
    """The rank correlation used in the bootstrap equals scipy's."""
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.integers(0, 5, 50).astype(float)  # ties on one side
    assert t2_3.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    assert np.isnan(t2_3.spearman(a, np.ones(50)))


def test_shuffle_within_kind_keeps_values_per_kind():
    """The power perturbation permutes W2 only among pairs of the same kind."""
    w2 = np.arange(12, dtype=float)
    kind = np.array(["a"] * 6 + ["b"] * 6)
    out = t2_3._shuffle_within_kind(w2, kind, 1.0, seed=0)
    assert sorted(out[:6]) == list(w2[:6]) and sorted(out[6:]) == list(w2[6:])
    assert not np.array_equal(out, w2)
    np.testing.assert_array_equal(t2_3._shuffle_within_kind(w2, kind, 0.0, seed=0), w2)


def test_sample_pairs_kinds(tiny_dataset):
    """Pairs are seeded, never self-pairs, and Jaccard neighbours overlap more than random."""
    x = sp.csr_matrix(tiny_dataset.train)
    rng = np.random.default_rng(0)
    mu = torch.as_tensor(rng.standard_normal((x.shape[0], 3)))
    lv = torch.as_tensor(rng.standard_normal((x.shape[0], 3)))
    p1, k1, j1 = t2_3.sample_pairs(x, mu, lv, n_pairs=60, rng=np.random.default_rng(1))
    p2, _, _ = t2_3.sample_pairs(x, mu, lv, n_pairs=60, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(p1, p2)
    assert len(p1) == 60 and np.all(p1[:, 0] != p1[:, 1])
    assert set(k1) == set(t2_3.KINDS) - {"edit"}
    assert j1[k1 == "jaccard"].mean() > j1[k1 == "random"].mean()
    with pytest.raises(ValueError, match="n_pairs must be >= 3, got 2"):
        t2_3.sample_pairs(x, mu, lv, n_pairs=2, rng=rng)


def test_edit_probes_remove_exactly_one_item(tiny_dataset):
    """Each probe is its anchor's row with exactly one of its items removed."""
    x = sp.csr_matrix(tiny_dataset.train)
    edited, anchors = t2_3.edit_probes(x, 25, rng=np.random.default_rng(0))
    assert edited.shape == (25, x.shape[1]) and len(set(anchors)) == 25
    diff = x[anchors] - edited
    assert np.all(diff.toarray() >= 0)
    np.testing.assert_array_equal(np.asarray(diff.sum(1)).ravel(), 1)
