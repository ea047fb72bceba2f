r"""Nearest neighbours over all users at scale: input Jaccard and latent W2 (T2.3's search).

T2.3's pair search (``radius.verify.t2_3``) needs, for a set of query users, their
nearest other users among **all** training users, by the input and by the latent
geometry. Both searches here are exact, chunked over the queries, and never form a
users x users (or queries x users x anything) array beyond one chunk.

Glossary
--------
- :math:`x_u \in \{0, 1\}^I` a row of the binary CSR matrix ``x`` (N, I),
  :math:`n_u = |x_u|`, :math:`|x_u \cap x_v| = x_u \cdot x_v`.
- Jaccard similarity :math:`J(u, v) = |x_u \cap x_v| / |x_u \cup x_v|
  = x_u\cdot x_v / (n_u + n_v - x_u\cdot x_v)` (0 when both rows are empty).
- Latent W2 between diagonal Gaussians: :math:`W_2(q_u, q_v) = \|(\mu_u, \sigma_u) -
  (\mu_v, \sigma_v)\|_2` (``radius.analysis.geometry``), so the W2 nearest neighbours are
  the Euclidean nearest neighbours of the stacked vectors :math:`(\mu, \sigma)`.

Method
------
Jaccard: for a chunk Q of C query rows, the intersections with every user are one
sparse product :math:`X_Q X^\top` (C, N) (``scipy`` CSR @ CSR: its work is
:math:`\sum_{u\in Q}\sum_{i\in x_u} \deg(i)`, so all users cost
:math:`\sum_i \deg(i)^2`, far below nnz(X) x N for long-tailed item popularity; counts
exact in float32 below 2^24), densified per chunk; the union follows from the counts,
and a top-k per query picks the neighbours. Memory: a few (C, N) float32 blocks
(``block_bytes`` sets C) and the chunk's sparse product, plus X and its transpose.
``bench/bench_neighbours.py`` compares this with a dense-block product, ``torch.sparse``
and scikit-learn's brute-force cosine search.

Euclidean: :math:`\|a - b\|^2 = \|a\|^2 + \|b\|^2 - 2 a\cdot b` for a chunk of queries
against all base rows (one (C, N) float32 block), top-k per query, then the k distances
recomputed exactly in float64 from the vectors.

Both searches rank in float32 and return exact float64 values (Jaccard from the integer
counts), re-sorted by them; two values closer than float32 rounding (about 1e-7
relative) may be ranked as equal at the k-th place. Ties are broken by the lower user
index, so the result does not depend on the chunk size (``topk_rows``).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch

__all__ = [
    "BLOCK_BYTES",
    "check_indices",
    "topk_rows",
    "jaccard_topk",
    "jaccard_pairs",
    "euclidean_topk",
]

BLOCK_BYTES = 16 * 2**20  # bytes of one (chunk, N) float32 block (a few such blocks live)
TIE_MARGIN = 32  # extra top-k candidates that settle ties by index without a full pass


def _check_k(k: object, n_other: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int | np.integer):
        raise TypeError(f"k must be an int, got {type(k).__name__}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    return int(min(k, n_other))


def check_indices(arr: np.ndarray, n: int, *, name: str, unit: str) -> np.ndarray:
    """``arr`` as int64 after checking it holds integers in [0, n); messages name
    ``name`` (what must lie in range) and ``unit`` (what its entries index)."""
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise TypeError(f"{name} must hold integer {unit} indices, got dtype {arr.dtype}")
    arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= n):
        raise ValueError(f"{name} must lie in [0, {n}), got range [{arr.min()}, {arr.max()}]")
    return arr


def _check_rows(rows: object, n: int) -> np.ndarray:
    if rows is None:
        return np.arange(n, dtype=np.int64)
    arr = np.asarray(rows)
    if arr.ndim != 1:
        raise ValueError(f"rows must be 1-d, got shape {arr.shape}")
    return check_indices(arr, n, name="rows", unit="row")


def _chunk_size(n: int, chunk_size: int | None, block_bytes: int) -> int:
    if chunk_size is not None:
        if isinstance(chunk_size, bool) or not isinstance(chunk_size, int | np.integer):
            raise TypeError(f"chunk_size must be an int, got {type(chunk_size).__name__}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
        return int(chunk_size)
    return max(1, int(block_bytes // (4 * max(n, 1))))


def topk_rows(score: torch.Tensor, k: int, *, largest: bool = True) -> torch.Tensor:
    """Column indices of the k best entries of each row of ``score`` (C, N) -> (C, k).

    Best = largest (``largest=True``) or smallest; ties broken by the lower column index;
    each row's k indices are ordered best first. NaN entries are never chosen unless a
    row has fewer than k others.

    Fast path: ``torch.topk`` of ``k + TIE_MARGIN`` candidates, sorted by (value, index);
    exact whenever the ties at the k-th value all lie among the candidates. The rows where
    they may not (the last candidate ties the k-th value) take the exact path: every
    entry above the k-th value, then the lowest-index ties.
    """
    c, n = score.shape
    if k > n:
        raise ValueError(f"k = {k} exceeds the {n} columns")
    s = score if largest else -score
    s = torch.nan_to_num(s, nan=-torch.inf)
    m = min(n, k + TIE_MARGIN)
    vals, idx = torch.topk(s, m, dim=1, largest=True, sorted=True)  # (C, m)
    by_idx = torch.sort(idx, dim=1, stable=True).indices  # candidates by index ...
    idx, vals = torch.gather(idx, 1, by_idx), torch.gather(vals, 1, by_idx)
    order = torch.sort(-vals, dim=1, stable=True).indices  # ... then by value, stably
    out = torch.gather(idx, 1, order)[:, :k]
    kth = torch.gather(vals, 1, order)[:, k - 1]
    unsure = (torch.gather(vals, 1, order)[:, -1] == kth) & (m < n)
    if unsure.any():
        rows = torch.nonzero(unsure)[:, 0]
        out[rows] = _topk_exact(s[rows], k)
    return out


def _topk_exact(s: torch.Tensor, k: int) -> torch.Tensor:
    """The exact tie rule on every entry: (C, N) -> (C, k), best first, lower index on ties."""
    c = s.shape[0]
    thr = torch.topk(s, k, dim=1, largest=True, sorted=True).values[:, -1:]  # (C, 1)
    above = s > thr  # (C, N): all of these are in
    need = k - above.sum(dim=1, keepdim=True)  # ties at the threshold still to take
    tie = s == thr
    take = above | (tie & (torch.cumsum(tie, dim=1) <= need))  # lowest-index ties first
    idx = torch.nonzero(take)[:, 1].reshape(c, k)  # ascending column per row
    vals = torch.gather(s, 1, idx)
    order = torch.sort(-vals, dim=1, stable=True).indices  # best first, index breaks ties
    return torch.gather(idx, 1, order)


def _resort(
    idx: torch.Tensor, val: torch.Tensor, *, largest: bool
) -> tuple[np.ndarray, np.ndarray]:
    """The k chosen (idx, val) of each row re-sorted by the exact float64 values, best
    first, ties by the lower index -> numpy (C, k) x 2."""
    by_idx = torch.sort(idx, dim=1, stable=True).indices
    idx, val = torch.gather(idx, 1, by_idx), torch.gather(val, 1, by_idx)
    order = torch.sort(-val if largest else val, dim=1, stable=True).indices
    return torch.gather(idx, 1, order).numpy(), torch.gather(val, 1, order).numpy()


def _binary_csr(x: object) -> sp.csr_matrix:
    if not sp.issparse(x):
        raise TypeError(f"x must be a scipy sparse matrix, got {type(x).__name__}")
    x = sp.csr_matrix(x, dtype=np.float32)
    x.sum_duplicates()
    if x.nnz and not np.all(x.data == 1):
        raise ValueError("x must be binary (every stored entry 1)")
    return x


def jaccard_topk(
    x: sp.spmatrix,
    k: int,
    *,
    rows: np.ndarray | None = None,
    chunk_size: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The k most Jaccard-similar other rows of ``x`` for each query row.

    Parameters
    ----------
    x : (N, I) binary scipy sparse matrix (users x items).
    k : neighbours per query (at most N - 1).
    rows : (R,) query row indices (default: every row).
    chunk_size : queries per chunk; default from ``block_bytes`` (one (C, N) float32 block).
    block_bytes : memory of one block when ``chunk_size`` is not given.

    Returns
    -------
    idx (R, k) int64, the neighbours best first (never the query itself; ties by the
    lower index), and sim (R, k) float64 their Jaccard similarities.
    """
    x = _binary_csr(x)
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"need at least 2 rows, got {n}")
    k = _check_k(k, n - 1)
    rows = _check_rows(rows, n)
    c = _chunk_size(n, chunk_size, block_bytes)
    counts = np.diff(x.indptr).astype(np.float32)  # (N,)
    counts_t = torch.from_numpy(counts)
    xt = x.T.tocsr()  # (I, N): the product below is (C, I) @ (I, N), sparse times sparse
    idx_out = np.empty((len(rows), k), dtype=np.int64)
    sim_out = np.empty((len(rows), k), dtype=np.float64)
    for s in range(0, len(rows), c):
        q = rows[s : s + c]
        inter = torch.from_numpy((x[q] @ xt).toarray())  # (C, N) intersections, exact
        jac = counts_t[None, :] + torch.from_numpy(counts[q])[:, None]  # (C, N)
        jac.sub_(inter).clamp_(min=1.0)  # the union (>= 1 unless both rows are empty)
        union_at = jac  # kept for the exact values below
        jac = inter / union_at  # 0 where both rows are empty
        jac[torch.arange(len(q)), torch.from_numpy(q)] = -torch.inf  # never the query itself
        best = topk_rows(jac, k)  # (C, k), ranked in float32
        i64 = torch.gather(inter, 1, best).double()  # exact integers
        u64 = torch.gather(union_at, 1, best).double()
        idx_out[s : s + len(q)], sim_out[s : s + len(q)] = _resort(best, i64 / u64, largest=True)
    return idx_out, sim_out


