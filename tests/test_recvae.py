"""RecVAE: composite prior density, phase isolation, masking edge cases, protocol."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import norm

from radius.model.multvae import SparseBatch
from radius.model.protocol import check_model
from radius.model.recvae import PRIOR_WEIGHTS, RecVAE
from radius.training.config import TrainConfig
from radius.training.losses import recvae_loss
from radius.training.trainers import RecVAETrainer


def _csr(n=20, items=30, seed=0):
    m = sp.random(n, items, density=0.25, random_state=seed, format="csr", dtype=np.float32)
    m.data[:] = 1.0
    return m


def test_composite_prior_matches_direct_mixture_density():
    """log p(z) equals log of the weighted sum of the three Gaussian densities (scipy)."""
    torch.manual_seed(0)
    model = RecVAE(30, 16, 4)
    z = torch.randn(5, 4, dtype=torch.float64)
    mu_old = torch.randn(5, 4, dtype=torch.float64)
    lv_old = 0.3 * torch.randn(5, 4, dtype=torch.float64)
    got = model.prior.log_prob(z, mu_old, lv_old).numpy()
    zn, mn, sn = z.numpy(), mu_old.numpy(), np.exp(0.5 * lv_old.numpy())
    w = PRIOR_WEIGHTS
    dens = (
        w[0] * norm.pdf(zn)
        + w[1] * norm.pdf(zn, loc=mn, scale=sn)
        + w[2] * norm.pdf(zn, scale=np.exp(5.0))
    )
    np.testing.assert_allclose(got, np.log(dens), rtol=1e-10)
    assert abs(sum(PRIOR_WEIGHTS) - 1.0) < 1e-12


def test_phases_update_only_their_own_parameters():
    """The encoder phase leaves the decoder unchanged and the decoder phase the encoder."""
    torch.manual_seed(0)
    cfg = TrainConfig(model="recvae", hidden_dims=(16,), latent_dim=4, batch_size=10, lambda_a=0.1)
    model = RecVAE(30, 16, 4, use_anchors=True, keep_rate=0.5)
    trainer = RecVAETrainer(model, cfg)
    gen = torch.Generator().manual_seed(0)
    x = _csr()
    dec0 = {n: p.detach().clone() for n, p in model.decoder_parameters()}
    enc0 = {n: p.detach().clone() for n, p in model.encoder_parameters()}
    trainer._pass(x, np.arange(20), trainer.opt_enc, gen, keep_rate=0.5, with_anchor=True, sums={})
    assert all(torch.equal(p, dec0[n]) for n, p in model.decoder_parameters())
    assert any(not torch.equal(p, enc0[n]) for n, p in model.encoder_parameters())
    enc1 = {n: p.detach().clone() for n, p in model.encoder_parameters()}
    trainer._pass(x, np.arange(20), trainer.opt_dec, gen, keep_rate=1.0, with_anchor=False, sums={})
    assert all(torch.equal(p, enc1[n]) for n, p in model.encoder_parameters())
    assert any(not torch.equal(p, dec0[n]) for n, p in model.decoder_parameters())


def test_prior_refresh_copies_the_encoder():
    """After refresh the frozen prior encoder equals the current encoder and has no grads."""
    model = RecVAE(30, 16, 4)
    with torch.no_grad():
        model.encoder.fc_mu.weight.add_(1.0)
    model.prior.refresh(model.encoder)
    torch.testing.assert_close(model.prior.encoder_old.fc_mu.weight, model.encoder.fc_mu.weight)
    assert not any(p.requires_grad for p in model.prior.encoder_old.parameters())


def test_fully_masked_user_gives_finite_loss():
    """A user with every item masked out gives finite encodings, loss and gradients."""
    torch.manual_seed(0)
    cfg = TrainConfig(model="recvae", hidden_dims=(16,), latent_dim=4, lambda_a=0.2)
    model = RecVAE(30, 16, 4, use_anchors=True, keep_rate=0.5)
    sb = SparseBatch.from_csr(_csr(seed=3))
    mu, lv = model.encode_sparse(sb.with_values(torch.zeros_like(sb.values)))
    assert torch.isfinite(mu).all() and torch.isfinite(lv).all()
    loss, _ = recvae_loss(
        model, sb, cfg, torch.Generator().manual_seed(0), keep_rate=1e-9, with_anchor=True
    )
    assert torch.isfinite(loss)
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_sparse_and_dense_encoders_agree_and_protocol_holds():
    """encode_sparse == encode on the dense batch; decode is the linear output layer."""
    torch.manual_seed(0)
    model = check_model(RecVAE(30, 16, 4))
    sb = SparseBatch.from_csr(_csr(seed=5))
    torch.testing.assert_close(
        model.encode_sparse(sb)[0], model.encode(sb.to_dense())[0], rtol=1e-5, atol=1e-5
    )
    z = torch.randn(3, 4)
    w, b = model.output_layer()
    torch.testing.assert_close(model.decode(z), model.decoder_features(z) @ w.T + b)


def test_recvae_trains_through_the_common_loop(tiny_dataset, tiny_config, tmp_path):
    """`train` with model=recvae learns, checkpoints, and reloads through the same code."""
    from radius.training.checkpoints import load_checkpoint
    from radius.training.trainer import train

    cfg = tiny_config.replace(model="recvae", epochs=3, patience=3, enc_epochs=1, lambda_a=0.1)
    res = train(tiny_dataset, cfg, checkpoint=tmp_path / "r.pt", progress=False)
    assert res.test["means"]["ndcg@100"] > 0.1
    loaded = load_checkpoint(tmp_path / "r.pt", tiny_dataset)
    assert isinstance(loaded.model, RecVAE) and loaded.model.anchors is not None


def test_standard_prior_ablation_is_the_standard_normal():
    """recvae_prior="standard": log p(z) = log N(z; 0, I), whatever the old posterior."""
    from radius.training.build import build_model

    cfg = TrainConfig(model="recvae", hidden_dims=(16,), latent_dim=4, recvae_prior="standard")
    model = build_model(cfg, 30)
    z = torch.randn(5, 4, dtype=torch.float64)
    far = torch.full((5, 4), 50.0, dtype=torch.float64)
    got = model.prior.log_prob(z, far, far).numpy()
    np.testing.assert_allclose(got, norm.logpdf(z.numpy()), rtol=1e-12)
    composite = build_model(cfg.replace(recvae_prior="composite"), 30)
    assert not np.allclose(composite.prior.log_prob(z, z, z * 0).numpy(), norm.logpdf(z.numpy()))


def test_recvae_prior_option_keeps_default_cache_keys():
    """The option is absent from key_dict at its default (earlier cache keys stay valid),
    present otherwise; a bad value is refused by name."""
    import pytest

    from radius.errors import RadiusError

    assert "recvae_prior" not in TrainConfig(model="recvae").key_dict()
    assert TrainConfig(recvae_prior="standard").key_dict()["recvae_prior"] == "standard"
    with pytest.raises(RadiusError, match="recvae_prior must be 'composite' or 'standard'"):
        TrainConfig(recvae_prior="wide")


def test_first_layer_starts_as_nn_linear():
    """The first encoder layer (weight and bias) is U(-1/sqrt(I), 1/sqrt(I)), the law of
    nn.Linear(I, H) that the reference's first layer has: bounded, with its variance."""
    torch.manual_seed(0)
    n_items = 400
    enc = RecVAE(n_items, 300, 8).encoder
    bound = 1.0 / np.sqrt(n_items)
    w = enc.in_weight.detach().numpy()
    assert np.abs(w).max() <= bound and np.abs(enc.in_bias.detach().numpy()).max() <= bound
    assert abs(w.std() - bound / np.sqrt(3.0)) < 0.02 * bound  # 120,000 draws


