r"""Normalised gradient transfer against latent distance, pairs inside r_share marked (T2.3).

For a sampled pair (u, v) with decoder gradients :math:`g_u, g_v`, the normalised
transfer :math:`\langle g_u, g_v\rangle / \|g_u\|^2` is the fraction of u's own
first-order loss decrease that one SGD step on v delivers. T2.3 predicts it decays
with the latent distance :math:`W_2(q_u, q_v)` and is positive for every pair with
:math:`W_1 \le W_2 < r_{share}(u, v) = [\|g_u\| - \Delta_x(u, v)]_+ / L_{\theta z}`.

The data are the pair rows of the T2.3 claim, ``radius.verify.t2_3.run(ctx).details``
(all pairs inside the radius plus up to 300 spread evenly over the W2 order), so the
picture shows the pairs behind the verdict; the claim's checks are written beside.
The model is the claim's (the ``pia`` setting of ``ctx.base_config.model``: Multi-VAE or
RecVAE), named in the title and recorded in the JSON.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.ticker import NullFormatter
from scipy.stats import spearmanr

from radius.figures.common import (
    figure_model,
    new_figure,
    save_png,
    setting_label,
    write_csv,
    write_json,
)

__all__ = [
    "RADIUS_COLUMNS",
    "pair_rows_from_details",
    "collect_radius",
    "summarise_radius",
    "draw_radius",
]

RADIUS_COLUMNS = (
    "kind",
    "u",
    "v",
    "w2",
    "inner",
    "norm_u",
    "normalised_transfer",
    "delta_x",
    "lipschitz",
    "r_share",
    "inside",
)

KIND_LABELS = {
    "jaccard": "input neighbour (Jaccard)",
    "latent": "latent neighbour (W2)",
    "random": "random pair",
    "edit": "edit probe (u minus one item)",
}

REQUIRED = ("u", "v", "w2", "inner", "norm_u", "r_share")


def pair_rows_from_details(details: dict[str, Any]) -> list[dict[str, Any]] | None:
    r"""The T2.3 ``details["pairs"]`` rows in this figure's columns, or None if absent.

    Rows need ``u, v, w2, inner, norm_u, r_share``; the normalised transfer
    :math:`\langle g_u, g_v\rangle / \|g_u\|^2` and ``inside`` (W2 < r_share) are
    derived when missing, ``kind`` defaults to ``"sampled"`` and ``delta_x`` and
    ``lipschitz`` to NaN.
    """
    rows = details.get("pairs")
    if not (isinstance(rows, list) and rows and all(isinstance(r, dict) for r in rows)):
        return None
    if any(k not in r for r in rows for k in REQUIRED):
        return None
    out = []
    for r in rows:
        rec = {k: r.get(k) for k in RADIUS_COLUMNS}
        norm_sq = float(r["norm_u"]) ** 2
        if rec["normalised_transfer"] is None:
            rec["normalised_transfer"] = float(r["inner"]) / norm_sq if norm_sq > 0 else np.nan
        if rec["inside"] is None:
            rec["inside"] = bool(float(r["w2"]) < float(r["r_share"]))
        rec["kind"] = str(r.get("kind", "sampled"))
        for k in ("delta_x", "lipschitz"):
            rec[k] = float(r[k]) if r.get(k) is not None else np.nan
        out.append(rec)
    return out


def collect_radius(ctx: Any) -> dict[str, Any]:
    """Run the T2.3 claim and keep its pair rows, verdict and sampling description."""
    from radius.verify import t2_3

    res = t2_3.run(ctx)
    setting = t2_3.SETTING
    rows = pair_rows_from_details(res.details)
    if rows is None:
        raise KeyError(
            "radius.verify.t2_3 details carry no pair rows with w2, inner/norm_u (or the "
            "normalised transfer) and r_share"
        )
    claim = {
        "verdict": res.verdict,
        "checks": [
            {"name": c.name, "passed": c.passed, "measured": c.measured, "n": c.n}
            for c in res.checks
        ],
        **{
            k: res.details[k]
            for k in (
                "n_pairs",
                "n_r_share_positive",
                "n_inside_radius",
                "n_inside_radius_probe",
                "pair_sampling",
            )
            if k in res.details
        },
    }
    return {
        "model": ctx.config(setting).model,
        "setting": setting,
        "rows": rows,
        "source": "radius.verify.t2_3.run(ctx).details['pairs']",
        "claim": claim,
        "context": res.context,
    }


def summarise_radius(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Spearman(W2, normalised transfer), counts inside the radius and their transfer sign."""
    w2 = np.array([float(r["w2"]) for r in rows])
    t = np.array([float(r["normalised_transfer"]) for r in rows])
    r_share = np.array([float(r["r_share"]) for r in rows])
    inside = np.array([bool(r["inside"]) for r in rows])
    probe = np.array([str(r.get("kind", "")) == "edit" for r in rows])
    ok = np.isfinite(w2) & np.isfinite(t)
    rho = float(spearmanr(w2[ok], t[ok]).statistic) if ok.sum() > 2 else float("nan")
    return {
        "n_pairs": len(rows),
        "spearman_w2_transfer": rho,
        "n_positive_radius": int((r_share > 0).sum()),
        "n_inside": int(inside.sum()),
        "n_inside_real": int((inside & ~probe).sum()),
        "n_inside_probe": int((inside & probe).sum()),
        "n_inside_positive_transfer": int((inside & (t > 0)).sum()),
        "n_positive_transfer": int((t > 0).sum()),
    }


