r"""Training losses: the masked, annealed beta-ELBO (+ lambda_A L_A) of Multi-VAE and RecVAE.

The keep mask b is drawn on the stored entries of a sparse batch; the model's
``input_convention`` decides what its encoder sees (``radius.model.multvae``). RecVAE's
loss uses its composite prior and the count-scaled KL (``radius.model.recvae``).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from radius.model.multvae import MultVAE, SparseBatch, keep_to_dense, kl_std_normal, reparameterize
from radius.model.pia import anchor_terms_sparse
from radius.model.recvae import RecVAE, log_norm_pdf
from radius.training.config import TrainConfig

__all__ = ["draw_keep", "check_model_config", "mask_batch", "multvae_loss", "recvae_loss"]


def draw_keep(
    batch: SparseBatch, keep_rate: float, generator: torch.Generator
) -> torch.Tensor | None:
    """Keep mask b ~ Bernoulli(keep_rate) on the stored entries, (nnz,) of 0/1 (None at 1)."""
    if keep_rate >= 1.0:
        return None
    keep = torch.rand(batch.values.shape, generator=generator, device=batch.values.device)
    return (keep < keep_rate).to(batch.values.dtype)


def check_model_config(model: nn.Module, config: TrainConfig) -> None:
    """``ValueError`` unless the model encodes masked inputs as ``config`` trains them
    (same keep rate and input convention), so ``model.encode_masked`` reproduces training."""
    got = (getattr(model, "keep_rate", None), getattr(model, "input_convention", None))
    want = (config.keep_rate, config.input_convention)
    if got[0] is None or got[1] is None or float(got[0]) != float(want[0]) or got[1] != want[1]:
        raise ValueError(
            f"model encodes with keep_rate={got[0]}, input_convention={got[1]!r} but the config "
            f"trains with keep_rate={want[0]}, input_convention={want[1]!r}: build the model "
            "with radius.training.build.build_model(config)"
        )


def mask_batch(batch: SparseBatch, keep_rate: float, generator: torch.Generator) -> SparseBatch:
    """x * b with b ~ Bernoulli(keep_rate) on the stored entries (zeros stay zero)."""
    if keep_rate >= 1.0:
        return batch
    keep = (
        torch.rand(batch.values.shape, generator=generator, device=batch.values.device) < keep_rate
    )
    return batch.with_values(batch.values * keep.to(batch.values.dtype))


def multvae_loss(
    model: MultVAE, batch: SparseBatch, config: TrainConfig, beta: float, generator: torch.Generator
) -> tuple[torch.Tensor, dict[str, float]]:
    """Mean over the batch of the training objective; returns (loss, parts)."""
    check_model_config(model, config)
    keep = draw_keep(batch, config.keep_rate, generator)  # (nnz,) or None
    if config.sparse_input:
        mu, logvar = model.encode_sparse(batch, keep)  # (B, d)
    else:
        b = None if keep is None else keep_to_dense(batch, keep)  # (B, I)
        mu, logvar = model.encode_masked(batch.to_dense(), b)
    z = reparameterize(mu, logvar, generator)
    logsm = torch.log_softmax(model.decode(z), dim=-1)  # (B, I)
    nll = -(logsm[batch.rows, batch.indices] * batch.values).sum() / batch.n_rows
    kl = kl_std_normal(mu, logvar).mean()
    loss = nll + beta * kl
    parts = {"nll": nll.item(), "kl": kl.item()}
    if config.lambda_a > 0:
        terms = anchor_terms_sparse(batch, mu, logvar, model.anchors)
        la = terms.total(config.anchor_terms).mean()
        loss = loss + config.lambda_a * la
        parts.update(
            anchor=la.item(),
            anchor_align=terms.align.mean().item(),
            anchor_trace=terms.trace.mean().item(),
            anchor_spread=terms.spread.mean().item(),
        )
    return loss, parts


def recvae_loss(
    model: RecVAE,
    batch: SparseBatch,
    config: TrainConfig,
    gen: torch.Generator,
    *,
    keep_rate: float,
    with_anchor: bool,
) -> tuple[Tensor, dict[str, float]]:
    """Negative ELBO with the composite prior and count-scaled KL (+ lambda_A L_A)."""
    check_model_config(model, config)
    keep = draw_keep(batch, keep_rate, gen)  # None at keep_rate 1 (decoder phase)
    how = {"keep_rate": keep_rate, "convention": model.input_convention}  # mask's own rate
    if config.sparse_input:
        mu, logvar = model.encoder.forward_sparse(batch, keep, **how)
    else:
        from radius.model.multvae import keep_to_dense

        b = None if keep is None else keep_to_dense(batch, keep)
        mu, logvar = model.encoder(batch.to_dense(), b, **how)
    eps = torch.randn(mu.shape, generator=gen, device=mu.device)
    z = mu + torch.exp(0.5 * logvar) * eps
    with torch.no_grad():
        mu_old, logvar_old = model.prior.encoder_old.forward_sparse(batch)
    logsm = torch.log_softmax(model.decode(z), dim=-1)
    mll = (logsm[batch.rows, batch.indices] * batch.values).sum() / batch.n_rows
    kl_weight = config.gamma * batch.row_sum(batch.values)  # (B,)
    kld = (log_norm_pdf(z, mu, logvar) - model.prior.log_prob(z, mu_old, logvar_old)).sum(-1)
    loss = -mll + (kl_weight * kld).mean()
    parts = {"nll": -mll.item(), "kl": kld.mean().item()}
    if with_anchor and model.anchors is not None and config.lambda_a > 0:
        terms = anchor_terms_sparse(batch, mu, logvar, model.anchors)
        la = terms.total(config.anchor_terms).mean()
        loss = loss + config.lambda_a * la
        parts["anchor"] = la.item()
    return loss, parts
