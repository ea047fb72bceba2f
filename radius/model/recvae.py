r"""RecVAE (Shenbin et al., WSDM 2020) with Bernoulli input masking and PIA anchors.

Encoder: input L2-normalised with an epsilon, then keep-masked with the 1/rho rescale
(``input_convention="normalize-mask"``, the reference code's ``x / ||x||`` followed by
``F.dropout``; ``"mask-normalize"`` is kept as an option), five densely connected
layers with swish and layer norm, mean and log-variance heads. Decoder: one linear
layer (so ``decoder_features(z) = z``). Composite prior

.. math::

    p(z \mid \phi_{old}, x) = \tfrac{3}{20}\,\mathcal N(0, I)
        + \tfrac{3}{4}\,\mathcal N(\mu_{\phi_{old}}(x), \sigma^2_{\phi_{old}}(x))
        + \tfrac{1}{10}\,\mathcal N(0, e^{10} I),

where ``phi_old`` is a frozen copy of the encoder taken after each encoder phase.
The KL weight is scaled by the user's interaction count: ``gamma * |x|``. Training
alternates encoder phases (``enc_epochs`` passes with the mask and, with PIA, the
anchor loss) and one decoder phase (clean input: the reference runs it with
``dropout_rate=0``), each updating only its own parameters. The frozen prior encoder
always sees the clean input, as in the reference.

Defaults (``TrainConfig`` with ``model="recvae"``): the reference ``run.py``'s lr 5e-4,
50 epochs, 3 encoder passes per decoder pass, gamma 0.005, dropout 0.5 (rho = 0.5),
hidden 600, latent 200, batch 500.

Differences from the reference code: the first layer is an ``(I, H)`` table so sparse
batches use an embedding bag; the normalisation has an epsilon, so a user with no
items encodes to finite values (the reference divides by the raw row norm: NaN).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radius.config import TrainConfig
from radius.model.multvae import (
    SparseBatch,
    check_convention,
    encoder_input_dense,
    encoder_input_sparse,
)
from radius.model.pia import anchor_terms_sparse

__all__ = ["RecVAE", "CompositePrior", "log_norm_pdf", "RecVAETrainer", "PRIOR_WEIGHTS"]

PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)  # standard, previous posterior, wide
STANDARD_PRIOR_WEIGHTS = (1.0, 0.0, 0.0)  # N(0, I) only (the ``recvae_prior="standard"`` ablation)
WIDE_LOGVAR = 10.0


def log_norm_pdf(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mu, e^logvar) (no sum over dimensions)."""
    return -0.5 * (logvar + math.log(2 * math.pi) + (x - mu) ** 2 / torch.exp(logvar))


class RecVAEEncoder(nn.Module):
    """Densely connected encoder: h_k = LN(swish(W_k h_{k-1} + sum_{j<k} h_j))."""

    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int, n_layers: int = 5) -> None:
        super().__init__()
        self.in_weight = nn.Parameter(torch.empty(n_items, hidden_dim))  # (I, H)
        self.in_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.fcs = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers - 1))
        self.lns = nn.ModuleList(nn.LayerNorm(hidden_dim, eps=0.1) for _ in range(n_layers))
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        nn.init.xavier_uniform_(self.in_weight)

    def forward_hidden(self, h0: Tensor) -> tuple[Tensor, Tensor]:
        hs = [self.lns[0](F.silu(h0 + self.in_bias))]
        for k, fc in enumerate(self.fcs, start=1):
            hs.append(self.lns[k](F.silu(fc(hs[-1]) + sum(hs))))
        return self.fc_mu(hs[-1]), self.fc_logvar(hs[-1])

    def forward(
        self,
        x: Tensor,
        b: Tensor | None = None,
        *,
        keep_rate: float = 1.0,
        convention: str = "normalize-mask",
    ) -> tuple[Tensor, Tensor]:
        """Dense x (B, I) under keep mask b (B, I) (None: clean) -> mu, logvar (B, d)."""
        xt = encoder_input_dense(x, b, keep_rate, convention)  # (B, I)
        return self.forward_hidden(xt @ self.in_weight)

    def forward_sparse(
        self,
        batch: SparseBatch,
        keep: Tensor | None = None,
        *,
        keep_rate: float = 1.0,
        convention: str = "normalize-mask",
    ) -> tuple[Tensor, Tensor]:
        """Sparse path, same maths as ``forward`` with ``keep`` (nnz,) on the stored entries."""
        w = encoder_input_sparse(batch, keep, keep_rate, convention)
        h0 = F.embedding_bag(
            batch.indices, self.in_weight, batch.offsets, mode="sum", per_sample_weights=w
        )
        return self.forward_hidden(h0)


class CompositePrior(nn.Module):
    """Mixture prior of RecVAE; the middle component is a frozen copy of the encoder."""

    def __init__(self, encoder: RecVAEEncoder, weights: tuple[float, ...] = PRIOR_WEIGHTS) -> None:
        super().__init__()
        self.encoder_old = copy.deepcopy(encoder)
        self.encoder_old.requires_grad_(False)
        self.weights = weights

    def refresh(self, encoder: RecVAEEncoder) -> None:
        """phi_old <- phi (after each encoder phase)."""
        self.encoder_old.load_state_dict(encoder.state_dict())

    def log_prob(self, z: Tensor, mu_old: Tensor, logvar_old: Tensor) -> Tensor:
        """Elementwise log p(z) (B, d): logsumexp over the three weighted components."""
        zeros = torch.zeros_like(z)
        comps = [
            log_norm_pdf(z, zeros, zeros),
            log_norm_pdf(z, mu_old, logvar_old),
            log_norm_pdf(z, zeros, zeros + WIDE_LOGVAR),
        ]
        kept = [c + math.log(w) for c, w in zip(comps, self.weights) if w > 0]
        if len(kept) == 1:
            return kept[0]
        return torch.logsumexp(torch.stack(kept, dim=-1), dim=-1)


