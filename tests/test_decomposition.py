"""Tests of radius.analysis.decomposition: beta-KL decomposition, W2 contraction, active units."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy import integrate, stats
from scipy.special import logsumexp

from radius.analysis.decomposition import (
    active_units,
    encode_masked,
    gaussian_log_density,
    information_from_moments,
    kl_decomposition,
    kl_to_standard_normal,
    mean_pairwise_w2,
    mixture_log_density,
    moment_matched_gaussian,
    per_input_mean_w2,
    reconstruction_nll,
    spearman,
    unit_activity,
    unit_information,
    unit_kl,
    unit_moments,
)
from radius.model.multvae import MultVAE, kl_std_normal


# --------------------------------------------------------------------------- helpers
@st.composite
def gaussians(draw, max_n: int = 6, max_d: int = 4):
    """(mu, logvar) of N in [2, max_n] diagonal Gaussians in d in [1, max_d] dimensions."""
    n = draw(st.integers(2, max_n))
    d = draw(st.integers(1, max_d))
    finite = dict(allow_nan=False, allow_infinity=False)
    mu = draw(arrays(np.float64, (n, d), elements=st.floats(-3, 3, **finite)))
    logvar = draw(arrays(np.float64, (n, d), elements=st.floats(-3, 1.5, **finite)))
    return mu, logvar


def scipy_mixture_logpdf(z, mu, logvar, exclude=None):
    """Brute force: log mean_k N(z; m_k, diag e^l_k) with scipy's multivariate normal."""
    comps = np.stack(
        [
            stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(z).reshape(-1)
            for m, lv in zip(mu, logvar)
        ],
        axis=1,
    )  # (M, N)
    if exclude is not None:
        comps[np.arange(len(z)), exclude] = -np.inf
        return logsumexp(comps, axis=1) - math.log(len(mu) - 1)
    return logsumexp(comps, axis=1) - math.log(len(mu))


def quadrature_terms_1d(mu, sd):
    """I and KL(q_h || p) of a 1-D Gaussian mixture by numerical integration."""

    def log_qh(z):
        return logsumexp(stats.norm.logpdf(z, mu, sd)) - math.log(len(mu))

    lo, hi = min(mu - 12 * sd), max(mu + 12 * sd)
    mi = np.mean(
        [
            integrate.quad(
                lambda z, m=m, s=s: (
                    stats.norm.pdf(z, m, s) * (stats.norm.logpdf(z, m, s) - log_qh(z))
                ),
                m - 12 * s,
                m + 12 * s,
                limit=200,
            )[0]
            for m, s in zip(mu, sd)
        ]
    )
    kl = integrate.quad(
        lambda z: math.exp(log_qh(z)) * (log_qh(z) - stats.norm.logpdf(z)),
        lo,
        hi,
        limit=400,
        points=list(mu),
    )[0]
    return mi, kl


def separated(n=40, d=6, seed=0):
    """Well-separated narrow components (I close to log N)."""
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)) * 3.0, np.full((n, d), -4.0)


# --------------------------------------------------------------------------- closed forms
@given(gaussians())
def test_kl_closed_form_matches_torch(g):
    """kl_to_standard_normal equals torch.distributions' KL and the model's kl_std_normal."""
    mu, logvar = g
    ours = kl_to_standard_normal(mu, logvar)
    q = torch.distributions.Normal(torch.tensor(mu), torch.tensor(np.exp(0.5 * logvar)))
    p = torch.distributions.Normal(torch.zeros_like(q.loc), torch.ones_like(q.scale))
    ref = torch.distributions.kl_divergence(q, p).sum(-1).numpy()
    np.testing.assert_allclose(ours, ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(
        ours, kl_std_normal(torch.tensor(mu), torch.tensor(logvar)).numpy(), rtol=1e-9
    )


@given(gaussians(), st.integers(0, 2**31 - 1))
def test_gaussian_log_density_matches_scipy(g, seed):
    """Row-matched diagonal log-density equals scipy's multivariate normal."""
    mu, logvar = g
    z = np.random.default_rng(seed).normal(size=mu.shape)
    ref = [
        stats.multivariate_normal(m, np.diag(np.exp(lv))).logpdf(zz)
        for zz, m, lv in zip(z, mu, logvar)
    ]
    np.testing.assert_allclose(gaussian_log_density(z, mu, logvar), ref, rtol=1e-9, atol=1e-9)


@given(gaussians(), st.integers(1, 5), st.integers(0, 2**31 - 1))
def test_mixture_log_density_matches_scipy_brute_force(g, chunk, seed):
    """Chunked mixture log-density = scipy brute force, with and without leave-one-out."""
    mu, logvar = g
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(7, mu.shape[1])) * 2.0
    np.testing.assert_allclose(
        mixture_log_density(z, mu, logvar, chunk_size=chunk),
        scipy_mixture_logpdf(z, mu, logvar),
        rtol=1e-8,
        atol=1e-8,
    )
    ex = rng.integers(0, len(mu), size=len(z))
    np.testing.assert_allclose(
        mixture_log_density(z, mu, logvar, exclude=ex, chunk_size=chunk),
        scipy_mixture_logpdf(z, mu, logvar, exclude=ex),
        rtol=1e-8,
        atol=1e-8,
    )


