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

__version__ = "0.1.0"

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
]

# ---------------------------------------------------------------------- public API
# ``import radius`` stays cheap: torch, the claims and the figures are imported on first
# use. ``radius.train`` is both the training module and a function: the module is made
# callable (``radius.train(dataset, config)`` is ``radius.train.train(...)``), and so are
# the figure modules (``radius.figures.tsne(...)`` draws the t-SNE figure).

_CALLS: dict[str, tuple[str, str, tuple[Any, ...]]] = {
    "radius.train": ("radius.train", "train", ()),
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


def load_dataset(spec: str | Path = "default", *, split: dict[str, Any] | None = None) -> Dataset:
    """A dataset: ``"default"`` (the planted synthetic set), a prepared folder, or a raw
    ratings file split in memory (nothing written).

    Parameters
    ----------
    spec : ``"default"``, a folder written by ``prepare`` / ``radius data prepare``, or
        a raw file (MovieLens ``u.data`` / ``ratings.dat`` / ``ratings.csv``, a
        ``user,item[,rating]`` CSV, a RecBole ``.inter`` file, ...).
    split : overrides of the format's split parameters (rating threshold, minimum
        counts, held-out users, fold-in proportion, seed), for raw files.
    """
    from radius.data.loaders import load_any

    return load_any(spec, split=split)


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


def __getattr__(name: str) -> Any:
    """Subpackages and functions of the public API, imported on first use."""
    if name in ("verify", "figures", "model", "train"):
        return importlib.import_module(f"radius.{name}")
    if name == "wrap":
        from radius.model.wrap import wrap

        return wrap
    raise AttributeError(f"module 'radius' has no attribute {name!r}")


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``).

    ``.dirty`` is appended when tracked code (``radius/``, ``verify/``, ``figures/``
    without its drawn output ``figures/out/``, ``pyproject.toml``) differs from that
    commit, so a report never names a commit whose code did not produce it.
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            version = f"{__version__}+g{out.stdout.strip()}"
            code = ["radius", "verify", "figures", ":(exclude)figures/out", "pyproject.toml"]
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--"]
                + code,
                capture_output=True,
                text=True,
                timeout=5,
            )
            if status.returncode != 0 or status.stdout.strip():
                version += ".dirty"
            return version
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__
