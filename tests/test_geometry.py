"""Tests of radius.analysis.geometry: W2/W1 between diagonal Gaussians, encoder Lipschitz bounds."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.stats import norm, wasserstein_distance

from radius.analysis.geometry import (
    w1_bias_table,
    w1_empirical,
    w1_sandwich,
    w1_sliced,
    w2_diag,
    w2_diag_pairwise,
)
from radius.analysis.lipschitz import (
    SILU_LIPSCHITZ,
    binary_l1_nearest,
    empirical_local_lipschitz,
    encode_double,
    encoder_lipschitz_bound,
    layernorm_lipschitz,
    mixed_jacobian_lipschitz,
    normalization_factor,
)
from radius.model.multvae import EPS_NORM, MultVAE

D = 4
finite = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def gaussians(draw, d: int = D):
    """A diagonal Gaussian (mu, logvar) in d dimensions with bounded entries."""
    mu = draw(arrays(np.float64, d, elements=st.floats(-5, 5, **finite)))
    lv = draw(arrays(np.float64, d, elements=st.floats(-4, 3, **finite)))
    return mu, lv


def _model(seed: int = 0, hidden=(16,), d: int = 4, items: int = 40) -> MultVAE:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = MultVAE(items, hidden, d)
    return m.eval()


def _binary(rng: np.random.Generator, n: int, items: int, p: float = 0.15) -> np.ndarray:
    x = (rng.random((n, items)) < p).astype(np.float64)
    x[np.arange(n), rng.integers(0, items, n)] = 1.0  # at least one item per row
    return x


# --------------------------------------------------------------------------- W2
@given(gaussians(), gaussians())
def test_w2_symmetric(a, b):
    """W2(q1, q2) = W2(q2, q1)."""
    assert float(w2_diag(*a, *b)) == pytest.approx(float(w2_diag(*b, *a)), rel=1e-12, abs=0)


@given(gaussians(), gaussians())
def test_w2_zero_iff_equal(a, b):
    """W2(q, q) = 0 exactly, and W2 > 0 whenever (mu, sigma) differ."""
    assert float(w2_diag(*a, *a)) == 0.0
    sa, sb = np.exp(0.5 * a[1]), np.exp(0.5 * b[1])
    gap = np.abs(np.concatenate([a[0] - b[0], sa - sb])).max()
    assume(gap > 1e-150)  # smaller differences underflow when squared
    assert float(w2_diag(*a, *b)) > 0.0


@given(gaussians(), gaussians(), gaussians())
def test_w2_triangle_inequality(a, b, c):
    """W2(q1, q3) <= W2(q1, q2) + W2(q2, q3)."""
    lhs = float(w2_diag(*a, *c))
    rhs = float(w2_diag(*a, *b)) + float(w2_diag(*b, *c))
    assert lhs <= rhs * (1 + 1e-12) + 1e-12


@given(gaussians(d=1), gaussians(d=1))
def test_w2_1d_matches_quantile_integral(a, b):
    """In 1-D, W2 equals the L2 distance of the quantile functions (independent formula)."""
    u = (np.arange(20000) + 0.5) / 20000
    qa = norm.ppf(u, a[0][0], np.exp(0.5 * a[1][0]))
    qb = norm.ppf(u, b[0][0], np.exp(0.5 * b[1][0]))
    ref = np.sqrt(np.mean((qa - qb) ** 2))
    assert float(w2_diag(*a, *b)) == pytest.approx(ref, rel=2e-3, abs=2e-3)


def test_w2_pairwise_matches_pairs():
    """The chunked all-pairs W2 equals the pairwise W2, with exact zeros on the diagonal."""
    rng = np.random.default_rng(0)
    mu, lv = rng.normal(size=(7, D)), rng.normal(size=(7, D))
    full = w2_diag_pairwise(mu, lv, mu, lv, chunk_size=3)
    ref = w2_diag(mu[:, None, :], lv[:, None, :], mu[None, :, :], lv[None, :, :])
    assert torch.allclose(full, ref, rtol=1e-12, atol=1e-12)
    assert torch.all(torch.diagonal(full) == 0)


def test_w2_input_errors():
    """Bad shapes and types raise with exact messages."""
    with pytest.raises(ValueError, match=r"mu1 and logvar1 must have the same shape, got \(3,\)"):
        w2_diag(np.zeros(3), np.zeros(4), np.zeros(3), np.zeros(3))
    with pytest.raises(ValueError, match="the last \\(latent\\) dimension must agree"):
        w2_diag(np.zeros(3), np.zeros(3), np.zeros(2), np.zeros(2))
    with pytest.raises(TypeError, match="mu1 must be a torch.Tensor or numpy.ndarray, got list"):
        w2_diag([0.0], np.zeros(1), np.zeros(1), np.zeros(1))
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        w2_diag_pairwise(
            np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), np.zeros((2, 2)), chunk_size=0
        )


# --------------------------------------------------------------------------- W1
@given(gaussians(), gaussians())
def test_sandwich_lower_le_upper(a, b):
    """||mu1 - mu2|| <= W2 for every pair of diagonal Gaussians."""
    lo, up = w1_sandwich(*a, *b)
    assert float(lo) <= float(up) * (1 + 1e-12) + 1e-15


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_sandwich_lower_below_empirical_w1(seed):
    """||mean difference|| <= W1 of the empirical measures (exact), and the population
    sandwich lower bound lies below the (upward-biased) sample W1 up to sampling error."""
    rng = np.random.default_rng(seed)
    mu1, mu2 = rng.normal(size=3), rng.normal(size=3)
    lv1, lv2 = rng.normal(size=3) * 0.3, rng.normal(size=3) * 0.3
    z1 = mu1 + np.exp(0.5 * lv1) * rng.standard_normal((400, 3))
    z2 = mu2 + np.exp(0.5 * lv2) * rng.standard_normal((400, 3))
    lo, up = w1_sandwich(mu1, lv1, mu2, lv2)
    est = w1_empirical(z1, z2)
    assert est.n_samples == (400, 400) and est.method == "emd"
    assert np.linalg.norm(z1.mean(0) - z2.mean(0)) <= est.value + 1e-12
    se = np.sqrt((np.exp(lv1).sum() + np.exp(lv2).sum()) / 400)  # s.e. of the mean difference
    assert float(lo) <= est.value + 3 * se
    assert float(lo) <= float(up)


@given(
    arrays(np.float64, st.integers(1, 12), elements=st.floats(-10, 10, **finite)),
    arrays(np.float64, st.integers(1, 12), elements=st.floats(-10, 10, **finite)),
)
def test_w1_empirical_1d_matches_scipy(a, b):
    """In 1-D, ot.emd2 with equal uniform weights equals scipy.stats.wasserstein_distance."""
    assert w1_empirical(a, b).value == pytest.approx(wasserstein_distance(a, b), rel=1e-9, abs=1e-9)


@given(
    arrays(np.float64, (8, 3), elements=st.floats(-5, 5, **finite)),
    arrays(np.float64, (6, 3), elements=st.floats(-5, 5, **finite)),
)
def test_sliced_w1_below_emd(a, b):
    """Sliced W1 <= W1 between the same empirical measures (projections are 1-Lipschitz)."""
    assert w1_sliced(a, b, n_projections=20, seed=0).value <= w1_empirical(a, b).value + 1e-9


def test_w1_sliced_seeded():
    """The same seed gives the same sliced value; the result states its projections."""
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(30, 5)), rng.normal(size=(30, 5)) + 1
    r1, r2 = w1_sliced(a, b, seed=3), w1_sliced(a, b, seed=3)
    assert r1 == r2 and r1.n_projections == 200 and r1.method == "sliced"


def test_w1_empirical_input_errors():
    """Mismatched dimensions raise with an exact message."""
    with pytest.raises(ValueError, match="samples must share their dimension, got 2 and 3"):
        w1_empirical(np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(TypeError, match="samples1 must be a torch.Tensor or numpy.ndarray"):
        w1_empirical([[0.0]], np.zeros((1, 1)))


def test_bias_table_upward_and_shrinking():
    """Empirical W1 overestimates a known W1 (equal covariances) and the bias falls with n."""
    rows = w1_bias_table(dims=(1, 8), sample_sizes=(20, 320), n_rep=4, shift=1.0, seed=0)
    by = {(r["dim"], r["n"]): r for r in rows}
    assert all(r["true_w1"] == 1.0 for r in rows)
    assert by[(8, 20)]["bias"] > 0 and by[(8, 320)]["bias"] > 0
    assert by[(8, 320)]["bias"] < by[(8, 20)]["bias"]
    assert abs(by[(1, 320)]["bias"]) < by[(8, 320)]["bias"]  # worse in higher dimension


# --------------------------------------------------------------------------- normalisation
@st.composite
def binary_pairs(draw):
    """Two binary rows, each with at least one item."""
    n = draw(st.integers(2, 30))
    x = draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])))
    y = draw(arrays(np.float64, n, elements=st.sampled_from([0.0, 1.0])))
    assume(x.sum() > 0 and y.sum() > 0)
    return x, y


def _norm_l1(x: np.ndarray, y: np.ndarray) -> float:
    xn = x / (np.linalg.norm(x) + EPS_NORM)
    yn = y / (np.linalg.norm(y) + EPS_NORM)
    return float(np.abs(xn - yn).sum())


@given(binary_pairs())
def test_normalization_nonexpansive_on_binary(pair):
    """For binary rows, ||x~ - y~||_1 <= ||x - y||_1 and the factor returned is <= 1."""
    x, y = pair
    c = float(normalization_factor(x, y))
    assert c <= 1.0
    assert _norm_l1(x, y) <= c * np.abs(x - y).sum() * (1 + 1e-12) + 1e-15


@given(
    arrays(np.float64, 6, elements=st.floats(0, 3, **finite)),
    arrays(np.float64, 6, elements=st.floats(0, 3, **finite)),
)
def test_normalization_factor_bounds_real_rows(x, y):
    """For any real rows, ||x~ - y~||_1 <= c(x, y) ||x - y||_1."""
    c = float(normalization_factor(x, y))
    assert _norm_l1(x, y) <= c * np.abs(x - y).sum() * (1 + 1e-9) + 1e-12


def test_normalization_expands_real_rows():
    """Real-valued rows can expand under normalisation, so c = 1 is only for binary rows."""
    x, y = np.array([1.0, 0.0]), np.array([1.0, 0.1])
    assert _norm_l1(x, y) > np.abs(x - y).sum()
    assert float(normalization_factor(x, y)) > 1.0


# --------------------------------------------------------------------------- encoder
def test_first_layer_factor_is_max_row_norm():
    """The first-layer factor is the max ROW 2-norm of the (I, H0) table."""
    m = _model()
    with torch.no_grad():
        m.enc_in_weight.zero_()
        m.enc_in_weight[3] = torch.tensor([3.0, 4.0] + [0.0] * 14)  # row norm 5
        m.enc_in_weight[5, :] = 1.0  # row norm 4
    _, det = encoder_lipschitz_bound(m)
    assert det["first_layer"] == pytest.approx(5.0)
    assert det["hidden"] == [] and det["input"] == "normalised"


def test_spectral_factors_match_matrix_norm():
    """Hidden and head factors equal torch's spectral norm (up to the 1e-12 inflation)."""
    m = _model(2, hidden=(16, 12))
    _, det = encoder_lipschitz_bound(m)
    ref_hidden = float(torch.linalg.matrix_norm(m.enc_layers[0].weight.double(), ord=2))
    ref_mu = float(torch.linalg.matrix_norm(m.enc_layers[1].weight[:4].double(), ord=2))
    assert det["hidden"][0] == pytest.approx(ref_hidden, rel=1e-10)
    assert det["hidden"][0] >= ref_hidden
    assert det["mu_head"] == pytest.approx(ref_mu, rel=1e-10)
    assert det["l_phi"] >= det["l_mu"]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_bound_holds_on_random_inputs(seed):
    """W2 <= L_phi ||x~_u - x~_v||_1 <= L_phi c ||x_u - x_v||_1 on random binary pairs."""
    m = _model(seed, hidden=(16, 12))
    rng = np.random.default_rng(seed)
    xu = _binary(rng, 64, 40)
    xv = xu.copy()
    flip = rng.integers(0, 40, 64)
    xv[np.arange(64), flip] = 1 - xv[np.arange(64), flip]
    xv[:32] = _binary(rng, 32, 40)  # half random pairs, half one-item edits
    xv[xv.sum(1) == 0, 0] = 1.0
    mu_u, lv_u = encode_double(m, xu)
    mu_v, lv_v = encode_double(m, xv)
    for lv_obs in (None, torch.cat([lv_u, lv_v])):
        L, det = encoder_lipschitz_bound(m, logvar_observed=lv_obs)
        w2 = w2_diag(mu_u, lv_u, mu_v, lv_v).numpy()
        dxn = np.array([_norm_l1(a, b) for a, b in zip(xu, xv)])
        c = normalization_factor(xu, xv).numpy()
        assert np.all(w2 <= L * dxn * (1 + 1e-9))
        assert np.all(w2 <= L * c * np.abs(xu - xv).sum(1) * (1 + 1e-9))
        assert len(det["hidden"]) == 1
    assert det["logvar_range"] in ("observed+margin", "mixed")
    assert det["logvar_max"] <= det["logvar_global_max"]


