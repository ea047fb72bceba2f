"""The strong-generalisation split (radius.data.split) on hand-written tiny data."""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from radius.data.dataset import Dataset
from radius.data.split import (
    SPLIT_FIELDS,
    Interactions,
    SplitParams,
    params_origin_rows,
    resolve_split_params,
    strong_generalization_split,
)
from radius.errors import DataError


def _inter(rows, *, path: str = "tiny.csv", **kw) -> Interactions:
    u, i, r = zip(*rows)
    return Interactions(
        np.array(u), np.array(i), np.array(r, dtype=float), source={"path": path}, **kw
    )


def _grid(n_users: int, n_items: int, *, rating: float = 5.0, offset: int = 0) -> list:
    """Every user rates every item (users offset.., items 0..n_items-1)."""
    return [(offset + u, i, rating) for u in range(n_users) for i in range(n_items)]


def _reference_kept(rows, params: SplitParams) -> dict:
    """Independent filter: dedup (max rating), threshold, items then users; user -> items."""
    best: dict = {}
    for u, i, r in rows:
        best[(u, i)] = max(r, best.get((u, i), -np.inf))
    kept = []
    for (u, i), r in best.items():
        if params.threshold is None or (
            r >= params.threshold if params.inclusive else r > params.threshold
        ):
            kept.append((u, i))
    item_n = Counter(i for _, i in kept)
    kept = [(u, i) for u, i in kept if item_n[i] >= params.min_item]
    user_n = Counter(u for u, _ in kept)
    out = defaultdict(set)
    for u, i in kept:
        if user_n[u] >= params.min_user:
            out[str(u)].add(str(i))
    return out


def _rows_of(m, r: int, items: list[str]) -> set[str]:
    return {items[c] for c in m.indices[m.indptr[r] : m.indptr[r + 1]]}


def check_split_invariants(ds: Dataset, kept: dict, params: SplitParams) -> None:
    """The split against an independently filtered user -> items map ``kept``."""
    ids = ds.manifest["id_maps"]
    items = ids["items"]
    train, val, test = ids["train_users"], ids["val_users"], ids["test_users"]
    assert len(set(train) | set(val) | set(test)) == len(train) + len(val) + len(test)
    assert set(items) == set().union(*(kept[u] for u in train))
    for r, u in enumerate(train):
        assert _rows_of(ds.train, r, items) == kept[u]
    counts = ds.manifest["counts"]
    assert counts["users"] == len(kept)
    assert counts["kept_interactions"] == sum(len(v) for v in kept.values())
    dropped = counts["heldout_users_dropped_too_few_items"]
    assert len(kept) - len(train) - len(val) - len(test) == dropped["val"] + dropped["test"]
    for split, users in (("val", val), ("test", test)):
        assert len(users) + dropped[split] == counts["heldout_per_split"]
        tr, te = ds.heldout(split)
        for r, u in enumerate(users):
            a, b = _rows_of(tr, r, items), _rows_of(te, r, items)
            n = len(kept[u] & set(items))
            assert a | b == kept[u] & set(items) and not a & b
            assert len(b) == int(params.test_prop * n) >= 1 and len(a) >= 1
            assert n >= params.min_heldout_items


# ------------------------------------------------------------------ thresholds and filters
def test_threshold_is_exclusive_by_default():
    """Ratings equal to the threshold are dropped unless ``inclusive``."""
    rows = _grid(20, 6) + [(u, 100 + u % 3, 3.5) for u in range(20)]
    excl = strong_generalization_split(_inter(rows), SplitParams(threshold=3.5))
    incl = strong_generalization_split(_inter(rows), SplitParams(threshold=3.5, inclusive=True))
    assert excl.manifest["counts"]["kept_interactions"] == 20 * 6
    assert incl.manifest["counts"]["kept_interactions"] == 20 * 7
    assert set(incl.manifest["id_maps"]["items"]) >= {"100", "101", "102"}
    assert not set(excl.manifest["id_maps"]["items"]) & {"100", "101", "102"}


