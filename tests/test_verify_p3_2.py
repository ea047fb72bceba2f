"""Tests of the P3.2 claim module (anchor contraction factor tau) and its negative controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radius.model.multvae import MultVAE
from radius.stats import Outcome, combine, decide
from radius.verify import p3_2
from radius.verify.p3_2 import (
    direction_check_from,
    quadratic_checks,
    refinement_checks,
    relative_variance_gap,
)

IDENTITIES = {
    "quadratic_deviation_le_tau",
    "quadratic_variance_le_tau2",
    "quadratic_variance_le_directional",
}
BOUNDS = {"refined_deviation_le_tau", "refined_variance_le_tau2", "refined_variance_directional"}
SHARP = {"refined_deviation_le_tau", "refined_variance_directional"}
DIRECTION = "amortised_mask_variance_direction"


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return p3_2.run(tiny_ctx)


@pytest.mark.slow
def test_run_on_trained_pia_model(result):
    """Identities (a) and bounds (b) hold on the tiny trained PIA model; (c) is an empirical
    check decided from its interval; the verdict combines (b) and (c) only."""
    by = {c.name: c for c in result.checks}
    assert set(by) == IDENTITIES | BOUNDS | {DIRECTION}
    for name in IDENTITIES:
        assert by[name].passed and by[name].kind == "identity" and not by[name].decides
    for name in BOUNDS:
        assert by[name].passed and by[name].kind == "bound" and by[name].decides, by[name]
    assert all(c.n > 0 for c in result.checks)
    d = by[DIRECTION]
    assert d.kind == "empirical" and d.interval is not None
    assert d.outcome == decide(d.interval, direction=+1, threshold=0.0, min_n=20)
    assert result.outcome == combine(by[n].outcome for n in (*BOUNDS, DIRECTION))
    assert result.details["direction_check"]["outcome"] == d.label
    # the directional bound is never looser than tau_u^2
    for row in result.details["refinement"]["per_user"]:
        assert row["variance_bound_directional"] <= row["tau_u_sq"] * (1 + 1e-9)


@pytest.mark.slow
def test_result_is_jsonable(result):
    """to_dict() serialises, with per-user rows of the refinement."""
    d = json.loads(json.dumps(result.to_dict()))
    rows = d["details"]["refinement"]["per_user"]
    assert rows and {"tau_u_sq", "variance_ratio", "variance_bound_directional"} <= set(rows[0])
    assert d["claim"] == "3.2" and d["reconstruction"] is True


@pytest.mark.slow
@pytest.mark.parametrize("scale", [1.5, 2.0])
def test_tau_with_lambda_scaled_fails_on_trained_decoder(tiny_ctx, scale):
    """Negative control: tau computed with lambda_A x 1.5 or x 2 (too small) FAILs the
    deviation and the directional variance bound on the real trained decoder (x 2 also the
    tau^2 form), and (a)."""
    res = p3_2.run(tiny_ctx, tau_lambda_scale=scale)
    failed = {c.name for c in res.checks if c.outcome is Outcome.FAIL}
    assert SHARP <= failed
    if scale == 2.0:
        assert "refined_variance_le_tau2" in failed
    assert {"quadratic_deviation_le_tau", "quadratic_variance_le_tau2"} <= failed
    assert res.verdict == "FAIL"


@pytest.mark.slow
def test_direction_check_can_leave_the_verdict(tiny_ctx):
    """include_direction=False keeps (c) in the details only (with its outcome)."""
    res = p3_2.run(tiny_ctx, include_direction=False)
    assert DIRECTION not in {c.name for c in res.checks}
    dc = res.details["direction_check"]
    assert dc["in_verdict"] is False and dc["outcome"] in {"HOLDS", "CONTRADICTED", "INCONCLUSIVE"}


@pytest.mark.slow
def test_directional_bound_can_leave_the_verdict(tiny_ctx):
    """include_directional_bound=False keeps the sharp variance bound in the details only."""
    res = p3_2.run(tiny_ctx, include_directional_bound=False)
    assert "refined_variance_directional" not in {c.name for c in res.checks}
    dc = res.details["refinement"]["directional_check"]
    assert dc["in_verdict"] is False and dc["outcome"] in {"PASS", "FAIL", "INCONCLUSIVE"}


@pytest.mark.slow
def test_power_flips_are_real(tiny_ctx):
    """power(): the lambda_A rows of the sharp bounds FAIL at x1.5 and x2; every reported flip
    is a real change of outcome."""
    rows = p3_2.power(tiny_ctx)
    lam = [r for r in rows if r.perturbation.startswith("lambda_A")]
    assert {r.check for r in lam} == BOUNDS
    for r in (r for r in lam if r.check in SHARP):
        assert r.baseline == "PASS"
        out = {g["grade"]: g["outcome"] for g in r.grades}
        assert out["lambda_A x1.5"] == out["lambda_A x2"] == "FAIL"
    for r in rows:
        if r.flips_at is not None:
            g = next(g for g in r.grades if g["grade"] == r.flips_at)
            assert g["outcome"] != r.baseline
    (d,) = [r for r in rows if r.check == DIRECTION]
    assert d.flips_at is not None


# --------------------------------------------------------------------------- direction (c)
def _spread(n=60, d=3, mask_var=1.0, seed=0):
    rng = np.random.default_rng(seed)
    return mask_var * rng.uniform(0.5, 1.5, n), rng.standard_normal((n, d))


def test_direction_holds_is_contradicted_and_inconclusive():
    """relative_variance_gap + direction_check_from: a PIA encoder with half the relative mask
    variance HOLDS, double is CONTRADICTED, the same is INCONCLUSIVE, too few users too."""
    mv, mc = _spread()
    for factor, label in [(0.5, "HOLDS"), (2.0, "CONTRADICTED"), (1.0, "INCONCLUSIVE")]:
        iv = relative_variance_gap(mv, mc, mv * factor, mc)
        assert direction_check_from(iv, 0.0, 0.0).label == label, factor
    few = relative_variance_gap(mv[:10], mc[:10], mv[:10] * 0.5, mc[:10])
    assert direction_check_from(few, 0.0, 0.0).label == "INCONCLUSIVE"
    with pytest.raises(ValueError, match="need \\(U,\\) variances"):
        relative_variance_gap(mv, mc, mv[:5], mc)


def test_quadratic_grid_is_exact_and_empty_grid_fails():
    """(a) passes with tiny slack (isotropic cases are tight, also for the directional bound);
    an empty grid FAILs."""
    checks, details = quadratic_checks(1)
    assert all(c.passed for c in checks) and len(checks) == 3
    assert all(c.kind == "identity" and c.evidence == "probe" for c in checks)
    assert details["max_deviation_over_tau_isotropic"] == pytest.approx(1.0, abs=1e-9)
    assert details["max_variance_over_directional"] == pytest.approx(1.0, abs=1e-9)
    empty, _ = quadratic_checks(1, dims=())
    assert [c.passed for c in empty] == [False] * 3 and [c.n for c in empty] == [0] * 3


def test_refinement_without_anchors_fails():
    """A model without PIA anchors gives no evidence for (b): n = 0 and FAIL."""
    model = MultVAE(10, (4,), 2)
    x = torch.ones(2, 10)
    checks, details = refinement_checks(
        model, x, torch.ones(2, 3, 10), lambda_a=0.1, beta=0.2, seed=0
    )
    assert [c.passed for c in checks] == [False] * 3
    assert [c.n for c in checks] == [0] * 3
    assert [c.name for c in checks] == list(p3_2.REFINED_CHECKS)
    assert "no anchors" in details["note"]


@pytest.mark.slow
def test_refinement_fraction_threshold_is_the_verdict(tiny_ctx):
    """Raising the required fraction above 1 must fail (the verdict reads the fraction)."""
    model = tiny_ctx.model("pia")
    x = torch.as_tensor(tiny_ctx.dataset.test_tr[:3].toarray())
    masks = torch.ones(3, 2, x.shape[1])
    masks[:, 1, ::2] = 0.0
    checks, _ = refinement_checks(
        model, x, masks, lambda_a=0.1, beta=0.2, seed=0, min_fraction=1.0 + 1e-9
    )
    assert not any(c.passed for c in checks)
    assert all(np.isfinite(c.measured) for c in checks)