def test_bound_above_directional_derivatives():
    """L_phi bounds the local rate W2(x~ + t e_i)/t for tiny t on the normalised input."""
    m = _model(3).double()
    L, _ = encoder_lipschitz_bound(m)
    rng = np.random.default_rng(0)
    xn = torch.from_numpy(_binary(rng, 1, 40))
    xn = xn / xn.norm()
    h0 = xn @ m.enc_in_weight + m.enc_in_bias
    t = 1e-6
    rates = []
    with torch.no_grad():
        mu0, lv0 = m._encode_hidden(h0)
        for i in range(40):
            mu1, lv1 = m._encode_hidden(h0 + t * m.enc_in_weight[i])
            rates.append(float(w2_diag(mu0, lv0, mu1, lv1)) / t)
    assert max(rates) <= L
    assert max(rates) > 0


@pytest.mark.parametrize("kind", ["multvae", "recvae"])
def test_logvar_global_range_is_certified(kind):
    """Every encoding's logvar lies below the global range of the bound (tanh-bounded for
    Multi-VAE, bounded through the last layer norm's output norm for RecVAE)."""
    m = _model(4) if kind == "multvae" else _recvae(4)
    _, det = encoder_lipschitz_bound(m)
    rng = np.random.default_rng(1)
    _, lv = encode_double(m, rng.random((300, 40)) * 5)
    assert float(lv.max()) <= det["logvar_global_max"] and det["logvar_range"] == "global"
    assert det["encoder"] == kind


