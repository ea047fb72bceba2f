r"""The paper's experiments at the scale these machines allow: the setting ablation.

The ablation trains Multi-VAE (or RecVAE) in the three settings of the paper's
Section 4 (clean input, Bernoulli masking, masking + PIA; ``radius.config.SETTINGS``)
for seeds :math:`0..S-1` and evaluates each model on the held-out test users
(strong generalisation: rank from :math:`\mu_\phi` of the clean fold-in). Reported per
setting and per interaction-count cohort: the mean and the sample standard deviation
over seeds of nDCG@100, Recall@20 and Recall@50.

Direction statements (the paper's, checked here rather than assumed):

* ordering ``clean < masking < pia`` on the mean nDCG@100, with each step's paired
  difference :math:`\Delta_s = m_{\text{higher}, s} - m_{\text{lower}, s}` (same seed)
  summarised by its mean, standard deviation, standard error
  :math:`\mathrm{sd}/\sqrt S` and the number of seeds on which it is positive;
* the PIA gain per cohort :math:`g_c = \overline{m_{\text{pia}, c} - m_{\text{masking}, c}}`
  and whether it is largest at both cohort ends: the first and last non-empty cohorts
  both have a larger mean gain than every cohort between them.

Models go through ``radius.train.get_model`` (content-keyed cache), so a rerun only
evaluates.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radius.config import SETTINGS, TrainConfig, setting_config
from radius.data.dataset import COHORTS, Dataset, cohort_of
from radius.errors import RadiusError

__all__ = [
    "ABLATION_SETTINGS",
    "ABLATION_METRICS",
    "PAPER_ABLATION",
    "load_dataset",
    "ablation",
    "format_ablation",
    "run_experiment",
]

ABLATION_SETTINGS: tuple[str, ...] = ("clean", "masking", "pia")
ABLATION_METRICS: tuple[str, ...] = ("ndcg@100", "recall@20", "recall@50")

# The paper's ML-20M ablation (nDCG@100), for context only: the synthetic default is
# not ML-20M, so only the directions are comparable, not the values.
PAPER_ABLATION: dict[str, dict[str, float]] = {
    "ndcg@100": {"clean": 0.409, "masking": 0.426, "pia": 0.437},
}


def load_dataset(spec: str) -> Dataset:
    """The dataset named by a CLI ``--data`` value (``default``, a folder or a raw file)."""
    from radius.data.loaders import load_any

    return load_any(spec or "default")


def _stats(values: Sequence[float]) -> dict[str, Any]:
    """Mean, sample std (ddof 1; NaN for one value), standard error, the values."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    n = int(v.size)
    mean = float(v.mean()) if n else float("nan")
    std = float(v.std(ddof=1)) if n > 1 else float("nan")
    se = std / np.sqrt(n) if n > 1 else float("nan")
    return {"mean": mean, "std": std, "se": float(se), "n": n, "values": v.tolist()}


def _evaluate_run(
    dataset: Dataset, config: TrainConfig, cache_dir: str | os.PathLike | None, progress: bool
) -> dict[str, Any]:
    from radius.metrics import evaluate
    from radius.train import get_model

    model = get_model(dataset, config, cache_dir=cache_dir, progress=progress)
    model = model.cpu().eval()
    res = evaluate(model, dataset.test_tr, dataset.test_te)
    return {
        "means": res.means,
        "cohorts": res.cohorts,
        "n_users": res.n_users,
        "_per_user": res.per_user,  # (n_test,) arrays; dropped from the JSON
    }


