"""Tests of radius.analysis.gap: the compromise gap of the multinomial decoder (T2.5)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from scipy.integrate import quad
from scipy.optimize import minimize
from scipy.stats import norm

from radius.analysis.gap import (
    compromise_gap_mc,
    compromise_gap_path,
    compromise_gap_quadrature,
    gap_pointwise,
    gap_ratio,
    gap_upper_bound,
    item_groups,
    kl_categorical,
    log_bhattacharyya,
)

finite = dict(allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def count_rows(draw, n_items: int = 8, binary: bool = False):
    """Two non-negative count rows of n_items, each with a positive sum."""
    el = st.sampled_from([0.0, 1.0]) if binary else st.integers(0, 4).map(float)
    x = draw(arrays(np.float64, n_items, elements=el))
    y = draw(arrays(np.float64, n_items, elements=el))
    assume(x.sum() > 0 and y.sum() > 0)
    return x, y


weights = st.floats(0, 5, **finite)


def _distributions_differ(x, y) -> bool:
    return not np.allclose(x / x.sum(), y / y.sum(), rtol=0, atol=1e-12)


# --------------------------------------------------------------------------- pointwise
@given(count_rows(), weights, weights)
def test_pointwise_gap_nonnegative(rows, wu, wv):
    """Delta(z) >= 0 for any rows and weights."""
    x, y = rows
    scale = wu * x.sum() + wv * y.sum()
    assert gap_pointwise(x, y, [wu], [wv])[0] >= -1e-12 * max(1.0, scale)


@given(count_rows(), weights, weights)
def test_pointwise_gap_is_minimal_shared_excess(rows, wu, wv):
    """Delta equals min over shared outputs p of the excess loss, attained at p_bar."""
    x, y = rows
    assume(wu + wv > 0.1)
    pu, pv = x / x.sum(), y / y.sum()
    a, b = wu * x.sum(), wv * y.sum()

    def excess(p):  # a zero-weight user contributes nothing (0 * KL, even where KL = inf)
        out = a * kl_categorical(pu, p) if a > 0 else 0.0
        return out + (b * kl_categorical(pv, p) if b > 0 else 0.0)

    p_bar = (a * pu + b * pv) / (a + b)
    delta = gap_pointwise(x, y, [wu], [wv])[0]
    assert delta == pytest.approx(excess(p_bar), rel=1e-9, abs=1e-9)
    rng = np.random.default_rng(0)
    for _ in range(5):  # any other shared output is no better
        q = rng.dirichlet(np.ones(x.size))
        q = 0.5 * q + 0.5 * p_bar
        assert excess(q) >= delta - 1e-9


def test_pointwise_gap_matches_numerical_minimum():
    """Delta matches a numerical minimisation of the shared excess over the simplex."""
    x = np.array([3.0, 1.0, 0.0, 2.0])
    y = np.array([0.0, 1.0, 4.0, 1.0])
    pu, pv = x / x.sum(), y / y.sum()
    a, b = 0.7 * x.sum(), 1.3 * y.sum()

    def f(t):
        p = np.exp(t - t.max())
        p /= p.sum()
        return a * kl_categorical(pu, p) + b * kl_categorical(pv, p)

    best = minimize(f, np.zeros(4), method="BFGS").fun
    assert gap_pointwise(x, y, [0.7], [1.3])[0] == pytest.approx(best, rel=1e-6)


@given(count_rows(), weights, weights)
def test_pointwise_gap_zero_iff_equal_or_no_overlap(rows, wu, wv):
    """Delta = 0 iff p_u = p_v or w_u w_v = 0."""
    x, y = rows
    assert gap_pointwise(x, 2 * x, [wu], [wv])[0] == pytest.approx(0.0, abs=1e-9)
    assert gap_pointwise(x, y, [wu], [0.0])[0] == 0.0
    assert gap_pointwise(x, y, [0.0], [wv])[0] == 0.0
    assume(wu > 1e-3 and wv > 1e-3 and _distributions_differ(x, y))
    assert gap_pointwise(x, y, [wu], [wv])[0] > 0.0


@given(count_rows(), weights)
def test_unweighted_p_bar_breaks_zero_without_overlap(rows, wu):
    """Negative control: the unweighted mean (p_u + p_v)/2 leaves a gap without overlap."""
    x, y = rows
    assume(wu > 1e-3 and _distributions_differ(x, y))
    assert gap_pointwise(x, y, [wu], [0.0], p_bar="unweighted")[0] > 0.0


@given(count_rows(binary=True), st.floats(0.0, 1.0, **finite), st.floats(0.0, 1.0, **finite))
def test_gap_ratio_concave(rows, r1, r2):
    """h(r) = Delta(r, 1 - r) is concave on [0, 1] with h(0) = h(1) = 0."""
    g = item_groups(*rows)
    h = gap_ratio(g, np.array([r1, r2, 0.5 * (r1 + r2), 0.0, 1.0]))
    assert h[2] >= 0.5 * (h[0] + h[1]) - 1e-9
    assert h[3] == 0.0 and h[4] == 0.0


def test_gap_ratio_log_odds_keeps_tiny_weights():
    """The log-odds form keeps a positive gap where the plain ratio rounds to zero."""
    g = item_groups(np.array([1.0, 1.0, 0.0]), np.array([0.0, 1.0, 1.0]))
    t = np.array([60.0])
    assert gap_ratio(g, t, log_odds=True)[0] > 0.0
    assert gap_ratio(g, 1.0 / (1.0 + np.exp(-t)))[0] == 0.0


def test_item_groups_binary_has_three_classes():
    """Binary rows collapse to at most three item classes (shared, u only, v only)."""
    x = np.array([1, 1, 1, 0, 0, 0], float)
    y = np.array([0, 1, 1, 1, 1, 0], float)
    g = item_groups(x, y)
    assert sorted(g.mult.tolist()) == [1.0, 2.0, 2.0] and g.n_u == 3 and g.n_v == 4


def test_kl_categorical_zero_log_zero():
    """0 log 0 = 0 and KL = inf where p > 0 = q."""
    assert kl_categorical(np.array([0.5, 0.5, 0.0]), np.array([0.5, 0.5, 0.0])) == 0.0
    assert kl_categorical(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == np.inf


# --------------------------------------------------------------------------- integral G
XU = np.array([1, 1, 1, 0, 0, 1, 0, 0], float)
XV = np.array([0, 1, 0, 1, 1, 0, 1, 0], float)


def _quad_1d(mu_v: float, lv_u: float = -0.4, lv_v: float = 0.2) -> float:
    su, sv = np.exp(0.5 * lv_u), np.exp(0.5 * lv_v)

    def f(z):
        return gap_pointwise(XU, XV, [norm.pdf(z, 0, su)], [norm.pdf(z, mu_v, sv)])[0]

    return quad(f, -40, 40 + mu_v, points=[0.0, mu_v], limit=400)[0]


@pytest.mark.parametrize("mu_v", [0.0, 0.7, 2.0, 5.0])
def test_quadrature_matches_scipy_quad_1d(mu_v):
    """Gauss-Legendre G equals scipy.integrate.quad of Delta(q_u(z), q_v(z)) in 1-D."""
    q = compromise_gap_quadrature(XU, XV, [0.0], [-0.4], [mu_v], [0.2], n_nodes=400)
    assert q.value == pytest.approx(_quad_1d(mu_v), rel=1e-6, abs=1e-10)


@pytest.mark.parametrize("d,mu_v", [(1, 0.0), (1, 1.5), (2, 0.8), (2, 3.0)])
def test_mc_matches_quadrature(d, mu_v):
    """The mixture Monte Carlo estimate covers the quadrature value within 4 s.e."""
    mu_u, lv_u = np.zeros(d), np.full(d, -0.4)
    mv, lv_v = np.full(d, mu_v), np.full(d, 0.2)
    q = compromise_gap_quadrature(XU, XV, mu_u, lv_u, mv, lv_v, n_nodes=400 if d == 1 else 120)
    m = compromise_gap_mc(XU, XV, mu_u, lv_u, mv, lv_v, n_samples=20000, seed=1)
    assert abs(m.value - q.value) <= 4 * m.std_error + 1e-9
    assert m.std_error < 0.05 * max(q.value, 1e-3)


def test_gap_identical_posteriors_equals_upper_bound():
    """q_u = q_v gives G = Delta(1, 1) exactly (r = 1/2 everywhere)."""
    m = compromise_gap_mc(XU, XV, np.ones(5), np.zeros(5), np.ones(5), np.zeros(5), n_samples=50)
    assert m.value == pytest.approx(gap_upper_bound(XU, XV), rel=1e-12)
    assert m.std_error < 1e-12


@pytest.mark.parametrize("mu_v", [0.3, 1.0, 3.0])
def test_gap_below_upper_bound(mu_v):
    """G <= Delta(1, 1) (Jensen for the concave 1-homogeneous Delta)."""
    q = compromise_gap_quadrature(XU, XV, [0.0], [0.0], [mu_v], [0.5], n_nodes=300)
    assert 0.0 < q.value <= q.upper_bound


def test_gap_zero_iff_equal_or_no_overlap():
    """G = 0 for equal distributions (any posteriors) and for disjoint posteriors."""
    g_eq = compromise_gap_mc(XU, 3 * XU, np.zeros(3), np.zeros(3), np.ones(3), np.zeros(3))
    assert abs(g_eq.value) <= 1e-12
    far = compromise_gap_mc(XU, XV, np.zeros(3), np.zeros(3), np.full(3, 1e4), np.zeros(3))
    assert far.value == 0.0
    near = compromise_gap_mc(XU, XV, np.zeros(3), np.zeros(3), np.full(3, 1.0), np.zeros(3))
    assert near.value > 10 * near.std_error


def test_unweighted_p_bar_breaks_no_overlap_and_monotonicity():
    """Negative control: with (p_u + p_v)/2, G stays positive without overlap and flat."""
    far = compromise_gap_mc(
        XU, XV, np.zeros(3), np.zeros(3), np.full(3, 1e4), np.zeros(3), p_bar="unweighted"
    )
    assert far.value > 1.0
    vals = [
        compromise_gap_quadrature(XU, XV, [0.0], [0.0], [m], [0.0], p_bar="unweighted").value
        for m in (4.0, 2.0, 0.0)
    ]
    assert vals == pytest.approx([vals[0]] * 3, rel=1e-6)


@given(
    st.floats(0.0, 4.0, **finite),
    st.floats(0.05, 0.95, **finite),
    st.floats(-1.0, 1.0, **finite),
)
def test_gap_monotone_in_overlap_1d(mu_v, shrink, lv):
    """Moving mu_v toward mu_u (equal variances) never lowers G (Blackwell order)."""
    far = compromise_gap_quadrature(XU, XV, [0.0], [lv], [mu_v], [lv], n_nodes=200).value
    near = compromise_gap_quadrature(XU, XV, [0.0], [lv], [shrink * mu_v], [lv], n_nodes=200).value
    assert near >= far - 1e-9 * max(1.0, far)


def test_path_common_noise_is_monotone():
    """Along mu_v(lambda) with shared noise, the estimates grow as lambda falls (d = 20)."""
    rng = np.random.default_rng(0)
    mu_u, mu_v = rng.normal(size=20), rng.normal(size=20)
    lv = np.full(20, -1.0)
    lam = np.array([1.0, 0.75, 0.5, 0.25, 0.0])[:, None]
    path = compromise_gap_path(
        XU, XV, mu_u, lv, mu_u + lam * (mu_v - mu_u), np.tile(lv, (5, 1)), n_samples=2000
    )
    assert np.all(np.diff(path.values) > 0)
    assert path.values[-1] == pytest.approx(path.upper_bound, rel=1e-9)


def test_path_step_errors_match_repeated_estimates():
    """The common-noise standard errors of the steps and of the rise match the spread of
    the steps over independent repetitions (within 25%), and are far below the hypot of the
    two estimates' standard errors (the steps are correlated)."""
    rng = np.random.default_rng(3)
    mu_u, mu_v = rng.normal(size=4), rng.normal(size=4)
    lv_u, lv_v = np.full(4, -0.5), np.full(4, 0.3)
    lam = np.array([1.0, 0.5, 0.0])[:, None]
    paths = [
        compromise_gap_path(XU, XV, mu_u, lv_u, mu_u + lam * (mu_v - mu_u), np.tile(lv_v, (3, 1)),
                            n_samples=400, seed=k)
        for k in range(300)
    ]  # fmt: skip
    steps = np.array([np.diff(p.values) for p in paths])  # (R, 2)
    rises = np.array([p.values[-1] - p.values[0] for p in paths])
    se = np.array([p.step_std_errors for p in paths]).mean(axis=0)
    assert se == pytest.approx(steps.std(axis=0, ddof=1), rel=0.25)
    assert np.mean([p.rise_std_error for p in paths]) == pytest.approx(rises.std(ddof=1), rel=0.25)
    hyp = np.mean([np.hypot(p.std_errors[1:], p.std_errors[:-1]) for p in paths], axis=0)
    assert np.all(se < hyp)


