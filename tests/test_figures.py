"""Figures: each renders on the tiny data, and its data file matches what was drawn."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from radius.data.dataset import COHORTS
from radius.errors import RadiusError

COHORT_LABELS = [c[0] for c in COHORTS]
FIGURE_NAMES = ["tsne", "cohorts", "radius", "masking", "beta"]


def _png_ok(path: Path) -> tuple[int, int]:
    """The file is a readable PNG of nonzero size; returns (width, height)."""
    assert path.is_file() and path.stat().st_size > 0
    with Image.open(path) as im:
        assert im.format == "PNG"
        im.verify()
    with Image.open(path) as im:
        w, h = im.size
    assert w > 100 and h > 100
    return w, h


def _csv(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _f(v: str) -> float:
    return float(v) if v not in ("", "None") else math.nan


@pytest.fixture(scope="module")
def out_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("figures")


# --------------------------------------------------------------------------- t-SNE
def test_cohort_separation_of_separated_clusters():
    """Cohorts placed in far-apart clusters have silhouette near 1 and kNN purity 1."""
    from radius.figures.tsne import cohort_separation

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(3), 30)
    mu = rng.normal(size=(90, 4)) * 0.1 + labels[:, None] * 10.0
    st = cohort_separation(mu, labels, k=5, counts=np.exp(labels + 1.0))
    assert st["silhouette"] > 0.9 and st["knn_purity"] == 1.0
    assert st["knn_log_count_spearman"] > 0.9


def test_cohort_separation_of_shuffled_labels_is_near_chance():
    """Negative control: labels unrelated to the points give purity near chance, silhouette ~ 0."""
    from radius.figures.tsne import cohort_separation

    rng = np.random.default_rng(1)
    mu = rng.normal(size=(400, 4))
    labels = rng.integers(0, 3, size=400)
    st = cohort_separation(mu, labels, k=10)
    assert abs(st["knn_purity"] - st["knn_purity_chance"]) < 0.06
    assert abs(st["silhouette"]) < 0.05
    assert math.isnan(st["knn_log_count_spearman"])


def test_cohort_separation_rejects_bad_shapes():
    """Labels that do not match the points raise with the expected shape."""
    from radius.figures.tsne import cohort_separation

    with pytest.raises(ValueError, match=r"labels must have shape \(5,\), got \(4,\)"):
        cohort_separation(np.zeros((5, 2)), np.zeros(4))


@pytest.mark.slow
def test_tsne_figure(tiny_ctx, out_dir):
    """Three panels of the same users; the numbers in the JSON are valid and match the CSV."""
    from radius.figures.tsne import collect_tsne, draw_tsne

    data = collect_tsne(tiny_ctx, n_users=60, max_iter=250)
    res = draw_tsne(data, out_dir)
    _png_ok(res["png"])
    header, rows = _csv(res["csv"])
    assert header == ["setting", "user", "count", "cohort", "tsne_x", "tsne_y"]
    n = len(data["users"])
    assert len(rows) == 3 * n
    for s in ("clean", "masking", "pia"):
        sub = [r for r in rows if r["setting"] == s]
        assert [int(r["user"]) for r in sub] == [int(u) for u in data["users"]]
        emb = np.array([[_f(r["tsne_x"]), _f(r["tsne_y"])] for r in sub])
        np.testing.assert_allclose(emb, data["panels"][s]["embedding"], rtol=1e-12)
    stats = json.loads(res["json"].read_text())["stats"]
    assert set(stats) == {"clean", "masking", "pia"}
    for st in stats.values():
        assert -1.0 <= st["silhouette"] <= 1.0
        assert 0.0 <= st["knn_purity"] <= 1.0 and 0.0 <= st["knn_purity_chance"] <= 1.0
        assert st["n"] == n
    sizes = json.loads(res["json"].read_text())["cohort_sizes"]
    assert sum(sizes.values()) == n
    js = json.loads(res["json"].read_text())
    assert js["model"] == "multvae" and js["labels"]["pia"] == "Multi-VAE + PIA"
    assert {r["cohort"] for r in rows} <= set(COHORT_LABELS)


# --------------------------------------------------------------------------- cohorts
@pytest.fixture(scope="module")
def cohorts_result(tiny_ctx):
    """The ablation behind the cohort figure: 2 seeds, a 2-point lambda_A grid."""
    from radius.figures.cohorts import collect_cohorts

    return collect_cohorts(
        tiny_ctx, seeds=2, lambda_grid=(0.1, 1.0), init_grid=("normal:0.01",), n_boot=300
    )


@pytest.mark.slow
def test_cohorts_figure(cohorts_result, out_dir):
    """One CSV row per cohort; means, intervals, gains and outcomes equal the ablation's."""
    from radius.figures.cohorts import draw_cohorts

    result = cohorts_result
    res = draw_cohorts(result, out_dir)
    _png_ok(res["png"])
    header, rows = _csv(res["csv"])
    assert header[:2] == ["cohort", "users"]
    want_cols = {"masking_mean", "masking_low", "masking_high", "pia_mean", "gain_mean"}
    assert want_cols | {"gain_low", "gain_high", "gain_outcome"} <= set(header)
    assert [r["cohort"] for r in rows] == COHORT_LABELS
    for r in rows:
        c = r["cohort"]
        for s in ("clean", "masking", "pia"):
            want = result["cohorts"][s][c]["ndcg@100"]
            for k, got in (("mean", want["mean"]), ("low", want["interval"]["low"])):
                v = _f(r[f"{s}_{k}"])
                assert (math.isnan(v) and math.isnan(got)) or v == pytest.approx(got)
        g = result["pia_gain"]["per_cohort"][c]
        assert r["gain_outcome"] == g["verdict"]
        for k in ("low", "high"):
            v, w = _f(r[f"gain_{k}"]), g["interval"][k]
            assert (math.isnan(v) and math.isnan(w)) or v == pytest.approx(w)
        if int(r["users"]):
            assert 0.0 <= _f(r["pia_mean"]) <= 1.0
            assert _f(r["gain_mean"]) == pytest.approx(_f(r["pia_mean"]) - _f(r["masking_mean"]))
        if int(r["users"]) < 20:  # the tiny data's small cohorts cannot decide
            assert r["gain_outcome"] == "INCONCLUSIVE"
    assert sum(int(r["users"]) for r in rows) == result["test_users"]
    js = json.loads(res["json"].read_text())
    assert js["pia_gain"]["both_ends"]["verdict"] == result["pia_gain"]["both_ends"]["verdict"]
    assert js["statistics"]["level"] == 0.95


