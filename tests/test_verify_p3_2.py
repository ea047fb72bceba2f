"""Tests of the P3.2 claim module (anchor contraction factor tau): statement, assumptions,
mechanism and implementation lines, each pinned on a constructed case, and the negative
controls on the real trained decoder."""

from __future__ import annotations

import copy
import json
import math
import re

import numpy as np
import pytest
import torch

from radius.analysis.contraction import (
    AmortisedSpread,
    RefinementResult,
    anchored_quadratic_optimum,
    random_psd,
)
from radius.stats import Outcome, combine
from radius.verify import p3_2
from radius.verify.base import ClaimResult, VerifyOptions
from radius.verify.context import VerifyContext
from radius.verify.p3_2 import amortised_check, quadratic_checks, refinement_checks

STATEMENT = {"refined_deviation_le_tau", "refined_variance_le_tau2"}
ASSUMPTIONS = {
    "optimiser_converged",
    "segment_hessian_within_0_L",
    "one_hessian_across_masks",
    "local_quadratic_model",
}
IDENTITIES = {
    "quadratic_deviation_le_tau",
    "quadratic_variance_le_tau2",
    "quadratic_variance_le_directional",
}
MECHANISM = "amortised_raw_mask_variance_lower_with_pia"


# --------------------------------------------------------------------------- constructed
def _quadratic_result(
    *,
    n_users=6,
    n_masks=5,
    d=4,
    lam=0.5,
    hetero=0.0,
    seed=0,
    push=1.0,
) -> RefinementResult:
    """A RefinementResult of exact quadratics f_b = 1/2 (mu - m_b)^T H_b (mu - m_b): H_b = H
    (1 + hetero * z_b) (one H when hetero = 0), mu*_b the exact anchored optimum (moved
    ``push`` times as far from e_bar: push > 1 violates the tau bound)."""
    rng = np.random.default_rng(seed)
    shape = (n_users, n_masks)
    m = np.zeros((*shape, d))
    mu = np.zeros_like(m)
    e_bar = rng.standard_normal((n_users, d))
    lmax, lmin, image, kappa = np.zeros(shape), np.zeros(shape), np.zeros_like(m), np.zeros(shape)
    for u in range(n_users):
        h = random_psd(d, lipschitz=float(rng.uniform(0.5, 5)), spectrum="uniform", rng=rng)
        m[u] = rng.standard_normal(d) + 0.3 * rng.standard_normal((n_masks, d))
        w_bar = m[u].mean(0) - e_bar[u]
        delta = m[u] - m[u].mean(0)
        for b in range(n_masks):
            hb = h * (1.0 + hetero * rng.uniform(-1, 1))
            mu[u, b] = anchored_quadratic_optimum(hb, m[u, b][None], e_bar[u], lam)[0]
            mu[u, b] = e_bar[u] + push * (mu[u, b] - e_bar[u])
            eig = np.linalg.eigvalsh(hb)
            lmax[u, b], lmin[u, b] = eig[-1], eig[0]
            image[u, b] = np.linalg.solve(hb + 2 * lam * np.eye(d), hb @ w_bar)
            kappa[u, b] = delta[b] @ hb @ delta[b] / (delta[b] @ delta[b])
    return RefinementResult(
        m=m,
        mu_star=mu,
        e_bar=e_bar,
        grad_norm_m=np.zeros(shape),
        grad_norm_star=np.zeros(shape),
        n_iter=1,
        lambda_a=lam,
        beta=0.2,
        node_max=np.repeat(lmax[..., None], 3, -1),
        node_min=np.repeat(lmin[..., None], 3, -1),
        mean_max=lmax,
        mean_min=lmin,
        mean_value_residual=np.zeros(shape),
        common_image=image,
        solve_residual=np.zeros(shape),
        curvature_var=kappa,
    )


def _by(checks):
    return {c.name: c for c in checks}


def _claim(checks):
    return ClaimResult("3.2", "t", "s", True, checks)


def test_exact_quadratics_pass_every_line():
    """One H per user: both statement checks PASS on every case, every assumption is MET
    (heterogeneity 0, the local quadratic model exact), and the notes give the slack."""
    checks, details = refinement_checks(_quadratic_result())
    by = _by(checks)
    assert set(by) == STATEMENT | ASSUMPTIONS
    assert {c.role for c in checks} == {"statement", "assumption"}
    for name in STATEMENT:
        assert by[name].outcome is Outcome.PASS and by[name].measured <= 1.0
        assert "slack" in by[name].note and "of" in by[name].note
    assert by["refined_deviation_le_tau"].n == 30 and by["refined_variance_le_tau2"].n == 6
    for name in ASSUMPTIONS:
        assert by[name].label == "MET", by[name]
    assert by["one_hessian_across_masks"].measured == pytest.approx(0.0, abs=1e-12)
    assert details["max_deviation_over_tau"] <= 1.0
    assert json.loads(json.dumps(details))["per_user"]
    assert _claim(checks).verdict_text.startswith("PASS")


