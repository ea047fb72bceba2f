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
3 encoder passes per decoder pass, gamma 0.005, dropout 0.5 (rho = 0.5), hidden 600,
latent 200, batch 500; up to 200 epochs with early stopping (patience 20) on validation
nDCG@100 (``run.py`` trains a fixed 50 epochs, too few steps on small data sets:
``bench/README.md``, "RecVAE against its reference code").

Differences from the reference code: the first layer is an ``(I, H)`` table so sparse
batches use an embedding bag (same initialisation law as ``nn.Linear``); the
normalisation has an epsilon (a user with no items encodes to finite values).
``bench/bench_quality.py --model recvae`` compares the two at convergence on identical
splits.
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from radius.model.multvae import (
    SparseBatch,
    check_convention,
    encoder_input_dense,
    encoder_input_sparse,
)

__all__ = ["RecVAE", "CompositePrior", "log_norm_pdf", "PRIOR_WEIGHTS"]

PRIOR_WEIGHTS = (3 / 20, 3 / 4, 1 / 10)  # standard, previous posterior, wide
STANDARD_PRIOR_WEIGHTS = (1.0, 0.0, 0.0)  # N(0, I) only (the ``recvae_prior="standard"`` ablation)
WIDE_LOGVAR = 10.0


def log_norm_pdf(x: Tensor, mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise log N(x; mu, e^logvar) (no sum over dimensions)."""
    return -0.5 * (logvar + math.log(2 * math.pi) + (x - mu) ** 2 / torch.exp(logvar))


class RecVAEEncoder(nn.Module):
    r"""Densely connected encoder: h_k = LN(swish(W_k h_{k-1} + sum_{j<k} h_j)).

    Every layer starts as ``nn.Linear`` does, the first too: weight and bias
    :math:`\sim U(-1/\sqrt{\text{fan-in}}, 1/\sqrt{\text{fan-in}})`. The scale matters
    here: with layer norm's large epsilon (0.1) the first layer's output is far below
    :math:`\sqrt{\epsilon}` at the start, and a Xavier first layer (2x the weights for
    I = 1,400 items; radius <= training revision 5) lost 0.037 nDCG@100 to the reference
    code under clean input on MovieLens-100k (``bench/README.md``, "RecVAE").
    """

    def __init__(self, n_items: int, hidden_dim: int, latent_dim: int, n_layers: int = 5) -> None:
        super().__init__()
        self.in_weight = nn.Parameter(torch.empty(n_items, hidden_dim))  # (I, H)
        self.in_bias = nn.Parameter(torch.zeros(hidden_dim))
        self.fcs = nn.ModuleList(nn.Linear(hidden_dim, hidden_dim) for _ in range(n_layers - 1))
        self.lns = nn.ModuleList(nn.LayerNorm(hidden_dim, eps=0.1) for _ in range(n_layers))
        self.fc_mu = nn.Linear(hidden_dim, latent_dim)
        self.fc_logvar = nn.Linear(hidden_dim, latent_dim)
        self._init_first_layer()

    def _init_first_layer(self) -> None:
        """nn.Linear(I, H)'s own initialisation, as the reference's first layer has it:
        weight and bias ~ U(-1/sqrt(I), 1/sqrt(I)) (fan-in I)."""
        bound = 1.0 / math.sqrt(self.in_weight.shape[0])
        nn.init.uniform_(self.in_weight, -bound, bound)
        nn.init.uniform_(self.in_bias, -bound, bound)

    def reset_parameters(self) -> None:
        """Fresh random weights, drawn as at construction."""
        self._init_first_layer()
        for m in (*self.fcs, *self.lns, self.fc_mu, self.fc_logvar):
            m.reset_parameters()

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
    """Mixture prior of RecVAE; the middle component is a frozen encoder of the same shape.

    It starts from its own random weights (the reference's ``CompositePrior`` builds a new
    ``Encoder``) and becomes a copy of the encoder at every ``refresh``.
    """

    def __init__(self, encoder: RecVAEEncoder, weights: tuple[float, ...] = PRIOR_WEIGHTS) -> None:
        super().__init__()
        self.encoder_old = copy.deepcopy(encoder)
        self.encoder_old.reset_parameters()
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
