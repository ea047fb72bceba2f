"""Tests of the beta-KL claim module: check functions, negative controls, and a tiny run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from radius.analysis.decomposition import kl_decomposition, mixture_log_density
from radius.stats import Outcome, decide
from radius.verify import beta_kl
from radius.verify.base import ClaimResult
from radius.verify.beta_kl import (
    check_active_units_drop,
    check_identity,
    check_mi_upper_bound,
    check_term_falls,
    check_terms_nonnegative,
    kl_field,
    mean_count,
    seed_user_interval,
    sweep_config,
)


def separated(n=40, d=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 3.0, np.full((n, d), -4.0)


def overlapping(n=60, d=3, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 0.8, rng.normal(size=(n, d)) * 0.2 - 0.5


# --------------------------------------------------------------------------- decomposition checks
@pytest.mark.parametrize("make", [separated, overlapping])
def test_correct_mixture_passes_all_decomposition_checks(make):
    """The full mixture passes identity, the log N bound and nonnegativity."""
    dec = kl_decomposition(*make(), n_samples=8, seed=0)
    for check in (check_identity(dec), check_mi_upper_bound(dec), check_terms_nonnegative(dec)):
        assert check.passed, check
        assert check.n == dec.n_inputs * dec.n_samples and check.slack >= 0


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
    assert check_identity(dec).passed
    bad = check_identity(wrong)
    assert not bad.passed and bad.slack < 0


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
    assert not check.passed and check.measured > check.bound


def test_unnormalised_mixture_fails_nonnegativity():
    """Negative control: log q_h without the -log N term (logsumexp only) makes I negative."""
    dec = kl_decomposition(*overlapping(), n_samples=8, seed=0)
    wrong = dataclasses.replace(
        dec, mutual_info=dec.mutual_info - dec.log_n, kl_aggregate=dec.kl_aggregate + dec.log_n
    )
    assert check_identity(wrong).passed  # the sum telescopes ...
    assert not check_terms_nonnegative(wrong).passed  # ... the sign check does not


# --------------------------------------------------------------------------- sweep checks
def _shares(shift, seeds=2, users=60, noise=0.05, seed=0):
    """(S, U) per-user values at the smallest and largest beta, the latter moved by shift."""
    rng = np.random.default_rng(seed)
    lo = 5.0 + rng.standard_normal((seeds, users))
    hi = lo + shift + noise * rng.standard_normal((seeds, users))
    return lo, hi


def test_term_falls_holds_is_contradicted_and_inconclusive():
    """check_term_falls: a clear per-user drop HOLDS, a rise is CONTRADICTED, no change or
    too few users is INCONCLUSIVE; the decided interval is reported."""
    lo, hi = _shares(-0.5)
    c = check_term_falls("t", lo, hi, what="I")
    assert c.label == "HOLDS" and c.kind == "empirical" and c.interval.high < 0
    assert c.measured == pytest.approx((hi - lo).mean())
    assert check_term_falls("t", *_shares(+0.5), what="I").label == "CONTRADICTED"
    flat = check_term_falls("t", *_shares(0.0, noise=1.0), what="I")
    assert flat.label == "INCONCLUSIVE" and flat.interval.low < 0 < flat.interval.high
    few = check_term_falls("t", *_shares(-0.5, users=5), what="I")
    assert few.label == "INCONCLUSIVE" and few.n == 5


def test_term_falls_negative_control_reversed_betas():
    """Negative control: the same sweep with the beta labels reversed is CONTRADICTED."""
    lo, hi = _shares(-0.5)
    assert check_term_falls("t", hi, lo, what="I").outcome is Outcome.FAIL


def test_seed_spread_widens_the_interval():
    """Seeds that disagree (one drops, one rises) make the interval straddle 0, where users
    alone would not: the seed-to-seed spread is part of the interval."""
    rng = np.random.default_rng(1)
    delta = np.stack([-1.0 + 0.05 * rng.standard_normal(80), 0.6 + 0.05 * rng.standard_normal(80)])
    both = seed_user_interval(delta)
    assert both.low < 0 < both.high
    one = seed_user_interval(delta[:1])
    assert one.high < 0 and one.n == 80
    with pytest.raises(ValueError, match=r"values must be \(seeds, users\)"):
        seed_user_interval(np.zeros((3, 2, 2)))


def test_active_units_drop_three_outcomes():
    """Minimum effect 10% of the units, judged against the seed range: every seed above it
    HOLDS, none CONTRADICTED (the committed 200 -> 199 case), seeds straddling it or a single
    seed INCONCLUSIVE."""
    holds = check_active_units_drop([200, 198], [150, 160], latent_dim=200)
    assert holds.label == "HOLDS" and holds.interval.low == pytest.approx(0.19)
    assert check_active_units_drop([200, 200], [199, 200], latent_dim=200).label == "CONTRADICTED"
    straddle = check_active_units_drop([200, 200], [150, 199], latent_dim=200)
    assert straddle.label == "INCONCLUSIVE"
    single = check_active_units_drop([200], [100], latent_dim=200)
    assert single.label == "INCONCLUSIVE" and "fewer than 2 seeds" in single.note
    # exactly the minimum effect is not "more than" it
    assert check_active_units_drop([200, 200], [180, 180], latent_dim=200).label != "HOLDS"
    # negative control: units rising with beta are CONTRADICTED
    assert check_active_units_drop([150, 160], [200, 198], latent_dim=200).outcome is Outcome.FAIL


def test_sweep_check_validation():
    """Mismatched shapes raise with the exact messages."""
    with pytest.raises(ValueError, match=r"must be \(seeds, users\) of one shape"):
        check_term_falls("t", np.zeros((2, 3)), np.zeros((2, 4)), what="I")
    with pytest.raises(ValueError, match="must have one length"):
        check_active_units_drop([1, 2], [1], latent_dim=4)


def test_sweep_config(tiny_config):
    """sweep_config sets beta_cap; shortens epochs and annealing only below the base epochs."""
    base = tiny_config.replace(epochs=60, patience=10, anneal_epochs=20.0)
    assert sweep_config(base, 1.0, sweep_epochs=None, n_train=100) == base.replace(beta_cap=1.0)
    assert sweep_config(base, 1.0, sweep_epochs=80, n_train=100) == base.replace(beta_cap=1.0)
    short = sweep_config(base, 2.0, sweep_epochs=12, n_train=100)
    assert (short.beta_cap, short.epochs, short.patience, short.anneal_epochs) == (2.0, 12, 10, 6.0)
    assert short.gamma == base.gamma


def test_sweep_config_multvae_ignores_mean_count(tiny_config):
    """Multi-VAE sweep configs (hence cache keys) are the same with or without mean_count."""
    base = tiny_config.replace(epochs=60, patience=10, anneal_epochs=20.0)
    stepped = base.replace(anneal_steps=500)
    for cfg in (base, stepped):
        for beta, epochs in [(0.0, None), (0.5, 20), (2.0, 12), (1.0, 80)]:
            kw = dict(sweep_epochs=epochs, n_train=480)
            assert sweep_config(cfg, beta, **kw) == sweep_config(cfg, beta, **kw, mean_count=24.3)
    # anneal_steps: at most half the sweep's steps (5 batches x 20 epochs / 2 = 50)
    assert sweep_config(stepped, 1.0, sweep_epochs=20, n_train=480).anneal_steps == 50


def test_kl_field_and_mean_count(tiny_dataset):
    """The swept field per model; the mean count is the mean row sum of the training matrix."""
    assert (kl_field("multvae"), kl_field("recvae")) == ("beta_cap", "gamma")
    with pytest.raises(ValueError, match=r"^no KL weight field for model 'svd'"):
        kl_field("svd")
    x = sp.csr_matrix(np.array([[1, 1, 0, 1], [0, 1, 0, 0], [1, 1, 1, 1]], dtype=np.float32))
    assert mean_count(x) == pytest.approx(8 / 3)
    rows = np.asarray(tiny_dataset.train.sum(axis=1)).ravel()
    assert mean_count(tiny_dataset.train) == pytest.approx(rows.mean())
    with pytest.raises(ValueError, match="no training users"):
        mean_count(sp.csr_matrix((0, 4)))


def test_sweep_config_recvae(tiny_config, tiny_dataset):
    """RecVAE: gamma = beta / mean count (mean gamma |x_u| = beta); beta_cap and annealing kept."""
    base = tiny_config.replace(model="recvae", epochs=60, patience=10, anneal_epochs=20.0)
    assert sweep_config(base, 1.0, sweep_epochs=None, n_train=100, mean_count=25.0) == (
        base.replace(gamma=0.04)
    )
    assert sweep_config(base, 1.0, sweep_epochs=80, n_train=100, mean_count=25.0) == (
        base.replace(gamma=0.04)
    )
    short = sweep_config(base, 2.0, sweep_epochs=12, n_train=100, mean_count=25.0)
    assert short == base.replace(gamma=0.08, epochs=12, patience=10)
    assert (short.beta_cap, short.anneal_epochs, short.anneal_steps) == (
        base.beta_cap,
        base.anneal_epochs,
        base.anneal_steps,
    )
    assert sweep_config(base, 2.0, sweep_epochs=5, n_train=100, mean_count=25.0).patience == 5
    # the mean effective per-user KL weight gamma * |x_u| over the training users is beta
    n_bar = mean_count(tiny_dataset.train)
    counts = np.asarray(tiny_dataset.train.sum(axis=1)).ravel()
    gammas = []
    for beta in (0.0, 0.2, 0.5, 2.0):
        cfg = sweep_config(base, beta, sweep_epochs=20, n_train=480, mean_count=n_bar)
        assert np.mean(cfg.gamma * counts) == pytest.approx(beta)
        assert cfg.beta_cap == base.beta_cap
        gammas.append(cfg.gamma)
    assert len(set(gammas)) == 4  # the old beta_cap sweep left all four configs equal here
    for bad in (None, 0.0, float("nan")):
        with pytest.raises(ValueError, match=r"^a RecVAE sweep needs mean_count > 0"):
            sweep_config(base, 1.0, sweep_epochs=None, n_train=100, mean_count=bad)


# --------------------------------------------------------------------------- run
SWEEP_CHECKS = [
    "sweep_mi_falls",
    "sweep_kl_aggregate_falls",
    "sweep_w2_contracts",
    "sweep_active_units_drop",
]


@pytest.fixture(scope="module")
def tiny_run(tiny_ctx):
    return beta_kl.run(tiny_ctx, betas=(0.0, 0.5, 2.0), sweep_epochs=4)


@pytest.mark.slow
def test_run_on_tiny_context(tiny_ctx, tiny_run):
    """run(): three identities (implementation, not the verdict) and four empirical sweep
    checks over 2 seeds per beta, decided from intervals; JSON-able."""
    res = tiny_run
    assert isinstance(res, ClaimResult) and res.claim == beta_kl.CLAIM_ID
    names = [c.name for c in res.checks]
    assert names == ["identity", "mi_upper_bound", "terms_nonnegative", *SWEEP_CHECKS]
    by = {c.name: c for c in res.checks}
    for name in ("identity", "mi_upper_bound", "terms_nonnegative"):
        assert by[name].passed and by[name].n > 0
        assert by[name].kind == "identity" and not by[name].decides
    for name in SWEEP_CHECKS:
        assert by[name].kind == "empirical" and by[name].interval is not None
    assert res.implementation == "verified"
    assert [r["beta"] for r in res.details["sweep"]] == [0.0, 0.5, 2.0]  # the base seed's
    rows = res.details["sweep_all_seeds"]
    assert [(r["beta"], r["seed"]) for r in rows] == [
        (b, s) for b in (0.0, 0.5, 2.0) for s in (0, 1)
    ]
    assert all(r["input_convention"] for r in rows)
    # the active-unit check reads the per-seed counts at the two ends
    au = {(r["beta"], r["seed"]): r["active_units"] for r in rows}
    d = rows[0]["latent_dim"]
    drops = [(au[(0.0, s)] - au[(2.0, s)]) / d for s in (0, 1)]
    assert by["sweep_active_units_drop"].measured == pytest.approx(np.mean(drops))
    assert by["sweep_w2_contracts"].label == "HOLDS"  # W2 contracts clearly, even tiny
    row = res.details["masking_model"]
    assert row["n_inputs"] == tiny_ctx.options.n_users * 5
    assert row["e_kl"] == pytest.approx(row["mutual_info"] + row["kl_aggregate"] + row["gap"])
    assert set(res.details["trends"]) == {
        "mutual_info", "kl_aggregate", "mean_pairwise_w2", "active_units"
    }  # fmt: skip
    json.dumps(res.to_dict())
    with pytest.raises(ValueError, match=r"^betas must be >= 0, got \[-1.0\]$"):
        beta_kl.run(tiny_ctx, betas=[-1.0])
    with pytest.raises(ValueError, match=r"^seeds must be an integer >= 1, got 0$"):
        beta_kl.run(tiny_ctx, seeds=0)


@pytest.mark.slow
def test_power_flips_are_real(tiny_ctx, tiny_run):
    """power(): a row per empirical sweep check; the flips reported really change the outcome,
    and swapping every user's two ends reverses a term that held."""
    rows = beta_kl.power(tiny_ctx, betas=(0.0, 0.5, 2.0), sweep_epochs=4)
    assert [r.check for r in rows] == SWEEP_CHECKS
    by = {c.name: c for c in tiny_run.checks}
    for row in rows:
        assert row.baseline == by[row.check].outcome.value
        assert row.flips_at is not None, row
        g = next(g for g in row.grades if g["grade"] == row.flips_at)
        assert g["outcome"] != row.baseline
    w2 = rows[2]
    assert w2.baseline == "PASS" and w2.grades[-1]["outcome"] == "FAIL"


