r"""The beta sweep of the beta-KL decomposition: both terms, W2 contraction, active units.

.. math::

    \mathbb E_{x,b}\,\mathrm{KL}(q(z\mid x_h)\,\|\,p) = I_q(X_h; Z) + \mathrm{KL}(q_h\,\|\,p)

Panels against the KL weight cap beta: (a) the closed-form mean KL and the two Monte
Carlo terms with their standard errors; (b) mean pairwise W2 between posteriors of
different users; (c) active units (:math:`\operatorname{Var}_x \mu_k > 0.01`) out of d.
The data are the ``sweep`` rows of ``radius.verify.beta_kl.run(ctx).details`` (same
users and masks for every beta), and the sweep checks' verdicts are written beside.

The model is the context's (``ctx.base_config.model``). Multi-VAE: beta is the cap of
its annealed KL weight (``beta_cap``). RecVAE weights user u's KL term by
:math:`\gamma\,|x_u|`, so the sweep point beta is the mean effective KL weight
:math:`\gamma\,\overline{|x_u|}` (``gamma = beta / mean_count``, see
``radius.verify.beta_kl``); the x axis says which, and the CSV carries ``gamma``.
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

__all__ = ["BETA_COLUMNS", "collect_beta", "draw_beta"]

BETA_COLUMNS = (
    "beta",
    "e_kl",
    "mutual_info",
    "mutual_info_se",
    "kl_aggregate",
    "kl_aggregate_se",
    "log_n",
    "mean_pairwise_w2",
    "active_units",
    "latent_dim",
)


def _columns(field: str) -> tuple[str, ...]:
    """CSV columns: ``BETA_COLUMNS``, plus the swept field when it is not beta itself."""
    return BETA_COLUMNS if field == "beta_cap" else (*BETA_COLUMNS, field)


def collect_beta(ctx: Any, *, betas: Sequence[float] | None = None) -> dict[str, Any]:
    """Run the beta-KL claim (its sweep models are cached) and keep the sweep rows."""
    from radius.verify import beta_kl

    kw = {} if betas is None else {"betas": tuple(betas)}
    res = beta_kl.run(ctx, **kw)
    field = str(res.details.get("kl_field", "beta_cap"))
    columns = _columns(field)
    missing = [c for c in columns if res.details["sweep"] and c not in res.details["sweep"][0]]
    if missing:
        raise KeyError(f"beta_kl details['sweep'] rows lack {missing}")
    return {
        "model": ctx.config("masking").model,
        "kl_field": field,
        "mean_count": res.details.get("mean_count"),
        "rows": [{c: row[c] for c in columns} for row in res.details["sweep"]],
        "checks": [
            {
                "name": c.name,
                "passed": c.passed,
                "outcome": c.label,
                "interval": None if c.interval is None else c.interval.to_dict(),
                "measured": c.measured,
                "tolerance": c.tolerance,
            }
            for c in res.checks
            if c.name.startswith("sweep_")
        ],
        "method": res.method,
        "source": "radius.verify.beta_kl.run(ctx).details['sweep']",
        "context": res.context,
    }


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
    # the check's own outcome word (HOLDS / CONTRADICTED / INCONCLUSIVE for empirical checks)
    verdict = {
        c["name"]: c.get("outcome") or ("PASS" if c["passed"] else "FAIL")
        for c in data.get("checks", [])
    }

    def tag(name: str) -> str:
        return f" [{verdict[name]}]" if name in verdict else ""

    fig, (ax_kl, ax_w2, ax_au) = new_figure(14.0, 4.2, ncols=3)
    ax_kl.plot(b, col["e_kl"], "-o", color="black", ms=4, label="E KL(q(z|x_h) || p), closed form")
    ax_kl.errorbar(
        b,
        col["mutual_info"],
        yerr=2 * col["mutual_info_se"],
        fmt="-s",
        ms=4,
        capsize=3,
        color="#1f77b4",
        label="I_q(X_h; Z) ± 2 s.e.",
    )
    ax_kl.errorbar(
        b,
        col["kl_aggregate"],
        yerr=2 * col["kl_aggregate_se"],
        fmt="-^",
        ms=4,
        capsize=3,
        color="#d62728",
        label="KL(q_h || p) ± 2 s.e.",
    )
    ax_kl.plot(
        b, col["mutual_info"] + col["kl_aggregate"], ":", color="#7f7f7f", label="I + KL(q_h || p)"
    )
    ax_kl.set_ylabel("nats")
    terms = np.concatenate([col["e_kl"], col["mutual_info"], col["kl_aggregate"]])
    if np.all(terms > 0) and terms.max() / terms.min() > 30:
        ax_kl.set_yscale("log")  # beta = 0 leaves the KL terms orders of magnitude larger
    what = "KL to N(0, I)" if gamma else "prior term"
    ax_kl.set_title(
        f"decomposition of the {what} (I ≤ log N = {float(np.median(col['log_n'])):.2f})\n"
        f"I falls{tag('sweep_mi_falls')}, KL(q_h || p) falls{tag('sweep_kl_aggregate_falls')}",
        fontsize=10,
    )
    ax_kl.legend(fontsize=7)
    ax_w2.plot(b, col["mean_pairwise_w2"], "-o", color="#2ca02c", ms=4)
    ax_w2.set_ylabel("mean pairwise W2 (different users)")
    ax_w2.set_title("posterior spread" + tag("sweep_w2_contracts"), fontsize=10)
    ax_au.plot(b, col["active_units"], "-o", color="#9467bd", ms=4, label="active units")
    ax_au.axhline(
        float(col["latent_dim"].max()), color="#9467bd", lw=0.7, ls="--", label="latent dimension d"
    )
    ax_au.set_ylabel("active units (Var_x μ_k > 0.01)")
    ax_au.set_ylim(0, float(col["latent_dim"].max()) * 1.08)
    ax_au.set_title("posterior collapse" + tag("sweep_active_units_drop"), fontsize=10)
    ax_au.legend(fontsize=7)
    positive = b[b > 0]
    for ax in (ax_kl, ax_w2, ax_au):
        if positive.size and b.min() == 0:
            ax.set_xscale("symlog", linthresh=float(positive.min()))
        elif positive.size == b.size and b.max() / b.min() > 20:
            ax.set_xscale("log")
        ax.set_xticks(b, [f"{v:g}" for v in b])
        ax.minorticks_off()
        ax.set_xlabel(
            "β = γ · mean |x_u| (mean effective KL weight)" if gamma else "β (KL weight cap)"
        )
    title = f"β sweep of the {model_label(model)} masking model: E KL = I_q(X_h; Z) + KL(q_h || p)"
    if gamma:
        n_bar = data.get("mean_count")
        if n_bar is None and "gamma" in rows[-1] and float(rows[-1]["gamma"]) > 0:
            n_bar = float(rows[-1]["beta"]) / float(rows[-1]["gamma"])
        per = f"γ = β / {float(n_bar):.4g} (mean |x_u|)" if n_bar else "γ swept"
        if all("gamma" in r for r in rows):
            per += f", γ from {float(rows[0]['gamma']):.3g} to {float(rows[-1]['gamma']):.3g}"
        title += f", p = N(0, I)\nKL weight of user u is γ · |x_u|; {per}"
    fig.suptitle(title, fontsize=11)
    png = save_png(fig, out_dir / "beta.png")
    csv = write_csv(out_dir / "beta.csv", columns, [[r[c] for c in columns] for r in rows])
    js = write_json(
        out_dir / "beta.json",
        {
            "figure": "beta",
            **{k: v for k, v in data.items() if k != "rows"},
            "model": model,
            "kl_field": field,
            "x_axis": (
                "beta = gamma x mean |x_u|, the mean effective per-user KL weight"
                if gamma
                else "beta = beta_cap, the cap of the annealed KL weight"
            ),
        },
    )
    return {"png": png, "csv": csv, "json": js, "header": list(columns), "rows": rows}