def _user_paired(
    lo: list[dict[str, Any]], hi: list[dict[str, Any]], metric: str, sel: np.ndarray | None = None
) -> dict[str, Any]:
    """Per-user difference hi - lo averaged over seeds; its mean and standard error over users.

    The standard error reflects the sampling of test users (the seeds' spread is
    reported separately); NaN when fewer than 2 users have the metric defined.
    """
    if not lo or "_per_user" not in lo[0]:
        return {"mean": float("nan"), "se": float("nan"), "n_users": 0}
    d = np.mean([b["_per_user"][metric] - a["_per_user"][metric] for a, b in zip(lo, hi)], axis=0)
    if sel is not None:
        d = d[sel]
    d = d[~np.isnan(d)]
    n = int(d.size)
    se = float(d.std(ddof=1) / np.sqrt(n)) if n > 1 else float("nan")
    return {"mean": float(d.mean()) if n else float("nan"), "se": se, "n_users": n}


def _ordering(
    runs: dict[str, list[dict[str, Any]]], metric: str, settings: Sequence[str]
) -> dict[str, Any]:
    """Is the mean of ``metric`` increasing along ``settings``? Paired per-seed steps."""
    steps = []
    for lo, hi in zip(settings[:-1], settings[1:]):
        diffs = [b["means"][metric] - a["means"][metric] for a, b in zip(runs[lo], runs[hi])]
        st = _stats(diffs)
        users = _user_paired(runs[lo], runs[hi], metric)
        steps.append(
            {
                "lower": lo,
                "higher": hi,
                "diff_mean": st["mean"],
                "diff_std": st["std"],
                "diff_se": st["se"],
                "seeds_holding": int(np.sum(np.asarray(diffs) > 0)),
                "n_seeds": len(diffs),
                "holds": bool(st["mean"] > 0),
                "beyond_2se": bool(st["n"] > 1 and abs(st["mean"]) > 2 * st["se"]),
                "user_paired_mean": users["mean"],
                "user_paired_se": users["se"],
                "n_users": users["n_users"],
            }
        )
    return {
        "metric": metric,
        "order": " < ".join(settings),
        "holds": bool(steps) and all(s["holds"] for s in steps),
        "all_seeds": bool(steps) and all(s["seeds_holding"] == s["n_seeds"] for s in steps),
        "steps": steps,
    }


def _pia_gain(runs: dict[str, list[dict[str, Any]]], metric: str) -> dict[str, Any]:
    """Per-cohort gain of PIA over masking (paired by seed) and the 'both ends' statement."""
    per_cohort: dict[str, dict[str, Any]] = {}
    counts = runs["masking"][0].get("_counts")
    coh = None if counts is None else cohort_of(counts)  # (n_test,)
    for k, (label, _, _) in enumerate(COHORTS):
        users = runs["masking"][0]["cohorts"][label]["users"]
        diffs = [
            p["cohorts"][label][metric] - m["cohorts"][label][metric]
            for m, p in zip(runs["masking"], runs["pia"])
        ]
        base = _stats([m["cohorts"][label][metric] for m in runs["masking"]])["mean"]
        st = _stats(diffs)
        rel = st["mean"] / base if users and base and np.isfinite(base) else float("nan")
        paired = _user_paired(
            runs["masking"], runs["pia"], metric, None if coh is None else coh == k
        )
        per_cohort[label] = {
            "users": int(users),
            "gain_mean": st["mean"],
            "gain_std": st["std"],
            "gain_se": st["se"],
            "relative_gain": float(rel),
            "seeds_positive": int(np.sum(np.asarray(diffs) > 0)),
            "user_paired_se": paired["se"] if coh is not None else float("nan"),
        }
    present = [c for c, v in per_cohort.items() if v["users"] > 0 and np.isfinite(v["gain_mean"])]
    out: dict[str, Any] = {"metric": metric, "per_cohort": per_cohort, "cohorts_used": present}
    if len(present) < 3:
        out.update(
            largest_at_both_ends=None,
            reason=f"needs >= 3 non-empty cohorts to have two ends and a middle, got {present}",
        )
        return out
    gains = np.array([per_cohort[c]["gain_mean"] for c in present])
    middle_max = float(gains[1:-1].max())
    out.update(
        ends=[present[0], present[-1]],
        end_gains=[float(gains[0]), float(gains[-1])],
        middle_max_gain=middle_max,
        largest_at_both_ends=bool(gains[0] > middle_max and gains[-1] > middle_max),
        argmax=present[int(np.argmax(gains))],
        reason="the first and last non-empty cohorts must both beat every middle cohort",
    )
    return out


