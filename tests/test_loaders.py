"""Readers of every format on small files, bad inputs, prepare() and load_any()."""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import radius.data.dataset as dataset_mod
import radius.data.loaders as loaders
from radius.data.dataset import Dataset
from radius.data.loaders import (
    DEFAULT_SPLIT,
    FORMATS,
    guess_format,
    load_any,
    prepare,
    read_interactions,
)
from radius.data.split import SplitParams
from radius.errors import DataError, RadiusError
from radius.io import file_sha256


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.encode())
    return path


def _triples(inter) -> list[tuple[str, str, float | None]]:
    """(user, item, rating) with raw ids as strings, in file order."""
    u = inter.users if inter.user_labels is None else inter.user_labels[inter.users]
    i = inter.items if inter.item_labels is None else inter.item_labels[inter.items]
    r = [None] * len(u) if inter.ratings is None else inter.ratings.tolist()
    return [(str(a), str(b), c) for a, b, c in zip(u.tolist(), i.tolist(), r)]


ROWS = [("1", "10", 4.0), ("1", "11", 3.5), ("2", "10", 5.0), ("3", "12", 1.0)]


def _dense_rows(n_users: int = 30, n_items: int = 12, seed: int = 0) -> list[tuple]:
    """Enough users and ratings (4 or 5, a few 2s) for a default split to succeed."""
    rng = np.random.default_rng(seed)
    rows = []
    for u in range(1, n_users + 1):
        for i in rng.choice(np.arange(1, n_items + 1), size=8, replace=False):
            rows.append((u, int(i), float(rng.choice([2, 4, 5], p=[0.1, 0.45, 0.45]))))
    return rows


# ------------------------------------------------------------------ each format
def test_ml100k_udata(tmp_path):
    """u.data: tab-separated user item rating timestamp."""
    f = _write(tmp_path / "u.data", "".join(f"{u}\t{i}\t{r:g}\t881250949\n" for u, i, r in ROWS))
    inter = read_interactions(f)
    assert inter.source["format"] == "ml-100k"
    assert _triples(inter) == ROWS
    assert inter.users.dtype == np.int64 and inter.user_labels is None


def test_ml1m_ratings_dat(tmp_path):
    """ratings.dat: '::'-separated."""
    f = _write(
        tmp_path / "ratings.dat", "".join(f"{u}::{i}::{r:g}::978300760\n" for u, i, r in ROWS)
    )
    assert read_interactions(f).source["format"] == "ml-1m"
    assert _triples(read_interactions(f, "ml-1m")) == ROWS


def test_ml20m_ratings_csv_with_and_without_header(tmp_path):
    """ratings.csv: header userId,movieId,rating,timestamp; a headerless file loses no row."""
    body = "".join(f"{u},{i},{r:g},1112486027\n" for u, i, r in ROWS)
    f = _write(tmp_path / "a" / "ratings.csv", "userId,movieId,rating,timestamp\n" + body)
    inter = read_interactions(f)
    assert inter.source["format"] == "ml-20m" and _triples(inter) == ROWS
    g = _write(tmp_path / "b" / "ratings.csv", body)
    assert _triples(read_interactions(g, "ml-20m")) == ROWS
    assert _triples(read_interactions(tmp_path / "a", "ml-20m")) == ROWS  # a folder


NETFLIX = "1:\n10,4,2005-09-06\n11,3,2005-05-13\n2:\n10,5,2004-01-01\n12,1,2005-12-31\n"
NETFLIX_ROWS = [("10", "1", 4.0), ("11", "1", 3.0), ("10", "2", 5.0), ("12", "2", 1.0)]


def test_netflix_combined_file_and_folders(tmp_path):
    """combined_data_*.txt, a folder of them and a folder of mv_*.txt give the same rows."""
    f = _write(tmp_path / "c" / "combined_data_1.txt", NETFLIX)
    inter = read_interactions(f)
    assert inter.source["format"] == "netflix" and _triples(inter) == NETFLIX_ROWS
    _write(tmp_path / "c" / "combined_data_2.txt", "3:\n10,2,2005-01-01\n")
    assert _triples(read_interactions(tmp_path / "c")) == NETFLIX_ROWS + [("10", "3", 2.0)]
    mv = tmp_path / "nf" / "training_set"
    _write(mv / "mv_0000001.txt", "1:\n10,4,2005-09-06\n11,3,2005-05-13\n")
    _write(mv / "mv_0000002.txt", "2:\r\n10,5,2004-01-01\r\n12,1,2005-12-31")  # CRLF, no final \n
    for path in (tmp_path / "nf", mv):
        inter = read_interactions(path)
        assert inter.source["format"] == "netflix" and _triples(inter) == NETFLIX_ROWS
    assert _triples(read_interactions(mv / "mv_0000002.txt")) == NETFLIX_ROWS[2:]


