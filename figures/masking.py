r"""Masking laws against the keep rate rho (T2.6): exact, bound and Monte Carlo.

Panels (a) and (b): for a neighbour pair (u's most Jaccard-similar user among a
candidate pool) and a distant pair (a uniform random pair), the probability that
masking contracts the pair at least as much as a uniform contraction by rho would,

.. math::

    P(D \le \rho d) = P(D \le \mathbb E D - t), \qquad t = 2\rho(1-\rho)s,

exact (convolution of the two binomials of T2.6), Hoeffding
:math:`e^{-2t^2/(d+s)}` and Chernoff-Hoeffding (kl) bounds, and Monte Carlo with masks
drawn on the actual item sets (Clopper-Pearson interval). Shared items make this
probability small for neighbours (large s): masking pushes them apart relative to
the uniform contraction, while a distant pair (s ~ 0) sits near 1/2.

Panel (c): the rank-flip probability :math:`P(D_{uw} \le D_{uv})` of a real triple
(u, near neighbour v, competing farther user w), exact, Hoeffding bound and Monte
Carlo, plus the mean over all sampled triples (exact and bound).

The laws are those of the masks on the training data's item sets: no model enters, so
the figure is the same for Multi-VAE and RecVAE (the context's model is recorded in the
JSON all the same).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radius.analysis import masking as mk
from radius.figures.common import figure_model, new_figure, save_png, write_csv, write_json

__all__ = ["DEFAULT_RHOS", "collect_masking", "draw_masking"]

DEFAULT_RHOS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
PANELS = ("neighbour pair", "distant pair", "rank flip")
_FLOOR = 1e-12  # lowest y of the log axis (the data files keep the raw values)
MODEL_DEPENDENCE = (
    "none: exact laws, bounds and Monte Carlo of the masks on the training data's item "
    "sets; the same figure for every model"
)


def _median_index(values: np.ndarray) -> int:
    """Index of the element closest to the median (first on ties)."""
    return int(np.argmin(np.abs(values - np.median(values))))


def _pair_rows(
    name: str,
    users: tuple[int, int],
    d: int,
    s: int,
    rhos: np.ndarray,
    sims: np.ndarray,
    confidence: float,
) -> list[dict[str, Any]]:
    rows = []
    for r, rho in enumerate(rhos):
        t = mk.shared_flip_rate(rho) * s
        mean = mk.pair_mean(d, s, rho)
        k = int(mk.tail_threshold(mean, t, side="lower"))
        exact = float(mk.pair_tail(d, s, rho, t, side="lower")[0])
        hoef = float(mk.pair_tail_bound(d, s, rho, t, side="lower", kind="hoeffding"))
        kl = float(mk.pair_tail_bound(d, s, rho, t, side="lower", kind="kl"))
        hits = int((sims[r] <= k).sum())
        lo, hi = mk.clopper_pearson(np.array([hits]), len(sims[r]), confidence=confidence)
        rows.append(
            {
                "panel": name,
                "users": list(users),
                "d": d,
                "s": s,
                "rho": float(rho),
                "threshold": k,
                "exact": exact,
                "bound_hoeffding": hoef,
                "bound_kl": kl,
                "mc": hits / len(sims[r]),
                "mc_lo": float(lo[0]),
                "mc_hi": float(hi[0]),
                "n_mc": int(len(sims[r])),
            }
        )
    return rows


def collect_masking(
    ctx: Any,
    *,
    rhos: Sequence[float] = DEFAULT_RHOS,
    n_candidates: int = 1000,
    n_cases: int = 200,
    n_mc: int | None = None,
    neighbour_quantile: float = 0.9,
    seed: int | None = None,
) -> dict[str, Any]:
    """Exact laws, bounds and Monte Carlo on real pairs and triples of training users.

    Parameters
    ----------
    rhos : keep rates.
    n_candidates : candidate pool of the near-neighbour search.
    n_cases : anchors sampled for pairs and triples.
    neighbour_quantile : the neighbour pair drawn is the near pair closest to this
        quantile of the overlap s (0.9: many shared items, not the extreme); the
        distant pair is the random pair closest to the median Jaccard, the triple the
        one closest to the median flip probability at rho = 0.5.
    n_mc : Monte Carlo draws (default ``ctx.options.n_mc``).
    """
    seed = ctx.options.seed if seed is None else seed
    n_mc = ctx.options.n_mc if n_mc is None else n_mc
    conf = ctx.options.confidence
    x = ctx.dataset.train
    rhos_a = np.asarray(rhos, dtype=np.float64)
    if not 0.0 <= neighbour_quantile <= 1.0:
        raise ValueError(f"neighbour_quantile must be in [0, 1], got {neighbour_quantile}")
    if rhos_a.ndim != 1 or rhos_a.size < 2:
        raise ValueError(f"rhos must be a 1-d sequence of >= 2 keep rates, got {rhos!r}")
    rng = np.random.default_rng(seed)
    rows_n = np.diff(x.indptr)

    def pick(u: np.ndarray, v: np.ndarray, q: float, by: str) -> tuple[int, int, int, int]:
        d, s = mk.pair_counts(x, u, v)
        key = s.astype(np.float64) if by == "overlap" else s / np.maximum(d + s, 1)
        i = int(np.argmin(np.abs(key - np.quantile(key, q))))
        return int(u[i]), int(v[i]), int(d[i]), int(s[i])

    u, v = mk.sample_near_pairs(x, n_cases, n_candidates=n_candidates, seed=rng)
    near = pick(u, v, neighbour_quantile, "overlap")
    u, v = mk.sample_random_pairs(x, n_cases, seed=rng)
    far = pick(u, v, 0.5, "jaccard")
    pairs = np.array([near[:2], far[:2]], dtype=np.int64)
    sims = mk.simulate_pair_distance(
        mk.pair_entries(x, pairs[:, 0], pairs[:, 1]), rhos_a, n_mc, seed=rng
    )  # (R, n_mc, 2)
    rows = _pair_rows(PANELS[0], near[:2], near[2], near[3], rhos_a, sims[:, :, 0], conf)
    rows += _pair_rows(PANELS[1], far[:2], far[2], far[3], rhos_a, sims[:, :, 1], conf)

    tu, tv, tw = mk.sample_triples(x, n_cases, far="next", n_candidates=n_candidates, seed=rng)
    if tu.size == 0:
        raise ValueError("no triple (u, near v, farther w) found in the training users")
    counts = mk.triple_pattern_counts(x, tu, tv, tw)  # (K, 7)
    flips = np.stack([mk.triple_flip_prob(counts, r) for r in rhos_a])  # (R, K)
    bounds = np.stack([mk.triple_flip_bound(counts, r) for r in rhos_a])  # (R, K)
    mid = int(np.argmin(np.abs(rhos_a - 0.5)))
    i = _median_index(flips[mid])
    rep = (int(tu[i]), int(tv[i]), int(tw[i]))
    deltas = mk.simulate_triple_delta(
        mk.triple_entries(x, tu[i : i + 1], tv[i : i + 1], tw[i : i + 1]), rhos_a, n_mc, seed=rng
    )[:, :, 0]  # (R, n_mc)
    d_uv, s_uv, d_uw, s_uw = (int(a[i]) for a in mk.triple_pair_counts(counts))
    for r, rho in enumerate(rhos_a):
        hits = int((deltas[r] <= 0).sum())
        lo, hi = mk.clopper_pearson(np.array([hits]), n_mc, confidence=conf)
        rows.append(
            {
                "panel": PANELS[2],
                "users": list(rep),
                "d": d_uv,
                "s": s_uv,
                "rho": float(rho),
                "threshold": 0,
                "exact": float(flips[r, i]),
                "bound_hoeffding": float(bounds[r, i]),
                "bound_kl": float("nan"),
                "mc": hits / n_mc,
                "mc_lo": float(lo[0]),
                "mc_hi": float(hi[0]),
                "n_mc": n_mc,
                "mean_exact_all_triples": float(flips[r].mean()),
                "mean_bound_all_triples": float(bounds[r].mean()),
            }
        )
    return {
        "model": ctx.base_config.model,
        "model_dependence": MODEL_DEPENDENCE,
        "rows": rows,
        "rhos": rhos_a.tolist(),
        "n_mc": n_mc,
        "confidence": conf,
        "cases": {
            "neighbour pair": {
                "u": near[0],
                "v": near[1],
                "d": near[2],
                "s": near[3],
                "n_u": int(rows_n[near[0]]),
                "n_v": int(rows_n[near[1]]),
            },
            "distant pair": {
                "u": far[0],
                "v": far[1],
                "d": far[2],
                "s": far[3],
                "n_u": int(rows_n[far[0]]),
                "n_v": int(rows_n[far[1]]),
            },
            "rank flip": {
                "u": rep[0],
                "v": rep[1],
                "w": rep[2],
                "d_uv": d_uv,
                "s_uv": s_uv,
                "d_uw": d_uw,
                "s_uw": s_uw,
                "n_triples": int(tu.size),
            },
        },
        "selection": (
            f"{n_cases} anchors among the training users (seed {seed}); neighbour: each "
            f"anchor's most Jaccard-similar user among {n_candidates} candidates; distant: "
            f"uniform random pairs; drawn: the near pair closest to the {neighbour_quantile:g} "
            "quantile of the overlap s and the random pair closest to the median Jaccard. "
            "Triples: "
            "v the nearest, w the next-nearest user with d_uw > d_uv; the triple closest to "
            "the median flip probability at rho = 0.5 is drawn, the mean over all triples "
            "beside it."
        ),
        "events": {
            "pair": "P(D <= rho d), i.e. D <= E D - t with t = 2 rho (1 - rho) s",
            "rank flip": "P(D_uw <= D_uv) with one mask per user",
        },
        "context": ctx.describe(),
    }


def draw_masking(data: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Three panels against rho; writes ``masking.png``, ``masking.csv``, ``masking.json``."""
    out_dir = Path(out_dir)
    rows = data["rows"]
    fig, axes = new_figure(14.0, 4.4, ncols=3)
    for ax, panel in zip(axes, PANELS):
        sub = [r for r in rows if r["panel"] == panel]
        rho = np.array([r["rho"] for r in sub])
        col = {
            k: np.array([float(r.get(k, np.nan)) for r in sub])
            for k in ("exact", "bound_hoeffding", "bound_kl", "mc", "mc_lo", "mc_hi")
        }
        curves = [
            ("exact", "-o", "black", "exact law"),
            ("bound_hoeffding", "--", "#d62728", "Hoeffding bound"),
        ]
        if panel != "rank flip":
            curves.append(("bound_kl", ":", "#ff7f0e", "Chernoff-Hoeffding (kl) bound"))
        else:
            n_tr = data["cases"]["rank flip"]["n_triples"]
            for k in ("mean_exact_all_triples", "mean_bound_all_triples"):
                col[k] = np.array([float(r[k]) for r in sub])
            curves += [
                ("mean_exact_all_triples", "-", "#7f7f7f", f"exact, mean of {n_tr} triples"),
                ("mean_bound_all_triples", "-.", "#7f7f7f", "bound, mean of the triples"),
            ]
        for key, style, color, label in curves:
            # zeros (e.g. no flip at rho = 1) have no logarithm: left out of the curve
            y = np.where(col[key] > 0, col[key], np.nan)
            ax.plot(rho, y, style, color=color, ms=4, label=label)
        pos = col["mc"] > 0
        err = np.stack([col["mc"] - col["mc_lo"], col["mc_hi"] - col["mc"]]).clip(min=0)
        ax.errorbar(
            rho[pos],
            col["mc"][pos],
            yerr=err[:, pos],
            fmt="s",
            color="#1f77b4",
            ms=3,
            capsize=2,
            label=f"Monte Carlo ({data['n_mc']} masks, {100 * data['confidence']:g}% CP)",
        )
        if (~pos).any():
            ax.plot(
                rho[~pos],
                col["mc_hi"][~pos],
                "v",
                color="#1f77b4",
                ms=5,
                label="Monte Carlo 0 hits: CP upper limit",
            )
        shown = np.concatenate(
            [col[k][np.isfinite(col[k]) & (col[k] > 0)] for k, *_ in curves]
            + [col["mc_lo"][pos], col["mc_hi"][~pos]]
        )
        ax.set_yscale("log")
        low = max(float(shown.min()) / 3 if shown.size else 1e-3, _FLOOR)
        ax.set_ylim(bottom=min(low, 0.3), top=1.5)
        ax.set_xlabel("keep rate ρ")
        case = data["cases"][panel]
        if panel == "rank flip":
            ax.set_ylabel("P(D_uw ≤ D_uv)")
            ax.set_title(
                f"rank flip of a real triple\n(d_uv={case['d_uv']}, s_uv={case['s_uv']}; "
                f"d_uw={case['d_uw']}, s_uw={case['s_uw']})",
                fontsize=10,
            )
        else:
            ax.set_ylabel("P(D ≤ ρ d)  (masked ≤ uniform contraction)")
            ax.set_title(f"{panel}: d={case['d']}, s={case['s']}", fontsize=10)
        ax.legend(fontsize=7, loc="best")
    fig.suptitle(
        "T2.6: masked distances against the keep rate (exact, bound, Monte Carlo; "
        "masks on the training data, no model involved)",
        fontsize=11,
    )
    png = save_png(fig, out_dir / "masking.png")
    header = [
        "panel",
        "rho",
        "d",
        "s",
        "threshold",
        "exact",
        "bound_hoeffding",
        "bound_kl",
        "mc",
        "mc_lo",
        "mc_hi",
        "n_mc",
        "mean_exact_all_triples",
        "mean_bound_all_triples",
    ]
    csv = write_csv(
        out_dir / "masking.csv",
        header,
        [[r.get(h, float("nan")) for h in header] for r in rows],
    )
    js = write_json(
        out_dir / "masking.json",
        {
            "figure": "masking",
            **{k: v for k, v in data.items() if k != "rows"},
            "model": figure_model(data),
        },
    )
    return {"png": png, "csv": csv, "json": js, "header": header, "rows": rows}