def test_statement_that_fails_says_by_how_much():
    """mu* pushed 1.5x further from e_bar than the exact optimum: the tau bound FAILs and
    the claim FAILs, with a note naming the count and the excess."""
    checks, _ = refinement_checks(_quadratic_result(push=1.5))
    c = _by(checks)["refined_deviation_le_tau"]
    assert c.outcome is Outcome.FAIL and c.measured > 1.0
    assert re.search(r"above 1 on \d+ of 30 \(user, mask\) cases, by up to [\d.]+%", c.note)
    assert _claim(checks).verdict == "FAIL"


def test_tau_with_lambda_overstated_fails_exact_quadratics():
    """Negative control: tau from lambda_A x 4 (too small) FAILs both statement checks."""
    checks, _ = refinement_checks(_quadratic_result(), tau_lambda_scale=4.0)
    by = _by(checks)
    assert by["refined_deviation_le_tau"].outcome is Outcome.FAIL
    assert by["refined_variance_le_tau2"].outcome is Outcome.FAIL


def test_assumption_not_met_reads_outside_premises():
    """A mean Hessian far below 0 on one segment: segment_hessian_within_0_L NOT MET, and a
    passing statement reads "checked outside its premises"."""
    res = _quadratic_result()
    res.mean_min[0, 0] = -10.0
    checks, _ = refinement_checks(res)
    c = _by(checks)["segment_hessian_within_0_L"]
    assert c.label == "NOT MET" and "on 1, by up to" in c.note
    text = _claim(checks).verdict_text
    assert text.startswith("PASS") and "checked outside its premises" in text
    assert "segment_hessian_within_0_L" in text


def test_coarse_quadrature_is_inconclusive_not_a_violation():
    """The Simpson mean Hessian missing the gradient change by 50%: the premise is
    unresolved (INCONCLUSIVE), not NOT MET."""
    res = _quadratic_result()
    res.mean_value_residual[1, 2] = 0.5
    checks, _ = refinement_checks(res)
    c = _by(checks)["segment_hessian_within_0_L"]
    assert c.outcome is Outcome.INCONCLUSIVE and "above 0.1 on 1" in c.note
    assert _claim(checks).assumptions == "unresolved"


def test_heterogeneous_hessians_fail_the_one_h_premise_only():
    """Per-mask Hessians differing by up to +-60%: one_hessian_across_masks NOT MET; the
    deviation bound (no one-H premise) still PASSes."""
    checks, details = refinement_checks(_quadratic_result(hetero=0.6))
    by = _by(checks)
    assert by["one_hessian_across_masks"].label == "NOT MET"
    assert by["one_hessian_across_masks"].measured > p3_2.HETEROGENEITY_TOL
    assert by["refined_deviation_le_tau"].outcome is Outcome.PASS
    assert details["generalised_variance_bound"]["max_ratio_over_it"] <= 1.0 + 1e-9


def test_unconverged_optimiser_is_not_met():
    """Gradient norms above gtol: optimiser_converged NOT MET, the allowance grows with
    them (the statement is still decided with it)."""
    res = _quadratic_result()
    res.grad_norm_m[:] = 1e-3
    checks, _ = refinement_checks(res)
    c = _by(checks)["optimiser_converged"]
    assert c.label == "NOT MET" and "30 of 30 cases unconverged" in c.note


def test_weak_only_when_no_realistic_control_flips_it():
    """weak is set exactly when neither L at m_b nor a misstatement of L / lambda_A by up
    to x2 flips the check: a slack bound is weak; with L at m_b too small it is not."""
    res = _quadratic_result(push=0.2)  # mu* much closer to e_bar than tau allows
    by = _by(refinement_checks(res)[0])
    assert by["refined_deviation_le_tau"].weak and "x" in by["refined_deviation_le_tau"].weak
    assert _claim(list(by.values())).weak_evidence
    res.node_max[..., 0] = 1e-3  # the curvature at m_b understates L on the segment
    by = _by(refinement_checks(res)[0])
    assert by["refined_deviation_le_tau"].outcome is Outcome.PASS
    assert not by["refined_deviation_le_tau"].weak