def test_threshold_none_keeps_every_rating():
    """threshold=None keeps all ratings, even zero and negative ones."""
    rows = _grid(20, 5, rating=-1.0)
    ds = strong_generalization_split(_inter(rows), SplitParams(threshold=None))
    assert ds.manifest["counts"]["kept_interactions"] == 100


def test_items_are_filtered_before_users():
    """A user who loses a rare item falls below min_user and is dropped."""
    rows = _grid(20, 6) + [(99, 0, 5.0), (99, 1, 5.0), (99, 50, 5.0)]  # item 50 only by 99
    params = SplitParams(threshold=None, min_user=3, min_item=2)
    ds = strong_generalization_split(_inter(rows), params)
    ids = ds.manifest["id_maps"]
    assert "99" not in ids["train_users"] + ids["val_users"] + ids["test_users"]
    assert ds.manifest["counts"]["kept_interactions"] == 20 * 6
    check_split_invariants(ds, _reference_kept(rows, params), params)


def test_filter_is_a_single_pass():
    """An item that falls below min_item only after the user filter is kept (reference)."""
    # item 60 is rated by users 98 and 99; user 99 has 2 ratings < min_user=3 and goes.
    rows = _grid(20, 6) + [(98, 0, 5.0), (98, 1, 5.0), (98, 60, 5.0), (99, 60, 5.0), (99, 0, 5)]
    params = SplitParams(threshold=None, min_user=3, min_item=2)
    ds = strong_generalization_split(_inter(rows), params)
    assert ds.manifest["counts"]["kept_interactions"] == 20 * 6 + 3
    check_split_invariants(ds, _reference_kept(rows, params), params)


