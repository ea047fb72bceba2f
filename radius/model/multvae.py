r"""Multi-VAE (Liang et al., 2018) with Bernoulli input masking and PIA anchors.

Architecture [I-600-200-600-I], tanh. The encoder L2-normalises its input with an
epsilon, so a fully masked user maps to the zero vector and a finite loss. Under a
keep mask :math:`b \sim \mathrm{Bernoulli}(\rho)^I` the encoder input follows one of
two *input conventions* (theory.md, "What the encoder sees"):

.. math::

    \texttt{normalize-mask}:\quad \tilde x = \frac{x}{\|x\|_2 + \epsilon}\odot\frac{b}{\rho}
    \qquad
    \texttt{mask-normalize}:\quad \tilde x = \frac{x\odot b}{\|x\odot b\|_2 + \epsilon}

``normalize-mask`` (the default) is the reference codes' order (dawenl/vae_cf's
``tf.nn.dropout`` after ``tf.nn.l2_normalize``; RecVAE's ``F.dropout`` after dividing by
the row norm): :math:`\mathbb E_b[\tilde x]` equals the clean input seen at evaluation
(b = 1). ``mask-normalize`` (radius before training revision 4) rescales each masked
row to unit norm, so its training inputs are about :math:`\sqrt\rho` times the scale
of the clean evaluation input: a train/test shift. Both give an input supported on
:math:`x_h = x \odot b` (what T2.6 and L_A reason about). The first layer is stored as
an ``(I, H)`` table so a sparse batch multiplies it as an embedding bag (same maths as
the dense product).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "MultVAE",
    "SparseBatch",
    "EPS_NORM",
    "INPUT_CONVENTIONS",
    "check_convention",
    "encoder_input_dense",
    "encoder_input_sparse",
    "keep_to_dense",
]

EPS_NORM = 1e-8  # epsilon of the input L2 normalisation
# "normalize-mask": the reference codes' order (default); "mask-normalize": radius <= rev 3
INPUT_CONVENTIONS = ("normalize-mask", "mask-normalize")


@dataclass
class SparseBatch:
    """A CSR batch of B users: ``indices`` (nnz,), ``offsets`` (B,), ``values`` (nnz,).

    ``rows`` (nnz,) gives each entry's row, for segment sums.
    """

    indices: Tensor
    offsets: Tensor
    values: Tensor
    rows: Tensor
    n_rows: int
    n_items: int

    @classmethod
    def from_csr(cls, csr, device: torch.device | str = "cpu") -> SparseBatch:
        import numpy as np

        indptr = np.asarray(csr.indptr, dtype=np.int64)
        counts = np.diff(indptr)
        rows = np.repeat(np.arange(csr.shape[0], dtype=np.int64), counts)
        return cls(
            indices=torch.as_tensor(np.asarray(csr.indices, dtype=np.int64), device=device),
            offsets=torch.as_tensor(indptr[:-1], device=device),
            values=torch.as_tensor(np.asarray(csr.data, dtype=np.float32), device=device),
            rows=torch.as_tensor(rows, device=device),
            n_rows=int(csr.shape[0]),
            n_items=int(csr.shape[1]),
        )

    def with_values(self, values: Tensor) -> SparseBatch:
        return SparseBatch(self.indices, self.offsets, values, self.rows, self.n_rows, self.n_items)

    def row_sum(self, v: Tensor) -> Tensor:
        """Segment sum of an (nnz,) or (nnz, k) tensor over rows -> (B,) or (B, k)."""
        out = torch.zeros((self.n_rows, *v.shape[1:]), dtype=v.dtype, device=v.device)
        return out.index_add_(0, self.rows, v)

    def to_dense(self) -> Tensor:
        x = torch.zeros(
            self.n_rows, self.n_items, dtype=self.values.dtype, device=self.values.device
        )
        x[self.rows, self.indices] = self.values
        return x


def check_convention(convention: str, keep_rate: float) -> None:
    """``ValueError`` for an unknown input convention or a keep rate outside (0, 1]."""
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(
            f"input_convention must be one of {list(INPUT_CONVENTIONS)}, got {convention!r}"
        )
    if not 0.0 < float(keep_rate) <= 1.0:
        raise ValueError(f"keep_rate (rho) must be in (0, 1], got {keep_rate}")


def encoder_input_dense(x: Tensor, b: Tensor | None, keep_rate: float, convention: str) -> Tensor:
    r"""The encoder input :math:`\tilde x` (B, I) of raw rows x (B, I) under keep mask b.

    ``b`` (B, I) of 0/1 (None: clean, b = 1). ``normalize-mask``:
    :math:`x/(\|x\|+\epsilon)\odot b/\rho`; ``mask-normalize``:
    :math:`(x\odot b)/(\|x\odot b\|+\epsilon)`. At b = 1 both are the clean normalised row.
    """
    if b is None:
        return x / (x.norm(dim=-1, keepdim=True) + EPS_NORM)
    if convention == "normalize-mask":
        xn = x / (x.norm(dim=-1, keepdim=True) + EPS_NORM)
        return xn * b / keep_rate
    if convention == "mask-normalize":
        xb = x * b
        return xb / (xb.norm(dim=-1, keepdim=True) + EPS_NORM)
    raise ValueError(
        f"input_convention must be one of {list(INPUT_CONVENTIONS)}, got {convention!r}"
    )


def encoder_input_sparse(
    batch: SparseBatch, keep: Tensor | None, keep_rate: float, convention: str
) -> Tensor:
    """Per-entry weights (nnz,) of the encoder input: ``encoder_input_dense`` on the
    stored entries, with ``keep`` (nnz,) the 0/1 mask of the stored entries (None:
    clean). Zeros of x stay zero under both conventions, so this is the whole input."""
    if convention not in INPUT_CONVENTIONS:
        raise ValueError(
            f"input_convention must be one of {list(INPUT_CONVENTIONS)}, got {convention!r}"
        )
    v = batch.values
    masked_first = keep is not None and convention == "mask-normalize"
    if masked_first:
        v = v * keep
    norm = torch.sqrt(batch.row_sum(v * v))  # (B,)
    w = v / (norm[batch.rows] + EPS_NORM)  # (nnz,)
    if keep is not None and not masked_first:  # normalize-mask: inverted dropout
        w = w * keep / keep_rate
    return w


def keep_to_dense(batch: SparseBatch, keep: Tensor) -> Tensor:
    """The dense (B, I) 0/1 mask of a stored-entry mask ``keep`` (nnz,); 1 off the support
    (x is 0 there, so the value does not matter under either convention)."""
    b = torch.ones(batch.n_rows, batch.n_items, dtype=keep.dtype, device=keep.device)
    b[batch.rows, batch.indices] = keep
    return b


class MultVAE(nn.Module):
    """Multi-VAE encoder/decoder with optional PIA anchors.

    Parameters
    ----------
    n_items : I.
    hidden_dims : encoder hidden widths, e.g. ``(600,)``; the decoder mirrors them.
    latent_dim : d.
    use_anchors : create learnable item anchors E (I, d) for PIA.
    anchor_init, anchor_init_scale : anchors ~ N(0, scale^2) (``"normal"``) or zeros.
    dropout_encoder : dropout on encoder hidden activations (0 in Multi-VAE).
    keep_rate : rho of the input mask used in training (1: clean input).
    input_convention : ``"normalize-mask"`` (default, the reference codes') or
        ``"mask-normalize"``; decides what ``encode_masked`` feeds the encoder.
    """

    def __init__(
        self,
        n_items: int,
        hidden_dims: tuple[int, ...] = (600,),
        latent_dim: int = 200,
        *,
        use_anchors: bool = False,
        anchor_init: str = "normal",
        anchor_init_scale: float = 0.01,
        dropout_encoder: float = 0.0,
        keep_rate: float = 1.0,
        input_convention: str = "normalize-mask",
    ) -> None:
        super().__init__()
        check_convention(input_convention, keep_rate)
        self.keep_rate = float(keep_rate)
        self.input_convention = input_convention
        if n_items < 1 or latent_dim < 1 or not hidden_dims:
            raise ValueError(
                f"need n_items >= 1, latent_dim >= 1 and at least one hidden layer, got "
                f"n_items={n_items}, latent_dim={latent_dim}, hidden_dims={hidden_dims}"
            )
        self.n_items = int(n_items)
        self.latent_dim = int(latent_dim)
        self.hidden_dims = tuple(int(h) for h in hidden_dims)
        h0 = self.hidden_dims[0]
        # first encoder layer as an (I, H0) table: dense x @ W_in or an embedding bag
        self.enc_in_weight = nn.Parameter(torch.empty(self.n_items, h0))
        self.enc_in_bias = nn.Parameter(torch.empty(h0))
        enc_dims = [*self.hidden_dims, 2 * self.latent_dim]
        self.enc_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(enc_dims[:-1], enc_dims[1:])
        )
        dec_dims = [self.latent_dim, *reversed(self.hidden_dims), self.n_items]
        self.dec_layers = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(dec_dims[:-1], dec_dims[1:])
        )
        self.drop = nn.Dropout(dropout_encoder)
        if use_anchors:
            self.anchor_table = nn.Parameter(torch.empty(self.n_items, self.latent_dim))
        else:
            self.register_parameter("anchor_table", None)
        self._anchor_init = (anchor_init, anchor_init_scale)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """Xavier-uniform weights, N(0, 0.001^2) biases, as in the reference code."""
        nn.init.xavier_uniform_(self.enc_in_weight)
        nn.init.normal_(self.enc_in_bias, std=0.001)
        for lin in [*self.enc_layers, *self.dec_layers]:
            nn.init.xavier_uniform_(lin.weight)
            nn.init.normal_(lin.bias, std=0.001)
        if self.anchor_table is not None:
            kind, scale = self._anchor_init
            if kind == "zeros":
                nn.init.zeros_(self.anchor_table)
            else:
                nn.init.normal_(self.anchor_table, std=scale)

    # ------------------------------------------------------------------ encoder
    def _encode_hidden(self, h: Tensor) -> tuple[Tensor, Tensor]:
        h = torch.tanh(h)  # (B, H0)
        h = self.drop(h)
        for i, lin in enumerate(self.enc_layers):
            h = lin(h)
            if i < len(self.enc_layers) - 1:
                h = self.drop(torch.tanh(h))
        mu, logvar = h[..., : self.latent_dim], h[..., self.latent_dim :]  # (B, d) each
        return mu, logvar

    @staticmethod
    def normalize(x: Tensor) -> Tensor:
        """x / (||x||_2 + eps) row-wise; a zero row stays zero."""
        return x / (x.norm(dim=-1, keepdim=True) + EPS_NORM)

    def encode(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Dense path on the clean input (b = 1): x (B, I) raw rows -> mu, logvar (B, d)."""
        return self.encode_masked(x, None)

    def encode_masked(self, x: Tensor, b: Tensor | None) -> tuple[Tensor, Tensor]:
        """q(z | x, b) exactly as the encoder saw it in training under keep mask ``b``
        (B, I) of 0/1 (None: clean), with this model's ``input_convention``."""
        xt = encoder_input_dense(x, b, self.keep_rate, self.input_convention)  # (B, I)
        return self._encode_hidden(xt @ self.enc_in_weight + self.enc_in_bias)

    def encode_sparse(
        self, batch: SparseBatch, keep: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """Sparse path, same maths as ``encode_masked(batch.to_dense(), b)`` where ``b`` is
        ``keep`` (nnz,) on the stored entries (None: clean input)."""
        w = encoder_input_sparse(batch, keep, self.keep_rate, self.input_convention)  # (nnz,)
        h = F.embedding_bag(
            batch.indices, self.enc_in_weight, batch.offsets, mode="sum", per_sample_weights=w
        )  # (B, H0)
        return self._encode_hidden(h + self.enc_in_bias)

    # ------------------------------------------------------------------ decoder
    def decoder_features(self, z: Tensor) -> Tensor:
        """z (..., d) -> h (..., H) feeding the output layer."""
        h = z
        for lin in self.dec_layers[:-1]:
            h = torch.tanh(lin(h))
        return h

    def decode(self, z: Tensor) -> Tensor:
        """z (..., d) -> logits (..., I)."""
        return self.dec_layers[-1](self.decoder_features(z))

    def output_layer(self) -> tuple[Tensor, Tensor | None]:
        lin = self.dec_layers[-1]
        return lin.weight, lin.bias  # (I, H), (I,)

    # ------------------------------------------------------------------ protocol
    @property
    def anchors(self) -> Tensor | None:
        return self.anchor_table

    def decoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        return [(f"dec_layers.{n}", p) for n, p in self.dec_layers.named_parameters()]

    def encoder_parameters(self) -> list[tuple[str, nn.Parameter]]:
        out = [("enc_in_weight", self.enc_in_weight), ("enc_in_bias", self.enc_in_bias)]
        out += [(f"enc_layers.{n}", p) for n, p in self.enc_layers.named_parameters()]
        return out

    def extra_repr(self) -> str:
        dims = [self.n_items, *self.hidden_dims, self.latent_dim]
        return (
            f"dims={dims}, anchors={self.anchor_table is not None}, "
            f"input={self.input_convention}, keep_rate={self.keep_rate}"
        )


def reparameterize(mu: Tensor, logvar: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """z = mu + sigma * eps, eps ~ N(0, I) from ``generator``."""
    eps = torch.randn(mu.shape, generator=generator, device=mu.device, dtype=mu.dtype)
    return mu + torch.exp(0.5 * logvar) * eps


def kl_std_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """KL(N(mu, diag e^logvar) || N(0, I)) per row, (B,)."""
    return 0.5 * torch.sum(torch.exp(logvar) + mu * mu - 1.0 - logvar, dim=-1)