@pytest.mark.parametrize("block", [1, 9, 23, 64])
def test_small_blocks_give_the_same_rows(tmp_path, monkeypatch, block):
    """Reading in tiny blocks (lines and movies across blocks) changes nothing."""
    big = NETFLIX * 3 + "3:\n" + "".join(f"{u},{1 + u % 5},2005-01-01\n" for u in range(40))
    f = _write(tmp_path / "combined_data_1.txt", big)
    g = _write(tmp_path / "u.data", "".join(f"{u}\t{u % 7}\t{u % 5 + 1}\t1\n" for u in range(50)))
    want_f, want_g = _triples(read_interactions(f)), _triples(read_interactions(g))
    monkeypatch.setattr(loaders, "_BLOCK_SIZE", block)
    assert _triples(read_interactions(f)) == want_f
    assert _triples(read_interactions(g)) == want_g
    mv = tmp_path / "mv"
    for m in range(1, 4):
        _write(mv / f"mv_{m:07d}.txt", f"{m}:\n" + "".join(f"{u},3,2005-01-01\n" for u in range(m)))
    rows = _triples(read_interactions(mv))
    assert rows == [(str(u), str(m), 3.0) for m in range(1, 4) for u in range(m)]


def test_msd_triplets(tmp_path):
    """train_triplets.txt: string ids become codes with labels; play counts are ratings."""
    a, b = "b80344d063b5ccb3212f76538f3d9e43d87dca9e", "85c1f87fea955d09b4bec2e36aee110927aab7b8"
    text = f"{a}\tSOAKIMP12A8C130995\t1\n{a}\tSOAPDEY12A81C210A9\t12\n{b}\tSOAKIMP12A8C130995\t3\n"
    f = _write(tmp_path / "songs.txt", text)
    inter = read_interactions(f)
    assert inter.source["format"] == "msd"
    assert _triples(inter) == [
        (a, "SOAKIMP12A8C130995", 1.0),
        (a, "SOAPDEY12A81C210A9", 12.0),
        (b, "SOAKIMP12A8C130995", 3.0),
    ]
    assert inter.users.dtype == np.int64 and len(inter.user_labels) == 2


@pytest.mark.parametrize("delim", [",", "\t", ";", "|", " "])
@pytest.mark.parametrize("header", [True, False])
@pytest.mark.parametrize("with_rating", [True, False])
def test_generic_csv(tmp_path, delim, header, with_rating):
    """Generic user,item[,rating]: delimiter sniffed, header optional, ids kept as strings."""
    rows = [("alice", "i1", 4.5), ("bob", "i2", 2.0), ("alice", "007", 1.0)]
    lines = [delim.join([u, i] + ([f"{r:g}"] if with_rating else [])) for u, i, r in rows]
    if header:
        lines.insert(0, delim.join(["user", "item"] + (["rating"] if with_rating else [])))
    f = _write(tmp_path / "data.csv", "\n".join(lines) + "\n")
    inter = read_interactions(f)
    assert inter.source["format"] == "csv"
    want = [(u, i, r if with_rating else None) for u, i, r in rows]
    assert _triples(inter) == want


def test_csv_columns_by_name_quotes_and_spaces(tmp_path):
    """A header locates columns by name; quotes and spaces around fields are trimmed."""
    f = _write(tmp_path / "x.csv", 'item;stamp;user;score\n"a";1;"x";1.5\n b ; 2 ; y ; -2e0\n')
    inter = read_interactions(f)
    assert inter.source["columns"] == {"user": 2, "item": 0, "rating": 3}
    assert _triples(inter) == [("x", "a", 1.5), ("y", "b", -2.0)]


def test_recbole_columns_located_by_name(tmp_path):
    """RecBole .inter: typed header, columns in any order, rating optional."""
    text = "item_id:token\ttimestamp:float\tuser_id:token\trating:float\n7\t1\tu1\t4\n8\t2\tu2\t3\n"
    inter = read_interactions(_write(tmp_path / "x.inter", text))
    assert inter.source["format"] == "recbole"
    assert _triples(inter) == [("u1", "7", 4.0), ("u2", "8", 3.0)]
    no_rating = "user_id:token\titem_id:token\nu1\t7\n"
    inter = read_interactions(_write(tmp_path / "d" / "d.inter", no_rating))
    assert inter.ratings is None and _triples(inter) == [("u1", "7", None)]
    assert read_interactions(tmp_path / "d").source["format"] == "recbole"  # a folder
    bad = _write(tmp_path / "e.inter", "uid:token\titem_id:token\nu1\t7\n")
    with pytest.raises(DataError) as e:
        read_interactions(bad)
    assert str(e.value) == (
        f"{bad}:1: RecBole header has no 'user_id' column (found uid:token, item_id:token)"
    )


def test_csv_without_a_delimiter(tmp_path):
    """A one-column file has no user,item delimiter: the error quotes the first line."""
    f = _write(tmp_path / "one.csv", "alice\nbob\n")
    with pytest.raises(DataError) as e:
        read_interactions(f)
    assert str(e.value) == (
        f"{f}:1: cannot find the delimiter (tried tab, comma, semicolon, '|', space) "
        "of a user,item[,rating] line: 'alice'"
    )
    g = _write(tmp_path / "text.csv", "user,item,rating\nu1,i1,5\n")
    assert _triples(read_interactions(g)) == [("u1", "i1", 5.0)]
    h = _write(tmp_path / "noname.csv", "a,b,score of it\nu1,i1,5\nu2,i2,4\n")  # sniffed header
    assert _triples(read_interactions(h)) == [("u1", "i1", 5.0), ("u2", "i2", 4.0)]