def test_scaled_bound_fails():
    """Negative control: 1e-3 x the certified constant is violated on real pairs."""
    m = _model(5)
    rng = np.random.default_rng(2)
    xu, xv = _binary(rng, 20, 40), _binary(rng, 20, 40)
    L, _ = encoder_lipschitz_bound(m)
    emp = empirical_local_lipschitz(m, xu, xv, normalized=True).numpy()
    assert np.all(emp <= L) and np.any(emp > 1e-3 * L)


def test_empirical_local_lipschitz_nan_on_identical():
    """Identical inputs give NaN (0/0 is no Lipschitz ratio), distinct ones a finite ratio."""
    m = _model()
    x = _binary(np.random.default_rng(0), 2, 40)
    r = empirical_local_lipschitz(m, x, np.stack([x[0], x[0]]))
    assert np.isnan(float(r[0])) and np.isfinite(float(r[1]))


def test_encoder_bound_errors():
    """Models with no encoder to certify and bad options raise with exact messages."""
    with pytest.raises(TypeError, match="Linear has no `encoder` module to certify"):
        encoder_lipschitz_bound(torch.nn.Linear(2, 2))
    with pytest.raises(ValueError, match="logvar_margin must be >= 0, got -1"):
        encoder_lipschitz_bound(_model(), logvar_margin=-1)
    with pytest.raises(ValueError, match=r"logvar_observed must be \(B, 4\) with B >= 1"):
        encoder_lipschitz_bound(_model(), logvar_observed=np.zeros((3, 5)))