@pytest.mark.slow
@pytest.mark.parametrize("verdict", ["HOLDS", "CONTRADICTED", "INCONCLUSIVE"])
def test_cohorts_figure_states_both_ends_with_its_interval(cohorts_result, out_dir, verdict):
    """The gain panel says the outcome of "largest at both ends" and its interval, never
    a yes/no from the point estimate."""
    import copy

    from radius.figures.cohorts import draw_cohorts

    result = copy.deepcopy(cohorts_result)
    both = result["pia_gain"]["both_ends"]
    lo, hi = {"HOLDS": (0.01, 0.03), "CONTRADICTED": (-0.03, -0.01)}.get(verdict, (-0.01, 0.03))
    both["interval"].update(estimate=(lo + hi) / 2, low=lo, high=hi)
    both["verdict"] = verdict
    text = draw_cohorts(result, out_dir)["both_ends_text"]
    assert text == f"largest at both ends: {verdict}, {(lo + hi) / 2:+.4f} [{lo:+.4f}, {hi:+.4f}]"
    assert "yes" not in text and "no" not in text.split(":")[1]


# --------------------------------------------------------------------------- radius
def test_pair_rows_from_details_fills_derived_fields():
    """Rows with w2, inner, norm_u and r_share get the normalised transfer and the inside flag."""
    from radius.figures.sharing_radius import pair_rows_from_details

    base = {"w2": 0.1, "inner": 2.0, "norm_u": 2.0, "r_share": 0.5}
    details = {
        "pairs": [
            {"u": 0, "v": 1, "kind": "jaccard", **base},
            {"u": 2, "v": 3, "w2": 0.9, "inner": -1.0, "norm_u": 1.0, "r_share": 0.0},
        ],
    }
    rows = pair_rows_from_details(details)
    assert [r["normalised_transfer"] for r in rows] == pytest.approx([0.5, -1.0])
    assert [r["inside"] for r in rows] == [True, False]
    assert [r["kind"] for r in rows] == ["jaccard", "sampled"]
    assert math.isnan(rows[0]["delta_x"])


