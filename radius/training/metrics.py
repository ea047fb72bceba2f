r"""Ranking metrics of the Multi-VAE reference code, with 0/0 guarded.

For a user with held-out set T (|T| = t) and ranking of non-fold-in items:

.. math::

    \mathrm{Recall@}k = \frac{|\mathrm{top}_k \cap T|}{\min(k, t)},\qquad
    \mathrm{nDCG@}k = \frac{\sum_{r=1}^{k} 1[\mathrm{item}_r\in T]/\log_2(r+1)}
                          {\sum_{r=1}^{\min(k,t)} 1/\log_2(r+1)} .

Fold-in items are excluded from the ranking (their scores set to -inf). Users with
no held-out item have undefined metrics (NaN), excluded from the means and counted.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from torch import nn

from radius.data.dataset import COHORTS, cohort_of

__all__ = ["recall_at_k", "ndcg_at_k", "rank_metrics", "evaluate", "EvalResult"]


def _check(scores: np.ndarray, heldout: sp.csr_matrix, k: int) -> None:
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if scores.shape != heldout.shape:
        raise ValueError(f"scores {scores.shape} and held-out {heldout.shape} differ in shape")


def _topk(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices (B, k) of the k largest scores, sorted descending (ties by index)."""
    k = min(k, scores.shape[1])
    t = torch.as_tensor(scores)
    return torch.topk(t, k, dim=1, sorted=True).indices.numpy().copy()


def _hits(heldout: sp.csr_matrix, top: np.ndarray) -> np.ndarray:
    """(B, k) bool: is the ranked item in the user's held-out set."""
    dense = heldout.toarray() > 0  # (B, I), one batch at a time
    return np.take_along_axis(dense, top, axis=1)


def _recall_from_hits(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    denom = np.minimum(k, n_true).astype(np.float64)
    return np.where(n_true > 0, hits.sum(1) / np.maximum(denom, 1), np.nan)


def _ndcg_from_hits(hits: np.ndarray, n_true: np.ndarray, k: int) -> np.ndarray:
    disc = 1.0 / np.log2(np.arange(2, hits.shape[1] + 2))
    dcg = (hits * disc).sum(1)
    cum = np.concatenate([[0.0], np.cumsum(1.0 / np.log2(np.arange(2, k + 2)))])
    idcg = cum[np.minimum(n_true, k)]
    return np.where(n_true > 0, dcg / np.where(idcg > 0, idcg, 1.0), np.nan)


_FROM_HITS = {"recall": _recall_from_hits, "ndcg": _ndcg_from_hits}


def recall_at_k(scores: np.ndarray, heldout: sp.csr_matrix, k: int) -> np.ndarray:
    """Recall@k per user (B,), normalised by min(k, #held-out); NaN when nothing is held out."""
    return rank_metrics(scores, heldout, [("recall", k)])[f"recall@{k}"]


def ndcg_at_k(scores: np.ndarray, heldout: sp.csr_matrix, k: int) -> np.ndarray:
    """nDCG@k per user (B,) with binary relevance; NaN when nothing is held out."""
    return rank_metrics(scores, heldout, [("ndcg", k)])[f"ndcg@{k}"]


def rank_metrics(
    scores: np.ndarray, heldout: sp.csr_matrix, ks: Sequence[tuple[str, int]]
) -> dict[str, np.ndarray]:
    """Per-user metrics for names like ``("recall", 20)``, ``("ndcg", 100)``.

    One top-k at the largest k serves every metric (the top-k of a smaller k is its prefix).
    """
    ks = list(ks)
    for m, k in ks:
        _check(scores, heldout, k)
        if m not in _FROM_HITS:
            raise ValueError(f"unknown metric {m!r} (choose from {sorted(_FROM_HITS)})")
    hits = _hits(heldout, _topk(scores, max(k for _, k in ks)))  # (B, kmax)
    n_true = np.diff(heldout.indptr)
    return {f"{m}@{k}": _FROM_HITS[m](hits[:, :k], n_true, k) for m, k in ks}


DEFAULT_METRICS: tuple[tuple[str, int], ...] = (("recall", 20), ("recall", 50), ("ndcg", 100))


@dataclass
class EvalResult:
    """Means over users with a held-out set, per-user values and the cohort table."""

    means: dict[str, float]
    per_user: dict[str, np.ndarray] = field(repr=False)
    cohorts: dict[str, dict[str, Any]]
    n_users: int
    n_undefined: int

    def to_dict(self) -> dict[str, Any]:
        return {
            "means": self.means,
            "cohorts": self.cohorts,
            "n_users": self.n_users,
            "n_undefined": self.n_undefined,
        }


@torch.no_grad()
def score_users(model: nn.Module, fold_in: sp.csr_matrix, *, batch_size: int = 1000) -> np.ndarray:
    """Scores (B, I): decoder logits at mu(x) of the clean fold-in, fold-in items -inf."""
    from radius.model.multvae import SparseBatch

    device = next(model.parameters()).device
    out = np.empty(fold_in.shape, dtype=np.float32)
    for s in range(0, fold_in.shape[0], batch_size):
        part = fold_in[s : s + batch_size]
        if hasattr(model, "encode_sparse"):  # same maths as encode(dense), fewer FLOPs
            batch = SparseBatch.from_csr(part, device=device)
            mu, _ = model.encode_sparse(batch)  # (B, d)
            logits = model.decode(mu)  # (B, I)
            seen = batch.values > 0
            logits[batch.rows[seen], batch.indices[seen]] = -torch.inf
        else:
            xb = torch.as_tensor(part.toarray(), device=device)
            mu, _ = model.encode(xb)
            logits = model.decode(mu)
            logits[xb > 0] = -torch.inf
        out[s : s + batch_size] = logits.float().cpu().numpy()
    return out


def evaluate(
    model: nn.Module,
    fold_in: sp.csr_matrix,
    heldout: sp.csr_matrix,
    *,
    metrics: Sequence[tuple[str, int]] = DEFAULT_METRICS,
    batch_size: int = 1000,
    progress: bool = False,
) -> EvalResult:
    """Evaluate on held-out users (strong generalisation): rank from mu(fold-in)."""
    was_training = model.training
    model.eval()
    per_user: dict[str, list[np.ndarray]] = {f"{m}@{k}": [] for m, k in metrics}
    starts = range(0, fold_in.shape[0], batch_size)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc="evaluate", unit="batch", leave=False)
    for s in starts:
        scores = score_users(model, fold_in[s : s + batch_size], batch_size=batch_size)
        for name, vals in rank_metrics(scores, heldout[s : s + batch_size], metrics).items():
            per_user[name].append(vals)
    if was_training:
        model.train()
    pu = {k: np.concatenate(v) if v else np.zeros(0) for k, v in per_user.items()}
    counts = np.diff(fold_in.indptr) + np.diff(heldout.indptr)
    coh = cohort_of(counts)
    cohorts: dict[str, dict[str, Any]] = {}
    for c, (label, _, _) in enumerate(COHORTS):
        sel = coh == c
        cohorts[label] = {"users": int(sel.sum())}
        for name, vals in pu.items():
            v = vals[sel]
            v = v[~np.isnan(v)]
            cohorts[label][name] = float(v.mean()) if len(v) else float("nan")
    first = next(iter(pu.values())) if pu else np.zeros(0)
    undefined = int(np.isnan(first).sum())
    means = {
        k: float(np.nanmean(v)) if np.any(~np.isnan(v)) else float("nan") for k, v in pu.items()
    }
    return EvalResult(
        means=means, per_user=pu, cohorts=cohorts, n_users=len(first), n_undefined=undefined
    )
