"""radius.adapters on the libraries' real classes: RecBole's MultiVAE / RecVAE trained by
RecBole's Trainer and cornac's VAECF fitted by cornac, on a slice of real ML-100k.

RecBole 1.2.1 needs numpy < 2, so its tests run in the separate environment that
``make test-recbole`` builds (``.venv-recbole``); there ``RADIUS_REQUIRE_RECBOLE=1`` turns
a missing recbole into a failure instead of a skip. cornac installs beside radius (the
test extras), so its tests run in the main environment.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import radius
from radius import adapters
from radius.errors import CheckpointError, DataError
from radius.model import ModelError

ROOT = Path(__file__).resolve().parents[1]
N_USERS = 150  # the first users of ML-100k: enough for every check, seconds to train


def _require(module: str, env: str):
    """The library, or a skip; a failure instead where ``env`` is set to 1 (CI's run in the
    environment that has it)."""
    if os.environ.get(env) == "1":
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module)


def _ml100k_rows(n_users: int = N_USERS) -> list[list[str]]:
    from radius.data.ml100k import extract_ml100k, find_ml100k_wheel

    wheel = find_ml100k_wheel()
    if wheel is None:
        msg = "ML-100k wheel not found; run `radius data fetch-ml100k`"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    import tempfile

    f = extract_ml100k(wheel, Path(tempfile.mkdtemp()) / "ml-100k.inter")
    lines = f.read_text().splitlines()
    keep = {str(u) for u in range(1, n_users + 1)}
    return [lines[0].split("\t")] + [
        ln.split("\t") for ln in lines[1:] if ln.split("\t")[0] in keep
    ]


# --------------------------------------------------------------------------- RecBole
@pytest.fixture(scope="module")
def rb(tmp_path_factory):
    """RecBole's own Config / create_dataset / data_preparation / Trainer on a slice of
    ML-100k: a clean MultiVAE (dropout 0), a masked one (0.5) and a RecVAE (0.5)."""
    _require("recbole", "RADIUS_REQUIRE_RECBOLE")
    warnings.filterwarnings("ignore")
    from recbole.config import Config
    from recbole.data import create_dataset, data_preparation
    from recbole.model.general_recommender import MultiVAE, RecVAE
    from recbole.trainer import RecVAETrainer, Trainer
    from recbole.utils import init_seed

    root = tmp_path_factory.mktemp("recbole")
    (root / "slice").mkdir()
    rows = _ml100k_rows()
    (root / "slice" / "slice.inter").write_text("\n".join("\t".join(r) for r in rows) + "\n")
    cwd = os.getcwd()
    os.chdir(root)  # RecBole writes log/ and log_tensorboard/ into the working directory
    out = {}
    try:
        torch.set_num_threads(1)
        for key, cls, trainer, dropout in (
            ("clean", MultiVAE, Trainer, 0.0),
            ("masking", MultiVAE, Trainer, 0.5),
            ("recvae", RecVAE, RecVAETrainer, 0.5),
        ):
            cfg = Config(
                model=cls.__name__,
                dataset="slice",
                config_dict={
                    "data_path": str(root),
                    "checkpoint_dir": str(root / "saved"),
                    "epochs": 3,
                    "use_gpu": False,
                    "show_progress": False,
                    "state": "ERROR",
                    "dropout_prob": dropout,
                    "train_neg_sample_args": None,
                    "seed": 0,
                },
            )
            init_seed(cfg["seed"], cfg["reproducibility"])
            logging.getLogger().setLevel(logging.ERROR)
            data = create_dataset(cfg)
            train, valid, test = data_preparation(cfg, data)
            model = cls(cfg, train.dataset)
            t = trainer(cfg, model)
            t.fit(train, valid, saved=True, show_progress=False)
            best = torch.load(t.saved_model_file, map_location="cpu", weights_only=False)
            model.load_state_dict(best["state_dict"])  # the model the trainer kept
            out[key] = {
                "model": model.eval(),
                "loaders": (train, valid, test),
                "file": Path(t.saved_model_file),
                "data": data,
            }
    finally:
        os.chdir(cwd)
    return out


def _with_pad(x: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(x.shape[0], 1), x], dim=1)


def test_recbole_dataset_is_recboles_split(rb):
    """The dataset is RecBole's own split in RecBole's item order: train = RecBole's
    training inter_matrix without the padding row and column, test users' fold-in rows
    their training rows, targets RecBole's test interactions."""
    train, valid, test = rb["masking"]["loaders"]
    ds = adapters.recbole_dataset(train, valid, test)
    tr = train.dataset.inter_matrix(form="csr")
    te = test.dataset.inter_matrix(form="csr")
    rows = np.asarray(ds.manifest["recbole"]["train_user_index"])
    assert ds.protocol == "weak" and ds.n_items == tr.shape[1] - 1
    assert ds.manifest["id_maps"]["items"] == list(
        map(str, train.dataset.field2id_token["item_id"][1:])
    )
    assert (ds.train != tr[rows][:, 1:]).nnz == 0
    test_rows = rows[np.diff(te[rows].indptr) > 0]
    assert (ds.test_te != te[test_rows][:, 1:]).nnz == 0
    assert (ds.test_tr != tr[test_rows][:, 1:]).nnz == 0
    assert ds.train.nnz == train.dataset.inter_num