@pytest.mark.parametrize(
    "name, text, fmt",
    [
        ("u.data", "1\t2\t3\t4\n", "ml-100k"),
        ("r.txt", "1::2::3::4\n", "ml-1m"),
        ("r.csv", "userId,movieId,rating,timestamp\n1,2,3,4\n", "ml-20m"),
        ("n.txt", "12:\n1,2,2005-01-01\n", "netflix"),
        ("mv_0000012.txt", "12:\n1,2,2005-01-01\n", "netflix"),
        ("train_triplets.txt", "a\tb\t1\n", "msd"),
        ("r.tsv", "user_id:token\titem_id:token\n1\t2\n", "recbole"),
        ("r.tsv", "1\t2\t3\n", "csv"),
    ],
)
def test_auto_format_guess(tmp_path, name, text, fmt):
    """fmt='auto' guesses from name, extension and first line, and records its reason."""
    f = _write(tmp_path / name, text)
    got, reason = guess_format(f)
    assert got == fmt and reason
    inter = read_interactions(f)
    assert inter.source["format"] == fmt and inter.source["format_guess"] == reason


def test_blank_lines_and_crlf(tmp_path):
    """Blank lines are skipped and counted; CRLF is accepted; line numbers stay true."""
    f = _write(tmp_path / "u.data", "\n1\t2\t3\t4\r\n\r\n\n5\t6\t7\t8\r\n9\t1\tx\t0\n")
    with pytest.raises(DataError, match=r"u\.data:6: rating is not a number: 'x'"):
        read_interactions(f)
    g = _write(tmp_path / "v" / "u.data", "\n1\t2\t3\t4\r\n\r\n\n5\t6\t7\t8\r\n")
    inter = read_interactions(g)
    assert _triples(inter) == [("1", "2", 3.0), ("5", "6", 7.0)]
    assert inter.stats == {"rows_read": 2, "blank_lines_skipped": 3}


# ------------------------------------------------------------------ bad input
def test_malformed_line_names_file_line_and_value(tmp_path):
    """A line with the wrong number of fields: file:line, the count and the line."""
    f = _write(tmp_path / "u.data", "1\t2\t3\t4\n1\t2\t3\n")
    with pytest.raises(DataError) as e:
        read_interactions(f)
    assert str(e.value) == f"{f}:2: expected 4 fields separated by tabs, found 3: '1\\t2\\t3'"
    g = _write(tmp_path / "ratings.dat", "1::2::3::4\n1::2::3::4::5\n")
    with pytest.raises(DataError) as e:
        read_interactions(g)
    assert str(e.value) == f"{g}:2: expected 4 fields separated by '::', found 5: '1::2::3::4::5'"


def test_non_numeric_and_non_finite_ratings(tmp_path):
    """A rating that is not a finite number names file:line, the value and the line."""
    f = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n1,2,4,5\n1,3,abc,5\n")
    with pytest.raises(DataError) as e:
        read_interactions(f)
    assert str(e.value) == f"{f}:3: rating is not a number: 'abc' (line '1,3,abc,5')"
    g = _write(tmp_path / "x.csv", "user,item,rating\nu1,i1,nan\n")
    with pytest.raises(DataError, match=r"x\.csv:2: rating is not a finite number: 'nan'"):
        read_interactions(g)
    h = _write(tmp_path / "y.csv", "user,item,rating\nu1,i1,\n")
    with pytest.raises(DataError, match=r"y\.csv:2: rating is not a number: ''"):
        read_interactions(h)


def test_bad_ids(tmp_path):
    """MovieLens ids must be non-negative integers; string ids must not be empty."""
    f = _write(tmp_path / "u.data", "1\t2\t3\t4\n-1\t2\t3\t4\n")
    with pytest.raises(DataError, match=r"u\.data:2: user id is not a non-negative integer: '-1'"):
        read_interactions(f)
    g = _write(tmp_path / "x.csv", "a,b,1\n,c,2\n")
    with pytest.raises(DataError, match=r"x\.csv:2: empty user id: ''"):
        read_interactions(g)


def test_netflix_errors(tmp_path):
    """Netflix: rating before a header, a bad header, a short line; in one file and in mv files."""
    cases = [
        ("10,4,2005-09-06\n", "1: rating line before any 'MOVIEID:' header: '10,4,2005-09-06'"),
        ("1:\n10,4,2005\nx2:\n", "3: movie id is not a non-negative integer: 'x2'"),
        ("1:\n10,4\n", "2: expected 3 fields 'user,rating,date', found 2: '10,4'"),
        ("1,2:\n", "1: expected a movie header 'MOVIEID:': '1,2:'"),
    ]
    for k, (text, msg) in enumerate(cases):
        f = _write(tmp_path / f"combined_data_{k}.txt", text)
        with pytest.raises(DataError) as e:
            read_interactions(f, "netflix")
        assert str(e.value).startswith(f"{f}:{msg}")
    mv = tmp_path / "mv"
    _write(mv / "mv_0000001.txt", "1:\n10,4,2005-09-06\n")
    bad = _write(mv / "mv_0000002.txt", "\n10,4,2005-09-06\n")  # no header of its own
    with pytest.raises(DataError, match=f"^{bad}:2: rating line before any 'MOVIEID:' header"):
        read_interactions(mv)


def test_errors_in_later_blocks_keep_true_line_numbers(tmp_path, monkeypatch):
    """Line numbers count from the file start whatever the block size."""
    monkeypatch.setattr(loaders, "_BLOCK_SIZE", 16)
    f = _write(tmp_path / "u.data", "1\t2\t3\t4\n" * 30 + "1\t2\tq\t4\n")
    with pytest.raises(DataError, match=r"u\.data:31: rating is not a number: 'q'"):
        read_interactions(f)


