"""Tests of radius.analysis.masking (T2.6): exact masking laws, tail bounds, Monte Carlo."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import assume, given
from hypothesis import strategies as st
from scipy import stats

from radius.analysis import masking as mk

RHO = st.floats(min_value=0.01, max_value=1.0, allow_nan=False, allow_infinity=False)


# --------------------------------------------------------------------------- brute force
def _enumerate_pair(n_only_u: int, n_only_v: int, n_shared: int, rho: float) -> np.ndarray:
    """pmf of D by enumerating every pair of masks on explicit sets (independent of the law)."""
    su = list(range(n_only_u)) + list(range(100, 100 + n_shared))
    sv = list(range(50, 50 + n_only_v)) + list(range(100, 100 + n_shared))
    pmf = np.zeros(len(su) + len(sv) + 1)
    for bu in itertools.product((0, 1), repeat=len(su)):
        for bv in itertools.product((0, 1), repeat=len(sv)):
            ku = {i for i, b in zip(su, bu) if b}
            kv = {i for i, b in zip(sv, bv) if b}
            p = rho ** (sum(bu) + sum(bv)) * (1 - rho) ** (len(bu) - sum(bu) + len(bv) - sum(bv))
            pmf[len(ku ^ kv)] += p
    return pmf


def _enumerate_triple_flip(counts: np.ndarray, rho: float) -> float:
    """P(D_uw <= D_uv) by enumerating every mask triple on sets built from pattern counts."""
    codes = np.repeat(np.arange(1, 8), counts)
    sets = [[i for i, c in enumerate(codes) if (c >> j) & 1] for j in range(3)]
    total = 0.0
    for bits in itertools.product((0, 1), repeat=sum(len(x) for x in sets)):
        kept, off, p = [], 0, 1.0
        for items in sets:
            b = bits[off : off + len(items)]
            off += len(items)
            kept.append({i for i, k in zip(items, b) if k})
            p *= rho ** sum(b) * (1 - rho) ** (len(b) - sum(b))
        if len(kept[0] ^ kept[2]) <= len(kept[0] ^ kept[1]):
            total += p
    return total


@st.composite
def tiny_triples(draw):
    codes = draw(st.lists(st.integers(1, 7), min_size=0, max_size=5))
    c = np.bincount(np.asarray(codes, dtype=np.int64), minlength=8)[1:]
    memberships = sum(c[k - 1] * bin(k).count("1") for k in range(1, 8))
    assume(memberships <= 10)
    return c


@st.composite
def pair_cases(draw):
    d = draw(st.integers(0, 250))
    s = draw(st.integers(0, 250))
    assume(d + s > 0)
    return d, s


# --------------------------------------------------------------------------- validation
def test_validation_messages():
    """Bad public input raises ValueError/TypeError with the documented messages."""
    with pytest.raises(ValueError, match=r"rho must be in \(0, 1\], got 0\.0"):
        mk.pair_law([1], [1], 0.0)
    with pytest.raises(ValueError, match=r"rho must be in \(0, 1\], got 1\.5"):
        mk.shared_flip_rate(1.5)
    with pytest.raises(TypeError, match="rho must be a real number, got str"):
        mk.pair_mean([1], [1], "0.5")
    with pytest.raises(ValueError, match="d must hold non-negative integers"):
        mk.pair_law([-1], [1], 0.5)
    with pytest.raises(ValueError, match="s must hold non-negative integers"):
        mk.pair_law([1], [0.5], 0.5)
    with pytest.raises(ValueError, match="law must be one of 'masked', 'uniform', 'contraction'"):
        mk.pair_law([1], [1], 0.5, law="binomial")
    with pytest.raises(ValueError, match="side must be 'upper' or 'lower', got 'both'"):
        mk.pair_tail([1], [1], 0.5, 1.0, side="both")
    with pytest.raises(ValueError, match="kind must be one of 'hoeffding', 'chernoff', 'kl'"):
        mk.pair_tail_bound([1], [1], 0.5, 1.0, kind="bernstein")
    with pytest.raises(ValueError, match="t must be finite and non-negative"):
        mk.pair_tail([1], [1], 0.5, -1.0)
    with pytest.raises(ValueError, match="scale must be positive and finite, got 0.0"):
        mk.pair_tail_bound([1], [1], 0.5, 1.0, scale=0.0)
    with pytest.raises(ValueError, match=r"counts must have shape \(K, 7\), got \(2, 6\)"):
        mk.triple_flip_prob(np.zeros((2, 6), int), 0.5)
    with pytest.raises(ValueError, match="law must be one of 'masked', 'independent'"):
        mk.triple_law(np.zeros((1, 7), int), 0.5, law="uniform")
    with pytest.raises(ValueError, match="n_mc must be a positive integer, got 0"):
        mk.simulate_pair_distance(mk.pair_entries_from_counts(1, 1, 1), 0.5, 0, seed=0)
    with pytest.raises(ValueError, match=r"confidence must be in \(0, 1\), got 1.0"):
        mk.clopper_pearson(np.array([1]), 10, confidence=1.0)
    with pytest.raises(TypeError, match="x must be a scipy.sparse matrix, got ndarray"):
        mk.pair_counts(np.eye(3), np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match=r"x must be binary \(stored values all 1\)"):
        mk.pair_counts(sp.csr_matrix(2 * np.eye(3)), np.array([0]), np.array([1]))
    with pytest.raises(ValueError, match="u must index rows 0..2"):
        mk.pair_counts(sp.csr_matrix(np.eye(3)), np.array([3]), np.array([1]))
    with pytest.raises(ValueError, match="far must be 'next' or 'random', got 'far'"):
        mk.sample_triples(sp.csr_matrix(np.eye(3)), 1, far="far", seed=0)
    with pytest.raises(TypeError, match="seed must be an int or numpy Generator, got float"):
        mk.sample_random_pairs(sp.csr_matrix(np.eye(3)), 1, seed=0.5)


# --------------------------------------------------------------------------- exact pair law
@given(case=pair_cases(), rho=RHO)
def test_pmf_sums_to_one_with_closed_form_moments(case, rho):
    """The convolved pmf has mass 1, mean rho d + q s and variance d rho(1-rho) + s q(1-q)."""
    d, s = case
    law = mk.pair_law([d], [s], rho)
    assert law.pmf.min() >= 0
    assert law.total()[0] == pytest.approx(1.0, abs=1e-12)
    assert law.mean()[0] == pytest.approx(mk.pair_mean(d, s, rho), rel=1e-10, abs=1e-10)
    assert law.var()[0] == pytest.approx(mk.pair_var(d, s, rho), rel=1e-8, abs=1e-9)


@given(
    n_only_u=st.integers(0, 3),
    n_only_v=st.integers(0, 3),
    n_shared=st.integers(0, 3),
    rho=RHO,
)
def test_pair_law_equals_enumeration(n_only_u, n_only_v, n_shared, rho):
    """The exact law equals the distribution of |kept_u xor kept_v| over all masks."""
    brute = _enumerate_pair(n_only_u, n_only_v, n_shared, rho)
    law = mk.pair_law([n_only_u + n_only_v], [n_shared], rho)
    got = np.zeros_like(brute)
    got[: law.size[0]] = law.pmf[0, : law.size[0]]
    np.testing.assert_allclose(got, brute, atol=1e-13)


def test_pair_law_differs_from_uniform_contraction_except_at_half():
    """Masking is not a uniform contraction: Bin(d+s, rho) is the law only at rho = 1/2."""
    d, s = np.array([10]), np.array([20])
    exact = mk.pair_law(d, s, 0.5).pmf[0]
    uniform = mk.pair_law(d, s, 0.5, law="uniform").pmf[0]
    np.testing.assert_allclose(exact[: uniform.size], uniform, atol=1e-14)
    for rho in (0.25, 0.9):
        gap = mk.pair_mean(d, s, rho) - mk.pair_law(d, s, rho, law="uniform").mean()
        assert abs(gap[0] - (mk.shared_flip_rate(rho) - rho) * 20) < 1e-9


@given(case=pair_cases(), rho=RHO, side=st.sampled_from(["upper", "lower"]))
def test_tail_monotone_in_t(case, rho, side):
    """P(D >= ED + t) and P(D <= ED - t) never increase with t."""
    d, s = case
    t = np.linspace(0.0, d + s + 1.0, 60)
    tail = mk.pair_tail(d, s, rho, t, side=side)
    assert np.all(np.diff(tail) <= 1e-15)
    assert tail[-1] == 0.0


@given(
    case=pair_cases(),
    rho=RHO,
    t_frac=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
    side=st.sampled_from(["upper", "lower"]),
    kind=st.sampled_from(list(mk.BOUND_KINDS)),
)
def test_bounds_never_below_exact(case, rho, t_frac, side, kind):
    """Hoeffding, multiplicative Chernoff and Chernoff-Hoeffding bounds are >= the exact tail."""
    d, s = case
    t = np.array([t_frac * (d + s), t_frac * np.sqrt(d + s), t_frac])
    exact = mk.pair_tail(d, s, rho, t, side=side)
    bound = mk.pair_tail_bound(d, s, rho, t, side=side, kind=kind)
    assert np.all(exact <= bound * (1 + 1e-9) + 1e-300)


def test_too_tight_bound_falls_below_exact():
    """Negative control: the exponent multiplied by 4 gives a 'bound' below the exact tail."""
    d, s, rho = np.array([100]), np.array([0]), 0.5
    t = np.sqrt(mk.pair_var(d, s, rho)) * np.array([1.0, 3.0])
    exact = mk.pair_tail(d, s, rho, t)
    for kind in mk.BOUND_KINDS:
        assert np.all(exact <= mk.pair_tail_bound(d, s, rho, t, kind=kind))
        assert np.any(exact > mk.pair_tail_bound(d, s, rho, t, kind=kind, scale=4.0))


def test_tail_threshold_snaps_rounding():
    """A mean + t that is an integer up to rounding keeps its boundary point in the event."""
    x = 0.1 + 0.2  # 0.30000000000000004
    assert mk.tail_threshold(np.array([x * 10]), np.array([0.0]), side="upper")[0] == 3
    assert mk.tail_threshold(np.array([2.5]), np.array([0.0]), side="upper")[0] == 3
    assert mk.tail_threshold(np.array([2.5]), np.array([0.0]), side="lower")[0] == 2


# --------------------------------------------------------------------------- triple law
@given(counts=tiny_triples(), rho=RHO)
def test_triple_flip_equals_enumeration(counts, rho):
    """The convolved P(D_uw <= D_uv) equals brute-force enumeration over all mask triples."""
    got = mk.triple_flip_prob(counts[None, :], rho)[0]
    assert got == pytest.approx(_enumerate_triple_flip(counts, rho), abs=1e-12)


@given(
    counts=st.lists(st.integers(0, 60), min_size=7, max_size=7).map(np.array),
    rho=RHO,
)
def test_triple_law_moments_and_bound(counts, rho):
    """Delta's law has mass 1 and mean E D_uw - E D_uv; Hoeffding bounds its flip probability."""
    c = counts[None, :]
    law = mk.triple_law(c, rho)
    d_uv, s_uv, d_uw, s_uw = mk.triple_pair_counts(c)
    m = mk.pair_mean(d_uw, s_uw, rho) - mk.pair_mean(d_uv, s_uv, rho)
    assert law.total()[0] == pytest.approx(1.0, abs=1e-12)
    assert law.mean()[0] == pytest.approx(m[0], abs=1e-9)
    assert mk.triple_mean(c, rho)[0] == pytest.approx(m[0], abs=1e-9)
    flip = mk.triple_flip_prob(c, rho)
    assert np.all(flip <= mk.triple_flip_bound(c, rho) * (1 + 1e-9) + 1e-300)


