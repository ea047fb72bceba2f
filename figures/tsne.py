r"""t-SNE of latent means coloured by interaction-count cohort (T2.5's consequence).

T2.5 predicts that under clean input the latent space clusters by activity cohort,
and the paper shows PIA giving a smooth 5 -> 50 -> 350 transition instead. A t-SNE
picture alone is easy to over-read, so each panel carries numbers computed on the
latent means :math:`\mu_\phi(x_u)` themselves (not on the 2-D embedding):

* silhouette of the cohort labels (Euclidean, in :math:`[-1, 1]`; higher = cohorts
  more separated);
* kNN cohort purity: the mean over users of the fraction of the k nearest latent
  neighbours in the user's own cohort, beside its chance level
  :math:`\sum_c n_c (n_c - 1) / (n (n - 1))` (labels shuffled);
* neighbour activity correlation: Spearman correlation between :math:`\log n_u` and
  the mean :math:`\log n_v` of u's k nearest neighbours (high = activity varies smoothly
  across the latent space).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from radius.data.dataset import COHORTS, cohort_of
from radius.figures.common import (
    COHORT_COLORS,
    encode_mean,
    figure_model,
    model_label,
    new_figure,
    save_png,
    setting_label,
    write_csv,
    write_json,
)

__all__ = ["cohort_separation", "collect_tsne", "draw_tsne"]


def cohort_separation(
    mu: np.ndarray, labels: np.ndarray, *, k: int = 10, counts: np.ndarray | None = None
) -> dict[str, float]:
    """Silhouette, kNN purity (and its chance level) of ``labels`` on the points ``mu``.

    Parameters
    ----------
    mu : (n, d) points (latent means).
    labels : (n,) integer cohort labels.
    k : neighbours per point (capped at n - 1).
    counts : optional (n,) interaction counts for the neighbour activity correlation.

    Returns
    -------
    ``silhouette`` (NaN unless 2 <= #labels <= n - 1), ``knn_purity``,
    ``knn_purity_chance``, ``knn_log_count_spearman`` (NaN without counts), ``k``, ``n``.
    """
    from sklearn.metrics import silhouette_score
    from sklearn.neighbors import NearestNeighbors

    mu = np.asarray(mu, dtype=np.float64)
    labels = np.asarray(labels)
    if mu.ndim != 2:
        raise ValueError(f"mu must be 2-D (n, d), got shape {mu.shape}")
    n = mu.shape[0]
    if labels.shape != (n,):
        raise ValueError(f"labels must have shape ({n},), got {labels.shape}")
    if n < 3:
        raise ValueError(f"need at least 3 points, got {n}")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(k, n - 1)
    n_labels = len(np.unique(labels))
    sil = float(silhouette_score(mu, labels)) if 2 <= n_labels <= n - 1 else float("nan")
    nn = NearestNeighbors(n_neighbors=k + 1).fit(mu)
    _, idx = nn.kneighbors(mu)  # (n, k + 1), self first (ties aside)
    neigh = np.where(idx[:, :1] == np.arange(n)[:, None], idx[:, 1:], idx[:, :k])  # (n, k)
    purity = float((labels[neigh] == labels[:, None]).mean())
    sizes = np.unique(labels, return_counts=True)[1].astype(np.float64)
    chance = float((sizes * (sizes - 1)).sum() / (n * (n - 1)))
    corr = float("nan")
    if counts is not None:
        logc = np.log(np.asarray(counts, dtype=np.float64))
        if logc.shape != (n,):
            raise ValueError(f"counts must have shape ({n},), got {logc.shape}")
        if np.ptp(logc) > 0:
            corr = float(spearmanr(logc, logc[neigh].mean(axis=1)).statistic)
    return {
        "silhouette": sil,
        "knn_purity": purity,
        "knn_purity_chance": chance,
        "knn_log_count_spearman": corr,
        "k": int(k),
        "n": int(n),
    }


def collect_tsne(
    ctx: Any,
    *,
    settings: Sequence[str] = ("clean", "masking", "pia"),
    n_users: int = 1500,
    k: int = 10,
    perplexity: float = 30.0,
    max_iter: int = 1000,
    seed: int | None = None,
) -> dict[str, Any]:
    """Latent means of up to ``n_users`` test users per setting, their t-SNE and the numbers.

    Users (a seeded sample of the test users, clean fold-in) are the same in every panel.
    The models are the context's (``ctx.base_config.model``: Multi-VAE or RecVAE).
    """
    from sklearn.manifold import TSNE

    if n_users < 4:
        raise ValueError(f"n_users must be >= 4, got {n_users}")
    seed = ctx.options.seed if seed is None else seed
    ds = ctx.dataset
    rng = np.random.default_rng(seed)
    n_test = ds.test_tr.shape[0]
    users = np.sort(rng.choice(n_test, size=min(n_users, n_test), replace=False))
    counts = ds.counts("test")[users]
    labels = cohort_of(counts)
    x = ds.test_tr[users]
    perp = float(min(perplexity, (len(users) - 1) / 3.0))
    panels: dict[str, Any] = {}
    for setting in settings:
        mu, _ = encode_mean(ctx.model(setting), x)  # (n, d)
        emb = TSNE(
            n_components=2, perplexity=perp, init="pca", random_state=seed, max_iter=max_iter
        ).fit_transform(mu)  # (n, 2)
        panels[setting] = {
            "embedding": emb,
            "stats": cohort_separation(mu, labels, k=k, counts=counts),
        }
    return {
        "model": ctx.base_config.model,
        "users": users,
        "counts": counts,
        "cohorts": labels,
        "settings": list(settings),
        "panels": panels,
        "params": {"perplexity": perp, "max_iter": max_iter, "seed": seed, "k": k},
        "context": ctx.describe(),
    }


def draw_tsne(data: dict[str, Any], out_dir: str | os.PathLike) -> dict[str, Any]:
    """Draw the panels side by side; write ``tsne.png``, ``tsne.csv`` (points), ``tsne.json``."""
    out_dir = Path(out_dir)
    settings = data["settings"]
    labels = np.asarray(data["cohorts"])
    model = figure_model(data)
    fig, axes = new_figure(4.2 * len(settings), 4.6, ncols=len(settings))
    axes = np.atleast_1d(axes)
    rows = []
    for ax, setting in zip(axes, settings):
        panel = data["panels"][setting]
        emb = np.asarray(panel["embedding"])
        st = panel["stats"]
        for c, (name, _, _) in enumerate(COHORTS):
            sel = labels == c
            if sel.any():
                ax.scatter(
                    emb[sel, 0],
                    emb[sel, 1],
                    s=7,
                    alpha=0.8,
                    color=COHORT_COLORS[c],
                    edgecolors="none",
                    label=f"{name} ({int(sel.sum())})",
                )
        ax.set_title(
            f"{setting_label(setting, model)}\n"
            f"silhouette {st['silhouette']:+.3f}, kNN purity {st['knn_purity']:.2f} "
            f"(chance {st['knn_purity_chance']:.2f})\n"
            f"neighbour activity Spearman {st['knn_log_count_spearman']:+.2f}",
            fontsize=9,
        )
        ax.set_xlabel("t-SNE 1")
        ax.set_ylabel("t-SNE 2")
        ax.set_xticks([])
        ax.set_yticks([])
        for u, n, c, (e1, e2) in zip(data["users"], data["counts"], labels, emb):
            rows.append([setting, int(u), int(n), COHORTS[int(c)][0], float(e1), float(e2)])
    axes[0].legend(title="interactions", loc="best", fontsize=8, markerscale=2)
    fig.suptitle(
        f"t-SNE of {model_label(model)} latent means of {len(labels)} test users, "
        "coloured by activity cohort "
        "(numbers computed on the latent means)",
        fontsize=10,
    )
    png = save_png(fig, out_dir / "tsne.png")
    csv = write_csv(
        out_dir / "tsne.csv", ["setting", "user", "count", "cohort", "tsne_x", "tsne_y"], rows
    )
    stats = {s: data["panels"][s]["stats"] for s in settings}
    js = write_json(
        out_dir / "tsne.json",
        {
            "figure": "tsne",
            "model": model,
            "labels": {s: setting_label(s, model) for s in settings},
            "stats": stats,
            "cohort_sizes": {
                name: int((labels == c).sum()) for c, (name, _, _) in enumerate(COHORTS)
            },
            "params": data.get("params", {}),
            "context": data.get("context", {}),
        },
    )
    return {"png": png, "csv": csv, "json": js, "stats": stats}
