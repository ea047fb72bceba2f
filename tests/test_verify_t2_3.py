"""Tests of the T2.3 claim module: roles, training points and the pair search on a tiny
trained model; each outcome of the pure checks on constructed cases (vacuous, assumption
not met, mechanism contradicted while the statement holds, a statement that fails);
negative controls on the real model; the power table; user models, along training and
the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp
import torch
from torch import nn

from radius.errors import RadiusError
from radius.stats import Outcome
from radius.verify import t2_3
from radius.verify.base import Check, ClaimResult
from radius.verify.context import VerifyContext

ROLES = {
    "transfer_bound": "statement",
    "positive_inside_radius": "statement",
    "transfer_decays_with_w2": "statement",
    "lipschitz_covers_secants": "assumption",
    "transfer_decays_with_w2[jaccard]": "mechanism",
    "transfer_decays_with_w2[latent]": "mechanism",
    "transfer_decays_with_w2[random]": "mechanism",
    "near_transfer_exceeds_random": "mechanism",
    "radius_certifies_transfer": "mechanism",
    "first_order_slope[output]": "implementation",
    "first_order_slope[decoder]": "implementation",
    "search_matches_exact": "implementation",
    "transfer_bound[probe]": "implementation",
    "positive_inside_radius[probe]": "implementation",
}


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return t2_3.run(tiny_ctx)


def _check(res, name):
    return next(c for c in res.checks if c.name == name)


# ---------------------------------------------------------------------------- the real run
@pytest.mark.slow
def test_roles_training_points_and_json(result, tiny_ctx):
    """Every check has its role; four training points of the cached model's own run; the
    result serialises to JSON."""
    assert {c.name: c.role for c in result.checks} == ROLES
    assert all(c.tolerance for c in result.checks)
    assert all(c.note for c in result.checks if c.outcome is not Outcome.PASS)
    d = result.details
    labels = [p["label"] for p in d["training_points"]]
    assert labels[:3] == ["init", "epoch 1", "epoch 3"] and labels[3].startswith("best epoch (")
    assert [p["epochs"] for p in d["training_points"]][:3] == [0, 1, 3]
    assert d["parts_not_run"] == [] and d["seeds"] == tiny_ctx.options.seeds
    assert d["setting"] == "pia" and "side file" in d["training_points_source"]
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_search_covers_all_users_by_the_theorems_quantity(result, tiny_ctx):
    """On the tiny data every training user is an anchor, thousands of candidates are
    screened at every point, and the screening equals the exact statistics."""
    n = tiny_ctx.dataset.train.shape[0]
    points = result.details["training_points"]
    for i, p in enumerate(points):
        s = p["search"]
        assert s["anchors"] == n and s["candidates_screened"] >= 10 * n
        assert 0.0 <= s["fraction_r_share_positive"] <= 1.0
        kinds = {"searched", "jaccard", "random"} | ({"latent"} if i == len(points) - 1 else set())
        assert {r["kind"] for r in p["rows"]} == kinds
        assert p["n_inside"] == sum(r["inside"] for r in p["rows"])
    assert _check(result, "search_matches_exact").passed
    assert result.implementation == "verified"
    for row in result.details["first_order"]["output"]:
        assert row["inner_factorised"] == pytest.approx(row["inner"], rel=1e-8)


@pytest.mark.slow
def test_cases_are_pooled_over_training_points(result):
    """positive_inside_radius counts (pair, point) cases over every training point."""
    c = _check(result, "positive_inside_radius")
    points = result.details["training_points"]
    assert c.n == sum(p["n_inside"] for p in points) == result.details["n_inside_radius"]
    assert result.details["n_cases"] == sum(p["n_pairs"] for p in points)
    tb = _check(result, "transfer_bound")
    assert tb.n == result.details["n_cases"]


@pytest.mark.slow
def test_negative_controls_fail_the_statement(tiny_ctx, result):
    """L_thz / 10 fails the bound and the assumption; understating Delta_x in r_share puts
    negatively transferring pairs inside; W2 permuted breaks the decay; a wrong first
    order breaks the implementation. The controls change only what they plant."""
    low_l = t2_3.run(tiny_ctx, lipschitz_scale=0.1)
    assert _check(low_l, "transfer_bound").outcome is Outcome.FAIL
    assert _check(low_l, "lipschitz_covers_secants").label == "NOT MET"
    assert low_l.outcome is Outcome.FAIL and "checked outside its premises" in low_l.verdict_text
    inflated = t2_3.run(tiny_ctx, delta_x_scale=0.0)
    bad = _check(inflated, "positive_inside_radius")
    assert bad.outcome is Outcome.FAIL and "<g_u, g_v> <= 0" in bad.note
    shuffled = t2_3.run(tiny_ctx, shuffle_latent=True)
    assert _check(shuffled, "transfer_decays_with_w2").outcome is not Outcome.PASS
    fo = t2_3.run(tiny_ctx, first_order_scale=2.0)
    assert fo.implementation == "BROKEN" and fo.outcome is Outcome.FAIL
    a = {(r["u"], r["v"]): r["inner"] for p in result.details["training_points"] for r in p["rows"]}
    b = {(r["u"], r["v"]): r["inner"] for p in low_l.details["training_points"] for r in p["rows"]}
    assert a == b


@pytest.mark.slow
def test_no_pair_inside_is_vacuous_with_the_distance(tiny_ctx):
    """With no real case inside (an infinite L_thz empties every radius) the statement is
    VACUOUS, and the note gives the per-point fraction with r_share > 0."""
    res = t2_3.run(tiny_ctx, lipschitz_scale=float("inf"))
    c = _check(res, "positive_inside_radius")
    assert c.outcome is Outcome.VACUOUS and c.n == 0
    assert "premise holds for too few real cases" in c.note
    for p in res.details["training_points"]:
        assert f"{p['label']}: r_share > 0 for" in c.note
    assert res.outcome in (Outcome.VACUOUS, Outcome.INCONCLUSIVE, Outcome.FAIL)
    if all(x.outcome is Outcome.PASS for x in res.by_role("statement") if x is not c):
        assert res.outcome is Outcome.VACUOUS


@pytest.mark.slow
def test_assumption_met_and_not_met(tiny_ctx):
    """The L_thz estimate scaled above the largest secant ratio is MET; below it NOT MET,
    and the verdict then says the statement was checked outside its premises."""
    base = t2_3.run(tiny_ctx)
    worst = _check(base, "lipschitz_covers_secants").measured
    over = t2_3.run(tiny_ctx, lipschitz_scale=1.1 * worst)
    assert _check(over, "lipschitz_covers_secants").label == "MET"
    assert "outside its premises" not in over.verdict_text
    under = t2_3.run(tiny_ctx, lipschitz_scale=0.9 * worst)
    assert _check(under, "lipschitz_covers_secants").label == "NOT MET"
    if under.by_role("statement"):
        assert "checked outside its premises (lipschitz_covers_secants not met)" in (
            under.verdict_text
        )


@pytest.mark.slow
def test_power_rows_and_reported_flip_really_fails(tiny_ctx, result):
    """power() covers the statement checks and the assumption; the reported flips of the
    bound and of the radius reproduce through run()."""
    rows = t2_3.power(tiny_ctx)
    names = {r.check for r in rows}
    assert names == {c.name for c in result.checks if c.decides} | {"lipschitz_covers_secants"}
    for r in rows:
        assert r.baseline == _check(result, r.check).outcome.value
    tb = next(r for r in rows if r.check == "transfer_bound")
    assert tb.flips_at is not None, tb
    flipped = t2_3.run(tiny_ctx, lipschitz_scale=float(tb.flips_at.lstrip("x")))
    assert _check(flipped, "transfer_bound").outcome is Outcome.FAIL
    pr = next(r for r in rows if r.check == "positive_inside_radius")
    assert pr.flips_at is not None, pr
    flipped = t2_3.run(tiny_ctx, delta_x_scale=float(pr.flips_at.lstrip("x")))
    assert _check(flipped, "positive_inside_radius").outcome.value != pr.baseline


def test_models_needed(tiny_ctx, tiny_dataset):
    """radius's own models: one pia config per training seed; user models: none."""
    got = t2_3.models_needed(tiny_ctx)
    assert got == tiny_ctx.seed_configs(["pia"]) and len(got) == tiny_ctx.options.seeds
    user = VerifyContext(dataset=tiny_dataset, models={"clean": _user_model(tiny_dataset)})
    assert t2_3.models_needed(user) == []


