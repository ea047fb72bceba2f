"""The setting ablation: training/evaluation over seeds, aggregation and direction statements."""

from __future__ import annotations

import argparse
import json
import math

import numpy as np
import pytest

from radius import experiments as ex
from radius.data.dataset import COHORTS

COHORT_LABELS = [c[0] for c in COHORTS]


@pytest.fixture(scope="module")
def ablation_result(tiny_ctx):
    """The ablation on the tiny data, 2 seeds, sharing tiny_ctx's model cache."""
    return ex.ablation(
        tiny_ctx.dataset, seeds=2, base_config=tiny_ctx.base_config, cache_dir=tiny_ctx.cache_dir
    )


def _fake_runs(ndcg: dict[str, list[float]], cohort_gain: dict[str, float] | None = None):
    """Runs with given nDCG@100 per setting and seed; PIA cohorts = masking + cohort_gain."""
    runs = {}
    for s, vals in ndcg.items():
        runs[s] = []
        for seed, v in enumerate(vals):
            cohorts = {}
            for c in COHORT_LABELS:
                g = (cohort_gain or {}).get(c, 0.0) if s == "pia" else 0.0
                cohorts[c] = {"users": 10, "ndcg@100": 0.3 + 0.01 * seed + g}
            runs[s].append({"means": {"ndcg@100": v}, "cohorts": cohorts, "seed": seed})
    return runs


# --------------------------------------------------------------------------- aggregation
@pytest.mark.slow
def test_ablation_summary_is_mean_and_std_over_seeds(ablation_result):
    """The summary of each setting and metric is the mean and sample std of its runs."""
    res = ablation_result
    assert res["settings"] == ["clean", "masking", "pia"] and res["seeds"] == [0, 1]
    for s in res["settings"]:
        assert [r["seed"] for r in res["runs"][s]] == [0, 1]
        for m in ex.ABLATION_METRICS:
            vals = np.array([r["means"][m] for r in res["runs"][s]])
            assert np.all((vals >= 0) & (vals <= 1))
            assert res["summary"][s][m]["mean"] == pytest.approx(vals.mean())
            assert res["summary"][s][m]["std"] == pytest.approx(vals.std(ddof=1))


@pytest.mark.slow
def test_ablation_cohorts_cover_the_test_users(ablation_result):
    """Cohort sizes add up to the test users and cohort means are the per-seed means' mean."""
    res = ablation_result
    users = [res["cohorts"]["pia"][c]["users"] for c in COHORT_LABELS]
    assert sum(users) == res["test_users"] == res["data"]["test_users"]
    for c in COHORT_LABELS:
        vals = [r["cohorts"][c]["ndcg@100"] for r in res["runs"]["masking"]]
        got = res["cohorts"]["masking"][c]["ndcg@100"]["mean"]
        if res["cohorts"]["masking"][c]["users"]:
            assert got == pytest.approx(np.mean(vals))
        else:
            assert math.isnan(got)


@pytest.mark.slow
def test_ablation_directions_match_the_runs(ablation_result):
    """The ordering and PIA-gain statements are recomputed from the per-seed runs."""
    res = ablation_result
    runs = res["runs"]
    for step in res["ordering"]["steps"]:
        d = [
            b["means"]["ndcg@100"] - a["means"]["ndcg@100"]
            for a, b in zip(runs[step["lower"]], runs[step["higher"]])
        ]
        assert step["diff_mean"] == pytest.approx(np.mean(d))
        assert step["holds"] == (np.mean(d) > 0)
        assert step["seeds_holding"] == sum(x > 0 for x in d)
        # the same users are defined in every run, so the per-user mean equals the seeds' mean
        assert step["user_paired_mean"] == pytest.approx(np.mean(d))
        assert 0 < step["n_users"] <= res["test_users"] and step["user_paired_se"] > 0
    assert res["ordering"]["holds"] == all(s["holds"] for s in res["ordering"]["steps"])
    gain = res["pia_gain"]
    for c in gain["cohorts_used"]:
        d = [
            p["cohorts"][c]["ndcg@100"] - m["cohorts"][c]["ndcg@100"]
            for m, p in zip(runs["masking"], runs["pia"])
        ]
        assert gain["per_cohort"][c]["gain_mean"] == pytest.approx(np.mean(d))
        if gain["per_cohort"][c]["users"] > 1:
            assert gain["per_cohort"][c]["user_paired_se"] >= 0
    assert all(not k.startswith("_") for r in runs["pia"] for k in r)  # JSON-able runs only


@pytest.mark.slow
def test_rerun_loads_cached_models(ablation_result, tiny_ctx, monkeypatch):
    """A second ablation with the same data and configs trains nothing and agrees exactly."""
    import radius.train

    def no_training(*a, **k):
        raise AssertionError("ablation retrained a cached model")

    monkeypatch.setattr(radius.train, "train", no_training)
    again = ex.ablation(
        tiny_ctx.dataset, seeds=2, base_config=tiny_ctx.base_config, cache_dir=tiny_ctx.cache_dir
    )
    for s in again["settings"]:
        assert again["summary"][s] == ablation_result["summary"][s]


