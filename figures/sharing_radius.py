r"""The latent sharing radius and gradient transfer over training (T2.3).

For a pair (u, v) with output-layer gradients :math:`g_u, g_v`, T2.3 certifies positive
transfer :math:`\langle g_u, g_v\rangle > 0` when the pair lies inside the sharing radius,
:math:`W_1 \le W_2(q_u, q_v) < r_{share}(u, v) = [\|g_u\| - \Delta_x(u, v)]_+ /
L_{\theta z}`. The claim (``radius.verify.t2_3``) examines it at several training points
(initialisation, the first epochs, the best epoch) on pairs searched over all training
users by the theorem's own quantity; this figure draws what it measured:

* top row, one panel per training point: :math:`r_{share}` against :math:`W_2` for the
  kept pairs with :math:`r_{share} > 0` (log-log); a pair is inside the radius above
  the diagonal :math:`r_{share} = W_2`; the pairs with :math:`r_{share} = 0` are counted
  in the title;
* bottom left, over training: the share of screened candidates with
  :math:`r_{share} > 0`, the share of kept pairs inside, the share of nearest-neighbour
  pairs that transfer positively, and the positive share among the pairs inside with its
  exact 95% interval;
* bottom right, at the best epoch: normalised transfer
  :math:`\langle g_u, g_v\rangle / \|g_u\|^2` against :math:`W_2` for the three strata
  (the decay of T2.3.4).

Data: ``radius.verify.t2_3.run(ctx).details["training_points"]`` (the claim's own rows);
written beside the PNG as ``radius.csv`` (one row per kept pair and training point) and
``radius.json`` (per-point summaries and the claim's verdict).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter

from radius.figures.common import (
    figure_model,
    new_figure,
    save_png,
    setting_label,
    write_csv,
    write_json,
)

__all__ = ["RADIUS_COLUMNS", "KIND_LABELS", "points_from_details", "collect_radius", "draw_radius"]

RADIUS_COLUMNS = (
    "point",
    "kind",
    "u",
    "v",
    "w2",
    "mu_dist",
    "r_share",
    "inside",
    "inner",
    "norm_u",
    "normalised_transfer",
    "delta_x",
    "lipschitz",
)

KIND_LABELS = {
    "searched": "searched (smallest D / ||g_u||)",
    "jaccard": "nearest Jaccard neighbour",
    "latent": "nearest W2 neighbour",
    "random": "random user",
}
KIND_COLORS = {
    "searched": "#d62728",
    "jaccard": "#1f77b4",
    "latent": "#ff7f0e",
    "random": "#7f7f7f",
}
SUMMARY_KEYS = (
    "label",
    "epochs",
    "search",
    "n_pairs",
    "n_r_share_positive",
    "fraction_r_share_positive",
    "n_inside",
    "fraction_inside",
    "positive_inside",
    "max_r_share_over_mu_dist",
    "max_r_share_over_w2",
    "near_positive_transfer",
    "tightness_near",
)


def points_from_details(details: dict[str, Any]) -> list[dict[str, Any]]:
    """The training points of a T2.3 result's details, each with its summary and rows.

    Raises ``KeyError`` naming what is missing when the details carry no training points
    with pair rows (``w2``, ``r_share``, ``inner``, ``norm_u``).
    """
    points = details.get("training_points")
    if not (isinstance(points, list) and points):
        raise KeyError("T2.3 details carry no 'training_points'")
    for p in points:
        rows = p.get("rows")
        if not isinstance(rows, list):
            raise KeyError(f"training point {p.get('label')!r} has no 'rows'")
        for r in rows:
            missing = [k for k in ("w2", "r_share", "inner", "norm_u") if k not in r]
            if missing:
                raise KeyError(f"training point {p.get('label')!r}: rows lack {missing}")
    return points


def collect_radius(ctx: Any, **claim_options: Any) -> dict[str, Any]:
    """Run the T2.3 claim (``claim_options`` are ``run``'s, e.g. ``along=``) and keep its
    training points, verdict and search description."""
    from radius.verify import t2_3

    res = t2_3.run(ctx, **claim_options)
    points = points_from_details(res.details)
    setting = res.details.get("setting", t2_3.SETTING)
    return {
        "model": ctx.config(setting).model,
        "setting": setting,
        "points": points,
        "source": "radius.verify.t2_3.run(ctx).details['training_points']",
        "claim": {
            "verdict": res.verdict,
            "verdict_text": res.verdict_text,
            "checks": [
                {
                    "name": c.name,
                    "role": c.role,
                    "outcome": c.label,
                    "measured": c.measured,
                    "n": c.n,
                }
                for c in res.checks
            ],
            "search": res.details.get("search"),
            "n_cases": res.details.get("n_cases"),
            "n_inside_radius": res.details.get("n_inside_radius"),
        },
        "context": res.context,
    }


def _ci(point: dict[str, Any], key: str) -> tuple[float, float, float]:
    b = point.get(key) or {}
    if not b.get("n"):
        return (np.nan, np.nan, np.nan)
    lo, hi = b["interval"]
    return (float(b["fraction"]), float(lo), float(hi))


def draw_radius(data: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Draw the figure; writes ``radius.png``, ``radius.csv`` and ``radius.json``."""
    out_dir = Path(out_dir)
    points = data["points"]
    if not points:
        raise ValueError("no training points to draw")
    k = len(points)
    fig, _ = new_figure(4.0 * max(k, 2), 8.5)
    fig.clear()  # a grid of its own: one panel per training point above two below
    grid = fig.add_gridspec(2, max(k, 2))
    top = [fig.add_subplot(grid[0, j]) for j in range(k)]
    half = max(k, 2) // 2
    ax_t = fig.add_subplot(grid[1, :half])
    ax_d = fig.add_subplot(grid[1, half:])
    csv_rows = []
    for ax, p in zip(top, points):
        rows = p["rows"]
        w2 = np.array([float(r["w2"]) for r in rows])
        rs = np.array([float(r["r_share"]) for r in rows])
        kinds = np.array([str(r.get("kind", "")) for r in rows])
        inside = w2 < rs
        pos = rs > 0
        for kind in KIND_LABELS:
            sel = pos & (kinds == kind)
            if sel.any():
                ax.scatter(
                    w2[sel],
                    rs[sel],
                    s=12,
                    alpha=0.7,
                    color=KIND_COLORS[kind],
                    edgecolors="none",
                    label=f"{KIND_LABELS[kind]} ({int(sel.sum())})",
                )
        if inside.any():
            ax.scatter(
                w2[inside],
                rs[inside],
                s=60,
                facecolors="none",
                edgecolors="black",
                lw=1.1,
                label=f"inside r_share ({int(inside.sum())})",
            )
        if pos.any():
            lo = float(min(w2[pos].min(), rs[pos].min())) / 1.5
            hi = float(max(w2[pos].max(), rs[pos].max())) * 1.5
            ax.plot([lo, hi], [lo, hi], "--", color="black", lw=0.8, label="r_share = W2")
            ax.set_xscale("log")
            ax.set_yscale("log")
            for axis in (ax.xaxis, ax.yaxis):  # decade labels only: minor ones overlap
                axis.set_minor_formatter(NullFormatter())
            ax.legend(fontsize=6, loc="lower right")
        else:
            ax.text(
                0.5,
                0.5,
                "r_share = 0 for every kept pair",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
        scr = p.get("search") or {}
        frac = float(scr.get("fraction_r_share_positive", np.nan))
        ax.set_title(
            f"{p['label']}: {p['n_inside']} of {p['n_pairs']} kept pairs inside\n"
            f"r_share > 0: {int(pos.sum())} kept, {frac:.2%} of "
            f"{scr.get('candidates_screened', '?')} screened; {int((~pos).sum())} at 0",
            fontsize=8,
        )
        ax.set_xlabel("W2(q_u, q_v)", fontsize=8)
        ax.set_ylabel("r_share(u, v)", fontsize=8)
        for r in rows:
            csv_rows.append([p["label"], *[r.get(c) for c in RADIUS_COLUMNS[1:]]])
    # over training
    x = np.arange(k)
    labels = [p["label"] for p in points]
    screened = [
        float((p.get("search") or {}).get("fraction_r_share_positive", np.nan)) for p in points
    ]
    inside_f = [float(p["fraction_inside"]) for p in points]
    near = np.array([_ci(p, "near_positive_transfer") for p in points])
    pin = np.array([_ci(p, "positive_inside") for p in points])
    ax_t.plot(x, screened, "o-", color="#2ca02c", label="r_share > 0 (screened candidates)")
    ax_t.plot(x, inside_f, "s-", color="black", label="inside r_share (kept pairs)")
    for xi, a, b in zip(x, screened, inside_f):  # the small shares, readable
        ax_t.annotate(f"{a:.2%}", (xi, a), xytext=(4, 8), textcoords="offset points",
                      fontsize=7, color="#2ca02c")  # fmt: skip
        ax_t.annotate(f"{b:.2%}", (xi, b), xytext=(4, -11), textcoords="offset points",
                      fontsize=7, color="black")  # fmt: skip
    ax_t.plot(x, near[:, 0], "^-", color="#1f77b4", label="nearest neighbour transfers positively")
    ok = np.isfinite(pin[:, 0])
    if ok.any():
        ax_t.errorbar(
            x[ok],
            pin[ok, 0],
            yerr=[pin[ok, 0] - pin[ok, 1], pin[ok, 2] - pin[ok, 0]],
            fmt="D",
            color="#d62728",
            capsize=3,
            label="positive among pairs inside (exact 95%)",
        )
    ax_t.set_xticks(x, labels, fontsize=8)
    ax_t.set_ylim(-0.03, 1.05)
    ax_t.set_ylabel("share")
    ax_t.set_title("the radius over training", fontsize=9)
    ax_t.legend(fontsize=7, loc="center right")
    # decay at the best epoch
    best = points[-1]["rows"]
    for kind in ("jaccard", "latent", "random"):
        sel = [r for r in best if r.get("kind") == kind]
        if sel:
            ax_d.scatter(
                [float(r["w2"]) for r in sel],
                [float(r["normalised_transfer"]) for r in sel],
                s=12,
                alpha=0.6,
                color=KIND_COLORS[kind],
                edgecolors="none",
                label=KIND_LABELS[kind],
            )
    ax_d.axhline(0.0, color="#7f7f7f", lw=0.8)
    ax_d.set_xlabel("W2(q_u, q_v)")
    ax_d.set_ylabel("<g_u, g_v> / ||g_u||^2")
    ax_d.set_title(f"normalised transfer at {points[-1]['label']} (strata)", fontsize=9)
    ax_d.legend(fontsize=7)
    model = figure_model(data)
    trained = setting_label(str(data.get("setting", "pia")), model)
    claim = data.get("claim") or {}
    fig.suptitle(
        f"T2.3: the latent sharing radius over training ({trained}); claim "
        f"{claim.get('verdict_text', '?')}\n(data: {data.get('source', '?')})",
        fontsize=10,
    )
    png = save_png(fig, out_dir / "radius.png")
    csv = write_csv(out_dir / "radius.csv", RADIUS_COLUMNS, csv_rows)
    summary = [{k: p.get(k) for k in SUMMARY_KEYS} for p in points]
    js = write_json(
        out_dir / "radius.json",
        {
            "figure": "radius",
            "points": summary,
            **{k: v for k, v in data.items() if k != "points"},
            "model": model,
            "label": trained,
        },
    )
    return {"png": png, "csv": csv, "json": js, "points": summary, "rows": csv_rows}