def test_empty_missing_and_header_only_files(tmp_path):
    """Empty, missing and header-only files are DataErrors naming the file."""
    f = _write(tmp_path / "u.data", "")
    for fmt in ("auto", "ml-100k"):
        with pytest.raises(DataError) as e:
            read_interactions(f, fmt)
        assert str(e.value) == f"{f}: empty file (no interactions)"
    missing = tmp_path / "nope.csv"
    with pytest.raises(DataError) as e:
        read_interactions(missing)
    assert str(e.value) == f"{missing}: no such file or folder"
    h = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n\n")
    with pytest.raises(DataError) as e:
        read_interactions(h)
    assert str(e.value) == f"{h}: no interactions (only a header and blank lines)"
    b = _write(tmp_path / "b" / "u.data", "\n\n")
    with pytest.raises(DataError, match=r"u\.data: empty file"):  # blank only: nothing to guess
        read_interactions(b)
    with pytest.raises(DataError, match=r"u\.data: no interactions \(only blank lines\)$"):
        read_interactions(b, "ml-100k")


def test_unknown_format_lists_the_known_ones(tmp_path):
    """An unknown format is a DataError with a close match and the list of formats."""
    f = _write(tmp_path / "u.data", "1\t2\t3\t4\n")
    with pytest.raises(DataError) as e:
        read_interactions(f, "ml20m")
    assert str(e.value) == (
        "unknown format 'ml20m' (did you mean 'ml-20m'?); known formats: auto, "
        "ml-100k, ml-1m, ml-20m, netflix, msd, csv, recbole"
    )
    with pytest.raises(DataError, match=r"^unknown format 'parquet'; known formats: auto, ml-100k"):
        read_interactions(f, "parquet")
    g = _write(tmp_path / "x.bin", "1\t2\n")
    with pytest.raises(DataError, match=r"x\.bin: cannot guess the format; pass fmt= one of"):
        read_interactions(g)
    with pytest.raises(DataError, match="cannot guess the format of this folder"):
        read_interactions(_write(tmp_path / "empty" / "notes.md", "hi").parent)


