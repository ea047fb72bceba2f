"""The public API: radius.load_dataset / prepare / train / verify.run / figures, on models
radius never trained; missing models are named, never trained in their place."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from torch import nn

import radius
from radius.model import ModelError, wrap
from radius.verify.context import MissingModelError, VerifyContext


def _model(
    n_items: int, d: int = 4, seed: int = 0, keep_rate: float = 1.0, pia: bool = False
) -> nn.Module:
    torch.manual_seed(seed)
    enc = nn.Sequential(nn.Linear(n_items, 16), nn.ReLU(), nn.Linear(16, 2 * d))
    dec = nn.Sequential(nn.Linear(d, 16), nn.Tanh(), nn.Linear(16, n_items))
    if pia:
        anchors = 0.01 * torch.randn(n_items, d)
        return wrap(enc, dec, keep_rate=keep_rate, lambda_a=0.1, anchors=anchors)
    return wrap(enc, dec, keep_rate=keep_rate)


def _setting_model(n_items: int, setting: str, seed: int = 0) -> nn.Module:
    """A model that is what its setting says (clean, masking or pia)."""
    keep = 1.0 if setting == "clean" else 0.5
    return _model(n_items, seed=seed, keep_rate=keep, pia=setting == "pia")


@pytest.fixture()
def no_training(monkeypatch):
    """Any attempt to train or load radius's own models fails the test."""
    import radius.training.cache as rc
    import radius.training.trainer as rt

    def boom(*a, **k):
        raise AssertionError("radius trained a model in place of the user's")

    monkeypatch.setattr(rc, "get_model", boom)
    monkeypatch.setattr(rt, "train", boom)


def test_import_radius_is_cheap():
    """`import radius` loads neither torch nor the claims nor the figures."""
    code = "import radius, sys; print(sorted(m for m in ('torch', 'radius.verify', "
    code += "'radius.figures') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_entry_points_are_callable():
    """radius.train(...) and radius.figures.tsne(...) are functions (the figure still a module)."""
    import radius.figures.tsne as tsne_mod

    assert callable(radius.train)
    assert callable(radius.figures.tsne) and radius.figures.tsne is tsne_mod
    assert callable(radius.figures.radius) and callable(radius.verify.run)
    assert radius.wrap is wrap


def test_train_function(tiny_dataset, tiny_config):
    """radius.train(dataset, config) trains and returns a result."""
    res = radius.train(tiny_dataset, tiny_config.replace(epochs=1), progress=False)
    assert res.model.n_items == tiny_dataset.n_items


def test_run_on_user_models(tiny_dataset, no_training):
    """L2.4 on a user model radius never trained: PASS, the missing settings named."""
    m = _model(tiny_dataset.n_items)
    res = radius.verify.run("l2.4", models={"clean": m}, dataset=tiny_dataset, quick=True)
    assert res.verdict == "PASS" and {c.name for c in res.checks} == {
        "bound_raw_clean",
        "bound_normalized_clean",
    }
    assert set(res.details["missing_models"]) == {"masking", "pia"}
    assert res.context["models_source"] == "user"


def test_missing_model_is_inconclusive_and_named(tiny_dataset, no_training):
    """T2.5 needs the clean model: INCONCLUSIVE naming it, nothing trained."""
    res = radius.verify.run(
        "2.5",
        models={"masking": _model(tiny_dataset.n_items, keep_rate=0.5)},
        dataset=tiny_dataset,
        quick=True,
    )
    assert res.verdict == "INCONCLUSIVE" and res.checks == []
    assert res.details["missing"] == ["clean"]
    assert "needs the 'clean' model, which was not provided" in res.details["not_run"]


