"""What a claim module gets: the dataset, options, and trained models on demand.

Models are never trained silently inside a claim. Two modes:

* radius's own models (``models`` is None, the CLI default): ``model(setting)`` goes
  through ``radius.training.cache.get_model``, the explicit, content-keyed training step (a
  second call with the same data and config loads the cached checkpoint);
  ``checkpoint`` replaces the pia model.
* the user's models (``models`` maps settings to modules, ``radius.verify.run(...,
  models=...)`` or ``radius verify --checkpoint clean=a.pt``): ``model(setting)``
  returns the user's model, and a setting the user did not provide raises
  ``MissingModelError`` naming it (the claim is then reported INCONCLUSIVE with that
  reason): nothing is trained in its place. A beta sweep calls ``fit_beta(beta)``, the
  user's own ``fit(beta) -> model``; without one it raises ``MissingModelError`` too.

Training seeds: a mechanism check's interval spans ``options.seeds`` training runs
(``seed_models(setting)``): radius's own models are trained with seeds
``base_config.seed + k``; a user gives one model per seed as a list
(``models={"clean": [m0, m1, m2]}``), or one model (one seed: its interval then carries
no training spread, and the check says so).

Warnings: every model a claim uses is recorded (``begin_claim`` / ``used_warnings``);
the strings in a model's ``radius_warnings`` attribute (an epoch cap hit before early
stopping, a degenerate posterior) are printed under that claim's verdict.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from radius.data.dataset import Dataset
from radius.errors import RadiusError
from radius.training.config import SETTINGS, TrainConfig, setting_config
from radius.verify.base import VerifyOptions

__all__ = ["VerifyContext", "MissingModelError"]


class MissingModelError(RadiusError):
    """A claim needs a model the user did not provide (never trained in its place).

    Attributes
    ----------
    missing : what is missing (``["clean"]``, ``["fit(beta)"]``).
    """

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


@dataclass
class VerifyContext:
    """Inputs of every claim module.

    dataset : the prepared dataset.
    options : shared sizes, seeds and tolerances.
    base_config : training config the settings (clean, masking, pia) start from; with
        user models, only its setting knobs (keep_rate, lambda_a) are read, and the
        models' own ``keep_rate`` / ``lambda_a`` attributes take precedence.
    cache_dir : where trained checkpoints are cached (content-keyed).
    checkpoint : an explicit checkpoint path; when given, ``model("pia")`` and
        ``model()`` return it instead of the cached setting model.
    progress : show progress bars.
    models : the user's models by setting (``clean`` / ``masking`` / ``pia``), each a
        model or a list of models (one per training seed, the first is the main one), or
        None for radius's own trained models. With user models nothing is ever trained.
    fit_beta : the user's ``fit(beta) -> model`` for beta sweeps (user models only).
    setting_overrides : per-setting ``TrainConfig`` fields (``--set masking.keep_rate=0.5``),
        applied on top of the setting's own values; with user models the loaded models
        already carry them (``radius.verify.api.apply_model_options``).
    """

    dataset: Dataset
    options: VerifyOptions = field(default_factory=VerifyOptions)
    base_config: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: Path | None = None
    checkpoint: Path | None = None
    progress: bool = False
    models: Mapping[str, nn.Module] | None = None
    fit_beta: Callable[[float], nn.Module] | None = None
    setting_overrides: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    _models: dict[Any, nn.Module] = field(default_factory=dict, repr=False)
    _used: dict[str, nn.Module] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        bad = sorted(set(self.setting_overrides) - set(SETTINGS))
        if bad:
            raise RadiusError(
                f"unknown setting(s) {bad} in setting_overrides (choose from {sorted(SETTINGS)})"
            )
        for s, over in self.setting_overrides.items():  # unknown fields fail here, not later
            setting_config(s, self.base_config, **dict(over))
        if self.models is not None:
            self.models = {
                s: (list(m) if isinstance(m, Sequence) else m) for s, m in self.models.items()
            }
            empty = sorted(s for s, m in self.models.items() if isinstance(m, list) and not m)
            if empty:
                raise RadiusError(f"setting(s) {empty} in models: an empty list of models")
            bad = sorted(set(self.models) - set(SETTINGS))
            if bad:
                raise RadiusError(
                    f"unknown setting(s) {bad} in models (choose from {sorted(SETTINGS)})"
                )
            if self.checkpoint is not None:
                raise ValueError("give either models or checkpoint, not both")
        if self.fit_beta is not None and not callable(self.fit_beta):
            raise TypeError(f"fit_beta must be callable, got {type(self.fit_beta).__name__}")

    @property
    def user_models(self) -> bool:
        """True when the models are the user's (nothing is trained)."""
        return self.models is not None

    def _user(self, setting: str, index: int = 0) -> nn.Module:
        given = self.models[setting]  # type: ignore[index]
        return given[index] if isinstance(given, list) else given

    # ------------------------------------------------------------------ warnings
    def begin_claim(self) -> None:
        """Start recording the models a claim uses (for ``used_warnings``)."""
        self._used = {}

    def _note(self, label: str, model: nn.Module) -> nn.Module:
        self._used.setdefault(label, model)
        return model

    def used_warnings(self) -> list[str]:
        """``"<model>: <warning>"`` for every warning of every model used since
        ``begin_claim`` (each once, in order of first use)."""
        out = [
            f"{label}: {w}"
            for label, m in self._used.items()
            for w in (getattr(m, "radius_warnings", None) or [])
        ]
        return list(dict.fromkeys(out))

    # ------------------------------------------------------------------ seeds
    def training_seeds(self) -> list[int]:
        """The training seeds of the mechanism checks: ``base_config.seed + k`` for k <
        ``options.seeds`` (radius's models), or one per model given (user models; the
        lists may differ in length between settings: see ``seed_models``)."""
        return [int(self.base_config.seed) + k for k in range(int(self.options.seeds))]

    def seed_models(self, setting: str) -> list[nn.Module]:
        """One model of ``setting`` per training seed, the main one (``model(setting)``)
        first. radius's models: trained (or read from the cache) for each of
        ``training_seeds()``. User models: the list given for the setting, or the one
        model (``MissingModelError`` when the setting was not given)."""
        if self.models is not None:
            if setting not in self.models:
                raise self._missing(setting)
            given = self.models[setting]
            seq = given if isinstance(given, list) else [given]
            return [
                self._note(f"the {setting!r} model" + (f" #{i}" if i else ""), m.cpu().eval())
                for i, m in enumerate(seq)
            ]
        base = int(self.base_config.seed)
        return [
            self.model(setting) if s == base else self.model(setting, seed=s)
            for s in self.training_seeds()
        ]

    def seed_configs(self, settings: Sequence[str]) -> list[TrainConfig]:
        """The configs ``seed_models`` trains for ``settings`` (radius's models; for
        training them up front in parallel). Empty with user models."""
        if self.models is not None:
            return []
        base = int(self.base_config.seed)
        return [
            self.config(st) if s == base else self.config(st, seed=s)
            for st in settings
            for s in self.training_seeds()
        ]

    def config(self, setting: str = "pia", **overrides: Any) -> TrainConfig:
        """Config of a named setting (clean, masking, pia) on the base config.

        With user models, the model's own ``keep_rate`` and ``lambda_a`` attributes
        (``radius.model.wrap`` sets them) replace the setting's defaults, and a declared
        ``kl_weight`` (the model's beta at the end of training) is the config's
        ``beta_cap``. ``setting_overrides[setting]`` applies on top of the setting.
        """
        given = dict(self.setting_overrides.get(setting, {}))
        if self.models is not None and setting in self.models:
            m = self.models[setting]
            own = {
                k: float(getattr(m, k))
                for k in ("keep_rate", "lambda_a")
                if isinstance(getattr(m, k, None), int | float)
            }
            kl = getattr(m, "kl_weight", None)
            if isinstance(kl, int | float):
                own["beta_cap"] = float(kl)
            return setting_config(setting, self.base_config, **{**given, **own, **overrides})
        return setting_config(setting, self.base_config, **{**given, **overrides})

    def _missing(self, setting: str) -> MissingModelError:
        have = sorted(self.models or {})
        return MissingModelError(
            f"needs the {setting!r} model, which was not provided (models given: "
            f"{', '.join(have) or 'none'}); radius does not train a substitute",
            [setting],
        )

    def model(self, setting: str = "pia", **overrides: Any) -> nn.Module:
        """Trained model of a setting, on the CPU in eval mode (trained once, then cached).

        With user models: the user's model of ``setting``; ``MissingModelError`` when it
        was not provided or when ``overrides`` ask for another config.
        """
        if self.models is not None:
            if setting not in SETTINGS:
                setting_config(setting)  # raises with close-match suggestions
            if setting not in self.models:
                raise self._missing(setting)
            if overrides:
                raise MissingModelError(
                    f"needs the {setting!r} model retrained with {overrides}; with user models "
                    "radius trains nothing",
                    [f"{setting} with {overrides}"],
                )
            return self._note(f"the {setting!r} model", self._user(setting).cpu().eval())
        if self.checkpoint is not None and setting == "pia" and not overrides:
            key: Any = ("checkpoint", str(self.checkpoint))
            if key not in self._models:
                from radius.training.checkpoints import load_checkpoint

                self._models[key] = (
                    load_checkpoint(self.checkpoint, self.dataset).model.cpu().eval()
                )
            return self._note(f"the checkpoint {self.checkpoint}", self._models[key])
        seed = overrides.get("seed")
        label = f"the {setting!r} model" + (f" (seed {seed})" if seed is not None else "")
        return self._note(label, self.model_for(self.config(setting, **overrides), label=label))

    def model_for(self, config: TrainConfig, *, label: str | None = None) -> nn.Module:
        """Trained model for an explicit config (used by sweeps, e.g. over beta).

        With user models the only configs served are beta-sweep points, through
        ``fit_beta(config.beta_cap)``; anything else raises ``MissingModelError``.
        """
        if self.models is not None:
            return self.sweep_model(float(config.beta_cap), config, seed=int(config.seed))
        from radius.training.cache import get_model

        key = ("config", tuple(sorted(config.key_dict().items(), key=lambda kv: kv[0])).__repr__())
        if key not in self._models:
            self._models[key] = (
                get_model(self.dataset, config, cache_dir=self.cache_dir, progress=self.progress)
                .cpu()
                .eval()
            )
        return self._note(label or f"the model of config {config.describe()}", self._models[key])

    def prefetch(self, configs: Sequence[TrainConfig], *, workers: int | None = None) -> None:
        """Train every config of ``configs`` missing from the cache, in up to ``workers``
        processes at once (``radius.training.cache.train_many``; one thread each, so
        the weights do not depend on how many run together). radius's models only; a
        no-op with user models."""
        if self.models is not None or not configs:
            return
        from radius.training.cache import train_many

        train_many(
            self.dataset,
            list(configs),
            cache_dir=self.cache_dir,
            workers=workers,
            progress=self.progress,
        )

    def sweep_model(
        self, beta: float, config: TrainConfig | None = None, *, seed: int = 0
    ) -> nn.Module:
        """The model at beta-sweep point ``beta`` (training seed ``seed``).

        radius's models: ``model_for(config)`` (``config`` required). User models: the
        user's ``fit_beta(beta, seed=seed)`` when it takes a ``seed`` keyword, else
        ``fit_beta(beta)``; validated against the dataset, called once per (beta, seed);
        ``MissingModelError`` naming ``fit(beta)`` when none was given.
        """
        if self.models is None:
            if config is None:
                raise ValueError("sweep_model needs the sweep config for radius's own models")
            return self.model_for(config)
        if self.fit_beta is None:
            raise MissingModelError(
                "the beta sweep needs the user's fit(beta) -> model (radius.verify.run(..., "
                "fit=...)); not run: radius does not retrain a user's model",
                ["fit(beta)"],
            )
        import inspect

        try:
            takes_seed = "seed" in inspect.signature(self.fit_beta).parameters
        except (TypeError, ValueError):
            takes_seed = False
        key = ("fit_beta", float(beta), int(seed) if takes_seed else 0)
        if key not in self._models:
            from radius.model.wrap import validate

            if takes_seed:
                m = self.fit_beta(float(beta), seed=int(seed))
            else:
                m = self.fit_beta(float(beta))
            validate(m, n_items=self.dataset.n_items, name=f"fit({beta:g})")
            self._models[key] = m.cpu().eval()
        return self._models[key]

    def describe(self) -> dict[str, Any]:
        from radius.version import code_version

        """JSON-able record of the run's inputs: the data (and its protocol), the base
        config, and per setting the keep rate and lambda_A the claims used (user models:
        what each model declares, where each value came from, its posterior scale, KL
        weight and warnings; radius's models: the setting's config)."""
        out = {
            "dataset": self.dataset.name,
            "data_hash": self.dataset.hash,
            "data_protocol": self.dataset.protocol,
            "seed": self.options.seed,
            "code_version": code_version(),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "base_config": self.base_config.key_dict(),
        }
        if self.setting_overrides:
            out["setting_overrides"] = {k: dict(v) for k, v in self.setting_overrides.items()}
        if self.models is not None:
            out["models"] = {s: self._describe_model(s, m) for s, m in self.models.items()}
            out["models_source"] = "user"
            out["fit_beta"] = self.fit_beta is not None
        else:
            out["settings"] = {
                s: {
                    "keep_rate": cfg.keep_rate,
                    "lambda_a": cfg.lambda_a,
                    "input_convention": cfg.input_convention,
                    "beta_cap": cfg.beta_cap,
                    "model": cfg.model,
                }
                for s in SETTINGS
                for cfg in (self.config(s),)
            }
        return out

    def _describe_model(self, setting: str, m: nn.Module) -> dict[str, Any]:
        cfg = self.config(setting)
        anchors = getattr(m, "anchors", None)
        return {
            "type": type(m).__name__,
            "parameters": int(sum(p.numel() for p in m.parameters())),
            "keep_rate": getattr(m, "keep_rate", None),
            "lambda_a": getattr(m, "lambda_a", None),
            "input_convention": getattr(m, "input_convention", None),
            "posterior_scale": float(getattr(m, "posterior_scale", 1.0)),
            "kl_weight": getattr(m, "kl_weight", None),
            "anchors": None if anchors is None else list(anchors.shape),
            "config_used": {"keep_rate": cfg.keep_rate, "lambda_a": cfg.lambda_a},
            "origin": dict(getattr(m, "radius_origin", {}) or {}),
            "source": dict(getattr(m, "source", {}) or {}),
            "path": getattr(m, "radius_path", None),
            "warnings": list(getattr(m, "radius_warnings", []) or []),
        }
