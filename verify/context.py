"""What a claim module gets: the dataset, options, and trained models on demand.

Models are never trained silently inside a claim: ``VerifyContext.model(setting)``
goes through ``radius.train.get_model``, the explicit, content-keyed training step
(a second call with the same data and config loads the cached checkpoint).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from radius.config import TrainConfig, setting_config
from radius.data.dataset import Dataset
from radius.verify.base import VerifyOptions

__all__ = ["VerifyContext"]


@dataclass
class VerifyContext:
    """Inputs of every claim module.

    dataset : the prepared dataset.
    options : shared sizes, seeds and tolerances.
    base_config : training config the settings (clean, masking, pia) start from.
    cache_dir : where trained checkpoints are cached (content-keyed).
    checkpoint : an explicit checkpoint path; when given, ``model("pia")`` and
        ``model()`` return it instead of the cached setting model.
    progress : show progress bars.
    """

    dataset: Dataset
    options: VerifyOptions = field(default_factory=VerifyOptions)
    base_config: TrainConfig = field(default_factory=TrainConfig)
    cache_dir: Path | None = None
    checkpoint: Path | None = None
    progress: bool = False
    _models: dict[Any, nn.Module] = field(default_factory=dict, repr=False)

    def config(self, setting: str = "pia", **overrides: Any) -> TrainConfig:
        """Config of a named setting (clean, masking, pia) on the base config."""
        return setting_config(setting, self.base_config, **overrides)

    def model(self, setting: str = "pia", **overrides: Any) -> nn.Module:
        """Trained model of a setting, on the CPU in eval mode (trained once, then cached)."""
        if self.checkpoint is not None and setting == "pia" and not overrides:
            key: Any = ("checkpoint", str(self.checkpoint))
            if key not in self._models:
                from radius.train import load_checkpoint

                self._models[key] = (
                    load_checkpoint(self.checkpoint, self.dataset).model.cpu().eval()
                )
            return self._models[key]
        return self.model_for(self.config(setting, **overrides))

    def model_for(self, config: TrainConfig) -> nn.Module:
        """Trained model for an explicit config (used by sweeps, e.g. over beta)."""
        from radius.train import get_model

        key = ("config", tuple(sorted(config.key_dict().items(), key=lambda kv: kv[0])).__repr__())
        if key not in self._models:
            self._models[key] = (
                get_model(self.dataset, config, cache_dir=self.cache_dir, progress=self.progress)
                .cpu()
                .eval()
            )
        return self._models[key]

    def describe(self) -> dict[str, Any]:
        from radius import code_version

        return {
            "dataset": self.dataset.name,
            "data_hash": self.dataset.hash,
            "seed": self.options.seed,
            "code_version": code_version(),
            "checkpoint": str(self.checkpoint) if self.checkpoint else None,
            "base_config": self.base_config.key_dict(),
        }