def test_beta_sweep_needs_fit(tiny_dataset, no_training):
    """Without fit(beta) the sweep is not run and says so; with it, fit is called per
    (beta, seed) and its models are validated."""
    n = tiny_dataset.n_items
    models = {"masking": _model(n, keep_rate=0.5)}
    res = radius.verify.run("beta-kl", models=models, dataset=tiny_dataset, quick=True)
    # the decomposition on the given masking model still runs; only the sweep is missing
    assert res.verdict == "INCONCLUSIVE" and "fit(beta)" in res.details["sweep_not_run"]
    assert {c.kind for c in res.checks} == {"identity"} and res.implementation == "verified"
    calls = []

    def fit(beta, seed=0):
        calls.append((beta, seed))
        return _model(n, seed=seed, keep_rate=0.5)

    ctx = VerifyContext(dataset=tiny_dataset, models=models, fit_beta=fit)
    m1 = ctx.sweep_model(0.5, seed=1)
    assert ctx.sweep_model(0.5, seed=1) is m1 and calls == [(0.5, 1)]
    cfg = ctx.config("masking").replace(beta_cap=2.0, seed=3)
    ctx.model_for(cfg)
    assert calls[-1] == (2.0, 3)
    assert ctx.config("masking").keep_rate == 0.5  # the model's own keep rate
    bad = VerifyContext(dataset=tiny_dataset, models=models, fit_beta=lambda b: _model(n + 1))
    with pytest.raises(ModelError, match=r"fit\(0.5\): n_items = 301, but the data has 300"):
        bad.sweep_model(0.5)


def test_context_never_trains_for_user_models(tiny_dataset, no_training):
    """model(setting) with user models: the given one, or MissingModelError naming it."""
    ctx = VerifyContext(dataset=tiny_dataset, models={"clean": _model(tiny_dataset.n_items)})
    assert ctx.model("clean") is ctx.models["clean"]
    with pytest.raises(MissingModelError, match="needs the 'pia' model.*models given: clean"):
        ctx.model("pia")
    with pytest.raises(MissingModelError, match="retrained with"):
        ctx.model("clean", seed=3)


def test_bad_api_input(tiny_dataset):
    """Misuse raises with exact messages before anything runs."""
    n = tiny_dataset.n_items
    with pytest.raises(ValueError, match="unknown setting 'pai' in models .*did you mean 'pia'"):
        radius.verify.run("2.4", models={"pai": _model(n)}, dataset=tiny_dataset)
    with pytest.raises(ModelError, match="the 'pia' model: n_items = 299, but the data has 300"):
        radius.verify.run("2.4", models={"pia": _model(n - 1)}, dataset=tiny_dataset)
    with pytest.raises(TypeError, match=r"claim 2.4 has no option\(s\) \['betas'\]"):
        radius.verify.run("2.4", models={"clean": _model(n)}, dataset=tiny_dataset, betas=(1,))
    with pytest.raises(ValueError, match="run verifies one claim"):
        radius.verify.run("all", models={"pia": _model(n)}, dataset=tiny_dataset)
    with pytest.raises(ValueError, match="fit is for user models"):
        radius.verify.run("beta-kl", dataset=tiny_dataset, fit=lambda b: None)
    with pytest.raises(TypeError, match="dataset must be a radius Dataset"):
        radius.verify.run("2.4", dataset=3)


class _NaNDecoder(nn.Module):
    def __init__(self, n_items: int, d: int = 4) -> None:
        super().__init__()
        self.out = nn.Linear(d, n_items)

    def forward(self, z):
        return self.out(z) + float("nan")


def test_nan_model_is_refused(tiny_dataset):
    """A model with NaN logits is refused naming decode(z)."""
    n = tiny_dataset.n_items
    enc = nn.Sequential(nn.Linear(n, 8))
    with pytest.raises(ModelError, match=r"decode\(z\) has 1200 non-finite values"):
        wrap(enc, _NaNDecoder(n))


def test_run_all_and_table(tiny_dataset, no_training):
    """run_all over two claims on one context, and a printable table with verdict lines."""
    m = _model(tiny_dataset.n_items)
    res = radius.verify.run_all(
        "2.4,2.5", models={"clean": m}, dataset=tiny_dataset, quick=True, n_pairs=30
    )
    table = radius.verify.format_table(res)
    assert list(res) == ["2.4", "2.5"]
    assert "2.4 verdict PASS" in table and "2.5 verdict INCONCLUSIVE" in table
    assert "not run: needs the" in table