# --------------------------------------------------------------------------- RecVAE encoder
def _recvae(seed: int = 0, items: int = 40, hidden: int = 16, d: int = 4, n_layers: int = 5):
    """A RecVAE with non-trivial layer-norm scales and shifts (trained ones are not 1, 0)."""
    from radius.model.recvae import RecVAE, RecVAEEncoder

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        m = RecVAE(items, hidden, d)
        m.encoder = RecVAEEncoder(items, hidden, d, n_layers=n_layers)
        with torch.no_grad():
            for ln in m.encoder.lns:
                ln.weight.uniform_(-2.0, 2.0)
                ln.bias.uniform_(-1.0, 1.0)
            for fc in m.encoder.fcs:
                fc.bias.uniform_(-0.5, 0.5)
            m.encoder.fc_logvar.bias.uniform_(-1.0, 1.0)
    return m.eval()


def test_silu_constant_bounds_derivative():
    """SILU_LIPSCHITZ >= sup |silu'| (a fine grid) and is within 1e-3 of it."""
    t = torch.linspace(-30, 30, 600_001, dtype=torch.float64)
    s = torch.sigmoid(t)
    deriv = s * (1 + t * (1 - s))
    sup = float(deriv.abs().max())
    assert sup <= SILU_LIPSCHITZ < sup + 1e-3