def test_moment_matched_gaussian_matches_mixture_moments():
    """The moment-matched Gaussian has the mean and variance of a large mixture sample."""
    mu, logvar = separated(n=5, d=3)
    mean, lv = moment_matched_gaussian(mu, logvar)
    rng = np.random.default_rng(0)
    k = rng.integers(0, 5, size=400_000)
    z = mu[k] + np.exp(0.5 * logvar[k]) * rng.standard_normal((k.size, 3))
    np.testing.assert_allclose(mean, z.mean(0), atol=0.05)
    np.testing.assert_allclose(np.exp(lv), z.var(0), rtol=0.02)


# --------------------------------------------------------------------------- decomposition
@given(gaussians(max_n=8, max_d=5), st.integers(0, 1000))
def test_mixture_pointwise_mi_at_most_log_n(g, seed):
    """With every component in q_h, log q_j(z) - log q_h(z) <= log N at every draw."""
    mu, logvar = g
    dec = kl_decomposition(mu, logvar, n_samples=3, seed=seed)
    assert dec.max_pointwise_mi <= dec.log_n + 1e-9
    assert dec.mutual_info <= dec.log_n + 1e-9


def test_identical_components_have_zero_mutual_information():
    """N copies of one Gaussian: I = 0 exactly and KL(q_h || p) = KL(q || p)."""
    mu = np.tile([[0.5, -1.0, 2.0]], (30, 1))
    logvar = np.tile([[-0.5, 0.3, 0.0]], (30, 1))
    dec = kl_decomposition(mu, logvar, n_samples=50, seed=1)
    assert abs(dec.mutual_info) < 1e-9 and dec.mutual_info_se < 1e-9
    kl = float(kl_to_standard_normal(mu[:1], logvar[:1])[0])
    assert dec.e_kl == pytest.approx(kl, rel=1e-12)
    assert abs(dec.kl_aggregate - kl) <= 4 * dec.kl_aggregate_se


def test_separated_components_saturate_at_log_n():
    """Far-apart narrow components: I -> log N and KL(q_h || p) -> E KL - log N."""
    mu, logvar = separated(n=40, d=6)
    dec = kl_decomposition(mu, logvar, n_samples=8, seed=2)
    assert dec.mutual_info == pytest.approx(dec.log_n, abs=1e-6)
    assert abs(dec.kl_aggregate - (dec.e_kl - dec.log_n)) <= 4 * dec.kl_aggregate_se + 1e-6


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_terms_match_quadrature_in_one_dimension(seed):
    """In d = 1 the MC terms agree with numerical integration within 4 standard errors."""
    rng = np.random.default_rng(seed)
    mu = rng.normal(size=4) * 1.5
    sd = np.exp(rng.uniform(-1.0, 0.3, size=4))
    mi_true, kl_true = quadrature_terms_1d(mu, sd)
    e_kl = float(kl_to_standard_normal(mu[:, None], 2 * np.log(sd)[:, None]).mean())
    assert mi_true + kl_true == pytest.approx(e_kl, abs=1e-6)  # the identity itself
    dec = kl_decomposition(mu[:, None], 2 * np.log(sd)[:, None], n_samples=3000, seed=seed)
    assert abs(dec.mutual_info - mi_true) <= 4 * dec.mutual_info_se
    assert abs(dec.kl_aggregate - kl_true) <= 4 * dec.kl_aggregate_se
    assert abs(dec.e_kl_mc - e_kl) <= 4 * dec.e_kl_mc_se


