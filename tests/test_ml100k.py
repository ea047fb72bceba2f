"""MovieLens-100k from the recbole 1.2.1 wheel: finding, extracting, real counts, the split.

Tests that need the wheel FAIL when it is missing under CI=true (.ci/run downloads it
into .cache/ first) and are skipped otherwise.
"""

from __future__ import annotations

import csv
import os
import subprocess
import zipfile
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import pytest

import radius.data.ml100k as ml100k
from radius.data.dataset import Dataset
from radius.data.loaders import DEFAULT_SPLIT, prepare, read_interactions
from radius.data.ml100k import (
    ENV_VAR,
    WHEEL_NAME,
    extract_ml100k,
    fetch_ml100k_wheel,
    find_ml100k_wheel,
)
from radius.errors import DataError


@pytest.fixture(scope="module")
def wheel() -> Path:
    found = find_ml100k_wheel()
    if found is None:
        where = ", ".join(str(p) for p in ml100k.wheel_candidates())
        msg = f"{WHEEL_NAME} not found (looked in {where}); run `radius data fetch-ml100k`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    return found


@pytest.fixture(scope="module")
def inter_file(wheel, tmp_path_factory) -> Path:
    return extract_ml100k(wheel, tmp_path_factory.mktemp("ml100k") / "ml-100k.inter")


def _reference(path: Path) -> list[tuple[str, str, float]]:
    """The .inter rows by Python's csv module (independent of the loader)."""
    with open(path, newline="") as fh:
        rows = list(csv.reader(fh, delimiter="\t"))
    assert rows[0] == ["user_id:token", "item_id:token", "rating:float", "timestamp:float"]
    return [(u, i, float(r)) for u, i, r, _ in rows[1:]]


def test_raw_counts(inter_file):
    """ML-100k has 100,000 ratings of 943 users on 1,682 movies, ratings 1..5, no duplicate."""
    inter = read_interactions(inter_file)
    assert inter.source["format"] == "recbole" and inter.source["dataset"] == "ml-100k"
    assert len(inter.users) == 100_000 and inter.stats["rows_read"] == 100_000
    assert len(np.unique(inter.users)) == len(inter.user_labels) == 943
    assert len(np.unique(inter.items)) == len(inter.item_labels) == 1682
    assert sorted(np.unique(inter.ratings).tolist()) == [1.0, 2.0, 3.0, 4.0, 5.0]
    got = list(
        zip(
            inter.user_labels[inter.users].tolist(),
            inter.item_labels[inter.items].tolist(),
            inter.ratings.tolist(),
        )
    )
    assert got == _reference(inter_file)
    assert inter.deduplicated().stats["duplicates_removed"] == 0


def test_split_counts_are_consistent(inter_file, tmp_path):
    """Ratings > 3.5, users >= 5: the prepared split matches an independent filter."""
    params = DEFAULT_SPLIT["ml-100k"]
    ds = prepare(inter_file, tmp_path / "ml100k")  # ml-100k.inter gets the ml-100k default
    assert ds.manifest["params"]["threshold"] == 3.5 and ds.name == "ml-100k"
    rows = _reference(inter_file)
    high = [(u, i) for u, i, r in rows if r > 3.5]
    assert len(high) == 55_375  # 34,174 fours + 21,201 fives
    n_u = Counter(u for u, _ in high)
    kept = defaultdict(set)
    for u, i in high:
        if n_u[u] >= 5:
            kept[u].add(i)
    counts = ds.manifest["counts"]
    assert counts["raw_interactions"] == 100_000 and counts["duplicates_removed"] == 0
    assert counts["kept_interactions"] == sum(len(v) for v in kept.values())
    assert counts["users"] == len(kept)
    ids = ds.manifest["id_maps"]
    train, val, test = ids["train_users"], ids["val_users"], ids["test_users"]
    n_held = int(0.1 * len(kept))
    assert len(train) == len(kept) - 2 * n_held
    assert len(val) + counts["heldout_users_dropped_too_few_items"]["val"] == n_held
    assert len(test) + counts["heldout_users_dropped_too_few_items"]["test"] == n_held
    assert not set(train) & set(val) and not set(train) & set(test) and not set(val) & set(test)
    items = ids["items"]
    assert set(items) == set().union(*(kept[u] for u in train))
    assert ds.train.nnz == sum(len(kept[u]) for u in train)
    item_set = set(items)
    for split, users in (("val", val), ("test", test)):
        tr, te = ds.heldout(split)
        for r, u in enumerate(users):
            a = {items[c] for c in tr.indices[tr.indptr[r] : tr.indptr[r + 1]]}
            b = {items[c] for c in te.indices[te.indptr[r] : te.indptr[r + 1]]}
            assert a and b and not a & b
            assert a | b == kept[u] & item_set
            assert len(b) == int(0.2 * len(kept[u] & item_set))
    assert Dataset.load(tmp_path / "ml100k").hash == ds.hash
    assert ds.manifest["source"]["sha256"] == ml100k.INTER_SHA256
    assert DEFAULT_SPLIT["ml-100k"] == params


def test_extract_is_atomic_and_checked(wheel, tmp_path):
    """Extraction writes the exact file (pinned sha256) and leaves no temporary file."""
    out = extract_ml100k(wheel, tmp_path / "new" / "ml-100k.inter")
    assert out.is_file() and sorted(p.name for p in out.parent.iterdir()) == ["ml-100k.inter"]
    with zipfile.ZipFile(wheel) as z:
        assert out.read_bytes() == z.read(ml100k.INTER_MEMBER)