def test_layernorm_constant_is_certified_and_tight():
    """Jacobian norms of a LayerNorm stay below max|gamma|/sqrt(eps), reached at c = 0."""
    ln = torch.nn.LayerNorm(8, eps=0.1).double()
    const = layernorm_lipschitz(ln)
    assert const == pytest.approx(1 / math.sqrt(0.1), rel=1e-9)
    jac = torch.autograd.functional.jacobian(ln, torch.full((8,), 0.7, dtype=torch.float64))
    assert float(torch.linalg.matrix_norm(jac, ord=2)) == pytest.approx(const, rel=1e-9)
    with torch.no_grad():
        ln.weight.uniform_(-3, 3)
    const = layernorm_lipschitz(ln)
    gen = torch.Generator().manual_seed(0)
    for scale in (1e-3, 0.1, 1.0, 10.0):
        y = scale * torch.randn(8, generator=gen, dtype=torch.float64)
        jac = torch.autograd.functional.jacobian(ln, y)
        assert float(torch.linalg.matrix_norm(jac, ord=2)) <= const


def test_recvae_trunk_recursion():
    """B_1 = l_0 s first, B_2 = l_1 s ||W_1 + I|| B_1, B_3 = l_2 s (||W_2 + I|| B_2 + B_1)."""
    m = _recvae(1, n_layers=3)
    _, det = encoder_lipschitz_bound(m)
    enc = m.encoder
    ls = [float(ln.weight.abs().max()) / math.sqrt(ln.eps) for ln in enc.lns]
    eye = torch.eye(16, dtype=torch.float64)
    dense = [float(torch.linalg.matrix_norm(fc.weight.double() + eye, ord=2)) for fc in enc.fcs]
    first = float(enc.in_weight.double().norm(dim=1).max())
    b1 = ls[0] * SILU_LIPSCHITZ * first
    b2 = ls[1] * SILU_LIPSCHITZ * dense[0] * b1
    b3 = ls[2] * SILU_LIPSCHITZ * (dense[1] * b2 + b1)
    assert det["encoder"] == "recvae" and len(det["hidden"]) == 2
    assert det["trunk"] == pytest.approx([b1, b2, b3], rel=1e-9)
    assert det["l_phi"] == pytest.approx(b3 * det["head"], rel=1e-9)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_recvae_bound_holds_on_random_inputs(seed):
    """RecVAE: W2 <= L_phi ||x~_u - x~_v||_1 <= L_phi c ||x_u - x_v||_1, observed and global."""
    m = _recvae(seed)
    rng = np.random.default_rng(seed)
    xu = _binary(rng, 64, 40)
    xv = xu.copy()
    flip = rng.integers(0, 40, 64)
    xv[np.arange(64), flip] = 1 - xv[np.arange(64), flip]
    xv[:32] = _binary(rng, 32, 40)
    xv[xv.sum(1) == 0, 0] = 1.0
    mu_u, lv_u = encode_double(m, xu)
    mu_v, lv_v = encode_double(m, xv)
    w2 = w2_diag(mu_u, lv_u, mu_v, lv_v).numpy()
    dxn = np.array([_norm_l1(a, b) for a, b in zip(xu, xv)])
    c = normalization_factor(xu, xv).numpy()
    for lv_obs in (None, torch.cat([lv_u, lv_v])):
        L, det = encoder_lipschitz_bound(m, logvar_observed=lv_obs)
        assert np.all(w2 <= L * dxn * (1 + 1e-9))
        assert np.all(w2 <= L * c * np.abs(xu - xv).sum(1) * (1 + 1e-9))
        assert det["l_mu"] <= det["l_phi"]


