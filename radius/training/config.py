"""Training configuration: one frozen dataclass, overridden from the CLI inside a function."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from radius.errors import RadiusError

__all__ = [
    "TrainConfig",
    "SETTINGS",
    "PIA_LAMBDA",
    "setting_config",
    "MODEL_DEFAULTS",
    "INPUT_CONVENTIONS",
    "KEEP_RULES",
]

INPUT_CONVENTIONS = ("normalize-mask", "mask-normalize")
# which weights training returns (``TrainConfig.keep``)
KEEP_RULES = ("best", "best-at-cap", "last")

# Per-model defaults of the fields that differ between the reference codes. A field
# left unset (None) takes its model's value; a value given explicitly (``--set``) is
# used as is. Multi-VAE: dawenl/vae_cf trains up to 200 epochs and anneals beta over
# about a quarter of them; early stopping (patience 20 on validation nDCG@100) ends it.
# RecVAE: ilya-shenbin/RecVAE's run.py's lr 5e-4; run.py trains a fixed 50 epochs and
# keeps the best validation epoch, which on ML-100k and the synthetic sets stops masking
# and PIA runs while validation still rises, so RecVAE trains up to 200 epochs and early
# stopping (patience 20) ends it (bench/README.md, "RecVAE against its reference code").
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "multvae": {"lr": 1e-3, "epochs": 200, "patience": 20, "anneal_epochs": 50.0},
    "recvae": {"lr": 5e-4, "epochs": 200, "patience": 20, "anneal_epochs": 50.0},
}


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
        ``beta_cap``; None (default) means ``anneal_epochs`` epochs' worth of steps; 0
        means no annealing (beta is at its cap from the first step: a warm start).
    anneal_epochs : used when ``anneal_steps`` is None (default: 50 epochs, a quarter of
        Multi-VAE's 200-epoch budget, as dawenl/vae_cf's ``total_anneal_steps``).
    lambda_a : weight of the PIA anchor loss L_A; 0 disables PIA.
    anchor_init : ``"normal"`` (N(0, anchor_init_scale^2)) or ``"zeros"``.
    anchor_init_scale : standard deviation of the anchors' initialisation (0.01, the
        reference PIA loop's N(0, 0.01^2)).
    anchor_terms : which parts of L_A train the encoder: ``"both"`` (||mu - e_bar||^2 +
        tr Sigma, P3.1), ``"mean"`` (only the alignment term) or ``"trace"``.
    lr : Adam learning rate (default per model: 1e-3 Multi-VAE, 5e-4 RecVAE).
    weight_decay : Adam L2 weight decay.
    batch_size : users per batch.
    epochs : maximum number of epochs (default per model: 200 for both);
        a run that reaches it is recorded as ``stopped="cap"`` with a warning.
    patience : early stopping: epochs without a better validation nDCG@100 (20).
    input_convention : what the encoder sees under the keep mask b:
        ``"normalize-mask"`` (default; the reference codes': L2-normalise x, then
        inverted dropout x_n * b / rho) or ``"mask-normalize"`` (radius <= training
        revision 3: normalise x * b). Checkpoints without it load as the latter.
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
    init_from : "" (train from the seeded initialisation) or the content key of the
        model a warm start begins from (``radius.training.warm``: a parent's cache key
        or the hash of a given checkpoint's weights), so a warm-started model never
        shares a cache key with another. ``train`` then needs that model's
        ``init_state``. Left out of ``key_dict`` when "".
    keep : which weights training returns: ``"best"`` (the best validation nDCG@100,
        the reference codes' rule), ``"best-at-cap"`` (the best among epochs whose every
        step ran with beta at its cap; patience counts from the first such epoch) or
        ``"last"`` (the last epoch's: a fixed fine-tuning budget, as a beta sweep's warm
        starts use). Left out of ``key_dict`` at ``"best"``.

    ``lr``, ``epochs``, ``patience`` and ``anneal_epochs`` left as None take the model's
    value from ``MODEL_DEFAULTS`` (so ``TrainConfig(model="recvae")`` is RecVAE's
    reference recipe); ``replace(model=...)`` re-resolves the ones never set.
    """

    model: str = "multvae"
    hidden_dims: tuple[int, ...] = (600,)
    latent_dim: int = 200
    keep_rate: float = 0.5
    beta_cap: float = 0.2
    anneal_steps: int | None = None
    anneal_epochs: float | None = None
    lambda_a: float = 0.0
    anchor_init: str = "normal"
    anchor_init_scale: float = 0.01
    anchor_terms: str = "both"
    lr: float | None = None
    weight_decay: float = 0.0
    batch_size: int = 500
    epochs: int | None = None
    patience: int | None = None
    dropout_encoder: float = 0.0
    seed: int = 0
    device: str = "auto"
    sparse_input: bool = True
    gamma: float = 0.005
    enc_epochs: int = 3
    recvae_prior: str = "composite"
    input_convention: str = "normalize-mask"
    init_from: str = ""
    keep: str = "best"
    _extra: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if self.model not in ("multvae", "recvae"):
            raise RadiusError(f"model must be 'multvae' or 'recvae', got {self.model!r}")
        defaulted = []
        for name, value in MODEL_DEFAULTS[self.model].items():
            if getattr(self, name) is None:
                object.__setattr__(self, name, value)
                defaulted.append(name)
        self._extra["defaulted"] = tuple(defaulted)
        if self.input_convention not in INPUT_CONVENTIONS:
            raise RadiusError(
                f"input_convention must be one of {list(INPUT_CONVENTIONS)}, "
                f"got {self.input_convention!r}"
            )
        if self.patience < 1:
            raise RadiusError(f"patience must be >= 1, got {self.patience}")
        if not (0.0 < self.keep_rate <= 1.0):
            raise RadiusError(f"keep_rate (rho) must be in (0, 1], got {self.keep_rate}")
        if self.anneal_steps is not None and self.anneal_steps < 0:
            raise RadiusError(f"anneal_steps must be >= 0 or None, got {self.anneal_steps}")
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
        if self.keep not in KEEP_RULES:
            raise RadiusError(f"keep must be one of {list(KEEP_RULES)}, got {self.keep!r}")
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
        # fields that took their model's default re-resolve (e.g. on a change of model)
        unset = {k: None for k in self._extra.get("defaulted", ()) if k not in changes}
        return dataclasses.replace(self, **unset, **changes, _extra={})

    @classmethod
    def for_model(cls, model: str, **fields: Any) -> TrainConfig:
        """The reference recipe of ``model`` (``MODEL_DEFAULTS``) with ``fields`` on top."""
        return cls(model=model, **fields)

    @property
    def defaulted(self) -> tuple[str, ...]:
        """The per-model fields that took their model's default (not set explicitly)."""
        return tuple(self._extra.get("defaulted", ()))

    def as_dict(self) -> dict[str, Any]:
        """Every field that determines the trained weights (device excluded), JSON-able."""
        d = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        d.pop("_extra")
        d.pop("device")
        d["hidden_dims"] = list(self.hidden_dims)
        return d

    def describe(self) -> str:
        """A short label of the fields that tell settings and sweep points apart
        (``"multvae, keep_rate 0.5, lambda_a 1, beta_cap 0.2, seed 0"``)."""
        bits = [self.model, f"keep_rate {self.keep_rate:g}", f"lambda_a {self.lambda_a:g}"]
        bits.append(
            f"gamma {self.gamma:g}" if self.model == "recvae" else f"beta_cap {self.beta_cap:g}"
        )
        return ", ".join([*bits, f"seed {self.seed}"])

    def key_dict(self) -> dict[str, Any]:
        """``as_dict`` less the fields added later that are at their defaults (so older
        cache keys stay valid): the dict hashed into cache keys and recorded in reports."""
        d = self.as_dict()
        if d["recvae_prior"] == "composite":
            d.pop("recvae_prior")
        # warm start / keep-after-anneal (beta sweeps): absent at their defaults
        if not d["init_from"]:
            d.pop("init_from")
        if d["keep"] == "best":
            d.pop("keep")
        return d