def test_prior_encoder_starts_from_its_own_weights():
    """The frozen prior encoder starts from independent random weights (as the
    reference's), of the encoder's shapes; refresh makes it a copy."""
    torch.manual_seed(0)
    model = RecVAE(30, 16, 4)
    old, enc = model.prior.encoder_old, model.encoder
    for (name, p), (_, q) in zip(old.named_parameters(), enc.named_parameters()):
        assert p.shape == q.shape
        if name.startswith(("in_", "fcs", "fc_")):
            assert not torch.equal(p, q), name
    model.prior.refresh(enc)
    assert all(torch.equal(p, q) for p, q in zip(old.parameters(), enc.parameters()))


def test_every_pass_of_an_epoch_reshuffles_the_users():
    """One epoch runs enc_epochs + 1 passes over the same users, each in its own order
    (the reference shuffles before every pass)."""
    torch.manual_seed(0)
    cfg = TrainConfig(model="recvae", hidden_dims=(16,), latent_dim=4, batch_size=10)
    trainer = RecVAETrainer(RecVAE(30, 16, 4, keep_rate=0.5), cfg)
    seen = []
    trainer._pass = lambda csr, perm, *a, **k: seen.append(np.array(perm)) or 1
    perm = np.random.default_rng(0).permutation(20)
    trainer.run_epoch(_csr(), perm, 0, 1, torch.Generator().manual_seed(0))
    assert len(seen) == cfg.enc_epochs + 1
    np.testing.assert_array_equal(seen[0], perm)
    assert all(sorted(p) == list(range(20)) for p in seen)
    assert len({tuple(p) for p in seen}) == len(seen)
