"""Tests of the P3.2 claim module (anchor contraction factor tau) and its negative controls."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from radius.model.multvae import MultVAE
from radius.verify import p3_2
from radius.verify.p3_2 import quadratic_checks, refinement_checks

VERDICT_CHECKS = {
    "quadratic_deviation_le_tau",
    "quadratic_variance_le_tau2",
    "refined_deviation_le_tau",
    "refined_variance_le_tau2",
}


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return p3_2.run(tiny_ctx)


@pytest.mark.slow
def test_run_passes_on_trained_pia_model(result):
    """(a) and (b) hold on the tiny trained PIA model; (c) is reported, not in the verdict."""
    assert {c.name for c in result.checks} == VERDICT_CHECKS
    assert result.verdict == "PASS", [c for c in result.checks if not c.passed]
    assert all(c.n > 0 for c in result.checks)
    dc = result.details["direction_check"]
    assert dc["in_verdict"] is False and isinstance(dc["passed"], bool)


@pytest.mark.slow
def test_result_is_jsonable(result):
    """to_dict() serialises, with per-user rows of the refinement."""
    d = json.loads(json.dumps(result.to_dict()))
    rows = d["details"]["refinement"]["per_user"]
    assert rows and {"tau_u_sq", "variance_ratio"} <= set(rows[0])
    assert d["claim"] == "3.2" and d["reconstruction"] is True


@pytest.mark.slow
def test_tau_with_lambda_doubled_fails(tiny_ctx):
    """Negative control: tau computed with lambda_A doubled (too small) fails (a) and (b)."""
    res = p3_2.run(tiny_ctx, tau_lambda_scale=2.0)
    failed = {c.name for c in res.checks if not c.passed}
    assert {"quadratic_deviation_le_tau", "quadratic_variance_le_tau2"} <= failed
    assert "refined_deviation_le_tau" in failed
    assert res.verdict == "FAIL"


@pytest.mark.slow
def test_direction_check_can_enter_the_verdict(tiny_ctx):
    """include_direction=True appends check (c), and the verdict then depends on it."""
    res = p3_2.run(tiny_ctx, include_direction=True)
    (c,) = [c for c in res.checks if c.name == "amortised_mask_variance_direction"]
    assert c.passed == (c.measured < c.bound)
    assert res.passed == all(x.passed for x in res.checks)


def test_quadratic_grid_is_exact_and_empty_grid_fails():
    """(a) passes with tiny slack (isotropic cases are tight); an empty grid FAILs."""
    checks, details = quadratic_checks(1)
    assert all(c.passed for c in checks)
    assert details["max_deviation_over_tau_isotropic"] == pytest.approx(1.0, abs=1e-9)
    empty, _ = quadratic_checks(1, dims=())
    assert [c.passed for c in empty] == [False, False] and [c.n for c in empty] == [0, 0]


def test_refinement_without_anchors_fails():
    """A model without PIA anchors gives no evidence for (b): n = 0 and FAIL."""
    model = MultVAE(10, (4,), 2)
    x = torch.ones(2, 10)
    checks, details = refinement_checks(
        model, x, torch.ones(2, 3, 10), lambda_a=0.1, beta=0.2, seed=0
    )
    assert [c.passed for c in checks] == [False, False]
    assert [c.n for c in checks] == [0, 0]
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
