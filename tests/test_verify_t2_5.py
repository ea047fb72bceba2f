"""Tests of the T2.5 claim module: the gap's statement on real pairs, its identities, the
mechanism lines over training seeds, claims run on what was given, and memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
import scipy.sparse as sp

from radius.stats import Interval, Outcome, decide, seed_user_interval
from radius.verify import t2_5
from radius.verify.base import ClaimResult
from radius.verify.context import MissingModelError, VerifyContext

STATEMENT = ("gap_positive_where_posteriors_overlap", "gap_grows_as_posteriors_move_together")
IDENTITIES = (
    "gap_nonnegative",
    "gap_zero_identical_inputs",
    "gap_zero_without_overlap",
    "gap_positive_at_coinciding_means",
)
MECHANISM = (
    "spearman_input_vs_latent_clean",
    "contrast_clean_vs_masking",
    "contrast_clean_vs_pia",
    "cohort_silhouette_clean_gt_masking",
    "cohort_silhouette_clean_gt_pia",
)


@pytest.fixture(scope="module")
def result(tiny_ctx):
    return t2_5.run(tiny_ctx)


def _by_name(r):
    return {c.name: c for c in r.checks}


def test_module_constants():
    """The module states its claim id, title, statement, minimum effects and models."""
    assert t2_5.CLAIM_ID == "2.5" and t2_5.RECONSTRUCTION is True
    assert "p_bar" in t2_5.STATEMENT and t2_5.TITLE
    assert 0 < t2_5.MIN_EFFECT_SILHOUETTE <= 0.05 and 0 < t2_5.MIN_EFFECT_CONTRAST


def test_models_needed_every_setting_and_seed(tiny_ctx):
    """models_needed: clean, masking and PIA for each training seed; none for user models."""
    cfgs = t2_5.models_needed(tiny_ctx)
    assert len(cfgs) == 3 * tiny_ctx.options.seeds
    assert {(c.keep_rate, c.lambda_a > 0) for c in cfgs} == {
        (1.0, False),
        (0.5, False),
        (0.5, True),
    }
    user = VerifyContext(dataset=tiny_ctx.dataset, models={"clean": tiny_ctx.model("clean")})
    assert t2_5.models_needed(user) == []


# --------------------------------------------------------------------------- the tiny models
@pytest.mark.slow
def test_roles_and_verdict_on_tiny_models(result):
    """Two weak statement checks decide (PASS: holds, weak evidence); identities are the
    implementation; the mechanism lines carry two-stage intervals over the training seeds
    and never decide."""
    c = _by_name(result)
    assert [x.name for x in result.by_role("statement")] == list(STATEMENT)
    assert [x.name for x in result.by_role("implementation")] == list(IDENTITIES)
    assert [x.name for x in result.by_role("mechanism")] == list(MECHANISM)
    for name in STATEMENT:
        assert c[name].outcome is Outcome.PASS and c[name].weak and c[name].n > 0, c[name]
    assert result.verdict == "PASS" and "weak evidence" in result.verdict_text
    assert result.implementation == "verified"
    for name in MECHANISM:
        chk = c[name]
        assert chk.interval is not None and chk.min_effect > 0 and chk.note
        assert len(chk.interval.seeds) == 2  # tiny_ctx: two training seeds
        assert "two-stage" in chk.interval.method
    assert result.details["parts_not_run"] == []
    assert result.details["seeds"] == {"clean": 2, "masking": 2, "pia": 2}
    json.dumps(result.to_dict())


@pytest.mark.slow
def test_details_match_checks(result):
    """The reported per-seed rho equal the checks' per-seed values; the gap's rows and the
    overlap are reported; only sampled users were encoded."""
    c = _by_name(result)
    sp_ = result.details["spearman"]
    track = c["spearman_input_vs_latent_clean"]
    assert sp_["clean"]["rho_per_seed"] == pytest.approx(list(track.interval.seeds))
    diff = np.array(sp_["clean"]["rho_per_seed"]) - np.array(sp_["pia"]["rho_per_seed"])
    assert c["contrast_clean_vs_pia"].measured == pytest.approx(diff.mean())
    gap = result.details["gap"]
    assert gap["overlap"]["n_overlapping"] == c["gap_positive_where_posteriors_overlap"].n
    assert gap["rows"] and len(gap["rows"][0]["gap"]) == len(t2_5.LAMBDAS)
    assert result.details["memory"]["encoded_users"] <= result.details["n_users"]


@pytest.mark.slow
def test_permuted_inputs_cannot_hold(tiny_ctx, result):
    """Negative control: the clean codes of permuted users: no mechanism line HOLDS; the
    statement is untouched."""
    r = t2_5.run(tiny_ctx, control="permuted_inputs")
    c = _by_name(r)
    for name in MECHANISM:
        assert c[name].outcome is not Outcome.PASS, c[name]
    for name in STATEMENT:
        assert c[name].outcome is _by_name(result)[name].outcome


@pytest.mark.slow
def test_unweighted_p_bar_fails_statement_and_identities(tiny_ctx):
    """Negative control: the unweighted mean as shared output: G no longer vanishes without
    overlap (identity FAIL: implementation BROKEN) and no longer grows (statement FAIL)."""
    r = t2_5.run(tiny_ctx, p_bar="unweighted")
    c = _by_name(r)
    assert c["gap_zero_without_overlap"].outcome is Outcome.FAIL
    assert c["gap_grows_as_posteriors_move_together"].outcome is Outcome.FAIL
    assert c["gap_grows_as_posteriors_move_together"].note
    assert r.implementation == "BROKEN" and r.verdict == "FAIL"


@pytest.mark.slow
def test_power_rows_flip_and_the_flips_are_real(tiny_ctx):
    """power(): one row per mechanism line; the strongest grade flips each, and each flip
    is a real change of outcome."""
    rows = t2_5.power(tiny_ctx)
    assert [r.check for r in rows] == list(MECHANISM)
    for row in rows:
        assert row.kind == "empirical" and row.grades
        assert row.flips_at is not None, row
        flipped = next(g for g in row.grades if g["grade"] == row.flips_at)
        assert flipped["outcome"] != row.baseline


@pytest.mark.slow
def test_runs_without_pia_and_names_what_is_missing(tiny_ctx):
    """Claims run on what was given: clean + masking only: the statement, the identities and
    the clean-vs-masking lines run; the PIA lines are listed as not run, naming the setting."""
    ctx = VerifyContext(
        dataset=tiny_ctx.dataset,
        options=tiny_ctx.options,
        models={"clean": tiny_ctx.model("clean"), "masking": tiny_ctx.model("masking")},
    )
    r = t2_5.run(ctx)
    names = {c.name for c in r.checks}
    assert set(STATEMENT) | set(IDENTITIES) <= names
    assert {"contrast_clean_vs_masking", "cohort_silhouette_clean_gt_masking"} <= names
    assert not any(n.endswith("_pia") for n in names)
    (part,) = r.details["parts_not_run"]
    assert "'pia' model" in part and "contrast_clean_vs_pia" in part
    track = _by_name(r)["spearman_input_vs_latent_clean"]
    assert "one training seed" in track.note  # one user model: no training spread
    assert r.verdict == "PASS"


def test_missing_clean_raises(tiny_ctx):
    """Without the clean model nothing can run: MissingModelError naming it."""
    ctx = VerifyContext(
        dataset=tiny_ctx.dataset, options=tiny_ctx.options, models={"pia": tiny_ctx.model("pia")}
    )
    with pytest.raises(MissingModelError, match="needs the 'clean' model"):
        t2_5.run(ctx)


@pytest.mark.slow
def test_runs_on_recvae(tiny_recvae_ctx):
    """RecVAE: the claim runs unchanged (sparse encoder path) with all its lines."""
    r = t2_5.run(tiny_recvae_ctx)
    assert {c.name for c in r.checks} == set(STATEMENT) | set(IDENTITIES) | set(MECHANISM)
    assert r.implementation == "verified"


# --------------------------------------------------------------------------- constructed cases
def test_positive_check_pass_fail_vacuous():
    """G > 0 on every overlapping pair PASSes (weak); G = 0 on an overlapping pair FAILs;
    no pair overlapping is VACUOUS, with the largest BC in the note."""
    g = np.array([1e-3, 2.0, 1e-40])
    lbc = np.array([-5.0, -0.5, -80.0])  # two overlap (BC >= 1e-6), one does not
    ok = t2_5.positive_check(g, lbc)
    assert ok.outcome is Outcome.PASS and ok.n == 2 and ok.weak and ok.role == "statement"
    bad = t2_5.positive_check(np.array([0.0, 2.0, 1e-40]), lbc)
    assert bad.outcome is Outcome.FAIL and "G = 0 on 1 of 2" in bad.note
    vac = t2_5.positive_check(np.array([1e-30, 1e-40]), np.array([-60.0, -80.0]))
    assert vac.outcome is Outcome.VACUOUS and vac.n == 0 and "largest BC" in vac.note
    assert ClaimResult("2.5", "t", "s", True, [vac]).verdict == "VACUOUS"


def _path(values, se=0.01):
    v = np.atleast_2d(np.asarray(values, dtype=float))
    return v, np.full((v.shape[0], v.shape[1] - 1), se), np.full(v.shape[0], se)


def test_growth_check_pass_fail_inconclusive():
    """A rising path PASSes; a step down beyond the tolerance FAILs (the statement fails);
    a rise within the Monte Carlo resolution is INCONCLUSIVE."""
    rising = [[0.0, 1.0, 2.0, 3.0, 4.0]] * 5
    assert t2_5.growth_check(*_path(rising)).outcome is Outcome.PASS
    dip = [[0.0, 1.0, 0.5, 3.0, 4.0]] + rising[1:]
    c = t2_5.growth_check(*_path(dip))
    assert c.outcome is Outcome.FAIL and "does not grow along the path on 1 of 5" in c.note
    flat0 = [[2.0, 2.0, 2.0, 2.0, 2.0]] + rising[1:]
    c = t2_5.growth_check(*_path(flat0, se=0.0))
    assert c.outcome is Outcome.FAIL and "1 flat" in c.note
    flat = [[1.0, 1.0, 1.0, 1.0, 1.001]] + rising[1:]
    c = t2_5.growth_check(*_path(flat))
    assert c.outcome is Outcome.INCONCLUSIVE and "resolution" in c.note
    assert t2_5.growth_check(np.zeros((0, 5)), np.zeros((0, 4)), np.zeros(0)).outcome is (
        Outcome.INCONCLUSIVE
    )


def _pairs(n=300, seed=0):
    rng = np.random.default_rng(seed)
    return rng.random(n), rng


def test_tracking_holds_contradicted_not_observed_inconclusive():
    """tracking_check over (seeds, pairs): W2 increasing in d_x HOLDS, decreasing is
    CONTRADICTED, independent noise on many pairs is NOT OBSERVED (inside +-0.1), on few
    pairs INCONCLUSIVE."""
    d, rng = _pairs(2000)
    noise = 0.2 * rng.standard_normal((3, d.size))
    assert t2_5.tracking_check(d, d + noise).label == "HOLDS"
    assert t2_5.tracking_check(d, -d + noise).label == "CONTRADICTED"
    indep = t2_5.tracking_check(d, rng.random((3, d.size)))
    assert indep.label == "NOT OBSERVED" and "no effect of the stated minimum size" in indep.note
    few = t2_5.tracking_check(d[:60], rng.random((3, 60)))
    assert few.label == "INCONCLUSIVE" and few.n == 60
    tiny = t2_5.tracking_check(d[:10], d[:10])
    assert tiny.label == "INCONCLUSIVE" and "need 20" in tiny.note


def test_contrast_is_paired_and_spans_seeds():
    """contrast_check: a tighter clean model HOLDS, a looser one is CONTRADICTED; the
    interval spans the seeds (a seed where the effect is absent widens it)."""
    d, rng = _pairs()
    tight = d + 0.05 * rng.standard_normal((3, d.size))
    loose = d + 0.8 * rng.standard_normal((3, d.size))
    c = t2_5.contrast_check(d, tight, loose, other="pia")
    assert c.label == "HOLDS" and c.name == "contrast_clean_vs_pia" and len(c.interval.seeds) == 3
    assert t2_5.contrast_check(d, loose, tight, other="masking").label == "CONTRADICTED"
    mixed = t2_5.contrast_check(d, np.vstack([tight[:2], loose[:1]]), loose, other="pia")
    assert mixed.interval.high - mixed.interval.low > c.interval.high - c.interval.low


def test_seed_pair_interval_is_the_two_stage_bootstrap_for_means():
    """For a mean statistic, seed_pair_interval equals seed_user_interval on the values."""
    v = np.random.default_rng(2).normal(size=(3, 50))
    a = t2_5.seed_pair_interval(lambda s, p: float(v[s][:, p].mean()), 3, 50, seed=4)
    b = seed_user_interval(v, seed=4)
    assert (a.estimate, a.low, a.high) == pytest.approx((b.estimate, b.low, b.high))
    assert a.seeds == pytest.approx(b.seeds)


def _sil(mean, n=200, s=3, seed=0):
    return mean + 0.05 * np.random.default_rng(seed).standard_normal((s, n))


def test_silhouette_not_observed_without_cohort_structure():
    """Every model's silhouette below 0: NOT OBSERVED (VACUOUS), with the silhouettes in the
    note, even where clean's difference would read HOLDS or CONTRADICTED."""
    clean, pia = _sil(-0.05), _sil(-0.15, seed=1)
    st = t2_5.cohort_structure({"clean": clean, "pia": pia})
    c = t2_5.silhouette_check(clean, pia, other="pia", structure=st)
    assert c.outcome is Outcome.VACUOUS and c.label == "NOT OBSERVED" and c.role == "mechanism"
    assert "no cohort structure in any model" in c.note and "clean -0.05" in c.note
    assert t2_5.silhouette_check(clean, pia, other="pia").label == "HOLDS"  # no premise given


