"""Tests of the T2.3 claim module: verdict data on a tiny trained model, negative controls
(wrong L_thz, wrong first-order formula, shuffled latent distances) and the pure checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch

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
    """The result names its checks, states tolerances, and serialises to JSON."""
    names = [c.name for c in result.checks]
    assert names == [
        "first_order_slope[output]",
        "first_order_slope[decoder]",
        "transfer_bound",
        "positive_inside_radius",
        "transfer_decays_with_w2",
    ]
    assert all(c.tolerance for c in result.checks)
    assert result.claim == "2.3" and result.context["dataset"]
    json.dumps(result.to_dict())
    d = result.details
    assert len(d["pairs"]) <= min(d["n_pairs"], t2_3.N_ROWS + d["n_inside_radius"])
    assert set(d["per_kind"]) == set(t2_3.KINDS)


@pytest.mark.slow
def test_theorem_checks_pass_on_trained_model(result):
    """First order (both parameter sets), the transfer bound and the decay hold."""
    for name in ("first_order_slope[output]", "first_order_slope[decoder]"):
        c = _check(result, name)
        assert c.passed and c.n == t2_3.N_FIRST_ORDER, c
    assert _check(result, "transfer_bound").passed
    assert _check(result, "transfer_decays_with_w2").passed
    for row in result.details["first_order"]["output"]:
        # the factorised inner product is the one the finite differences confirm
        assert row["inner_factorised"] == pytest.approx(row["inner"], rel=1e-8)


@pytest.mark.slow
def test_radius_check_reports_its_evidence(result):
    """Check 3 passes only with >= MIN_INSIDE pairs inside, all of them positive."""
    c = _check(result, "positive_inside_radius")
    rows = result.details["pairs"]
    inside = [r for r in rows if r["inside"]]
    assert c.n == result.details["n_inside_radius"] == len(inside)
    assert c.passed == (c.n >= t2_3.MIN_INSIDE and all(r["inner"] > 0 for r in inside))
    assert result.details["n_r_share_positive"] >= c.n


@pytest.mark.slow
def test_negative_controls_fail(result, control):
    """L_thz / 100 fails check 2, a factor-2 first order fails check 1, shuffled W2 fails 4."""
    assert not _check(control, "transfer_bound").passed
    assert not _check(control, "first_order_slope[output]").passed
    assert not _check(control, "first_order_slope[decoder]").passed
    assert not _check(control, "transfer_decays_with_w2").passed
    assert not control.passed
    # the controls change only what they plant: the transfer statistics are identical
    a = {(r["u"], r["v"]): r["inner"] for r in result.details["pairs"]}
    b = {(r["u"], r["v"]): r["inner"] for r in control.details["pairs"]}
    common = set(a) & set(b)
    assert common and all(a[k] == b[k] for k in common)


def test_check_first_order_needs_evidence():
    """Slopes inside [1.7, 2.3] pass; a slope of 1, a NaN or no slope fails."""
    assert t2_3.check_first_order(np.array([1.95, 2.05])).passed
    assert not t2_3.check_first_order(np.array([2.0, 1.0])).passed
    assert not t2_3.check_first_order(np.array([2.0, np.nan])).passed
    assert not t2_3.check_first_order(np.array([])).passed


def test_check_transfer_bound():
    """The bound must hold on >= 99% of pairs; no pairs is no evidence."""
    diff = np.ones(200)
    assert t2_3.check_transfer_bound(diff, np.full(200, 1.0)).passed
    bound = np.full(200, 2.0)
    bound[:3] = 0.5  # 1.5% violations
    assert not t2_3.check_transfer_bound(diff, bound).passed
    assert not t2_3.check_transfer_bound(np.zeros(0), np.zeros(0)).passed


def test_check_radius_needs_pairs_inside():
    """Fewer than MIN_INSIDE pairs inside fails as no evidence; one negative inside fails."""
    w2 = np.linspace(0.1, 1.0, 10)
    r = np.full(10, 0.55)  # 5 inside
    inner = np.ones(10)
    assert t2_3.check_radius(inner, w2, r).passed
    inner_bad = inner.copy()
    inner_bad[0] = -1.0
    assert not t2_3.check_radius(inner_bad, w2, r).passed
    c = t2_3.check_radius(inner, w2, np.full(10, 0.35))  # 3 inside
    assert not c.passed and c.n == 3
    assert not t2_3.check_radius(inner, w2, np.zeros(10)).passed


def test_check_decay():
    """A decreasing relation passes; a shuffled one or fewer than 3 pairs fails."""
    rng = np.random.default_rng(0)
    w2 = rng.random(100)
    transfer = -w2 + 0.1 * rng.standard_normal(100)
    assert t2_3.check_decay(w2, transfer).passed
    assert not t2_3.check_decay(rng.permutation(w2), transfer).passed
    assert not t2_3.check_decay(w2[:2], transfer[:2]).passed


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