# ------------------------------------------------------------------ held-out users
def test_heldout_targets_are_int_of_one_fifth():
    """Each held-out user with n items gets int(0.2 n) targets and n - int(0.2 n) fold-in."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(60):
        n = 5 + u % 19
        rows += [(u, int(i), 5.0) for i in rng.choice(40, n, replace=False)]
    rows += _grid(5, 40, offset=1000)  # every item is seen by some user
    params = SplitParams(threshold=None, seed=3)
    ds = strong_generalization_split(_inter(rows), params)
    for split in ("val", "test"):
        tr, te = ds.heldout(split)
        n = np.diff(tr.indptr) + np.diff(te.indptr)
        assert len(n) > 0
        assert np.array_equal(np.diff(te.indptr), [int(0.2 * k) for k in n])
        assert np.array_equal(np.diff(tr.indptr), [k - int(0.2 * k) for k in n])
    check_split_invariants(ds, _reference_kept(rows, params), params)


def test_short_heldout_users_are_dropped_and_counted():
    """Held-out users left with < 5 items (after the item restriction) are dropped and counted."""
    rows = _grid(30, 8)
    rows += [(100 + u, i, 5.0) for u in range(20) for i in range(3)]  # 3 items each
    rows += [(200 + u, i, 5.0) for u in range(10) for i in (0, 1, 2, 3, 500 + u)]  # 4 shared
    params = SplitParams(threshold=None, min_user=3, seed=1)
    ds = strong_generalization_split(_inter(rows), params)
    ids = ds.manifest["id_maps"]
    short = {str(100 + u) for u in range(20)}
    short |= {str(200 + u) for u in range(10) if str(500 + u) not in ids["items"]}
    heldout_short = short - set(ids["train_users"])
    dropped = ds.manifest["counts"]["heldout_users_dropped_too_few_items"]
    assert dropped["val"] + dropped["test"] == len(heldout_short) > 0
    assert not heldout_short & set(ids["val_users"] + ids["test_users"])
    check_split_invariants(ds, _reference_kept(rows, params), params)


def test_fixed_heldout_size_and_fallback():
    """n_heldout is used as given; with heldout_fallback it yields to 10% when larger."""
    rows = _grid(100, 6)
    fixed = strong_generalization_split(_inter(rows), SplitParams(threshold=None, n_heldout=7))
    assert fixed.val_tr.shape[0] == fixed.test_tr.shape[0] == 7
    assert fixed.manifest["counts"]["heldout_rule"] == "n_heldout"
    params = SplitParams(threshold=None, n_heldout=30, heldout_fallback=True)
    fb = strong_generalization_split(_inter(rows), params)
    assert fb.val_tr.shape[0] == fb.test_tr.shape[0] == 10
    assert fb.manifest["counts"]["heldout_rule"].startswith("heldout_frac (fallback")
    small = SplitParams(threshold=None, n_heldout=10, heldout_fallback=True)
    kept = strong_generalization_split(_inter(rows), small)
    assert kept.manifest["counts"]["heldout_rule"] == "n_heldout"


# ------------------------------------------------------------------ determinism
def test_same_seed_same_split_other_seed_other_split():
    """The split is a function of the seed: equal seeds agree, different seeds differ."""
    rows = _grid(50, 12)
    rng = np.random.default_rng(5)
    rows += [(u, int(i), 5.0) for u in range(50, 90) for i in rng.choice(30, 9, replace=False)]
    a = strong_generalization_split(_inter(rows), SplitParams(threshold=None, seed=11))
    b = strong_generalization_split(_inter(rows), SplitParams(threshold=None, seed=11))
    c = strong_generalization_split(_inter(rows), SplitParams(threshold=None, seed=12))
    assert a.hash == b.hash and a.manifest["id_maps"] == b.manifest["id_maps"]
    assert c.hash != a.hash
    assert a.manifest["id_maps"]["val_users"] != c.manifest["id_maps"]["val_users"]


# ------------------------------------------------------------------ duplicates and labels
def test_dedup_keeps_highest_rating_and_counts_rows():
    """Repeated (user, item) rows collapse to the highest rating; raw counts include them."""
    rows = _grid(20, 6, rating=5.0)
    rows += [(0, 0, 1.0), (0, 0, 2.0), (1, 1, 3.0)]  # 3 duplicates of kept pairs
    rows += [(2, 40, 1.0), (2, 40, 4.0)]  # a low rating then a high one: kept by 4.0
    inter = _inter(rows)
    d = inter.deduplicated()
    assert d.stats["duplicates_removed"] == 4 and len(d.users) == len(rows) - 4
    pairs = {(u, i): r for u, i, r in zip(d.users, d.items, d.ratings)}
    assert pairs[(0, 0)] == 5.0 and pairs[(2, 40)] == 4.0
    ds = strong_generalization_split(inter, SplitParams(threshold=3.5))
    counts = ds.manifest["counts"]
    assert counts["duplicates_removed"] == 4
    assert counts["raw_interactions"] == len(rows)
    assert counts["kept_interactions"] == 20 * 6 + 1


@given(
    st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 6), st.integers(1, 5)),
        min_size=1,
        max_size=60,
    )
)
def test_dedup_matches_a_dictionary(rows):
    """deduplicated() keeps exactly max rating per pair, in first-occurrence file order."""
    d = _inter(rows).deduplicated()
    best: dict = {}
    for u, i, r in rows:
        best[(u, i)] = max(r, best.get((u, i), 0))
    got = list(zip(d.users.tolist(), d.items.tolist(), d.ratings.tolist()))
    assert {(u, i): r for u, i, r in got} == best and len(got) == len(best)
    first_row = {}
    for k, (u, i, r) in enumerate(rows):
        if r == best[(u, i)]:
            first_row.setdefault((u, i), k)
    assert [first_row[(u, i)] for u, i, _ in got] == sorted(first_row.values())


def test_labels_appear_in_id_maps():
    """With integer codes plus labels, the manifest's id maps show the raw string ids."""
    rows = _grid(20, 6)
    inter = _inter(
        rows,
        user_labels=np.array([f"user-{k}" for k in range(20)]),
        item_labels=np.array([f"song-{k}" for k in range(6)]),
    )
    ds = strong_generalization_split(inter, SplitParams(threshold=None))
    ids = ds.manifest["id_maps"]
    assert sorted(ids["items"]) == [f"song-{k}" for k in range(6)]
    assert set(ids["train_users"] + ids["val_users"] + ids["test_users"]) <= {
        f"user-{k}" for k in range(20)
    }