def test_log_bhattacharyya_matches_quadrature_and_is_one_for_equal():
    """log BC equals the log of int sqrt(q_u q_v) (1-D quadrature), is 0 for identical
    posteriors, symmetric, and very negative for distant ones."""
    for mu_v, lv_u, lv_v in [(0.0, 0.0, 0.0), (1.3, -0.5, 0.8), (4.0, -2.0, 1.0)]:
        su, sv = np.exp(0.5 * lv_u), np.exp(0.5 * lv_v)
        bc = quad(lambda z, m=mu_v, a=su, b=sv: np.sqrt(norm.pdf(z, 0, a) * norm.pdf(z, m, b)),
                  -40, 40, points=[0.0, mu_v], limit=400)[0]  # fmt: skip
        got = log_bhattacharyya([0.0], [lv_u], [mu_v], [lv_v])
        assert got == pytest.approx(np.log(bc), rel=1e-7, abs=1e-9)
    a, b = np.random.default_rng(0).normal(size=(2, 3, 5))
    la, lb = np.random.default_rng(1).normal(size=(2, 3, 5))
    assert np.allclose(log_bhattacharyya(a, la, b, lb), log_bhattacharyya(b, lb, a, la))
    assert np.allclose(log_bhattacharyya(a, la, a, la), 0.0)
    assert log_bhattacharyya(np.zeros(3), np.zeros(3), np.full(3, 100.0), np.zeros(3)) < -3000
    with pytest.raises(ValueError, match="posterior parameters must share one shape"):
        log_bhattacharyya(a, la, b[:, :2], lb)


