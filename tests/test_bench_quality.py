"""bench/bench_quality.py: the reference loop and the radius runs go end to end on tiny
data, every run records how it stopped, and the summary pairs the two per user."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

BENCH = Path(__file__).resolve().parent.parent / "bench" / "bench_quality.py"


@pytest.fixture(scope="module")
def bq():
    spec = importlib.util.spec_from_file_location("bench_quality", BENCH)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["bench_quality"] = mod
    spec.loader.exec_module(mod)
    return mod


def test_reference_anchor_loss_is_the_direct_sum(bq):
    """The reference's closed-form L_A equals (1/n) sum_i ||mu - e_i||^2 + tr Sigma (P3.1)."""
    from radius.model.pia import anchor_loss_direct

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(6, 20, generator=g) < 0.3).float()
    x[0] = 0.0  # a user with no items has no anchor loss
    mu, lv = torch.randn(6, 4, generator=g), torch.randn(6, 4, generator=g)
    e = torch.randn(20, 4, generator=g)
    want = anchor_loss_direct(x, mu, lv, e)[1:].mean()
    torch.testing.assert_close(bq.ref_anchor_loss(x, mu, lv, e), want, rtol=1e-5, atol=1e-5)


def test_reference_input_is_normalise_then_inverted_dropout(bq):
    """The reference encoder input is x/||x|| * b / rho (radius's default convention)."""
    from radius.model.multvae import encoder_input_dense

    torch.manual_seed(0)
    ref = bq.RefVAE(30, keep=0.5, anchors=False, hidden=8, latent=3)
    x = (torch.rand(4, 30) < 0.4).float()
    torch.manual_seed(1)
    h = torch.nn.functional.dropout(torch.nn.functional.normalize(x, dim=1), p=0.5)
    b = (h > 0).float()
    torch.testing.assert_close(h, encoder_input_dense(x, b, 0.5, "normalize-mask"))
    torch.manual_seed(1)
    ref.train()
    mu_ref, _ = ref.encode(x)
    torch.testing.assert_close(mu_ref, ref.enc2(torch.tanh(ref.enc1(h)))[:, :3])


def test_bench_runs_end_to_end_on_tiny_data(bq, tmp_path):
    """Two seeds, all settings, both implementations, 3 epochs: runs and summary written;
    the summary's interval is the paired bootstrap of the per-user scores."""
    out = tmp_path / "q.json"
    rc = bq.main(
        ["--synthetic-tiny", "--seeds", "0,1", "--epochs", "3", "--patience", "2"]
        + ["--runs-dir", str(tmp_path / "runs"), "--out", str(out)]
    )
    assert rc == 0
    runs = sorted((tmp_path / "runs").glob("*.json"))
    assert len(runs) == 2 * 3 * 2
    rec = json.loads(runs[0].read_text())
    assert rec["stopped"] in ("early", "cap") and rec["epochs_run"] <= 3
    summary = json.loads(out.read_text())
    entry = summary["datasets"]["tiny"]["masking"]
    assert entry["paired_seeds"] == [0, 1]
    d = entry["diff_ndcg@100"]
    assert d["low"] <= d["estimate"] <= d["high"]
    by = {
        (r["impl"], r["seed"]): r
        for r in map(lambda p: json.loads(p.read_text()), runs)
        if r["setting"] == "masking"
    }
    rad = np.mean([by["radius", s]["per_user"]["ndcg@100"] for s in (0, 1)], axis=0)
    ref = np.mean([by["reference", s]["per_user"]["ndcg@100"] for s in (0, 1)], axis=0)
    assert d["estimate"] == pytest.approx(float(np.nanmean(rad - ref)), abs=1e-9)


def _copy_reference_into_radius(ref, rad) -> None:
    """radius's RecVAE with the reference RecVAE's weights (first layer stored (I, H))."""
    with torch.no_grad():
        for dst, src in ((rad.encoder, ref.encoder), (rad.prior.encoder_old, ref.encoder_old)):
            dst.in_weight.copy_(src.fcs[0].weight.T)
            dst.in_bias.copy_(src.fcs[0].bias)
            for d_fc, s_fc in zip(dst.fcs, src.fcs[1:]):
                d_fc.load_state_dict(s_fc.state_dict())
            for d_ln, s_ln in zip(dst.lns, src.lns):
                d_ln.load_state_dict(s_ln.state_dict())
            dst.fc_mu.load_state_dict(src.fc_mu.state_dict())
            dst.fc_logvar.load_state_dict(src.fc_logvar.state_dict())
        rad.decoder.load_state_dict(ref.decoder.state_dict())


