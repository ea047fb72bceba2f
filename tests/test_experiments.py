"""The setting ablation: PIA tuned on validation, verdicts with intervals and three outcomes."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from radius import experiments as ex
from radius.data.dataset import COHORTS, cohort_of

COHORT_LABELS = [c[0] for c in COHORTS]
QUICK = dict(n_boot=400)  # bootstrap draws in the constructed cases (fast, still decisive)


def _scores(n: int, shift: float, noise: float, seeds: int = 2, seed: int = 0) -> np.ndarray:
    """(seeds, n) per-user scores: a common user level, plus ``shift``, plus noise."""
    rng = np.random.default_rng(seed)
    level = np.random.default_rng(99).uniform(0.2, 0.5, n)  # same users in every arm
    return level + shift + noise * rng.standard_normal((seeds, n))


# --------------------------------------------------------------------------- compare
@pytest.mark.parametrize(
    ("shift", "noise", "n", "verdict"),
    [
        (+0.02, 0.01, 200, "HOLDS"),  # clear rise
        (-0.02, 0.01, 200, "CONTRADICTED"),  # clear fall
        (0.0, 0.05, 200, "INCONCLUSIVE"),  # no effect, interval straddles 0
        (+0.02, 0.01, 10, "INCONCLUSIVE"),  # clear rise on too few users (min 20)
    ],
)
def test_compare_three_outcomes(shift, noise, n, verdict):
    """A paired gain HOLDS above 0, is CONTRADICTED below 0, INCONCLUSIVE across 0 or on
    few users."""
    lo = _scores(n, 0.0, noise, seed=1)
    hi = _scores(n, shift, noise, seed=2)
    c = ex.compare(lo, hi, **QUICK)
    assert c["verdict"] == verdict
    iv = c["interval"]
    assert iv["level"] == 0.95 and iv["n"] == n and "400 draws" in iv["method"]
    assert iv["estimate"] == pytest.approx(np.mean(hi.mean(0) - lo.mean(0)))
    assert c["seeds"]["n"] == 2
    assert c["seeds"]["values"] == pytest.approx(list((hi - lo).mean(axis=1)))
    if verdict == "INCONCLUSIVE" and n >= 20:
        assert iv["low"] < 0 < iv["high"]


def test_compare_interval_carries_the_seed_spread():
    """Two seeds that disagree (one rises by 0.03, the other falls by 0.01) on 400 users:
    users alone would call the mean gain +0.01 significant; the two-stage interval over
    seeds, then users, straddles 0 (INCONCLUSIVE)."""
    rng = np.random.default_rng(3)
    lo = np.tile(rng.uniform(0.2, 0.5, 400), (2, 1))
    hi = lo + np.array([[0.03], [-0.01]]) + 0.005 * rng.standard_normal((2, 400))
    c = ex.compare(lo, hi, **QUICK)
    assert c["verdict"] == "INCONCLUSIVE"
    assert "2 training seeds x 400 test users" in c["interval"]["method"]
    assert c["interval"]["seeds"] == pytest.approx([0.03, -0.01], abs=2e-3)
    users_only = ex.compare(lo.mean(0, keepdims=True), hi.mean(0, keepdims=True), **QUICK)
    assert users_only["verdict"] == "HOLDS"


def test_compare_drops_undefined_users():
    """Users with no held-out item (NaN) leave the paired sample instead of poisoning it."""
    lo, hi = _scores(50, 0.0, 0.01), _scores(50, 0.03, 0.01)
    lo[:, :5] = np.nan
    hi[:, :5] = np.nan
    c = ex.compare(lo, hi, **QUICK)
    assert c["n_users"] == 45 and c["verdict"] == "HOLDS"


# --------------------------------------------------------------------------- ordering
def _runs(per_user: dict[str, np.ndarray]) -> dict[str, list[dict]]:
    return {s: [{"_per_user": {"ndcg@100": row}} for row in a] for s, a in per_user.items()}


@pytest.mark.parametrize(
    ("masking", "pia", "verdicts", "overall"),
    [
        (0.02, 0.04, ["HOLDS", "HOLDS"], "HOLDS"),
        (0.04, 0.02, ["HOLDS", "CONTRADICTED"], "CONTRADICTED"),  # negative control
        (0.02, 0.02, ["HOLDS", "INCONCLUSIVE"], "INCONCLUSIVE"),
    ],
)
def test_ordering_steps(masking, pia, verdicts, overall):
    """Each step of clean < masking < pia has its own outcome; the ordering combines them."""
    n = 300
    runs = _runs(
        {
            "clean": _scores(n, 0.0, 0.01, seed=1),
            "masking": _scores(n, masking, 0.01, seed=2),
            "pia": _scores(n, pia, 0.01 if pia != masking else 0.2, seed=3),
        }
    )
    o = ex._ordering(runs, "ndcg@100", ["clean", "masking", "pia"], **QUICK)
    assert [s["verdict"] for s in o["steps"]] == verdicts
    assert o["verdict"] == overall
    assert [(s["lower"], s["higher"]) for s in o["steps"]] == [
        ("clean", "masking"),
        ("masking", "pia"),
    ]


# --------------------------------------------------------------------------- cohorts
def _cohort_case(gains, *, sizes=(200, 200, 200, 200), noise=0.005):
    """masking / pia per-user scores whose per-cohort gain is ``gains``; cohort labels."""
    coh = np.repeat(np.arange(4), sizes)
    lo = _scores(coh.size, 0.0, noise, seed=1)
    hi = _scores(coh.size, 0.0, noise, seed=2) + np.asarray(gains)[coh]
    return lo, hi, coh


def test_cohort_gains_three_outcomes():
    """Per cohort: a clear gain HOLDS, a clear loss is CONTRADICTED, none is INCONCLUSIVE,
    and a cohort below 20 users is INCONCLUSIVE whatever its gain."""
    lo, hi, coh = _cohort_case([0.03, -0.03, 0.0, 0.03], sizes=(200, 200, 200, 10))
    hi[:, coh == 2] += np.random.default_rng(5).normal(0, 0.1, (2, 200))
    g = ex._pia_gain(_runs({"masking": lo, "pia": hi}), "ndcg@100", coh, **QUICK)
    pc = g["per_cohort"]
    assert [pc[c]["verdict"] for c in COHORT_LABELS] == [
        "HOLDS",
        "CONTRADICTED",
        "INCONCLUSIVE",
        "INCONCLUSIVE",
    ]
    assert [pc[c]["users"] for c in COHORT_LABELS] == [200, 200, 200, 10]
    assert pc["100+"]["interval"]["low"] > 0  # its interval excludes 0: too few users decides
    assert pc["5-10"]["interval"]["estimate"] == pytest.approx(0.03, abs=0.003)


@pytest.mark.parametrize(
    ("gains", "noise", "verdict"),
    [
        ([0.03, 0.01, 0.0, 0.02], 0.005, "HOLDS"),
        ([0.03, 0.05, 0.0, 0.02], 0.005, "CONTRADICTED"),  # negative control: middle wins
        ([0.02, 0.01, 0.0, 0.02], 0.5, "INCONCLUSIVE"),  # right point estimate, wide interval
    ],
)
def test_largest_at_both_ends_three_outcomes(gains, noise, verdict):
    """min(end gains) - max(middle gains), bootstrapped jointly over users, decides."""
    lo, hi, coh = _cohort_case(gains, noise=noise)
    b = ex.both_ends(lo, hi, coh, **QUICK)
    assert b["verdict"] == verdict
    assert b["ends"] == ["5-10", "100+"]
    d = (hi - lo).mean(0)
    g = [d[coh == k].mean() for k in range(4)]
    assert b["interval"]["estimate"] == pytest.approx(min(g[0], g[3]) - max(g[1], g[2]))
    if verdict == "INCONCLUSIVE":
        assert b["interval"]["estimate"] > 0  # the point estimate alone would say "yes"


def test_largest_at_both_ends_needs_users_and_cohorts():
    """A clear pattern on an end cohort of 5 users, or only two cohorts: INCONCLUSIVE."""
    lo, hi, coh = _cohort_case([0.05, 0.0, 0.0, 0.05], sizes=(200, 200, 200, 5))
    b = ex.both_ends(lo, hi, coh, **QUICK)
    assert b["verdict"] == "INCONCLUSIVE" and "fewer than 20 users" in b["reason"]
    lo, hi, coh = _cohort_case([0.05, 0.0, 0.0, 0.05], sizes=(200, 200, 0, 0))
    b = ex.both_ends(lo, hi, coh, **QUICK)
    assert b["verdict"] == "INCONCLUSIVE" and "needs >= 3" in b["reason"]


# --------------------------------------------------------------------------- pipeline
class FakeRuns:
    """Stands in for training + evaluation: per-user nDCG@100 from the config alone.

    ``effect(config, split)`` is the shift of every user's score; the calls are recorded.
    """

    def __init__(self, effect):
        self.effect = effect
        self.calls: list[tuple[str, dict]] = []

    def __call__(self, dataset, config, cache_dir, progress, split="test"):
        self.calls.append((split, config.key_dict()))
        fold_in, heldout = dataset.heldout(split)
        n = fold_in.shape[0]
        level = np.random.default_rng(7).uniform(0.2, 0.4, n)
        noise = np.random.default_rng(100 + config.seed).normal(0, 0.002, n)
        v = level + self.effect(config, split) + noise
        coh = cohort_of(np.diff(fold_in.indptr) + np.diff(heldout.indptr))
        per_user = {m: v.copy() for m in ex.ABLATION_METRICS}
        cohorts = {
            label: {
                "users": int((coh == k).sum()),
                **{m: float(v[coh == k].mean()) for m in per_user},
            }
            for k, (label, _, _) in enumerate(COHORTS)
        }
        return {
            "means": {m: float(v.mean()) for m in per_user},
            "cohorts": cohorts,
            "n_users": n,
            "stopped": "cap"
            if config.patience >= config.epochs or config.keep_rate == 1
            else "early",
            "_per_user": per_user,
        }


def _pia_effect(config, split):
    """Validation prefers lambda_A 0.1 with N(0, 0.01^2); test would prefer lambda_A 10."""
    if config.lambda_a == 0:
        return 0.02 if config.keep_rate < 1 else 0.0
    if split == "val":
        return (
            0.03
            + (0.01 if config.lambda_a == 0.1 else 0)
            + (0.005 if config.anchor_init_scale == 0.01 else 0)
        )
    return 0.04 + (0.02 if config.lambda_a == 10 else 0)


def test_grid_picks_on_validation_never_test(tiny_dataset, monkeypatch):
    """The validation-best lambda_A (0.1) is chosen though test users would pick 10, and no
    grid point but the chosen one is ever evaluated on test users."""
    fake = FakeRuns(_pia_effect)
    monkeypatch.setattr(ex, "_evaluate_run", fake)
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    res = ex.ablation(tiny_dataset, seeds=2, n_boot=200)
    t = res["tuning"]
    assert t["chosen"]["lambda_a"] == 0.1 and t["chosen"]["anchor_init_scale"] == 0.01
    assert t["knobs"] == {"lambda_a": "grid", "anchor_init": "grid"} and t["skipped"] is None
    assert len(t["grid"]) == 10 and sum(g["chosen"] for g in t["grid"]) == 1
    assert {g["lambda_a"] for g in t["grid"]} == {0.01, 0.1, 1.0, 3.0, 10.0}
    assert [c for c in fake.calls if c[0] == "val"] and all(
        c[1]["seed"] == 0 for c in fake.calls if c[0] == "val"
    )
    test_pia = [c[1] for c in fake.calls if c[0] == "test" and c[1]["lambda_a"] > 0]
    assert {(c["lambda_a"], c["anchor_init_scale"]) for c in test_pia} == {(0.1, 0.01)}
    assert res["setting_overrides"]["pia"]["lambda_a"] == 0.1
    assert res["ordering"]["verdict"] == "HOLDS"
    text = ex.format_ablation(res)
    assert "<- chosen" in text and "lambda_A = 0.1" in text


def test_grid_ties_go_to_the_smaller_lambda(tiny_dataset, monkeypatch):
    """Equal validation scores: the smallest lambda_A and the smallest scale win."""
    monkeypatch.setattr(ex, "_evaluate_run", FakeRuns(lambda c, s: 0.0))
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    t = ex.tune_pia(tiny_dataset, ex.TrainConfig(), lambda_grid=(3.0, 1.0), grid_seeds=2)
    assert t["chosen"]["lambda_a"] == 1.0 and t["chosen"]["anchor_init_scale"] == 0.01
    assert all(g["val"]["n"] == 2 for g in t["grid"])  # seed spread over the grid seeds


def test_set_lambda_bypasses_the_grid(tiny_dataset, monkeypatch, tmp_path, capsys):
    """`--set lambda_a=3 --set anchor_init_scale=0.05`: used as is, nothing evaluated on
    validation, and the JSON says the grid was skipped."""
    fake = FakeRuns(_pia_effect)
    monkeypatch.setattr(ex, "_evaluate_run", fake)
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    monkeypatch.setattr(ex, "load_dataset", lambda spec: tiny_dataset)
    out = tmp_path / "abl.json"
    args = argparse.Namespace(
        name="ablation",
        data="default",
        seeds=1,
        model="multvae",
        out=str(out),
        set=["lambda_a=3", "anchor_init_scale=0.05"],
        base_config=ex.TrainConfig(lambda_a=3.0, anchor_init_scale=0.05),
        cache_dir=tmp_path,
        progress=False,
    )
    assert ex.run_experiment(args) == 0
    assert not [c for c in fake.calls if c[0] == "val"]
    data = json.loads(out.read_text())
    t = data["tuning"]
    assert t["knobs"] == {"lambda_a": "given", "anchor_init": "given"}
    assert "no grid was evaluated" in t["skipped"] and t["grid"] == []
    assert data["setting_overrides"]["pia"]["lambda_a"] == 3.0
    assert "grid skipped" in capsys.readouterr().out


def test_set_lambda_only_keeps_the_init_grid(tiny_dataset, monkeypatch):
    """A given lambda_A leaves the initialisation tuned: two grid points, one lambda."""
    monkeypatch.setattr(ex, "_evaluate_run", FakeRuns(_pia_effect))
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    t = ex.tune_pia(tiny_dataset, ex.TrainConfig(lambda_a=1.0), fixed=["lambda_a"])
    assert t["knobs"] == {"lambda_a": "given", "anchor_init": "grid"}
    assert [(g["lambda_a"], g["anchor_init_scale"]) for g in t["grid"]] == [
        (1.0, 0.01),
        (1.0, 0.1),
    ]


def _control_effect(config, split):
    """trace-only beats masking, alignment-only loses to it, the full budget ties."""
    if config.lambda_a == 0:
        if config.keep_rate == 1:
            return 0.0
        return 0.02 + (0.0 if config.patience < config.epochs else 0.0)
    return {"both": 0.04, "trace": 0.03, "mean": 0.01}[config.anchor_terms]


def test_controls_are_three_and_attributed(tiny_dataset, monkeypatch):
    """--controls adds trace-only, alignment-only and masking without early stopping, each
    against masking: here HOLDS, CONTRADICTED and INCONCLUSIVE."""
    fake = FakeRuns(_control_effect)
    monkeypatch.setattr(ex, "_evaluate_run", fake)
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    res = ex.ablation(
        tiny_dataset,
        seeds=2,
        controls=True,
        lambda_grid=(1.0,),
        init_grid=("normal:0.01",),
        n_boot=300,
    )
    rows = res["controls"]["rows"]
    assert list(rows) == ["trace_only", "alignment_only", "masking_full_budget"]
    assert [rows[k]["verdict"] for k in rows] == ["HOLDS", "CONTRADICTED", "INCONCLUSIVE"]
    assert rows["trace_only"]["config"]["anchor_terms"] == "trace"
    assert rows["alignment_only"]["config"]["anchor_terms"] == "mean"
    assert rows["trace_only"]["config"]["lambda_a"] == res["tuning"]["chosen"]["lambda_a"]
    full = [
        c[1] for c in fake.calls if c[1]["lambda_a"] == 0 and c[1]["patience"] >= c[1]["epochs"]
    ]
    assert len(full) == 2 and all(c["keep_rate"] == 0.5 for c in full)
    assert res["controls"]["pia"]["verdict"] == "HOLDS"
    assert set(res["summary"]) >= {"clean", "masking", "pia", *rows}
    text = ex.format_ablation(res)
    assert "trace only" in text and "CONTRADICTED" in text and "attribution controls" in text
    # a capped run is a warning; the full-budget control reaches the cap by design
    assert "WARNING: 2 run(s) hit the epoch cap before early stopping" in text
    assert "under-trained?): clean seed 0, clean seed 1\n" in text


def test_statistics_are_stated(tiny_dataset, monkeypatch):
    """The JSON names the level, the draws and the minimum users before any verdict."""
    monkeypatch.setattr(ex, "_evaluate_run", FakeRuns(_pia_effect))
    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    res = ex.ablation(tiny_dataset, seeds=1, lambda_grid=(1.0,), init_grid=("zeros",), n_boot=200)
    st = res["statistics"]
    assert st["level"] == 0.95 and st["draws"] == 200 and st["min_users"] == 20
    assert "the grid has one point (lambda_A 1, anchors zeros)" in res["tuning"]["skipped"]
    assert res["tuning"]["chosen"]["anchor_init"] == "zeros"
    json.dumps(res)  # JSON-able


# --------------------------------------------------------------------------- real training
@pytest.fixture(scope="module")
def ablation_result(tiny_ctx):
    """The ablation on the tiny data, 2 seeds, a 2-point grid, sharing tiny_ctx's cache."""
    return ex.ablation(
        tiny_ctx.dataset,
        seeds=2,
        base_config=tiny_ctx.base_config,
        cache_dir=tiny_ctx.cache_dir,
        lambda_grid=(0.1, 1.0),
        init_grid=("normal:0.01",),
        n_boot=300,
    )


