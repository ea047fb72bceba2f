"""Figure registry: name -> function drawing one figure (PNG + data) from a VerifyContext.

``radius figures NAME`` (or ``all``) builds a ``VerifyContext`` on ``--data`` with the
shared model cache and draws into ``--out``. Models are trained once and cached
(``radius.training.cache.get_model``): the three settings (seed 0), seeds 1.. of the ablation
behind ``cohorts`` and the beta-sweep models of ``radius.verify.beta_kl``. With them
cached, the figures only evaluate, sample and draw. ``--quick`` uses smaller samples
(t-SNE users, Monte Carlo sizes, rho grid, beta points).

``--model multvae|recvae`` (default ``multvae``) picks the model every figure is drawn
for (``TrainConfig(model=...)`` as the context's base config); the RecVAE figures go to
``figures/out/recvae`` unless ``--out`` says otherwise, so they never overwrite the
Multi-VAE ones in ``figures/out``.
"""

from __future__ import annotations

import argparse
import difflib
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radius.errors import RadiusError

__all__ = [
    "FIGURES",
    "MODELS",
    "DEFAULT_OUT",
    "FigureOptions",
    "resolve_figures",
    "resolve_model",
    "figures_base_config",
    "figures_out_dir",
    "draw_figure",
    "run_figures",
]

MODELS: tuple[str, ...] = ("multvae", "recvae")
DEFAULT_OUT = Path("figures/out")  # Multi-VAE; other models in a subfolder named after them


@dataclass(frozen=True)
class FigureOptions:
    """Sizes shared by the figures.

    seeds : seeds of the ablation behind ``cohorts``.
    quick : smaller samples (t-SNE users, Monte Carlo draws, beta sweep points).
    """

    seeds: int = 3
    quick: bool = False


def _tsne(ctx: Any, out: Path, opt: FigureOptions) -> dict[str, Any]:
    from radius.figures.tsne import collect_tsne, draw_tsne

    kw = {"n_users": 400, "max_iter": 500} if opt.quick else {"n_users": 1500}
    return draw_tsne(collect_tsne(ctx, **kw), out)


def _cohorts(ctx: Any, out: Path, opt: FigureOptions) -> dict[str, Any]:
    from radius.figures.cohorts import collect_cohorts, draw_cohorts

    return draw_cohorts(collect_cohorts(ctx, seeds=opt.seeds, progress=ctx.progress), out)


def _radius(ctx: Any, out: Path, opt: FigureOptions) -> dict[str, Any]:
    from radius.figures.sharing_radius import collect_radius, draw_radius

    return draw_radius(collect_radius(ctx), out)


def _masking(ctx: Any, out: Path, opt: FigureOptions) -> dict[str, Any]:
    from radius.figures.masking import collect_masking, draw_masking

    kw = {"rhos": (0.2, 0.4, 0.6, 0.8, 1.0), "n_cases": 100} if opt.quick else {}
    return draw_masking(collect_masking(ctx, **kw), out)


def _beta(ctx: Any, out: Path, opt: FigureOptions) -> dict[str, Any]:
    from radius.figures.beta import collect_beta, draw_beta

    return draw_beta(collect_beta(ctx, betas=(0.1, 1.0, 10.0) if opt.quick else None), out)


FIGURES: dict[str, Callable[[Any, Path, FigureOptions], dict[str, Any]]] = {
    "tsne": _tsne,
    "cohorts": _cohorts,
    "radius": _radius,
    "masking": _masking,
    "beta": _beta,
}


def resolve_figures(name: str) -> list[str]:
    """Figure names for a CLI value: one name, ``all``, or a comma-separated list.

    Unknown names raise ``RadiusError`` with close-match suggestions.
    """
    out: list[str] = []
    for raw in (name or "all").split(","):
        key = raw.strip().lower()
        if key == "all":
            out.extend(FIGURES)
            continue
        if key not in FIGURES:
            choices = [*FIGURES, "all"]
            close = difflib.get_close_matches(key, choices, n=2, cutoff=0.5)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RadiusError(
                f"unknown figure {raw.strip()!r} (choose from {', '.join(choices)}){hint}"
            )
        out.append(key)
    return list(dict.fromkeys(out))


def resolve_model(model: str | None) -> str | None:
    """A ``--model`` value checked against ``MODELS`` (None stays None: not given)."""
    if model is None:
        return None
    key = str(model).strip().lower()
    if key not in MODELS:
        close = difflib.get_close_matches(key, MODELS, n=1, cutoff=0.5)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise RadiusError(f"unknown model {model!r} (choose from {', '.join(MODELS)}){hint}")
    return key


def figures_base_config(args: argparse.Namespace) -> Any:
    """The context's base ``TrainConfig``: ``args.base_config`` (programmatic callers) or
    ``TrainConfig()``, with ``args.model`` when given (default ``multvae``)."""
    from radius.training.config import TrainConfig

    model = resolve_model(getattr(args, "model", None))
    base = getattr(args, "base_config", None)
    if base is None:
        return TrainConfig(model=model or "multvae")
    return base if model is None or model == base.model else base.replace(model=model)


def figures_out_dir(out: str | Path | None, model: str) -> Path:
    """``out`` when given, else ``figures/out`` (Multi-VAE) or ``figures/out/MODEL``."""
    if out:
        return Path(out)
    return DEFAULT_OUT if model == "multvae" else DEFAULT_OUT / model


def draw_figure(
    name: str, ctx: Any, out_dir: str | Path, *, options: FigureOptions = FigureOptions()
) -> dict[str, Any]:
    """Draw one registered figure into ``out_dir``; returns its result dict."""
    names = resolve_figures(name)
    if len(names) != 1:
        raise RadiusError(f"draw_figure draws one figure, got {name!r}; use run_figures")
    key = names[0]
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return FIGURES[key](ctx, out, options)


def run_figures(args: argparse.Namespace) -> int:
    """``radius figures NAME|all``: draw, print what was written, return 0."""
    from radius.experiments import load_dataset
    from radius.figures.common import model_label
    from radius.training.cache import default_cache_dir
    from radius.verify.base import VerifyOptions
    from radius.verify.context import VerifyContext

    names = resolve_figures(getattr(args, "name", "all") or "all")
    seeds = int(getattr(args, "seeds", 3))
    if seeds < 1:
        raise RadiusError(f"--seeds must be >= 1, got {seeds}")
    quick = bool(getattr(args, "quick", False))
    base = figures_base_config(args)  # checks --model before any data is loaded
    ds = load_dataset(getattr(args, "data", "default") or "default")
    options = (
        VerifyOptions(n_pairs=120, n_users=100, n_mc=1000, quick=True) if quick else VerifyOptions()
    )
    # programmatic callers (tests) may pass base_config / cache_dir on the namespace
    ctx = VerifyContext(
        dataset=ds,
        options=options,
        base_config=base,
        cache_dir=getattr(args, "cache_dir", None) or default_cache_dir(),
        progress=bool(getattr(args, "progress", True)),
    )
    out = figures_out_dir(getattr(args, "out", None), base.model)
    opt = FigureOptions(seeds=seeds, quick=quick)
    print(
        f"drawing {', '.join(names)} for {model_label(base.model)} on {ds.name} [{ds.hash}] "
        f"into {out}/" + (" (quick)" if quick else "")
    )
    for name in names:
        t0 = time.perf_counter()
        res = draw_figure(name, ctx, out, options=opt)
        files = [str(res[k]) for k in ("png", "csv", "json") if k in res]
        print(f"  {name}: {', '.join(files)} ({time.perf_counter() - t0:.1f} s)", flush=True)
    return 0