def test_standard_errors_are_calibrated():
    """Across 40 seeds about 95% of |I_hat - I| fall within 2 standard errors."""
    mu = np.array([-1.0, 0.2, 1.5])
    sd = np.array([0.6, 0.9, 0.4])
    mi_true, kl_true = quadrature_terms_1d(mu, sd)
    hits_mi = hits_kl = 0
    for seed in range(40):
        dec = kl_decomposition(mu[:, None], 2 * np.log(sd)[:, None], n_samples=40, seed=seed)
        hits_mi += abs(dec.mutual_info - mi_true) <= 2 * dec.mutual_info_se
        hits_kl += abs(dec.kl_aggregate - kl_true) <= 2 * dec.kl_aggregate_se
    # binomial(40, 0.95): P(X <= 32) ~ 0.3%
    assert hits_mi >= 33 and hits_kl >= 33


@given(gaussians(max_n=6, max_d=3), st.integers(0, 1000))
def test_identity_holds_within_error(g, seed):
    """E KL - (I + KL(q_h || p)) lies within 5 combined standard errors."""
    mu, logvar = g
    dec = kl_decomposition(mu, logvar, n_samples=200, seed=seed)
    assert abs(dec.gap) <= 5 * dec.gap_se + 1e-9


@pytest.mark.parametrize("aggregate", ["leave_one_out", "gaussian"])
def test_wrong_aggregate_breaks_the_log_n_bound(aggregate):
    """Negative control: a wrong aggregate posterior makes the first term exceed log N."""
    mu, logvar = separated()
    dec = kl_decomposition(mu, logvar, n_samples=4, seed=0, aggregate=aggregate)
    assert dec.max_pointwise_mi > dec.log_n + 1.0
    assert dec.mutual_info > dec.log_n


@pytest.mark.parametrize("aggregate", ["leave_one_out", "gaussian"])
def test_wrong_aggregate_still_telescopes(aggregate):
    """I(r) + KL-term(r) = E KL for any r used in both terms (why the log N check exists)."""
    mu, logvar = separated()
    dec = kl_decomposition(mu, logvar, n_samples=4, seed=0, aggregate=aggregate)
    right = kl_decomposition(mu, logvar, n_samples=4, seed=0)
    assert abs(dec.gap) <= 4 * dec.gap_se + 1e-6
    assert dec.mutual_info > right.mutual_info + 1.0  # I(r) = I + KL(q_h || r)


def test_decomposition_is_seeded():
    """The same seed gives the same estimates; another seed different ones."""
    mu, logvar = separated(n=10, d=3)
    a = kl_decomposition(mu, logvar * 0 + 1.0, seed=5)
    b = kl_decomposition(mu, logvar * 0 + 1.0, seed=5)
    c = kl_decomposition(mu, logvar * 0 + 1.0, seed=6)
    assert a == b and a.kl_aggregate != c.kl_aggregate


def test_to_dict_carries_gap():
    """to_dict includes the derived gap and its standard error."""
    mu, logvar = separated(n=5, d=2)
    dec = kl_decomposition(mu, logvar)
    d = dec.to_dict()
    assert d["gap"] == dec.gap and d["gap_se"] == dec.gap_se
    assert dataclasses.replace(dec, e_kl=dec.e_kl + 1).gap == pytest.approx(dec.gap + 1)


@given(gaussians(max_n=6, max_d=3), st.integers(0, 10))
def test_per_input_shares_average_to_the_terms(g, seed):
    """The per-input shares of I and KL(q_h||p) average exactly to the two estimates."""
    dec = kl_decomposition(*g, n_samples=3, seed=seed)
    assert dec.mi_per_input.shape == dec.kl_aggregate_per_input.shape == (dec.n_inputs,)
    assert dec.mi_per_input.mean() == pytest.approx(dec.mutual_info, rel=1e-12, abs=1e-12)
    assert dec.kl_aggregate_per_input.mean() == pytest.approx(
        dec.kl_aggregate, rel=1e-12, abs=1e-12
    )
    assert "mi_per_input" not in dec.to_dict()


