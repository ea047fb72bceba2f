"""Shared plumbing of the figures: headless figures, atomic PNG/CSV/JSON writes, encoding.

Figures are built object-oriented (``Figure`` + ``FigureCanvasAgg``), so drawing never
touches pyplot's global state or the user's backend.
"""

from __future__ import annotations

import csv
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from radius.io import atomic_path, atomic_write_json, atomic_write_text

__all__ = [
    "MODEL_LABELS",
    "model_label",
    "setting_label",
    "figure_model",
    "SETTING_COLORS",
    "COHORT_COLORS",
    "new_figure",
    "save_png",
    "write_csv",
    "write_json",
    "encode_mean",
]

MODEL_LABELS: dict[str, str] = {"multvae": "Multi-VAE", "recvae": "RecVAE"}


def model_label(model: str) -> str:
    """Display name of a model (``multvae`` -> ``Multi-VAE``, ``recvae`` -> ``RecVAE``)."""
    return MODEL_LABELS.get(model, model)


def setting_label(setting: str, model: str = "multvae") -> str:
    """Legend / title label of a setting of ``model``, e.g. ``RecVAE + PIA``."""
    name = model_label(model)
    return {
        "clean": "clean input",
        "masking": f"{name} (masking)",
        "pia": f"{name} + PIA",
    }.get(setting, setting)


def figure_model(data: dict[str, Any], default: str = "multvae") -> str:
    """The model a figure's data were computed with.

    ``data["model"]`` (the collectors record it), else the context's base config
    (``data["context"]["base_config"]["model"]``), else ``default``.
    """
    model = data.get("model")
    if model:
        return str(model)
    ctx = data.get("context")
    base = ctx.get("base_config") if isinstance(ctx, dict) else None
    if isinstance(base, dict) and base.get("model"):
        return str(base["model"])
    return default


SETTING_COLORS: dict[str, str] = {"clean": "#7f7f7f", "masking": "#1f77b4", "pia": "#d62728"}
# Ordered light -> dark so the activity order reads off the colour (viridis-like).
COHORT_COLORS: tuple[str, ...] = ("#fde725", "#35b779", "#31688e", "#440154")


def new_figure(width: float, height: float, *, ncols: int = 1, nrows: int = 1, **kw: Any):
    """A headless ``Figure`` with an Agg canvas and its axes array (squeezed like pyplot)."""
    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows=nrows, ncols=ncols, squeeze=True, **kw)
    return fig, axes


def save_png(fig: Figure, path: str | os.PathLike, *, dpi: int = 130) -> Path:
    """Write ``fig`` as PNG atomically; returns the path."""
    path = Path(path)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    with atomic_path(path) as tmp:
        tmp.write_bytes(buf.getvalue())
    return path


def _cell(v: Any) -> Any:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    if isinstance(v, np.integer):
        return int(v)
    return v


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]
) -> Path:
    """Write a CSV (header + rows) atomically; floats at full precision."""
    path = Path(path)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(list(header))
    for r in rows:
        w.writerow([_cell(v) for v in r])
    atomic_write_text(path, buf.getvalue())
    return path


def write_json(path: str | os.PathLike, data: Any) -> Path:
    path = Path(path)
    atomic_write_json(path, data)
    return path


@torch.no_grad()
def encode_mean(
    model: Any, x: sp.csr_matrix, *, chunk_size: int = 512
) -> tuple[np.ndarray, np.ndarray]:
    """Posterior means and log-variances (N, d) of the clean rows of ``x``, float64."""
    param = next(iter(model.parameters()))
    mus, lvs = [], []
    for s in range(0, x.shape[0], chunk_size):
        dense = torch.as_tensor(
            x[s : s + chunk_size].toarray(), dtype=param.dtype, device=param.device
        )
        mu, lv = model.encode(dense)  # (c, d)
        mus.append(mu.double().cpu().numpy())
        lvs.append(lv.double().cpu().numpy())
    return np.concatenate(mus), np.concatenate(lvs)