@pytest.mark.parametrize("key", ["clean", "masking", "recvae"])
def test_recbole_model_equals_recboles_forward(rb, key):
    """encode = RecBole's (mu, logvar + 2 ln 0.01), decode = RecBole's logits without the
    padding item; keep rate 1 - dropout_prob; the declared scale and KL weight."""
    m = rb[key]["model"]
    ds = adapters.recbole_dataset(*rb[key]["loaders"])
    w = adapters.recbole(m, ds)
    x = torch.tensor(np.asarray(ds.train[:32].todense()), dtype=torch.float32)
    with torch.no_grad():
        if key == "recvae":
            logits, mu, lv, _ = m.forward(_with_pad(x), 0.0)
        else:
            logits, mu, lv = m.forward(_with_pad(x))
        mu2, lv2 = w.encode(x)
        assert torch.allclose(mu2, mu, atol=1e-5)
        assert torch.allclose(lv2, lv + 2 * np.log(0.01), atol=1e-4)
        assert torch.allclose(w.decode(mu2), logits[:, 1:], atol=1e-4)
    assert w.keep_rate == pytest.approx(
        1.0 - float(m.dropout_prob if key == "recvae" else m.drop_out)
    )
    assert w.posterior_scale == adapters.RECBOLE_SAMPLING_SCALE == 0.01
    assert w.radius_warnings[0].startswith("posterior scale 0.01")
    if key != "recvae":
        assert w.kl_weight == pytest.approx(min(m.anneal_cap, m.update / m.total_anneal_steps))
        assert any(n.startswith("KL weight") for n in w.radius_warnings)  # 3 steps of 200,000
    assert w.source["pad_mass_max"] < 1.0


def test_recbole_checkpoint_is_the_same_model(rb):
    """The saved .pth through recbole_checkpoint gives the model recbole(model, ds) gives
    (the trainer's best state); its KL weight is unknown and says so."""
    ds = adapters.recbole_dataset(*rb["masking"]["loaders"])
    a = adapters.recbole(rb["masking"]["model"], ds)
    b = adapters.recbole_checkpoint(rb["masking"]["file"], ds)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert b.kl_weight is None and any(n.startswith("KL weight unknown") for n in b.radius_warnings)
    assert b.recorded_config == {"keep_rate": 0.5, "lambda_a": 0.0}


def test_recbole_scale_is_measured_from_the_model(rb, monkeypatch):
    """Control: a reparameterize that samples with scale 1 is measured (about 1), used,
    and warned about; RecBole's own gives 0.01."""
    m = rb["masking"]["model"]
    ds = adapters.recbole_dataset(*rb["masking"]["loaders"])

    def unit(mu, logvar):
        return mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)

    monkeypatch.setattr(m, "reparameterize", unit)
    w = adapters.recbole(m, ds)
    assert w.posterior_scale == pytest.approx(1.0, rel=0.02)
    assert any(n.startswith("posterior scale measured") for n in w.radius_warnings)


def test_recbole_refuses_other_data_and_models(rb):
    """Another split (RecVAE's loaders hold the same split, so a shuffled one), another
    item count, another class and another dataset name are refused, each named."""
    from recbole.model.general_recommender import MultiDAE

    ds = adapters.recbole_dataset(*rb["masking"]["loaders"])
    m = rb["masking"]["model"]
    other = radius.data.dataset.Dataset.from_matrices(
        ds.train[::-1],
        heldout={"test": ds.train[::-1]},
        manifest={"recbole": ds.manifest["recbole"]},
    )
    with pytest.raises(ModelError, match="training rows .* differ from dataset"):
        adapters.recbole(m, other)
    plain = radius.data.dataset.Dataset.from_matrices(ds.train)
    with pytest.raises(DataError, match="was not built from RecBole"):
        adapters.recbole(m, plain)
    cfg = rb["masking"]["loaders"][0].dataset.config
    dae = MultiDAE(cfg, rb["masking"]["loaders"][0].dataset)  # no posterior: not a VAE
    with pytest.raises(ModelError, match="RecBole MultiDAE is not supported"):
        adapters.recbole(dae, ds)
    bad = dict(ds.manifest["recbole"], dataset="ml-1m")
    renamed = radius.data.dataset.Dataset.from_matrices(ds.train, manifest={"recbole": bad})
    with pytest.raises(
        CheckpointError, match="trained on dataset 'slice', but the data is 'ml-1m'"
    ):
        adapters.recbole_checkpoint(rb["masking"]["file"], renamed)