# ---------------------------------------------------------------------------- user models
def _user_model(ds, seed: int = 0):
    from radius.model import wrap

    torch.manual_seed(seed)
    n = ds.n_items
    enc = nn.Sequential(nn.Linear(n, 16), nn.Tanh(), nn.Linear(16, 8))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n))
    return wrap(enc, dec)


@pytest.fixture(scope="module")
def user_ctx(tiny_dataset):
    from radius.verify.base import VerifyOptions

    opts = VerifyOptions(seed=0, n_pairs=40, n_users=20, n_mc=4, seeds=1, quick=True)
    return VerifyContext(
        dataset=tiny_dataset, options=opts, models={"masking": _user_model(tiny_dataset)}
    )


@pytest.mark.slow
def test_user_model_without_pia_runs_on_masking_and_says_so(user_ctx):
    """No pia model: the claim runs on masking, names it and the missing training points;
    one model is one seed, and the mechanism intervals say so."""
    res = t2_3.run(user_ctx)
    d = res.details
    assert d["setting"] == "masking"
    assert any("the 'pia' model" in s and "'masking'" in s for s in d["parts_not_run"])
    assert any("--along LABEL=PATH" in s for s in d["parts_not_run"])
    assert [p["label"] for p in d["training_points"]] == ["given model"]
    assert d["seeds"] == 1


