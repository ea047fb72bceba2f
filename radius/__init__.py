"""radius: verify how VAE recommenders collaborate, on real data and trained models.

Claims checked (see ``paper_checks.md``): T2.3 sharing radius, L2.4 encoder
Lipschitz, T2.5 compromise gap, T2.6 masking laws, the beta-KL decomposition,
P3.1 anchor-loss decomposition and P3.2 anchor contraction.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys
import types
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # pragma: no cover
    from radius.data.dataset import Dataset

from radius.version import __version__, code_version

__all__ = [
    "__version__",
    "code_version",
    "load_dataset",
    "prepare",
    "train",
    "verify",
    "figures",
    "model",
    "wrap",
    "adapters",
]

# ---------------------------------------------------------------------- public API
# ``import radius`` stays cheap: torch, the claims and the figures are imported on first
# use. The figure modules are also their entry points: ``radius.figures.tsne(...)`` draws
# the t-SNE figure (the module is made callable, so importing the submodule does not hide
# the function).

_CALLS: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "radius.figures.tsne": ("radius.figures", "draw", ("tsne",)),
    "radius.figures.cohorts": ("radius.figures", "draw", ("cohorts",)),
    "radius.figures.sharing_radius": ("radius.figures", "draw", ("radius",)),
    "radius.figures.masking": ("radius.figures", "draw", ("masking",)),
    "radius.figures.beta": ("radius.figures", "draw", ("beta",)),
}


class _CallableModule(types.ModuleType):
    """A module that is also its entry point: calling it calls ``_CALLS[name]``."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        mod, attr, pre = _CALLS[self.__name__]
        return getattr(importlib.import_module(mod), attr)(*pre, *args, **kwargs)


class _CallableLoader(importlib.abc.Loader):
    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def create_module(self, spec: Any) -> Any:
        return self._inner.create_module(spec)

    def exec_module(self, module: types.ModuleType) -> None:
        self._inner.exec_module(module)
        module.__class__ = _CallableModule

    def __getattr__(self, name: str) -> Any:  # get_source, get_code, ... of the inner loader
        return getattr(self._inner, name)


class _CallableFinder(importlib.abc.MetaPathFinder):
    """Finds the modules of ``_CALLS`` with the other finders and makes them callable."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> Any:
        if fullname not in _CALLS:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _CallableLoader(spec.loader)
                return spec
        return None


if not any(isinstance(f, _CallableFinder) for f in sys.meta_path):
    sys.meta_path.insert(0, _CallableFinder())


def load_dataset(
    spec: str | Path = "default", *, split: dict[str, Any] | None = None, fmt: str = "auto"
) -> Dataset:
    """A dataset: ``"default"`` (the planted synthetic set), a prepared folder, or a raw
    ratings file split in memory (nothing written). Every default chosen from the file's
    name or format (a rating threshold, minimum counts, the protocol) is printed on stderr
    and recorded in ``manifest["defaults_applied"]``, with the option that turns it off.

    Parameters
    ----------
    spec : ``"default"``, a folder written by ``prepare`` / ``radius data prepare``, or
        a raw file (MovieLens ``u.data`` / ``ratings.dat`` / ``ratings.csv``, a
        ``user,item[,rating]`` CSV, a RecBole ``.inter`` file, ...).
    split : overrides of the format's split parameters (rating threshold, minimum
        counts, held-out users, fold-in proportion, seed, ``protocol`` ``"strong"`` or
        ``"weak"``), for raw files, e.g. ``{"threshold": None, "protocol": "weak"}``.
    fmt : the raw file's format (default guessed from its name and first line).
    """
    from radius.data.loaders import load_any

    return load_any(spec, split=split, fmt=fmt)


def prepare(
    path: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "auto",
    split: dict[str, Any] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read a raw ratings file, split it (Liang et al. strong generalisation) and save it
    atomically to ``out_dir`` with a manifest of every parameter used (``radius data
    prepare``). ``split`` overrides the format's default split parameters."""
    from radius.data.loaders import prepare as _prepare

    return _prepare(path, out_dir, fmt=fmt, split=split, name=name)


def train(dataset: Dataset, config: Any = None, **kwargs: Any) -> Any:
    """Train a model on ``dataset`` (``radius.training.trainer.train``): early stopping on
    validation nDCG@100, optional atomic checkpoint; returns a ``TrainResult``.

    ``config`` is a ``radius.training.config.TrainConfig`` (default: Multi-VAE with the
    reference recipe); keyword arguments are passed on (``checkpoint=``, ``resume=``,
    ``progress=``, ``evaluate_test=``).
    """
    from radius.training.config import TrainConfig
    from radius.training.trainer import train as _train

    return _train(dataset, TrainConfig() if config is None else config, **kwargs)


_SUBPACKAGES = (
    "verify",
    "figures",
    "model",
    "data",
    "training",
    "analysis",
    "report",
    "adapters",
)


def __getattr__(name: str) -> Any:
    """Subpackages of the public API, imported on first use."""
    if name in _SUBPACKAGES:
        return importlib.import_module(f"radius.{name}")
    if name == "wrap":
        from radius.model.wrap import wrap

        return wrap
    raise AttributeError(f"module 'radius' has no attribute {name!r}")