def draw_radius(data: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Scatter of normalised transfer vs W2; writes ``radius.png``, ``.csv`` and ``.json``."""
    out_dir = Path(out_dir)
    rows = data["rows"]
    if not rows:
        raise ValueError("no pairs to draw")
    summary = summarise_radius(rows)
    w2 = np.array([float(r["w2"]) for r in rows])
    t = np.array([float(r["normalised_transfer"]) for r in rows])
    inside = np.array([bool(r["inside"]) for r in rows])
    kinds = np.array([str(r["kind"]) for r in rows])
    fig, (ax, ax_r) = new_figure(13.0, 5.0, ncols=2, width_ratios=[1.5, 1.0])
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b")
    colors = {}
    for j, kind in enumerate(dict.fromkeys(kinds)):
        colors[kind] = palette[j % len(palette)]
        sel = kinds == kind
        ax.scatter(
            w2[sel],
            t[sel],
            s=14,
            alpha=0.6,
            color=colors[kind],
            edgecolors="none",
            label=f"{KIND_LABELS.get(kind, kind)} ({int(sel.sum())})",
        )
    if inside.any():
        ax.scatter(
            w2[inside],
            t[inside],
            s=60,
            facecolors="none",
            edgecolors="black",
            lw=1.1,
            label=f"inside r_share ({int(inside.sum())})",
        )
    if len(rows) >= 20:
        bins = np.array_split(np.argsort(w2), 10)
        ax.plot(
            [np.median(w2[q]) for q in bins],
            [np.median(t[q]) for q in bins],
            "-",
            color="black",
            lw=1.5,
            label="binned median (10 bins)",
        )
    ax.axhline(0.0, color="#7f7f7f", lw=0.8)
    ax.set_xlabel("latent distance W2(q_u, q_v)")
    ax.set_ylabel("normalised transfer ⟨g_u, g_v⟩ / ‖g_u‖²")
    ax.set_title(
        f"transfer vs latent distance: Spearman {summary['spearman_w2_transfer']:+.3f} "
        f"over the {summary['n_pairs']} pairs drawn\n{summary['n_inside']} inside r_share "
        f"({summary['n_inside_real']} real pairs, {summary['n_inside_probe']} edit probes), "
        f"{summary['n_inside_positive_transfer']} with positive transfer",
        fontsize=9,
    )
    ax.legend(fontsize=7, loc="best")
    norm_u = np.array([float(r["norm_u"]) for r in rows])
    delta_x = np.array([float(r["delta_x"]) for r in rows])
    ok = np.isfinite(delta_x) & (delta_x > 0) & (norm_u > 0)
    for kind in colors:
        sel = ok & (kinds == kind)
        if sel.any():
            ax_r.scatter(
                norm_u[sel],
                delta_x[sel],
                s=14,
                alpha=0.6,
                color=colors[kind],
                edgecolors="none",
                label=KIND_LABELS.get(kind, kind),
            )
    if ok.any():
        both = np.concatenate([norm_u[ok], delta_x[ok]])
        lo, hi = float(both.min()) / 1.3, float(both.max()) * 1.3
        ax_r.plot([lo, hi], [lo, hi], "--", color="black", lw=0.9, label="Δ_x = ‖g_u‖")
        ax_r.fill_between(
            [lo, hi],
            [lo, lo],
            [lo, hi],
            color="#2ca02c",
            alpha=0.08,
            label="r_share > 0 (Δ_x < ‖g_u‖)",
        )
        if (inside & ok).any():
            ax_r.scatter(
                norm_u[inside & ok],
                delta_x[inside & ok],
                s=60,
                facecolors="none",
                edgecolors="black",
                lw=1.1,
                label="inside r_share",
            )
        ax_r.set_xscale("log")
        ax_r.set_yscale("log")
        ax_r.set_xlim(lo, hi)
        ax_r.set_ylim(lo, hi)
        for axis in (ax_r.xaxis, ax_r.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax_r.legend(fontsize=7, loc="best")
    else:
        ax_r.text(
            0.5, 0.5, "no Δ_x in the pair rows", ha="center", va="center", transform=ax_r.transAxes
        )
    ax_r.set_xlabel("‖g_u‖ (gradient norm of the receiving user)")
    ax_r.set_ylabel("Δ_x(u, v) = ‖E_q_u[∇l_v − ∇l_u]‖")
    ax_r.set_title(
        f"numerator of r_share: {summary['n_positive_radius']} of {summary['n_pairs']} pairs "
        "have Δ_x < ‖g_u‖",
        fontsize=9,
    )
    claim = data.get("claim")
    verdict = (
        f"; claim {claim['verdict']} over {claim.get('n_pairs', '?')} sampled pairs"
        if claim
        else ""
    )
    model = figure_model(data)
    trained = setting_label(str(data.get("setting", "pia")), model)
    fig.suptitle(
        f"T2.3: gradient transfer and the latent sharing radius ({trained})\n"
        f"(data: {data.get('source', '?')}{verdict})",
        fontsize=10,
    )
    png = save_png(fig, out_dir / "radius.png")
    csv = write_csv(
        out_dir / "radius.csv", RADIUS_COLUMNS, [[r.get(c) for c in RADIUS_COLUMNS] for r in rows]
    )
    js = write_json(
        out_dir / "radius.json",
        {
            "figure": "radius",
            "summary": summary,
            **{k: v for k, v in data.items() if k != "rows"},
            "model": model,
            "label": trained,
        },
    )
    return {"png": png, "csv": csv, "json": js, "summary": summary, "rows": rows}