# ------------------------------------------------------------------ without the real wheel
def _fake_wheel(path: Path, payload: bytes | None = b"user_id:token\titem_id:token\n1\t2\n"):
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("recbole/__init__.py", "")
        if payload is not None:
            z.writestr(ml100k.INTER_MEMBER, payload)
    return path


def test_find_wheel_search_order(tmp_path, monkeypatch):
    """Env var first, then <repo>/.cache, then ~/.cache/radius; None when nowhere."""
    repo, home = tmp_path / "repo", tmp_path / "home"
    monkeypatch.setattr(ml100k, "_repo_root", lambda: repo)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv(ENV_VAR, raising=False)
    assert find_ml100k_wheel() is None
    in_home = _fake_wheel(_mkdir(home / ".cache" / "radius") / WHEEL_NAME)
    assert find_ml100k_wheel() == in_home
    in_repo = _fake_wheel(_mkdir(repo / ".cache") / WHEEL_NAME)
    assert find_ml100k_wheel() == in_repo
    env = _fake_wheel(tmp_path / "elsewhere.whl")
    monkeypatch.setenv(ENV_VAR, str(env))
    assert find_ml100k_wheel() == env
    monkeypatch.setenv(ENV_VAR, str(tmp_path / "missing.whl"))
    with pytest.raises(DataError) as e:
        find_ml100k_wheel()
    assert str(e.value) == f"{ENV_VAR}={tmp_path / 'missing.whl'}: no such file"


def _mkdir(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


def test_extract_rejects_bad_wheels(tmp_path):
    """Not a zip, no .inter member, a wrong sha256: DataErrors; nothing written."""
    dest = tmp_path / "out" / "ml-100k.inter"
    not_zip = tmp_path / "a.whl"
    not_zip.write_text("hello")
    with pytest.raises(DataError, match=r"a\.whl: not a zip/wheel file"):
        extract_ml100k(not_zip, dest, verify=False)
    empty = _fake_wheel(tmp_path / "b.whl", payload=None)
    with pytest.raises(DataError, match=rf"b\.whl: has no {ml100k.INTER_MEMBER}$"):
        extract_ml100k(empty, dest, verify=False)
    fake = _fake_wheel(tmp_path / "c.whl")
    with pytest.raises(
        DataError, match=r"c\.whl: sha256 [0-9a-f]{64} is not that of recbole-1\.2\.1"
    ):
        extract_ml100k(fake, dest)
    with pytest.raises(DataError, match=r"missing\.whl: no such file$"):
        extract_ml100k(tmp_path / "missing.whl", dest)
    assert not dest.exists()
    assert extract_ml100k(fake, dest, verify=False).read_bytes().startswith(b"user_id:token")


def test_fetch_runs_pip_download(tmp_path, monkeypatch):
    """fetch_ml100k_wheel runs `pip download --no-deps recbole==1.2.1 -d dest` (pip mocked)."""
    calls = []

    def fake_run(cmd, **kw):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution\n")

    monkeypatch.setattr(ml100k.subprocess, "run", fake_run)
    with pytest.raises(DataError) as e:
        fetch_ml100k_wheel(tmp_path / "dl")
    assert str(e.value) == (
        "pip download of recbole==1.2.1 failed (exit 1): ERROR: No matching distribution"
    )
    cmd = calls[0]
    assert cmd[1:5] == ["-m", "pip", "download", "--no-deps"]
    assert "recbole==1.2.1" in cmd and cmd[-2:] == ["-d", str(tmp_path / "dl")]

    def fake_ok(cmd, **kw):
        _fake_wheel(Path(cmd[-1]) / WHEEL_NAME)
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(ml100k.subprocess, "run", fake_ok)
    with pytest.raises(DataError, match="is not that of recbole-1.2.1"):  # a wrong file
        fetch_ml100k_wheel(tmp_path / "dl2")


def test_default_hash_unchanged_and_explicit_defaults_agree(inter_file, tmp_path):
    """ML-100k with the format's defaults keeps its content hash (cached models stay valid);
    the same values given explicitly give the same matrices, another seed other ones."""
    from radius.cli import main

    ds = prepare(inter_file, tmp_path / "default")
    assert ds.hash == "8c95048c6a5f9f4c"
    assert ds.manifest["params_origin"] == {"defaults": "ml-100k", "given": [], "implied": {}}
    explicit = ["--rating-above", "3.5", "--min-user", "5", "--min-item", "0"]
    explicit += ["--heldout-users", "0.1", "--test-prop", "0.2", "--split-seed", "98765"]
    out = tmp_path / "explicit"
    assert main(["data", "prepare", str(inter_file), "--out", str(out), *explicit]) == 0
    again = Dataset.load(out)
    assert again.hash == ds.hash
    assert again.manifest["params"] == ds.manifest["params"]
    assert again.manifest["params_origin"]["given"] == [
        "threshold",
        "inclusive",
        "min_user",
        "min_item",
        "heldout_frac",
        "test_prop",
        "seed",
    ]
    other = prepare(inter_file, tmp_path / "seed1", split={"seed": 1})
    assert other.hash != ds.hash