def test_gap_input_errors():
    """Bad inputs raise with exact messages."""
    with pytest.raises(ValueError, match="p_bar must be 'optimal' or 'unweighted', got 'mean'"):
        gap_pointwise(XU, XV, [1.0], [1.0], p_bar="mean")
    with pytest.raises(
        ValueError, match="x_u must be a finite non-negative row with a positive sum"
    ):
        gap_pointwise(np.zeros(8), XV, [1.0], [1.0])
    with pytest.raises(ValueError, match="x_u and x_v must have the same length, got 8 and 3"):
        gap_pointwise(XU, np.ones(3), [1.0], [1.0])
    with pytest.raises(ValueError, match="w_u and w_v must be finite and non-negative"):
        gap_pointwise(XU, XV, [-1.0], [1.0])
    with pytest.raises(ValueError, match="quadrature is for latent dimension <= 3, got 4"):
        compromise_gap_quadrature(XU, XV, np.zeros(4), np.zeros(4), np.zeros(4), np.zeros(4))
    with pytest.raises(ValueError, match="n_samples must be >= 2, got 1"):
        compromise_gap_mc(XU, XV, [0.0], [0.0], [0.0], [0.0], n_samples=1)
    with pytest.raises(
        TypeError, match="x_u must be a numpy array, torch tensor or scipy sparse row"
    ):
        gap_pointwise([1.0], [1.0], [1.0], [1.0])