# ------------------------------------------------------------------ property
@st.composite
def _rows(draw):
    """A random rating table: density, sizes and a seed drawn by hypothesis."""
    n_users, n_items = draw(st.integers(20, 40)), draw(st.integers(15, 40))
    density = draw(st.floats(0.4, 0.9, allow_nan=False))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    u, i = np.nonzero(rng.random((n_users, n_items)) < density)
    r = rng.integers(1, 6, len(u)).astype(float)
    dup = rng.integers(0, len(u), draw(st.integers(0, 5))) if len(u) else []
    rows = list(zip(u.tolist(), i.tolist(), r.tolist()))
    rows += [(rows[k][0], rows[k][1], float(rng.integers(1, 6))) for k in dup]
    assume(rows)
    return rows


@given(_rows(), st.integers(0, 3), st.integers(1, 5), st.integers(0, 10_000))
def test_split_invariants_hold(rows, min_item, min_user, seed):
    """Users are split into disjoint roles and fold-in + held-out rebuild each user's items."""
    params = SplitParams(threshold=2.5, min_user=min_user, min_item=min_item, seed=seed)
    try:
        ds = strong_generalization_split(_inter(rows), params)
    except DataError as e:  # a clean refusal (too little data): not a case of the property
        refusals = ("cannot give", "no val user", "no test user", "every user", "no interaction")
        assert any(r in str(e) for r in refusals), str(e)
        assume(False)
    check_split_invariants(ds, _reference_kept(rows, params), params)


# ------------------------------------------------------------------ error messages
def test_error_no_rating_above_threshold():
    """Every rating at or below the threshold is an error naming the file and the rule."""
    msg = (
        r"^tiny\.csv: no interaction has rating > 3\.5 "
        r"\(threshold=3\.5 keeps nothing: the ratings lie in \[3\.5, 3\.5\]\)$"
    )
    with pytest.raises(DataError, match=msg):
        strong_generalization_split(_inter(_grid(20, 6, rating=3.5)), SplitParams())
    msg = r"^tiny\.csv: no interaction has rating >= 4\.0 \(threshold=4 keeps nothing"
    with pytest.raises(DataError, match=msg):
        strong_generalization_split(
            _inter(_grid(20, 6, rating=3.0)), SplitParams(threshold=4.0, inclusive=True)
        )


def test_error_every_user_below_min_user():
    """Users all below min_user give an error listing the thresholds."""
    msg = (
        r"^tiny\.csv: every user falls below the thresholds \(min_user=5, min_item=0, "
        r"rating threshold=3\.5\); min_user=5 leaves no user: the most active user has 4 "
        r"interactions on the items kept$"
    )
    with pytest.raises(DataError, match=msg):
        strong_generalization_split(_inter(_grid(30, 4)), SplitParams())


def test_error_too_few_users():
    """Fewer users than the held-out sets need is an error with the numbers."""
    msg = r"^tiny\.csv: 12 users after filtering cannot give 6 validation and 6 test users"
    with pytest.raises(DataError, match=msg):
        strong_generalization_split(_inter(_grid(12, 6)), SplitParams(n_heldout=6))
    with pytest.raises(DataError, match=r"^tiny\.csv: 9 users after filtering cannot give 0"):
        strong_generalization_split(_inter(_grid(9, 6)), SplitParams())


