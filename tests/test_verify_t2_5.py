"""Tests of the T2.5 claim module (compromise gap, latent geometry, cohort separation)."""

from __future__ import annotations

import json

import pytest

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


@pytest.mark.slow
def test_gap_and_spearman_checks_pass(result):
    """On trained models the exact-gap properties hold and W2 tracks input distance."""
    c = _by_name(result)
    for name in (*GAP_CHECKS, "spearman_input_vs_latent_clean"):
        assert c[name].passed, c[name]
        assert c[name].n > 0 and c[name].tolerance
    assert c["gap_monotone_in_overlap"].measured >= 0.9
    assert result.details["spearman"]["checked"]["p_value"] < 1e-3
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_silhouette_check_is_consistent(result):
    """The cohort check compares clean and pia silhouettes, whatever its verdict."""
    c = _by_name(result)["cohort_silhouette_clean_gt_pia"]
    sil = result.details["silhouette"]
    diff = sil["clean"]["silhouette"] - sil["pia"]["silhouette"]
    assert c.measured == pytest.approx(diff) and c.passed == (diff > 0) and c.n > 0
    lo, hi = sil["difference_clean_minus_pia"]["bootstrap_95ci"]
    assert lo <= hi and all(-1 <= sil[s]["silhouette"] <= 1 for s in ("clean", "masking", "pia"))


@pytest.mark.slow
def test_permuted_inputs_fail_spearman(tiny_ctx, result):
    """Negative control: latent codes of permuted users break the Spearman check."""
    r = t2_5.run(tiny_ctx, control="permuted_inputs")
    c = _by_name(r)
    assert not c["spearman_input_vs_latent_clean"].passed and r.verdict == "FAIL"
    # the controls touch only the Spearman check
    for name in GAP_CHECKS:
        assert c[name].passed == _by_name(result)[name].passed


@pytest.mark.slow
def test_untrained_model_fails_spearman(tiny_ctx):
    """Negative control: a random untrained encoder does not track raw input distance."""
    r = t2_5.run(tiny_ctx, control="untrained")
    assert not _by_name(r)["spearman_input_vs_latent_clean"].passed


@pytest.mark.slow
def test_unweighted_p_bar_fails_gap_checks(tiny_ctx):
    """Negative control: the unweighted mean as shared output breaks 'zero without overlap'
    and the monotone growth of G."""
    r = t2_5.run(tiny_ctx, p_bar="unweighted")
    c = _by_name(r)
    assert not c["gap_zero_without_overlap"].passed
    assert not c["gap_monotone_in_overlap"].passed
    assert r.verdict == "FAIL"


def test_bad_options(tiny_ctx):
    """Bad options raise with exact messages."""
    with pytest.raises(ValueError, match="control must be None, 'permuted_inputs' or 'untrained'"):
        t2_5.run(tiny_ctx, control="shuffle")
    with pytest.raises(ValueError, match="p_bar must be 'optimal' or 'unweighted', got 'mean'"):
        t2_5.run(tiny_ctx, p_bar="mean")
    with pytest.raises(ValueError, match=r"min_monotone_fraction must be in \(0, 1\], got 0"):
        t2_5.run(tiny_ctx, min_monotone_fraction=0)
    with pytest.raises(ValueError, match=r"alpha must be in \(0, 1\), got 1"):
        t2_5.run(tiny_ctx, alpha=1)


@pytest.mark.slow
def test_runs_on_recvae_with_baseline(tiny_recvae_ctx):
    """RecVAE: the claim runs unchanged and its untrained baseline is a fresh RecVAE."""
    from radius.model.recvae import RecVAE

    r = t2_5.run(tiny_recvae_ctx)
    sp = r.details["spearman"]
    assert {"untrained_baseline", "masking", "pia"} <= set(sp)
    assert isinstance(t2_5._untrained_like(tiny_recvae_ctx, 0), RecVAE)
    c = _by_name(r)["spearman_input_vs_latent_clean"]
    assert c.passed == bool(sp["checked"]["rho"] > 0 and sp["checked"]["p_value"] < 1e-3)
