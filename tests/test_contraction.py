"""Tests of radius.analysis.contraction: the anchor contraction factor tau (P3.2)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from radius.analysis.contraction import (
    SEGMENT_NODES,
    SEGMENT_WEIGHTS,
    SPECTRA,
    amortised_mask_spread,
    anchored_quadratic_optimum,
    batched_lbfgs,
    bernoulli_masks,
    contraction_factor,
    contraction_sq_envelope,
    deviation_ratio,
    directional_variance_bound,
    flip_factor,
    item_centroid,
    lanczos,
    lanczos_extreme_eigenvalues,
    masked_objective,
    masked_rows,
    random_psd,
    refine_latents,
    rows_from_dense_masks,
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
        amortised_mask_spread(
            MultVAE(5, (4,), 2), torch.ones(2, 5), sp.csr_matrix((2, 5)), n_masks=1
        )
    with pytest.raises(ValueError, match=r"need x \(U, I\) and masked rows \(U B, I\)"):
        amortised_mask_spread(
            MultVAE(5, (4,), 2), torch.ones(2, 5), sp.csr_matrix((3, 5)), n_masks=2
        )
    with pytest.raises(ValueError, match=r"need x \(U, I\) and masked rows \(U B, I\)"):
        refine_latents(
            MultVAE(5, (4,), 2, use_anchors=True), torch.ones(2, 5), sp.csr_matrix((3, 5)),
            torch.zeros(2, 2), n_masks=2, lambda_a=0.1, beta=0.2,
        )  # fmt: skip
    with pytest.raises(ValueError, match=r"lambda_a must be > 0, got 0"):
        refine_latents(
            MultVAE(5, (4,), 2, use_anchors=True), torch.ones(2, 5), sp.csr_matrix((4, 5)),
            torch.zeros(2, 2), n_masks=2, lambda_a=0, beta=0.2,
        )  # fmt: skip


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


def test_lanczos_solve_is_the_shifted_solve():
    """Lanczos from v0: the Galerkin solve of (H + s I) z = v0 reaches the exact solution in
    k = d steps, and its residual estimate beta_k |y_k| is the true relative residual."""
    rng = np.random.default_rng(3)
    mats = torch.as_tensor(
        np.stack([random_psd(12, lipschitz=4.0, spectrum="uniform", rng=rng) for _ in range(3)])
    )
    hvp = lambda v: torch.einsum("pij,pj->pi", mats, v)
    v0 = torch.as_tensor(rng.standard_normal((3, 12)))
    shift = 0.7
    eye = torch.eye(12, dtype=torch.float64)
    want = torch.linalg.solve(mats + shift * eye, v0[..., None])[..., 0]
    exact = lanczos(hvp, v0, n_iter=12, generator=torch.Generator().manual_seed(0))
    z, res = exact.solve_shifted(shift)
    torch.testing.assert_close(z, want, rtol=1e-8, atol=1e-10)
    assert float(res.max()) < 1e-8
    part = lanczos(hvp, v0, n_iter=5, generator=torch.Generator().manual_seed(0))
    z5, res5 = part.solve_shifted(shift)
    true = (hvp(z5) + shift * z5 - v0).norm(dim=-1) / v0.norm(dim=-1)
    torch.testing.assert_close(res5, true, rtol=1e-6, atol=1e-12)
    top, bottom = exact.extremes()
    eig = torch.linalg.eigvalsh(mats)
    torch.testing.assert_close(top, eig[:, -1])
    torch.testing.assert_close(bottom, eig[:, 0])
    with pytest.raises(ValueError, match=r"start must be \(P, d\)"):
        lanczos(hvp, v0[0], n_iter=3, generator=torch.Generator())


# --------------------------------------------------------------------------- masks
def _csr(n_users=6, n_items=30, density=0.3, seed=0):
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < density).astype(np.float32)
    x[:, 0] = 1.0  # every row has an item
    return sp.csr_matrix(x)


def test_masked_rows_are_masks_on_each_users_items():
    """Row u B + b is x_u restricted to a subset of its items; about keep_rate of them are
    kept; the draw is reproducible; nonempty redraws masks that keep nothing."""
    x = _csr(n_users=40, n_items=50)
    rows = masked_rows(x, 8, 0.5, np.random.default_rng(1))
    assert rows.shape == (320, 50)
    dense, xd = rows.toarray().reshape(40, 8, 50), x.toarray()
    assert np.all((dense == 0) | (dense == xd[:, None, :]))  # values carried, support subset
    frac = dense.sum() / (8 * xd.sum())
    assert 0.45 < frac < 0.55
    again = masked_rows(x, 8, 0.5, np.random.default_rng(1))
    assert (rows != again).nnz == 0
    sparse_rows = masked_rows(_csr(n_users=30, density=0.02), 6, 0.2, np.random.default_rng(0))
    assert np.any(np.diff(sparse_rows.indptr) == 0)  # some masks keep nothing ...
    full = masked_rows(
        _csr(n_users=30, density=0.02), 6, 0.2, np.random.default_rng(0), nonempty=True
    )
    assert np.all(np.diff(full.indptr) > 0)  # ... and nonempty redraws them
    with pytest.raises(ValueError, match="row 1 has none"):
        masked_rows(sp.csr_matrix(np.array([[1.0, 0.0], [0.0, 0.0]])), 2, 0.5,
                    np.random.default_rng(0), nonempty=True)  # fmt: skip
    with pytest.raises(ValueError, match=r"keep_rate must be in \(0, 1\], got 1.5"):
        masked_rows(x, 2, 1.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="x must be a 2-d scipy sparse matrix"):
        masked_rows(xd, 2, 0.5, np.random.default_rng(0))
    with pytest.raises(ValueError, match="n_masks must be >= 1, got 0"):
        masked_rows(x, 0, 0.5, np.random.default_rng(0))


def test_rows_from_dense_masks_and_sparse_centroid():
    """rows_from_dense_masks gives x * b row by row; item_centroid of a sparse x equals the
    dense one."""
    x = torch.as_tensor(_csr().toarray())
    masks = bernoulli_masks(6, 3, 30, 0.5, torch.Generator().manual_seed(0))
    rows = rows_from_dense_masks(x, masks)
    np.testing.assert_array_equal(rows.toarray(), (x[:, None] * masks).reshape(18, 30).numpy())
    anchors = torch.randn(30, 4, generator=torch.Generator().manual_seed(1))
    np.testing.assert_allclose(
        item_centroid(sp.csr_matrix(x.numpy()), anchors).numpy(),
        item_centroid(x, anchors).numpy(),
        rtol=1e-5,
        atol=1e-7,
    )
    with pytest.raises(ValueError, match=r"need x \(U, I\) and masks \(U, B, I\)"):
        rows_from_dense_masks(x, masks[:2])


# --------------------------------------------------------------------------- refinement
D = 4  # latent dimension of the small refinement (Lanczos is exact: k = d)


def _hessian(dec, xb, point, beta=0.2):
    f = masked_objective(dec, xb[None], torch.zeros(1, D, dtype=torch.float64), beta=beta,
                         lambda_a=0.0)  # fmt: skip
    return torch.func.hessian(lambda m: f(m[None]).sum())(torch.as_tensor(point)).detach()


@pytest.fixture(scope="module")
def small_refinement():
    """An untrained tiny model refined for 4 users x 5 masks (float64 throughout)."""
    torch.manual_seed(0)
    model = MultVAE(40, (16,), D, use_anchors=True).eval()
    x = (torch.rand(4, 40, generator=torch.Generator().manual_seed(2)) < 0.3).float()
    masks = bernoulli_masks(4, 5, 40, 0.5, torch.Generator().manual_seed(3))
    rows = rows_from_dense_masks(x, masks)
    e_bar = item_centroid(x, model.anchors.detach())
    res = refine_latents(
        model, x, rows, e_bar, n_masks=5, lambda_a=0.5, beta=0.2, gtol=1e-8, seed=0,
        curvature_dtype=torch.float64,
    )  # fmt: skip
    return model, x, masks, e_bar, res


def test_refinement_reaches_stationary_points(small_refinement):
    """Both optima have a gradient norm below gtol, checked again by autograd from scratch."""
    model, x, masks, e_bar, res = small_refinement
    assert res.grad_norm_m.max() <= 1e-8 and res.grad_norm_star.max() <= 1e-8
    dec = copy.deepcopy(model).double()
    xb = (x[:, None] * masks).reshape(-1, 40).double()
    e = torch.as_tensor(res.e_bar)[:, None].expand(4, 5, D).reshape(-1, D)
    for lam, sol in ((0.0, res.m), (0.5, res.mu_star)):
        mu = torch.as_tensor(sol).reshape(-1, D).requires_grad_(True)
        f = masked_objective(dec, xb, e, beta=0.2, lambda_a=lam)
        (g,) = torch.autograd.grad(f(mu).sum(), mu)
        assert float(g.norm(dim=-1).max()) <= 1e-7


def test_refinement_segment_curvature_is_exact(small_refinement):
    """Against torch.func.hessian: node_max / node_min are the extreme eigenvalues at the
    ends and midpoint of [m_b, mu*_b]; mean_max / mean_min those of Simpson's mean Hessian;
    common_image = (H_bar + 2 lambda I)^{-1} H_bar w_bar; the mean-value residual and the
    curvature along delta_b are what they say."""
    model, x, masks, _, res = small_refinement
    dec = copy.deepcopy(model).double()
    w_bar = res.m.mean(axis=1) - res.e_bar  # (U, d)
    delta = res.m - res.m.mean(axis=1, keepdims=True)
    for u, b in ((0, 0), (2, 3), (3, 1)):
        xb = (x[u] * masks[u, b]).double()
        m, mu = res.m[u, b], res.mu_star[u, b]
        hs = [_hessian(dec, xb, m + t * (mu - m)).numpy() for t in SEGMENT_NODES]
        for j, h in enumerate(hs):
            eig = np.linalg.eigvalsh(h)
            assert res.node_max[u, b, j] == pytest.approx(eig[-1], rel=1e-6)
            assert res.node_min[u, b, j] == pytest.approx(eig[0], rel=1e-6, abs=1e-9)
        hbar = sum(w * h for w, h in zip(SEGMENT_WEIGHTS, hs))
        eig = np.linalg.eigvalsh(hbar)
        assert res.mean_max[u, b] == pytest.approx(eig[-1], rel=1e-6)
        assert res.mean_min[u, b] == pytest.approx(eig[0], rel=1e-6, abs=1e-9)
        a = np.linalg.solve(hbar + 2 * 0.5 * np.eye(D), hbar)
        np.testing.assert_allclose(res.common_image[u, b], a @ w_bar[u], rtol=1e-6, atol=1e-9)
        v = delta[u, b]
        assert res.curvature_var[u, b] == pytest.approx(float(v @ hs[0] @ v / (v @ v)), rel=1e-6)
        f = masked_objective(dec, xb[None], torch.zeros(1, D, dtype=torch.float64), beta=0.2,
                             lambda_a=0.0)  # fmt: skip
        grads = []
        for p in (m, mu):
            pt = torch.as_tensor(p)[None].requires_grad_(True)
            (g,) = torch.autograd.grad(f(pt).sum(), pt)
            grads.append(g[0].numpy())
        dg = grads[1] - grads[0]
        want = np.linalg.norm(hbar @ (mu - m) - dg) / np.linalg.norm(dg)
        assert res.mean_value_residual[u, b] == pytest.approx(want, rel=1e-5, abs=1e-12)
    assert res.solve_residual.max() < 1e-8
    assert res.mean_value_residual.max() < 0.1  # Simpson describes these short segments


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


def test_refinement_bounds_hold_on_a_smooth_decoder(small_refinement):
    """The mean-value derivation: with L_b over the segment both bounds hold on every case
    (margins >= 0), tau_u >= tau_b, the directional bound <= tau_u^2, and the bound without
    the one-H premise, (tau_u + h_u)^2, holds too."""
    *_, res = small_refinement
    assert np.all(res.mean_min > 0)  # premise: H_bar >= 0 here
    assert np.all(res.deviation_margin() >= 0)
    assert np.all(res.variance_margin() >= 0)
    tau_b, tau_u = res.tau_mask(), res.tau_user()
    assert np.all(tau_u[:, None] >= tau_b - 1e-15) and np.all((tau_b > 0) & (tau_b < 1))
    assert np.all(res.variance_bound() <= res.tau_user(where="at_m") ** 2 * (1 + 1e-12))
    assert np.all(res.variance() <= (tau_u + res.heterogeneity()) ** 2 * (1 + 1e-9))
    assert np.all(res.lipschitz("segment") >= res.lipschitz("at_m"))
    with pytest.raises(ValueError, match="where must be 'segment' or 'at_m'"):
        res.lipschitz("mid")


def test_refinement_with_constant_decoder_meets_tau_exactly():
    """A constant decoder makes f_b = beta/2 ||mu||^2 an isotropic quadratic (L = beta on the
    whole segment, one H for all masks): the ratios equal tau, the heterogeneity is 0, the
    mean-value residual 0, and a tau with lambda doubled (or L halved) is violated.
    Every mask has the same f_b here, so the heterogeneity (relative to the across-mask
    variance of m_b, which is 0) is undefined."""
    torch.manual_seed(1)
    model = MultVAE(30, (8,), 3, use_anchors=True).eval()
    with torch.no_grad():
        model.dec_layers[-1].weight.zero_()  # logits = bias: NLL does not depend on mu
    x = (torch.rand(3, 30, generator=torch.Generator().manual_seed(0)) < 0.4).float()
    masks = bernoulli_masks(3, 4, 30, 0.5, torch.Generator().manual_seed(1))
    e_bar = item_centroid(x, model.anchors.detach()) + 1.0
    start = torch.randn(3, 3, generator=torch.Generator().manual_seed(2))
    res = refine_latents(
        model, x, rows_from_dense_masks(x, masks), e_bar, n_masks=4, lambda_a=0.3, beta=0.2,
        start=start, gtol=1e-10, seed=0,
    )  # fmt: skip
    np.testing.assert_allclose(res.node_max, 0.2, rtol=1e-5)
    np.testing.assert_allclose(res.deviation(), 0.2 / (0.2 + 0.6), rtol=1e-7)
    assert np.all(res.deviation_margin() >= 0)
    assert np.all(res.deviation_margin(lambda_scale=2.0) < 0)
    assert np.all(res.deviation_margin(l_scale=0.5) < 0)
    np.testing.assert_allclose(res.common_image.var(axis=1), 0.0, atol=1e-10)  # one H
    assert np.all(np.isnan(res.heterogeneity()))  # m_b = 0 for every mask: nothing varies
    np.testing.assert_allclose(res.mean_value_residual, 0.0, atol=1e-5)
    np.testing.assert_allclose(res.tau_user(), res.tau_mask()[:, 0], rtol=1e-6)


def test_refinement_does_not_depend_on_chunking_or_dtype():
    """Chunks of one user give the same optima and curvatures as one chunk; float32
    curvature agrees with float64 to float32 precision."""
    torch.manual_seed(0)
    model = MultVAE(30, (8,), 3, use_anchors=True).eval()
    x = _csr(n_users=5, n_items=30)
    rows = masked_rows(x, 3, 0.5, np.random.default_rng(0), nonempty=True)
    e_bar = item_centroid(x, model.anchors.detach())
    kw = dict(n_masks=3, lambda_a=0.4, beta=0.2, gtol=1e-9, seed=0)
    one = refine_latents(model, x, rows, e_bar, **kw, curvature_dtype=torch.float64)
    many = refine_latents(
        model, x, rows, e_bar, **kw, curvature_dtype=torch.float64, chunk_elements=1
    )
    np.testing.assert_allclose(many.m, one.m, atol=1e-7)
    np.testing.assert_allclose(many.node_max, one.node_max, rtol=1e-6)
    f32 = refine_latents(model, x, rows, e_bar, **kw)
    np.testing.assert_allclose(f32.node_max, one.node_max, rtol=1e-4)
    np.testing.assert_allclose(f32.heterogeneity(), one.heterogeneity(), rtol=1e-3)


def test_flip_factor_is_where_the_bound_becomes_tight():
    """At lambda_A x s* the bound value <= tau scale + slack is an equality; inf when no tau
    can fail it, 0 when every tau does."""
    lip, lam = np.array([2.0, 5.0]), 0.5
    value, scale, slack = np.array([0.3, 0.2]), np.array([1.0, 1.0]), np.array([0.01, 0.0])
    s = flip_factor(value, scale, slack, lip, lam)
    tau = lip / (lip + 2 * s * lam)
    np.testing.assert_allclose(tau * scale + slack, value, rtol=1e-12)
    assert flip_factor(0.005, 1.0, 0.01, 2.0, lam) == np.inf
    assert flip_factor(1.5, 1.0, 0.0, 2.0, lam) == 0.0


# --------------------------------------------------------------------------- amortised
def test_amortised_spread_matches_a_direct_computation():
    """Across-mask variances of the masked rows' encodings (protocol's encode_masked), in
    chunks; a constant encoder has none."""
    torch.manual_seed(0)
    model = MultVAE(20, (8,), 3).eval()
    x = (torch.rand(5, 20) < 0.5).float()
    masks = bernoulli_masks(5, 6, 20, 0.5, torch.Generator().manual_seed(0))
    rows = rows_from_dense_masks(x, masks)
    out = amortised_mask_spread(model, sp.csr_matrix(x.numpy()), rows, n_masks=6, chunk_elements=1)
    with torch.no_grad():
        b = (x[:, None] * masks > 0).float()
        mu = torch.stack(
            [protocol_encode_masked(model, x[u].expand(6, 20), b[u])[0] for u in range(5)]
        ).double()
    np.testing.assert_allclose(out.mask_var, mu.var(dim=1).sum(-1).numpy(), rtol=1e-5)
    want = model.encode(x)[0].detach().double().numpy()
    np.testing.assert_allclose(out.clean_mu, want, rtol=1e-5, atol=1e-7)
    assert np.all(np.isnan(out.centroid_dist))
    whole = amortised_mask_spread(model, x, rows, n_masks=6)
    np.testing.assert_allclose(whole.mask_var, out.mask_var, rtol=1e-6)
    with torch.no_grad():
        model.enc_in_weight.zero_()
    const = amortised_mask_spread(model, x, rows, n_masks=6)
    np.testing.assert_allclose(const.mask_var, 0.0, atol=1e-12)
