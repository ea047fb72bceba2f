"""Tests of the beta-KL claim module: checks and their controls, roles, the sweep, a tiny run."""

from __future__ import annotations

import copy
import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp

from radius.analysis.decomposition import kl_decomposition, mixture_log_density, unit_moments
from radius.errors import RadiusError
from radius.stats import Outcome
from radius.verify import beta_kl
from radius.verify.base import ClaimResult
from radius.verify.beta_kl import (
    check_collapse,
    check_identity,
    check_mi_upper_bound,
    check_optimal,
    check_penalty,
    check_sweep_decompositions,
    check_terms_nonnegative,
    check_trend,
    kl_field,
    mean_count,
    sweep_config,
    sweep_options,
    trend_interval,
)

BETAS = [0.1, 0.3, 1.0, 3.0, 10.0]


def separated(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 3.0, np.full((n, d), -4.0)


def overlapping(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 0.8, rng.normal(size=(n, d)) * 0.2 - 0.5


# --------------------------------------------------------------------------- identities
@pytest.mark.parametrize("make", [separated, overlapping])
def test_correct_mixture_passes_all_decomposition_checks(make):
    """The full mixture passes identity, the log N bound and nonnegativity (implementation)."""
    dec = kl_decomposition(*make(), n_samples=8, seed=0)
    for check in (check_identity(dec), check_mi_upper_bound(dec), check_terms_nonnegative(dec)):
        assert check.passed and check.role == "implementation", check
        assert check.n == dec.n_inputs * dec.n_samples and check.slack >= 0
    assert check_sweep_decompositions([("a", dec), ("b", dec)]).passed


def test_inconsistent_aggregate_fails_identity():
    """Negative control: MI term with the leave-one-out mixture, KL(q_h||p) with the full one."""
    mu, logvar = separated()
    dec = kl_decomposition(mu, logvar, n_samples=8, seed=0)
    rng = np.random.default_rng(9)
    own = np.repeat(np.arange(len(mu)), 8)
    z = mu[own] + np.exp(0.5 * logvar[own]) * rng.standard_normal((own.size, mu.shape[1]))
    log_own = -0.5 * np.sum(
        (z - mu[own]) ** 2 * np.exp(-logvar[own]) + logvar[own] + math.log(2 * math.pi), 1
    )
    mi_loo = float(np.mean(log_own - mixture_log_density(z, mu, logvar, exclude=own)))
    wrong = dataclasses.replace(dec, mutual_info=mi_loo)
    bad = check_identity(wrong)
    assert not bad.passed and bad.slack < 0 and "gap" in bad.note
    sweep = check_sweep_decompositions([("beta 1 seed 0", dec), ("beta 8 seed 0", wrong)])
    assert sweep.outcome is Outcome.FAIL and sweep.note == "fails on beta 8 seed 0"


def test_wrong_closed_form_fails_identity():
    """Negative control: E KL without the -1 - logvar terms breaks the identity."""
    mu, logvar = overlapping()
    dec = kl_decomposition(mu, logvar, n_samples=8, seed=0)
    wrong_ekl = float(np.mean(0.5 * np.sum(np.exp(logvar) + mu**2, axis=1)))
    assert not check_identity(dataclasses.replace(dec, e_kl=wrong_ekl)).passed


@pytest.mark.parametrize("aggregate", ["leave_one_out", "gaussian"])
def test_wrong_aggregate_fails_mi_upper_bound(aggregate):
    """Negative control: leave-one-out or moment-matched Gaussian q_h fails the log N check."""
    dec = kl_decomposition(*separated(), n_samples=4, seed=0, aggregate=aggregate)
    check = check_mi_upper_bound(dec)
    assert not check.passed and check.measured > check.bound and "log N" in check.note


def test_unnormalised_mixture_fails_nonnegativity():
    """Negative control: log q_h without the -log N term (logsumexp only) makes I negative."""
    dec = kl_decomposition(*overlapping(), n_samples=8, seed=0)
    wrong = dataclasses.replace(
        dec, mutual_info=dec.mutual_info - dec.log_n, kl_aggregate=dec.kl_aggregate + dec.log_n
    )
    assert check_identity(wrong).passed  # the sum telescopes ...
    assert not check_terms_nonnegative(wrong).passed  # ... the sign check does not


# --------------------------------------------------------------------------- trend checks
def _curves(slope, seeds=2, users=60, noise=0.05, seed=0, betas=BETAS):
    """(B, S, U) per-user values: 5 + slope * log(beta) + user effect + noise."""
    rng = np.random.default_rng(seed)
    base = 5.0 + rng.standard_normal((1, seeds, users))
    lb = np.log(np.asarray(betas))[:, None, None]
    return base + slope * lb + noise * rng.standard_normal((len(betas), seeds, users))


def test_statement_trend_holds_is_contradicted_and_inconclusive():
    """E KL falling over the sweep: Spearman of beta against the mean curve is -1 (HOLDS,
    statement); rising is CONTRADICTED; flat noise or too few users INCONCLUSIVE."""
    c = check_trend("t", _curves(-1.0), BETAS, what="E KL", role="statement")
    assert c.label == "HOLDS" and c.role == "statement" and c.decides
    assert c.measured == -1.0 and c.interval.high < 0 and "seeds, then users" in c.tolerance
    assert check_trend("t", _curves(+1.0), BETAS, what="E KL", role="statement").label == (
        "CONTRADICTED"
    )
    flat = check_trend("t", _curves(0.0, noise=1.0), BETAS, what="E KL", role="statement")
    assert flat.label == "INCONCLUSIVE" and flat.interval.low < 0 < flat.interval.high
    few = check_trend("t", _curves(-1.0, users=5), BETAS, what="E KL", role="statement")
    assert few.label == "INCONCLUSIVE" and few.n == 5
    one = check_trend("t", _curves(-1.0, betas=[1.0])[:1], [1.0], what="E KL", role="statement")
    assert one.label == "INCONCLUSIVE" and "only 1 beta > 0" in one.note


def test_trend_resamples_whole_curves_not_cells():
    """The interval keeps each (seed, user) curve together: one user whose curve rises
    among falling ones moves the estimate, never the per-draw rank of the mean curve."""
    v = _curves(-1.0, noise=0.0)
    iv = trend_interval(v, BETAS)
    assert iv.estimate == iv.low == iv.high == -1.0 and iv.seeds == (-1.0, -1.0)
    with pytest.raises(ValueError, match=r"values must be \(betas, seeds, users\) with 5 betas"):
        trend_interval(v[:3], BETAS)


def test_count_weights_decide_recvae_trend():
    """RecVAE's K is count-weighted: a heavy user's rising KL reverses the weighted mean
    curve while the unweighted one falls (the weights enter the statistic)."""
    v = _curves(-1.0, users=20, noise=0.0)
    v[:, :, 0] += 4.0 * np.log(np.asarray(BETAS))[:, None]  # user 0's KL rises
    w = np.ones(20)
    w[0] = 200.0
    assert check_trend("t", v, BETAS, what="K", role="statement").label == "HOLDS"
    heavy = check_trend("t", v, BETAS, what="K", role="statement", weights=w)
    assert heavy.measured == 1.0 and heavy.label != "HOLDS"


def test_mechanism_trend_has_a_minimum_effect():
    """A mechanism trend states its minimum |rho| = 0.5 up front: a weak trend whose
    interval lies inside +-0.5 is NOT OBSERVED; a clear one HOLDS; reversed CONTRADICTED."""
    kw = dict(what="W2", role="mechanism", min_effect=0.5)
    assert check_trend("w", _curves(-1.0), BETAS, **kw).label == "HOLDS"
    assert check_trend("w", _curves(+1.0), BETAS, **kw).label == "CONTRADICTED"
    # a U-shaped curve: rho exactly 0 in every draw
    u = _curves(0.0, noise=0.0) + np.array([2.0, 1.0, 0.0, 1.0, 2.0])[:, None, None]
    u[3] += 0.5  # break the tie: rho = 0.1 in every draw
    weak = check_trend("w", u, BETAS, **kw)
    assert weak.label == "NOT OBSERVED" and weak.outcome is Outcome.VACUOUS


def test_seed_spread_widens_the_trend_interval():
    """Seeds that disagree (one falls, one rises) make the interval straddle 0."""
    v = _curves(-1.0, noise=0.0)
    v[:, 1] = _curves(+1.0, noise=0.0)[:, 1]
    iv = trend_interval(v, BETAS)
    assert iv.low < 0 < iv.high and iv.seeds == (-1.0, 1.0)


# --------------------------------------------------------------------------- collapse
def _moments(n_users, d, active, seed, n_masks=2, snr=4.0):
    """unit_moments of users whose first ``active`` units carry signal (SNR snr), the rest
    sit at the prior."""
    rng = np.random.default_rng(seed)
    mu = np.zeros((n_users * n_masks, d))
    mu[:, :active] = np.repeat(rng.normal(size=(n_users, active)), n_masks, axis=0)
    mu[:, :active] *= math.sqrt(snr) * 0.3
    logvar = np.zeros_like(mu)
    logvar[:, :active] = math.log(0.09)
    return unit_moments(mu, logvar, np.repeat(np.arange(n_users), n_masks))


def test_collapse_three_outcomes_and_how_far_the_sweep_got():
    """Units switching off (20 -> 1 of 20) HOLDS; none switching (20 -> 19) is NOT OBSERVED,
    and the note says how far the sweep got, by both rules; units turning on CONTRADICTED."""
    lo = [_moments(50, 20, 20, s) for s in (0, 1)]
    off = [_moments(50, 20, 1, s) for s in (2, 3)]
    c = check_collapse(lo, off, latent_dim=20, beta_lo=0.1, beta_hi=16.0)
    assert c.label == "HOLDS" and c.role == "mechanism" and c.min_effect == 0.5
    assert c.measured == pytest.approx(0.95) and c.note.startswith("collapse reached")
    still = [_moments(50, 20, 19, s) for s in (2, 3)]
    nc = check_collapse(
        lo, still, latent_dim=20, beta_lo=0.1, beta_hi=2.0, variance_units=([20, 20], [19, 20])
    )
    assert nc.label == "NOT OBSERVED" and nc.outcome is Outcome.VACUOUS
    assert "collapse not reached up to beta 2" in nc.note
    assert "20/20 at beta 0.1, 19/20 at the sweep's largest beta 2" in nc.note
    assert "by the variance rule (Var mu_k > 0.01) 20 and 19-20" in nc.note
    up = check_collapse(off, lo, latent_dim=20, beta_lo=0.1, beta_hi=16.0)
    assert up.label == "CONTRADICTED"


# --------------------------------------------------------------------------- assumptions
def _optimal_family(betas, users=40, seeds=2, noise=0.0, seed=0):
    """(R, K) of exact minimisers of R + beta K along the convex frontier R = 1 / K:
    K(beta) = beta^-1/2, R = beta^1/2 (each point optimal at its own beta)."""
    rng = np.random.default_rng(seed)
    b = np.asarray(betas)[:, None, None]
    k = b**-0.5 * (1 + 0.3 * rng.random((1, seeds, users)))
    r = 1.0 / k + 100.0
    return r + noise * rng.standard_normal(r.shape), k


def test_optimal_sweep_meets_the_premise_and_a_swapped_one_does_not():
    """Models on the optimal frontier: MET (no other model is better at a model's own
    beta). Negative control: two models' beta labels swapped: NOT MET, naming the pair."""
    r, k = _optimal_family(BETAS)
    met = check_optimal(r, k, BETAS)
    assert met.label == "MET" and met.role == "assumption" and met.interval.high < 0.01
    r2, k2 = r.copy(), k.copy()
    r2[[1, 3]], k2[[1, 3]] = r[[3, 1]], k[[3, 1]]
    bad = check_optimal(r2, k2, BETAS)
    assert bad.label == "NOT MET" and "largest advantage of another sweep model" in bad.note


def test_penalty_assumption_per_model():
    """Multi-VAE and RecVAE with N(0, I) meet the premise; RecVAE's composite prior does
    not (the note says why); given models leave it unresolved."""
    assert check_penalty("multvae", "composite", given=False).label == "MET"
    assert check_penalty("recvae", "standard", given=False).label == "MET"
    comp = check_penalty("recvae", "composite", given=False)
    assert comp.label == "NOT MET" and "composite prior" in comp.note
    given = check_penalty(None, None, given=True)
    assert given.outcome is Outcome.INCONCLUSIVE and "given by the user" in given.note


def test_claim_outcomes_follow_the_roles():
    """Only the statement decides: a failing statement FAILs the claim; a contradicted
    mechanism with the statement holding leaves it PASS; an assumption not met makes
    the verdict say 'checked outside its premises'."""
    holds = check_trend("sweep_e_kl_falls", _curves(-1.0), BETAS, what="K", role="statement")
    fails = check_trend("sweep_e_kl_falls", _curves(+1.0), BETAS, what="K", role="statement")
    w2_up = check_trend(
        "sweep_w2_contracts", _curves(+1.0), BETAS, what="W2", role="mechanism", min_effect=0.5
    )

    def claim(*checks):
        return ClaimResult("beta-kl", "t", "s", True, list(checks))

    assert claim(fails).verdict == "FAIL"
    mixed = claim(holds, w2_up)
    assert mixed.verdict == "PASS" and mixed.mechanism == "CONTRADICTED"
    outside = claim(holds, check_penalty("recvae", "composite", given=False))
    assert outside.verdict == "PASS" and "checked outside its premises" in outside.verdict_text


# --------------------------------------------------------------------------- configs, options
def test_sweep_config_warm_and_scratch(tiny_config):
    """Warm: a fixed fine-tuning budget at the cap (anneal_steps 0, keep last, batch <= 100,
    3x lr); scratch: annealed over half the epochs, best-at-cap kept."""
    base = tiny_config.replace(epochs=60, patience=10, anneal_epochs=20.0, batch_size=500)
    warm = sweep_config(base, 2.0, start="warm", sweep_epochs=4, n_train=4000)
    assert (warm.beta_cap, warm.epochs, warm.patience, warm.anneal_steps, warm.keep) == (
        2.0,
        4,
        4,
        0,
        "last",
    )
    assert warm.batch_size == 100 and warm.lr == pytest.approx(3 * base.lr)
    scratch = sweep_config(base, 2.0, start="scratch", sweep_epochs=20, n_train=4000)
    assert scratch.keep == "best-at-cap" and scratch.anneal_steps == 80  # 8 x 20 / 2
    assert scratch.lr == base.lr and scratch.batch_size == 500
    with pytest.raises(ValueError, match=r"^start must be one of \('warm', 'scratch'\)"):
        sweep_config(base, 1.0, start="cold", sweep_epochs=4, n_train=10)
    with pytest.raises(ValueError, match=r"^sweep_epochs must be an integer >= 1"):
        sweep_config(base, 1.0, sweep_epochs=0, n_train=10)


def test_kl_field_and_mean_count(tiny_dataset):
    """The swept field per model; the mean count is the mean row sum of the training matrix."""
    assert (kl_field("multvae"), kl_field("recvae")) == ("beta_cap", "gamma")
    with pytest.raises(ValueError, match=r"^no KL weight field for model 'svd'"):
        kl_field("svd")
    x = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    assert mean_count(x) == pytest.approx(8 / 3)
    with pytest.raises(ValueError, match="no training users"):
        mean_count(sp.csr_matrix((0, 4)))


def test_sweep_config_recvae(tiny_config, tiny_dataset):
    """RecVAE: gamma = beta / mean count (mean gamma |x_u| = beta); no annealing."""
    base = tiny_config.replace(model="recvae", epochs=60, patience=10)
    n_bar = mean_count(tiny_dataset.train)
    counts = np.asarray(tiny_dataset.train.sum(axis=1)).ravel()
    for start in ("warm", "scratch"):
        for beta in (0.1, 2.0):
            cfg = sweep_config(
                base, beta, start=start, sweep_epochs=4, n_train=480, mean_count=n_bar
            )
            assert np.mean(cfg.gamma * counts) == pytest.approx(beta)
            assert cfg.beta_cap == base.beta_cap
    assert (
        sweep_config(
            base, 1.0, start="scratch", sweep_epochs=4, n_train=480, mean_count=n_bar
        ).anneal_steps
        is None
    )
    for bad in (None, 0.0, float("nan")):
        with pytest.raises(ValueError, match=r"^a RecVAE sweep needs mean_count > 0"):
            sweep_config(base, 1.0, sweep_epochs=4, n_train=100, mean_count=bad)


def test_sweep_options_defaults_and_messages(tiny_ctx):
    """Defaults (8 betas to 16, 4 warm epochs on 2000 users -> all 480 here, min(2, seeds)
    seeds); bad values raise with exact messages."""
    o = sweep_options(tiny_ctx)
    assert o.betas == beta_kl.DEFAULT_BETAS and o.epochs == 4 and o.users is None
    assert o.seeds == 2 and o.start == "warm"
    assert sweep_options(tiny_ctx, sweep_start="scratch").epochs == 20
    assert sweep_options(tiny_ctx, betas=(4, 0.5, 4)).betas == (0.5, 4.0)
    assert sweep_options(tiny_ctx, betas=()).betas == ()
    for kw, msg in [
        ({"betas": [-1.0, 1.0]}, r"^betas must be finite and >= 0"),
        ({"betas": [1.0]}, r"^the sweep needs at least 2 distinct betas"),
        ({"sweep_start": "cold"}, r"^sweep_start must be one of"),
        ({"sweep_epochs": 0}, r"^sweep_epochs must be an integer >= 1, got 0$"),
        ({"sweep_users": 1}, r"^sweep_users must be an integer >= 2 or None"),
        ({"sweep_seeds": 0}, r"^sweep_seeds must be an integer >= 1, got 0$"),
        ({"workers": 0}, r"^workers must be an integer >= 1, got 0$"),
        ({"sweep_models": {}}, r"^sweep_models must map betas to models"),
    ]:
        with pytest.raises(ValueError, match=msg):
            sweep_options(tiny_ctx, **kw)


def test_sweep_checkpoint_specs_are_validated(tiny_dataset, tmp_path):
    """--sweep-checkpoint BETA=PATH: a bad spec or a missing file is bad input (exit 2)."""
    for spec in ("8", "x=a.pt", "-1=a.pt", "2="):
        with pytest.raises(RadiusError, match=r"expected BETA=PATH with BETA a number >= 0"):
            beta_kl.load_sweep_checkpoints([spec], tiny_dataset)
    with pytest.raises(RadiusError, match="no checkpoint at"):
        beta_kl.load_sweep_checkpoints([f"2={tmp_path / 'none.pt'}"], tiny_dataset)


def test_models_needed_names_the_sweep_parents(tiny_ctx):
    """Warm: the masking model of each sweep seed; scratch on all users: the sweep models;
    given sweep models or no betas: the masking model only."""
    masking = tiny_ctx.config("masking")
    warm = beta_kl.models_needed(tiny_ctx, sweep_seeds=3, n_masks=5)
    assert warm == [masking, masking.replace(seed=1), masking.replace(seed=2)]
    scratch = beta_kl.models_needed(tiny_ctx, sweep_start="scratch", betas=(0.5, 4.0))
    assert scratch[0] == masking and len(scratch) == 1 + 2 * 2
    assert {c.keep for c in scratch[1:]} == {"best-at-cap"}
    assert beta_kl.models_needed(tiny_ctx, betas=()) == [masking]


# --------------------------------------------------------------------------- runs
TINY_BETAS = (0.1, 1.0, 10.0, 100.0)


@pytest.fixture(scope="module")
def tiny_run(tiny_ctx):
    return beta_kl.run(tiny_ctx, betas=TINY_BETAS, workers=1)


@pytest.mark.slow
def test_run_on_tiny_context(tiny_ctx, tiny_run):
    """run(): identities (implementation), one statement check, two assumptions, four
    mechanisms; the warm sweep over 2 seeds; JSON-able; the tiny sweep reaches collapse."""
    res = tiny_run
    roles = {c.name: c.role for c in res.checks}
    assert roles == {
        "identity": "implementation",
        "mi_upper_bound": "implementation",
        "terms_nonnegative": "implementation",
        "sweep_e_kl_falls": "statement",
        "penalty_is_kl_to_prior": "assumption",
        "sweep_models_optimal": "assumption",
        "sweep_mi_falls": "mechanism",
        "sweep_kl_aggregate_falls": "mechanism",
        "sweep_w2_contracts": "mechanism",
        "collapse_at_large_beta": "mechanism",
        "sweep_decompositions": "implementation",
    }
    by = {c.name: c for c in res.checks}
    assert by["sweep_e_kl_falls"].label == "HOLDS" and res.verdict == "PASS"
    assert by["penalty_is_kl_to_prior"].label == "MET"
    assert by["collapse_at_large_beta"].label == "HOLDS"
    assert res.implementation == "verified"
    rows = res.details["sweep_all_seeds"]
    assert [(r["beta"], r["seed"]) for r in rows] == [(b, s) for b in TINY_BETAS for s in (0, 1)]
    for r in rows:  # warm starts: the last of 4 epochs, at the cap, from the seed's parent
        assert r["source"] == "warm" and r["best_epoch"] == 3 and r["epochs_run"] == 4
        assert r["kl_weight_at_best_epoch"] == r["beta"] == r["beta_cap"]
        assert r["init_from"] and r["e_kl"] == pytest.approx(
            r["mutual_info"] + r["kl_aggregate"] + r["gap"]
        )
    assert len({r["init_from"] for r in rows}) == 2  # one parent per seed
    e_kl = [res.details["per_beta"][f"{b:g}"]["e_kl"]["estimate"] for b in TINY_BETAS]
    assert e_kl == sorted(e_kl, reverse=True)
    assert res.details["collapse"]["largest_beta"] == 100.0
    assert res.details["parts_not_run"] == []
    json.dumps(res.to_dict())


@pytest.mark.slow
def test_power_flips_are_real(tiny_ctx, tiny_run):
    """power(): the statement and trend rows flip when enough beta labels are reversed;
    the information rule is invariant under z -> c z while the variance rule flips."""
    rows = beta_kl.power(tiny_ctx, betas=TINY_BETAS, workers=1)
    by = {c.name: c for c in tiny_run.checks}
    names = [r.check for r in rows]
    assert names[:4] == [
        "sweep_e_kl_falls",
        "sweep_mi_falls",
        "sweep_kl_aggregate_falls",
        "sweep_w2_contracts",
    ]
    stmt = rows[0]
    assert stmt.baseline == "PASS" and stmt.flips_at is not None
    assert stmt.grades[-1]["outcome"] == "FAIL"  # every user's labels reversed
    for row in rows:
        if row.check in by:
            assert row.baseline == by[row.check].outcome.value
        if row.flips_at is not None:
            g = next(g for g in row.grades if g["grade"] == row.flips_at)
            assert g["outcome"] != row.baseline
    scale = next(r for r in rows if r.perturbation.startswith("z -> c z"))
    assert scale.flips_at is None  # a reparametrisation never flips the information rule
    var = next(r for r in rows if r.check == "collapse_at_large_beta[variance rule]")
    assert var.flips_at is not None


@pytest.mark.slow
def test_user_models_without_a_sweep_source_list_the_sweep_as_not_run(tiny_ctx):
    """A user's masking model that is no radius checkpoint: the identities run, the sweep
    is listed in parts_not_run with the options that would run it, and printed."""
    from radius.verify.api import run_claim
    from radius.verify.context import VerifyContext
    from radius.verify.render import claim_block

    model = copy.deepcopy(tiny_ctx.model("masking"))
    del model.radius_config  # as a model from the user's own training loop
    ctx = VerifyContext(
        dataset=tiny_ctx.dataset,
        options=tiny_ctx.options,
        base_config=tiny_ctx.base_config,
        models={"masking": model},
    )
    res = run_claim("beta-kl", ctx)
    assert [c.name for c in res.checks] == ["identity", "mi_upper_bound", "terms_nonnegative"]
    (part,) = res.details["parts_not_run"]
    assert "--sweep-checkpoint BETA=PATH" in part and "not a radius checkpoint" in part
    assert res.verdict == "INCONCLUSIVE"  # no statement check ran
    assert "not run: the beta sweep" in claim_block(res)


@pytest.mark.slow
def test_given_sweep_models_and_a_radius_masking_checkpoint(tiny_ctx, tiny_run):
    """Sweep models given directly are used as they are (no training); a user's radius
    masking checkpoint is warm-started from (the same models as radius's own)."""
    from radius.training.cache import cache_path
    from radius.training.checkpoints import load_checkpoint
    from radius.verify.api import run_claim
    from radius.verify.context import VerifyContext

    path = cache_path(tiny_ctx.dataset, tiny_ctx.config("masking"), tiny_ctx.cache_dir)
    masking = load_checkpoint(path, tiny_ctx.dataset).model
    ctx = VerifyContext(
        dataset=tiny_ctx.dataset,
        options=tiny_ctx.options,
        base_config=tiny_ctx.base_config,
        models={"masking": masking},
        cache_dir=tiny_ctx.cache_dir,
    )
    warm = run_claim("beta-kl", ctx, {"betas": TINY_BETAS, "sweep_seeds": 1, "workers": 1})
    own = {(r["beta"]): r["e_kl"] for r in tiny_run.details["sweep_all_seeds"] if r["seed"] == 0}
    for r in warm.details["sweep_all_seeds"]:
        assert r["init_from"].startswith("weights:")  # keyed by the given weights' hash
        assert r["e_kl"] == own[r["beta"]]  # the same parent weights: the same fine-tunes
    models = {b: tiny_ctx.model("masking") for b in (0.1, 1.0)}
    given = beta_kl.run(tiny_ctx, sweep_models=models)
    rows = given.details["sweep_all_seeds"]
    assert [r["source"] for r in rows] == ["given", "given"]
    by = {c.name: c for c in given.checks}
    assert by["penalty_is_kl_to_prior"].outcome is Outcome.INCONCLUSIVE
    # the same model at both betas: E KL does not fall (identical curves: no trend)
    assert by["sweep_e_kl_falls"].outcome is not Outcome.PASS
    with pytest.raises(ValueError, match="differ from the betas of the given sweep models"):
        beta_kl.run(tiny_ctx, sweep_models=models, betas=(0.1, 2.0))


@pytest.mark.slow
def test_scratch_sweep_keeps_weights_at_the_cap(tiny_ctx):
    """sweep_start='scratch': every sweep model's kept epoch trained at its cap (not an
    epoch of the anneal)."""
    res = beta_kl.run(
        tiny_ctx, betas=(0.5, 8.0), sweep_start="scratch", sweep_epochs=6, sweep_seeds=1, workers=1
    )
    for r in res.details["sweep_all_seeds"]:
        assert r["source"] == "scratch" and r["best_epoch"] >= 3
        assert r["kl_weight_at_best_epoch"] == r["beta"]


@pytest.mark.slow
def test_recvae_reads_sensibly(tiny_recvae_ctx):
    """RecVAE: gamma = beta / mean count; the penalty premise is NOT MET (composite prior),
    so the verdict says 'checked outside its premises'; the collapse note explains the
    composite prior when units stay informative."""
    res = beta_kl.run(tiny_recvae_ctx, betas=(0.1, 1.0, 10.0), sweep_epochs=2, workers=1)
    n_bar = mean_count(tiny_recvae_ctx.dataset.train)
    rows = res.details["sweep_all_seeds"]
    assert all(r["kl_field"] == "gamma" for r in rows)
    assert all(r["gamma"] == pytest.approx(r["beta"] / n_bar) for r in rows)
    by = {c.name: c for c in res.checks}
    assert by["penalty_is_kl_to_prior"].label == "NOT MET"
    assert "sweep_models_optimal" not in by  # R + beta K is not RecVAE's objective
    assert "checked outside its premises" in res.verdict_text
    assert "gamma = beta / " in res.method and "N(0, I)" in res.method
    collapse = by["collapse_at_large_beta"]
    if collapse.outcome is Outcome.VACUOUS:
        assert "composite prior" in collapse.note
    json.dumps(res.to_dict())


# --------------------------------------------------------------------------- command line
TINY_SET = [
    *("--set", "hidden_dims=[32]", "--set", "latent_dim=8", "--set", "epochs=8"),
    *("--set", "patience=8", "--set", "batch_size=100", "--set", "anneal_epochs=4"),
]


@pytest.fixture(scope="module")
def tiny_dir(tiny_dataset, tmp_path_factory):
    path = tmp_path_factory.mktemp("data") / "tiny"
    tiny_dataset.save(path)
    return path


def test_cli_sweep_options_reject_bad_input(tiny_dir, capsys):
    """--sweep-betas with one beta or a negative one (usage errors), a bad
    --sweep-checkpoint (bad input): exit 2 naming the problem."""
    from radius.cli import main

    base = ["verify", "--theorem", "beta-kl", "--data", str(tiny_dir)]
    for bad, msg in (("1", "give at least 2 distinct betas"), ("1,-2", "betas must be >= 0")):
        with pytest.raises(SystemExit) as e:
            main([*base, "--sweep-betas", bad])
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert main([*base, "--sweep-checkpoint", "abc"]) == 2
    assert "expected BETA=PATH" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_runs_the_sweep_with_its_options(tiny_dir, tmp_path, monkeypatch, capsys):
    """radius verify --theorem beta-kl passes --sweep-* to the claim (JSON records them);
    --sweep-betas none prints the sweep under the claim as not run; --sweep-checkpoint
    gives the sweep's models directly."""
    from radius.cli import main
    from radius.training.cache import cache_path
    from radius.training.config import TrainConfig, setting_config

    monkeypatch.setenv("RADIUS_CACHE_DIR", str(tmp_path / "models"))
    base = [
        "verify",
        "--theorem",
        "beta-kl",
        "--data",
        str(tiny_dir),
        "--n-users",
        "20",
        "--workers",
        "1",
        *TINY_SET,
    ]
    out = tmp_path / "a"
    rc = main(
        [
            *base,
            "--sweep-betas",
            "0.1,10",
            "--sweep-epochs",
            "2",
            "--sweep-seeds",
            "1",
            "--sweep-users",
            "300",
            "--out",
            str(out),
        ]
    )
    report = json.loads((out / "beta_kl.json").read_text())
    assert report["details"]["sweep_options"] == {
        "betas": [0.1, 10.0],
        "epochs": 2,
        "users": 300,
        "seeds": 1,
        "start": "warm",
    }
    assert rc == beta_kl_exit(report) and "beta-kl verdict" in capsys.readouterr().out
    assert {r["train_users"] for r in report["details"]["sweep_all_seeds"]} == {300}
    rc = main([*base, "--sweep-betas", "none", "--out", str(tmp_path / "b")])
    printed = capsys.readouterr().out
    assert rc == 3 and "not run: the beta sweep: no betas given (--sweep-betas" in printed
    cfg = setting_config(
        "masking",
        TrainConfig(
            hidden_dims=(32,), latent_dim=8, epochs=8, patience=8, batch_size=100, anneal_epochs=4
        ),
    )
    path = cache_path(tiny_dataset_of(tiny_dir), cfg, tmp_path / "models")
    assert path.is_file()
    rc = main(
        [
            *base,
            "--sweep-checkpoint",
            f"0.5={path}",
            "--sweep-checkpoint",
            f"2={path}",
            "--out",
            str(tmp_path / "c"),
        ]
    )
    report = json.loads((tmp_path / "c" / "beta_kl.json").read_text())
    assert [r["source"] for r in report["details"]["sweep_all_seeds"]] == ["given", "given"]
    assert report["details"]["sweep_options"]["start"] == "given"


def beta_kl_exit(report) -> int:
    from radius.stats import exit_code

    return exit_code(report["verdict"])


def tiny_dataset_of(path):
    from radius.data.dataset import Dataset

    return Dataset.load(path)