def test_pair_rows_from_details_without_the_fields_is_none():
    """Details whose pair rows lack r_share (or that have no pairs) give None."""
    from radius.figures.sharing_radius import pair_rows_from_details

    assert pair_rows_from_details({"pairs": [{"u": 0, "v": 1, "w2": 0.3}]}) is None
    assert pair_rows_from_details({"pairs": []}) is None
    assert pair_rows_from_details({"summary": {}}) is None


@pytest.mark.slow
def test_radius_figure(tiny_ctx, out_dir):
    """The pairs written are the claim's; inside == W2 < r_share; transfer = inner/||g_u||^2."""
    from radius.figures.sharing_radius import RADIUS_COLUMNS, collect_radius, draw_radius

    data = collect_radius(tiny_ctx)
    res = draw_radius(data, out_dir)
    _png_ok(res["png"])
    header, got = _csv(res["csv"])
    assert header == list(RADIUS_COLUMNS)
    assert len(got) == len(data["rows"]) > 0
    assert {r["kind"] for r in got} <= {"jaccard", "latent", "random", "edit"}
    for r, want in zip(got, data["rows"]):
        assert (int(r["u"]), int(r["v"])) == (want["u"], want["v"])
        w2, r_share = _f(r["w2"]), _f(r["r_share"])
        assert w2 >= 0 and r_share >= 0
        assert (r["inside"] == "True") == (w2 < r_share)
        assert _f(r["normalised_transfer"]) == pytest.approx(
            _f(r["inner"]) / _f(r["norm_u"]) ** 2, rel=1e-9
        )
    js = json.loads(res["json"].read_text())
    summary = js["summary"]
    assert -1.0 <= summary["spearman_w2_transfer"] <= 1.0
    assert summary["n_inside"] == sum(r["inside"] == "True" for r in got)
    # every inside pair is kept; real pairs and edit probes are counted apart
    assert summary["n_inside_real"] == js["claim"]["n_inside_radius"]
    assert summary["n_inside_probe"] == js["claim"]["n_inside_radius_probe"]
    assert summary["n_inside"] == summary["n_inside_real"] + summary["n_inside_probe"]
    assert summary["n_inside_positive_transfer"] <= summary["n_inside"]
    assert js["claim"]["verdict"] in ("PASS", "FAIL", "INCONCLUSIVE")