# --------------------------------------------------------------------------- W2, active units
@given(gaussians(max_n=7, max_d=3), st.data())
def test_per_input_mean_w2_averages_its_partners(g, data):
    """per_input_mean_w2 is each input's mean W2 to the inputs of other groups (brute force);
    with equal group sizes its mean is mean_pairwise_w2."""
    mu, logvar = g
    n = len(mu)
    groups = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    v = np.concatenate([mu, np.exp(0.5 * logvar)], axis=1)
    got = per_input_mean_w2(mu, logvar, groups=groups, chunk_size=2)
    for i in range(n):
        other = groups != groups[i]
        want = np.linalg.norm(v[other] - v[i], axis=1).mean() if other.any() else np.nan
        assert got[i] == pytest.approx(want, rel=1e-9, abs=1e-12, nan_ok=True)
    eq = per_input_mean_w2(mu, logvar)  # every input its own group: n - 1 partners each
    assert eq.mean() == pytest.approx(mean_pairwise_w2(mu, logvar)[0], rel=1e-9)


@given(gaussians(max_n=7, max_d=4), st.integers(1, 4), st.data())
def test_mean_pairwise_w2_matches_pot(g, chunk, data):
    """Mean pairwise W2 equals the average of POT's Bures-Wasserstein distances over kept pairs."""
    import ot

    mu, logvar = g
    n = len(mu)
    groups = np.asarray(data.draw(st.lists(st.integers(0, 2), min_size=n, max_size=n)))
    assume(np.any(groups[:, None] != groups[None, :]))
    dists = [
        float(
            ot.gaussian.bures_wasserstein_distance(
                mu[i], mu[j], np.diag(np.exp(logvar[i])), np.diag(np.exp(logvar[j]))
            )
        )
        for i in range(n)
        for j in range(i + 1, n)
        if groups[i] != groups[j]
    ]
    mean, count = mean_pairwise_w2(mu, logvar, groups=groups, chunk_size=chunk)
    assert count == len(dists)
    assert mean == pytest.approx(np.mean(dists), rel=1e-6, abs=1e-6)


def test_mean_pairwise_w2_without_pairs_is_nan():
    """All inputs in one group: no pair, (nan, 0)."""
    mean, count = mean_pairwise_w2(np.zeros((3, 2)), np.zeros((3, 2)), groups=[1, 1, 1])
    assert count == 0 and math.isnan(mean)


def test_active_units_on_constructed_means():
    """Dimensions with variance 0, 0.005, 0.02 and 1 give 2 active units at threshold 0.01."""
    base = np.array([-1.0, 1.0] * 50)  # sample variance (ddof=1) = 100/99
    scales = np.sqrt(np.array([0.0, 0.005, 0.02, 1.0]) * 99 / 100)
    mu = base[:, None] * scales[None, :] + np.array([3.0, -2.0, 0.0, 1.0])
    np.testing.assert_allclose(unit_activity(mu), [0.0, 0.005, 0.02, 1.0], atol=1e-12)
    assert active_units(mu) == 2
    assert active_units(mu, threshold=0.001) == 3
    assert active_units(mu, threshold=1.0) == 0  # strict inequality


# --------------------------------------------------------------------------- encoding
def test_encode_masked_shapes_and_clean_input():
    """keep_rate = 1 reproduces model.encode on the clean rows; groups repeat the users."""
    rng = np.random.default_rng(0)
    x = sp.random(20, 30, density=0.2, format="csr", random_state=1, dtype=np.float32)
    x.data[:] = 1.0
    torch.manual_seed(0)
    model = MultVAE(30, (8,), 3).eval()
    users = np.array([2, 5, 11])
    mu, logvar, groups = encode_masked(model, x, users, n_masks=4, keep_rate=1.0, seed=rng)
    assert mu.shape == (12, 3) and logvar.shape == (12, 3)
    np.testing.assert_array_equal(groups, np.repeat(users, 4))
    with torch.no_grad():
        ref, _ = model.encode(torch.tensor(x[groups].toarray()))
    np.testing.assert_allclose(mu, ref.double().numpy(), rtol=1e-6, atol=1e-6)


