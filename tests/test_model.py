"""Multi-VAE: sparse path equals dense path, masking edge cases, PIA terms, protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from radius.config import TrainConfig
from radius.model.multvae import MultVAE, SparseBatch
from radius.model.protocol import check_model
from radius.train import mask_batch, multvae_loss


def _batch(seed=0, n=12, items=40, density=0.2):
    m = sp.random(n, items, density=density, random_state=seed, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    return m


def test_sparse_encoder_equals_dense_encoder():
    """encode_sparse(batch) == encode(batch.to_dense()) (same maths, two code paths)."""
    torch.manual_seed(0)
    model = MultVAE(40, (16,), 4)
    sb = SparseBatch.from_csr(_batch())
    mu_s, lv_s = model.encode_sparse(sb)
    mu_d, lv_d = model.encode(sb.to_dense())
    torch.testing.assert_close(mu_s, mu_d, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(lv_s, lv_d, rtol=1e-5, atol=1e-6)


def test_sparse_and_dense_gradients_agree():
    """The first-layer gradient is the same through the embedding bag and the dense product."""
    torch.manual_seed(0)
    model = MultVAE(40, (16,), 4)
    sb = SparseBatch.from_csr(_batch(1))
    mu, lv = model.encode_sparse(sb)
    (mu.sum() + lv.sum()).backward()
    g_sparse = model.enc_in_weight.grad.clone()
    model.zero_grad()
    mu, lv = model.encode(sb.to_dense())
    (mu.sum() + lv.sum()).backward()
    torch.testing.assert_close(g_sparse, model.enc_in_weight.grad, rtol=1e-5, atol=1e-6)


def test_fully_masked_user_gives_finite_loss():
    """A user whose every item is masked out encodes to finite values and a finite loss."""
    torch.manual_seed(0)
    cfg = TrainConfig(hidden_dims=(16,), latent_dim=4, lambda_a=0.5)
    model = MultVAE(40, (16,), 4, use_anchors=True)
    sb = SparseBatch.from_csr(_batch(2))
    zero = sb.with_values(torch.zeros_like(sb.values))
    mu, lv = model.encode_sparse(zero)
    assert torch.isfinite(mu).all() and torch.isfinite(lv).all()
    mu_d, _ = model.encode(torch.zeros(3, 40))
    assert torch.isfinite(mu_d).all()
    gen = torch.Generator().manual_seed(0)
    loss, parts = multvae_loss(model, sb, cfg.replace(keep_rate=1e-9), 0.2, gen)
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_mask_keeps_about_rho_and_never_adds_items():
    """Bernoulli(rho) masking keeps about rho of the entries and never creates new ones."""
    sb = SparseBatch.from_csr(_batch(3, n=200, items=100, density=0.3))
    gen = torch.Generator().manual_seed(0)
    masked = mask_batch(sb, 0.3, gen)
    kept = float((masked.values > 0).float().mean())
    assert abs(kept - 0.3) < 0.03
    assert torch.all(masked.values <= sb.values)
    assert mask_batch(sb, 1.0, gen) is sb


def test_protocol_members_and_output_layer_identity():
    """MultVAE follows the protocol and decode(z) == features(z) @ W.T + b."""
    model = check_model(MultVAE(30, (8,), 3, use_anchors=True))
    z = torch.randn(5, 3)
    w, b = model.output_layer()
    torch.testing.assert_close(model.decode(z), model.decoder_features(z) @ w.T + b)
    assert model.anchors.shape == (30, 3)
    assert MultVAE(30, (8,), 3).anchors is None
    with pytest.raises(TypeError, match="missing"):
        check_model(object())


def test_bad_dims_are_rejected():
    """Nonsense dimensions raise ValueError with the values in the message."""
    with pytest.raises(ValueError, match="n_items=0"):
        MultVAE(0, (8,), 3)
