r"""The embedded default: a planted synthetic dataset with known ground truth.

Generative process (deterministic given ``seed``):

- K item communities; item i belongs to community c_i (balanced, shuffled).
- Zipf item popularity :math:`\pi_i \propto (r_i)^{-a}` over a random rank r_i.
- User mixture :math:`\theta_u \sim \mathrm{Dirichlet}(\alpha 1_K)`.
- Long-tailed activity: :math:`\log n_u \sim \mathcal N(\log m, s^2)`, clipped to
  [n_min, n_max], so cold-start (5-10), medium, active and heavy (100+) users all occur.
- Items of u: n_u draws without replacement from
  :math:`p(i\mid u) = \theta_{u c_i}\,q_i`, :math:`q_i = \pi_i / \sum_{j: c_j = c_i}\pi_j`
  (successive sampling: each draw proportional to p over the items not yet drawn).

Two samplers draw the items of a user from this same law:

- ``"gumbel"`` (the embedded default's): Gumbel top-k over every item,
  :math:`\operatorname{top}_{n_u}(\log p(i\mid u) + G_{ui})`; cost users x items, memory
  one chunk of 1000 users x items. Kept so that the embedded default stays byte-identical
  (content hash ``5d8dc4b5b5e078ed``).
- ``"sparse"`` (paper-sized sets): i.i.d. draws from p(. | u) (a community from
  :math:`\theta_u`, then an item from q within it, by inverse CDF), repeats discarded,
  until n_u distinct items; the distinct items in order of first appearance are a
  successive sample without replacement. Users still short after a few rounds of draws
  finish with Gumbel top-k over the items not yet drawn, which is the exact conditional
  law (successive sampling is Markov in the set drawn so far). Cost about 1.5 draws per
  interaction, memory one chunk of draws.

The two samplers give the same distribution but different draws for the same seed.

Paper-shaped presets (``PRESETS``; ``radius data prepare --synthetic ml-20m``) follow
the sizes of Liang et al. (2018, Table 1) after their filtering: MovieLens-20M 136,677
users x 20,108 items, 10.0M interactions, 10k + 10k held-out users; Netflix 463,435 x
17,769, 56.9M, 40k + 40k; MSD 571,355 x 41,140, 33.6M, 50k + 50k. The activity median
of each is set so that the expected mean activity matches (sigma 1, clip [n_min, 1000]).

The ground truth (item_community, item_popularity, user_mixture, user_activity, in
the order of the raw user ids) is saved beside the prepared matrices.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
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
from radius.errors import DataError

__all__ = [
    "SyntheticParams",
    "SyntheticPreset",
    "SYNTHETIC_SPLIT",
    "SAMPLERS",
    "PRESETS",
    "SPEC_ALIASES",
    "generate",
    "default_dataset",
    "parse_spec",
    "synthetic_dataset",
]

# The split of the embedded default: every interaction kept (no ratings), users >= 5.
SYNTHETIC_SPLIT = SplitParams(threshold=None, min_user=5, min_item=0, seed=98765)

SAMPLERS: tuple[str, ...] = ("gumbel", "sparse")

_CHUNK = 1000  # users per chunk (the Gumbel sampler's random stream depends on it)


@dataclass(frozen=True)
class SyntheticParams:
    """Size and shape of the planted dataset (the defaults are the embedded default).

    n_users, n_items, n_communities : sizes.
    alpha : Dirichlet concentration of user mixtures (small: users focus on few communities).
    zipf_a : Zipf exponent of item popularity.
    activity_median, activity_sigma : log-normal user activity.
    n_min, n_max : clip of user activity (n_max <= n_items).
    seed : generator seed.
    sampler : ``"gumbel"`` (Gumbel top-k over all items, cost users x items; the
        embedded default's) or ``"sparse"`` (i.i.d. draws with repeats discarded, cost
        ~ interactions); the same law, different draws (module docstring).

    Invalid values raise ValueError naming the field and the value.
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
    sampler: str = "gumbel"

    def __post_init__(self) -> None:
        if self.n_max > self.n_items or self.n_min < 1 or self.n_min > self.n_max:
            raise ValueError(
                f"need 1 <= n_min <= n_max <= n_items, got {self.n_min}, {self.n_max}, "
                f"{self.n_items}"
            )
        for name in ("n_users", "n_communities"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("alpha", "activity_median"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v > 0):
                raise ValueError(f"{name} must be a finite number > 0, got {v}")
        for name in ("zipf_a", "activity_sigma"):
            v = getattr(self, name)
            if not (np.isfinite(v) and v >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {v}")
        if self.seed < 0:
            raise ValueError(f"seed must be >= 0, got {self.seed}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"sampler must be one of {', '.join(SAMPLERS)}, got {self.sampler!r}")


def generate(
    params: SyntheticParams = SyntheticParams(),
) -> tuple[Interactions, dict[str, np.ndarray]]:
    """Draw interactions and ground truth (module docstring).

    Memory beyond the output is one chunk of 1000 users: (1000, I) float64 and int64
    arrays for ``"gumbel"``, about 1.5 x the chunk's interactions for ``"sparse"``.
    """
    p = params
    rng = np.random.default_rng(p.seed)
    community = rng.permutation(np.arange(p.n_items) % p.n_communities)  # (I,)
    rank = rng.permutation(p.n_items) + 1
    pop = rank.astype(np.float64) ** (-p.zipf_a)
    pop /= pop.sum()
    comm_mass = np.bincount(community, weights=pop, minlength=p.n_communities)  # (K,)
    mixture = rng.dirichlet(np.full(p.n_communities, p.alpha), size=p.n_users)  # (U, K)
    activity = np.exp(rng.normal(np.log(p.activity_median), p.activity_sigma, size=p.n_users))
    activity = np.clip(np.round(activity), p.n_min, p.n_max).astype(np.int64)  # (U,)
    within = pop / comm_mass[community]  # (I,) q_i: popularity within the item's community
    if p.sampler == "sparse":
        tables = _community_tables(community, within, p.n_communities)
    users, items = [], []
    for start in range(0, p.n_users, _CHUNK):
        th = mixture[start : start + _CHUNK]  # (C, K)
        n = activity[start : start + _CHUNK]  # (C,)
        if p.sampler == "gumbel":
            rows, cols = _gumbel_chunk(rng, th, n, community, within)
        else:
            rows, cols = _sparse_chunk(rng, th, n, community, within, tables)
        users.append(rows + start)
        items.append(cols)
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


def _gumbel_chunk(
    rng: np.random.Generator,
    th: np.ndarray,
    n: np.ndarray,
    community: np.ndarray,
    within: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """(row in chunk, item) of the chunk's users, ``n[r]`` items of row r in key order.

    Keys :math:`\\log(\\theta_{u c_i} q_i) + G_{ui}` for every item; each row's ``n[r]``
    largest, in decreasing order. Only the kept items are copied out, so nothing of the
    (C, I) arrays outlives the call.
    """
    keys = th[:, community]  # (C, I)
    keys *= within[None, :]
    with np.errstate(divide="ignore"):
        np.log(keys, out=keys)
    keys += rng.gumbel(size=keys.shape)
    np.negative(keys, out=keys)
    order = np.argsort(keys, axis=1)[:, : int(n.max())]  # (C, n_max of chunk) view
    take = np.arange(order.shape[1])[None, :] < n[:, None]  # (C, n_max of chunk)
    return np.repeat(np.arange(len(n)), n), order[take]


def _community_tables(
    community: np.ndarray, within: np.ndarray, n_communities: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(members, starts, cdf) for inverse-CDF draws of an item within a community.

    ``members``: items grouped by community; community c owns positions
    ``starts[c]:starts[c+1]``; ``cdf`` at those positions is ``c + F_c`` with F_c the
    cumulative of q over the community's items, ending exactly at c + 1, so a uniform
    w in [0, 1) picks ``searchsorted(cdf, c + w, side="right")``.
    """
    members = np.argsort(community, kind="stable")  # (I,)
    starts = np.searchsorted(community[members], np.arange(n_communities + 1))  # (K+1,)
    cdf = np.empty(len(members))
    for c in range(n_communities):
        lo, hi = starts[c], starts[c + 1]
        if hi > lo:
            f = np.cumsum(within[members[lo:hi]])
            f /= f[-1]
            f[-1] = 1.0
            cdf[lo:hi] = c + f
    return members, starts, cdf


def _iid_draws(
    rng: np.random.Generator,
    cum_theta: np.ndarray,
    rows: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> np.ndarray:
    """One i.i.d. item draw from p(. | u) per entry of ``rows`` (rows of ``cum_theta``).

    ``cum_theta``: cumulative community weights of the chunk's users, zero weight on
    communities without items, so the community drawn always has items; ``last``: each
    row's last community of positive weight (where a uniform rounded up to the total
    lands).
    """
    members, starts, cdf = tables
    last = cum_theta.shape[1] - 1 - np.argmax(np.diff(cum_theta, prepend=0.0)[:, ::-1] > 0, 1)
    v = rng.random(len(rows)) * cum_theta[rows, -1]  # (D,) uniform on [0, sum theta_u)
    comm = np.minimum((cum_theta[rows] <= v[:, None]).sum(axis=1), last[rows])  # (D,)
    pos = np.searchsorted(cdf, comm + rng.random(len(rows)), side="right")
    pos = np.clip(pos, starts[comm], starts[comm + 1] - 1)
    return members[pos]


_ROUNDS = 4  # rounds of i.i.d. draws before the exact Gumbel finish


def _sparse_chunk(
    rng: np.random.Generator,
    th: np.ndarray,
    n: np.ndarray,
    community: np.ndarray,
    within: np.ndarray,
    tables: tuple[np.ndarray, np.ndarray, np.ndarray],
) -> tuple[np.ndarray, np.ndarray]:
    """(row in chunk, item) of the chunk's users by i.i.d. draws with repeats discarded.

    Each user's draws form one stream: round 1 draws ``1.5 n + 4`` per user; a user with
    fewer than n distinct items draws more in the next round (about 1.3 x what it lacks
    over its distinct rate so far), appended to its stream. The first n distinct items of
    the stream, in order of appearance, are a successive sample without replacement from
    p(. | u). After ``_ROUNDS`` rounds the users still short take the rest by Gumbel
    top-k over the items their stream has not drawn (the exact conditional law).
    """
    n_rows, n_items = len(n), len(community)
    _, starts, _ = tables
    has_items = np.diff(starts) > 0  # (K,) communities with items (all when I >= K)
    cum_theta = np.cumsum(th * has_items[None, :], axis=1)  # (C, K)
    done_rows, done_items = [], []
    s_rows = np.zeros(0, dtype=np.int64)  # draws so far of the users not done
    s_items = np.zeros(0, dtype=np.int64)
    todo = np.arange(n_rows)
    budget = n + np.ceil(0.5 * n).astype(np.int64) + 4  # (C,) round-1 draws per user
    for _ in range(_ROUNDS):
        new_rows = np.repeat(todo, budget[todo])
        new_items = _iid_draws(rng, cum_theta, new_rows, tables)
        # each user's stream: earlier draws first (stable sort on the row)
        rows = np.concatenate([s_rows, new_rows])
        order = np.argsort(rows, kind="stable")
        s_rows, s_items = rows[order], np.concatenate([s_items, new_items])[order]
        _, first = np.unique(s_rows * n_items + s_items, return_index=True)
        first.sort()  # first appearances, by row then stream position
        f_rows = s_rows[first]
        pos = np.arange(len(first)) - np.searchsorted(f_rows, f_rows)  # rank in the row
        keep = pos < n[f_rows]
        have = np.bincount(f_rows[keep], minlength=n_rows)  # (C,)
        drawn = np.bincount(s_rows, minlength=n_rows)  # (C,)
        finished = have >= n  # meaningful for the rows in the stream (todo) only
        sel = keep & finished[f_rows]
        done_rows.append(f_rows[sel])
        done_items.append(s_items[first[sel]])
        todo = todo[~finished[todo]]
        if len(todo) == 0:
            break
        left = np.isin(s_rows, todo)
        s_rows, s_items = s_rows[left], s_items[left]
        rate = np.maximum(have[todo] / np.maximum(drawn[todo], 1), 0.02)
        budget[todo] = np.ceil(1.3 * (n[todo] - have[todo]) / rate).astype(np.int64) + 8
    if len(todo):
        rows, items = _gumbel_finish(rng, th, n, community, within, todo, s_rows, s_items)
        done_rows.append(rows)
        done_items.append(items)
    rows = np.concatenate(done_rows)
    order = np.argsort(rows, kind="stable")  # by row; within a row, stream then finish
    return rows[order], np.concatenate(done_items)[order]


def _gumbel_finish(
    rng: np.random.Generator,
    th: np.ndarray,
    n: np.ndarray,
    community: np.ndarray,
    within: np.ndarray,
    todo: np.ndarray,
    s_rows: np.ndarray,
    s_items: np.ndarray,
    block: int = 256,
) -> tuple[np.ndarray, np.ndarray]:
    """The missing items of the ``todo`` rows: Gumbel top-k over the items not yet drawn.

    ``s_rows, s_items``: the streams of the ``todo`` rows (sorted by row); their distinct
    items are the row's first items, in order of first appearance, followed by the
    Gumbel top-(n - distinct) of the other items, in decreasing key order.
    """
    out_rows, out_items = [], []
    for b in range(0, len(todo), block):
        rows = todo[b : b + block]  # (B,)
        keys = th[rows][:, community] * within[None, :]  # (B, I)
        with np.errstate(divide="ignore"):
            np.log(keys, out=keys)
        keys += rng.gumbel(size=keys.shape)
        np.negative(keys, out=keys)
        local = np.searchsorted(rows, s_rows)  # stream entries of this block
        inb = (local < len(rows)) & (rows[np.minimum(local, len(rows) - 1)] == s_rows)
        keys[local[inb], s_items[inb]] = np.nan  # drawn already: sorted last
        order = np.argsort(keys, axis=1)
        bounds = np.searchsorted(s_rows, np.append(rows, rows[-1] + 1))  # (B+1,)
        for j, r in enumerate(rows):
            first = s_items[bounds[j] : bounds[j + 1]]
            _, idx = np.unique(first, return_index=True)
            first = first[np.sort(idx)]
            extra = order[j, : n[r] - len(first)]
            out_rows.append(np.full(n[r], r))
            out_items.append(np.concatenate([first, extra]))
    return np.concatenate(out_rows), np.concatenate(out_items)


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


# --------------------------------------------------------------------------- presets
@dataclass(frozen=True)
class SyntheticPreset:
    """A named synthetic shape: generator parameters and held-out users per split.

    params : the generator's parameters at full size.
    n_heldout : validation users and test users, each, at full size (None: the
        embedded default's 10% + 10%).
    mimics : what the shape follows, in words.
    """

    params: SyntheticParams
    n_heldout: int | None
    mimics: str


PRESETS: dict[str, SyntheticPreset] = {
    "default": SyntheticPreset(SyntheticParams(), None, "the embedded default"),
    "ml-20m": SyntheticPreset(
        SyntheticParams(
            n_users=136_677, n_items=20_108, activity_median=44.6, n_max=1000, sampler="sparse"
        ),
        10_000,
        "MovieLens-20M (Liang et al. 2018): 136,677 users x 20,108 items, 10.0M interactions",
    ),
    "netflix": SyntheticPreset(
        SyntheticParams(
            n_users=463_435, n_items=17_769, activity_median=75.8, n_max=1000, sampler="sparse"
        ),
        40_000,
        "Netflix Prize (Liang et al. 2018): 463,435 users x 17,769 items, 56.9M interactions",
    ),
    "msd": SyntheticPreset(
        SyntheticParams(
            n_users=571_355,
            n_items=41_140,
            activity_median=34.3,
            n_min=20,
            n_max=1000,
            sampler="sparse",
        ),
        50_000,
        "Million Song Dataset (Liang et al. 2018): 571,355 users x 41,140 items, 33.6M "
        "interactions",
    ),
}

# Short names accepted in a spec for SyntheticParams fields.
SPEC_ALIASES: dict[str, str] = {
    "users": "n_users",
    "items": "n_items",
    "communities": "n_communities",
    "median": "activity_median",
    "sigma": "activity_sigma",
    "min": "n_min",
    "max": "n_max",
}

_PARAM_TYPES = {f.name: f.type for f in fields(SyntheticParams)}


def parse_spec(spec: str, *, scale: float = 1.0) -> tuple[str, SyntheticParams, SplitParams]:
    """``(name, params, split)`` of a synthetic spec such as ``"ml-20m,seed=3"``.

    A spec is comma-separated: an optional preset name first (``PRESETS``), then
    ``key=value`` with key a :class:`SyntheticParams` field or an alias (``SPEC_ALIASES``:
    users, items, communities, median, sigma, min, max). Without a preset the keys
    apply to the embedded default's parameters with ``sampler="sparse"`` (give
    ``sampler=gumbel`` for the default's own sampler; the preset ``default`` keeps it).
    ``scale`` multiplies the number of users and the preset's held-out users (not the
    items): ``0.25`` gives a quarter-size set with the same items.

    The split is the embedded default's (every interaction, users >= 5, seed 98765)
    with the preset's held-out users (None: 10% + 10%). The name is
    ``synth-PRESET`` (``synth-custom`` without one) with ``-xSCALE`` when scaled.

    Raises
    ------
    DataError
        An unknown preset or key (with the close matches), a value of the wrong type, a
        scale outside (0, 10], or parameters SyntheticParams refuses; the message names
        the token and the value.
    """
    tokens = [t.strip() for t in spec.split(",") if t.strip()]
    if not tokens:
        raise DataError(f"--synthetic {spec!r}: empty spec; give a preset ({_presets()}) or keys")
    if not (np.isfinite(scale) and 0 < scale <= 10):
        raise DataError(f"synthetic scale must lie in (0, 10], got {scale}")
    preset = None
    if "=" not in tokens[0]:
        preset = tokens.pop(0)
        if preset not in PRESETS:
            raise DataError(
                f"unknown synthetic preset {preset!r}{_close(preset, PRESETS)}; known: {_presets()}"
            )
    if preset is None:
        base, n_heldout = replace(SyntheticParams(), sampler="sparse"), None
    else:
        base, n_heldout = PRESETS[preset].params, PRESETS[preset].n_heldout
    values: dict[str, Any] = {}
    for tok in tokens:
        if "=" not in tok:
            raise DataError(
                f"--synthetic {spec!r}: {tok!r} is not key=value (a preset name comes first)"
            )
        key, raw = (s.strip() for s in tok.split("=", 1))
        name = SPEC_ALIASES.get(key, key)
        if name not in _PARAM_TYPES:
            known = [*SPEC_ALIASES, *_PARAM_TYPES]
            raise DataError(
                f"--synthetic {spec!r}: unknown key {key!r}{_close(key, known)}; known: "
                f"{', '.join(known)}"
            )
        values[name] = _spec_value(spec, key, name, raw)
    n_users = values.get("n_users", base.n_users)
    values["n_users"] = max(1, int(round(n_users * scale)))
    try:
        params = replace(base, **values)
    except ValueError as e:
        raise DataError(f"--synthetic {spec!r}: {e}") from e
    split = SYNTHETIC_SPLIT
    if n_heldout is not None:
        split = replace(split, n_heldout=max(1, int(round(n_heldout * scale))))
    name = f"synth-{preset or 'custom'}" + (f"-x{scale:g}" if scale != 1 else "")
    return name, params, split


def _spec_value(spec: str, key: str, name: str, raw: str) -> Any:
    """``raw`` as the type of SyntheticParams field ``name``, else DataError."""
    kind = _PARAM_TYPES[name]
    try:
        if kind == "int":
            f = float(raw)
            if not f.is_integer():
                raise ValueError
            return int(f)
        if kind == "float":
            return float(raw)
    except ValueError:
        what = "an integer" if kind == "int" else "a number"
        raise DataError(f"--synthetic {spec!r}: {key}={raw!r} must be {what}") from None
    return raw


def _presets() -> str:
    return ", ".join(PRESETS)


def _close(word: str, choices: Any) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def synthetic_dataset(
    spec: str = "default",
    *,
    scale: float = 1.0,
    overrides: Mapping[str, Any] | None = None,
) -> Dataset:
    """A synthetic dataset from a spec (:func:`parse_spec`), split and named.

    ``overrides`` change split parameters by field name, as for :func:`default_dataset`
    (``radius data prepare``'s split options); the manifest records the spec, the scale
    and the preset's defaults as the origin of the others. ``parse_spec("default")``
    gives the embedded default itself (same content hash).
    """
    name, params, split = parse_spec(spec, scale=scale)
    inter, truth = generate(params)
    inter.source.update(spec=spec, scale=scale)
    resolved, origin = resolve_split_params(split, overrides, defaults=name)
    ds = split_interactions(inter, resolved, name=name, origin=origin)
    ds.ground_truth = truth
    return ds
