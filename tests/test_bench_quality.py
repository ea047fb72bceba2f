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