@pytest.fixture(scope="module")
def recvae_ctx(tiny_dataset, tiny_config, tmp_path_factory):
    """A VerifyContext whose models are tiny RecVAEs (one encoder pass per epoch, CPU)."""
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    return VerifyContext(
        dataset=tiny_dataset,
        options=VerifyOptions(seed=0, n_pairs=80, n_users=40, n_mc=800, quick=True),
        base_config=tiny_config.replace(
            model="recvae", enc_epochs=1, epochs=3, patience=3, device="cpu"
        ),
        cache_dir=tmp_path_factory.mktemp("recvae-models"),
    )


@pytest.mark.slow
def test_run_on_tiny_recvae_context(recvae_ctx):
    """On RecVAE the sweep varies gamma, its models differ, and verdicts match the numbers
    (one seed here, to keep it fast: the active-unit check is then INCONCLUSIVE)."""
    betas = (0.0, 0.5, 2.0)
    res = beta_kl.run(recvae_ctx, betas=betas, sweep_epochs=2, seeds=1)
    n_bar = float(np.asarray(recvae_ctx.dataset.train.sum(axis=1)).mean())
    assert res.details["kl_field"] == "gamma"
    assert res.details["mean_count"] == pytest.approx(n_bar)
    assert "gamma = beta / " in res.method and "N(0, I)" in res.method
    rows = res.details["sweep"]
    assert [r["beta"] for r in rows] == list(betas)
    for r, b in zip(rows, betas):
        assert r["kl_field"] == "gamma" and "beta_cap" not in r
        assert r["gamma"] == pytest.approx(b / n_bar)
        assert r["gamma_at_best_epoch"] == pytest.approx(r["gamma"])  # the weight trained with
    assert len({r["gamma"] for r in rows}) == 3
    # the sweep models differ: every pair of sweep points measures differently
    for key in ("mean_logvar", "mutual_info", "e_kl"):
        vals = [r[key] for r in rows]
        assert len(set(vals)) == 3, (key, vals)
    by = {c.name: c for c in res.checks}
    for name in ("identity", "mi_upper_bound", "terms_nonnegative"):
        assert by[name].passed and by[name].n > 0
    # sweep verdicts: decided from their intervals (not asserted to HOLD on this fixture)
    for name in SWEEP_CHECKS[:3]:
        c = by[name]
        assert c.outcome == decide(c.interval, direction=-1, threshold=0.0, min_n=10)
    assert by["sweep_active_units_drop"].label == "INCONCLUSIVE"
    json.dumps(res.to_dict())