@pytest.mark.slow
def test_ablation_on_trained_models(ablation_result):
    """Summaries are the seeds' mean and std; verdicts are recomputed from the runs."""
    res = ablation_result
    assert res["settings"] == ["clean", "masking", "pia"] and res["seeds"] == [0, 1]
    for s in res["settings"]:
        for m in ex.ABLATION_METRICS:
            vals = np.array([r["means"][m] for r in res["runs"][s]])
            assert np.all((vals >= 0) & (vals <= 1))
            assert res["summary"][s][m]["mean"] == pytest.approx(vals.mean())
            assert res["summary"][s][m]["std"] == pytest.approx(vals.std(ddof=1))
    users = [res["cohorts"]["pia"][c]["users"] for c in COHORT_LABELS]
    assert sum(users) == res["test_users"] == res["data"]["test_users"]
    for step in res["ordering"]["steps"]:
        d = [
            b["means"]["ndcg@100"] - a["means"]["ndcg@100"]
            for a, b in zip(res["runs"][step["lower"]], res["runs"][step["higher"]])
        ]
        assert step["seeds"]["values"] == pytest.approx(d)
        assert step["interval"]["estimate"] == pytest.approx(np.mean(d))
        assert step["verdict"] in ("HOLDS", "CONTRADICTED", "INCONCLUSIVE")
    assert len(res["tuning"]["grid"]) == 2
    for rs in res["runs"].values():  # how each training ended is recorded
        assert all(r["stopped"] in ("early", "cap") and r["best_epoch"] >= 0 for r in rs)
    assert all(not k.startswith("_") for r in res["runs"]["pia"] for k in r)
    for c in COHORT_LABELS:  # cohorts below 20 users cannot decide
        g = res["pia_gain"]["per_cohort"][c]
        if g["users"] < 20:
            assert g["verdict"] == "INCONCLUSIVE"