def test_independent_triple_law_is_wrong():
    """Negative control: drawing u's mask twice changes the flip probability (u-only items)."""
    counts = np.array([[30, 5, 3, 8, 0, 0, 2]])
    right = mk.triple_flip_prob(counts, 0.5)[0]
    wrong = mk.triple_flip_prob(counts, 0.5, law="independent")[0]
    assert abs(right - wrong) > 0.05


# --------------------------------------------------------------------------- Monte Carlo
def _inside(exact: np.ndarray, count: np.ndarray, n: int, m: int) -> np.ndarray:
    lo, hi = mk.clopper_pearson(count, n, confidence=1 - 1e-3 / m)
    return (exact >= lo - 1e-12) & (exact <= hi + 1e-12)


@pytest.mark.slow
def test_pair_law_matches_simulation():
    """Exact tails lie inside Bonferroni MC intervals; a uniform-contraction law does not."""
    d = np.array([0, 4, 12, 30, 7])
    s = np.array([3, 9, 0, 25, 40])
    entries = mk.pair_entries_from_counts(d - d // 2, d // 2, s)
    rhos, n = (0.25, 0.75, 0.9), 3000
    sim = mk.simulate_pair_distance(entries, rhos, n, seed=1)
    ok, wrong_ok = [], []
    for r, rho in enumerate(rhos):
        for law, out in (("masked", ok), ("uniform", wrong_ok)):
            lw = mk.pair_law(d, s, rho, law=law)
            k = mk.tail_threshold(lw.mean(), np.zeros(d.size))
            out.append(_inside(lw.prob_ge(k), (sim[r] >= k).sum(0), n, 2 * d.size * len(rhos)))
    assert np.all(ok)
    assert not np.all(wrong_ok)


@pytest.mark.slow
def test_triple_law_matches_simulation():
    """The exact flip probability lies inside its Bonferroni MC interval for every case."""
    counts = np.random.default_rng(3).integers(0, 15, size=(8, 7))
    entries = mk.triple_entries_from_counts(counts)
    rhos, n = (0.3, 0.8), 3000
    sim = mk.simulate_triple_delta(entries, rhos, n, seed=2)
    for r, rho in enumerate(rhos):
        exact = mk.triple_flip_prob(counts, rho)
        assert np.all(_inside(exact, (sim[r] <= 0).sum(0), n, counts.shape[0] * len(rhos)))


def test_simulation_is_seeded():
    """The same seed gives the same draws; the distance of an empty pair is 0."""
    entries = mk.pair_entries_from_counts([0, 3], [0, 2], [0, 4])
    a = mk.simulate_pair_distance(entries, (0.5,), 50, seed=7)
    b = mk.simulate_pair_distance(entries, (0.5,), 50, seed=7)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (1, 50, 2)
    assert np.all(a[0, :, 0] == 0)
    assert a[0, :, 1].max() <= 9


def test_clopper_pearson_matches_scipy():
    """The interval equals scipy's exact binomial confidence interval."""
    for k, n in ((0, 20), (3, 20), (20, 20), (517, 4000)):
        lo, hi = mk.clopper_pearson(np.array([k]), n, confidence=0.99)
        ref = stats.binomtest(k, n).proportion_ci(confidence_level=0.99, method="exact")
        assert lo[0] == pytest.approx(ref.low, abs=1e-12)
        assert hi[0] == pytest.approx(ref.high, abs=1e-12)


# --------------------------------------------------------------------------- data helpers
def _toy_matrix() -> sp.csr_matrix:
    rows = [{0, 1, 2, 3}, {2, 3, 4}, {5, 6}, {0, 1, 2, 3, 7}, {9}]
    dense = np.zeros((len(rows), 10), dtype=np.float32)
    for r, items in enumerate(rows):
        dense[r, sorted(items)] = 1
    return sp.csr_matrix(dense)


def test_counts_from_csr_rows():
    """d, s and the 7 pattern counts equal set computations on the rows."""
    x = _toy_matrix()
    sets = [set(np.nonzero(x[r].toarray()[0])[0]) for r in range(x.shape[0])]
    u, v, w = np.array([0, 0, 2, 1]), np.array([1, 3, 4, 1]), np.array([2, 4, 0, 3])
    d, s = mk.pair_counts(x, u, v)
    np.testing.assert_array_equal(d, [len(sets[a] ^ sets[b]) for a, b in zip(u, v)])
    np.testing.assert_array_equal(s, [len(sets[a] & sets[b]) for a, b in zip(u, v)])
    counts = mk.triple_pattern_counts(x, u, v, w)
    for k, (a, b, c) in enumerate(zip(u, v, w)):
        for code in range(1, 8):
            want = sum(
                1
                for i in range(10)
                if (i in sets[a]) + 2 * (i in sets[b]) + 4 * (i in sets[c]) == code
            )
            assert counts[k, code - 1] == want


def test_samplers_pick_neighbours_and_farther_users():
    """Near pairs take the most Jaccard-similar user; triples have d_uw > d_uv, distinct users."""
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((80, 40)) < 0.15).astype(np.float32))
    x = x[np.diff(x.indptr) > 0]
    u, v = mk.sample_near_pairs(x, 20, n_candidates=10_000, seed=1)
    dense = x.toarray().astype(bool)
    for a, b in zip(u, v):
        inter = (dense[a] & dense).sum(1)
        jac = inter / (dense[a] | dense).sum(1)
        jac[a] = -1
        assert b != a and jac[b] == pytest.approx(jac.max())
    for far in ("next", "random"):
        tu, tv, tw = mk.sample_triples(x, 20, far=far, n_candidates=10_000, seed=2)
        assert tu.size > 0
        d_uv, _ = mk.pair_counts(x, tu, tv)
        d_uw, _ = mk.pair_counts(x, tu, tw)
        assert np.all(d_uw > d_uv)
        assert np.all((tu != tv) & (tu != tw) & (tv != tw))
    ru, rv = mk.sample_random_pairs(x, 50, seed=3)
    assert np.all(ru != rv)


def test_relative_expansion_is_mean_over_uniform_contraction():
    """E[D] / (rho d) = 1 + 2 (1 - rho) s / d; q scaled to 0 gives the uniform contraction
    (exactly 1); d = 0 is NaN; a negative flip scale is refused."""
    d, s = np.array([4, 10, 0]), np.array([2, 0, 3])
    r = mk.relative_expansion(d, s, 0.5)
    np.testing.assert_allclose(r[:2], mk.pair_mean(d[:2], s[:2], 0.5) / (0.5 * d[:2]))
    np.testing.assert_allclose(r[:2], [1 + 2 * 0.5 * 2 / 4, 1.0])
    assert np.isnan(r[2])
    np.testing.assert_allclose(mk.relative_expansion(d, s, 0.3, flip_scale=0.0)[:2], 1.0)
    with pytest.raises(ValueError, match="flip_scale must be >= 0, got -1"):
        mk.relative_expansion(d, s, 0.5, flip_scale=-1)