def test_figures_with_user_models(tiny_dataset, tmp_path, no_training):
    """radius.figures.tsne draws from user models; cohorts refuses (it trains)."""
    n = tiny_dataset.n_items
    models = {s: _setting_model(n, s, seed=i) for i, s in enumerate(("clean", "masking", "pia"))}
    res = radius.figures.tsne(models=models, dataset=tiny_dataset, out=tmp_path, quick=True)
    assert (tmp_path / res["png"].name).is_file()
    with pytest.raises(MissingModelError, match="'cohorts' figure trains radius's own"):
        radius.figures.draw("cohorts", models=models, dataset=tiny_dataset, out=tmp_path)


# ------------------------------------------------------------------- the command line
FACTORY = """
import torch
from torch import nn
from radius.model import wrap

def build(n_items, setting="clean"):
    enc = nn.Sequential(nn.Linear(n_items, 16), nn.ReLU(), nn.Linear(16, 8))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n_items))
    if setting == "pia":
        return wrap(enc, dec, keep_rate=0.5, lambda_a=0.1, anchors=torch.zeros(n_items, 4))
    return wrap(enc, dec, keep_rate=1.0 if setting == "clean" else 0.5)

def plain(n_items):  # declares nothing about its training: wrap's defaults
    enc = nn.Sequential(nn.Linear(n_items, 16), nn.ReLU(), nn.Linear(16, 8))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n_items))
    return wrap(enc, dec)

class NaNDecoder(nn.Sequential):
    def forward(self, z):
        return super().forward(z) + float("nan")

def nan_model(n_items):
    enc = nn.Sequential(nn.Linear(n_items, 16), nn.ReLU(), nn.Linear(16, 8))
    return wrap(enc, NaNDecoder(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n_items)))
"""


@pytest.fixture()
def cli_setup(tiny_dataset, tmp_path):
    """The tiny dataset as a prepared folder, a factory module and two checkpoints."""
    data = tiny_dataset.save(tmp_path / "data")
    (tmp_path / "own_factory.py").write_text(FACTORY)
    n = tiny_dataset.n_items
    paths = {}
    for i, s in enumerate(("clean", "masking", "pia")):
        torch.manual_seed(i)
        enc = nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, 8))
        dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n))
        anchors = 0.01 * torch.randn(n, 4) if s == "pia" else None
        paths[s] = tmp_path / f"{s}.pt"
        torch.save(wrap(enc, dec, anchors=anchors).state_dict(), paths[s])
    return data, tmp_path, paths


def _verify(*argv):
    from radius.cli import main

    return main(["verify", *argv])


def test_cli_checkpoints_with_factory(cli_setup, capsys, no_training):
    """--checkpoint clean=a.pt --checkpoint pia=b.pt --model-factory file.py:build verifies
    the user's models (L2.4 PASS for both), nothing trained."""
    data, tmp, paths = cli_setup
    out = tmp / "out"
    code = _verify(
        "--theorem", "2.4", "--data", str(data), "--n-pairs", "30", "--out", str(out),
        "--checkpoint", f"clean={paths['clean']}", "--checkpoint", f"pia={paths['pia']}",
        "--model-factory", f"{tmp / 'own_factory.py'}:build",
    )  # fmt: skip
    assert code == 0, capsys.readouterr()
    import json

    rep = json.loads((out / "l2_4.json").read_text())
    assert {c["name"] for c in rep["checks"]} >= {"bound_raw_clean", "bound_raw_pia"}
    assert set(rep["details"]["missing_models"]) == {"masking"}
    assert rep["context"]["models_source"] == "user"