def test_quadratic_identities_are_exact_and_fail_with_a_wrong_tau():
    """Implementation: exact optima pass with round-off slack; lambda_A x 2 in tau FAILs;
    an empty grid FAILs."""
    checks, details = quadratic_checks(1)
    assert all(c.passed and c.role == "implementation" for c in checks) and len(checks) == 3
    assert details["max_deviation_over_tau_isotropic"] == pytest.approx(1.0, abs=1e-9)
    bad, _ = quadratic_checks(1, tau_lambda_scale=2.0)
    assert not any(c.passed for c in bad)
    empty, _ = quadratic_checks(1, dims=())
    assert [c.passed for c in empty] == [False] * 3 and [c.n for c in empty] == [0] * 3


# --------------------------------------------------------------------------- mechanism
def _spreads(factor, n_seeds=3, n=80, noise=0.05, seed=0):
    rng = np.random.default_rng(seed)
    base = rng.uniform(0.5, 2.0, n)
    out = []
    for _ in range(n_seeds):
        mv = base * rng.uniform(0.9, 1.1)
        pv = factor * mv * np.exp(noise * rng.standard_normal(n))
        clean = rng.standard_normal((n, 3))
        out.append(
            (
                AmortisedSpread(pv, 1.0, np.full(n, np.nan), clean),
                AmortisedSpread(mv, 4.0, np.full(n, np.nan), clean),
            )
        )
    return out


@pytest.mark.parametrize(
    ("factor", "noise", "label"),
    [(0.5, 0.05, "HOLDS"), (2.0, 0.05, "CONTRADICTED"), (1.0, 0.05, "NOT OBSERVED"),
     (0.8, 1.5, "INCONCLUSIVE")],
)  # fmt: skip
def test_mechanism_outcomes(factor, noise, label):
    """PIA's raw across-mask variance at half masking's HOLDS, double is CONTRADICTED, equal
    is NOT OBSERVED (inside the stated minimum effect log 1.25), a noisy 0.8 INCONCLUSIVE;
    the note puts raw, between-user and normalised variances side by side."""
    c, d = amortised_check(_spreads(factor, noise=noise))
    assert c.role == "mechanism" and c.label == label, (c.interval, c.note)
    assert c.min_effect == pytest.approx(math.log(p3_2.AMORT_MIN_RATIO))
    assert "between-user variance" in c.note and "their ratio" in c.note
    assert d["seeds"] == 3 and c.interval.seeds is not None and len(c.interval.seeds) == 3


def test_mechanism_with_one_seed_says_so_and_needs_spreads():
    """One training seed: the note says the interval has no training spread."""
    c, _ = amortised_check(_spreads(0.5, n_seeds=1))
    assert "one seed: no training spread" in c.note
    with pytest.raises(ValueError, match="at least one"):
        amortised_check([])


# --------------------------------------------------------------------------- real models
@pytest.fixture(scope="module")
def result(tiny_ctx):
    return p3_2.run(tiny_ctx)


@pytest.mark.slow
def test_run_on_trained_models(result, tiny_ctx):
    """Every line on the tiny trained models: statement checks over every (user, mask) case
    and every user, the four assumptions, the mechanism over both training seeds, the
    identities; the verdict combines the statement checks only."""
    by = _by(result.checks)
    assert set(by) == STATEMENT | ASSUMPTIONS | IDENTITIES | {MECHANISM}
    for name in STATEMENT:
        assert by[name].role == "statement" and by[name].decides and by[name].note
    ref = result.details["refinement"]
    assert by["refined_deviation_le_tau"].n == ref["users"] * ref["masks_per_user"]
    assert by["refined_variance_le_tau2"].n == ref["users"]
    assert ref["users"] == p3_2.REFINE_USERS_QUICK
    assert all(by[n].role == "assumption" for n in ASSUMPTIONS)
    assert by[MECHANISM].role == "mechanism" and len(by[MECHANISM].interval.seeds) == 2
    assert result.outcome == combine(by[n].outcome for n in STATEMENT)
    assert result.details["parts_not_run"] == []
    assert p3_2.models_needed(tiny_ctx) == tiny_ctx.seed_configs(["masking", "pia"])
    d = json.loads(json.dumps(result.to_dict()))
    assert d["details"]["key_numbers"]["users x masks"] == f"{ref['users']} x 4"