@pytest.mark.slow
def test_along_models_are_training_points(user_ctx, tiny_dataset):
    """along={"init": m0, "epoch 1": m1} adds those points before the given model."""
    along = {"init": _user_model(tiny_dataset, 1), "epoch 1": _user_model(tiny_dataset, 2)}
    res = t2_3.run(user_ctx, along=along)
    labels = [p["label"] for p in res.details["training_points"]]
    assert labels == ["init", "epoch 1", "given model"]
    assert not any("--along" in s for s in res.details["parts_not_run"])
    with pytest.raises(TypeError, match="along must map labels to models, got list"):
        t2_3.run(user_ctx, along=[_user_model(tiny_dataset)])


def test_no_model_at_all_is_not_run(tiny_dataset):
    """Without any of pia, masking, clean nothing runs: INCONCLUSIVE naming pia."""
    from radius.verify.api import run_claim

    ctx = VerifyContext(dataset=tiny_dataset, models={})
    res = run_claim("2.3", ctx)
    assert res.verdict == "INCONCLUSIVE" and res.details["missing"] == ["pia"]


def test_load_along_errors(tiny_dataset):
    """--along specs: LABEL=PATH, each label once, an existing file."""
    with pytest.raises(RadiusError, match="--along expects LABEL=PATH"):
        t2_3.load_along(["e1.pt"], tiny_dataset)
    with pytest.raises(RadiusError, match="no checkpoint at /nonexistent.pt"):
        t2_3.load_along(["init=/nonexistent.pt"], tiny_dataset)


FACTORY = """
from torch import nn
from radius.model import wrap

def build(n_items):
    enc = nn.Sequential(nn.Linear(n_items, 16), nn.Tanh(), nn.Linear(16, 8))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n_items))
    return wrap(enc, dec)
"""


@pytest.mark.slow
def test_cli_along(tiny_dataset, tmp_path, capsys):
    """radius verify --theorem 2.3 --checkpoint clean=... --along init=... --along 'epoch
    1=...': the JSON has the three training points (the only model given, a clean one
    without anchors, is the one verified); a repeated label exits 2."""
    from radius.cli import main

    data = tiny_dataset.save(tmp_path / "data")
    (tmp_path / "fac.py").write_text(FACTORY)
    paths = {}
    for i, name in enumerate(("init", "e1", "pia")):
        paths[name] = tmp_path / f"{name}.pt"
        torch.save(_user_model(tiny_dataset, i).state_dict(), paths[name])
    out = tmp_path / "out"
    factory = f"{tmp_path / 'fac.py'}:build"
    argv = ["verify", "--theorem", "2.3", "--data", str(data), "--n-pairs", "24", "--n-mc",
            "4", "--seeds", "1", "--out", str(out), "--model-factory", factory,
            "--checkpoint", f"clean={paths['pia']}", "--along", f"init={paths['init']}",
            "--along", f"epoch 1={paths['e1']}"]  # fmt: skip
    code = main(argv)
    assert code in (0, 1, 3, 4), capsys.readouterr()
    rep = json.loads((out / "t2_3.json").read_text())
    assert [p["label"] for p in rep["details"]["training_points"]] == [
        "init",
        "epoch 1",
        "given model",
    ]
    assert main([*argv, "--along", f"init={paths['e1']}"]) == 2
    assert "training point 'init' given twice" in capsys.readouterr().err


