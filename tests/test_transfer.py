"""Tests of radius.analysis.transfer (T2.3): factorised transfer against naive autograd, the
mixed-Jacobian estimate against an exact SVD, and the first-order finite differences."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given
from hypothesis import strategies as st

from radius.analysis.transfer import (
    common_eps,
    first_order_residuals,
    loglog_slope,
    naive_user_gradients,
    output_jacobian_norm,
    pair_lipschitz,
    pair_transfer,
    posterior,
    screen_candidates,
    sharing_radius,
    transfer_bound,
    transfer_gram,
    user_gradients,
)
from radius.model.multvae import MultVAE

RTOL = 1e-5


def _model(n_items: int = 40, hidden: int = 6, latent: int = 3, seed: int = 0) -> MultVAE:
    torch.manual_seed(seed)
    m = MultVAE(n_items, (hidden,), latent, use_anchors=True).double().eval()
    with torch.no_grad():  # a less uniform decoder than at initialisation
        for p in m.parameters():
            p.mul_(3.0)
    return m


def _data(n_users: int = 12, n_items: int = 40, seed: int = 0) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((n_users, n_items)) < 0.2).astype(np.float32)
    x[np.arange(n_users), rng.integers(0, n_items, n_users)] = 1.0  # no empty user
    return sp.csr_matrix(x)


def _naive_cross(model, x, u, v, eps, param_set):
    """E_{z~q_u}[grad l_v(theta, z)] by autograd: v's loss on u's samples."""
    from radius.analysis.transfer import _Decode, _param_names

    wrap = _Decode(model)
    own = dict(wrap.named_parameters())
    plist = [own[k] for k in _param_names(model, param_set)]
    xu = torch.as_tensor(x[[u]].toarray(), dtype=torch.float64)
    xv = torch.as_tensor(x[[v]].toarray(), dtype=torch.float64)
    mu, lv = posterior(model, xu)
    z = mu + torch.exp(0.5 * lv) * eps
    loss = -(torch.log_softmax(model.decode(z), -1) * xv).sum(-1).mean()
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, plist)])


@pytest.mark.parametrize("param_set", ["output", "decoder"])
def test_gram_matches_naive_loop(param_set):
    """The chunked all-pairs transfer matrix equals the Gram of autograd gradients."""
    m, x = _model(), _data()
    eps = common_eps(4, 3, seed=1)
    g = naive_user_gradients(m, x, eps=eps, param_set=param_set)  # (N, P)
    gram = transfer_gram(m, x, eps=eps, param_set=param_set, chunk_size=5)
    torch.testing.assert_close(gram, g @ g.T, rtol=RTOL, atol=1e-10)
    torch.testing.assert_close(gram, gram.T)


@pytest.mark.parametrize("param_set", ["output", "decoder"])
def test_vmap_gradients_match_naive_loop(param_set):
    """torch.func per-user gradients equal the per-user autograd loop."""
    m, x = _model(), _data()
    g1 = user_gradients(m, x, n_samples=3, seed=2, param_set=param_set, chunk_size=4)
    g2 = naive_user_gradients(m, x, n_samples=3, seed=2, param_set=param_set)
    torch.testing.assert_close(g1, g2, rtol=RTOL, atol=1e-12)


@pytest.mark.parametrize("param_set", ["output", "decoder"])
def test_pair_statistics_match_materialised(param_set):
    """Inner products, norms, ||g_v - g_u|| and Delta_x equal their materialised values."""
    m, x = _model(), _data()
    eps = common_eps(5, 3, seed=3)
    pairs = np.array([[0, 1], [2, 7], [3, 3], [11, 4], [5, 9]])
    pt = pair_transfer(m, x, pairs, eps=eps, param_set=param_set, chunk_size=2)
    g = naive_user_gradients(m, x, eps=eps, param_set=param_set)
    gu, gv = g[pairs[:, 0]], g[pairs[:, 1]]
    np.testing.assert_allclose(pt.inner, (gu * gv).sum(1).numpy(), rtol=RTOL)
    np.testing.assert_allclose(pt.norm_u, gu.norm(dim=1).numpy(), rtol=RTOL)
    np.testing.assert_allclose(pt.norm_v, gv.norm(dim=1).numpy(), rtol=RTOL)
    np.testing.assert_allclose(pt.diff_norm, (gv - gu).norm(dim=1).numpy(), rtol=RTOL, atol=1e-6)
    dx = [(_naive_cross(m, x, u, v, eps, param_set) - g[u]).norm().item() for u, v in pairs]
    np.testing.assert_allclose(pt.delta_x, dx, rtol=RTOL, atol=1e-6)
    assert pt.delta_x[2] == pytest.approx(0.0, abs=1e-6) and pt.w2[2] == 0.0


@st.composite
def _tiny_case(draw):
    n_items = draw(st.integers(3, 15))
    hidden = draw(st.integers(1, 5))
    latent = draw(st.integers(1, 3))
    m_samples = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 10_000))
    rng = np.random.default_rng(seed)
    x = (rng.random((4, n_items)) < draw(st.floats(0.1, 0.9, allow_nan=False))).astype(float)
    assume(x.sum(1).min() > 0)
    return n_items, hidden, latent, m_samples, seed, sp.csr_matrix(x)


@given(_tiny_case())
def test_factorised_inner_equals_materialised(case):
    """For any small decoder, M and input, the factorised <g_u, g_v> is the materialised one."""
    n_items, hidden, latent, m_samples, seed, x = case
    m = _model(n_items, hidden, latent, seed)
    eps = common_eps(m_samples, latent, seed=seed)
    g = naive_user_gradients(m, x, eps=eps)
    pairs = np.array([[0, 1], [2, 3], [1, 2]])
    pt = pair_transfer(m, x, pairs, eps=eps)
    expect = (g[pairs[:, 0]] * g[pairs[:, 1]]).sum(1).numpy()
    np.testing.assert_allclose(pt.inner, expect, rtol=RTOL, atol=1e-9)


@given(_tiny_case())
def test_cauchy_schwarz_lower_bound(case):
    """<g_u, g_v> >= ||g_u|| (||g_u|| - ||g_v - g_u||), the step behind the sharing radius."""
    n_items, hidden, latent, m_samples, seed, x = case
    m = _model(n_items, hidden, latent, seed)
    pt = pair_transfer(m, x, np.array([[0, 1], [3, 2]]), n_samples=m_samples, seed=seed)
    lower = pt.norm_u * (pt.norm_u - pt.diff_norm)
    assert np.all(pt.inner >= lower - 1e-9 * (1 + np.abs(lower)))


def _naive_path(model, x, u, v, eps):
    """Per path m: ||grad l_v(z_um) - grad l_v(z_vm)|| and ||z_um - z_vm|| by autograd, and
    the gradients at the path's midpoints (output layer)."""
    from radius.analysis.transfer import _Decode, _param_names

    wrap = _Decode(model)
    own = dict(wrap.named_parameters())
    plist = [own[k] for k in _param_names(model, "output")]
    xu = torch.as_tensor(x[[u]].toarray(), dtype=torch.float64)
    xv = torch.as_tensor(x[[v]].toarray(), dtype=torch.float64)
    mu, lv = posterior(model, xu)
    mv, lvv = posterior(model, xv)
    zu, zv = mu + torch.exp(0.5 * lv) * eps, mv + torch.exp(0.5 * lvv) * eps

    def grad(z):
        loss = -(torch.log_softmax(model.decode(z[None]), -1) * xv).sum()
        return torch.cat([t.reshape(-1) for t in torch.autograd.grad(loss, plist)])

    gaps, lens, halves = [], [], []
    for i in range(eps.shape[0]):
        a, b, mid = grad(zu[i]), grad(zv[i]), grad((zu[i] + zv[i]) / 2)
        length = (zu[i] - zv[i]).norm().item()
        gaps.append((a - b).norm().item())
        lens.append(length)
        if length > 0:
            halves += [
                (mid - a).norm().item() / (length / 2),
                (b - mid).norm().item() / (length / 2),
            ]
    return np.array(gaps), np.array(lens), halves