def test_cli_missing_setting_is_inconclusive(cli_setup, capsys, no_training):
    """A bare path is the pia model; T2.5 then lacks clean: exit 3, the JSON names it."""
    data, tmp, paths = cli_setup
    out = tmp / "out"
    code = _verify(
        "--theorem", "2.5", "--data", str(data), "--out", str(out),
        "--checkpoint", str(paths["pia"]), "--model-factory", f"{tmp / 'own_factory.py'}:build",
    )  # fmt: skip
    assert code == 3
    assert "2.5 not run: needs the 'clean' model, which was not provided" in (
        capsys.readouterr().out
    )
    import json

    rep = json.loads((out / "t2_5.json").read_text())
    assert rep["verdict"] == "INCONCLUSIVE" and rep["details"]["missing"] == ["clean"]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        ([], "not a radius checkpoint; pass --model-factory module:function"),
        (["--model-factory", "own_factory:nope"], "'own_factory' has no callable 'nope'"),
        (["--model-factory", "no_such_module:build"], "cannot import 'no_such_module'"),
        (["--model-factory", "own_factory:nan_model"], r"decode(z) has 1200 non-finite values"),
    ],
)
def test_cli_bad_models_exit_2(cli_setup, capsys, monkeypatch, extra, message, no_training):
    """Protocol breaches and unusable factories: exit 2, the message names it, nothing
    written."""
    data, tmp, paths = cli_setup
    monkeypatch.chdir(tmp)
    out = tmp / "out"
    argv = ["--theorem", "2.4", "--data", str(data), "--out", str(out)]
    code = _verify(*argv, "--checkpoint", f"pia={paths['pia']}", *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()


def test_cli_checkpoint_for_other_items_exit_2(cli_setup, tmp_path, capsys, no_training):
    """A checkpoint for another item count: exit 2 naming the shapes; a bad setting name
    and a factory without checkpoint are refused too."""
    data, tmp, _ = cli_setup
    n = 250
    enc = nn.Sequential(nn.Linear(n, 16), nn.ReLU(), nn.Linear(16, 8))
    dec = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, n))
    other = tmp / "other.pt"
    torch.save({"state_dict": wrap(enc, dec).state_dict()}, other)
    factory = f"{tmp / 'own_factory.py'}:build"
    out = tmp / "out"
    base = ["--theorem", "2.4", "--data", str(data), "--out", str(out)]
    assert _verify(*base, "--checkpoint", f"pia={other}", "--model-factory", factory) == 2
    err = capsys.readouterr().err
    assert "shape mismatch encoder.0.weight: checkpoint (16, 250) vs model (16, 300)" in err
    assert _verify(*base, "--checkpoint", f"pai={other}", "--model-factory", factory) == 2
    assert "unknown setting 'pai'" in capsys.readouterr().err
    assert _verify(*base, "--model-factory", factory) == 2
    assert "--model-factory needs --checkpoint" in capsys.readouterr().err
    assert not out.exists()


def test_cli_radius_checkpoint_for_other_data_exit_2(tiny_dataset, tiny_config, tmp_path, capsys):
    """A radius checkpoint trained on other data is refused, naming both datasets."""
    from radius.data.synthetic import SyntheticParams, default_dataset

    other = default_dataset(
        SyntheticParams(
            n_users=200, n_items=tiny_dataset.n_items, n_communities=3, n_max=150, seed=2
        )
    )
    ckpt = tmp_path / "other.pt"
    radius.train(other, tiny_config.replace(epochs=1), checkpoint=ckpt, progress=False)
    data = tiny_dataset.save(tmp_path / "data")
    out = tmp_path / "out"
    code = _verify("--theorem", "2.4", "--data", str(data), "--out", str(out), "--checkpoint",
                   str(ckpt))  # fmt: skip
    assert code == 2 and "checkpoint was trained on data" in capsys.readouterr().err
    assert not out.exists()


# ------------------------------------------------------------- settings and options
@pytest.mark.parametrize(
    ("setting", "model_kw", "message"),
    [
        ("pia", {"keep_rate": 0.5}, "the 'pia' model has no anchors (model.anchors is None)"),
        ("masking", {}, "the 'masking' model declares keep_rate 1 (clean input)"),
        ("clean", {"keep_rate": 0.5}, "the 'clean' model declares keep_rate 0.5 (a masked input)"),
        ("pia", {"pia": True, "keep_rate": 1.0}, "the 'pia' model declares keep_rate 1"),
    ],
)
def test_a_model_that_contradicts_its_setting_is_refused(
    tiny_dataset, setting, model_kw, message, no_training
):
    """A pia model without anchors (or a masking model with clean input, ...) is refused
    up front with a RadiusError, never reported as a broken implementation."""
    from radius.errors import RadiusError

    m = _model(tiny_dataset.n_items, **model_kw)
    with pytest.raises(RadiusError, match=re_escape(message)):
        radius.verify.run_all("3.1", models={setting: m}, dataset=tiny_dataset, quick=True)


