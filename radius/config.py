"""Training configuration: one frozen dataclass, overridden from the CLI inside a function."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from radius.errors import RadiusError

__all__ = ["TrainConfig", "SETTINGS", "setting_config"]


@dataclass(frozen=True)
class TrainConfig:
    """Everything that determines a trained model (hashed into the cache key).

    Attributes
    ----------
    model : ``"multvae"`` or ``"recvae"``.
    hidden_dims : encoder hidden widths; the decoder mirrors them ([I-600-200-600-I]).
    latent_dim : d, the latent dimension.
    keep_rate : rho, Bernoulli keep probability of the input mask; 1.0 is clean input.
    beta_cap : cap of the linearly annealed KL weight beta.
    anneal_steps : number of gradient steps over which beta rises linearly from 0 to
        ``beta_cap``; None (default) means ``anneal_epochs`` epochs' worth of steps.
    anneal_epochs : used when ``anneal_steps`` is None.
    lambda_a : weight of the PIA anchor loss L_A; 0 disables PIA.
    anchor_init : ``"normal"`` (N(0, anchor_init_scale^2)) or ``"zeros"``.
    anchor_init_scale : standard deviation of the anchors' initialisation.
    anchor_terms : which parts of L_A train the encoder: ``"both"`` (||mu - e_bar||^2 +
        tr Sigma, P3.1), ``"mean"`` (only the alignment term) or ``"trace"``.
    lr : Adam learning rate.
    weight_decay : Adam L2 weight decay.
    batch_size : users per batch.
    epochs : maximum number of epochs.
    patience : early stopping: epochs without a better validation nDCG@100.
    dropout_encoder : extra dropout on hidden layers (0 in Multi-VAE).
    seed : seed for initialisation, masks, batches and reparameterisation.
    device : ``"auto"`` (CUDA when present), ``"cpu"`` or ``"cuda"``.
    sparse_input : multiply the first layer with the sparse batch (embedding-bag)
        instead of densifying it; identical maths.
    gamma : RecVAE KL scaling by interaction count (RecVAE only).
    enc_epochs : RecVAE encoder updates per decoder update (alternating phases).
    recvae_prior : ``"composite"`` (RecVAE's mixture prior, the default) or
        ``"standard"`` (N(0, I) only: an ablation of the composite prior). Left out of
        ``key_dict`` at its default, so adding it kept every earlier cache key.
    """

    model: str = "multvae"
    hidden_dims: tuple[int, ...] = (600,)
    latent_dim: int = 200
    keep_rate: float = 0.5
    beta_cap: float = 0.2
    anneal_steps: int | None = None
    anneal_epochs: float = 20.0
    lambda_a: float = 0.0
    anchor_init: str = "normal"
    anchor_init_scale: float = 0.1
    anchor_terms: str = "both"
    lr: float = 1e-3
    weight_decay: float = 0.0
    batch_size: int = 500
    epochs: int = 60
    patience: int = 10
    dropout_encoder: float = 0.0
    seed: int = 0
    device: str = "auto"
    sparse_input: bool = True
    gamma: float = 0.005
    enc_epochs: int = 3
    recvae_prior: str = "composite"
    _extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.model not in ("multvae", "recvae"):
            raise RadiusError(f"model must be 'multvae' or 'recvae', got {self.model!r}")
        if not (0.0 < self.keep_rate <= 1.0):
            raise RadiusError(f"keep_rate (rho) must be in (0, 1], got {self.keep_rate}")
        if self.beta_cap < 0:
            raise RadiusError(f"beta_cap must be >= 0, got {self.beta_cap}")
        if self.lambda_a < 0:
            raise RadiusError(f"lambda_a must be >= 0, got {self.lambda_a}")
        if self.latent_dim < 1 or any(h < 1 for h in self.hidden_dims):
            raise RadiusError(
                f"dims must be positive, got hidden_dims={self.hidden_dims}, "
                f"latent_dim={self.latent_dim}"
            )
        if self.anchor_init not in ("normal", "zeros"):
            raise RadiusError(f"anchor_init must be 'normal' or 'zeros', got {self.anchor_init!r}")
        if self.anchor_terms not in ("both", "mean", "trace"):
            raise RadiusError(
                f"anchor_terms must be 'both', 'mean' or 'trace', got {self.anchor_terms!r}"
            )
        if self.batch_size < 1 or self.epochs < 1 or self.lr <= 0:
            raise RadiusError("batch_size and epochs must be >= 1 and lr > 0")
        if self.recvae_prior not in ("composite", "standard"):
            raise RadiusError(
                f"recvae_prior must be 'composite' or 'standard', got {self.recvae_prior!r}"
            )
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise RadiusError(f"device must be 'auto', 'cpu' or 'cuda[:N]', got {self.device!r}")

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes``; unknown names raise with the valid ones listed."""
        names = {f.name for f in dataclasses.fields(self)} - {"_extra"}
        bad = sorted(set(changes) - names)
        if bad:
            raise RadiusError(f"unknown config field(s) {bad}; valid: {sorted(names)}")
        if "hidden_dims" in changes:
            changes["hidden_dims"] = tuple(int(h) for h in changes["hidden_dims"])
        return dataclasses.replace(self, **changes)

    def as_dict(self) -> dict[str, Any]:
        """Every field that determines the trained weights (device excluded), JSON-able."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("_extra")
        d.pop("device")
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    def key_dict(self) -> dict[str, Any]:
        """``as_dict`` less the fields added later that are at their defaults (so older
        cache keys stay valid): the dict hashed into cache keys and recorded in reports."""
        d = self.as_dict()
        if d["recvae_prior"] == "composite":
            d.pop("recvae_prior")
        return d


# The paper's three settings (Section 4 ablation): clean input, Bernoulli masking
# (Multi-VAE's dropout 0.5 on the input) and masking + PIA.
SETTINGS: dict[str, dict[str, Any]] = {
    "clean": {"keep_rate": 1.0, "lambda_a": 0.0},
    "masking": {"keep_rate": 0.5, "lambda_a": 0.0},
    "pia": {"keep_rate": 0.5, "lambda_a": 0.1},
}


def setting_config(setting: str, base: TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """The config of a named setting (``clean``, ``masking``, ``pia``) on top of ``base``."""
    if setting not in SETTINGS:
        import difflib

        close = difflib.get_close_matches(setting, SETTINGS, n=2)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RadiusError(f"unknown setting {setting!r} (choose from {sorted(SETTINGS)}){hint}")
    base = base or TrainConfig()
    return base.replace(**{**SETTINGS[setting], **overrides})