def test_path_gaps_and_secants_match_autograd():
    """The mean path gap, mean path length and largest secant ratio (whole paths, and with
    their halves) equal autograd's; a pair with one posterior has no secant (NaN)."""
    m, x = _model(), _data()
    eps = common_eps(4, 3, seed=1)
    pairs = np.array([[0, 1], [3, 2], [7, 7], [4, 0]])
    pt1 = pair_transfer(m, x, pairs, eps=eps, chunk_size=3)
    pt2 = pair_transfer(m, x, pairs, eps=eps, chunk_size=3, secant_split=2)
    for i, (u, v) in enumerate(pairs):
        gaps, lens, halves = _naive_path(m, x, u, v, eps)
        assert pt1.path_gap[i] == pytest.approx(gaps.mean(), rel=1e-9, abs=1e-12)
        assert pt1.path_len[i] == pytest.approx(lens.mean(), rel=1e-9, abs=1e-12)
        if u == v:
            assert np.isnan(pt1.secant[i]) and np.isnan(pt2.secant[i])
            continue
        whole = np.max(gaps / lens)
        assert pt1.secant[i] == pytest.approx(whole, rel=1e-8)
        assert pt2.secant[i] == pytest.approx(max(whole, *halves), rel=1e-8)
        assert pt2.secant[i] >= pt1.secant[i]