# --------------------------------------------------------------------------- masking
@pytest.mark.slow
def test_masking_figure(tiny_ctx, out_dir):
    """Probabilities in [0, 1], bounds >= exact, Monte Carlo intervals cover the exact law."""
    from radius.figures.masking import collect_masking, draw_masking

    rhos = (0.2, 0.5, 0.8, 1.0)
    data = collect_masking(tiny_ctx, rhos=rhos, n_cases=60, n_candidates=300, n_mc=600)
    res = draw_masking(data, out_dir)
    _png_ok(res["png"])
    header, rows = _csv(res["csv"])
    assert {"panel", "rho", "exact", "bound_hoeffding", "bound_kl", "mc", "mc_lo", "mc_hi"} <= set(
        header
    )
    assert len(rows) == 3 * len(rhos)
    for r in rows:
        exact, mc = _f(r["exact"]), _f(r["mc"])
        assert 0.0 <= exact <= 1.0 and 0.0 <= mc <= 1.0
        assert _f(r["bound_hoeffding"]) >= exact - 1e-12
        if r["panel"] != "rank flip":
            assert _f(r["bound_kl"]) >= exact - 1e-12
        else:
            assert _f(r["mean_bound_all_triples"]) >= _f(r["mean_exact_all_triples"]) - 1e-12
        assert _f(r["mc_lo"]) <= mc <= _f(r["mc_hi"])
    covered = [_f(r["mc_lo"]) <= _f(r["exact"]) <= _f(r["mc_hi"]) for r in rows]
    assert sum(covered) >= len(rows) - 1  # 99.9% intervals: at most one miss expected
    ends = {r["panel"]: r for r in rows if _f(r["rho"]) == 1.0}
    assert _f(ends["neighbour pair"]["exact"]) == pytest.approx(1.0)  # rho = 1: D = d exactly
    assert _f(ends["rank flip"]["exact"]) == 0.0  # rho = 1: d_uw > d_uv, no flip
    near = data["cases"]["neighbour pair"]
    assert near["s"] > 0


# --------------------------------------------------------------------------- beta
@pytest.mark.slow
def test_beta_figure(tiny_ctx, out_dir):
    """One row per beta with its bands; I <= log N; units <= d by both rules; the bands
    contain their estimates; the checks' outcomes are in the JSON and the titles."""
    from radius.figures.beta import BETA_COLUMNS, collect_beta, draw_beta

    data = collect_beta(tiny_ctx, betas=(0.1, 1.0, 10.0), workers=1)
    res = draw_beta(data, out_dir)
    _png_ok(res["png"])
    header, rows = _csv(res["csv"])
    assert header == list(BETA_COLUMNS)
    assert [_f(r["beta"]) for r in rows] == [0.1, 1.0, 10.0]
    for r in rows:
        assert _f(r["mutual_info"]) <= _f(r["log_n"]) + 1e-9
        for t in ("e_kl", "mutual_info", "kl_aggregate", "w2"):
            assert _f(r[f"{t}_low"]) <= _f(r[t]) <= _f(r[f"{t}_high"])
        for rule in ("informative_units", "variance_units"):
            assert 0 <= _f(r[f"{rule}_min"]) <= _f(r[f"{rule}_max"]) <= _f(r["latent_dim"])
        assert _f(r["seeds"]) == 2
    assert _f(rows[0]["e_kl"]) > _f(rows[-1]["e_kl"])
    js = json.loads(res["json"].read_text())
    names = {c["name"]: c["role"] for c in js["checks"]}
    assert names["sweep_e_kl_falls"] == "statement"
    assert names["collapse_at_large_beta"] == "mechanism"
    assert (js["model"], js["kl_field"]) == ("multvae", "beta_cap")


# --------------------------------------------------------------------------- registry
def test_registry_names():
    """`all` expands to every figure, in order, without duplicates."""
    from radius.figures.registry import FIGURES, resolve_figures

    assert (
        resolve_figures("all") == list(FIGURES) == ["tsne", "cohorts", "radius", "masking", "beta"]
    )
    assert resolve_figures("beta,tsne,beta") == ["beta", "tsne"]


def test_unknown_figure_suggests_close_match():
    """A misspelt name raises RadiusError naming the closest figure."""
    from radius.figures.registry import resolve_figures

    with pytest.raises(RadiusError, match=r"unknown figure 'tnse'.*did you mean 'tsne'\?"):
        resolve_figures("tnse")


def test_cli_unknown_figure_exits_2(capsys):
    """`radius figures cohort` exits 2 with the suggestion on stderr, drawing nothing."""
    from radius.cli import main

    assert main(["figures", "cohort", "--out", "/nonexistent/never"]) == 2
    assert "did you mean 'cohorts'" in capsys.readouterr().err