@pytest.mark.slow
def test_recbole_cli_adapter_matches_the_api(rb, tmp_path):
    """`radius verify --adapter recbole` on the saved files gives the API's verdicts and
    check values, with each setting's keep rate in the JSON."""
    ds = adapters.recbole_dataset(*rb["masking"]["loaders"])
    data = ds.save(tmp_path / "data")
    models = {s: adapters.recbole(rb[s]["model"], ds) for s in ("clean", "masking")}
    api = radius.verify.run_all(
        "2.4,2.6", models=models, dataset=ds, n_pairs=120, n_users=60, n_mc=800
    )
    out = tmp_path / "out"
    argv = [sys.executable, "-m", "radius.cli", "verify", "--theorem", "2.4,2.6"]
    argv += ["--data", str(data), "--adapter", "recbole", "--out", str(out)]
    argv += ["--n-pairs", "120", "--n-users", "60", "--n-mc", "800"]
    for s in ("clean", "masking"):
        argv += ["--checkpoint", f"{s}={rb[s]['file']}"]
    proc = subprocess.run(argv, capture_output=True, text=True, cwd=tmp_path, timeout=600)
    assert proc.returncode in (0, 1, 3), proc.stderr[-2000:]
    for cid, name in (("2.4", "l2_4"), ("2.6", "t2_6")):
        rep = json.loads((out / f"{name}.json").read_text())
        assert rep["verdict"] == api[cid].verdict
        assert [c["measured"] for c in rep["checks"]] == [c.measured for c in api[cid].checks]
        keep = {s: m["keep_rate"] for s, m in rep["context"]["models"].items()}
        assert keep == {"clean": 1.0, "masking": 0.5}


# --------------------------------------------------------------------------- cornac
@pytest.fixture(scope="module")
def cn():
    """cornac's RatioSplit and VAECF (fitted by cornac) on the same slice of ML-100k."""
    _require("cornac", "RADIUS_REQUIRE_CORNAC")
    from cornac.eval_methods import RatioSplit
    from cornac.models import VAECF

    rows = _ml100k_rows()[1:]
    data = [(u, i, float(r)) for u, i, r, _ in rows]
    split = RatioSplit(data, test_size=0.1, val_size=0.1, seed=0, exclude_unknowns=True)
    torch.set_num_threads(1)
    model = VAECF(k=8, autoencoder_structure=[40], n_epochs=3, batch_size=50, seed=0)
    model.fit(split.train_set)
    return model, split


def test_cornac_model_equals_cornacs_vae(cn):
    """encode = cornac's VAE.encode, softmax(decode) = VAE.decode; convention none, keep
    rate 1, KL weight beta; items in iid_map order."""
    model, split = cn
    ds = adapters.cornac_dataset(split.train_set, split.test_set, split.val_set)
    w = adapters.cornac(model, ds)
    x = torch.tensor(np.asarray(ds.train[:32].todense()), dtype=torch.float32)
    with torch.no_grad():
        mu, lv = model.vae.encode(x)
        mu2, lv2 = w.encode(x)
        assert torch.equal(mu, mu2) and torch.equal(lv, lv2)
        assert torch.allclose(torch.softmax(w.decode(mu2), 1), model.vae.decode(mu), atol=1e-6)
    assert (w.input_convention, w.keep_rate, w.kl_weight) == ("none", 1.0, 1.0)
    inv = {j: raw for raw, j in split.train_set.iid_map.items()}
    assert ds.manifest["id_maps"]["items"] == [str(inv[j]) for j in range(ds.n_items)]
    assert ds.protocol == "weak" and ds.test_te.nnz > 0
    res = radius.verify.run("2.4", models={"clean": w}, dataset=ds, quick=True)
    assert res.verdict == "PASS"  # tanh encoder: certified


def test_cornac_refuses_other_likelihoods_and_unfitted_models(cn):
    """A Bernoulli VAECF, an unfitted one and one of another item count: ModelError."""
    from cornac.models import VAECF

    model, split = cn
    with pytest.raises(ModelError, match="has no fitted VAE"):
        adapters.cornac(VAECF(), split.train_set)
    bern = VAECF(k=4, autoencoder_structure=[8], n_epochs=1, likelihood="bern", seed=0)
    bern.fit(split.train_set)
    with pytest.raises(ModelError, match="likelihood 'bern'"):
        adapters.cornac(bern, split.train_set)
    small = radius.data.dataset.Dataset.from_matrices(np.ones((3, 4)))
    with pytest.raises(ModelError, match="the VAE has .* items, but the training set has 4"):
        adapters.cornac(model, small)
