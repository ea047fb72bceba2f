"""nDCG@100 per interaction-count cohort: masking vs masking + PIA, with intervals.

The model is the context's (``ctx.base_config.model``): Multi-VAE or RecVAE, named in
the labels and recorded in the JSON.

Left: nDCG@100 per cohort for each setting (seed-averaged per-user scores), error bars
the 95% user-bootstrap interval of the cohort mean. Right: the PIA gain (pia - masking)
per cohort, error bars its 95% two-stage (seeds, then users) interval and the bar labelled with
its outcome (HOLDS / CONTRADICTED / INCONCLUSIVE; fewer than the ablation's minimum
users is INCONCLUSIVE). The title states "largest at both ends" as the outcome of
min(end gains) - max(middle gains) with its interval, never from a point estimate.
Data from ``radius.experiments.ablation`` (the same intervals and outcomes).
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


def collect_cohorts(
    ctx: Any, *, seeds: int = 3, progress: bool = False, **ablation_options: Any
) -> dict[str, Any]:
    """The ablation (all three settings, PIA tuned on validation) on the context's data,
    base config and cache; ``ablation_options`` go to ``radius.experiments.ablation``.

    A quick context (``ctx.options.quick``, ``radius figures --quick``) tunes PIA on the
    coarser ``QUICK_LAMBDA_GRID`` x ``QUICK_INIT_GRID`` unless a grid is given; the
    choice is still made on validation users.
    """
    from radius.experiments import QUICK_INIT_GRID, QUICK_LAMBDA_GRID, ablation

    if getattr(getattr(ctx, "options", None), "quick", False):
        ablation_options.setdefault("lambda_grid", QUICK_LAMBDA_GRID)
        ablation_options.setdefault("init_grid", QUICK_INIT_GRID)
    return ablation(
        ctx.dataset,
        seeds=seeds,
        model=ctx.base_config.model,
        base_config=ctx.base_config,
        cache_dir=ctx.cache_dir,
        progress=progress,
        **ablation_options,
    )


def _bounds(iv: Any) -> tuple[float, float, float]:
    """(estimate, low, high) of an interval dict; NaNs when absent."""
    if not isinstance(iv, dict):
        return float("nan"), float("nan"), float("nan")
    est, lo, hi = (float(iv.get(k, float("nan"))) for k in ("estimate", "low", "high"))
    return est, lo, hi


def _yerr(est: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> np.ndarray | None:
    """(2, n) asymmetric error bars from interval ends; None when no interval exists."""
    ok = np.isfinite(est) & np.isfinite(lo) & np.isfinite(hi)
    if not ok.any():
        return None
    return np.where(ok, np.vstack([est - lo, hi - est]), 0.0)


def _ci_text(est: float, lo: float, hi: float) -> str:
    if not np.isfinite(est):
        return "n/a"
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return f"{est:+.4f} [no interval]"
    return f"{est:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def _nan0(v: float) -> float:
    return 0.0 if not np.isfinite(v) else float(v)


def draw_cohorts(
    result: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    settings: Sequence[str] = ("masking", "pia"),
    metric: str = "ndcg@100",
) -> dict[str, Any]:
    """Grouped bars per cohort with user-bootstrap intervals, and the gain panel.

    Writes ``cohorts.png``, ``cohorts.csv`` (one row per cohort: users; per setting the
    mean and std over seeds and the interval of the cohort mean; the gain's estimate,
    interval and outcome) and ``cohorts.json`` (the verdicts); returns the paths, the rows
    and ``both_ends_text`` (the gain panel's statement).
    """
    out_dir = Path(out_dir)
    missing = [s for s in settings if s not in result["cohorts"]]
    if missing:
        raise ValueError(f"the ablation result has no setting(s) {missing}")
    labels = [c[0] for c in COHORTS]
    model = figure_model(result)
    n_seeds = len(result["seeds"])
    level = result.get("statistics", {}).get("level", 0.95)
    x = np.arange(len(labels))
    width = 0.8 / len(settings)
    fig, (ax, ax_gain) = new_figure(10.5, 4.2, ncols=2, width_ratios=[1.4, 1.0])
    all_settings = [s for s in ("clean", "masking", "pia") if s in result["cohorts"]]
    table: dict[str, dict[str, np.ndarray]] = {}
    for s in all_settings:
        cells = [result["cohorts"][s][c][metric] for c in labels]
        est_lo_hi = np.array([_bounds(cell.get("interval")) for cell in cells]).T  # (3, 4)
        table[s] = {
            "mean": np.array([cell["mean"] for cell in cells], dtype=float),
            "std": np.array([cell["std"] for cell in cells], dtype=float),
            "low": est_lo_hi[1],
            "high": est_lo_hi[2],
        }
    users = [int(result["cohorts"][settings[0]][c]["users"]) for c in labels]
    for j, s in enumerate(settings):
        t = table[s]
        ax.bar(
            x + (j - (len(settings) - 1) / 2) * width,
            np.nan_to_num(t["mean"]),
            width,
            yerr=_yerr(t["mean"], t["low"], t["high"]),
            capsize=3,
            color=SETTING_COLORS.get(s),
            label=setting_label(s, model),
        )
    ax.set_xticks(x, [f"{c}\n(n={u})" for c, u in zip(labels, users)])
    ax.set_xlabel("interaction-count cohort")
    ax.set_ylabel(f"{metric} (test users)")
    ax.set_title(
        f"{metric} per cohort, mean over {n_seeds} seed(s), {level:.0%} user-bootstrap CI",
        fontsize=10,
    )
    ax.legend(loc="best", fontsize=8)
    gain = result.get("pia_gain")
    g_est = np.full(len(labels), np.nan)
    g_lo = np.full(len(labels), np.nan)
    g_hi = np.full(len(labels), np.nan)
    g_out = ["" for _ in labels]
    both_text = "largest at both ends: no PIA gain in this result"
    if gain is not None:
        for i, c in enumerate(labels):
            entry = gain["per_cohort"][c]
            g_est[i], g_lo[i], g_hi[i] = _bounds(entry.get("interval"))
            g_out[i] = str(entry.get("verdict", ""))
        ax_gain.bar(
            x,
            np.nan_to_num(g_est),
            0.6,
            yerr=_yerr(g_est, g_lo, g_hi),
            capsize=3,
            color=[SETTING_COLORS["pia"] if _nan0(g) >= 0 else "#555555" for g in g_est],
        )
        for i, word in enumerate(g_out):
            top = g_hi[i] if np.isfinite(g_hi[i]) else _nan0(g_est[i])
            ax_gain.annotate(
                word.lower(), (x[i], top), ha="center", va="bottom", fontsize=7, rotation=0
            )
        both = gain.get("both_ends") or {}
        b_est, b_lo, b_hi = _bounds(both.get("interval"))
        both_text = (
            f"largest at both ends: {both.get('verdict', 'INCONCLUSIVE')}, "
            f"{_ci_text(b_est, b_lo, b_hi)}"
        )
        ax_gain.set_title(
            f"PIA gain over masking, {level:.0%} paired CI\n{both_text}", fontsize=8.5, loc="right"
        )
        ax_gain.margins(y=0.15)  # room for the outcome labels above the bars
    ax_gain.axhline(0.0, color="black", lw=0.8)
    ax_gain.set_xticks(x, labels)
    ax_gain.set_xlabel("interaction-count cohort")
    ax_gain.set_ylabel(f"Δ {metric} (pia − masking, paired users)")
    fig.suptitle(
        f"{model_label(model)} on {result['data']['name']}: per-cohort {metric}", fontsize=11
    )
    png = save_png(fig, out_dir / "cohorts.png")
    header = ["cohort", "users"]
    for s in all_settings:
        header += [f"{s}_mean", f"{s}_std", f"{s}_low", f"{s}_high"]
    header += ["gain_mean", "gain_low", "gain_high", "gain_outcome", "n_seeds"]
    rows = []
    for i, c in enumerate(labels):
        row: list[Any] = [c, users[i]]
        for s in all_settings:
            row += [float(table[s][k][i]) for k in ("mean", "std", "low", "high")]
        row += [float(g_est[i]), float(g_lo[i]), float(g_hi[i]), g_out[i], n_seeds]
        rows.append(row)
    csv = write_csv(out_dir / "cohorts.csv", header, rows)
    keys = ("ordering", "pia_gain", "summary", "seeds", "statistics", "tuning")
    summary = {k: result[k] for k in keys if k in result}
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
    return {
        "png": png,
        "csv": csv,
        "json": js,
        "header": header,
        "rows": rows,
        "both_ends_text": both_text,
    }