# The paper's three settings (Section 4 ablation): clean input, Bernoulli masking
# (Multi-VAE's dropout 0.5 on the input) and masking + PIA. PIA's lambda_A = 1 with
# anchors ~ N(0, 0.01^2) (``TrainConfig.anchor_init_scale``) is the reference loop of
# issue 10; bench/README.md "Quality at convergence" measures radius against it.
SETTINGS: dict[str, dict[str, Any]] = {
    "clean": {"keep_rate": 1.0, "lambda_a": 0.0},
    "masking": {"keep_rate": 0.5, "lambda_a": 0.0},
    "pia": {"keep_rate": 0.5, "lambda_a": 1.0},
}
# PIA's lambda_A when the base config gives none (lambda_a = 0), per model, from the
# ablation's validation grids (paper_checks.md): Multi-VAE 1 (the reference PIA loop's;
# validation picks 1 on ML-100k, 0.1 by 0.002 nDCG@100 on the synthetic default), RecVAE
# 0.1 (picked on both datasets, by 0.02-0.12 nDCG@100 over 1: RecVAE's count-scaled KL
# leaves its latent scale larger). A base config with lambda_a > 0 (``--set
# lambda_a=...``) is used as is; ``radius experiment ablation`` tunes it on validation.
PIA_LAMBDA: dict[str, float] = {"multvae": 1.0, "recvae": 0.1}


def setting_config(setting: str, base: TrainConfig | None = None, **overrides: Any) -> TrainConfig:
    """The config of a named setting (``clean``, ``masking``, ``pia``) on top of ``base``."""
    if setting not in SETTINGS:
        import difflib

        close = difflib.get_close_matches(setting, SETTINGS, n=2)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RadiusError(f"unknown setting {setting!r} (choose from {sorted(SETTINGS)}){hint}")
    base = base or TrainConfig()
    values = dict(SETTINGS[setting])
    if setting == "pia":
        values["lambda_a"] = base.lambda_a if base.lambda_a > 0 else PIA_LAMBDA[base.model]
    return base.replace(**{**values, **overrides})