class RecVAE(nn.Module):
    """RecVAE with the radius model protocol (see radius.model.protocol)."""

    def __init__(
        self,
        n_items: int,
        hidden_dim: int = 600,
        latent_dim: int = 200,
        *,
        use_anchors: bool = False,
        anchor_init: str = "normal",
        anchor_init_scale: float = 0.01,
        prior: str = "composite",
        keep_rate: float = 1.0,
        input_convention: str = "normalize-mask",
    ) -> None:
        super().__init__()
        check_convention(input_convention, keep_rate)
        self.keep_rate = float(keep_rate)
        self.input_convention = input_convention
        if prior not in ("composite", "standard"):
            raise ValueError(f"prior must be 'composite' or 'standard', got {prior!r}")
        if n_items < 1 or latent_dim < 1 or hidden_dim < 1:
            raise ValueError(
                f"need positive sizes, got n_items={n_items}, hidden_dim={hidden_dim}, "
                f"latent_dim={latent_dim}"
            )
        self.n_items, self.latent_dim = int(n_items), int(latent_dim)
        self.encoder = RecVAEEncoder(n_items, hidden_dim, latent_dim)
        weights = PRIOR_WEIGHTS if prior == "composite" else STANDARD_PRIOR_WEIGHTS
        self.prior = CompositePrior(self.encoder, weights)
        self.decoder = nn.Linear(latent_dim, n_items)
        if use_anchors:
            self.anchor_table = nn.Parameter(torch.empty(n_items, latent_dim))
            if anchor_init == "zeros":
                nn.init.zeros_(self.anchor_table)
            else:
                nn.init.normal_(self.anchor_table, std=anchor_init_scale)
        else:
            self.register_parameter("anchor_table", None)

    # protocol
    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """q(z | x) on the clean input (b = 1), as at evaluation."""
        return self.encoder(x)

    def encode_masked(self, x: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
        """q(z | x, b) as the encoder saw it in its masked (encoder) phase."""
        return self.encoder(x, b, keep_rate=self.keep_rate, convention=self.input_convention)

    def encode_sparse(
        self, batch: SparseBatch, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sparse ``encode_masked`` with ``keep`` (nnz,) on the stored entries."""
        return self.encoder.forward_sparse(
            batch, keep, keep_rate=self.keep_rate, convention=self.input_convention
        )

    def decoder_features(self, z: Tensor) -> Tensor:
        return z

    def decode(self, z: Tensor) -> Tensor:
        return self.decoder(z)

    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        return self.decoder.weight, self.decoder.bias  # (I, d), (I,)

    @property
    def anchors(self) -> Tensor | None:
        return self.anchor_table

    def decoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"decoder.{n}", p) for n, p in self.decoder.named_parameters()]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"encoder.{n}", p) for n, p in self.encoder.named_parameters()]


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
    from radius.train import check_model_config, draw_keep

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


class RecVAETrainer:
    """Alternating phases: ``enc_epochs`` encoder passes, refresh prior, one decoder pass."""

    def __init__(self, model: RecVAE, config: TrainConfig) -> None:
        from radius.train import make_adam

        self.model, self.config = model, config
        enc_params = [p for _, p in model.encoder_parameters()]
        if model.anchors is not None:
            enc_params.append(model.anchors)
        self.opt_enc = make_adam(enc_params, config)
        self.opt_dec = make_adam([p for _, p in model.decoder_parameters()], config)
        from radius.distributed import LossStep

        self.step: nn.Module = LossStep(model, recvae_loss)

    def distribute(self, info, device: torch.device) -> None:
        """Route the loss through DistributedDataParallel (``radius.distributed``); the
        anchors sit out the decoder phase, so DDP looks for unused parameters."""
        from radius.distributed import wrap

        self.step = wrap(self.step, info, device, unused=True)

    def state_dict(self) -> dict[str, Any]:
        return {"enc": self.opt_enc.state_dict(), "dec": self.opt_dec.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.opt_enc.load_state_dict(state["enc"])
        self.opt_dec.load_state_dict(state["dec"])

    def _pass(self, train_csr, perm, opt, gen, *, keep_rate, with_anchor, sums) -> int:
        cfg, device = self.config, next(self.model.parameters()).device
        n = 0
        for s in range(0, len(perm), cfg.batch_size):
            idx = np.sort(perm[s : s + cfg.batch_size])
            batch = SparseBatch.from_csr(train_csr[idx], device=device)
            loss, parts = self.step(batch, cfg, gen, keep_rate=keep_rate, with_anchor=with_anchor)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            n += 1
            for k, v in {"loss": loss.item(), **parts}.items():
                sums[k] = sums.get(k, 0.0) + v
        return n

    def run_epoch(self, train_csr, perm, step, anneal_steps, gen):
        """Encoder phase (masked, + PIA), prior refresh, decoder phase (clean)."""
        self.model.train()
        sums: dict[str, float] = {}
        n = 0
        for _ in range(self.config.enc_epochs):
            n += self._pass(
                train_csr,
                perm,
                self.opt_enc,
                gen,
                keep_rate=self.config.keep_rate,
                with_anchor=True,
                sums=sums,
            )
        self.model.prior.refresh(self.model.encoder)
        n += self._pass(
            train_csr, perm, self.opt_dec, gen, keep_rate=1.0, with_anchor=False, sums=sums
        )
        return sums, n, step + n, self.config.gamma
