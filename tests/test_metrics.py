"""Ranking metrics against hand-computed cases and an independent implementation."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from radius.training.metrics import ndcg_at_k, recall_at_k


def _csr(rows):
    return sp.csr_matrix(np.array(rows, dtype=np.float32))


def test_recall_hand_case():
    """Recall@2 counts hits in the top 2 and divides by min(2, #held-out)."""
    scores = np.array([[0.9, 0.8, 0.1, 0.0], [0.1, 0.2, 0.3, 0.4]])
    held = _csr([[1, 0, 1, 1], [1, 0, 0, 0]])
    # user 0: top2 = items 0,1 -> 1 hit / min(2, 3) = 0.5; user 1: top2 = 3,2 -> 0 / 1
    np.testing.assert_allclose(recall_at_k(scores, held, 2), [0.5, 0.0])


def test_ndcg_hand_case():
    """nDCG@3 with binary relevance: DCG over the top 3 / ideal DCG of min(3, #held-out) hits."""
    scores = np.array([[0.9, 0.8, 0.7, 0.0]])
    held = _csr([[0, 1, 0, 1]])
    dcg = 1 / np.log2(3)  # hit at rank 2
    idcg = 1 / np.log2(2) + 1 / np.log2(3)
    np.testing.assert_allclose(ndcg_at_k(scores, held, 3), [dcg / idcg])


def test_perfect_ranking_scores_one():
    """A ranking that puts every held-out item first has Recall = nDCG = 1."""
    rng = np.random.default_rng(0)
    held = sp.random(20, 50, density=0.1, random_state=1, format="csr")
    held.data[:] = 1
    scores = held.toarray() + 1e-3 * rng.random((20, 50))
    has = np.diff(held.indptr) > 0
    np.testing.assert_allclose(ndcg_at_k(scores, held, 100)[has], 1.0)
    np.testing.assert_allclose(recall_at_k(scores, held, 50)[has], 1.0)


def test_empty_heldout_is_nan_not_zero_division():
    """A user with nothing held out gets NaN (0/0 guarded), never an error or a fake 0."""
    scores = np.array([[0.3, 0.2, 0.1]])
    held = _csr([[0, 0, 0]])
    assert np.isnan(ndcg_at_k(scores, held, 2)[0])
    assert np.isnan(recall_at_k(scores, held, 2)[0])


def _reference(scores, held, k):
    """Independent per-user loop, written from the definitions."""
    rec, nd = [], []
    for u in range(scores.shape[0]):
        true = set(held[u].indices)
        order = sorted(range(scores.shape[1]), key=lambda i: (-scores[u, i], i))[:k]
        hits = [i in true for i in order]
        rec.append(sum(hits) / min(k, len(true)))
        dcg = sum(h / np.log2(r + 2) for r, h in enumerate(hits))
        idcg = sum(1 / np.log2(r + 2) for r in range(min(k, len(true))))
        nd.append(dcg / idcg)
    return np.array(rec), np.array(nd)


@pytest.mark.parametrize("k", [1, 5, 20])
def test_matches_independent_loop(k):
    """Vectorised metrics equal a plain per-user loop on random data without ties."""
    rng = np.random.default_rng(k)
    scores = rng.random((30, 40))
    held = sp.random(30, 40, density=0.15, random_state=k, format="csr")
    held.data[:] = 1
    keep = np.diff(held.indptr) > 0
    held = held[keep]
    scores = scores[keep]
    rec, nd = _reference(scores, held, k)
    np.testing.assert_allclose(recall_at_k(scores, held, k), rec)
    np.testing.assert_allclose(ndcg_at_k(scores, held, k), nd)


def test_bad_k_and_shapes_are_rejected():
    """k < 1 and mismatched shapes raise ValueError naming the problem."""
    held = _csr([[1, 0]])
    with pytest.raises(ValueError, match="k must be >= 1, got 0"):
        ndcg_at_k(np.zeros((1, 2)), held, 0)
    with pytest.raises(ValueError, match="differ in shape"):
        recall_at_k(np.zeros((1, 3)), held, 1)
