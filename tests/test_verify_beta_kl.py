"""Tests of the beta-KL claim module: check functions, negative controls, and a tiny run."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from radius.decomposition import kl_decomposition, mixture_log_density
from radius.verify import beta_kl
from radius.verify.base import ClaimResult
from radius.verify.beta_kl import (
    check_decreases,
    check_falls,
    check_identity,
    check_mi_upper_bound,
    check_terms_nonnegative,
    sweep_config,
)

BETAS = [0.0, 0.2, 0.5, 1.0, 2.0]
FALLING = [6.5, 6.1, 5.2, 3.9, 2.0]  # a term that falls with beta (synthetic sweep numbers)


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
def test_falling_sweep_passes():
    """A term falling with beta passes check_falls, in any listing order."""
    check = check_falls("t", BETAS, FALLING, what="I")
    assert check.passed and check.measured == pytest.approx(-1.0) and check.n == 5
    order = [3, 0, 4, 1, 2]
    assert check_falls("t", [BETAS[i] for i in order], [FALLING[i] for i in order], what="I").passed


def test_reversed_betas_fail_trend():
    """Negative control: the same results under a reversed beta list FAIL."""
    check = check_falls("t", BETAS[::-1], FALLING, what="I")
    assert not check.passed and check.measured > 0 and check.slack < 0


def test_shuffled_results_fail_trend():
    """Negative control: results shuffled so the largest beta is not the smallest value FAIL."""
    shuffled = [2.0, 6.1, 5.2, 3.9, 6.5]  # rho < 0 is lost at the endpoints
    check = check_falls("t", BETAS, shuffled, what="I")
    assert not check.passed and check.slack < 0
    rising_middle = [6.5, 2.0, 3.9, 5.2, 6.1]
    assert not check_falls("t", BETAS, rising_middle, what="I").passed


def test_trend_without_evidence_fails():
    """Fewer than 3 distinct betas, or a NaN, is no evidence: FAIL with n = 0."""
    for betas, vals in [
        ([0.0, 1.0], [2.0, 1.0]),
        ([1.0, 1.0, 1.0], [3.0, 2.0, 1.0]),
        (BETAS, [1, 2, np.nan, 4, 5]),
    ]:
        check = check_falls("t", betas, vals, what="I")
        assert not check.passed and check.n == 0


def test_decreases_and_its_negative_control():
    """W2 / active units: largest-beta value below smallest-beta value passes; reversed fails."""
    w2 = [1.4, 1.2, 1.0, 0.7, 0.3]
    assert check_decreases("w", BETAS, w2, what="W2").passed
    rev = check_decreases("w", BETAS[::-1], w2, what="W2")
    assert not rev.passed and rev.slack < 0
    au = [200, 200, 150, 60, 12]
    assert check_decreases("a", BETAS, au, what="AU").passed
    assert not check_decreases("a", BETAS, [12, 60, 150, 200, 200], what="AU").passed
    assert not check_decreases("a", BETAS, [50, 40, 30, 20, 50], what="AU").passed  # equal: strict
    assert check_decreases("a", [1.0], [3.0], what="AU").n == 0


def test_sweep_check_validation():
    """Mismatched lengths raise with the exact message."""
    with pytest.raises(
        ValueError, match=r"^betas \(2,\) and values \(3,\) must be 1-D of the same length$"
    ):
        check_falls("t", [0, 1], [1, 2, 3], what="I")


def test_sweep_config(tiny_config):
    """sweep_config sets beta_cap; shortens epochs and annealing only below the base epochs."""
    base = tiny_config.replace(epochs=60, patience=10, anneal_epochs=20.0)
    assert sweep_config(base, 1.0, sweep_epochs=None, n_train=100) == base.replace(beta_cap=1.0)
    assert sweep_config(base, 1.0, sweep_epochs=80, n_train=100) == base.replace(beta_cap=1.0)
    short = sweep_config(base, 2.0, sweep_epochs=12, n_train=100)
    assert (short.beta_cap, short.epochs, short.patience, short.anneal_epochs) == (2.0, 12, 10, 6.0)


# --------------------------------------------------------------------------- run
@pytest.mark.slow
def test_run_on_tiny_context(tiny_ctx):
    """run() returns all seven checks with evidence; the decomposition checks pass; JSON-able."""
    res = beta_kl.run(tiny_ctx, betas=(0.0, 0.5, 2.0), sweep_epochs=4)
    assert isinstance(res, ClaimResult) and res.claim == beta_kl.CLAIM_ID
    names = [c.name for c in res.checks]
    assert names == [
        "identity",
        "mi_upper_bound",
        "terms_nonnegative",
        "sweep_mi_falls",
        "sweep_kl_aggregate_falls",
        "sweep_w2_contracts",
        "sweep_active_units_drop",
    ]
    by = {c.name: c for c in res.checks}
    for name in ("identity", "mi_upper_bound", "terms_nonnegative"):
        assert by[name].passed and by[name].n > 0
    assert by["sweep_mi_falls"].n == 3 and by["sweep_w2_contracts"].n > 0
    assert [r["beta"] for r in res.details["sweep"]] == [0.0, 0.5, 2.0]
    row = res.details["masking_model"]
    assert row["n_inputs"] == tiny_ctx.options.n_users * 5
    assert row["e_kl"] == pytest.approx(row["mutual_info"] + row["kl_aggregate"] + row["gap"])
    json.dumps(res.to_dict())
    with pytest.raises(ValueError, match=r"^betas must be >= 0, got \[-1.0\]$"):
        beta_kl.run(tiny_ctx, betas=[-1.0])
