"""Tests of radius.analysis.neighbours: the all-users Jaccard and W2 searches against brute
force, chunk-size independence, ties by the lower index, and input errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from hypothesis import given
from hypothesis import strategies as st

from radius.analysis.neighbours import euclidean_topk, jaccard_pairs, jaccard_topk, topk_rows


def _binary(n: int, items: int, density: float, seed: int) -> sp.csr_matrix:
    rng = np.random.default_rng(seed)
    x = (rng.random((n, items)) < density).astype(np.float32)
    return sp.csr_matrix(x)


def _brute_jaccard(x: sp.csr_matrix) -> np.ndarray:
    d = x.toarray().astype(np.float64)
    inter = d @ d.T
    n = d.sum(1)
    union = n[:, None] + n[None, :] - inter
    jac = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
    np.fill_diagonal(jac, -np.inf)
    return jac


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_jaccard_topk_equals_brute_force(chunk):
    """The k similarities equal the k largest of the dense Jaccard matrix, for any chunk."""
    x = _binary(120, 40, 0.12, seed=0)
    idx, sim = jaccard_topk(x, 6, chunk_size=chunk)
    jac = _brute_jaccard(x)
    want = -np.sort(-jac, axis=1)[:, :6]
    np.testing.assert_allclose(sim, want, rtol=0, atol=1e-15)
    np.testing.assert_allclose(np.take_along_axis(jac, idx, 1), sim, rtol=0, atol=1e-15)
    assert not np.any(idx == np.arange(120)[:, None])  # never the query itself


def test_jaccard_topk_does_not_depend_on_chunks_and_breaks_ties_by_index():
    """Identical rows tie: the lower indices come first, whatever the chunk size."""
    row = np.zeros((1, 10), np.float32)
    row[0, :3] = 1
    other = np.zeros((1, 10), np.float32)
    other[0, 5:] = 1
    x = sp.csr_matrix(np.vstack([row, other, row, row, other, row]))
    for chunk in (1, 2, 6):
        idx, sim = jaccard_topk(x, 3, chunk_size=chunk)
        np.testing.assert_array_equal(idx[0], [2, 3, 5])  # ties at 1.0, lower index first
        np.testing.assert_array_equal(sim[0], [1.0, 1.0, 1.0])
        np.testing.assert_array_equal(idx[1, :1], [4])


def test_jaccard_topk_on_query_rows_and_clipped_k():
    """A subset of queries gets the same answer as the full search; k is clipped at N - 1."""
    x = _binary(50, 30, 0.2, seed=1)
    rows = np.array([3, 17, 42])
    idx_all, sim_all = jaccard_topk(x, 5)
    idx, sim = jaccard_topk(x, 5, rows=rows, chunk_size=2)
    np.testing.assert_array_equal(idx, idx_all[rows])
    np.testing.assert_array_equal(sim, sim_all[rows])
    small = x[:4]
    idx4, _ = jaccard_topk(small, 10)
    assert idx4.shape == (4, 3)


def test_jaccard_pairs_equals_dense():
    """Pair similarities equal the dense matrix's entries (0 for two empty rows)."""
    x = _binary(30, 20, 0.2, seed=2)
    x = sp.vstack([x, sp.csr_matrix((2, 20), dtype=np.float32)]).tocsr()
    pairs = np.array([[0, 1], [5, 9], [30, 31], [3, 3]])
    jac = _brute_jaccard(x)
    np.fill_diagonal(jac, 1.0)
    jac[30, 31] = 0.0
    np.testing.assert_allclose(jaccard_pairs(x, pairs), jac[pairs[:, 0], pairs[:, 1]])


@pytest.mark.parametrize("chunk", [1, 5, 100])
def test_euclidean_topk_equals_brute_force(chunk):
    """Nearest rows by distance, self excluded with query_index, exact float64 distances."""
    rng = np.random.default_rng(3)
    base = rng.standard_normal((80, 6))
    q_idx = np.array([0, 10, 79])
    idx, dist = euclidean_topk(base[q_idx], base, 4, query_index=q_idx, chunk_size=chunk)
    full = np.linalg.norm(base[q_idx, None] - base[None], axis=-1)
    full[np.arange(3), q_idx] = np.inf
    np.testing.assert_allclose(dist, np.sort(full, axis=1)[:, :4], rtol=1e-12)
    np.testing.assert_array_equal(idx, np.argsort(full, axis=1, kind="stable")[:, :4])
    idx2, _ = euclidean_topk(base[q_idx], base, 4)  # without exclusion the query is first
    np.testing.assert_array_equal(idx2[:, 0], q_idx)


@given(
    st.integers(1, 6),
    st.integers(7, 120),
    st.integers(1, 6),
    st.integers(2, 40),
    st.integers(0, 2**31 - 1),
)
def test_topk_rows_is_lexicographic(c, n, k, levels, seed):
    """topk_rows picks the k best by (value, then lower index), best first: the same as a
    lexicographic sort (coarse values make ties frequent, and past the fast path's
    candidates when few levels share many columns)."""
    rng = np.random.default_rng(seed)
    score = rng.integers(0, levels, size=(c, n)).astype(np.float32)
    got = topk_rows(torch.from_numpy(score), k).numpy()
    want = np.array([np.lexsort((np.arange(n), -row))[:k] for row in score])
    np.testing.assert_array_equal(got, want)
    low = topk_rows(torch.from_numpy(score), k, largest=False).numpy()
    want_low = np.array([np.lexsort((np.arange(n), row))[:k] for row in score])
    np.testing.assert_array_equal(low, want_low)


def test_bad_input_messages():
    """Errors name the argument and the value."""
    x = _binary(10, 5, 0.5, seed=4)
    with pytest.raises(TypeError, match="x must be a scipy sparse matrix, got ndarray"):
        jaccard_topk(x.toarray(), 2)
    bad = x.copy()
    bad.data[0] = 2.0
    with pytest.raises(ValueError, match="x must be binary"):
        jaccard_topk(bad, 2)
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        jaccard_topk(x, 0)
    with pytest.raises(TypeError, match="k must be an int, got float"):
        jaccard_topk(x, 2.0)
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 10\), got range \[0, 10\]"):
        jaccard_topk(x, 2, rows=[0, 10])
    with pytest.raises(ValueError, match="need at least 2 rows, got 1"):
        jaccard_topk(x[:1], 1)
    with pytest.raises(ValueError, match="chunk_size must be >= 1, got 0"):
        jaccard_topk(x, 2, chunk_size=0)
    with pytest.raises(ValueError, match=r"must agree on D, got \(2, 3\) and \(5, 4\)"):
        euclidean_topk(np.zeros((2, 3)), np.zeros((5, 4)), 1)
    with pytest.raises(ValueError, match=r"query_index must have one entry per query \(2\), got 1"):
        euclidean_topk(np.zeros((2, 3)), np.zeros((5, 3)), 1, query_index=[0])
    with pytest.raises(ValueError, match=r"pairs must have shape \(P, 2\), got \(3,\)"):
        jaccard_pairs(x, np.array([0, 1, 2]))