def test_run_figures_draws_and_reports(tiny_dataset, tmp_path, monkeypatch, capsys):
    """`radius figures masking --quick` writes the PNG and data files and prints their paths."""
    import argparse

    import radius.experiments
    from radius.figures.registry import run_figures

    monkeypatch.setattr(radius.experiments, "load_dataset", lambda spec: tiny_dataset)
    args = argparse.Namespace(
        name="masking", data="default", out=str(tmp_path), seeds=1, quick=True, progress=False
    )
    assert run_figures(args) == 0
    text = capsys.readouterr().out
    for ext in ("png", "csv", "json"):
        path = tmp_path / f"masking.{ext}"
        assert path.is_file() and str(path) in text
    _png_ok(tmp_path / "masking.png")
    header, rows = _csv(tmp_path / "masking.csv")
    assert sorted({_f(r["rho"]) for r in rows}) == [0.2, 0.4, 0.6, 0.8, 1.0]  # quick grid


# --------------------------------------------------------------------------- RecVAE
def _capture_figure_text(monkeypatch) -> dict[str, str]:
    """Record every text drawn in each saved PNG (titles, legends, labels), by file stem."""
    from matplotlib.text import Text

    import radius.figures.common as common

    seen: dict[str, str] = {}
    original = common.save_png

    def save_png(fig, path, **kw):
        seen[Path(path).stem] = "\n".join(t.get_text() for t in fig.findobj(Text))
        return original(fig, path, **kw)

    for mod in ("tsne", "cohorts", "sharing_radius", "masking", "beta"):
        monkeypatch.setattr(f"radius.figures.{mod}.save_png", save_png)
    return seen


@pytest.mark.slow
def test_every_figure_names_recvae(tiny_recvae_ctx, tmp_path, monkeypatch):
    """On RecVAE models every figure's JSON says recvae and no drawn text says Multi-VAE."""
    from radius.figures.registry import FIGURES, FigureOptions, draw_figure

    seen = _capture_figure_text(monkeypatch)
    opt = FigureOptions(seeds=1, quick=True)
    res = {name: draw_figure(name, tiny_recvae_ctx, tmp_path, options=opt) for name in FIGURES}
    assert set(seen) == set(FIGURES)
    for name, r in res.items():
        _png_ok(r["png"])
        assert json.loads(r["json"].read_text())["model"] == "recvae", name
        assert "Multi-VAE" not in seen[name], name
    for name in ("tsne", "cohorts", "radius", "beta"):  # masking involves no model
        assert "RecVAE" in seen[name], name
    assert "RecVAE (masking)" in seen["tsne"] and "RecVAE + PIA" in seen["tsne"]
    assert "RecVAE (masking)" in seen["cohorts"] and "RecVAE + PIA" in seen["cohorts"]
    tsne = json.loads(res["tsne"]["json"].read_text())
    assert tsne["labels"] == {
        "clean": "clean input",
        "masking": "RecVAE (masking)",
        "pia": "RecVAE + PIA",
    }
    assert json.loads(res["cohorts"]["json"].read_text())["labels"]["pia"] == "RecVAE + PIA"
    assert json.loads(res["radius"]["json"].read_text())["label"] == "RecVAE + PIA"
    # beta: the sweep point is the mean effective KL weight gamma * mean |x_u|
    beta = json.loads(res["beta"]["json"].read_text())
    assert beta["kl_field"] == "gamma" and "gamma" in beta["x_axis"]
    assert "γ · mean |x_u|" in seen["beta"] and "KL weight cap" not in seen["beta"]
    header, rows = _csv(res["beta"]["csv"])
    assert header[-1] == "gamma"
    assert [_f(r["beta"]) for r in rows] == [0.1, 1.0, 10.0]
    for r in rows:
        assert _f(r["gamma"]) * beta["mean_count"] == pytest.approx(_f(r["beta"]), rel=1e-9)