def re_escape(text: str) -> str:
    import re

    return re.escape(text)


def test_context_records_each_settings_keep_rate_and_warnings(tiny_dataset, no_training):
    """describe(): per user model its keep rate, lambda_A, posterior scale, KL weight,
    the config the claims use and its warnings; the data's protocol."""
    from radius.verify.api import QUICK_OPTIONS, _context

    n = tiny_dataset.n_items
    m = _model(n, keep_rate=0.5)
    m.kl_weight = 1e-4
    ctx = _context(tiny_dataset, {"masking": m}, None, QUICK_OPTIONS, None, None, False)
    d = ctx.describe()
    rec = d["models"]["masking"]
    assert rec["keep_rate"] == 0.5 and rec["config_used"] == {"keep_rate": 0.5, "lambda_a": 0.0}
    assert rec["posterior_scale"] == 1.0 and d["data_protocol"] == "strong"
    assert ctx.config("masking").beta_cap == 1e-4  # the model's own KL weight
    own = VerifyContext(
        dataset=tiny_dataset, setting_overrides={"masking": {"keep_rate": 0.7}}
    ).describe()
    assert own["settings"]["masking"]["keep_rate"] == 0.7
    assert own["settings"]["pia"]["keep_rate"] == 0.5 and own["settings"]["clean"]["keep_rate"] == 1


def test_cli_per_setting_factory_and_options(cli_setup, capsys, no_training):
    """One factory builds per-setting models (called with setting=); --set
    masking.keep_rate applies to the masking model and the JSON records it with its
    origin; a bare factory's model that declares nothing is refused as 'masking'."""
    import json

    data, tmp, paths = cli_setup
    out = tmp / "out"
    fac = f"{tmp / 'own_factory.py'}"
    base = ["--theorem", "2.4", "--data", str(data), "--n-pairs", "20", "--out", str(out)]
    ckpts = [
        "--checkpoint",
        f"clean={paths['clean']}",
        "--checkpoint",
        f"masking={paths['masking']}",
    ]
    code = _verify(
        *base, *ckpts, "--model-factory", f"{fac}:build", "--model-factory",
        f"masking={fac}:plain", "--set", "masking.keep_rate=0.25",
    )  # fmt: skip
    assert code in (0, 3), capsys.readouterr()
    models = json.loads((out / "l2_4.json").read_text())["context"]["models"]
    assert models["masking"]["keep_rate"] == 0.25 and models["clean"]["keep_rate"] == 1.0
    assert models["masking"]["origin"]["keep_rate"] == "--set masking.keep_rate"
    assert models["clean"]["origin"]["keep_rate"] == "declared by the model"
    assert models["masking"]["config_used"]["keep_rate"] == 0.25
    code = _verify(*base, *ckpts, "--model-factory", f"{fac}:plain")
    err = capsys.readouterr().err
    assert code == 2 and f"the 'masking' model ({paths['masking']}) declares keep_rate 1" in err


