"""Multi-VAE: sparse path equals dense path, masking edge cases, PIA terms, protocol."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
import torch

from radius.model.multvae import MultVAE, SparseBatch, keep_to_dense
from radius.model.protocol import check_model, encode_masked, input_convention
from radius.model.recvae import RecVAE
from radius.training.build import build_model
from radius.training.config import TrainConfig
from radius.training.losses import draw_keep, mask_batch, multvae_loss

CONVENTIONS = ("normalize-mask", "mask-normalize")


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
    cfg = TrainConfig(hidden_dims=(16,), latent_dim=4, lambda_a=0.5, keep_rate=1e-9)
    model = MultVAE(40, (16,), 4, use_anchors=True, keep_rate=1e-9)
    sb = SparseBatch.from_csr(_batch(2))
    zero = sb.with_values(torch.zeros_like(sb.values))
    mu, lv = model.encode_sparse(zero)
    assert torch.isfinite(mu).all() and torch.isfinite(lv).all()
    mu_d, _ = model.encode(torch.zeros(3, 40))
    assert torch.isfinite(mu_d).all()
    gen = torch.Generator().manual_seed(0)
    loss, parts = multvae_loss(model, sb, cfg, 0.2, gen)
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


def _model(kind, convention, keep_rate=0.5):
    torch.manual_seed(0)
    if kind == "multvae":
        return MultVAE(40, (16,), 4, keep_rate=keep_rate, input_convention=convention)
    return RecVAE(40, 16, 4, keep_rate=keep_rate, input_convention=convention)


@pytest.mark.parametrize("kind", ["multvae", "recvae"])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_sparse_masked_encoder_equals_dense_under_both_conventions(kind, convention):
    """Same keep mask: encode_sparse(batch, keep) == encode_masked(dense x, dense b)."""
    model = _model(kind, convention)
    sb = SparseBatch.from_csr(_batch(4))
    keep = draw_keep(sb, 0.5, torch.Generator().manual_seed(1))
    assert 0 < float(keep.mean()) < 1
    mu_s, lv_s = model.encode_sparse(sb, keep)
    mu_d, lv_d = model.encode_masked(sb.to_dense(), keep_to_dense(sb, keep))
    torch.testing.assert_close(mu_s, mu_d, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(lv_s, lv_d, rtol=1e-5, atol=1e-5)
    # the protocol's dispatcher uses the model's own method and names its convention
    torch.testing.assert_close(
        encode_masked(model, sb.to_dense(), keep_to_dense(sb, keep))[0], mu_d
    )
    assert input_convention(model) == convention


@pytest.mark.parametrize("kind", ["multvae", "recvae"])
@pytest.mark.parametrize("convention", CONVENTIONS)
def test_all_ones_mask_is_the_clean_encoding(kind, convention):
    """encode_masked(x, b = 1) == encode(x) under both conventions (at normalize-mask the
    1/rho rescale is undone only in expectation, so b = 1 here means keep_rate 1)."""
    model = _model(kind, convention, keep_rate=1.0)
    x = torch.as_tensor(_batch(5).toarray())
    torch.testing.assert_close(model.encode_masked(x, torch.ones_like(x))[0], model.encode(x)[0])
    torch.testing.assert_close(model.encode_masked(x, None)[0], model.encode(x)[0])


def test_normalize_mask_input_is_unbiased_for_the_clean_input():
    """Under normalize-mask E_b[encoder input] = x / ||x|| (inverted dropout), the
    clean input seen at evaluation; the first layer is linear in it, so
    E_b[pre-activation] = clean pre-activation (Monte Carlo, 4000 masks)."""
    from radius.model.multvae import encoder_input_dense

    x = torch.as_tensor(_batch(6, n=4).toarray(), dtype=torch.float64)
    gen = torch.Generator().manual_seed(0)
    b = (torch.rand((4000, *x.shape), generator=gen, dtype=torch.float64) < 0.5).double()
    mean = encoder_input_dense(x[None], b, 0.5, "normalize-mask").mean(0)
    clean = encoder_input_dense(x, None, 0.5, "normalize-mask")
    # per-entry MC standard error: (1/||x||) * sqrt((1 - rho) / rho / 4000) <= 0.016 / ||x||
    torch.testing.assert_close(mean, clean, rtol=0, atol=0.08 / float(x.norm(dim=1).min()))


def test_mask_normalize_shifts_the_input_scale_by_one_over_sqrt_rho():
    """Under mask-normalize the masked input has unit norm, so on the support its entries
    are about 1/sqrt(rho) times the clean input's: the train/test shift (theory.md)."""
    from radius.model.multvae import encoder_input_dense

    rho = 0.25
    x = torch.ones(1, 400, dtype=torch.float64)  # one user with 400 items
    gen = torch.Generator().manual_seed(0)
    b = (torch.rand((2000, 1, 400), generator=gen, dtype=torch.float64) < rho).double()
    kept_mean = lambda t: float((t * b).sum() / b.sum())  # noqa: E731  mean entry on kept items
    shifted = kept_mean(encoder_input_dense(x[None], b, rho, "mask-normalize"))
    clean = float(encoder_input_dense(x, None, rho, "mask-normalize")[0, 0])
    assert abs(shifted / clean - rho**-0.5) < 0.03 * rho**-0.5
    # normalize-mask keeps the expectation: kept entries are clean / rho, mean over all = clean
    nm = encoder_input_dense(x[None], b, rho, "normalize-mask")
    assert abs(float(nm.mean()) / clean - 1.0) < 0.02


def test_training_refuses_a_model_built_for_another_convention():
    """multvae_loss refuses a model whose keep rate or convention differs from the config,
    so encode_masked always reproduces what training fed the encoder."""
    cfg = TrainConfig(hidden_dims=(16,), latent_dim=4)
    sb = SparseBatch.from_csr(_batch(7))
    gen = torch.Generator().manual_seed(0)
    ok = build_model(cfg, 40)
    assert ok.input_convention == "normalize-mask" and ok.keep_rate == 0.5
    multvae_loss(ok, sb, cfg, 0.1, gen)
    with pytest.raises(ValueError, match="input_convention='mask-normalize'"):
        multvae_loss(ok, sb, cfg.replace(input_convention="mask-normalize"), 0.1, gen)
    with pytest.raises(ValueError, match="keep_rate=0.3"):
        multvae_loss(ok, sb, cfg.replace(keep_rate=0.3), 0.1, gen)


def test_unknown_convention_is_rejected():
    """An unknown convention names the valid ones."""
    with pytest.raises(ValueError, match="normalize-mask"):
        MultVAE(30, (8,), 3, input_convention="dropout-first")
    with pytest.raises(ValueError, match="keep_rate"):
        MultVAE(30, (8,), 3, keep_rate=0.0)
