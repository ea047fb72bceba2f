r"""The beta sweep of the beta-KL decomposition: the terms, W2 and collapse by two rules.

.. math::

    \mathbb E_{x,b}\,\mathrm{KL}(q(z\mid x_h)\,\|\,p) = I_q(X_h; Z) + \mathrm{KL}(q_h\,\|\,p)

Panels against the KL weight beta (log axis), each point the mean over the training
seeds and the sampled users with its two-stage bootstrap interval (seeds, then users;
``details["per_beta"]`` of ``radius.verify.beta_kl.run``): (a) E KL (closed form) and
the two Monte Carlo terms; (b) the mean W2 from a user's posteriors to other users';
(c) units active by the information rule (:math:`I^G_k > 0.01` nats, which decides
collapse) and by Burda et al.'s variance rule (:math:`\operatorname{Var}_x\mu_k >
0.01`), the mean over seeds with the seeds' range. Each panel's title carries the
outcome of the check it illustrates (the statement check on E KL, the mechanism checks
on the terms, W2 and collapse).

The model is the context's (``ctx.base_config.model``). RecVAE weights user u's KL term
by :math:`\gamma\,|x_u|`, so its sweep point beta is the mean effective KL weight
:math:`\gamma\,\overline{|x_u|}` (``gamma = beta / mean_count``); the x axis says which,
and the CSV carries ``gamma``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radius.figures.common import (
    figure_model,
    model_label,
    new_figure,
    save_png,
    write_csv,
    write_json,
)

__all__ = ["BETA_COLUMNS", "TERMS", "collect_beta", "draw_beta"]

TERMS = ("e_kl", "mutual_info", "kl_aggregate", "w2")
BETA_COLUMNS: tuple[str, ...] = (
    "beta",
    *(f"{t}{s}" for t in TERMS for s in ("", "_low", "_high")),
    "informative_units_mean",
    "informative_units_min",
    "informative_units_max",
    "variance_units_mean",
    "variance_units_min",
    "variance_units_max",
    "log_n",
    "latent_dim",
    "seeds",
)
# check name -> the panel whose title carries its outcome
PANEL_CHECKS = {
    "terms": ("sweep_e_kl_falls", "sweep_mi_falls", "sweep_kl_aggregate_falls"),
    "w2": ("sweep_w2_contracts",),
    "units": ("collapse_at_large_beta",),
}


def _columns(field: str) -> tuple[str, ...]:
    """CSV columns: ``BETA_COLUMNS``, plus the swept field when it is not beta itself."""
    return BETA_COLUMNS if field == "beta_cap" else (*BETA_COLUMNS, field)


def _rows(details: dict[str, Any], field: str) -> list[dict[str, Any]]:
    """One row per beta from ``details["per_beta"]`` and the sweep rows."""
    out = []
    for key, band in details["per_beta"].items():
        beta = float(key)
        row: dict[str, Any] = {"beta": beta}
        for t in TERMS:
            row[t], row[f"{t}_low"], row[f"{t}_high"] = (
                band[t]["estimate"],
                band[t]["low"],
                band[t]["high"],
            )
        for name, src in (
            ("informative_units", "informative_units"),
            ("variance_units", "active_units"),
        ):
            v = np.asarray(band[src], dtype=np.float64)
            row[f"{name}_mean"], row[f"{name}_min"], row[f"{name}_max"] = (
                float(v.mean()),
                float(v.min()),
                float(v.max()),
            )
        sweep = [r for r in details["sweep_all_seeds"] if float(r["beta"]) == beta]
        row["log_n"] = float(sweep[0]["log_n"])
        row["latent_dim"] = int(sweep[0]["latent_dim"])
        row["seeds"] = len(sweep)
        if field != "beta_cap":
            row[field] = sweep[0].get(field)
        out.append(row)
    return sorted(out, key=lambda r: r["beta"])


def collect_beta(
    ctx: Any, *, betas: Sequence[float] | None = None, **sweep_options: Any
) -> dict[str, Any]:
    """Run the beta-KL claim (its sweep models are cached) and keep what the figure draws.

    ``sweep_options``: the claim's sweep options (``sweep_epochs``, ``sweep_users``,
    ``sweep_seeds``, ``sweep_start``, ...), passed through to ``beta_kl.run``."""
    from radius.verify import beta_kl

    kw = dict(sweep_options)
    if betas is not None:
        kw["betas"] = tuple(betas)
    res = beta_kl.run(ctx, **kw)
    if "per_beta" not in res.details:
        raise ValueError(
            "the beta sweep did not run: " + "; ".join(res.details.get("parts_not_run") or [])
        )
    field = str(res.details.get("kl_field") or "beta_cap")
    return {
        "model": ctx.config("masking").model,
        "kl_field": field,
        "mean_count": res.details.get("mean_count"),
        "rows": _rows(res.details, field),
        "collapse": res.details.get("collapse"),
        "sweep_options": res.details.get("sweep_options"),
        "checks": [
            {
                "name": c.name,
                "role": c.role,
                "outcome": c.label,
                "interval": None if c.interval is None else c.interval.to_dict(),
                "measured": c.measured,
                "tolerance": c.tolerance,
                "note": c.note,
            }
            for c in res.checks
            if c.name.startswith(("sweep_", "collapse_"))
        ],
        "verdict": res.verdict_text,
        "method": res.method,
        "source": "radius.verify.beta_kl.run(ctx).details['per_beta']",
        "context": res.context,
    }


def _band(ax, b, col, key, *, fmt, color, label) -> None:
    y, lo, hi = col[key], col[f"{key}_low"], col[f"{key}_high"]
    ax.plot(b, y, fmt, color=color, ms=4, label=label)
    ax.fill_between(b, lo, hi, color=color, alpha=0.2, lw=0)


def draw_beta(data: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Three panels against beta; writes ``beta.png``, ``beta.csv`` and ``beta.json``."""
    out_dir = Path(out_dir)
    rows = sorted(data["rows"], key=lambda r: r["beta"])
    if not rows:
        raise ValueError("no sweep rows to draw")
    model = figure_model(data)
    field = str(data.get("kl_field") or ("gamma" if model == "recvae" else "beta_cap"))
    columns = _columns(field) if all(field in r for r in rows) else BETA_COLUMNS
    gamma = field == "gamma"
    col = {c: np.array([float(r[c]) for r in rows]) for c in BETA_COLUMNS}
    b = col["beta"]
    label = {c["name"]: c["outcome"] for c in data.get("checks", [])}

    def tags(panel: str) -> str:
        return ", ".join(f"{n} {label[n]}" for n in PANEL_CHECKS[panel] if n in label)

    fig, (ax_kl, ax_w2, ax_au) = new_figure(15.0, 4.6, ncols=3)
    _band(ax_kl, b, col, "e_kl", fmt="-o", color="black", label="E KL(q(z|x_h) || p)")
    _band(ax_kl, b, col, "mutual_info", fmt="-s", color="#1f77b4", label="I_q(X_h; Z)")
    _band(ax_kl, b, col, "kl_aggregate", fmt="-^", color="#d62728", label="KL(q_h || p)")
    ax_kl.plot(b, col["log_n"], ":", color="#1f77b4", lw=0.8, label="log N (cap of I)")
    ax_kl.set_ylabel("nats (mean over seeds and users, 95% band)")
    lows = np.concatenate([col[f"{t}_low"] for t in ("e_kl", "mutual_info", "kl_aggregate")])
    highs = np.concatenate([col[f"{t}_high"] for t in ("e_kl", "mutual_info", "kl_aggregate")])
    if np.all(lows > 0) and highs.max() / lows.min() > 30:
        ax_kl.set_yscale("log")  # the terms span orders of magnitude over the sweep
    what = "KL to N(0, I)" if gamma else "prior term"
    ax_kl.set_title(f"decomposition of the {what}\n{tags('terms')}", fontsize=8)
    ax_kl.legend(fontsize=7)
    _band(ax_w2, b, col, "w2", fmt="-o", color="#2ca02c", label="mean W2")
    ax_w2.set_ylabel("mean W2 from a user's posteriors to other users'")
    ax_w2.set_title(f"posterior spread\n{tags('w2')}", fontsize=8)
    d = float(col["latent_dim"].max())
    for key, color, text in (
        ("informative_units", "#9467bd", "informative: I^G_k > 0.01 nats (decides)"),
        ("variance_units", "#8c564b", "variance rule: Var_x μ_k > 0.01 (Burda)"),
    ):
        mean = col[f"{key}_mean"]
        err = np.stack([mean - col[f"{key}_min"], col[f"{key}_max"] - mean])
        ax_au.errorbar(b, mean, yerr=err, fmt="-o", ms=4, capsize=3, color=color, label=text)
    ax_au.axhline(d, color="#7f7f7f", lw=0.7, ls="--", label="latent dimension d")
    ax_au.set_ylabel("active units (mean over seeds; bars: seed range)")
    ax_au.set_ylim(0, d * 1.08)
    ax_au.set_title(f"posterior collapse, two rules\n{tags('units')}", fontsize=8)
    ax_au.legend(fontsize=7)
    for ax in (ax_kl, ax_w2, ax_au):
        positive = b[b > 0]
        if positive.size == b.size and b.max() / b.min() > 20:
            ax.set_xscale("log")
        elif positive.size and b.min() == 0:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        ax.set_xticks(b, [f"{v:g}" for v in b])
        ax.minorticks_off()
        ax.set_xlabel("β = γ · mean |x_u| (mean effective KL weight)" if gamma else "β (KL weight)")
    title = f"β sweep of the {model_label(model)} masking model: E KL = I_q(X_h; Z) + KL(q_h || p)"
    opts = data.get("sweep_options") or {}
    if opts:
        title += (
            f"\nsweep: {opts.get('start')}, {opts.get('epochs')} epochs, "
            f"{opts.get('users') or 'all'} users, {opts.get('seeds')} seed(s) per β"
        )
    if gamma:
        n_bar = data.get("mean_count")
        title += f"; KL weight of user u is γ · |x_u|, γ = β / {float(n_bar):.4g}, p = N(0, I)"
    fig.suptitle(title, fontsize=10)
    png = save_png(fig, out_dir / "beta.png")
    csv = write_csv(out_dir / "beta.csv", columns, [[r[c] for c in columns] for r in rows])
    js = write_json(
        out_dir / "beta.json",
        {
            "figure": "beta",
            **{k: v for k, v in data.items() if k != "rows"},
            "rows": rows,
            "model": model,
            "kl_field": field,
            "x_axis": (
                "beta = gamma x mean |x_u|, the mean effective per-user KL weight"
                if gamma
                else "beta = beta_cap, the KL weight"
            ),
        },
    )
    return {"png": png, "csv": csv, "json": js, "header": list(columns), "rows": rows}