def test_silhouette_with_structure_holds_contradicted_not_observed():
    """With a model that clusters (interval above 0): a difference beyond 0.02 HOLDS, below
    -0.02 is CONTRADICTED, inside +-0.02 NOT OBSERVED."""
    base = _sil(0.2)
    for other, label in [(_sil(0.1, seed=1), "HOLDS"), (_sil(0.3, seed=1), "CONTRADICTED"),
                         (base + 0.001, "NOT OBSERVED")]:  # fmt: skip
        st = t2_5.cohort_structure({"clean": base, "other": other})
        assert t2_5.silhouette_check(base, other, other="masking", structure=st).label == label


def test_mechanism_contradicted_while_statement_holds():
    """A mechanism line CONTRADICTED never changes the statement's verdict."""
    d, rng = _pairs()
    mech = t2_5.tracking_check(d, -d + 0.1 * rng.standard_normal((2, d.size)))
    stmt = t2_5.positive_check(np.array([1.0, 2.0]), np.array([-1.0, -2.0]))
    res = ClaimResult("2.5", "t", "s", True, [stmt, mech])
    assert mech.label == "CONTRADICTED" and res.verdict == "PASS"
    assert res.mechanism == "CONTRADICTED"


def test_silhouette_per_user_separates_planted_clusters():
    """silhouette_per_user is near 1 for well-separated labelled clusters, None for one label."""
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    mu = rng.standard_normal((60, 3)) * 0.1 + labels[:, None] * 10.0
    assert t2_5.silhouette_per_user(mu, labels).mean() > 0.9
    assert t2_5.silhouette_per_user(mu, np.zeros(60, dtype=int)) is None


