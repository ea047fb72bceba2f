"""The planted synthetic generator (radius.data.synthetic): the embedded default stays
byte-identical, memory is bounded by a chunk, both samplers draw the successive-sampling
law, and the paper-shaped presets and specs of ``radius data prepare --synthetic``."""

from __future__ import annotations

import hashlib
import itertools
import json
import tracemalloc

import numpy as np
import pytest
from scipy.stats import chi2

import radius.data.synthetic as syn
from radius.cli import main
from radius.data.synthetic import (
    PRESETS,
    SyntheticParams,
    default_dataset,
    generate,
    parse_spec,
    synthetic_dataset,
)
from radius.errors import DataError

DEFAULT_HASH = "5d8dc4b5b5e078ed"

# Digests of generate()'s arrays (users, items, ground truth) from the generator before
# the memory fix (commit 9a2e421): the Gumbel sampler must reproduce them bit for bit.
GUMBEL_DIGESTS = [
    ({}, "04416a16a9c66740"),
    (
        dict(n_users=600, n_items=300, n_communities=6, n_max=150, activity_median=15.0, seed=1),
        "b4c17d5908d62daa",
    ),
    (
        dict(
            n_users=2500,
            n_items=700,
            n_communities=7,
            n_max=700,
            n_min=3,
            activity_median=60.0,
            activity_sigma=1.5,
            alpha=0.05,
            zipf_a=1.2,
            seed=11,
        ),
        "1276729508473f66",
    ),
]


