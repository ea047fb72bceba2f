"""Figures: one module per figure, each a function drawing a PNG plus its data.

Public entry points (plain functions; ``radius.figures.tsne(...)`` etc. call ``draw``):

>>> import radius
>>> radius.figures.draw("tsne", models={"clean": m1, "pia": m2}, dataset=ds)  # doctest: +SKIP
>>> radius.figures.tsne(dataset="default", quick=True)  # doctest: +SKIP

Each of ``tsne``, ``cohorts``, ``masking``, ``beta`` (modules made callable by
``radius``) and ``radius`` (the sharing-radius figure) draws that figure.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["draw", "radius", "USER_MODEL_FIGURES"]

USER_MODEL_FIGURES: tuple[str, ...] = ("tsne", "radius", "masking", "beta")
"""Figures drawn from given models; ``cohorts`` trains radius's ablation over seeds."""


def draw(
    name: str,
    *,
    models: Mapping[str, Any] | None = None,
    dataset: Any = "default",
    out: str | Path | None = None,
    fit: Callable[..., Any] | None = None,
    quick: bool = False,
    seeds: int = 3,
    base_config: Any = None,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Draw one figure (PNG plus its data as CSV/JSON) and return its result dict.

    Parameters
    ----------
    name : ``tsne``, ``cohorts``, ``radius``, ``masking`` or ``beta``.
    models : setting -> model following the protocol (user models, validated against
        the data; nothing is trained), or None for radius's own cached models.
    dataset : a ``Dataset``, ``"default"``, a prepared folder or a raw file.
    out : output folder (default ``figures/out``, ``figures/out/MODEL`` for RecVAE).
    fit : ``fit(beta) -> model`` for the ``beta`` figure with user models.
    quick : smaller samples. seeds : ablation seeds (``cohorts``).
    base_config, cache_dir, progress : radius's own models (as ``radius figures``).

    Raises
    ------
    MissingModelError
        With user models, when the figure needs a setting (or ``fit``) not given, or is
        ``cohorts`` (it trains radius's own ablation).
    """
    from radius.figures.registry import FigureOptions, draw_figure, figures_out_dir, resolve_figures
    from radius.training.config import TrainConfig
    from radius.verify.api import QUICK_OPTIONS, _context, as_dataset
    from radius.verify.base import VerifyOptions
    from radius.verify.context import MissingModelError

    names = resolve_figures(name)
    if len(names) != 1:
        raise ValueError(f"draw draws one figure, got {name!r}")
    key = names[0]
    if models is not None and key not in USER_MODEL_FIGURES:
        raise MissingModelError(
            f"the {key!r} figure trains radius's own ablation over seeds; it cannot be drawn "
            "for user models",
            [f"{key} (radius-trained ablation)"],
        )
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    ds = as_dataset(dataset)
    base = base_config or TrainConfig()
    ctx = _context(
        ds, models, fit, QUICK_OPTIONS if quick else VerifyOptions(), base, cache_dir, progress
    )
    folder = Path(out) if out is not None else figures_out_dir(None, base.model)
    return draw_figure(key, ctx, folder, options=FigureOptions(seeds=seeds, quick=quick))


def radius(**kwargs: Any) -> dict[str, Any]:
    """The sharing-radius figure (``draw("radius", ...)``)."""
    return draw("radius", **kwargs)