def test_cli_pia_checkpoint_without_anchors_exits_2(cli_setup, capsys, no_training):
    """A state dict without anchors given as pia: exit 2 with the message, not BROKEN."""
    data, tmp, paths = cli_setup
    out = tmp / "out"
    code = _verify(
        "--theorem", "3.1", "--data", str(data), "--out", str(out),
        "--checkpoint", f"pia={paths['masking']}",
        "--model-factory", f"{tmp / 'own_factory.py'}:plain", "--set", "pia.keep_rate=0.5",
    )  # fmt: skip
    err = capsys.readouterr().err
    assert code == 2 and "has no anchors (model.anchors is None)" in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--set", "keep_rate=0.5"], "--set keep_rate=0.5: each setting has its own keep rate"),
        (["--set", "maskng.keep_rate=0.5"], "'maskng' is not a setting"),
        (["--set", "clean.latent_dim=3"], "--set clean.latent_dim: not an option of a loaded"),
        (["--set", "pia.keep_rate=0.5"], "--set pia.*: no --checkpoint pia=PATH was given"),
        (["--set", "clean.keep_rate=2"], "keep_rate (rho) must be in (0, 1], got 2"),
        (
            ["--model-factory", "clean=own_factory:build", "--model-factory", "clean=x:y"],
            "--model-factory: setting 'clean' given twice",
        ),
        (["--model-factory", "claen=own_factory:build"], "unknown setting 'claen'"),
    ],
)
def test_cli_bad_setting_options_exit_2(cli_setup, capsys, monkeypatch, extra, message):
    """Per-setting options that cannot apply: exit 2 naming the option, nothing written."""
    data, tmp, paths = cli_setup
    monkeypatch.chdir(tmp)
    out = tmp / "out"
    argv = ["--theorem", "2.4", "--data", str(data), "--out", str(out)]
    argv += ["--checkpoint", f"clean={paths['clean']}"]
    if not any(a.startswith("--model-factory") for a in extra):
        argv += ["--model-factory", "own_factory:build"]
    code = _verify(*argv, *extra)
    err = capsys.readouterr().err
    assert code == 2 and message in err, err
    assert not out.exists()


def test_cli_recorded_config_is_not_overridden(tiny_dataset, tiny_config, tmp_path, capsys):
    """A radius checkpoint records keep_rate 0.5: --set masking.keep_rate=0.7 exits 2
    naming both values; the same value is accepted."""
    data = tiny_dataset.save(tmp_path / "data")
    ckpt = tmp_path / "masking.pt"
    from radius.training.config import setting_config

    cfg = setting_config("masking", tiny_config.replace(epochs=1))
    radius.train(tiny_dataset, cfg, checkpoint=ckpt, progress=False)
    out = tmp_path / "out"
    base = ["--theorem", "2.4", "--data", str(data), "--n-pairs", "20", "--out", str(out)]
    base += ["--checkpoint", f"masking={ckpt}"]
    assert _verify(*base, "--set", "masking.keep_rate=0.7") == 2
    err = capsys.readouterr().err
    assert "the checkpoint records keep_rate 0.5, but --set masking.keep_rate=0.7" in err
    assert _verify(*base, "--set", "masking.keep_rate=0.5") in (0, 3)


def test_cli_and_api_give_the_same_verdicts(cli_setup, tmp_path, capsys, no_training):
    """The same checkpoints through the CLI (factory) and through the API: equal verdicts
    and check values, and equal keep rates in the JSON context."""
    import json

    from radius.data.dataset import Dataset
    from radius.verify.api import load_models

    data, tmp, paths = cli_setup
    out = tmp / "out"
    fac = f"{tmp / 'own_factory.py'}:build"
    ckpts = [f"{s}={paths[s]}" for s in ("clean", "masking", "pia")]
    argv = ["--theorem", "2.4,3.1", "--data", str(data), "--n-pairs", "30", "--out", str(out)]
    for c in ckpts:
        argv += ["--checkpoint", c]
    _verify(*argv, "--model-factory", fac)
    capsys.readouterr()
    ds = Dataset.load(data)
    models = load_models(ckpts, ds, factory=fac)
    api = radius.verify.run_all("2.4,3.1", models=models, dataset=ds, n_pairs=30)
    for cid, name in (("2.4", "l2_4"), ("3.1", "p3_1")):
        rep = json.loads((out / f"{name}.json").read_text())
        assert rep["verdict"] == api[cid].verdict
        assert [(c["name"], c["measured"]) for c in rep["checks"]] == [
            (c.name, c.measured) for c in api[cid].checks
        ]
        keep = {s: m["keep_rate"] for s, m in rep["context"]["models"].items()}
        assert keep == {"clean": 1.0, "masking": 0.5, "pia": 0.5}