def test_every_user_below_threshold(tmp_path):
    """Data whose users all fall below min_user cannot be split (end to end)."""
    f = _write(
        tmp_path / "u.data", "".join(f"{u}\t{i}\t5\t0\n" for u in range(20) for i in range(4))
    )
    with pytest.raises(DataError, match=r"u\.data: every user falls below the thresholds"):
        load_any(f)
    g = _write(
        tmp_path / "v" / "u.data", "".join(f"{u}\t{i}\t3\t0\n" for u in range(20) for i in range(9))
    )
    msg = (
        r"u\.data: no interaction has rating > 3\.5 \(threshold=3\.5 keeps nothing: .* \[3, 3\]\)$"
    )
    with pytest.raises(DataError, match=msg):
        prepare(g, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ------------------------------------------------------------------ defaults, prepare, load_any
def test_default_split_follows_liang_et_al():
    """DEFAULT_SPLIT: thresholds, user/item minima and full-scale held-out sizes of the paper."""
    ml20 = DEFAULT_SPLIT["ml-20m"]
    assert (ml20.threshold, ml20.inclusive, ml20.min_user, ml20.min_item) == (3.5, False, 5, 0)
    assert (ml20.n_heldout, ml20.heldout_fallback) == (10_000, True)
    for k in ("ml-1m", "ml-100k"):
        p = DEFAULT_SPLIT[k]
        assert (p.threshold, p.inclusive, p.min_user, p.n_heldout) == (3.5, False, 5, None)
    nf = DEFAULT_SPLIT["netflix"]
    assert (nf.threshold, nf.inclusive, nf.min_user, nf.n_heldout) == (4.0, True, 5, 40_000)
    msd = DEFAULT_SPLIT["msd"]
    assert (msd.threshold, msd.min_user, msd.min_item, msd.n_heldout) == (None, 20, 200, 50_000)
    for k in ("csv", "recbole"):
        assert DEFAULT_SPLIT[k].threshold is None and DEFAULT_SPLIT[k].n_heldout is None
    assert set(DEFAULT_SPLIT) == set(FORMATS)
    for p in DEFAULT_SPLIT.values():
        assert (p.heldout_frac, p.test_prop, p.min_heldout_items) == (0.1, 0.2, 5)


def _udata(path: Path, rows) -> Path:
    return _write(path, "".join(f"{u}\t{i}\t{r:g}\t0\n" for u, i, r in rows))


def test_prepare_records_source_and_roundtrips(tmp_path):
    """prepare() saves a loadable dataset whose manifest has the source path, sha256, counts."""
    f = _udata(tmp_path / "raw" / "u.data", _dense_rows())
    out = tmp_path / "prepared"
    ds = prepare(f, out)
    man = json.loads((out / "manifest.json").read_text())
    assert man["name"] == "ml-100k"
    assert man["source"]["path"] == str(f) and man["source"]["format"] == "ml-100k"
    assert man["source"]["sha256"] == file_sha256(f)
    assert man["params"]["threshold"] == 3.5 and man["counts"]["raw_interactions"] == 240
    assert man["counts"]["heldout_rule"] == "heldout_frac"
    back = Dataset.load(out)
    assert back.hash == ds.hash == man["hash"]
    assert load_any(out).hash == ds.hash and load_any(str(out)).hash == ds.hash


def test_prepare_netflix_folder_hashes_every_file(tmp_path):
    """A folder of mv_*.txt: ratings >= 4 kept (inclusive); sha256 covers each file's hash."""
    rows = _dense_rows(seed=3)
    by_movie: dict = {}
    for u, i, r in rows:
        by_movie.setdefault(i, []).append(f"{u},{r:g},2005-01-01\n")
    files = [
        _write(tmp_path / "nf" / f"mv_{m:07d}.txt", f"{m}:\n" + "".join(v))
        for m, v in sorted(by_movie.items())
    ]
    ds = prepare(tmp_path / "nf", tmp_path / "out")
    src = ds.manifest["source"]
    assert src["format"] == "netflix" and src["files"] == [str(f) for f in files]
    want = hashlib.sha256("".join(f"{f.name} {file_sha256(f)}\n" for f in files).encode())
    assert src["sha256"] == want.hexdigest()
    assert ds.manifest["params"]["inclusive"] is True
    assert ds.manifest["counts"]["kept_interactions"] == sum(r >= 4 for _, _, r in rows)


def test_full_scale_heldout_falls_back_on_small_data(tmp_path):
    """The ML-20M default (10k held-out users) falls back to 10% + 10% on a small sample."""
    body = "".join(f"{u},{i},{r:g},0\n" for u, i, r in _dense_rows(40))
    f = _write(tmp_path / "ratings.csv", "userId,movieId,rating,timestamp\n" + body)
    ds = prepare(f, tmp_path / "out")
    counts = ds.manifest["counts"]
    assert counts["heldout_rule"].startswith("heldout_frac (fallback")
    assert counts["heldout_per_split"] == int(0.1 * counts["users"])
    assert ds.manifest["params"]["n_heldout"] == 10_000


def test_duplicates_are_counted_end_to_end(tmp_path):
    """Duplicate (user, item) rows are removed once and counted in the saved manifest."""
    rows = _dense_rows()
    dups = [rows[0], rows[5], (rows[7][0], rows[7][1], 1.0)]
    f = _write(tmp_path / "r.csv", "".join(f"u{u},m{i},{r:g}\n" for u, i, r in rows + dups))
    prepare(f, tmp_path / "out", params=SplitParams(threshold=3.5))
    counts = Dataset.load(tmp_path / "out").manifest["counts"]
    assert counts["duplicates_removed"] == 3
    assert counts["raw_interactions"] == counts["rows_read"] == len(rows) + 3
    kept = {(u, i) for u, i, r in rows if r > 3.5}
    assert counts["kept_interactions"] <= len(kept)


def test_prepare_leaves_nothing_on_failure(tmp_path, monkeypatch):
    """A failing read, split or save writes nothing; an existing dataset stays intact."""
    bad = _write(tmp_path / "u.data", "1\t2\t3\t4\nbroken\n")
    out = tmp_path / "data" / "out"
    with pytest.raises(DataError, match=r"u\.data:2: expected 4 fields"):
        prepare(bad, out)
    assert not out.exists()
    good = _udata(tmp_path / "g" / "u.data", _dense_rows())
    calls = {"n": 0}
    real = dataset_mod.sp.save_npz

    def flaky(*a, **k):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError("disk full")
        return real(*a, **k)

    monkeypatch.setattr(dataset_mod.sp, "save_npz", flaky)
    with pytest.raises(OSError, match="disk full"):
        prepare(good, out)
    assert not out.exists()
    assert list(out.parent.iterdir()) == []  # no temporary folder left behind
    monkeypatch.setattr(dataset_mod.sp, "save_npz", real)
    first = prepare(good, out)
    before = sorted((p.name, p.read_bytes()) for p in out.iterdir())
    with pytest.raises(DataError):
        prepare(bad, out)
    calls["n"] = 0
    monkeypatch.setattr(dataset_mod.sp, "save_npz", flaky)
    with pytest.raises(OSError):
        prepare(good, out, params=SplitParams(threshold=3.5, seed=1))
    assert sorted((p.name, p.read_bytes()) for p in out.iterdir()) == before
    assert Dataset.load(out).hash == first.hash
    assert sorted(p.name for p in out.parent.iterdir()) == ["out"]


def test_load_any_specs(tmp_path):
    """load_any: 'default'/'synthetic', a prepared folder, a raw file (in memory), errors."""
    f = _udata(tmp_path / "u.data", _dense_rows())
    before = sorted(tmp_path.iterdir())
    ds = load_any(f)
    assert ds.manifest["source"]["format"] == "ml-100k" and ds.name == "ml-100k"
    assert sorted(tmp_path.iterdir()) == before  # nothing saved
    assert load_any(str(f)).hash == ds.hash
    prepared = prepare(f, tmp_path / "p")
    assert load_any(tmp_path / "p").hash == prepared.hash == ds.hash
    missing = tmp_path / "none"
    with pytest.raises(DataError) as e:
        load_any(missing)
    assert str(e.value) == (
        f"{missing}: no such file or folder (expected 'default', 'synthetic', "
        "a prepared folder or a raw data file)"
    )
    junk = _write(tmp_path / "junk" / "notes.md", "x").parent
    with pytest.raises(DataError, match=r"junk: not a prepared dataset \(no manifest\.json\) and"):
        load_any(junk)


def test_load_any_default_is_the_synthetic_dataset():
    """'default' and 'synthetic' both give the embedded synthetic dataset."""
    a, b = load_any("default"), load_any("synthetic")
    assert a.hash == b.hash and a.name == "synthetic" and a.ground_truth is not None


# ------------------------------------------------------------------ parser properties
_token = st.text(alphabet="abcxyz0123456789_-.", min_size=1, max_size=12)


@given(
    st.lists(
        st.tuples(_token, _token, st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False)),
        min_size=1,
        max_size=40,
    ),
    st.sampled_from([",", "\t", ";"]),
    st.integers(1, 80),
)
def test_csv_agrees_with_the_csv_module(tmp_path_factory, rows, delim, block):
    """The vectorised reader gives the rows Python's csv module + float() give, any block size."""
    path = tmp_path_factory.mktemp("csv") / "data.csv"
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh, delimiter=delim, lineterminator="\n")
        w.writerow(["user", "item", "rating"])
        w.writerows([(u, i, repr(r)) for u, i, r in rows])
    with open(path, newline="") as fh:
        ref = [(u, i, float(r)) for u, i, r in list(csv.reader(fh, delimiter=delim))[1:]]
    old = loaders._BLOCK_SIZE
    loaders._BLOCK_SIZE = block
    try:
        got = _triples(read_interactions(path, "csv"))
    finally:
        loaders._BLOCK_SIZE = old
    assert got == ref


