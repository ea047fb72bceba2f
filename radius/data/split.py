"""Interactions and their splits: Liang et al.'s strong generalisation, and the weak one.

``split_interactions`` dispatches on ``SplitParams.protocol``:

- ``"strong"`` (default, ``strong_generalization_split``): held-out users, see below;
- ``"weak"`` (``weak_generalization_split``, RecBole's and cornac's default): each
  user's interactions are shuffled (seeded) and split ``1 - val_prop - test_prop`` /
  ``val_prop`` / ``test_prop`` (80/10/10) into training, validation and test
  interactions; every user trains, the validation and test users are those with a held-out
  interaction, and their fold-in rows are their training rows (``Dataset`` module doc).

The strong split:

Follows the reference preprocessing of ``dawenl/vae_cf``: keep ratings above a
threshold, drop items below ``min_item`` then users below ``min_user``, permute
users with a seed, hold out validation and test users, restrict the item set to
items seen by training users, and split each held-out user's items 80/20 into
fold-in and held-out targets. Held-out users with fewer than ``min_heldout_items``
(5) items after the restriction are dropped (counted in the manifest), so no
held-out user has an empty target set.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from radius.data.dataset import Dataset
from radius.errors import DataError

__all__ = [
    "Interactions",
    "SplitParams",
    "SPLIT_FIELDS",
    "resolve_split_params",
    "params_origin_rows",
    "strong_generalization_split",
    "weak_generalization_split",
    "split_interactions",
    "PROTOCOLS",
]

PROTOCOLS: tuple[str, ...] = ("strong", "weak")
_STRONG_ONLY = ("n_heldout", "heldout_fallback", "heldout_frac", "min_heldout_items")


@dataclass
class Interactions:
    """Raw interactions after parsing, before filtering.

    ``users``/``items`` hold raw ids (any sortable numpy dtype), ``ratings`` floats
    (or None for implicit data). ``source`` describes where they came from;
    ``stats`` counts what the parser did (e.g. ``duplicates_removed``).

    String ids are best stored as integer codes ``0..n-1`` with ``user_labels`` /
    ``item_labels`` holding the raw id of each code (parsers of string-keyed files do
    this: sorting codes is far cheaper than sorting strings); the manifest's id maps
    then show the labels.
    """

    users: np.ndarray
    items: np.ndarray
    ratings: np.ndarray | None
    source: dict[str, Any] = field(default_factory=dict)
    stats: dict[str, Any] = field(default_factory=dict)
    user_labels: np.ndarray | None = None
    item_labels: np.ndarray | None = None

    def __post_init__(self) -> None:
        self.users = np.asarray(self.users)
        self.items = np.asarray(self.items)
        if self.ratings is not None:
            self.ratings = np.asarray(self.ratings, dtype=np.float64)
        n = len(self.users)
        if len(self.items) != n or (self.ratings is not None and len(self.ratings) != n):
            raise DataError("users, items and ratings must have the same length")
        if n == 0:
            where = self.source.get("path", "input")
            raise DataError(f"{where}: no interactions (empty file?)")
        for what, codes, labels in (
            ("user", self.users, self.user_labels),
            ("item", self.items, self.item_labels),
        ):
            if labels is None:
                continue
            if not np.issubdtype(codes.dtype, np.integer):
                raise DataError(f"{what} codes must be integers when {what}_labels are given")
            if codes.min() < 0 or codes.max() >= len(labels):
                raise DataError(f"{what} codes must lie in [0, {len(labels)}) ({what}_labels)")

    def deduplicated(self) -> Interactions:
        """Keep one row per (user, item): the highest rating; the count goes in stats.

        Among equal ratings the first row in file order is kept; kept rows stay in
        file order. One sort of the (user, item) keys; only rows of repeated keys
        are sorted by rating.
        """
        key = _pair_keys(self.users, self.items)  # (n,) int64, equal iff same (user, item)
        order = np.argsort(key, kind="stable")
        ks = key[order]
        same = ks[1:] == ks[:-1]
        removed = int(same.sum())
        if removed:
            involved = np.zeros(len(key), dtype=bool)  # rows of repeated keys (sorted order)
            involved[1:] |= same
            involved[:-1] |= same
            sub = order[involved]  # file order within each key
            r = self.ratings if self.ratings is not None else np.zeros(len(key))
            sub = sub[np.lexsort((-r[sub], key[sub]))]  # by key, highest rating first
            first = np.ones(len(sub), dtype=bool)
            first[1:] = key[sub][1:] != key[sub][:-1]
            keep = np.sort(np.concatenate([order[~involved], sub[first]]))
            users, items = self.users[keep], self.items[keep]
            ratings = None if self.ratings is None else self.ratings[keep]
        else:
            users, items, ratings = self.users, self.items, self.ratings
        stats = {
            **self.stats,
            "duplicates_removed": int(self.stats.get("duplicates_removed", 0)) + removed,
        }
        return Interactions(
            users,
            items,
            ratings,
            source=self.source,
            stats=stats,
            user_labels=self.user_labels,
            item_labels=self.item_labels,
        )


def _pair_keys(users: np.ndarray, items: np.ndarray) -> np.ndarray:
    """An int64 key per row, equal exactly when (user, item) is equal."""
    if np.issubdtype(users.dtype, np.integer) and np.issubdtype(items.dtype, np.integer):
        u0, u1 = int(users.min()), int(users.max())
        i0, i1 = int(items.min()), int(items.max())
        if (u1 - u0 + 1) * (i1 - i0 + 1) < 2**62:  # direct key, no unique() sorts
            return (users.astype(np.int64) - u0) * (i1 - i0 + 1) + (items.astype(np.int64) - i0)
    _, u_inv = np.unique(users, return_inverse=True)
    i_codes, i_inv = np.unique(items, return_inverse=True)
    return u_inv.ravel().astype(np.int64) * len(i_codes) + i_inv.ravel()


@dataclass(frozen=True)
class SplitParams:
    """Parameters of the split (stored in the manifest).

    threshold : keep ratings ``> threshold`` (or ``>=`` when ``inclusive``); None keeps all.
    inclusive : the comparison with ``threshold``: ``>=`` when True, ``>`` when False.
    min_user, min_item : minimum interactions per user / per item (items filtered first).
    n_heldout : validation and test users each; None uses ``heldout_frac`` of users.
    heldout_fallback : when True and ``n_heldout`` exceeds ``heldout_frac`` of the users
        left after filtering, use ``heldout_frac`` instead (the full-scale sizes of the
        paper then apply only to full-scale data; the manifest records the rule used).
    heldout_frac : fraction of users for validation and for test (0.1 + 0.1 default).
    test_prop : fraction of each held-out user's items held out as targets (0.2); the
        rest, ``1 - test_prop``, is the fold-in part.
    min_heldout_items : held-out users need at least this many items (5).
    seed : seed of the user permutation and the 80/20 split (98765 as in the reference).
    protocol : ``"strong"`` (held-out users, Liang et al.) or ``"weak"`` (held-out
        interactions of every user, RecBole's and cornac's default); module doc.
    val_prop : ``"weak"`` only: share of each user's interactions for validation (0.1);
        ``test_prop`` is then the share for test (0.1 when the protocol is given as weak
        and test_prop is not). The ``n_heldout`` / ``heldout_frac`` /
        ``min_heldout_items`` fields apply to ``"strong"`` only.

    Invalid values raise ValueError naming the field and the value.
    """

    threshold: float | None = 3.5
    inclusive: bool = False
    min_user: int = 5
    min_item: int = 0
    n_heldout: int | None = None
    heldout_fallback: bool = False
    heldout_frac: float = 0.1
    test_prop: float = 0.2
    min_heldout_items: int = 5
    seed: int = 98765
    protocol: str = "strong"
    val_prop: float = 0.1

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {list(PROTOCOLS)}, got {self.protocol!r}")
        if not 0.0 < self.val_prop < 1.0:
            raise ValueError(f"val_prop must lie in (0, 1), got {self.val_prop}")
        if self.protocol == "weak" and self.val_prop + self.test_prop >= 1.0:
            raise ValueError(
                f"val_prop={self.val_prop} + test_prop={self.test_prop} must stay below 1 "
                "(the rest of each user's interactions is the training part)"
            )
        if self.threshold is not None and not np.isfinite(self.threshold):
            raise ValueError(f"threshold must be a finite number or None, got {self.threshold}")
        if self.min_user < 0 or self.min_item < 0:
            raise ValueError(
                f"min_user and min_item must be >= 0, got {self.min_user} and {self.min_item}"
            )
        if self.n_heldout is not None and self.n_heldout < 1:
            raise ValueError(f"n_heldout must be >= 1 or None, got {self.n_heldout}")
        if not 0.0 < self.heldout_frac < 0.5:
            raise ValueError(f"heldout_frac must lie in (0, 0.5), got {self.heldout_frac}")
        if not 0.0 < self.test_prop < 1.0:
            raise ValueError(f"test_prop must lie in (0, 1), got {self.test_prop}")
        if self.protocol == "strong" and (
            self.min_heldout_items < 1 or int(self.test_prop * self.min_heldout_items) < 1
        ):
            need = next(m for m in range(1, 10**6) if int(self.test_prop * m) >= 1)
            raise ValueError(
                f"min_heldout_items={self.min_heldout_items} with test_prop={self.test_prop} "
                "allows held-out users with no target item "
                f"(need min_heldout_items >= {need} for this test_prop)"
            )
        if not 0 <= self.seed < 2**32:
            raise ValueError(f"seed must lie in [0, 2**32), got {self.seed}")


SPLIT_FIELDS: tuple[str, ...] = tuple(SplitParams.__dataclass_fields__)

# The type each field accepts (besides None where the field allows it).
_INT_FIELDS = ("min_user", "min_item", "n_heldout", "min_heldout_items", "seed")
_BOOL_FIELDS = ("inclusive", "heldout_fallback")
_REAL_FIELDS = ("threshold", "heldout_frac", "test_prop", "val_prop")
_STR_FIELDS = ("protocol",)
_NONE_OK = ("threshold", "n_heldout")


def _check_type(field_name: str, value: Any) -> Any:
    """``value`` as the type of ``field_name`` (numpy scalars accepted), else DataError."""
    if value is None and field_name in _NONE_OK:
        return None
    if field_name in _STR_FIELDS:
        if isinstance(value, str):
            return value
        raise DataError(f"split parameter {field_name}={value!r}: must be a string")
    if field_name in _BOOL_FIELDS:
        if isinstance(value, (bool, np.bool_)):
            return bool(value)
        raise DataError(f"split parameter {field_name}={value!r}: must be True or False")
    if isinstance(value, (bool, np.bool_)):
        raise DataError(f"split parameter {field_name}={value!r}: must be a number, not a bool")
    if field_name in _INT_FIELDS:
        if isinstance(value, (int, np.integer)):
            return int(value)
        what = "an integer or None" if field_name in _NONE_OK else "an integer"
        raise DataError(f"split parameter {field_name}={value!r}: must be {what}")
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    what = "a number or None" if field_name in _NONE_OK else "a number"
    raise DataError(f"split parameter {field_name}={value!r}: must be {what}")


def resolve_split_params(
    base: SplitParams,
    overrides: Mapping[str, Any] | None = None,
    *,
    defaults: str | None,
) -> tuple[SplitParams, dict[str, Any]]:
    """The parameters of a split: ``base`` (a format's defaults) with ``overrides``.

    Parameters
    ----------
    base : the defaults, e.g. ``DEFAULT_SPLIT[fmt]``.
    overrides : field -> value for any field of :class:`SplitParams`.
    defaults : name of the defaults (a format, ``"synthetic"``) for the manifest.

    Returns
    -------
    (params, origin) where ``origin = {"defaults": defaults, "given": [fields],
    "implied": {field: reason}}`` is stored as the manifest's ``params_origin``.

    Two fields follow from others when not given themselves, so that an explicit
    choice is never undone by a format default:

    - ``n_heldout`` given: ``heldout_fallback = False`` (the count is used as given);
    - ``heldout_frac`` given without ``n_heldout``: ``n_heldout = None`` and
      ``heldout_fallback = False`` (the fraction is used).

    A ``threshold`` given without ``inclusive`` is an error: ``>=`` and ``>`` differ on
    integer scales, and formats disagree (Netflix ``>= 4``, MovieLens ``> 3.5``).

    ``protocol="weak"`` given without ``test_prop``: ``test_prop = 0.1`` (80/10/10 per
    user). A held-out-user field (``n_heldout``, ``heldout_frac``, ``heldout_fallback``,
    ``min_heldout_items``) given with the weak protocol, or ``val_prop`` with the strong
    one, is an error: it would be ignored.

    Raises
    ------
    DataError
        An unknown field (with a close match), a value of the wrong type or out of
        range; the message names the field and the value.
    """
    given = dict(overrides or {})
    unknown = sorted(set(given) - set(SPLIT_FIELDS))
    if unknown:
        close = difflib.get_close_matches(unknown[0], SPLIT_FIELDS, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise DataError(
            f"unknown split parameter {unknown[0]!r}{hint}; known: {', '.join(SPLIT_FIELDS)}"
        )
    values = {k: _check_type(k, v) for k, v in given.items()}
    if values.get("threshold") is not None and "inclusive" not in values:
        raise DataError(
            f"split parameter threshold={values['threshold']!r} needs inclusive=True (keep "
            "ratings >= threshold) or inclusive=False (keep ratings > threshold)"
        )
    implied: dict[str, str] = {}
    protocol = values.get("protocol", base.protocol)
    if protocol == "weak":
        strong_given = [k for k in _STRONG_ONLY if k in values]
        if strong_given:
            raise DataError(
                f"split parameter {strong_given[0]}={values[strong_given[0]]!r} applies to "
                "protocol 'strong' (held-out users); protocol 'weak' holds out val_prop and "
                "test_prop of every user's interactions"
            )
        if "test_prop" not in values and "protocol" in values:
            values["test_prop"] = 0.1
            implied["test_prop"] = "protocol weak given: 80/10/10 of each user's interactions"
    elif "val_prop" in values:
        raise DataError(
            f"split parameter val_prop={values['val_prop']!r} applies to protocol 'weak'; "
            "protocol 'strong' holds out whole users (n_heldout or heldout_frac)"
        )
    if values.get("n_heldout") is not None and "heldout_fallback" not in values:
        values["heldout_fallback"] = False
        implied["heldout_fallback"] = "n_heldout given: the count is used as given"
    if "heldout_frac" in values and "n_heldout" not in values:
        values["n_heldout"] = None
        implied["n_heldout"] = "heldout_frac given: the fraction is used"
        if "heldout_fallback" not in values:
            values["heldout_fallback"] = False
            implied["heldout_fallback"] = "heldout_frac given: the fraction is used"
    try:
        params = replace(base, **values)
    except ValueError as e:
        raise DataError(f"split parameters: {e}") from e
    origin = {
        "defaults": defaults,
        "given": [k for k in SPLIT_FIELDS if k in given],
        "implied": implied,
    }
    return params, origin


def params_origin_rows(manifest: Mapping[str, Any]) -> list[tuple[str, Any, str]]:
    """(field, value, origin) per split parameter of a manifest, for ``radius data info``.

    The origin is ``"given"``, ``"implied: <reason>"`` or ``"default of <name>"``; a
    manifest written before origins were recorded says ``"not recorded"``.
    """
    params = manifest.get("params") or {}
    origin = manifest.get("params_origin")
    rows = []
    for k, v in params.items():
        if origin is None:
            src = "not recorded"
        elif k in origin.get("given", ()):
            src = "given"
        elif k in origin.get("implied", {}):
            src = f"implied: {origin['implied'][k]}"
        elif origin.get("defaults") is None:
            src = "SplitParams default"
        else:
            src = f"default of {origin['defaults']}"
        rows.append((k, v, src))
    return rows


def _filter_counts(u: np.ndarray, i: np.ndarray, min_user: int, min_item: int) -> np.ndarray:
    """Mask of rows kept: items with >= min_item rows, then users with >= min_user."""
    keep = np.ones(len(u), dtype=bool)
    if min_item > 0:
        _, inv, cnt = np.unique(i, return_inverse=True, return_counts=True)
        keep &= cnt[inv] >= min_item
    if min_user > 0:
        _, inv, cnt = np.unique(u[keep], return_inverse=True, return_counts=True)
        sub = np.flatnonzero(keep)
        keep[sub[cnt[inv] < min_user]] = False
    return keep


def _why_no_user(u: np.ndarray, i: np.ndarray, params: SplitParams) -> str:
    """Why the minimum counts leave no user: the largest counts that remain."""
    head = (
        f"every user falls below the thresholds (min_user={params.min_user}, "
        f"min_item={params.min_item}, rating threshold={params.threshold})"
    )
    _, per_item = np.unique(i, return_counts=True)
    if params.min_item > 0 and per_item.max() < params.min_item:
        return (
            f"{head}; min_item={params.min_item} leaves no item: after the {_rule(params)} "
            f"rule the most popular item has {int(per_item.max())} interactions"
        )
    items_kept = _filter_counts(u, i, 0, params.min_item)
    _, per_user = np.unique(u[items_kept], return_counts=True)
    return (
        f"{head}; min_user={params.min_user} leaves no user: the most active user has "
        f"{int(per_user.max())} interactions on the items kept"
    )


def _names(ids: np.ndarray, labels: np.ndarray | None) -> list[str]:
    """Raw ids as strings (through ``labels`` when ids are codes)."""
    return [str(x) for x in (ids if labels is None else labels[ids]).tolist()]


def _rule(params: SplitParams) -> str:
    """The rating rule in words, e.g. ``rating > 3.5`` or ``every rating``."""
    if params.threshold is None:
        return "every rating"
    return f"rating {'>=' if params.inclusive else '>'} {params.threshold:g}"


def _filtered(
    inter: Interactions,
    params: SplitParams,
    name: str,
    origin: Mapping[str, Any] | None,
) -> tuple[str, dict[str, Any], Interactions, np.ndarray, np.ndarray, int]:
    """Deduplicate, apply the rating rule and the minimum counts (both protocols).

    Returns ``(where, origin, deduplicated interactions, users, items, raw row count)``;
    DataError when nothing is left, naming the value and the reason.
    """
    where = inter.source.get("path", name)
    if origin is None:
        origin = {"defaults": None, "given": list(SPLIT_FIELDS), "implied": {}}
    origin = {
        "defaults": origin.get("defaults"),
        "given": list(origin.get("given", ())),
        "implied": dict(origin.get("implied", {})),
        **{k: v for k, v in origin.items() if k not in ("defaults", "given", "implied")},
    }
    inter = inter.deduplicated()
    u, i, r = inter.users, inter.items, inter.ratings
    n_raw = len(u) + int(inter.stats.get("duplicates_removed", 0))  # rows before dedup
    if params.threshold is not None and r is None and "threshold" in origin["given"]:
        raise DataError(
            f"{where}: threshold={params.threshold:g} given ({_rule(params)}) but the data "
            "has no ratings (implicit interactions); leave the threshold out"
        )
    if params.threshold is not None and r is not None:
        sel = r >= params.threshold if params.inclusive else r > params.threshold
        u, i = u[sel], i[sel]
        if len(u) == 0:
            op = ">=" if params.inclusive else ">"
            raise DataError(
                f"{where}: no interaction has rating {op} {params.threshold} "
                f"(threshold={params.threshold:g} keeps nothing: the ratings lie in "
                f"[{r.min():g}, {r.max():g}])"
            )
    keep = _filter_counts(u, i, params.min_user, params.min_item)
    if not keep.any():
        raise DataError(f"{where}: {_why_no_user(u, i, params)}")
    return where, origin, inter, u[keep], i[keep], n_raw


def split_interactions(
    inter: Interactions,
    params: SplitParams = SplitParams(),
    *,
    name: str = "dataset",
    origin: Mapping[str, Any] | None = None,
) -> Dataset:
    """The split ``params.protocol`` names: strong (held-out users) or weak (held-out
    interactions of every user); see the module doc."""
    fn = weak_generalization_split if params.protocol == "weak" else strong_generalization_split
    return fn(inter, params, name=name, origin=origin)


def strong_generalization_split(
    inter: Interactions,
    params: SplitParams = SplitParams(),
    *,
    name: str = "dataset",
    origin: Mapping[str, Any] | None = None,
) -> Dataset:
    """Filter, split users into train/val/test and fold-in/held-out; see module doc.

    ``origin`` (from :func:`resolve_split_params`) says which parameters were given and
    whose defaults the others are; it is stored as the manifest's ``params_origin``.
    Without it every parameter counts as given by the caller. A threshold that was
    given on data without ratings is an error (a format default threshold is then
    ignored, as before: implicit data has nothing to threshold).

    Raises
    ------
    DataError
        When the parameters cannot be met on this data, naming the value and the reason:
        a threshold above every rating, minimum counts that leave no user, more held-out
        users than users, no held-out user with ``min_heldout_items`` items.
    """
    where, origin, inter, u, i, n_raw = _filtered(inter, params, name, origin)
    uid, u_idx = np.unique(u, return_inverse=True)
    n_users = len(uid)
    rng = np.random.RandomState(params.seed)
    perm = rng.permutation(n_users)
    n_frac = int(params.heldout_frac * n_users)
    n_held = params.n_heldout if params.n_heldout is not None else n_frac
    heldout_rule = "n_heldout" if params.n_heldout is not None else "heldout_frac"
    if params.heldout_fallback and params.n_heldout is not None and params.n_heldout > n_frac:
        n_held, heldout_rule = n_frac, "heldout_frac (fallback: n_heldout > heldout_frac * users)"
    if n_users - 2 * n_held < 1 or n_held < 1:
        asked = (
            f"n_heldout={params.n_heldout}"
            if heldout_rule == "n_heldout"
            else f"heldout_frac={params.heldout_frac:g} of {n_users} users"
        )
        raise DataError(
            f"{where}: {n_users} users after filtering cannot give {n_held} validation and "
            f"{n_held} test users plus training users ({asked}; {_rule(params)}, "
            f"min_user={params.min_user}, min_item={params.min_item})"
        )
    role = np.empty(n_users, dtype=np.int8)  # 0 train, 1 val, 2 test
    role[perm[: n_users - 2 * n_held]] = 0
    role[perm[n_users - 2 * n_held : n_users - n_held]] = 1
    role[perm[n_users - n_held :]] = 2
    row_role = role[u_idx]
    train_items = np.unique(i[row_role == 0])
    n_items = len(train_items)
    in_items = np.isin(i, train_items)
    col = np.full(len(i), -1, dtype=np.int64)
    col[in_items] = np.searchsorted(train_items, i[in_items])

    def matrix(users_sel: np.ndarray, rows_mask: np.ndarray) -> sp.csr_matrix:
        pos = np.full(n_users, -1, dtype=np.int64)
        pos[users_sel] = np.arange(len(users_sel))
        rr = pos[u_idx[rows_mask]]
        return sp.csr_matrix(
            (np.ones(len(rr), dtype=np.float32), (rr, col[rows_mask])),
            shape=(len(users_sel), n_items),
        )

    train_users = np.sort(np.flatnonzero(role == 0))
    train = matrix(train_users, (row_role == 0))
    mats: dict[str, sp.csr_matrix] = {"train": train}
    dropped = {}
    heldout_ids = {}

    def build(rows_l: list, cols_l: list, n_rows: int) -> sp.csr_matrix:
        rr = np.concatenate(rows_l) if rows_l else np.zeros(0, dtype=np.int64)
        cc = np.concatenate(cols_l) if cols_l else np.zeros(0, dtype=np.int64)
        return sp.csr_matrix(
            (np.ones(len(rr), dtype=np.float32), (rr, cc)), shape=(n_rows, n_items)
        )

    for k, split in ((1, "val"), (2, "test")):
        rows = (row_role == k) & in_items
        cnt = np.bincount(u_idx[rows], minlength=n_users)
        users_k = np.flatnonzero((role == k) & (cnt >= params.min_heldout_items))
        dropped[split] = int(np.sum(role == k) - len(users_k))
        full = matrix(users_k, rows & np.isin(u_idx, users_k)).tocsr()
        tr_rows, te_rows, tr_cols, te_cols = [], [], [], []
        for row in range(full.shape[0]):
            items_row = full.indices[full.indptr[row] : full.indptr[row + 1]]
            n = len(items_row)
            idx = np.zeros(n, dtype=bool)
            idx[rng.choice(n, size=int(params.test_prop * n), replace=False)] = True
            tr_cols.append(items_row[~idx])
            te_cols.append(items_row[idx])
            tr_rows.append(np.full((~idx).sum(), row))
            te_rows.append(np.full(idx.sum(), row))
        mats[f"{split}_tr"] = build(tr_rows, tr_cols, full.shape[0])
        mats[f"{split}_te"] = build(te_rows, te_cols, full.shape[0])
        heldout_ids[split] = uid[users_k]
        if full.shape[0] == 0:
            raise DataError(
                f"{where}: no {split} user has >= {params.min_heldout_items} items after "
                f"restricting to training items (min_heldout_items={params.min_heldout_items})"
            )
    manifest = {
        "name": name,
        "protocol": "strong",
        "source": inter.source,
        "params": {k: getattr(params, k) for k in SPLIT_FIELDS},
        "params_origin": origin,
        "counts": {
            "raw_interactions": int(n_raw),
            "duplicates_removed": int(inter.stats.get("duplicates_removed", 0)),
            "kept_interactions": int(len(u)),
            "heldout_per_split": int(n_held),
            "heldout_rule": heldout_rule,
            "users": int(n_users),
            "items": int(n_items),
            "train_users": int(train.shape[0]),
            "val_users": int(mats["val_tr"].shape[0]),
            "test_users": int(mats["test_tr"].shape[0]),
            "heldout_users_dropped_too_few_items": dropped,
            **{k: v for k, v in inter.stats.items() if k != "duplicates_removed"},
        },
        "id_maps": {
            "items": _names(train_items, inter.item_labels),
            "train_users": _names(uid[train_users], inter.user_labels),
            "val_users": _names(heldout_ids["val"], inter.user_labels),
            "test_users": _names(heldout_ids["test"], inter.user_labels),
        },
    }
    return Dataset(**mats, manifest=manifest)


def _weak_counts(n: np.ndarray, val_prop: float, test_prop: float) -> tuple[np.ndarray, ...]:
    """(n_val, n_test) per user of n interactions: floor(prop * n) each, and a part whose
    share is in (0, 1) item gets one item while at least two training items remain (so
    every user with >= 3 interactions has a validation and a test item; the rule RecBole's
    ratio split follows)."""
    n_val = np.floor(val_prop * n).astype(np.int64)
    n_test = np.floor(test_prop * n).astype(np.int64)
    for part, prop in ((n_test, test_prop), (n_val, val_prop)):
        bump = (part == 0) & (prop * n > 0) & (n - n_val - n_test >= 2)
        part[bump] = 1
    return n_val, n_test


def weak_generalization_split(
    inter: Interactions,
    params: SplitParams = SplitParams(protocol="weak", test_prop=0.1),
    *,
    name: str = "dataset",
    origin: Mapping[str, Any] | None = None,
) -> Dataset:
    """Filter, then split every user's interactions into train / validation / test.

    Each user's interactions are ordered by a seeded random key; the first ``n_test``
    are test targets, the next ``n_val`` validation targets, the rest the training row
    (``_weak_counts``: 80/10/10 by default). Items are those of the training part (a
    held-out interaction on an item no user trained on is dropped and counted, as the
    strong split restricts items to training users'). The dataset is built by
    ``Dataset.from_matrices`` with held-out parts aligned with the training rows, so
    the validation and test users are the users with a held-out interaction and their
    fold-in rows are their training rows.

    Raises
    ------
    DataError
        As ``strong_generalization_split`` for the filters; no test interaction at all.
    """
    where, origin, inter, u, i, n_raw = _filtered(inter, params, name, origin)
    uid, u_idx = np.unique(u, return_inverse=True)
    n_users = len(uid)
    rng = np.random.RandomState(params.seed)
    order = np.lexsort((rng.random_sample(len(u)), u_idx))  # by user, random within
    counts = np.bincount(u_idx, minlength=n_users)
    starts = np.concatenate(([0], np.cumsum(counts)[:-1]))
    rank = np.empty(len(u), dtype=np.int64)
    rank[order] = np.arange(len(u)) - starts[u_idx[order]]
    n_val, n_test = _weak_counts(counts, params.val_prop, params.test_prop)
    r_test, r_val = n_test[u_idx], n_test[u_idx] + n_val[u_idx]
    role = np.where(rank < r_test, 2, np.where(rank < r_val, 1, 0))
    train_items = np.unique(i[role == 0])
    n_items = len(train_items)
    seen = np.isin(i, train_items)
    col = np.full(len(i), -1, dtype=np.int64)
    col[seen] = np.searchsorted(train_items, i[seen])

    def aligned(k: int) -> sp.csr_matrix:
        sel = (role == k) & seen
        return sp.csr_matrix(
            (np.ones(int(sel.sum()), dtype=np.float32), (u_idx[sel], col[sel])),
            shape=(n_users, n_items),
        )

    test = aligned(2)
    if test.nnz == 0:
        raise DataError(
            f"{where}: no test interaction (test_prop={params.test_prop:g} of users with "
            f"at most {int(counts.max())} interactions)"
        )
    dropped = {s: int(((role == k) & ~seen).sum()) for s, k in (("val", 1), ("test", 2))}
    ds = Dataset.from_matrices(
        aligned(0),
        heldout={"val": aligned(1), "test": test},
        item_ids=_names(train_items, inter.item_labels),
        user_ids=_names(uid, inter.user_labels),
        name=name,
    )
    ds.manifest.update(
        {
            "source": inter.source,
            "params": {k: getattr(params, k) for k in SPLIT_FIELDS},
            "params_origin": origin,
        }
    )
    ds.manifest["counts"].update(
        {
            "raw_interactions": int(n_raw),
            "duplicates_removed": int(inter.stats.get("duplicates_removed", 0)),
            "kept_interactions": int(len(u)),
            "users": int(n_users),
            "heldout_dropped_unseen_items": dropped,
            **{k: v for k, v in inter.stats.items() if k != "duplicates_removed"},
        }
    )
    return ds