def ablation(
    dataset: Dataset,
    *,
    seeds: int = 3,
    model: str = "multvae",
    base_config: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    settings: Sequence[str] = ABLATION_SETTINGS,
) -> dict[str, Any]:
    """Train (or load) and evaluate every (setting, seed); summarise over seeds.

    Parameters
    ----------
    dataset : the prepared dataset (test users are evaluated).
    seeds : number of seeds, 0..seeds-1 (``TrainConfig.seed``).
    model : ``"multvae"`` or ``"recvae"``.
    base_config : config the settings start from (default ``TrainConfig()``).
    cache_dir : model cache (``get_model``); None uses ``default_cache_dir()``.
    settings : settings to compare, in the order the paper claims is increasing.

    Returns
    -------
    JSON-able dict: ``runs`` (per setting, per seed: means and cohort values),
    ``summary`` (setting -> metric -> mean/std/se/values), ``cohorts`` (setting ->
    cohort -> users and metric -> mean/std), ``ordering`` and ``pia_gain`` (the
    direction statements, see the module docstring), ``paper`` (reference values).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, (int, np.integer)):
        raise TypeError(f"seeds must be an int, got {type(seeds).__name__}")
    if seeds < 1:
        raise ValueError(f"seeds must be >= 1, got {seeds}")
    if model not in ("multvae", "recvae"):
        raise ValueError(f"model must be 'multvae' or 'recvae', got {model!r}")
    unknown = [s for s in settings if s not in SETTINGS]
    if unknown or len(settings) < 2:
        raise ValueError(f"settings must be >= 2 names from {sorted(SETTINGS)}, got {settings}")
    base = (base_config or TrainConfig()).replace(model=model)
    t0 = time.perf_counter()
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in settings}
    for setting in settings:
        for seed in range(int(seeds)):
            config = setting_config(setting, base, seed=seed)
            rec = _evaluate_run(dataset, config, cache_dir, progress)
            rec.update(setting=setting, seed=seed, _counts=dataset.counts("test"))
            runs[setting].append(rec)
    summary = {
        s: {m: _stats([r["means"][m] for r in runs[s]]) for m in ABLATION_METRICS} for s in settings
    }
    cohorts: dict[str, dict[str, Any]] = {}
    for s in settings:
        cohorts[s] = {}
        for label, _, _ in COHORTS:
            entry: dict[str, Any] = {"users": int(runs[s][0]["cohorts"][label]["users"])}
            for m in ABLATION_METRICS:
                st = _stats([r["cohorts"][label][m] for r in runs[s]])
                entry[m] = {"mean": st["mean"], "std": st["std"], "n": st["n"]}
            cohorts[s][label] = entry
    out: dict[str, Any] = {
        "experiment": "ablation",
        "data": dataset.summary(),
        "model": model,
        "seeds": list(range(int(seeds))),
        "settings": list(settings),
        "setting_overrides": {s: SETTINGS[s] for s in settings},
        "base_config": base.key_dict(),
        "metrics": list(ABLATION_METRICS),
        "test_users": runs[settings[0]][0]["n_users"],
        "runs": {
            s: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]
            for s, rs in runs.items()
        },
        "summary": summary,
        "cohorts": cohorts,
        "ordering": _ordering(runs, "ndcg@100", settings),
        "paper": PAPER_ABLATION,
    }
    if "masking" in runs and "pia" in runs:
        out["pia_gain"] = _pia_gain(runs, "ndcg@100")
    out["seconds"] = time.perf_counter() - t0
    return out


def _pm(mean: float, std: float) -> str:
    if not np.isfinite(mean):
        return "n/a"
    return f"{mean:.4f} ± {std:.4f}" if np.isfinite(std) else f"{mean:.4f}"


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(header)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    return "\n".join(lines)


def format_ablation(result: dict[str, Any]) -> str:
    """Readable tables of an ``ablation`` result: settings x metrics, cohorts, directions."""
    settings = result["settings"]
    n = len(result["seeds"])
    parts = [
        f"ablation of {result['model']} on {result['data']['name']} "
        f"[{result['data']['hash']}], {n} seed(s), {result['test_users']} test users "
        "(mean ± sample std over seeds)",
        "",
        _table(
            [
                [
                    s,
                    *(
                        _pm(result["summary"][s][m]["mean"], result["summary"][s][m]["std"])
                        for m in result["metrics"]
                    ),
                ]
                for s in settings
            ],
            ["setting", *result["metrics"]],
        ),
        "",
        "nDCG@100 per interaction-count cohort:",
    ]
    gain = result.get("pia_gain")
    rows = []
    for label, _, _ in COHORTS:
        row = [label, str(result["cohorts"][settings[0]][label]["users"])]
        row += [
            _pm(
                result["cohorts"][s][label]["ndcg@100"]["mean"],
                result["cohorts"][s][label]["ndcg@100"]["std"],
            )
            for s in settings
        ]
        if gain is not None:
            g = gain["per_cohort"][label]
            row.append(_pm(g["gain_mean"], g["gain_std"]))
        rows.append(row)
    header = ["cohort", "users", *settings] + (["pia - masking"] if gain is not None else [])
    parts.append(_table(rows, header))
    o = result["ordering"]
    parts += [
        "",
        f"ordering {o['order']} on {o['metric']}: {'HOLDS' if o['holds'] else 'DOES NOT HOLD'}",
    ]
    for s in o["steps"]:
        parts.append(
            f"  {s['higher']} - {s['lower']}: {_pm(s['diff_mean'], s['diff_std'])} "
            f"(positive on {s['seeds_holding']}/{s['n_seeds']} seeds"
            f"{', beyond 2 s.e.' if s['beyond_2se'] else ', within 2 s.e.'}); "
            f"per test user, seed-averaged: {s['user_paired_mean']:+.4f} "
            f"± {s['user_paired_se']:.4f} s.e. over {s['n_users']} users"
        )
    if gain is not None:
        verdict = gain["largest_at_both_ends"]
        text = {True: "YES", False: "NO", None: "UNDEFINED"}[verdict]
        parts.append(f"PIA gain largest at both cohort ends: {text} ({gain['reason']})")
    ref = result["paper"]["ndcg@100"]
    parts.append(
        "paper (ML-20M, nDCG@100, for direction only): "
        + " < ".join(f"{s} {ref[s]:.3f}" for s in ("clean", "masking", "pia"))
    )
    return "\n".join(parts)


def run_experiment(args: argparse.Namespace) -> int:
    """``radius experiment ablation``: print the tables, write the JSON, return 0."""
    from radius.io import atomic_write_json
    from radius.train import default_cache_dir

    name = getattr(args, "name", "ablation") or "ablation"
    if name != "ablation":
        raise RadiusError(f"unknown experiment {name!r} (choose from ['ablation'])")
    ds = load_dataset(getattr(args, "data", "default") or "default")
    model = getattr(args, "model", None) or "multvae"
    seeds = int(getattr(args, "seeds", 3))
    if seeds < 1:
        raise RadiusError(f"--seeds must be >= 1, got {seeds}")
    # programmatic callers (tests) may pass base_config / cache_dir on the namespace
    cache = getattr(args, "cache_dir", None) or default_cache_dir()
    result = ablation(
        ds,
        seeds=seeds,
        model=model,
        base_config=getattr(args, "base_config", None),
        cache_dir=cache,
        progress=bool(getattr(args, "progress", True)),
    )
    if getattr(args, "command_line", None):
        result["command"] = args.command_line
    print(format_ablation(result))
    out = Path(getattr(args, "out", None) or Path("runs") / ds.name / f"ablation-{model}.json")
    atomic_write_json(out, result)
    print(f"\nJSON: {out}")
    return 0