@pytest.mark.slow
def test_statement_fails_on_the_real_decoder_beyond_its_flip_factor(result, tiny_ctx):
    """Negative control on the real trained decoder: tau from lambda_A overstated just past
    the measured flip factor FAILs both statement checks."""
    flips = result.details["refinement"]["flip_factor"]
    scale = 1.05 * max(flips.values())
    assert np.isfinite(scale)
    res = p3_2.run(tiny_ctx, tau_lambda_scale=scale)
    by = _by(res.checks)
    assert by["refined_deviation_le_tau"].outcome is Outcome.FAIL
    assert by["refined_variance_le_tau2"].outcome is Outcome.FAIL
    assert res.verdict == "FAIL"


@pytest.mark.slow
def test_power_rows_flip_where_the_flip_factor_says(result, tiny_ctx):
    """power(): three controls per statement check (L at m_b, lambda_A overstated, L
    understated); the lambda_A row flips at the first grade beyond the flip factor; the
    mechanism row exists; every reported flip is a real change of outcome."""
    rows = p3_2.power(tiny_ctx)
    flips = result.details["refinement"]["flip_factor"]
    for name, key in (("refined_deviation_le_tau", "deviation"),
                      ("refined_variance_le_tau2", "variance")):  # fmt: skip
        own = [r for r in rows if r.check == name]
        assert len(own) == 3
        (lam,) = [r for r in own if r.perturbation.startswith("lambda_A")]
        beyond = [s for s in p3_2.POWER_LAMBDA if s > flips[key] * (1 + 1e-9)]
        want = f"lambda_A x{beyond[0]:g}" if beyond else None
        assert lam.flips_at == want
    for r in rows:
        if r.flips_at is not None:
            g = next(g for g in r.grades if g["grade"] == r.flips_at)
            assert g["outcome"] != r.baseline
    assert [r for r in rows if r.check == MECHANISM]


def _user_ctx(tiny_ctx, models):
    return VerifyContext(
        dataset=tiny_ctx.dataset,
        options=VerifyOptions(seed=0, n_users=40, seeds=1, quick=True),
        base_config=tiny_ctx.base_config,
        models=models,
    )


@pytest.mark.slow
def test_model_without_anchors_is_not_refined(tiny_ctx):
    """A 'pia' model without anchors: the trained-decoder part is not run and says so; the
    identities and the mechanism run; the verdict is INCONCLUSIVE (no statement check),
    not a FAIL at n = 0."""
    plain = tiny_ctx.model("masking")
    res = p3_2.run(_user_ctx(tiny_ctx, {"pia": plain, "masking": plain}))
    names = {c.name for c in res.checks}
    assert not names & (STATEMENT | ASSUMPTIONS) and IDENTITIES <= names
    assert MECHANISM in names
    (part,) = res.details["parts_not_run"]
    assert "no anchors" in part and "--checkpoint pia=PATH" in part
    assert res.verdict == "INCONCLUSIVE"
    assert p3_2.models_needed(_user_ctx(tiny_ctx, {"pia": plain})) == []


@pytest.mark.slow
def test_missing_masking_model_skips_the_mechanism_only(tiny_ctx):
    """Without a masking model the mechanism is not run (named in parts_not_run); the
    statement still runs on the PIA decoder."""
    res = p3_2.run(_user_ctx(tiny_ctx, {"pia": tiny_ctx.model("pia")}))
    names = {c.name for c in res.checks}
    assert STATEMENT <= names and MECHANISM not in names
    (part,) = res.details["parts_not_run"]
    assert "amortised comparison" in part and "masking" in part


@pytest.mark.slow
def test_mechanism_contradicted_while_the_statement_holds(tiny_ctx):
    """A 'masking' encoder whose latent means are shrunk x0.1 (across-mask variance x0.01):
    the mechanism is CONTRADICTED while the statement, on the PIA decoder, still PASSes."""
    pia = tiny_ctx.model("pia")
    shrunk = copy.deepcopy(tiny_ctx.model("masking"))
    d = shrunk.latent_dim
    with torch.no_grad():
        shrunk.enc_layers[-1].weight[:d] *= 0.1
        shrunk.enc_layers[-1].bias[:d] *= 0.1
    res = p3_2.run(_user_ctx(tiny_ctx, {"pia": pia, "masking": shrunk}))
    by = _by(res.checks)
    assert by[MECHANISM].label == "CONTRADICTED"
    assert "one seed: no training spread" in by[MECHANISM].note
    assert all(by[n].outcome is Outcome.PASS for n in STATEMENT)
    assert res.verdict == "PASS" and res.mechanism == "CONTRADICTED"