def test_error_no_heldout_user_left():
    """Held-out users all too short after the restriction is an error."""
    rows = [(u, 100 * u + k, 5.0) for u in range(10) for k in range(6)]  # nothing shared
    with pytest.raises(DataError, match=r"^tiny\.csv: no val user has >= 5 items after"):
        strong_generalization_split(_inter(rows), SplitParams(threshold=None, min_user=5))


@pytest.mark.parametrize(
    "kw, msg",
    [
        ({"min_user": -1}, "min_user and min_item must be >= 0, got -1 and 0"),
        ({"n_heldout": 0}, "n_heldout must be >= 1 or None, got 0"),
        ({"heldout_frac": 0.5}, "heldout_frac must lie in (0, 0.5), got 0.5"),
        ({"test_prop": 1.0}, "test_prop must lie in (0, 1), got 1.0"),
        ({"threshold": float("nan")}, "threshold must be a finite number or None, got nan"),
        ({"seed": -1}, "seed must lie in [0, 2**32), got -1"),
        (
            {"min_heldout_items": 4},
            "min_heldout_items=4 with test_prop=0.2 allows held-out users with no target item "
            "(need min_heldout_items >= 5 for this test_prop)",
        ),
    ],
)
def test_split_params_validation(kw, msg):
    """Bad SplitParams raise ValueError with an exact message."""
    with pytest.raises(ValueError) as e:
        SplitParams(**kw)
    assert str(e.value) == msg


def test_interactions_validation():
    """Mismatched lengths, no rows and out-of-range codes are DataErrors."""
    with pytest.raises(DataError, match="^users, items and ratings must have the same length$"):
        Interactions(np.arange(3), np.arange(2), None)
    with pytest.raises(DataError, match=r"^f\.txt: no interactions \(empty file\?\)$"):
        Interactions(np.arange(0), np.arange(0), None, source={"path": "f.txt"})
    with pytest.raises(DataError, match=r"^user codes must lie in \[0, 2\) \(user_labels\)$"):
        Interactions(np.arange(3), np.arange(3), None, user_labels=np.array(["a", "b"]))
    with pytest.raises(DataError, match="^item codes must be integers when item_labels"):
        Interactions(np.arange(2), np.array(["x", "y"]), None, item_labels=np.array(["a"]))


# ------------------------------------------------------------------ parameters given by name
def _scale_rows(n_users: int = 60, n_items: int = 25) -> list:
    """Each user rates each item; ratings cycle 1..5 so every rating value is frequent."""
    return [(u, i, float(1 + (u + i) % 5)) for u in range(n_users) for i in range(n_items)]


def _given(rows, overrides, *, base=SplitParams(threshold=None), defaults="csv"):
    params, origin = resolve_split_params(base, overrides, defaults=defaults)
    return strong_generalization_split(_inter(rows), params, origin=origin)


def test_threshold_inclusive_keeps_the_boundary_strict_drops_it():
    """threshold=4: inclusive keeps ratings 4 and 5, strict keeps only 5."""
    rows = _scale_rows()
    ge = _given(rows, {"threshold": 4, "inclusive": True})
    gt = _given(rows, {"threshold": 4, "inclusive": False})
    assert ge.manifest["counts"]["kept_interactions"] == sum(r >= 4 for *_, r in rows)
    assert gt.manifest["counts"]["kept_interactions"] == sum(r > 4 for *_, r in rows)
    assert sum(r >= 4 for *_, r in rows) == 2 * sum(r > 4 for *_, r in rows) > 0
    assert (ge.manifest["params"]["threshold"], ge.manifest["params"]["inclusive"]) == (4.0, True)
    assert gt.manifest["params"]["inclusive"] is False
    everything = _given(rows, {"threshold": None}, base=SplitParams(threshold=3.5))
    assert everything.manifest["counts"]["kept_interactions"] == len(rows)