@given(st.lists(st.from_regex(r"\A[0-9]{1,8}(\.[0-9]{1,7})?\Z"), min_size=1, max_size=50))
def test_decimal_fast_path_matches_float(texts):
    """Plain decimals decode to exactly the double float() gives."""
    blob = "".join(t + "\n" for t in texts).encode()
    buf = np.frombuffer(blob, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    starts = np.concatenate(([0], ends[:-1] + 1))
    got, odd = loaders._parse_decimal(buf, starts, ends)
    assert not odd.any()
    assert got.tolist() == [float(t) for t in texts]


# ------------------------------------------------------------------ split options (API and CLI)
def _ratings_csv(path: Path, n_users: int, n_items: int = 10, seed: int = 0) -> Path:
    """A user's own ratings file: integer ratings 1-5, a header, string ids."""
    rng = np.random.default_rng(seed)
    lines = ["user,item,rating\n"]
    for u in range(n_users):
        for i in rng.choice(n_items + 5, size=n_items, replace=False):
            lines.append(f"u{u},m{i},{int(rng.integers(1, 6))}\n")
    return _write(path, "".join(lines))


def test_prepare_applies_given_split_values_and_records_them(tmp_path):
    """prepare(split=...) uses the given values, keeps the format's others, records both."""
    f = _ratings_csv(tmp_path / "raw" / "r.csv", 200)
    out = tmp_path / "out"
    given = {"threshold": 3, "inclusive": True, "n_heldout": 20, "test_prop": 0.25, "seed": 7}
    ds = prepare(f, out, split=given)
    man = json.loads((out / "manifest.json").read_text())
    params = man["params"]
    assert {k: params[k] for k in given} == given
    assert params["min_user"] == DEFAULT_SPLIT["csv"].min_user
    assert params["heldout_fallback"] is False
    assert man["params_origin"] == {
        "defaults": "csv",
        "given": ["threshold", "inclusive", "n_heldout", "test_prop", "seed"],
        "implied": {"heldout_fallback": "n_heldout given: the count is used as given"},
    }
    counts = man["counts"]
    assert counts["heldout_per_split"] == 20 and counts["heldout_rule"] == "n_heldout"
    rows = list(csv.reader(f.open()))[1:]
    high = Counter(u for u, _, r in rows if int(r) >= 3)  # no duplicates, no item minimum
    assert counts["kept_interactions"] == sum(n for n in high.values() if n >= 5)
    assert Dataset.load(out).manifest["params_origin"] == man["params_origin"]
    assert ds.hash == man["hash"]


_IMPOSSIBLE = [
    ({"n_heldout": 100}, r"200 users after filtering cannot give 100 validation and 100 test"),
    ({"threshold": 5, "inclusive": False}, r"no interaction has rating > 5\.0 \(threshold=5"),
    ({"min_user": 11}, r"min_user=11 leaves no user: the most active user has 10"),
    ({"min_item": 1000}, r"min_item=1000 leaves no item"),
    ({"test_prop": 1.0}, r"test_prop must lie in \(0, 1\), got 1\.0"),
    ({"test_prop": -0.2}, r"test_prop must lie in \(0, 1\), got -0\.2"),
    ({"heldout_frac": 0.5}, r"heldout_frac must lie in \(0, 0\.5\), got 0\.5"),
    ({"min_heldout_items": 11}, r"no val user has >= 11 items"),
    ({"threshold": 4}, r"threshold=4\.0 needs inclusive=True"),
    ({"min_rating": 4}, r"unknown split parameter 'min_rating'"),
]


@pytest.mark.parametrize("split, msg", _IMPOSSIBLE)
def test_prepare_refuses_impossible_split_and_writes_nothing(tmp_path, split, msg):
    """Values the data cannot meet: a RadiusError naming the value; the folder stays empty."""
    f = _ratings_csv(tmp_path / "raw" / "r.csv", 200)
    work = tmp_path / "work"
    work.mkdir()
    with pytest.raises(RadiusError, match=msg):
        prepare(f, work / "out", split=split)
    assert list(work.iterdir()) == []


def test_load_any_split_on_raw_file_and_refusal_on_prepared(tmp_path):
    """load_any(split=...) splits a raw file in memory; a prepared folder cannot be re-split."""
    f = _ratings_csv(tmp_path / "r.csv", 100)
    ds = load_any(f, split={"n_heldout": 5})
    assert (
        ds.val_tr.shape[0] + ds.manifest["counts"]["heldout_users_dropped_too_few_items"]["val"]
        == 5
    )
    prepare(f, tmp_path / "p")
    with pytest.raises(DataError, match=r"p: a prepared dataset is already split; .* n_heldout"):
        load_any(tmp_path / "p", split={"n_heldout": 5})


def test_default_hashes_unchanged():
    """The embedded default keeps its content hash (committed figures and cached models)."""
    ds = load_any("default")
    assert ds.hash == "5d8dc4b5b5e078ed"
    assert ds.manifest["params_origin"] == {"defaults": "synthetic", "given": [], "implied": {}}


def _cli(argv: list[str]) -> int:
    from radius.cli import main

    try:
        return main(argv)
    except SystemExit as e:  # argparse usage errors
        return int(e.code)


def test_cli_prepare_liang_protocol_on_own_file(tmp_path, capsys):
    """The README example: ratings >= 4 of a 1-5 scale, 600 validation + 600 test users."""
    f = _ratings_csv(tmp_path / "ratings.csv", 2000, n_items=20)
    out = tmp_path / "prepared"
    argv = ["data", "prepare", str(f), "--format", "csv", "--min-rating", "4"]
    assert _cli([*argv, "--heldout-users", "600", "--out", str(out)]) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert (man["params"]["threshold"], man["params"]["inclusive"]) == (4.0, True)
    assert man["params"]["n_heldout"] == 600 and man["counts"]["heldout_rule"] == "n_heldout"
    dropped = man["counts"]["heldout_users_dropped_too_few_items"]
    assert man["counts"]["val_users"] + dropped["val"] == 600
    assert man["counts"]["test_users"] + dropped["test"] == 600
    rows = list(csv.reader(f.open()))[1:]
    assert man["counts"]["kept_interactions"] <= sum(int(r) >= 4 for *_, r in rows)
    capsys.readouterr()
    info_json = tmp_path / "info.json"
    assert _cli(["data", "info", str(out), "--json", str(info_json)]) == 0
    text = capsys.readouterr().out
    assert re.search(r"threshold\s+4\.0\s+given", text)
    assert re.search(r"inclusive\s+True\s+given", text)
    assert re.search(r"n_heldout\s+600\s+given", text)
    assert re.search(r"min_user\s+5\s+default of csv", text)
    assert re.search(r"seed\s+98765\s+default of csv", text)
    info = json.loads(info_json.read_text())
    assert info["params"] == man["params"] and info["params_origin"] == man["params_origin"]


def test_cli_prepare_options_map_to_the_split(tmp_path):
    """Each option sets its parameter: strict threshold, fraction, target share, seed, minima."""
    f = _ratings_csv(tmp_path / "r.csv", 300)
    argv = [
        "data", "prepare", str(f), "--rating-above", "2", "--heldout-users", "0.2",
        "--test-prop", "0.5", "--min-user", "3", "--min-item", "2",
        "--min-heldout-items", "4", "--split-seed", "11", "--out", str(tmp_path / "a"),
    ]  # fmt: skip
    assert _cli(argv) == 0
    man = json.loads((tmp_path / "a" / "manifest.json").read_text())
    want = {
        "threshold": 2.0, "inclusive": False, "n_heldout": None, "heldout_frac": 0.2,
        "heldout_fallback": False, "test_prop": 0.5, "min_user": 3, "min_item": 2,
        "min_heldout_items": 4, "seed": 11, "protocol": "strong", "val_prop": 0.1,
    }  # fmt: skip
    assert man["params"] == want
    assert man["counts"]["heldout_per_split"] == int(0.2 * man["counts"]["users"])
    ds = Dataset.load(tmp_path / "a")
    n = np.diff(ds.test_tr.indptr) + np.diff(ds.test_te.indptr)
    assert (np.diff(ds.test_te.indptr) == (0.5 * n).astype(int)).all()
    same = [*argv[:-1], str(tmp_path / "b")]
    other = [*argv[:-3], "12", "--out", str(tmp_path / "c")]
    assert _cli(same) == 0 and _cli(other) == 0
    assert Dataset.load(tmp_path / "b").hash == ds.hash
    assert Dataset.load(tmp_path / "c").hash != ds.hash
    assert _cli([*argv[:3], "--all-ratings", "--out", str(tmp_path / "d")]) == 0
    all_r = json.loads((tmp_path / "d" / "manifest.json").read_text())
    assert all_r["params"]["threshold"] is None and all_r["params_origin"]["given"] == ["threshold"]


@pytest.mark.parametrize(
    "options, msg",
    [
        (["--heldout-users", "200"], "200 users after filtering cannot give 200 validation"),
        (["--min-rating", "6"], "no interaction has rating >= 6.0 (threshold=6 keeps nothing"),
        (["--min-user", "50"], "min_user=50 leaves no user"),
        (["--test-prop", "1"], "argument --test-prop/--target-prop: must lie in (0, 1), got 1"),
        (["--test-prop", "0"], "must lie in (0, 1), got 0"),
        (["--heldout-users", "0.5"], "argument --heldout-users: must be a count of users"),
        (["--heldout-users", "0"], "a count of users must be >= 1, got 0"),
        (["--min-rating", "4", "--rating-above", "3"], "not allowed with argument --min-rating"),
        (["--min-user", "-1"], "argument --min-user: must be >= 0, got -1"),
        (["--min-rating", "inf"], "argument --min-rating: not a finite number: 'inf'"),
        (["--test-prop", "0.1"], "min_heldout_items=5 with test_prop=0.1 allows held-out"),
    ],
)
def test_cli_prepare_refuses_impossible_options(tmp_path, capsys, options, msg):
    """Exit 2 with a message naming the value and the reason; nothing is written."""
    f = _ratings_csv(tmp_path / "raw" / "r.csv", 200)
    work = tmp_path / "work"
    work.mkdir()
    assert _cli(["data", "prepare", str(f), "--out", str(work / "out"), *options]) == 2
    assert msg in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_cli_min_rating_on_implicit_data_is_refused(tmp_path, capsys):
    """A threshold given for a file without ratings: exit 2, nothing written."""
    f = _write(tmp_path / "clicks.csv", "".join(f"{u},{i}\n" for u in range(40) for i in range(8)))
    assert _cli(["data", "prepare", str(f), "--min-rating", "4", "--out", str(tmp_path / "o")]) == 2
    assert "threshold=4 given (rating >= 4) but the data has no ratings" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    assert _cli(["data", "prepare", str(f), "--out", str(tmp_path / "o")]) == 0


# ------------------------------------------------------------- no silent defaults
def _inter_file(path: Path, n_users: int = 40, n_items: int = 12) -> Path:
    rng = np.random.default_rng(0)
    lines = ["user_id:token\titem_id:token\trating:float\ttimestamp:float"]
    for u in range(n_users):
        for i in rng.choice(n_items, size=8, replace=False):
            lines.append(f"{u}\t{i}\t{int(rng.integers(1, 6))}\t0")
    path.write_text("\n".join(lines) + "\n")
    return path


def test_defaults_chosen_by_file_name_are_printed_and_recorded(tmp_path, capsys):
    """ml-100k.inter gets ML-100k's rating rule because of its name: stderr says so with
    the option that turns it off, and the manifest records it; with the rule given (and
    the protocol), nothing guessed is left to report."""
    f = _inter_file(tmp_path / "ml-100k.inter")
    ds = load_any(f)
    err = capsys.readouterr().err
    assert "read as format 'recbole' ('.inter' extension" in err
    assert (
        "keep ratings > 3.5, by the ml-100k defaults (the file is named ml-100k.inter); off: "
        "split={'threshold': None} / --all-ratings keeps every rating" in err
    )
    assert "protocol 'strong' (Liang et al.)" in err and "--protocol weak" in err
    rules = [n["rule"] for n in ds.manifest["defaults_applied"]]
    assert rules == [
        "keep ratings > 3.5",
        "keep users with >= 5 interactions",
        "protocol 'strong' (Liang et al.): whole users held out, 10% + 10%",
    ]
    assert ds.manifest["source"]["dataset_guess"] == "the file is named ml-100k.inter"
    given = load_any(f, split={"threshold": None, "min_user": 5, "protocol": "weak"}, fmt="recbole")
    assert given.manifest["defaults_applied"] == [] and given.protocol == "weak"
    assert capsys.readouterr().err == ""  # the format was given too: nothing guessed
    # control: the same file under another name has no ML-100k rule
    other = _inter_file(tmp_path / "mine.inter")
    assert [n["rule"] for n in load_any(other).manifest["defaults_applied"]] == [
        "keep users with >= 5 interactions",
        "protocol 'strong' (Liang et al.): whole users held out, 10% + 10%",
    ]


def test_prepared_folder_refuses_a_format(tmp_path):
    """A prepared folder is already read: a format for it is an error naming it."""
    ds = load_any(_inter_file(tmp_path / "x.inter"))
    ds.save(tmp_path / "prep")
    with pytest.raises(DataError, match="a prepared dataset has no format to choose"):
        load_any(tmp_path / "prep", fmt="csv")


def test_cli_prepare_weak_protocol(tmp_path):
    """`data prepare --protocol weak --val-prop 0.2` writes a weak split with those shares;
    --val-prop with the strong protocol exits 2 naming it."""
    f = _ratings_csv(tmp_path / "r.csv", 60)
    out = tmp_path / "w"
    argv = ["data", "prepare", str(f), "--protocol", "weak", "--val-prop", "0.2", "--out", str(out)]
    assert _cli(argv) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["protocol"] == "weak" and man["params"]["val_prop"] == 0.2
    assert man["params"]["test_prop"] == 0.1
    bad = ["data", "prepare", str(f), "--val-prop", "0.2", "--out", str(tmp_path / "s")]
    assert _cli(bad) == 2 and not (tmp_path / "s").exists()