# ---------------------------------------------------------------------------- pure checks
def test_check_transfer_bound_outcomes_and_weak():
    """>= 99% holding: PASS; 1.5% violations: FAIL; no case: INCONCLUSIVE; a bound that
    also holds with L_thz x0.1 is labelled weak evidence."""
    diff = np.ones(200)
    ok = t2_3.check_transfer_bound(diff, np.full(200, 1.0))
    assert ok.outcome is Outcome.PASS and ok.role == "statement" and not ok.weak
    bound = np.full(200, 2.0)
    bound[:3] = 0.5
    bad = t2_3.check_transfer_bound(diff, bound)
    assert bad.outcome is Outcome.FAIL and "holds on 197 of 200 cases" in bad.note
    empty = t2_3.check_transfer_bound(np.zeros(0), np.zeros(0))
    assert empty.outcome is Outcome.INCONCLUSIVE and empty.n == 0
    weak = t2_3.check_transfer_bound(diff, np.full(200, 3.0), bound_weak=np.full(200, 1.2))
    assert weak.outcome is Outcome.PASS and "L_thz x0.1" in weak.weak
    res = ClaimResult("2.3", "t", "s", True, [weak])
    assert res.verdict_text == "PASS; holds; weak evidence"
    probe = t2_3.check_transfer_bound(diff, bound, evidence="probe")
    assert probe.role == "implementation" and probe.name == "transfer_bound[probe]"


def test_check_radius_outcomes():
    """Enough cases inside, all positive: PASS; any negative inside: FAIL (even one);
    too few inside: VACUOUS for real pairs (with the distance), INCONCLUSIVE for probes."""
    w2 = np.linspace(0.1, 1.0, 10)
    inner = np.ones(10)
    assert t2_3.check_radius(inner, w2, np.full(10, 0.55)).outcome is Outcome.PASS
    inner_bad = inner.copy()
    inner_bad[0] = -1.0
    fail = t2_3.check_radius(inner_bad, w2, np.full(10, 0.15))
    assert fail.outcome is Outcome.FAIL and "1 of 1 cases inside" in fail.note
    few = t2_3.check_radius(inner, w2, np.full(10, 0.35), mu_dist=w2 / 2)
    assert few.outcome is Outcome.VACUOUS and few.n == 3 and "need 5" in few.note
    none = t2_3.check_radius(inner, w2, np.full(10, 0.05), mu_dist=w2)
    assert none.outcome is Outcome.VACUOUS and none.n == 0
    assert "max r_share / ||mu_u - mu_v|| = 0.5 " in none.note and "2x outside" in none.note
    probe = t2_3.check_radius(inner, w2, np.zeros(10), evidence="probe")
    assert probe.outcome is Outcome.INCONCLUSIVE and probe.role == "implementation"


def test_check_lipschitz_met_not_met():
    """Estimates above every secant (or short by less than the stated 5%): MET; one secant
    above its estimate by more: NOT MET; no secant: INCONCLUSIVE."""
    lip = np.array([2.0, 3.0, 4.0])
    met = t2_3.check_lipschitz(lip, np.array([1.0, 2.9, np.nan]))
    assert met.label == "MET" and met.n == 2 and met.role == "assumption"
    close = t2_3.check_lipschitz(lip, np.array([1.0, 3.1, 4.0]))  # 3% over: the estimator's
    assert close.label == "MET" and "1 above it by less than 5%" in close.note
    not_met = t2_3.check_lipschitz(lip, np.array([1.0, 3.3, 4.0]))
    assert not_met.label == "NOT MET" and "1 cases above the estimate" in not_met.note
    assert not_met.measured == pytest.approx(1.1)
    none = t2_3.check_lipschitz(lip, np.full(3, np.nan))
    assert none.outcome is Outcome.INCONCLUSIVE


def test_assumption_not_met_marks_the_verdict():
    """A statement that holds, checked where the assumption is not met, says so."""
    st = t2_3.check_transfer_bound(np.ones(10), np.full(10, 2.0))
    lip = t2_3.check_lipschitz(np.ones(3), np.array([0.5, 2.0, 0.1]))
    res = ClaimResult("2.3", "t", "s", True, [st, lip])
    assert res.verdict == "PASS" and res.assumptions == "not met"
    assert "checked outside its premises (lipschitz_covers_secants not met)" in res.verdict_text