def test_reference_recvae_computes_radius_recvae_maths(bq, monkeypatch):
    """With the same weights the reference RecVAE and radius's RecVAE give the same
    posterior (masked and clean), the same composite prior log-density and the same
    negative ELBO on the same reparameterisation noise."""
    import scipy.sparse as sp

    from radius.model.multvae import SparseBatch
    from radius.model.recvae import RecVAE
    from radius.training.config import TrainConfig
    from radius.training.losses import recvae_loss

    monkeypatch.setitem(bq.REF_RECVAE, "hidden", 16)
    monkeypatch.setitem(bq.REF_RECVAE, "latent", 4)
    torch.manual_seed(0)
    n_items = 25
    ref = bq.RefRecVAE(n_items, anchors=False)
    with torch.no_grad():  # a trained-looking old encoder, not a copy of the encoder
        for q in ref.encoder_old.parameters():
            q.add_(0.3 * torch.randn_like(q))
    rad = RecVAE(n_items, hidden_dim=16, latent_dim=4, keep_rate=0.5)
    _copy_reference_into_radius(ref, rad)
    x = (torch.rand(5, n_items) < 0.3).float()
    x[:, 0] = 1.0
    ref.eval()
    mu_ref, lv_ref = ref.encode(x)
    mu, lv = rad.encode(x)
    torch.testing.assert_close(mu, mu_ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lv, lv_ref, rtol=1e-5, atol=1e-5)
    b = (torch.rand(5, n_items) < 0.5).float()  # the reference's dropout mask, made explicit
    x_in = x / (x.pow(2).sum(-1).sqrt() + 1e-10)[:, None] * b / 0.5
    torch.testing.assert_close(
        rad.encode_masked(x, b)[0], ref.encoder.trunk(x_in)[0], rtol=1e-4, atol=1e-4
    )
    z = torch.randn(5, 4)
    mu_old, lv_old = rad.prior.encoder_old(x)
    torch.testing.assert_close(
        rad.prior.log_prob(z, mu_old, lv_old), ref.log_prior(x, z), rtol=1e-5, atol=1e-5
    )
    # the whole loss on the clean decoder phase with the same noise
    cfg = TrainConfig(model="recvae", keep_rate=0.5, hidden_dims=(16,), latent_dim=4)
    batch = SparseBatch.from_csr(sp.csr_matrix(x.numpy()))
    gen = torch.Generator().manual_seed(3)
    want, _ = recvae_loss(rad, batch, cfg, gen, keep_rate=1.0, with_anchor=False)
    eps = torch.randn(5, 4, generator=torch.Generator().manual_seed(3))
    monkeypatch.setattr(torch, "randn_like", lambda t: eps)
    got = ref.loss(x, 0.0, lambda_a=0.0)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_recvae_bench_and_gap_analysis_on_tiny_data(bq, tmp_path):
    """RecVAE runs (radius, reference, the standard-prior variant) go end to end; the
    summary pairs radius with the reference only, and the gap analysis's masking - clean
    is the paired difference of the per-user scores."""
    runs = tmp_path / "runs"
    common = ["--synthetic-tiny", "--seeds", "0,1", "--epochs", "2", "--patience", "1"]
    common += ["--runs-dir", str(runs), "--settings", "clean,masking"]
    rc = bq.main(
        ["--model", "recvae", "--impls", "radius,reference,radius-stdprior"]
        + common
        + ["--out", str(tmp_path / "q.json")]
    )
    assert rc == 0
    assert len(list(runs.glob("tiny-recvae-*.json"))) == 2 * 2 * 3
    summary = json.loads((tmp_path / "q.json").read_text())
    assert summary["model"] == "recvae"
    assert summary["reference_recipe"]["prior_weights"] == [3 / 20, 3 / 4, 1 / 10]
    assert set(summary["datasets"]["tiny"]["clean"]) >= {"radius", "reference"}
    assert "radius-stdprior" not in summary["datasets"]["tiny"]["clean"]
    assert (
        bq.main(
            ["--gap", "--synthetic-tiny", "--runs-dir", str(runs)]
            + ["--out", str(tmp_path / "gap.json")]
        )
        == 0
    )
    gap = json.loads((tmp_path / "gap.json").read_text())
    g = gap["groups"]["recvae/radius"]
    by = {
        (r["setting"], r["seed"]): r
        for r in map(lambda p: json.loads(p.read_text()), runs.glob("tiny-recvae-radius-*-s*.json"))
        if r["impl"] == "radius"
    }
    want = np.mean(
        [
            np.subtract(
                by["masking", s]["per_user"]["ndcg@100"], by["clean", s]["per_user"]["ndcg@100"]
            )
            for s in (0, 1)
        ]
    )
    assert g["masking_minus_clean"]["interval"]["estimate"] == pytest.approx(want, abs=1e-9)
    assert set(gap["variants"]["recvae/radius-stdprior"]) == {"clean", "masking"}
    assert [r["stopped"] for r in g["clean"]["runs"].values()] == ["cap", "cap"]  # 2 epochs


def test_bench_refuses_unknown_names(bq, tmp_path, capsys):
    """An unknown model, setting or implementation, or a variant of the other model, is a
    usage error (exit 2) naming it."""
    base = ["--synthetic-tiny", "--runs-dir", str(tmp_path)]
    for extra, name in (
        (["--model", "lightgcn"], "lightgcn"),
        (["--settings", "clean,dropout"], "dropout"),
        (["--impls", "radius,cornac"], "cornac"),
        (["--model", "multvae", "--impls", "radius-stdprior"], "radius-stdprior"),
    ):
        with pytest.raises(SystemExit) as e:
            bq.main(base + extra)
        assert e.value.code == 2
        assert name in capsys.readouterr().err