@given(_tiny_case())
def test_difference_splits_into_path_gap_and_delta_x(case):
    """||g_v - g_u|| <= mean path gap + Delta_x (the split behind T2.3.2, exact for the Monte
    Carlo objective), and the secants never exceed a converged Jacobian norm estimate."""
    n_items, hidden, latent, m_samples, seed, x = case
    m = _model(n_items, hidden, latent, seed)
    eps = common_eps(m_samples, latent, seed=seed)
    pairs = np.array([[0, 1], [3, 2], [2, 0]])
    pt = pair_transfer(m, x, pairs, eps=eps, secant_split=2)
    rhs = pt.path_gap + pt.delta_x
    # ||g_v - g_u|| comes from ||g_u||^2 + ||g_v||^2 - 2 <g_u, g_v>: for equal users it is
    # sqrt(float64 rounding of the norms squared), about 1e-8 of the norms
    slack = 1e-9 * (1 + rhs) + 1e-7 * (1 + pt.norm_u + pt.norm_v)
    assert np.all(pt.diff_norm <= rhs + slack)


def test_screen_candidates_equals_pair_statistics():
    """||g_u|| and Delta_x(u, v) of the screening equal pair_transfer's, empty slots NaN."""
    m, x = _model(), _data()
    eps = common_eps(4, 3, seed=1)
    anchors = np.array([0, 3, 4, 7])
    cand = np.array([[1, 5, -1], [2, -1, -1], [0, 0, -1], [7, -1, -1]])
    sc = screen_candidates(m, x, anchors, cand, eps=eps, chunk_size=3)
    pairs = np.array([(a, v) for a, row in zip(anchors, cand) for v in row if v >= 0])
    pt = pair_transfer(m, x, pairs, eps=eps)
    got = np.array(
        [sc.delta_x[r, c] for r, row in enumerate(cand) for c, v in enumerate(row) if v >= 0]
    )
    np.testing.assert_allclose(got, pt.delta_x, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(
        sc.norm_u, pair_transfer(m, x, np.stack([anchors, anchors], 1), eps=eps).norm_u, rtol=1e-9
    )
    assert np.isnan(sc.delta_x[0, 2]) and np.isnan(sc.delta_x[1, 1])
    assert sc.delta_x[3, 0] == pytest.approx(0.0, abs=1e-9)  # v = u
    with pytest.raises(ValueError, match=r"candidates must have shape \(4, K\), got \(3, 3\)"):
        screen_candidates(m, x, anchors, cand[:3], eps=eps)
    with pytest.raises(ValueError, match=r"candidates must lie in \[-1, 12\), got \[12, 12\]"):
        screen_candidates(m, x, anchors, np.full((4, 1), 12), eps=eps)
    with pytest.raises(TypeError, match="x must be a scipy sparse matrix, got ndarray"):
        screen_candidates(m, x.toarray(), anchors, cand, eps=eps)


def _exact_jacobian_norm(model, z, x, param_set):
    """Exact ||d/dz grad_theta l(theta, z)||_2 by a dense autograd Jacobian and an SVD."""
    from radius.analysis.transfer import _Decode, _param_names

    wrap = _Decode(model)
    own = dict(wrap.named_parameters())
    plist = [own[k] for k in _param_names(model, param_set)]

    def g_of_z(zz):
        loss = -(torch.log_softmax(model.decode(zz), -1) * x).sum()
        gr = torch.autograd.grad(loss, plist, create_graph=True)
        return torch.cat([t.reshape(-1) for t in gr])

    jac = torch.autograd.functional.jacobian(g_of_z, z)  # (P, d)
    return torch.linalg.matrix_norm(jac, ord=2).item()


def test_output_jacobian_norm_matches_svd():
    """The closed-form power iteration converges to the exact spectral norm (output layer)."""
    m, x = _model(), _data()
    xd = torch.as_tensor(x.toarray(), dtype=torch.float64)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    est = output_jacobian_norm(m, z, xd[:6], n_iter=100)
    exact = [_exact_jacobian_norm(m, z[i], xd[i], "output") for i in range(6)]
    np.testing.assert_allclose(est.numpy(), exact, rtol=1e-6)


def test_output_jacobian_norm_is_lower_estimate():
    """Few power iterations never exceed the exact norm (Rayleigh quotients are lower bounds)."""
    m, x = _model(), _data()
    xd = torch.as_tensor(x.toarray(), dtype=torch.float64)
    z = torch.randn(6, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    est = output_jacobian_norm(m, z, xd[:6], n_iter=1)
    exact = np.array([_exact_jacobian_norm(m, z[i], xd[i], "output") for i in range(6)])
    assert np.all(est.numpy() <= exact * (1 + 1e-9))


@pytest.mark.parametrize("param_set", ["output", pytest.param("decoder", marks=pytest.mark.slow)])
def test_pair_lipschitz_is_max_over_segment_points(param_set):
    """pair_lipschitz is the largest exact Jacobian norm over the coupling-segment points."""
    m, x = _model(), _data()
    eps = common_eps(4, 3, seed=5)
    pairs = np.array([[0, 1], [4, 6]]) if param_set == "output" else np.array([[4, 6]])
    n_paths = 2 if param_set == "output" else 1
    est = pair_lipschitz(
        m, x, pairs, eps=eps, n_paths=n_paths, n_segment=3, n_iter=60, param_set=param_set
    )
    xd = torch.as_tensor(x.toarray(), dtype=torch.float64)
    for k, (u, v) in enumerate(pairs):
        mu, lv = posterior(m, xd[[u, v]])
        z = mu[:, None] + torch.exp(0.5 * lv)[:, None] * eps[None, :n_paths]  # (2, K, d)
        pts = [(1 - t) * z[0, j] + t * z[1, j] for j in range(n_paths) for t in (0.0, 0.5, 1.0)]
        exact = max(_exact_jacobian_norm(m, p, xd[v], param_set) for p in pts)
        rtol = 1e-6 if param_set == "output" else 1e-3  # radius.analysis.geometry runs in float32
        assert est[k] == pytest.approx(exact, rel=rtol)


@pytest.mark.parametrize("param_set", ["output", "decoder"])
def test_first_order_residual_is_second_order(param_set):
    """The finite-difference residual of the first-order claim has log-log slope 2."""
    m, x = _model(), _data()
    res = first_order_residuals(
        m, x, (0, 1), etas=np.logspace(-4, -1, 7), relative_step=True, param_set=param_set
    )
    assert res.slope == pytest.approx(2.0, abs=0.1)
    assert np.all(np.sign(res.delta_loss) == np.sign(res.predicted))


@pytest.mark.parametrize("scale", [-1.0, 2.0])
def test_wrong_first_order_formula_is_first_order(scale):
    """A sign flip or factor 2 in the prediction leaves a first-order residual (slope 1)."""
    m, x = _model(), _data()
    res = first_order_residuals(
        m, x, (0, 1), etas=np.logspace(-4, -1, 7), relative_step=True, first_order_scale=scale
    )
    assert res.slope == pytest.approx(1.0, abs=0.1)


def test_loglog_slope():
    """The slope of c eta^k is k; a vanished residual gives NaN."""
    etas = np.logspace(-4, -1, 7)
    assert loglog_slope(etas, 3.0 * etas**2) == pytest.approx(2.0)
    assert loglog_slope(etas, 0.5 * etas) == pytest.approx(1.0)
    assert np.isnan(loglog_slope(etas, np.zeros(7)))
    with pytest.raises(ValueError, match="equal length >= 2"):
        loglog_slope(etas, etas[:3])


def test_bound_and_radius():
    """D = L W2 + Delta_x; r_share = [||g_u|| - Delta_x]_+ / L, infinite for L = 0."""
    d = transfer_bound(np.array([2.0, 1.0]), np.array([0.5, 3.0]), np.array([1.0, 0.0]))
    np.testing.assert_allclose(d, [2.0, 3.0])
    r = sharing_radius(
        np.array([3.0, 1.0, 2.0]), np.array([1.0, 2.0, 1.0]), np.array([4.0, 1.0, 0.0])
    )
    np.testing.assert_allclose(r, [0.5, 0.0, np.inf])
    with pytest.raises(ValueError, match="must have the same shape"):
        transfer_bound(np.ones(2), np.ones(3), np.ones(2))
    with pytest.raises(ValueError, match="lipschitz must be >= 0"):
        sharing_radius(np.ones(1), np.zeros(1), -np.ones(1))


def test_common_random_numbers_are_shared():
    """Every user sees the same eps: identical inputs give identical gradients and W2 = 0."""
    m = _model()
    x = _data()
    x2 = sp.vstack([x[[3]], x[[3]]]).tocsr()
    g = naive_user_gradients(m, x2, n_samples=4, seed=9)
    torch.testing.assert_close(g[0], g[1])
    torch.testing.assert_close(common_eps(4, 3, seed=9), common_eps(4, 3, seed=9))


def test_bad_input_messages():
    """Public functions reject bad input with exact messages."""
    m, x = _model(), _data()
    with pytest.raises(ValueError, match="param_set must be 'output' or 'decoder', got 'all'"):
        pair_transfer(m, x, [[0, 1]], param_set="all")
    with pytest.raises(ValueError, match=r"pairs must have shape \(P, 2\), got \(3,\)"):
        pair_transfer(m, x, [0, 1, 2])
    with pytest.raises(ValueError, match=r"pair indices must lie in \[0, 12\)"):
        pair_transfer(m, x, [[0, 12]])
    with pytest.raises(ValueError, match="n_samples must be >= 1, got 0"):
        transfer_gram(m, x, n_samples=0)
    with pytest.raises(ValueError, match=r"eps must be a tensor of shape \(M, 3\)"):
        transfer_gram(m, x, eps=torch.zeros(2, 4))
    with pytest.raises(ValueError, match=r"x must have shape \(N, 40\), got \(12, 39\)"):
        transfer_gram(m, x[:, :39])
    with pytest.raises(TypeError, match="model must be a torch.nn.Module, got str"):
        transfer_gram("model", x)
    with pytest.raises(TypeError, match="n_samples must be an int, got float"):
        common_eps(2.0, 3)
    with pytest.raises(ValueError, match="n_segment must be >= 2"):
        pair_lipschitz(m, x, [[0, 1]], n_segment=1)
    with pytest.raises(ValueError, match="etas must be a 1-d array"):
        first_order_residuals(m, x, (0, 1), etas=np.array([0.1, -1.0]))