def test_spearman_matches_scipy_with_ties():
    """Spearman (and the count-based ranks of resampled pairs) equal scipy's with ties."""
    from scipy.stats import spearmanr

    a = np.array([1.0, 2, 2, 3, 5, 4, 7, 2])
    b = np.array([0.5, 0.1, 0.3, 0.3, 0.9, 1.2, 0.8, 0.3])
    assert t2_5.spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    idx = np.array([0, 0, 1, 2, 5, 5, 6, 7])
    keys = t2_5._tie_keys(np.vstack([a, b]))
    got = t2_5._spearman_keys(keys, idx)[0]
    assert got == pytest.approx(spearmanr(a[idx], b[idx]).statistic)
    with pytest.raises(ValueError, match="must be 1-D of the same length"):
        t2_5.spearman_interval(a, b[:3])


def test_pair_distances_exact_ties_and_values():
    """Sparse pair distances equal the dense formulas; pairs without a shared item are
    exact ties at sqrt(2) (rounding noise would order them by activity)."""
    rng = np.random.default_rng(0)
    x = sp.csr_matrix((rng.random((40, 30)) < rng.uniform(0.05, 0.5, (40, 1))).astype(float))
    x[0, :] = 0
    x[0, 0] = 1
    x[1, :] = 0
    x[1, 1:9] = 1  # disjoint from row 0, different activity
    x[2, :] = 0
    x[2, 2:5] = 1  # disjoint from row 0
    x = sp.csr_matrix(x)
    a, b = np.array([0, 0, 3, 4]), np.array([1, 2, 5, 6])
    dist, l1 = t2_5._pair_distances(x, a, b)
    xd = x.toarray()
    xn = xd / np.linalg.norm(xd, axis=1, keepdims=True)
    assert dist == pytest.approx(np.linalg.norm(xn[a] - xn[b], axis=1), abs=1e-10)
    assert l1 == pytest.approx(np.abs(xd[a] - xd[b]).sum(axis=1))
    assert dist[0] == dist[1] == np.round(np.sqrt(2.0), 12)