def test_setting_labels_name_the_model():
    """Labels follow the model; the Multi-VAE table is unchanged for older callers."""
    from radius.figures.common import figure_model, setting_label

    assert setting_label("pia", "recvae") == "RecVAE + PIA"
    assert setting_label("masking", "recvae") == "RecVAE (masking)"
    assert setting_label("pia") == "Multi-VAE + PIA"
    assert figure_model({"context": {"base_config": {"model": "recvae"}}}) == "recvae"
    assert figure_model({}) == "multvae"


def _record_draws(monkeypatch, tiny_dataset) -> list[tuple[str, str, Path]]:
    """Replace drawing by a record of (figure, model of the context, output folder)."""
    import radius.experiments
    import radius.figures.registry as registry

    calls: list[tuple[str, str, Path]] = []

    def draw(name, ctx, out, *, options):
        calls.append((name, ctx.base_config.model, Path(out)))
        return {}

    monkeypatch.setattr(radius.experiments, "load_dataset", lambda spec: tiny_dataset)
    monkeypatch.setattr(registry, "draw_figure", draw)
    return calls


def test_cli_figures_model_picks_the_output_folder(tiny_dataset, tmp_path, monkeypatch, capsys):
    """--model recvae draws RecVAE into figures/out/recvae; multvae keeps figures/out;
    an explicit --out wins."""
    from radius.cli import main

    monkeypatch.chdir(tmp_path)
    calls = _record_draws(monkeypatch, tiny_dataset)
    assert main(["figures", "all", "--model", "recvae", "--quick"]) == 0
    assert calls == [(n, "recvae", Path("figures/out/recvae")) for n in FIGURE_NAMES]
    assert "for RecVAE" in capsys.readouterr().out
    calls.clear()
    assert main(["figures", "tsne", "--quick"]) == 0
    assert calls == [("tsne", "multvae", Path("figures/out"))]
    calls.clear()
    assert main(["figures", "beta", "--model", "recvae", "--out", "elsewhere"]) == 0
    assert calls == [("beta", "recvae", Path("elsewhere"))]


def test_cli_figures_recvae_writes_beside_not_over_multvae(
    tiny_dataset, tmp_path, monkeypatch, capsys
):
    """End to end: `radius figures masking --model recvae --quick` writes figures/out/recvae/."""
    import radius.experiments
    from radius.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(radius.experiments, "load_dataset", lambda spec: tiny_dataset)
    assert main(["figures", "masking", "--model", "recvae", "--quick"]) == 0
    out = tmp_path / "figures" / "out"
    assert json.loads((out / "recvae" / "masking.json").read_text())["model"] == "recvae"
    assert not (out / "masking.json").exists()
    assert "figures/out/recvae/masking.png" in capsys.readouterr().out


def test_cli_figures_rejects_unknown_model(capsys):
    """A bad --model exits 2 naming the choices and the close match, drawing nothing."""
    from radius.cli import main

    with pytest.raises(SystemExit) as e:
        main(["figures", "tsne", "--model", "recvea", "--out", "/nonexistent/never"])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert "invalid choice: 'recvea'" in err and "did you mean 'recvae'" in err


def test_run_figures_model_checks_and_base_config(tiny_config):
    """Programmatic callers: a bad model raises before any data is loaded; a base_config
    on the namespace is kept, with --model applied to it."""
    import argparse

    from radius.figures.registry import figures_base_config, run_figures

    with pytest.raises(RadiusError, match=r"unknown model 'vae' \(choose from multvae, recvae\)"):
        run_figures(argparse.Namespace(name="tsne", data="/nonexistent/never", model="vae"))
    kept = figures_base_config(argparse.Namespace(base_config=tiny_config))
    assert kept is tiny_config
    rec = figures_base_config(argparse.Namespace(base_config=tiny_config, model="recvae"))
    assert rec == tiny_config.replace(model="recvae")
    assert figures_base_config(argparse.Namespace(model=None)).model == "multvae"
