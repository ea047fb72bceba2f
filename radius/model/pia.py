r"""Personalized Item Alignment (PIA): the anchor loss L_A (P3.1).

For a user with clean support S (n = |S|), anchors e_i (rows of E), centroid
:math:`\bar e = \frac1n\sum_{i\in S} e_i` and posterior q = N(mu, diag sigma^2)
computed from the *masked* input:

.. math::

    L_A = \frac1n \sum_{i\in S} \mathbb E_{z\sim q}\|z - e_i\|^2
        = \|\mu - \bar e\|^2 + \operatorname{tr}\Sigma
          + \frac1n \sum_{i\in S}\|e_i - \bar e\|^2 .

The last (spread) term does not depend on the encoder; its gradient pulls the
anchors of one user's items together. A user with no items has no anchor loss (0).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from radius.model.multvae import SparseBatch

__all__ = [
    "AnchorTerms",
    "anchor_terms_dense",
    "anchor_terms_sparse",
    "anchor_loss_direct",
    "anchor_loss_mc",
]


@dataclass
class AnchorTerms:
    """Per-user parts of L_A, each (B,): alignment ||mu - e_bar||^2, trace tr Sigma,
    spread (1/n) sum ||e_i - e_bar||^2, and ``has_items`` (B,) bool."""

    align: Tensor
    trace: Tensor
    spread: Tensor
    has_items: Tensor

    def total(self, terms: str = "both") -> Tensor:
        """(B,) loss with the chosen encoder terms; users without items give 0."""
        if terms == "both":
            out = self.align + self.trace + self.spread
        elif terms == "mean":
            out = self.align + self.spread
        elif terms == "trace":
            out = self.trace + self.spread
        else:
            raise ValueError(f"terms must be 'both', 'mean' or 'trace', got {terms!r}")
        return torch.where(self.has_items, out, torch.zeros_like(out))


def anchor_terms_dense(x: Tensor, mu: Tensor, logvar: Tensor, anchors: Tensor) -> AnchorTerms:
    """Closed form of P3.1 for a dense clean batch x (B, I) (support = x > 0)."""
    s = (x > 0).to(anchors.dtype)  # (B, I)
    n = s.sum(-1)  # (B,)
    safe_n = n.clamp_min(1.0)
    e_bar = (s @ anchors) / safe_n[:, None]  # (B, d)
    # spread = mean_i ||e_i - c||^2 - ||e_bar - c||^2 for any c; c = the mean anchor keeps
    # float32 precision when all anchors share a large offset
    c = anchors.mean(0, keepdim=True)  # (1, d)
    centred = anchors - c
    e_bar_c = e_bar - c
    spread = (s @ (centred * centred).sum(-1)) / safe_n - (e_bar_c * e_bar_c).sum(-1)  # (B,)
    return AnchorTerms(
        align=((mu - e_bar) ** 2).sum(-1),
        trace=torch.exp(logvar).sum(-1),
        spread=spread.clamp_min(0.0),
        has_items=n > 0,
    )


def anchor_terms_sparse(
    batch: SparseBatch, mu: Tensor, logvar: Tensor, anchors: Tensor
) -> AnchorTerms:
    r"""Closed form of P3.1 on a clean sparse batch (support = stored entries > 0).

    :math:`\bar e` is an embedding bag over the batch's items (a sum of the anchor rows,
    no (nnz, d) gather), and the spread is taken about the mean anchor c,
    :math:`\frac1n\sum_{i\in S}\|e_i - c\|^2 - \|\bar e - c\|^2`, which equals
    :math:`\frac1n\sum_i\|e_i - \bar e\|^2` for any c and keeps float32 precision when
    all anchors share a large offset. c is detached: the value does not depend on it,
    so neither does the gradient.
    """
    on = (batch.values > 0).to(anchors.dtype)  # (nnz,)
    n = batch.row_sum(on)  # (B,)
    safe_n = n.clamp_min(1.0)
    e_bar = (
        F.embedding_bag(batch.indices, anchors, batch.offsets, mode="sum", per_sample_weights=on)
        / safe_n[:, None]
    )  # (B, d)
    c = anchors.detach().mean(0, keepdim=True)  # (1, d)
    sq = ((anchors - c) ** 2).sum(-1)  # (I,)
    e_bar_c = e_bar - c
    spread = batch.row_sum(sq[batch.indices] * on) / safe_n - (e_bar_c * e_bar_c).sum(-1)
    return AnchorTerms(
        align=((mu - e_bar) ** 2).sum(-1),
        trace=torch.exp(logvar).sum(-1),
        spread=spread.clamp_min(0.0),
        has_items=n > 0,
    )


def anchor_loss_direct(x: Tensor, mu: Tensor, logvar: Tensor, anchors: Tensor) -> Tensor:
    r"""Direct sum :math:`\frac1n\sum_i (\|\mu - e_i\|^2 + \operatorname{tr}\Sigma)`, (B,).

    Independent of the closed form (no centroid identity used); O(B I d) memory.
    """
    s = (x > 0).to(anchors.dtype)  # (B, I)
    n = s.sum(-1).clamp_min(1.0)
    d2 = ((mu[:, None, :] - anchors[None, :, :]) ** 2).sum(-1)  # (B, I)
    out = (s * d2).sum(-1) / n + torch.exp(logvar).sum(-1)
    return torch.where(s.sum(-1) > 0, out, torch.zeros_like(out))


def anchor_loss_mc(
    x: Tensor,
    mu: Tensor,
    logvar: Tensor,
    anchors: Tensor,
    n_samples: int,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:
    """Monte Carlo estimate of L_A and its standard error, each (B,).

    Draws z ~ q (``n_samples`` per user) and averages (1/n) sum_i ||z - e_i||^2.
    """
    if n_samples < 2:
        raise ValueError(f"n_samples must be >= 2, got {n_samples}")
    s = (x > 0).to(anchors.dtype)
    n = s.sum(-1).clamp_min(1.0)
    std = torch.exp(0.5 * logvar)
    eps = torch.randn((n_samples, *mu.shape), generator=generator, dtype=mu.dtype, device=mu.device)
    z = mu[None] + std[None] * eps  # (S, B, d)
    # (1/n) sum_i ||z - e_i||^2 = ||z||^2 - 2 z.e_bar + (1/n) sum_i ||e_i||^2
    e_bar = (s @ anchors) / n[:, None]
    mean_sq = (s @ (anchors * anchors).sum(-1)) / n
    vals = (z * z).sum(-1) - 2 * (z * e_bar[None]).sum(-1) + mean_sq[None]  # (S, B)
    has = s.sum(-1) > 0  # a user with no items has no anchor loss
    est = torch.where(has, vals.mean(0), torch.zeros_like(n))
    se = torch.where(has, vals.std(0, correction=1) / n_samples**0.5, torch.zeros_like(n))
    return est, se