def test_encode_masked_masks_differ_and_are_seeded():
    """keep_rate < 1: masks of one user differ, and the same seed gives the same posteriors."""
    x = sp.csr_matrix(np.ones((2, 40), dtype=np.float32))
    torch.manual_seed(0)
    model = MultVAE(40, (8,), 3).eval()
    a = encode_masked(model, x, [0, 1], n_masks=3, keep_rate=0.5, seed=3)
    b = encode_masked(model, x, [0, 1], n_masks=3, keep_rate=0.5, seed=3)
    np.testing.assert_array_equal(a[0], b[0])
    assert not np.allclose(a[0][0], a[0][1])


def test_encode_masked_goes_through_the_model_protocol():
    """A model with its own encode_masked(x, b) gets the clean rows and a 0/1 keep mask that
    is 1 off the support (its input convention decides the encoder input)."""
    x = sp.csr_matrix(np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=np.float32))
    seen = []

    class Spy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def encode_masked(self, xc, b):
            seen.append((xc.clone(), b.clone()))
            return (xc * b)[:, :2], torch.zeros(xc.shape[0], 2)

    mu, _, groups = encode_masked(Spy(), x, [0, 1], n_masks=50, keep_rate=0.5, seed=0)
    xc, b = seen[0]
    np.testing.assert_array_equal(xc.numpy(), x[groups].toarray())
    assert set(np.unique(b.numpy())) <= {0.0, 1.0}
    assert torch.all(b[xc == 0] == 1)  # off the support the mask is 1
    kept = b[xc == 1].mean().item()
    assert 0.35 < kept < 0.65  # about rho on the support
    np.testing.assert_array_equal(mu, (xc * b)[:, :2].double().numpy())


# --------------------------------------------------------------------------- validation
def test_validation_messages():
    """Bad public input raises with the exact messages."""
    good = np.zeros((3, 2))
    with pytest.raises(ValueError, match=r"^mu must be 2-D \(N, d\), got shape \(3,\)$"):
        kl_decomposition(np.zeros(3), np.zeros(3))
    with pytest.raises(
        ValueError, match=r"^mu \(3, 2\) and logvar \(3, 3\) must have the same shape$"
    ):
        kl_decomposition(good, np.zeros((3, 3)))
    with pytest.raises(
        ValueError, match=r"^need at least 2 posteriors and d >= 1, got shape \(1, 2\)$"
    ):
        kl_decomposition(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"^mu and logvar must be finite$"):
        kl_decomposition(good, np.full((3, 2), np.nan))
    with pytest.raises(ValueError, match=r"^n_samples must be an integer >= 2, got 1$"):
        kl_decomposition(good, good, n_samples=1)
    with pytest.raises(
        ValueError,
        match=r"^aggregate must be one of \('mixture', 'leave_one_out', 'gaussian'\), got 'x'$",
    ):
        kl_decomposition(good, good, aggregate="x")
    with pytest.raises(TypeError, match=r"^mu must be a numeric array, got dtype <U1$"):
        kl_to_standard_normal(np.array([["a"]]), good)
    with pytest.raises(ValueError, match=r"^exclude indices must lie in \[0, 3\)$"):
        mixture_log_density(good, good, good, exclude=np.array([0, 1, 3]))
    with pytest.raises(ValueError, match=r"^z must be \(M, 2\), got shape \(3, 3\)$"):
        mixture_log_density(np.zeros((3, 3)), good, good)
    with pytest.raises(ValueError, match=r"^groups must have shape \(3,\), got \(2,\)$"):
        mean_pairwise_w2(good, good, groups=[0, 1])
    with pytest.raises(ValueError, match=r"^threshold must be >= 0, got -1$"):
        active_units(good, threshold=-1)
    with pytest.raises(TypeError, match=r"^x must be a scipy sparse matrix, got ndarray$"):
        encode_masked(None, good, [0], n_masks=1, keep_rate=0.5)
    with pytest.raises(ValueError, match=r"^keep_rate must be in \(0, 1\], got 0$"):
        encode_masked(None, sp.csr_matrix(good), [0], n_masks=1, keep_rate=0)