def test_mechanism_contradicted_while_statement_holds():
    """A stratum whose transfer rises with W2 is CONTRADICTED as a mechanism line; the
    verdict rests on the statement only."""
    rng = np.random.default_rng(0)
    w2 = [rng.random(60) for _ in range(2)]
    rising = [a + 0.1 * rng.standard_normal(60) for a in w2]
    mech = t2_3._mechanism_decay("random", w2, rising, seed=0)
    assert mech.role == "mechanism" and mech.label == "CONTRADICTED"
    assert mech.interval.seeds is not None and len(mech.interval.seeds) == 2
    st = t2_3.check_transfer_bound(np.ones(10), np.full(10, 2.0))
    res = ClaimResult("2.3", "t", "s", True, [st, mech])
    assert res.verdict == "PASS" and res.mechanism == "CONTRADICTED"
    flat = [rng.random(60) * 1e-3 + 0.5 for _ in range(2)]
    none = t2_3._mechanism_decay("latent", w2, [np.sort(f) for f in flat], seed=0)
    assert none.label in ("HOLDS", "CONTRADICTED", "INCONCLUSIVE", "NOT OBSERVED")


def test_check_search_and_first_order():
    """The screening matches the exact ratio within 1e-4 (else FAIL); slopes near 2 pass,
    a slope of 1 or none fails."""
    assert t2_3.check_search(np.array([1.0, 2.0]), np.array([1.0, 2.00001])).passed
    bad = t2_3.check_search(np.array([1.0, 2.1]), np.array([1.0, 2.0]))
    assert not bad.passed and "0.05" in bad.note
    assert not t2_3.check_search(np.zeros(0), np.zeros(0)).passed
    assert t2_3.check_first_order(np.array([1.95, 2.05])).passed
    assert not t2_3.check_first_order(np.array([2.0, 1.0])).passed
    assert not t2_3.check_first_order(np.array([])).passed


def test_check_decay_outcomes_and_groups():
    """Decreasing: HOLDS; planted increase: CONTRADICTED; unrelated or too few:
    INCONCLUSIVE; with groups the bootstrap resamples groups (units = groups)."""
    rng = np.random.default_rng(0)
    w2 = rng.random(90)
    noise = 0.1 * rng.standard_normal(90)
    holds = t2_3.check_decay(w2, -w2 + noise)
    assert holds.outcome is Outcome.PASS and holds.role == "statement"
    assert t2_3.check_decay(w2, w2 + noise).outcome is Outcome.FAIL
    assert t2_3.check_decay(w2, rng.standard_normal(90)).outcome is Outcome.INCONCLUSIVE
    few = t2_3.check_decay(w2[:5], -w2[:5])
    assert few.outcome is Outcome.INCONCLUSIVE and "need" in few.note
    grouped = t2_3.check_decay(w2, -w2 + noise, groups=np.repeat(np.arange(30), 3))
    assert grouped.outcome is Outcome.PASS and "30 anchors" in grouped.interval.method


def test_spearman_matches_scipy():
    """The rank correlation used in the bootstraps equals scipy's."""
    from scipy import stats

    rng = np.random.default_rng(3)
    a, b = rng.random(50), rng.integers(0, 5, 50).astype(float)
    assert t2_3.spearman(a, b) == pytest.approx(stats.spearmanr(a, b).statistic, rel=1e-12)
    assert np.isnan(t2_3.spearman(a, np.ones(50)))


def test_edit_probes_remove_exactly_one_item(tiny_dataset):
    """Each probe is its anchor's row with exactly one of its items removed."""
    x = sp.csr_matrix(tiny_dataset.train)
    anchors = np.arange(30)
    edited, kept = t2_3.edit_probes(x, anchors, rng=np.random.default_rng(0))
    assert edited.shape == (len(kept), x.shape[1]) and set(kept) <= set(anchors)
    diff = x[kept] - edited
    assert np.all(diff.toarray() >= 0)
    np.testing.assert_array_equal(np.asarray(diff.sum(1)).ravel(), 1)


def test_permute_keeps_values():
    """The power perturbation permutes W2 values among the pairs."""
    w2 = np.arange(12, dtype=float)
    out = t2_3._permute(w2, 1.0, np.random.default_rng(0))
    assert sorted(out) == list(w2) and not np.array_equal(out, w2)
    np.testing.assert_array_equal(t2_3._permute(w2, 0.0, np.random.default_rng(0)), w2)


def test_statement_checks_decide_alone():
    """Only the statement checks decide: a failing mechanism line leaves PASS."""
    st = t2_3.check_transfer_bound(np.ones(10), np.full(10, 2.0))
    mech = Check("m", "d", 0.0, 0.0, -1.0, "t", False, n=5, role="mechanism", note="x")
    assert ClaimResult("2.3", "t", "s", True, [st, mech]).verdict == "PASS"