@pytest.mark.slow
def test_encode_chunks_match_dense_and_sparse_paths(tiny_ctx, monkeypatch):
    """_encode in small chunks (both the model's sparse path and the protocol's dense
    encode) equals encoding all rows at once."""
    import torch

    model = tiny_ctx.model("pia")
    x = tiny_ctx.dataset.test_tr.tocsr()
    rows = np.arange(0, x.shape[0], 3)
    with torch.no_grad():
        mu, lv = model.encode(torch.as_tensor(x[rows].toarray(), dtype=torch.float32))
    monkeypatch.setattr(t2_5, "ENCODE_CHUNK_ELEMENTS", 7 * x.shape[1])
    m1, l1 = t2_5._encode(model, x, rows)
    assert m1 == pytest.approx(mu.double().numpy(), abs=1e-5)

    class Dense(torch.nn.Module):  # the protocol only: no encode_sparse
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def encode(self, xb):
            return self.inner.encode(xb)

    m2, l2 = t2_5._encode(Dense(model), x, rows)
    assert m2 == pytest.approx(mu.double().numpy(), abs=1e-6)
    assert l2 == pytest.approx(lv.double().numpy(), abs=1e-6)


def test_bad_options(tiny_ctx):
    """Bad options raise with exact messages."""
    with pytest.raises(ValueError, match="control must be None or 'permuted_inputs'"):
        t2_5.run(tiny_ctx, control="shuffle")
    with pytest.raises(ValueError, match="p_bar must be 'optimal' or 'unweighted', got 'mean'"):
        t2_5.run(tiny_ctx, p_bar="mean")
    with pytest.raises(ValueError, match=r"level must be in \(0, 1\), got 1"):
        t2_5.run(tiny_ctx, level=1)


def test_interval_decisions_use_min_effect():
    """A mechanism check's outcome is decide() with its stated minimum effect."""
    iv = Interval(0.05, 0.03, 0.07, 0.95, "m", 100, (0.05, 0.05))
    c = t2_5.mechanism_check("x", "d", iv, min_effect=0.02, min_n=20, tolerance="t")
    assert c.outcome == decide(iv, min_effect=0.02, min_n=20) == Outcome.PASS
    assert c.role == "mechanism" and "per training seed" in c.note