# --------------------------------------------------------------------------- unit information
def test_unit_information_is_the_snr_capacity_for_constant_noise():
    """Constant posterior variance s^2: I^G_k = 1/2 log(1 + Var m_k / s^2) exactly."""
    rng = np.random.default_rng(0)
    mu = rng.normal(size=(500, 3)) * np.array([0.0, 0.1, 2.0])
    logvar = np.full((500, 3), math.log(0.25))
    snr = mu.var(axis=0) / 0.25
    np.testing.assert_allclose(unit_information(mu, logvar), 0.5 * np.log1p(snr), atol=1e-12)
    assert unit_information(mu, logvar)[0] == pytest.approx(0.0, abs=1e-12)


@given(gaussians(max_n=8, max_d=3), st.floats(0.01, 100.0), st.floats(-5.0, 5.0))
def test_unit_information_is_scale_free_and_the_variance_rule_is_not(g, a, c):
    """z_k -> a z_k + c (the decoder absorbs it) leaves I^G_k unchanged; Burda's
    Var_x m_k scales by a^2, so a threshold on it reads the latent scale."""
    mu, logvar = g
    moved_mu, moved_lv = a * mu + c, logvar + 2 * math.log(a)
    np.testing.assert_allclose(
        unit_information(moved_mu, moved_lv), unit_information(mu, logvar), atol=1e-9
    )
    np.testing.assert_allclose(
        unit_activity(moved_mu), a * a * unit_activity(mu), rtol=1e-9, atol=1e-12
    )


def test_variance_rule_flips_with_the_scale_information_rule_does_not():
    """The power table's case: every unit informative (SNR 3) but Var m_k = 0.012, just
    above 0.01; at latent x 0.667 the variance rule counts none, the information rule all."""
    rng = np.random.default_rng(1)
    mu = rng.normal(size=(2000, 20)) * math.sqrt(0.012)
    logvar = np.full_like(mu, math.log(0.004))
    info = int(np.sum(unit_information(mu, logvar) > 0.01))
    assert active_units(mu) == 20 and info == 20
    scaled = (mu * 0.667, logvar + 2 * math.log(0.667))
    assert active_units(scaled[0]) == 0
    assert int(np.sum(unit_information(*scaled) > 0.01)) == 20


