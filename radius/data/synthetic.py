r"""The embedded default: a planted synthetic dataset with known ground truth.

Generative process (deterministic given ``seed``):

- K item communities; item i belongs to community c_i (balanced, shuffled).
- Zipf item popularity :math:`\pi_i \propto (r_i)^{-a}` over a random rank r_i.
- User mixture :math:`\theta_u \sim \mathrm{Dirichlet}(\alpha 1_K)`.
- Long-tailed activity: :math:`\log n_u \sim \mathcal N(\log m, s^2)`, clipped to
  [n_min, n_max], so cold-start (5-10), medium, active and heavy (100+) users all occur.
- Items of u: n_u draws without replacement from
  :math:`p(i\mid u) = \theta_{u c_i}\,\pi_i / \sum_{j: c_j = c_i}\pi_j`
  (Gumbel top-k, one vectorised pass).

The ground truth (item_community, item_popularity, user_mixture, user_activity, in
the order of the raw user ids) is saved beside the prepared matrices.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from radius.data.dataset import Dataset
from radius.data.split import (
    SPLIT_FIELDS,
    Interactions,
    SplitParams,
    resolve_split_params,
    split_interactions,
)

__all__ = ["SyntheticParams", "SYNTHETIC_SPLIT", "generate", "default_dataset"]

# The split of the embedded default: every interaction kept (no ratings), users >= 5.
SYNTHETIC_SPLIT = SplitParams(threshold=None, min_user=5, min_item=0, seed=98765)


@dataclass(frozen=True)
class SyntheticParams:
    """Size and shape of the planted dataset (the defaults are the embedded default).

    n_users, n_items, n_communities : sizes.
    alpha : Dirichlet concentration of user mixtures (small: users focus on few communities).
    zipf_a : Zipf exponent of item popularity.
    activity_median, activity_sigma : log-normal user activity.
    n_min, n_max : clip of user activity (n_max <= n_items).
    seed : generator seed.
    """

    n_users: int = 5000
    n_items: int = 2000
    n_communities: int = 20
    alpha: float = 0.15
    zipf_a: float = 0.9
    activity_median: float = 22.0
    activity_sigma: float = 1.0
    n_min: int = 5
    n_max: int = 400
    seed: int = 0


def generate(
    params: SyntheticParams = SyntheticParams(),
) -> tuple[Interactions, dict[str, np.ndarray]]:
    """Draw interactions and ground truth."""
    p = params
    if p.n_max > p.n_items or p.n_min < 1:
        raise ValueError(
            f"need 1 <= n_min <= n_max <= n_items, got {p.n_min}, {p.n_max}, {p.n_items}"
        )
    rng = np.random.default_rng(p.seed)
    community = rng.permutation(np.arange(p.n_items) % p.n_communities)  # (I,)
    rank = rng.permutation(p.n_items) + 1
    pop = rank.astype(np.float64) ** (-p.zipf_a)
    pop /= pop.sum()
    comm_mass = np.bincount(community, weights=pop, minlength=p.n_communities)  # (K,)
    mixture = rng.dirichlet(np.full(p.n_communities, p.alpha), size=p.n_users)  # (U, K)
    activity = np.exp(rng.normal(np.log(p.activity_median), p.activity_sigma, size=p.n_users))
    activity = np.clip(np.round(activity), p.n_min, p.n_max).astype(np.int64)  # (U,)
    users, items = [], []
    chunk = 1000
    for start in range(0, p.n_users, chunk):
        th = mixture[start : start + chunk]  # (C, K)
        prob = th[:, community] * (pop / comm_mass[community])[None, :]  # (C, I)
        with np.errstate(divide="ignore"):
            keys = np.log(prob) + rng.gumbel(size=prob.shape)
        order = np.argsort(-keys, axis=1)
        for r, n in enumerate(activity[start : start + chunk]):
            items.append(order[r, :n])
            users.append(np.full(n, start + r))
    u = np.concatenate(users)
    it = np.concatenate(items)
    inter = Interactions(
        u,
        it,
        None,
        source={"kind": "synthetic", "params": asdict(p)},
    )
    truth = {
        "item_community": community,
        "item_popularity": pop,
        "user_mixture": mixture,
        "user_activity": activity,
    }
    return inter, truth


def default_dataset(
    params: SyntheticParams = SyntheticParams(),
    split: SplitParams | None = None,
    *,
    overrides: Mapping[str, Any] | None = None,
) -> Dataset:
    """The embedded default, prepared with the strong-generalisation split (no threshold).

    ``split`` replaces the default split parameters (``SYNTHETIC_SPLIT``) as a whole;
    ``overrides`` changes some of them by field name (as ``radius data prepare``'s
    options do). The data have no ratings, so a threshold among ``overrides`` is an
    error.
    """
    inter, truth = generate(params)
    base = split if split is not None else SYNTHETIC_SPLIT
    resolved, origin = resolve_split_params(
        base, overrides, defaults=None if split is not None else "synthetic"
    )
    if split is not None:
        origin["given"] = list(SPLIT_FIELDS)
    ds = split_interactions(inter, resolved, name="synthetic", origin=origin)
    ds.ground_truth = truth
    return ds