@pytest.mark.slow
def test_beta_cap_sweep_on_recvae_is_degenerate(recvae_ctx):
    """Negative control: varying beta_cap (the old sweep) trains identical RecVAEs; no trend."""
    base = recvae_ctx.config("masking")
    users = np.arange(20)
    kw = dict(n_masks=2, keep_rate=base.keep_rate, n_samples=2, threshold=0.01)
    models = [
        recvae_ctx.model_for(base.replace(beta_cap=b, epochs=2, patience=2)) for b in (0.0, 2.0)
    ]
    states = [m.state_dict() for m in models]
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    meas = [beta_kl._measure(m, recvae_ctx, users, **kw) for m in models]
    assert meas[0][1]["mutual_info"] == meas[1][1]["mutual_info"]
    w2 = [m[2]["w2"][None, :] for m in meas]
    assert check_term_falls("w", w2[0], w2[1], what="W2").label == "INCONCLUSIVE"
    # the same two points on the gamma sweep do differ
    n_bar = mean_count(recvae_ctx.dataset.train)
    swept = [
        recvae_ctx.model_for(sweep_config(base, b, sweep_epochs=2, n_train=480, mean_count=n_bar))
        for b in (0.0, 2.0)
    ]
    sw = [s.state_dict() for s in swept]
    assert not all(torch.equal(sw[0][k], sw[1][k]) for k in sw[0])