def test_heldout_users_as_count_or_fraction():
    """n_heldout gives that many users per held-out split; heldout_frac that fraction."""
    rows = _grid(100, 6)
    count = _given(rows, {"n_heldout": 7})
    assert count.val_tr.shape[0] == count.test_tr.shape[0] == 7
    assert count.train.shape[0] == 100 - 14
    frac = _given(rows, {"heldout_frac": 0.25})
    assert frac.val_tr.shape[0] == frac.test_tr.shape[0] == 25
    assert frac.manifest["counts"]["heldout_rule"] == "heldout_frac"


def test_given_heldout_overrides_a_full_scale_default():
    """On a full-scale default (n_heldout + fallback) a given count or fraction is used as is."""
    full = SplitParams(threshold=None, n_heldout=10_000, heldout_fallback=True)
    rows = _grid(100, 6)
    count = _given(rows, {"n_heldout": 30}, base=full, defaults="ml-20m")
    assert count.val_tr.shape[0] == 30  # no fallback to 10%: the count was asked for
    origin = count.manifest["params_origin"]
    assert origin["given"] == ["n_heldout"] and "heldout_fallback" in origin["implied"]
    frac = _given(rows, {"heldout_frac": 0.2}, base=full, defaults="ml-20m")
    assert frac.val_tr.shape[0] == 20 and frac.manifest["params"]["n_heldout"] is None
    assert set(frac.manifest["params_origin"]["implied"]) == {"n_heldout", "heldout_fallback"}


def test_test_prop_sets_the_target_share_of_each_heldout_user():
    """test_prop=0.5: each held-out user has int(0.5 n) targets and the rest as fold-in."""
    rows = _grid(40, 10)
    ds = _given(rows, {"test_prop": 0.5})
    for split in ("val", "test"):
        tr, te = ds.heldout(split)
        assert (np.diff(te.indptr) == 5).all() and (np.diff(tr.indptr) == 5).all()
    default = _given(rows, {})
    assert (np.diff(default.test_te.indptr) == 2).all()


def test_given_seed_changes_the_split_same_seed_same_split():
    """A given seed is the split's seed: equal seeds agree, another seed differs."""
    rows = _scale_rows(80, 10)
    a, b, c = (_given(rows, {"seed": s}) for s in (3, 3, 4))
    assert a.hash == b.hash and a.manifest["id_maps"] == b.manifest["id_maps"]
    assert a.hash != c.hash
    assert a.manifest["id_maps"]["test_users"] != c.manifest["id_maps"]["test_users"]


def test_origin_records_given_implied_and_defaults():
    """params_origin says which values were given, which followed, whose defaults the rest are."""
    ds = _given(_grid(40, 6), {"seed": 5, "n_heldout": 4}, base=SplitParams(), defaults="ml-1m")
    origin = ds.manifest["params_origin"]
    assert origin["defaults"] == "ml-1m" and origin["given"] == ["n_heldout", "seed"]
    rows = {k: (v, src) for k, v, src in params_origin_rows(ds.manifest)}
    assert set(rows) == set(SPLIT_FIELDS)
    assert rows["seed"] == (5, "given") and rows["threshold"] == (3.5, "default of ml-1m")
    assert rows["heldout_fallback"][1].startswith("implied: n_heldout given")
    direct = strong_generalization_split(_inter(_grid(40, 6)), SplitParams())
    assert direct.manifest["params_origin"]["given"] == list(SPLIT_FIELDS)
    old = {"params": {"seed": 1}}  # a manifest written before origins were recorded
    assert params_origin_rows(old) == [("seed", 1, "not recorded")]