@pytest.mark.slow
def test_rerun_loads_cached_models(ablation_result, tiny_ctx, monkeypatch):
    """A second ablation with the same data and configs trains nothing and agrees exactly."""
    import radius.training.trainer

    def no_training(*a, **k):
        raise AssertionError("ablation retrained a cached model")

    monkeypatch.setattr(radius.training.trainer, "train", no_training)
    again = ex.ablation(
        tiny_ctx.dataset,
        seeds=2,
        base_config=tiny_ctx.base_config,
        cache_dir=tiny_ctx.cache_dir,
        lambda_grid=(0.1, 1.0),
        init_grid=("normal:0.01",),
        n_boot=300,
    )
    for s in again["settings"]:
        assert again["summary"][s] == ablation_result["summary"][s]
    assert again["ordering"] == ablation_result["ordering"]


# --------------------------------------------------------------------------- input and CLI
@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"seeds": 0}, ValueError, "seeds must be >= 1, got 0"),
        ({"seeds": 1.5}, TypeError, "seeds must be an int, got float"),
        ({"model": "svd"}, ValueError, "model must be 'multvae' or 'recvae', got 'svd'"),
        ({"settings": ("clean", "dropout")}, ValueError, "settings must be >= 2 names"),
        ({"settings": ("clean", "masking"), "controls": True}, ValueError, "controls need"),
        ({"lambda_grid": (0.0, 1.0)}, ValueError, "lambda grid must be non-empty values > 0"),
        ({"init_grid": ("uniform",)}, ValueError, "anchor init must be 'normal:SCALE'"),
        ({"fixed": ("keep_rate",)}, ValueError, "fixed knobs must be among"),
    ],
)
def test_ablation_rejects_bad_input(tiny_dataset, kwargs, exc, message):
    """Bad arguments raise before any training, with exact messages."""
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        ex.ablation(tiny_dataset, **kwargs)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--lambda-grid", "0.1,x"], "--lambda-grid expects comma-separated numbers"),
        (["--lambda-grid", "0,1"], "--lambda-grid expects values > 0"),
        (["--init-grid", "normal:-1"], "--init-grid: anchor init must be"),
        (["--grid-seeds", "0"], "--grid-seeds must be >= 1, got 0"),
    ],
)
def test_cli_rejects_bad_grids(argv, message, capsys):
    """Bad grid options exit 2 with the option named, before any data is read."""
    from radius.cli import main

    assert main(["experiment", "ablation", "--data", "/nonexistent", *argv]) == 2
    assert message in capsys.readouterr().err


def test_cli_parses_grid_options(tiny_dataset, monkeypatch, tmp_path, capsys):
    """`--lambda-grid 0.1,1 --init-grid zeros --controls` reach the ablation; exit 0."""
    from radius.cli import main

    monkeypatch.setattr(ex, "_evaluate_run", FakeRuns(_control_effect))

    monkeypatch.setattr(ex, "_pretrain", lambda *a, **k: None)
    monkeypatch.setattr(ex, "load_dataset", lambda spec: tiny_dataset)
    monkeypatch.setenv("RADIUS_CACHE_DIR", str(tmp_path))
    out = tmp_path / "a.json"
    argv = ["experiment", "ablation", "--seeds", "1", "--lambda-grid", "0.1,1", "--init-grid"]
    argv += ["zeros", "--controls", "--out", str(out)]
    assert main(argv) == 0
    data = json.loads(out.read_text())
    assert data["tuning"]["lambda_grid"] == [0.1, 1.0] and data["tuning"]["init_grid"] == ["zeros"]
    assert set(data["controls"]["rows"]) == set(ex.CONTROLS)
    assert not math.isnan(data["ordering"]["steps"][0]["interval"]["estimate"])