def jaccard_pairs(x: sp.spmatrix, pairs: np.ndarray) -> np.ndarray:
    """Jaccard similarity of listed row pairs: x (N, I) binary sparse, pairs (P, 2) -> (P,)."""
    x = _binary_csr(x)
    pairs = np.asarray(pairs)
    if pairs.ndim != 2 or pairs.shape[1] != 2:
        raise ValueError(f"pairs must have shape (P, 2), got {pairs.shape}")
    if not len(pairs):
        return np.zeros(0)
    _check_rows(pairs.ravel(), x.shape[0])
    counts = np.diff(x.indptr).astype(np.float64)
    inter = np.asarray(x[pairs[:, 0]].multiply(x[pairs[:, 1]]).sum(1), dtype=np.float64).ravel()
    union = counts[pairs[:, 0]] + counts[pairs[:, 1]] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def euclidean_topk(
    queries: np.ndarray | torch.Tensor,
    base: np.ndarray | torch.Tensor,
    k: int,
    *,
    query_index: np.ndarray | None = None,
    chunk_size: int | None = None,
    block_bytes: int = BLOCK_BYTES,
) -> tuple[np.ndarray, np.ndarray]:
    r"""The k nearest rows of ``base`` to each query, by Euclidean distance.

    With ``base`` the stacked :math:`(\mu, \sigma)` of every user this is the W2 nearest
    neighbour search of T2.3.

    Parameters
    ----------
    queries : (R, D) query vectors.
    base : (N, D) vectors searched (float32 is enough: it only ranks).
    k : neighbours per query (at most N, or N - 1 with ``query_index``).
    query_index : (R,) the row of ``base`` each query is, excluded from its own result.
    chunk_size, block_bytes : queries per chunk, or the memory of one (C, N) block.

    Returns
    -------
    idx (R, k) int64, nearest first (ties by the lower index), and dist (R, k) float64,
    recomputed exactly from the vectors.
    """
    q = torch.as_tensor(queries)
    b = torch.as_tensor(base)
    if q.ndim != 2 or b.ndim != 2 or q.shape[1] != b.shape[1]:
        raise ValueError(
            f"queries (R, D) and base (N, D) must agree on D, got {tuple(q.shape)} and "
            f"{tuple(b.shape)}"
        )
    n = b.shape[0]
    if query_index is not None:
        qi = _check_rows(query_index, n)
        if len(qi) != q.shape[0]:
            raise ValueError(
                f"query_index must have one entry per query ({q.shape[0]}), got {len(qi)}"
            )
    k = _check_k(k, n - 1 if query_index is not None else n)
    c = _chunk_size(n, chunk_size, block_bytes)
    b32 = b.to(torch.float32)
    bn = (b32 * b32).sum(1)  # (N,)
    idx_out = np.empty((q.shape[0], k), dtype=np.int64)
    dist_out = np.empty((q.shape[0], k), dtype=np.float64)
    b64 = b.to(torch.float64)
    for s in range(0, q.shape[0], c):
        qc = q[s : s + c].to(torch.float32)  # (C, D)
        d2 = (qc * qc).sum(1, keepdim=True) + bn[None, :] - 2.0 * (qc @ b32.T)  # (C, N)
        if query_index is not None:
            d2[torch.arange(qc.shape[0]), torch.from_numpy(qi[s : s + c])] = torch.inf
        best = topk_rows(d2, k, largest=False)  # (C, k), ranked in float32
        diff = q[s : s + c].to(torch.float64)[:, None, :] - b64[best]  # (C, k, D)
        idx_out[s : s + len(qc)], dist_out[s : s + len(qc)] = _resort(
            best, diff.norm(dim=-1), largest=False
        )
    return idx_out, dist_out