@pytest.mark.parametrize(
    "overrides, msg",
    [
        ({"min_users": 3}, "unknown split parameter 'min_users' (did you mean 'min_user'?)"),
        ({"threshold": 4}, "split parameter threshold=4.0 needs inclusive=True"),
        ({"min_user": 2.5}, "split parameter min_user=2.5: must be an integer"),
        ({"n_heldout": True}, "split parameter n_heldout=True: must be a number, not a bool"),
        ({"inclusive": 1}, "split parameter inclusive=1: must be True or False"),
        ({"test_prop": "0.2"}, "split parameter test_prop='0.2': must be a number"),
        ({"test_prop": 1.5}, "split parameters: test_prop must lie in (0, 1), got 1.5"),
        ({"test_prop": 0.0}, "split parameters: test_prop must lie in (0, 1), got 0.0"),
        ({"heldout_frac": 0.6}, "split parameters: heldout_frac must lie in (0, 0.5), got 0.6"),
        ({"n_heldout": 0}, "split parameters: n_heldout must be >= 1 or None, got 0"),
        ({"min_item": -2}, "split parameters: min_user and min_item must be >= 0, got 5 and -2"),
        ({"seed": 2**32}, "split parameters: seed must lie in [0, 2**32), got 4294967296"),
        (
            {"test_prop": 0.1},
            "split parameters: min_heldout_items=5 with test_prop=0.1 allows held-out users "
            "with no target item (need min_heldout_items >= 10 for this test_prop)",
        ),
    ],
)
def test_resolve_rejects_bad_values_naming_them(overrides, msg):
    """A bad field name, type or value is a DataError (a RadiusError) naming it."""
    with pytest.raises(DataError) as e:
        resolve_split_params(SplitParams(), overrides, defaults="csv")
    assert str(e.value).startswith(msg), str(e.value)


@pytest.mark.parametrize(
    "rows, overrides, msg",
    [
        (
            _scale_rows(),
            {"threshold": 5, "inclusive": False},
            r"^tiny\.csv: no interaction has rating > 5\.0 \(threshold=5 keeps nothing: "
            r"the ratings lie in \[1, 5\]\)$",
        ),
        (
            _scale_rows(),
            {"threshold": 6, "inclusive": True},
            r"^tiny\.csv: no interaction has rating >= 6\.0",
        ),
        (
            _scale_rows(),
            {"min_user": 26},
            r"min_user=26 leaves no user: the most active user has 25 interactions",
        ),
        (
            _scale_rows(),
            {"min_item": 61},
            r"min_item=61 leaves no item: after the every rating rule the most popular item "
            r"has 60 interactions",
        ),
        (
            _scale_rows(),
            {"n_heldout": 30},
            r"^tiny\.csv: 60 users after filtering cannot give 30 validation and 30 test users "
            r"plus training users \(n_heldout=30; every rating",
        ),
        (
            _scale_rows(),
            {"heldout_frac": 0.01},
            r"cannot give 0 validation and 0 test users plus training users "
            r"\(heldout_frac=0\.01 of 60 users",
        ),
        (
            _scale_rows(),
            {"min_heldout_items": 26},
            r"^tiny\.csv: no val user has >= 26 items after restricting to training items "
            r"\(min_heldout_items=26\)$",
        ),
    ],
)
def test_impossible_parameters_are_refused_naming_the_value(rows, overrides, msg):
    """Parameters the data cannot meet give a DataError naming the value and the reason."""
    with pytest.raises(DataError, match=msg):
        _given(rows, overrides)


def test_threshold_given_on_implicit_data_is_refused():
    """A given threshold needs ratings; a format's default threshold on implicit data is moot."""
    u, i = zip(*((u, i) for u in range(30) for i in range(6)))
    implicit = Interactions(np.array(u), np.array(i), None, source={"path": "clicks.csv"})
    params, origin = resolve_split_params(
        SplitParams(), {"threshold": 4, "inclusive": True}, defaults="csv"
    )
    msg = r"^clicks\.csv: threshold=4 given \(rating >= 4\) but the data has no ratings"
    with pytest.raises(DataError, match=msg):
        strong_generalization_split(implicit, params, origin=origin)
    params, origin = resolve_split_params(SplitParams(), {}, defaults="ml-100k")
    ds = strong_generalization_split(implicit, params, origin=origin)
    assert ds.manifest["counts"]["kept_interactions"] == 180


# ------------------------------------------------------------- weak generalisation
from radius.data.split import split_interactions, weak_generalization_split  # noqa: E402