# --------------------------------------------------------------------------- statements
def test_ordering_holds_when_every_step_rises():
    """clean < masking < pia on every seed: the ordering holds on all seeds."""
    runs = _fake_runs({"clean": [0.40, 0.41], "masking": [0.42, 0.43], "pia": [0.44, 0.45]})
    o = ex._ordering(runs, "ndcg@100", ["clean", "masking", "pia"])
    assert o["holds"] and o["all_seeds"]
    assert [s["diff_mean"] for s in o["steps"]] == pytest.approx([0.02, 0.02])


def test_ordering_fails_when_a_step_falls():
    """Negative control: PIA below masking makes the ordering statement false."""
    runs = _fake_runs({"clean": [0.40, 0.41], "masking": [0.45, 0.46], "pia": [0.44, 0.45]})
    o = ex._ordering(runs, "ndcg@100", ["clean", "masking", "pia"])
    assert not o["holds"]
    assert o["steps"][0]["holds"] and not o["steps"][1]["holds"]
    assert o["steps"][1]["seeds_holding"] == 0


def test_clear_drop_is_beyond_two_standard_errors():
    """A consistent fall is as significant as a rise: |mean| > 2 s.e. either way."""
    runs = _fake_runs({"clean": [0.40, 0.41, 0.42], "masking": [0.38, 0.392, 0.401]})
    o = ex._ordering(runs, "ndcg@100", ["clean", "masking"])
    assert not o["holds"] and o["steps"][0]["beyond_2se"]


def test_pia_gain_largest_at_both_ends():
    """Gains 0.03, 0.01, 0.0, 0.02 over the cohorts: largest at both ends."""
    gains = dict(zip(COHORT_LABELS, [0.03, 0.01, 0.0, 0.02]))
    runs = _fake_runs({"masking": [0.4, 0.4], "pia": [0.41, 0.41]}, gains)
    g = ex._pia_gain(runs, "ndcg@100")
    assert g["largest_at_both_ends"] is True
    assert [g["per_cohort"][c]["gain_mean"] for c in COHORT_LABELS] == pytest.approx(
        [0.03, 0.01, 0.0, 0.02]
    )


def test_pia_gain_in_the_middle_is_not_both_ends():
    """Negative control: a middle cohort with the largest gain makes the statement false."""
    gains = dict(zip(COHORT_LABELS, [0.03, 0.05, 0.0, 0.02]))
    runs = _fake_runs({"masking": [0.4, 0.4], "pia": [0.41, 0.41]}, gains)
    assert ex._pia_gain(runs, "ndcg@100")["largest_at_both_ends"] is False


def test_pia_gain_undefined_with_too_few_cohorts():
    """With fewer than 3 non-empty cohorts there is no middle: the statement is undefined."""
    runs = _fake_runs({"masking": [0.4], "pia": [0.41]}, {"5-10": 0.1})
    for r in runs["masking"] + runs["pia"]:
        for c in COHORT_LABELS[2:]:
            r["cohorts"][c] = {"users": 0, "ndcg@100": float("nan")}
    g = ex._pia_gain(runs, "ndcg@100")
    assert g["largest_at_both_ends"] is None and "needs >= 3" in g["reason"]


# --------------------------------------------------------------------------- input and CLI
@pytest.mark.parametrize(
    ("kwargs", "exc", "message"),
    [
        ({"seeds": 0}, ValueError, "seeds must be >= 1, got 0"),
        ({"seeds": 1.5}, TypeError, "seeds must be an int, got float"),
        ({"model": "svd"}, ValueError, "model must be 'multvae' or 'recvae', got 'svd'"),
        ({"settings": ("clean", "dropout")}, ValueError, "settings must be >= 2 names"),
    ],
)
def test_ablation_rejects_bad_input(tiny_dataset, kwargs, exc, message):
    """Bad arguments raise before any training, with exact messages."""
    with pytest.raises(exc, match=message.replace("(", r"\(").replace(")", r"\)")):
        ex.ablation(tiny_dataset, **kwargs)


@pytest.mark.slow
def test_run_experiment_prints_and_writes_json(
    ablation_result, tiny_ctx, tmp_path, monkeypatch, capsys
):
    """`radius experiment ablation` prints both tables and writes the same numbers as JSON."""
    monkeypatch.setattr(ex, "load_dataset", lambda spec: tiny_ctx.dataset)
    out = tmp_path / "abl.json"
    args = argparse.Namespace(
        name="ablation",
        data="default",
        seeds=2,
        model="multvae",
        out=str(out),
        base_config=tiny_ctx.base_config,
        cache_dir=tiny_ctx.cache_dir,
        progress=False,
    )
    assert ex.run_experiment(args) == 0
    text = capsys.readouterr().out
    assert (
        "setting" in text and "pia - masking" in text and "ordering clean < masking < pia" in text
    )
    data = json.loads(out.read_text())
    assert not list(tmp_path.glob(".*.tmp"))
    for s in ("clean", "masking", "pia"):
        assert data["summary"][s]["ndcg@100"]["mean"] == pytest.approx(
            ablation_result["summary"][s]["ndcg@100"]["mean"]
        )
        assert f"{data['summary'][s]['ndcg@100']['mean']:.4f}" in text
