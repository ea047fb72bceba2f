"""Tests of radius.analysis.contraction: the anchor contraction factor tau (P3.2)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from radius.analysis.contraction import (
    SPECTRA,
    amortised_mask_spread,
    anchored_quadratic_optimum,
    batched_lbfgs,
    bernoulli_masks,
    contraction_factor,
    contraction_sq_envelope,
    deviation_ratio,
    directional_variance_bound,
    item_centroid,
    lanczos_extreme_eigenvalues,
    masked_objective,
    random_psd,
    refine_latents,
    variance_ratio,
)
from radius.model.multvae import MultVAE
from radius.model.protocol import encode_masked as protocol_encode_masked


@st.composite
def quadratic_cases(draw):
    """(H, L, m (B, d), e_bar, lambda_A, spectrum) for a random quadratic model."""
    d = draw(st.integers(1, 12))
    spectrum = draw(st.sampled_from(SPECTRA))
    lip = draw(st.floats(1e-3, 1e3, allow_nan=False))
    lam = draw(st.floats(1e-3, 1e2, allow_nan=False))
    n_masks = draw(st.integers(2, 10))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    h = random_psd(d, lipschitz=lip, spectrum=spectrum, rng=rng)
    scale = draw(st.floats(1e-2, 1e2, allow_nan=False))
    m = scale * rng.standard_normal((n_masks, d)) + rng.standard_normal(d)
    e_bar = rng.standard_normal(d)
    return h, lip, m, e_bar, lam, spectrum


@given(quadratic_cases())
def test_deviation_contracts_by_tau(case):
    """||mu*_b - e_bar|| <= tau ||m_b - e_bar|| for every mask (exact quadratic optimum)."""
    h, lip, m, e_bar, lam, _ = case
    mu = anchored_quadratic_optimum(h, m, e_bar, lam)
    tau = contraction_factor(lip, lam)
    dev = deviation_ratio(mu, m, e_bar)
    assume(np.all(np.isfinite(dev)))
    assert np.all(dev <= tau * (1 + 1e-9) + 1e-12)


@given(quadratic_cases())
def test_variance_contracts_by_tau_squared(case):
    """tr Cov_b(mu*_b) <= tau^2 tr Cov_b(m_b) with one H for all masks."""
    h, lip, m, e_bar, lam, _ = case
    mu = anchored_quadratic_optimum(h, m, e_bar, lam)
    ratio = variance_ratio(mu, m)
    assume(np.isfinite(ratio))
    assert ratio <= contraction_factor(lip, lam) ** 2 * (1 + 1e-9) + 1e-12


def _rayleigh(v, h):
    return np.einsum("bi,ij,bj->b", v, h, v) / np.einsum("bi,bi->b", v, v)


@given(quadratic_cases())
def test_variance_contracts_by_directional_bound(case):
    """tr Cov_b(mu*_b) / tr Cov_b(m_b) <= sum_b psi_L(kappa_b)||delta_b||^2 / sum ||delta_b||^2
    <= tau^2, kappa_b the curvature along delta_b = m_b - mean m (Jensen on the envelope)."""
    h, lip, m, e_bar, lam, _ = case
    mu = anchored_quadratic_optimum(h, m, e_bar, lam)
    ratio = variance_ratio(mu, m)
    delta = m - m.mean(axis=0)
    assume(np.isfinite(ratio) and np.all((delta**2).sum(1) > 1e-20))
    bound = directional_variance_bound(m, _rayleigh(delta, h), lip, lam)
    assert ratio <= bound * (1 + 1e-9) + 1e-12
    assert bound <= contraction_factor(lip, lam) ** 2 * (1 + 1e-12)


@given(quadratic_cases())
def test_deviation_contracts_by_directional_envelope(case):
    """||mu*_b - e_bar|| / ||m_b - e_bar|| <= sqrt(psi_L(kappa)) along m_b - e_bar."""
    h, lip, m, e_bar, lam, _ = case
    mu = anchored_quadratic_optimum(h, m, e_bar, lam)
    dev = deviation_ratio(mu, m, e_bar)
    assume(np.all(np.isfinite(dev)))
    env = np.sqrt(contraction_sq_envelope(_rayleigh(m - e_bar, h), lip, lam))
    assert np.all(dev <= env * (1 + 1e-9) + 1e-12)


def test_envelope_values_and_tightness():
    """psi_L(kappa) = (kappa/(kappa+c))^2 at and above t = min(c, L), the chord below; it is
    attained by a direction on one eigenvector; lambda_A = 0 gives 1; never above tau^2."""
    lam = 0.5  # c = 2 lambda_A = 1
    assert contraction_sq_envelope(2.0, 10.0, lam) == pytest.approx((2 / 3) ** 2)
    assert contraction_sq_envelope(1.0, 10.0, lam) == pytest.approx(0.25)
    assert contraction_sq_envelope(0.5, 10.0, lam) == pytest.approx(0.5 * 0.25 / 1.0)
    # L below c: the chord from 0 to (L, psi(L))
    assert contraction_sq_envelope(0.1, 0.4, lam) == pytest.approx(0.1 * (0.4 / 1.4**2))
    assert contraction_sq_envelope(0.4, 0.4, lam) == pytest.approx(
        contraction_factor(0.4, lam) ** 2
    )
    assert np.all(contraction_sq_envelope(np.array([0.0, 3.0]), 5.0, 0.0) == 1.0)
    k = np.linspace(0, 7, 50)
    assert np.all(contraction_sq_envelope(k, 7.0, lam) <= contraction_factor(7.0, lam) ** 2 + 1e-15)
    assert np.all(np.diff(contraction_sq_envelope(k, 7.0, lam)) >= 0)
    # tight: delta on one eigenvector with h >= c
    h = np.diag([0.1, 3.0])
    m = np.array([[0.0, 1.0], [0.0, -1.0]])
    mu = anchored_quadratic_optimum(h, m, np.zeros(2), lam)
    bound = directional_variance_bound(m, _rayleigh(m - m.mean(0), h), 3.0, lam)
    assert variance_ratio(mu, m) == pytest.approx(bound, rel=1e-12)
    with pytest.raises(ValueError, match="lambda_a must be finite and >= 0"):
        contraction_sq_envelope(1.0, 1.0, -1.0)


def test_directional_bound_negative_control_lambda_doubled():
    """Negative control: the bound computed with lambda_A doubled is violated by the exact
    optimum whenever the variation lies where h >= lambda_A (here one eigenvector)."""
    lam = 0.5
    h = np.diag([2.0, 0.3])
    m = np.array([[1.0, 0.0], [-1.0, 0.0], [0.5, 0.0]])
    mu = anchored_quadratic_optimum(h, m, np.zeros(2), lam)
    k = _rayleigh(m - m.mean(0), h)
    assert variance_ratio(mu, m) > directional_variance_bound(m, k, 2.0, 2 * lam)


def test_refinement_curvatures_are_rayleigh_quotients(small_refinement):
    """curvature_var is delta^T H delta / |delta|^2 at m_b (torch.func.hessian)."""
    model, x, masks, _, res = small_refinement
    dec = copy.deepcopy(model).double()
    delta = res.m - res.m.mean(axis=1, keepdims=True)
    for u, b in ((0, 1), (3, 4)):
        xb = (x[u] * masks[u, b]).double()[None]
        f = masked_objective(dec, xb, torch.zeros(1, 4, dtype=torch.float64), beta=0.2, lambda_a=0)
        h = torch.func.hessian(lambda m, f=f: f(m[None]).sum())(torch.as_tensor(res.m[u, b]))
        v = delta[u, b]
        want = float(v @ h.detach().numpy() @ v / (v @ v))
        assert res.curvature_var[u, b] == pytest.approx(want, rel=1e-6)
        w = res.m[u, b] - res.e_bar[u]
        want_dev = float(w @ h.detach().numpy() @ w / (w @ w))
        assert res.curvature_dev[u, b] == pytest.approx(want_dev, rel=1e-6)
    vb = res.variance_bound()
    assert np.all(vb <= res.tau_user() ** 2 * (1 + 1e-12))


@given(quadratic_cases())
def test_isotropic_case_is_tight(case):
    """With H = L I both bounds hold with equality, so any smaller tau would fail."""
    _, lip, m, e_bar, lam, _ = case
    d = m.shape[1]
    mu = anchored_quadratic_optimum(lip * np.eye(d), m, e_bar, lam)
    tau = contraction_factor(lip, lam)
    dev = deviation_ratio(mu, m, e_bar)
    np.testing.assert_allclose(dev[np.isfinite(dev)], tau, rtol=1e-9)
    ratio = variance_ratio(mu, m)
    if np.isfinite(ratio):
        np.testing.assert_allclose(ratio, tau**2, rtol=1e-8)
        assert ratio > contraction_factor(lip, 2 * lam) ** 2  # lambda doubled: too small


@given(quadratic_cases())
def test_optimum_has_zero_autograd_gradient(case):
    """Autograd of f_b + lambda ||mu - e||^2 equals H (mu - m) + 2 lambda (mu - e), zero at mu*."""
    h, _, m, e_bar, lam, _ = case
    mu = anchored_quadratic_optimum(h, m, e_bar, lam)
    ht, mt, et = (torch.as_tensor(a) for a in (h, m, e_bar))
    x = torch.as_tensor(mu).clone().requires_grad_(True)
    diff = x - mt
    obj = 0.5 * ((diff @ ht) * diff).sum() + lam * ((x - et) ** 2).sum()
    (g,) = torch.autograd.grad(obj, x)
    want = (x.detach() - mt) @ ht + 2 * lam * (x.detach() - et)
    torch.testing.assert_close(g, want, rtol=1e-10, atol=1e-10)
    scale = float(np.abs(h).max() * np.abs(m).max() + lam * np.abs(e_bar).max() + 1.0)
    assert float(g.abs().max()) <= 1e-8 * scale


@given(
    st.integers(1, 20),
    st.sampled_from(SPECTRA),
    st.floats(0.0, 1e3, allow_nan=False),
    st.integers(0, 2**31 - 1),
)
def test_random_psd_has_top_eigenvalue_l(d, spectrum, lip, seed):
    """random_psd is symmetric, PSD and its top eigenvalue is exactly L."""
    h = random_psd(d, lipschitz=lip, spectrum=spectrum, rng=np.random.default_rng(seed))
    assert np.array_equal(h, h.T)
    eig = np.linalg.eigvalsh(h)
    assert eig[0] >= -1e-9 * max(lip, 1.0)
    np.testing.assert_allclose(eig[-1], lip, rtol=1e-9, atol=1e-12)


@given(st.floats(0.0, 1e4, allow_nan=False), st.floats(1e-4, 1e3, allow_nan=False))
def test_tau_is_monotone(lip, lam):
    """tau in [0, 1), decreasing in lambda_A, nondecreasing in L."""
    tau = contraction_factor(lip, lam)
    assert 0.0 <= tau < 1.0
    assert contraction_factor(lip, 2 * lam) <= tau
    assert contraction_factor(2 * lip, lam) >= tau


def test_tau_values():
    """tau = L / (L + 2 lambda): 1/2 when L = 2 lambda, 1 without anchors, 0 when L = 0."""
    assert contraction_factor(0.2, 0.1) == pytest.approx(0.5)
    np.testing.assert_array_equal(contraction_factor([1.0, 3.0], 0.0), [1.0, 1.0])
    assert contraction_factor(0.0, 1.0) == 0.0


def test_bad_inputs_raise():
    """Exact messages for invalid public input."""
    with pytest.raises(ValueError, match=r"lipschitz must be finite and >= 0, got min -1.0"):
        contraction_factor(-1.0, 0.1)
    with pytest.raises(ValueError, match=r"lambda_a must be finite and >= 0, got -0.1"):
        contraction_factor(1.0, -0.1)
    with pytest.raises(ValueError, match=r"lambda_a must be finite and > 0, got 0.0"):
        anchored_quadratic_optimum(np.eye(2), np.zeros((3, 2)), np.zeros(2), 0.0)
    with pytest.raises(ValueError, match=r"hessian must be a square \(d, d\) matrix"):
        anchored_quadratic_optimum(np.ones((2, 3)), np.zeros((3, 2)), np.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"need m \(B, 2\) and e_bar \(2,\)"):
        anchored_quadratic_optimum(np.eye(2), np.zeros((3, 3)), np.zeros(2), 0.1)
    with pytest.raises(ValueError, match=r"spectrum must be one of"):
        random_psd(3, lipschitz=1.0, spectrum="flat", rng=np.random.default_rng(0))
    with pytest.raises(ValueError, match=r"need mu and m of one shape \(..., B >= 2, d\)"):
        variance_ratio(np.zeros((1, 2)), np.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"keep_rate must be in \(0, 1\], got 0.0"):
        bernoulli_masks(2, 2, 5, 0.0, torch.Generator())
    with pytest.raises(ValueError, match=r"need x \(U, I\) and anchors \(I, d\)"):
        item_centroid(torch.zeros(2, 5), torch.zeros(4, 3))
    with pytest.raises(ValueError, match=r"need at least 2 masks per user, got 1"):
        amortised_mask_spread(MultVAE(5, (4,), 2), torch.ones(2, 5), torch.ones(2, 1, 5))


def test_ratios_undefined_without_deviation():
    """0/0 gives NaN (no evidence), never a pass by default."""
    m = np.zeros((3, 2))
    assert np.all(np.isnan(deviation_ratio(m, m, np.zeros(2))))
    assert np.isnan(variance_ratio(m, m))


def test_lbfgs_solves_quadratics_exactly():
    """Batched L-BFGS reaches the linear-solve optimum of several anchored quadratics."""
    rng = np.random.default_rng(0)
    hs, ms, es = [], [], []
    for k in range(6):
        hs.append(random_psd(5, lipschitz=10.0 ** (k - 2), spectrum=SPECTRA[k % 4], rng=rng))
        ms.append(rng.standard_normal(5))
        es.append(rng.standard_normal(5))
    ht, mt, et = (torch.as_tensor(np.stack(a)) for a in (hs, ms, es))
    lam = 0.3

    def fun(x, idx=None):
        h, m, e = (ht, mt, et) if idx is None else (ht[idx], mt[idx], et[idx])
        diff = x - m
        return 0.5 * torch.einsum("pi,pij,pj->p", diff, h, diff) + lam * ((x - e) ** 2).sum(-1)

    x, gn, _ = batched_lbfgs(fun, torch.zeros(6, 5, dtype=torch.float64), gtol=1e-10)
    want = np.stack(
        [anchored_quadratic_optimum(h, m[None], e, lam)[0] for h, m, e in zip(hs, ms, es)]
    )
    np.testing.assert_allclose(x.numpy(), want, atol=1e-8)
    assert torch.all(gn <= 1e-10)


def test_lanczos_matches_eigvalsh():
    """Batched Lanczos extreme Ritz values equal the exact extremes (k = d and k < d)."""
    rng = np.random.default_rng(1)
    mats = torch.as_tensor(
        np.stack([random_psd(30, lipschitz=5.0, spectrum="uniform", rng=rng) for _ in range(4)])
    )
    mats = mats - 1.0 * torch.eye(30)  # indefinite
    eig = torch.linalg.eigvalsh(mats)
    hvp = lambda v: torch.einsum("pij,pj->pi", mats, v)
    for k in (30, 25):
        top, bottom = lanczos_extreme_eigenvalues(
            hvp, 4, 30, n_iter=k, generator=torch.Generator().manual_seed(0)
        )
        torch.testing.assert_close(top, eig[:, -1], rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(bottom, eig[:, 0], rtol=1e-6, atol=1e-6)


def test_lanczos_on_low_rank_breakdown():
    """An invariant Krylov space (rank-1 matrix) triggers the restart and stays exact."""
    u = torch.randn(3, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    mats = torch.einsum("pi,pj->pij", u, u)  # rank one, top eigenvalue ||u||^2
    hvp = lambda v: torch.einsum("pij,pj->pi", mats, v)
    top, bottom = lanczos_extreme_eigenvalues(
        hvp, 3, 8, n_iter=8, generator=torch.Generator().manual_seed(1)
    )
    torch.testing.assert_close(top, (u * u).sum(-1))
    torch.testing.assert_close(bottom, torch.zeros(3, dtype=torch.float64), atol=1e-9, rtol=0)


@pytest.fixture(scope="module")
def small_refinement():
    """An untrained tiny model refined for 4 users x 5 masks."""
    torch.manual_seed(0)
    model = MultVAE(40, (16,), 4, use_anchors=True).eval()
    x = (torch.rand(4, 40, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    masks = bernoulli_masks(4, 5, 40, 0.5, torch.Generator().manual_seed(3))
    e_bar = item_centroid(x, model.anchors.detach())
    res = refine_latents(model, x, masks, e_bar, lambda_a=0.5, beta=0.2, gtol=1e-8, seed=0)
    return model, x, masks, e_bar, res


def test_refinement_reaches_stationary_points(small_refinement):
    """Both optima have a gradient norm below gtol, checked again by autograd from scratch."""
    model, x, masks, e_bar, res = small_refinement
    assert res.grad_norm_m.max() <= 1e-8 and res.grad_norm_star.max() <= 1e-8
    dec = copy.deepcopy(model).double()
    xb = (x[:, None] * masks).reshape(-1, 40).double()
    e = torch.as_tensor(res.e_bar)[:, None].expand(4, 5, 4).reshape(-1, 4)
    for lam, sol in ((0.0, res.m), (0.5, res.mu_star)):
        mu = torch.as_tensor(sol).reshape(-1, 4).requires_grad_(True)
        f = masked_objective(dec, xb, e, beta=0.2, lambda_a=lam)
        (g,) = torch.autograd.grad(f(mu).sum(), mu)
        assert float(g.norm(dim=-1).max()) <= 1e-7


def test_refinement_lipschitz_is_top_hessian_eigenvalue(small_refinement):
    """L_b equals the top eigenvalue of torch.func.hessian of f_b at m_b (k = d: exact)."""
    model, x, masks, _, res = small_refinement
    dec = copy.deepcopy(model).double()
    for u, b in ((0, 0), (2, 3)):
        xb = (x[u] * masks[u, b]).double()[None]
        f = masked_objective(
            dec, xb, torch.zeros(1, 4, dtype=torch.float64), beta=0.2, lambda_a=0.0
        )
        h = torch.func.hessian(lambda m, f=f: f(m[None]).sum())(torch.as_tensor(res.m[u, b]))
        eig = torch.linalg.eigvalsh(h)
        eig = eig.detach()
        assert res.lipschitz[u, b] == pytest.approx(float(eig[-1]), rel=1e-6)
        assert res.min_curvature[u, b] == pytest.approx(float(eig[0]), rel=1e-6, abs=1e-9)


def test_refinement_matches_torch_lbfgs(small_refinement):
    """The batched optimiser agrees with torch.optim.LBFGS on one problem."""
    model, x, masks, e_bar, res = small_refinement
    dec = copy.deepcopy(model).double()
    xb = (x[1] * masks[1, 2]).double()[None]
    f = masked_objective(dec, xb, e_bar[1:2].double(), beta=0.2, lambda_a=0.5)
    mu = dec.encode(x[1:2].double())[0].detach().clone().requires_grad_(True)
    opt = torch.optim.LBFGS(
        [mu], max_iter=500, tolerance_grad=1e-12, tolerance_change=0, line_search_fn="strong_wolfe"
    )

    def closure():
        opt.zero_grad()
        loss = f(mu).sum()
        loss.backward()
        return loss

    opt.step(closure)
    np.testing.assert_allclose(mu.detach().numpy()[0], res.mu_star[1, 2], atol=1e-6)


def test_refinement_with_constant_decoder_meets_tau_exactly():
    """A constant decoder makes f_b = beta/2 ||mu||^2 an isotropic quadratic (L = beta): the
    refined ratios equal tau and tau^2, and a tau with lambda doubled is violated."""
    torch.manual_seed(1)
    model = MultVAE(30, (8,), 3, use_anchors=True).eval()
    with torch.no_grad():
        model.dec_layers[-1].weight.zero_()  # logits = bias: NLL does not depend on mu
    x = (torch.rand(3, 30, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    masks = bernoulli_masks(3, 4, 30, 0.5, torch.Generator().manual_seed(1))
    e_bar = item_centroid(x, model.anchors.detach()) + 1.0
    start = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    res = refine_latents(
        model, x, masks, e_bar, lambda_a=0.3, beta=0.2, start=start, gtol=1e-10, seed=0
    )
    np.testing.assert_allclose(res.lipschitz, 0.2, rtol=1e-8)
    np.testing.assert_allclose(res.deviation(), 0.2 / (0.2 + 0.6), rtol=1e-7)
    assert np.all(res.deviation() > res.tau_mask(lambda_scale=2.0))
    np.testing.assert_allclose(res.tau_user(), res.tau_mask()[:, 0], rtol=1e-8)


def test_refinement_tau_user_dominates_tau_mask(small_refinement):
    """tau_u uses max_b L_b, so tau_u >= tau_b for every mask; both lie in (0, 1)."""
    *_, res = small_refinement
    tau_b, tau_u = res.tau_mask(), res.tau_user()
    assert np.all(tau_u[:, None] >= tau_b - 1e-15)
    assert np.all((tau_b > 0) & (tau_b < 1))


def test_amortised_spread_of_constant_encoder_is_zero():
    """An encoder that ignores its input has no across-mask variance; manual check otherwise
    (masked rows encoded through the model protocol's encode_masked, the model's convention)."""
    torch.manual_seed(0)
    model = MultVAE(20, (8,), 3).eval()
    x = (torch.rand(5, 20) < 0.5).float()
    masks = bernoulli_masks(5, 6, 20, 0.5, torch.Generator().manual_seed(0))
    out = amortised_mask_spread(model, x, masks, chunk=7)
    with torch.no_grad():
        mu = torch.stack(
            [protocol_encode_masked(model, x[u].expand(6, 20), masks[u])[0] for u in range(5)]
        ).double()
    np.testing.assert_allclose(out.mask_var, mu.var(dim=1).sum(-1).numpy(), rtol=1e-6)
    np.testing.assert_allclose(out.clean_mu, model.encode(x)[0].detach().double().numpy())
    assert np.all(np.isnan(out.centroid_dist))
    with torch.no_grad():
        model.enc_in_weight.zero_()
    const = amortised_mask_spread(model, x, masks)
    np.testing.assert_allclose(const.mask_var, 0.0, atol=1e-12)
    assert const.relative_mask_var == pytest.approx(0.0, abs=1e-9) or np.isnan(
        const.relative_mask_var
    )