@given(gaussians(max_n=8, max_d=3))
def test_unit_kl_is_information_plus_scale_mismatch(g):
    """Per-unit mean KL to N(0, 1) = I^G_k + KL(N(mean m_k, v_k) || N(0, 1)) (Pythagoras
    for the moment-matched Gaussian), so I^G_k <= the per-unit KL."""
    mu, logvar = g
    v = mu.var(axis=0) + np.exp(logvar).mean(axis=0)
    m = mu.mean(axis=0)
    mismatch = 0.5 * (v + m * m - 1.0 - np.log(v))
    np.testing.assert_allclose(
        unit_kl(mu, logvar), unit_information(mu, logvar) + mismatch, rtol=1e-9, atol=1e-9
    )
    assert np.all(unit_information(mu, logvar) <= unit_kl(mu, logvar) + 1e-9)
    assert np.all(unit_information(mu, logvar) >= -1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_unit_information_bounds_the_unit_mutual_information(seed):
    """I^G_k is an upper bound on I(X_h; Z_k): the 1-D mixture's MI (Monte Carlo, through
    kl_decomposition on the unit alone) is below it, and close when the means are Gaussian."""
    rng = np.random.default_rng(seed)
    mu = np.concatenate([rng.normal(-2, 0.3, 60), rng.normal(2, 0.3, 60)])[:, None]  # bimodal
    logvar = np.full_like(mu, math.log(0.5))
    dec = kl_decomposition(mu, logvar, n_samples=200, seed=seed)
    bound = float(unit_information(mu, logvar)[0])
    assert dec.mutual_info <= bound + 4 * dec.mutual_info_se
    assert bound - dec.mutual_info > 0.05  # bimodal aggregate: strictly loose
    gauss = rng.normal(size=(400, 1)) * 0.7
    dec_g = kl_decomposition(gauss, np.full_like(gauss, math.log(0.5)), n_samples=50, seed=seed)
    assert float(unit_information(gauss, np.full_like(gauss, math.log(0.5)))[0]) == (
        pytest.approx(dec_g.mutual_info, abs=4 * dec_g.mutual_info_se + 0.01)
    )


@given(gaussians(max_n=8, max_d=3), st.data())
def test_moments_rebuild_the_information_under_any_user_weights(g, data):
    """information_from_moments with unit weights is unit_information; with bootstrap
    multiplicities it is unit_information on the repeated rows."""
    mu, logvar = g
    n = mu.shape[0]
    groups = np.arange(n) // 2  # users of two inputs (the last may have one)
    sums, counts = unit_moments(mu, logvar, groups)
    np.testing.assert_allclose(
        information_from_moments(sums, counts), unit_information(mu, logvar), atol=1e-9
    )
    w = np.array(data.draw(st.lists(st.integers(0, 3), min_size=len(counts), max_size=len(counts))))
    assume(np.sum(w[groups]) >= 2)
    rep = np.repeat(np.arange(n), w[groups])
    np.testing.assert_allclose(
        information_from_moments(sums, counts, w),
        unit_information(mu[rep], logvar[rep]),
        atol=1e-9,
    )
    with pytest.raises(ValueError, match="the group weights sum to zero"):
        information_from_moments(sums, counts, np.zeros(len(counts)))


def test_unit_moments_keeps_groups_in_order_of_first_appearance():
    """Groups labelled 7, 3, 7, 3, 5 -> rows 7, 3, 5 with 2, 2, 1 inputs."""
    mu = np.arange(10, dtype=float).reshape(5, 2)
    sums, counts = unit_moments(mu, np.zeros((5, 2)), np.array([7, 3, 7, 3, 5]))
    np.testing.assert_array_equal(counts, [2, 2, 1])
    np.testing.assert_array_equal(sums[:, 0, 0], [0 + 4, 2 + 6, 8])
    with pytest.raises(ValueError, match=r"groups must have shape \(5,\)"):
        unit_moments(mu, np.zeros((5, 2)), np.zeros(4))


@pytest.mark.filterwarnings("ignore::scipy.stats.ConstantInputWarning")
@given(st.lists(st.floats(-10, 10, allow_nan=False), min_size=2, max_size=12), st.data())
def test_spearman_matches_scipy(xs, data):
    """spearman equals scipy.stats.spearmanr (ties averaged); NaN when a side is constant."""
    ys = data.draw(
        st.lists(st.floats(-10, 10, allow_nan=False), min_size=len(xs), max_size=len(xs))
    )
    ref = stats.spearmanr(xs, ys).statistic
    got = spearman(xs, ys)
    if np.isnan(ref):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(ref, abs=1e-12)
    with pytest.raises(ValueError, match="must have one length"):
        spearman([1, 2], [1, 2, 3])


def test_reconstruction_nll_is_the_multinomial_loss_of_one_draw():
    """R_j = -sum_i x_i log softmax(decode(z_j))_i with z_j = m_j + s_j eps_j (seeded),
    the clean row of input j's user reconstructed."""
    x = sp.csr_matrix(np.array([[1, 0, 1, 1, 0], [0, 1, 1, 0, 0]], dtype=np.float32))
    torch.manual_seed(0)
    model = MultVAE(5, (4,), 2).eval()
    groups = np.array([0, 0, 1])
    mu = np.array([[0.1, -0.2], [0.0, 0.3], [1.0, 1.0]])
    logvar = np.full((3, 2), -1.0)
    got = reconstruction_nll(model, x, groups, mu, logvar, seed=4, chunk_size=2)
    eps = np.random.default_rng(4).standard_normal(mu.shape)
    z = torch.tensor(mu + np.exp(-0.5) * eps, dtype=torch.float32)
    with torch.no_grad():
        logp = torch.log_softmax(model.decode(z), dim=-1).double().numpy()
    want = -(x[groups].toarray() * logp).sum(axis=1)
    np.testing.assert_allclose(got, want, rtol=1e-5)
    assert np.all(got > 0)
    with pytest.raises(ValueError, match=r"groups must have shape \(3,\)"):
        reconstruction_nll(model, x, groups[:2], mu, logvar)