def test_recvae_bound_above_directional_derivatives():
    """The RecVAE constant bounds W2(x~ + t e_i) / t for tiny t (local rates)."""
    m = _recvae(3).double()
    L, _ = encoder_lipschitz_bound(m)
    rng = np.random.default_rng(0)
    rates = []
    with torch.no_grad():
        for _ in range(4):
            xn = torch.from_numpy(_binary(rng, 1, 40))
            h0 = (xn / xn.norm()) @ m.encoder.in_weight
            mu0, lv0 = m.encoder.forward_hidden(h0)
            for i in range(40):
                mu1, lv1 = m.encoder.forward_hidden(h0 + 1e-6 * m.encoder.in_weight[i])
                rates.append(float(w2_diag(mu0, lv0, mu1, lv1)) / 1e-6)
    assert 0 < max(rates) <= L


def test_binary_l1_nearest():
    """Nearest other row by Hamming distance, never the row itself."""
    x = sp.csr_matrix(np.array([[1, 1, 0, 0], [1, 1, 1, 0], [0, 0, 1, 1], [0, 0, 0, 1]], float))
    nb, dist = binary_l1_nearest(x, np.array([0, 2, 3]))
    assert nb.tolist() == [1, 3, 2] and dist.tolist() == [1, 1, 1]
    with pytest.raises(ValueError, match="needs a binary"):
        binary_l1_nearest(sp.csr_matrix(np.array([[2.0, 0], [1, 0]])), np.array([0]))


# --------------------------------------------------------------------------- T2.3 helper
def _flat_mixed_jacobian(m: MultVAE, x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
    """The full mixed Jacobian d/dz grad_theta l_v by autograd (small models only)."""
    params = [p for _, p in m.decoder_parameters()]

    def g(zz):
        loss = -(x * torch.log_softmax(m.decode(zz), -1)).sum()
        gs = torch.autograd.grad(loss, params, create_graph=True)
        return torch.cat([t.reshape(-1) for t in gs])

    return torch.autograd.functional.jacobian(g, z)


@pytest.mark.slow
def test_mixed_jacobian_matches_exact_spectral_norm():
    """Power iteration converges to the exact spectral norm of the mixed Jacobian."""
    m = _model(6, hidden=(8,), d=2, items=15)
    x = torch.zeros(15)
    x[[1, 4, 7]] = 1.0
    z = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    est = mixed_jacobian_lipschitz(m, x, z, n_iter=40, seed=1)
    exact = [float(torch.linalg.matrix_norm(_flat_mixed_jacobian(m, x, zi), ord=2)) for zi in z]
    assert est.per_point.numpy() == pytest.approx(exact, rel=1e-3)
    assert est.max == pytest.approx(max(exact), rel=1e-3)
    assert est.parameters[0].startswith("dec_layers.")


def test_mixed_jacobian_segments():
    """Segment points are added between consecutive points, in order."""
    m = _model(7, hidden=(8,), d=2, items=10)
    x = torch.zeros(10)
    x[0] = 1.0
    z = torch.tensor([[0.0, 0.0], [3.0, 0.0]])
    est = mixed_jacobian_lipschitz(m, x, z, n_iter=5, n_segment=2)
    assert est.points.shape == (4, 2)
    assert torch.allclose(est.points[2:], torch.tensor([[1.0, 0.0], [2.0, 0.0]]))
    assert est.per_point.shape == (4,) and est.max == float(est.per_point.max())
    with pytest.raises(ValueError, match=r"x_v must be \(10,\)"):
        mixed_jacobian_lipschitz(m, torch.zeros(3), z)