def _digest(params: SyntheticParams) -> str:
    inter, truth = generate(params)
    h = hashlib.sha256()
    for a in (inter.users, inter.items, *truth.values()):
        h.update(str(a.dtype).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------- identity
def test_embedded_default_hash_unchanged():
    """The embedded default's content hash is the one every cached model was keyed by."""
    assert default_dataset().hash == DEFAULT_HASH
    assert synthetic_dataset("default").hash == DEFAULT_HASH


@pytest.mark.parametrize(("kwargs", "digest"), GUMBEL_DIGESTS)
def test_gumbel_sampler_reproduces_old_draws(kwargs, digest):
    """The Gumbel sampler's arrays (dtype and bytes) equal the old generator's, chunk
    boundaries (2,500 users) included; a different seed changes them."""
    assert _digest(SyntheticParams(**kwargs)) == digest
    assert _digest(SyntheticParams(**{**kwargs, "seed": 12345})) != digest


@pytest.mark.parametrize("sampler", ["gumbel", "sparse"])
def test_same_seed_same_output(sampler):
    """Two runs with one seed give identical arrays; each user gets exactly n_u distinct
    items in range."""
    p = SyntheticParams(n_users=1500, n_items=400, n_max=300, sampler=sampler, seed=3)
    a, ta = generate(p)
    b, _ = generate(p)
    assert np.array_equal(a.users, b.users) and np.array_equal(a.items, b.items)
    counts = np.bincount(a.users, minlength=p.n_users)
    assert np.array_equal(counts, ta["user_activity"])
    pairs = a.users * p.n_items + a.items
    assert len(np.unique(pairs)) == len(pairs)
    assert a.items.min() >= 0 and a.items.max() < p.n_items


# --------------------------------------------------------------------------- memory
@pytest.mark.parametrize("sampler", ["gumbel", "sparse"])
def test_memory_bounded_by_chunk(sampler, monkeypatch):
    """From 1,000 to 4,000 users the traced peak grows by less than one chunk's (1000, I)
    int64 array (16 MB here), beyond the output itself; a generator that keeps each
    chunk's argsort alive (the old bug, emulated) grows by three of them and fails."""
    n_items = 2000
    chunk_bytes = syn._CHUNK * n_items * 8

    def growth() -> float:
        peaks = []
        for n_users in (1000, 4000):
            tracemalloc.start()
            inter, _ = generate(SyntheticParams(n_users=n_users, sampler=sampler))
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            peaks.append(peak - 2 * (inter.users.nbytes + inter.items.nbytes))
        return peaks[1] - peaks[0]

    assert growth() < chunk_bytes
    kept = []
    real = syn._gumbel_chunk if sampler == "gumbel" else syn._sparse_chunk

    def leaky(rng, th, n, *rest):
        kept.append(np.empty((len(n), n_items), dtype=np.int64))
        return real(rng, th, n, *rest)

    monkeypatch.setattr(syn, "_gumbel_chunk" if sampler == "gumbel" else "_sparse_chunk", leaky)
    assert growth() > 2 * chunk_bytes


# --------------------------------------------------------------------------- the law
def _exact_set_law(p: np.ndarray, n: int) -> dict[frozenset, float]:
    """P(set) of successive sampling without replacement: sum over the set's orders of
    prod_k p_{i_k} / (1 - sum_{j<k} p_{i_j})."""
    law: dict[frozenset, float] = {}
    for order in itertools.permutations(range(len(p)), n):
        prob, used = 1.0, 0.0
        for i in order:
            prob *= p[i] / (1.0 - used)
            used += p[i]
        law[frozenset(order)] = law.get(frozenset(order), 0.0) + prob
    return law


def _chi2_pvalue(sets: list[frozenset], law: dict[frozenset, float]) -> float:
    keys = sorted(law, key=sorted)
    index = {k: j for j, k in enumerate(keys)}
    obs = np.bincount([index[s] for s in sets], minlength=len(keys))
    exp = np.array([law[k] for k in keys]) * len(sets)
    return float(chi2.sf(((obs - exp) ** 2 / exp).sum(), len(keys) - 1))


def _draw_sets(sampler: str, p: np.ndarray, n: int, n_rows: int, seed: int) -> list[frozenset]:
    """Item sets of ``n_rows`` users with p(i | u) = p (one item per community)."""
    k = len(p)
    th, size = np.tile(p, (n_rows, 1)), np.full(n_rows, n)
    community, within = np.arange(k), np.ones(k)
    rng = np.random.default_rng(seed)
    if sampler == "gumbel":
        _, items = syn._gumbel_chunk(rng, th, size, community, within)
    else:
        tables = syn._community_tables(community, within, k)
        _, items = syn._sparse_chunk(rng, th, size, community, within, tables)
    return [frozenset(row) for row in items.reshape(n_rows, n).tolist()]


P_SKEWED = np.array([0.5, 0.2, 0.15, 0.1, 0.05])
P_ONE_HEAVY = np.array([0.96, 0.01, 0.01, 0.01, 0.01])  # round 1 rarely finds 3 distinct


@pytest.mark.parametrize("sampler", ["gumbel", "sparse"])
@pytest.mark.parametrize(("p", "n"), [(P_SKEWED, 2), (P_ONE_HEAVY, 3)])
def test_samplers_draw_successive_sampling_law(sampler, p, n, monkeypatch):
    """Set frequencies of 20,000 users match the exact successive-sampling law
    (chi-square p-value > 1e-3, stated before computing). With one heavy item and a
    single round of draws most sparse users finish by the Gumbel top-k on the items
    not drawn, which must keep the law exact."""
    if sampler == "sparse":
        monkeypatch.setattr(syn, "_ROUNDS", 1)
    sets = _draw_sets(sampler, p, n, 20_000, seed=7)
    assert _chi2_pvalue(sets, _exact_set_law(p, n)) > 1e-3


def test_sparse_sampler_skips_communities_without_items():
    """More communities than items: communities with no item get no draws, so p(i | u)
    is theta renormalised over the communities that have items (the Gumbel sampler's law)."""
    theta = np.array([0.3, 0.1, 0.25, 0.05, 0.1, 0.2])  # communities 4 and 5 have no item
    community, within = np.arange(4), np.ones(4)
    n_rows = 20_000
    rng = np.random.default_rng(3)
    tables = syn._community_tables(community, within, len(theta))
    th, size = np.tile(theta, (n_rows, 1)), np.full(n_rows, 2)
    _, items = syn._sparse_chunk(rng, th, size, community, within, tables)
    assert items.max() < 4
    sets = [frozenset(row) for row in items.reshape(n_rows, 2).tolist()]
    p = theta[:4] / theta[:4].sum()
    assert _chi2_pvalue(sets, _exact_set_law(p, 2)) > 1e-3
    # control: the law of a sampler that drew the empty communities and landed on item 3
    # (what clipping to the community's range would do) is rejected
    assert _chi2_pvalue(sets, _exact_set_law(np.array([0.3, 0.1, 0.25, 0.35]), 2)) < 1e-3


def test_law_check_rejects_a_wrong_law():
    """Negative control: sets drawn from the conditional-Poisson law (P(set) prop. to
    prod p_i, not successive sampling) fail the same check."""
    law = _exact_set_law(P_SKEWED, 2)
    keys = sorted(law, key=sorted)
    wrong = np.array([np.prod(P_SKEWED[list(k)]) for k in keys])
    idx = np.random.default_rng(7).choice(len(keys), size=20_000, p=wrong / wrong.sum())
    assert _chi2_pvalue([keys[j] for j in idx], law) < 1e-3


def test_samplers_agree_on_a_planted_set():
    """Whole generator: the two samplers give the same mean activity and nearly the same
    item popularity (correlation of item counts > 0.99 over 3,000 users)."""
    base = dict(n_users=3000, n_items=500, n_communities=10, n_max=300, seed=5)
    a, ta = generate(SyntheticParams(**base, sampler="gumbel"))
    b, tb = generate(SyntheticParams(**base, sampler="sparse"))
    assert np.array_equal(ta["user_activity"], tb["user_activity"])
    ca, cb = np.bincount(a.items, minlength=500), np.bincount(b.items, minlength=500)
    assert np.corrcoef(ca, cb)[0, 1] > 0.99
    assert not np.array_equal(a.items, b.items)  # same law, different draws


# --------------------------------------------------------------------------- specs
def test_presets_follow_the_paper_sizes():
    """The presets' sizes and held-out users are Liang et al.'s (2018, Table 1)."""
    want = {
        "ml-20m": (136_677, 20_108, 10_000),
        "netflix": (463_435, 17_769, 40_000),
        "msd": (571_355, 41_140, 50_000),
    }
    for name, (users, items, held) in want.items():
        pre = PRESETS[name]
        assert (pre.params.n_users, pre.params.n_items, pre.n_heldout) == (users, items, held)
        assert pre.params.sampler == "sparse"
    assert PRESETS["default"].params == SyntheticParams()


def test_parse_spec_scale_aliases_and_names():
    """Scale multiplies users and held-out users, not items; aliases name fields."""
    name, p, split = parse_spec("ml-20m", scale=0.25)
    assert (name, p.n_users, p.n_items, split.n_heldout) == (
        "synth-ml-20m-x0.25",
        34_169,
        20_108,
        2500,
    )
    name, p, split = parse_spec("users=900,items=300,median=30,max=200,seed=4,alpha=0.3")
    assert name == "synth-custom" and p.sampler == "sparse" and split.n_heldout is None
    assert (p.n_users, p.n_items, p.activity_median, p.n_max, p.seed, p.alpha) == (
        900,
        300,
        30.0,
        200,
        4,
        0.3,
    )
    assert parse_spec("msd,sampler=gumbel")[1].sampler == "gumbel"


@pytest.mark.parametrize(
    ("spec", "scale", "message"),
    [
        ("ml-2m", 1.0, "unknown synthetic preset 'ml-2m' (did you mean 'ml-20m'?)"),
        ("ml-20m,user=5", 1.0, "unknown key 'user' (did you mean 'users'?)"),
        ("users=1.5", 1.0, "users='1.5' must be an integer"),
        ("median=x", 1.0, "median='x' must be a number"),
        ("ml-20m,seed", 1.0, "'seed' is not key=value"),
        ("users=10,items=5", 1.0, "need 1 <= n_min <= n_max <= n_items, got 5, 400, 5"),
        ("sampler=exact", 1.0, "sampler must be one of gumbel, sparse, got 'exact'"),
        ("", 1.0, "empty spec"),
        ("ml-20m", 0.0, "synthetic scale must lie in (0, 10], got 0.0"),
    ],
)
def test_parse_spec_errors_name_the_token(spec, scale, message):
    with pytest.raises(DataError) as e:
        parse_spec(spec, scale=scale)
    assert message in str(e.value)


def test_preset_split_holds_out_the_scaled_users():
    """A tiny preset-shaped set: the held-out users are the preset's, scaled; the
    manifest records the spec, the scale and the preset as the defaults' origin."""
    ds = synthetic_dataset("ml-20m,seed=2", scale=0.01)
    assert ds.val_tr.shape[0] == ds.test_tr.shape[0] == 100
    assert ds.train.shape[0] == 1367 - 200
    src = ds.manifest["source"]
    assert src["spec"] == "ml-20m,seed=2" and src["scale"] == 0.01
    assert src["params"]["sampler"] == "sparse" and src["params"]["seed"] == 2
    assert ds.manifest["params_origin"]["defaults"] == "synth-ml-20m-x0.01"
    assert synthetic_dataset("ml-20m,seed=2", scale=0.01).hash == ds.hash


# --------------------------------------------------------------------------- the CLI
def test_cli_prepare_synthetic(tmp_path, capsys):
    """`data prepare --synthetic` writes a folder with the spec's parameters and the split
    options still apply; `--synthetic default` is the embedded default."""
    out = tmp_path / "s"
    spec = "users=400,items=150,communities=4,max=100"
    args = ["data", "prepare", "--synthetic", spec, "--heldout-users", "30", "--out", str(out)]
    assert main(args) == 0
    man = json.loads((out / "manifest.json").read_text())
    assert man["source"]["params"]["n_users"] == 400 and man["counts"]["val_users"] == 30
    assert "sampler" in capsys.readouterr().out
    assert main(["data", "prepare", "--synthetic", "default", "--out", str(tmp_path / "d")]) == 0
    assert json.loads((tmp_path / "d" / "manifest.json").read_text())["hash"] == DEFAULT_HASH
    capsys.readouterr()
    for where in ([str(tmp_path / "d")], []):  # the prepared folder, the embedded default
        assert main(["data", "info", *where]) == 0
        assert DEFAULT_HASH in capsys.readouterr().out


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["u.data", "--synthetic", "ml-20m"], "give no path and no --format"),
        (["--synthetic", "ml-20m", "--format", "ml-20m"], "give no path and no --format"),
        (["--synthetic", "msd,items=9"], "need 1 <= n_min <= n_max <= n_items"),
        (["--synthetic", "default", "--min-rating", "4"], "has no ratings"),
    ],
)
def test_cli_prepare_synthetic_bad_input_exits_2(extra, message, tmp_path, capsys):
    assert main(["data", "prepare", *extra, "--out", str(tmp_path / "x")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()
