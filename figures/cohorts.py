"""nDCG@100 per interaction-count cohort: masking vs masking + PIA, over seeds.

The model is the context's (``ctx.base_config.model``): Multi-VAE or RecVAE, named in
the labels and recorded in the JSON.

Left: nDCG@100 per cohort for each setting, error bars the sample standard deviation
over seeds. Right: the PIA gain (pia - masking, paired by seed) per cohort with its
standard deviation; the paper reports the gains largest at both cohort ends.
Data from ``radius.experiments.ablation``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radius.data.dataset import COHORTS
from radius.figures.common import (
    SETTING_COLORS,
    figure_model,
    model_label,
    new_figure,
    save_png,
    setting_label,
    write_csv,
    write_json,
)

__all__ = ["collect_cohorts", "draw_cohorts"]


def collect_cohorts(ctx: Any, *, seeds: int = 3, progress: bool = False) -> dict[str, Any]:
    """The ablation (all three settings) on the context's data, base config and cache."""
    from radius.experiments import ablation

    return ablation(
        ctx.dataset,
        seeds=seeds,
        model=ctx.base_config.model,
        base_config=ctx.base_config,
        cache_dir=ctx.cache_dir,
        progress=progress,
    )


def _nan0(v: float) -> float:
    return 0.0 if not np.isfinite(v) else float(v)


def draw_cohorts(
    result: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    settings: Sequence[str] = ("masking", "pia"),
    metric: str = "ndcg@100",
) -> dict[str, Any]:
    """Grouped bars per cohort with seed error bars, and the gain panel.

    Writes ``cohorts.png``, ``cohorts.csv`` (one row per cohort: users, mean and std of
    each setting, gain mean and std) and ``cohorts.json`` (the direction statements);
    returns the paths and the rows.
    """
    out_dir = Path(out_dir)
    missing = [s for s in settings if s not in result["cohorts"]]
    if missing:
        raise ValueError(f"the ablation result has no setting(s) {missing}")
    labels = [c[0] for c in COHORTS]
    model = figure_model(result)
    n_seeds = len(result["seeds"])
    x = np.arange(len(labels))
    width = 0.8 / len(settings)
    fig, (ax, ax_gain) = new_figure(10.5, 4.2, ncols=2, width_ratios=[1.4, 1.0])
    all_settings = [s for s in ("clean", "masking", "pia") if s in result["cohorts"]]
    table = {
        s: (
            np.array([result["cohorts"][s][c][metric]["mean"] for c in labels], dtype=float),
            np.array([result["cohorts"][s][c][metric]["std"] for c in labels], dtype=float),
        )
        for s in all_settings
    }
    users = [int(result["cohorts"][settings[0]][c]["users"]) for c in labels]
    for j, s in enumerate(settings):
        mean, std = table[s]
        ax.bar(
            x + (j - (len(settings) - 1) / 2) * width,
            np.nan_to_num(mean),
            width,
            yerr=np.nan_to_num(std) if n_seeds > 1 else None,
            capsize=3,
            color=SETTING_COLORS.get(s),
            label=setting_label(s, model),
        )
    ax.set_xticks(x, [f"{c}\n(n={u})" for c, u in zip(labels, users)])
    ax.set_xlabel("interaction-count cohort")
    ax.set_ylabel(f"{metric} (test users)")
    ax.set_title(f"{metric} per cohort, mean ± std over {n_seeds} seed(s)", fontsize=10)
    ax.legend(loc="best", fontsize=8)
    gain = result.get("pia_gain")
    g_mean = np.full(len(labels), np.nan)
    g_std = np.full(len(labels), np.nan)
    if gain is not None:
        g_mean = np.array([gain["per_cohort"][c]["gain_mean"] for c in labels], dtype=float)
        g_std = np.array([gain["per_cohort"][c]["gain_std"] for c in labels], dtype=float)
        ax_gain.bar(
            x,
            np.nan_to_num(g_mean),
            0.6,
            yerr=np.nan_to_num(g_std) if n_seeds > 1 else None,
            capsize=3,
            color=[SETTING_COLORS["pia"] if _nan0(g) >= 0 else "#555555" for g in g_mean],
        )
        verdict = {True: "yes", False: "no", None: "undefined"}[gain["largest_at_both_ends"]]
        ax_gain.set_title(f"PIA gain over masking (largest at both ends: {verdict})", fontsize=10)
    ax_gain.axhline(0.0, color="black", lw=0.8)
    ax_gain.set_xticks(x, labels)
    ax_gain.set_xlabel("interaction-count cohort")
    ax_gain.set_ylabel(f"Δ {metric} (pia − masking, paired by seed)")
    fig.suptitle(
        f"{model_label(model)} on {result['data']['name']}: per-cohort {metric}", fontsize=11
    )
    png = save_png(fig, out_dir / "cohorts.png")
    header = ["cohort", "users"]
    for s in all_settings:
        header += [f"{s}_mean", f"{s}_std"]
    header += ["gain_mean", "gain_std", "n_seeds"]
    rows = []
    for i, c in enumerate(labels):
        row: list[Any] = [c, users[i]]
        for s in all_settings:
            row += [float(table[s][0][i]), float(table[s][1][i])]
        row += [float(g_mean[i]), float(g_std[i]), n_seeds]
        rows.append(row)
    csv = write_csv(out_dir / "cohorts.csv", header, rows)
    summary = {k: result[k] for k in ("ordering", "pia_gain", "summary", "seeds") if k in result}
    js = write_json(
        out_dir / "cohorts.json",
        {
            "figure": "cohorts",
            "model": model,
            "labels": {s: setting_label(s, model) for s in settings},
            "metric": metric,
            **summary,
        },
    )
    return {"png": png, "csv": csv, "json": js, "header": header, "rows": rows}