@given(
    counts=st.lists(st.integers(min_value=5, max_value=15), min_size=3, max_size=12),
    seed=st.integers(min_value=0, max_value=2**31),
)
def test_weak_split_partitions_each_users_interactions(counts, seed):
    """Every kept interaction is in exactly one of train / val / test targets (or counted
    as dropped: an item no user trained on); a user's held-out shares are floor(0.1 n)
    (at least 1 while two training items remain); the fold-in rows are the user's
    training rows."""
    rows = [(u, (u + k) % 15, 5.0) for u, n in enumerate(counts) for k in range(n)]
    params = SplitParams(threshold=None, protocol="weak", test_prop=0.1, seed=seed)
    ds = weak_generalization_split(_inter(rows), params)
    items = ds.manifest["id_maps"]["items"]
    users = ds.manifest["id_maps"]["train_users"]
    assert ds.protocol == "weak" and ds.train.shape[0] == len(counts)
    ref = _reference_kept(rows, params)
    got = defaultdict(list)
    for r, u in enumerate(users):
        got[u] += sorted(_rows_of(ds.train, r, items))
    for split in ("val", "test"):
        fold, te = ds.heldout(split)
        for r, u in enumerate(ds.manifest["id_maps"][f"{split}_users"]):
            got[u] += sorted(_rows_of(te, r, items))
            assert _rows_of(fold, r, items) == _rows_of(ds.train, users.index(u), items)
    lost = 0
    for u, kept in ref.items():
        assert sorted(got[u]) == sorted(kept & set(items))  # no interaction twice
        lost += len(kept - set(items))
    assert lost == sum(ds.manifest["counts"]["heldout_dropped_unseen_items"].values())
    if lost == 0:  # every item trained on: each user's test share is exact
        for u, kept in ref.items():
            te_row = ds.manifest["id_maps"]["test_users"].index(u)
            assert ds.test_te[te_row].nnz == max(1, int(0.1 * len(kept)))


def test_weak_split_is_seeded_and_protocol_dispatches():
    """The same seed gives the same matrices; another seed another split;
    split_interactions follows params.protocol."""
    rows = _grid(30, 20)
    a = split_interactions(_inter(rows), SplitParams(threshold=None, protocol="weak"))
    b = split_interactions(_inter(rows), SplitParams(threshold=None, protocol="weak"))
    c = split_interactions(_inter(rows), SplitParams(threshold=None, protocol="weak", seed=1))
    s = split_interactions(_inter(rows), SplitParams(threshold=None))
    assert a.hash == b.hash != c.hash and a.protocol == "weak" and s.protocol == "strong"


def test_weak_protocol_options_resolve_and_refuse():
    """protocol weak implies test_prop 0.1; held-out-user fields with weak and val_prop
    with strong are refused naming the field."""
    p, origin = resolve_split_params(SplitParams(), {"protocol": "weak"}, defaults="csv")
    assert (p.protocol, p.test_prop, p.val_prop) == ("weak", 0.1, 0.1)
    assert origin["implied"]["test_prop"].startswith("protocol weak given")
    with pytest.raises(DataError, match="n_heldout=600 applies to protocol 'strong'"):
        resolve_split_params(SplitParams(), {"protocol": "weak", "n_heldout": 600}, defaults=None)
    with pytest.raises(DataError, match="val_prop=0.2 applies to protocol 'weak'"):
        resolve_split_params(SplitParams(), {"val_prop": 0.2}, defaults=None)
    with pytest.raises(DataError, match=r"val_prop=0.5 \+ test_prop=0.5 must stay below 1"):
        resolve_split_params(
            SplitParams(), {"protocol": "weak", "val_prop": 0.5, "test_prop": 0.5}, defaults=None
        )
    with pytest.raises(DataError, match="protocol must be one of"):
        resolve_split_params(SplitParams(), {"protocol": "weakk"}, defaults=None)
