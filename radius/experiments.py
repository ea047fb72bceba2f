r"""The paper's experiments at the scale these machines allow: the setting ablation.

The ablation trains Multi-VAE (or RecVAE) in the three settings of the paper's
Section 4 (clean input, Bernoulli masking, masking + PIA; ``radius.training.config.SETTINGS``)
for seeds :math:`0..S-1` and evaluates each model on the held-out test users
(strong generalisation: rank from :math:`\mu_\phi` of the clean fold-in). Reported per
setting and per interaction-count cohort: the mean and the sample standard deviation
over seeds of nDCG@100, Recall@20 and Recall@50.

PIA's knobs are chosen on validation users, never on test users
----------------------------------------------------------------
:math:`\lambda_A` and the anchor initialisation (``TUNED_KNOBS``) are picked from a grid
(``DEFAULT_LAMBDA_GRID`` x ``DEFAULT_INIT_GRID``) by the validation nDCG@100 of the PIA
model, averaged over the grid seeds (seed 0 by default; ``grid_seeds`` more). Rule: the
largest mean validation nDCG@100; ties (equal to 1e-9) go to the smaller
:math:`\lambda_A`, then the smaller initial scale. Seed 0 alone keeps the grid at
:math:`|\text{grid}|` trainings instead of :math:`|\text{grid}| \cdot S`, and the chosen
seed-0 model is the ablation's own (content-keyed cache), so nothing trains twice; with
more grid seeds the curve carries each point's seed spread. A knob given as is
(``fixed``; ``--set lambda_a=...`` on the CLI) is not tuned, and a grid with one point
is not evaluated at all; the JSON's ``tuning`` says which.

Every verdict has an interval and three outcomes
------------------------------------------------
Let :math:`m_{s,k,u}` be the per-user nDCG@100 of setting :math:`s`, training seed
:math:`k`, on test user :math:`u`. A comparison "higher beats lower" is the two-stage
bootstrap over training seeds, then test users (``radius.stats.seed_user_interval``,
percentile, ``BOOTSTRAP_LEVEL`` = 95%, ``BOOTSTRAP_DRAWS`` = 2000 draws; seed k of one
setting is paired with seed k of the other, users with users) of

.. math:: \Delta = \frac{1}{S n}\sum_{k, u} (m_{\text{higher},k,u} - m_{\text{lower},k,u}),

so the interval carries the seed-to-seed spread as well as the sampling of users;
decided by ``radius.stats.decide``: HOLDS when the interval lies above 0, CONTRADICTED
when it lies below 0, INCONCLUSIVE when it contains 0 or rests on fewer than
``MIN_USERS`` (20) test users. The seeds' spread of the per-seed :math:`\Delta`
(``radius.stats.seed_spread``) is reported beside it. Verdicts:

* ordering ``clean < masking < pia``: one comparison per step; the ordering's outcome
  is ``radius.stats.combine`` of its steps;
* the PIA gain per cohort :math:`g_c` (users of cohort :math:`c` only);
* "largest at both ends": :math:`T = \min(g_{\text{first}}, g_{\text{last}}) -
  \max_{\text{middle}} g_c` over the non-empty cohorts (at least three), bootstrapped
  jointly over all test users (one resample feeds every cohort); HOLDS when its interval
  lies above 0. INCONCLUSIVE when a cohort in it has fewer than ``MIN_USERS`` users;
* attribution controls (``controls=True``, P3.1's two halves): trace-only
  (``anchor_terms="trace"``: :math:`\lambda_A \operatorname{tr}\Sigma`), alignment-only
  (``anchor_terms="mean"``: without the trace) at PIA's chosen knobs, and masking with
  ``patience = epochs`` (no early stop: the full epoch budget; the trainer still keeps
  the best-validation epoch), each compared with masking ("the control beats masking").

Models go through ``radius.training.cache.get_model`` (content-keyed cache), so a rerun only
evaluates.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from radius.data.dataset import COHORTS, Dataset, cohort_of
from radius.errors import RadiusError
from radius.stats import (
    BOOTSTRAP_DRAWS,
    BOOTSTRAP_LEVEL,
    Interval,
    Outcome,
    bootstrap_mean,
    combine,
    decide,
    seed_spread,
    seed_user_interval,
)
from radius.training.config import SETTINGS, TrainConfig, setting_config

__all__ = [
    "ABLATION_SETTINGS",
    "ABLATION_METRICS",
    "CONTROLS",
    "DEFAULT_INIT_GRID",
    "DEFAULT_LAMBDA_GRID",
    "MIN_USERS",
    "QUICK_INIT_GRID",
    "QUICK_LAMBDA_GRID",
    "PAPER_ABLATION",
    "TUNED_KNOBS",
    "load_dataset",
    "parse_init",
    "tune_pia",
    "compare",
    "both_ends",
    "ablation",
    "format_ablation",
    "run_experiment",
]

ABLATION_SETTINGS: tuple[str, ...] = ("clean", "masking", "pia")
ABLATION_METRICS: tuple[str, ...] = ("ndcg@100", "recall@20", "recall@50")
METRIC = "ndcg@100"  # the metric every verdict and the grid are decided on

# PIA's knobs tuned on validation users, and their grids.
TUNED_KNOBS: tuple[str, ...] = ("lambda_a", "anchor_init", "anchor_init_scale")
DEFAULT_LAMBDA_GRID: tuple[float, ...] = (0.01, 0.1, 1.0, 3.0, 10.0)
DEFAULT_INIT_GRID: tuple[str, ...] = ("normal:0.01", "normal:0.1")
# A coarser grid for quick runs (``radius figures --quick``): still chosen on validation.
QUICK_LAMBDA_GRID: tuple[float, ...] = (0.1, 1.0)
QUICK_INIT_GRID: tuple[str, ...] = ("normal:0.01",)
TIE_TOL = 1e-9  # validation means closer than this are a tie (-> smaller lambda_A)

# A comparison resting on fewer test users than this is INCONCLUSIVE (stated up front).
MIN_USERS = 20

# Attribution controls: name -> (base setting, overrides on top of PIA's chosen knobs
# or, for the masking control, of masking). "patience" None means patience = epochs.
CONTROLS: dict[str, tuple[str, dict[str, Any]]] = {
    "trace_only": ("pia", {"anchor_terms": "trace"}),
    "alignment_only": ("pia", {"anchor_terms": "mean"}),
    "masking_full_budget": ("masking", {"patience": None}),
}
FULL_BUDGET = frozenset({"masking_full_budget"})  # runs that reach the epoch cap by design
CONTROL_TEXT: dict[str, str] = {
    "trace_only": "trace only (lambda_A tr Sigma)",
    "alignment_only": "alignment only (no tr Sigma)",
    "masking_full_budget": "masking, no early stop (patience = epochs)",
}

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


def _nanmean(v: np.ndarray) -> float:
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def parse_init(spec: str) -> dict[str, Any]:
    """``"normal:0.01"`` -> N(0, 0.01^2) anchors; ``"zeros"`` -> zero anchors.

    Returns the ``TrainConfig`` overrides (``anchor_init``, and ``anchor_init_scale`` for
    ``normal``).
    """
    if not isinstance(spec, str):
        raise TypeError(f"an anchor init must be a string like 'normal:0.01', got {spec!r}")
    name, _, scale = spec.strip().partition(":")
    if name == "zeros" and not scale:
        return {"anchor_init": "zeros"}
    if name == "normal":
        try:
            s = float(scale)
        except ValueError:
            s = float("nan")
        if np.isfinite(s) and s > 0:
            return {"anchor_init": "normal", "anchor_init_scale": s}
    raise ValueError(f"anchor init must be 'normal:SCALE' (SCALE > 0) or 'zeros', got {spec!r}")


def _init_text(knobs: Mapping[str, Any]) -> str:
    if knobs.get("anchor_init") == "zeros":
        return "zeros"
    return f"N(0, {knobs.get('anchor_init_scale')}^2)"


def _evaluate_run(
    dataset: Dataset,
    config: TrainConfig,
    cache_dir: str | os.PathLike | None,
    progress: bool,
    split: str = "test",
) -> dict[str, Any]:
    """Train or load ``config`` (``get_model``) and evaluate it on ``split`` users."""
    from radius.training.cache import get_model
    from radius.training.metrics import evaluate

    model = get_model(dataset, config, cache_dir=cache_dir, progress=progress)
    model = model.cpu().eval()
    fold_in, heldout = dataset.heldout(split)
    res = evaluate(model, fold_in, heldout)
    return {
        "means": res.means,
        "cohorts": res.cohorts,
        "n_users": res.n_users,
        **_training_record(dataset, config, cache_dir),
        "_per_user": res.per_user,  # (n_users,) arrays; dropped from the JSON
    }


def _pretrain(
    dataset: Dataset,
    configs: Sequence[TrainConfig],
    *,
    cache_dir: str | os.PathLike | None,
    workers: int | None,
    progress: bool,
) -> None:
    """Train the missing models of ``configs`` up front, several at once, one thread each
    (``radius.training.cache.train_many``); ``_evaluate_run`` then reads them from the
    cache. The weights are those of training one at a time."""
    from radius.training.cache import train_many

    train_many(dataset, configs, cache_dir=cache_dir, workers=workers, progress=progress)


def _training_record(
    dataset: Dataset, config: TrainConfig, cache_dir: str | os.PathLike | None
) -> dict[str, Any]:
    """How the cached model's training ended: ``stopped`` ("early" / "cap") and the best
    epoch, from the log the trainer writes beside the checkpoint (None when absent)."""
    import json

    from radius.training.cache import cache_key, default_cache_dir

    ckpt = (
        Path(cache_dir or default_cache_dir()) / f"{config.model}-{cache_key(dataset, config)}.pt"
    )
    try:
        log = json.loads(Path(str(ckpt) + ".log.json").read_text())
    except (OSError, ValueError):
        return {"stopped": None, "best_epoch": None}
    return {"stopped": log.get("stopped"), "best_epoch": log.get("best_epoch")}


# --------------------------------------------------------------------------- tuning
def tune_pia(
    dataset: Dataset,
    base: TrainConfig,
    *,
    lambda_grid: Sequence[float] = DEFAULT_LAMBDA_GRID,
    init_grid: Sequence[str] = DEFAULT_INIT_GRID,
    fixed: Iterable[str] = (),
    grid_seeds: int = 1,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    workers: int | None = None,
) -> dict[str, Any]:
    r"""Choose :math:`\lambda_A` and the anchor initialisation on validation users.

    Every grid point (lambda x init) trains the PIA setting for seeds
    ``0..grid_seeds-1`` and is scored by its mean validation nDCG@100; the best mean
    wins, ties (``TIE_TOL``) go to the smaller lambda, then the smaller initial scale.
    Test users are never evaluated here. Knobs named in ``fixed`` keep ``base``'s value
    (the grid over them is skipped); when one point is left nothing is evaluated.

    Returns
    -------
    dict: ``chosen`` (the overrides for the PIA setting), ``rule``, ``knobs`` (per knob:
    ``"grid"`` or ``"given"``), ``grid`` (per point: knobs, validation nDCG@100 seed
    spread, ``chosen``), ``skipped`` (why no grid was evaluated, or None).
    """
    fixed = set(fixed)
    unknown = sorted(fixed - set(TUNED_KNOBS))
    if unknown:
        raise ValueError(f"fixed knobs must be among {list(TUNED_KNOBS)}, got {unknown}")
    if isinstance(grid_seeds, bool) or not isinstance(grid_seeds, (int, np.integer)):
        raise TypeError(f"grid_seeds must be an int, got {type(grid_seeds).__name__}")
    if grid_seeds < 1:
        raise ValueError(f"grid_seeds must be >= 1, got {grid_seeds}")
    if "lambda_a" in fixed:
        if base.lambda_a <= 0:
            raise RadiusError(
                f"lambda_a given as is must be > 0 for the pia setting, got {base.lambda_a}"
            )
        lambdas = [float(base.lambda_a)]
    else:
        lambdas = sorted({float(v) for v in lambda_grid})
        if not lambdas or any(not np.isfinite(v) or v <= 0 for v in lambdas):
            raise ValueError(f"lambda grid must be non-empty values > 0, got {list(lambda_grid)}")
    init_fixed = bool(fixed & {"anchor_init", "anchor_init_scale"})
    if init_fixed:
        inits = [{"anchor_init": base.anchor_init, "anchor_init_scale": base.anchor_init_scale}]
    else:
        if not init_grid:
            raise ValueError("init grid must be non-empty")
        inits = []
        for spec in init_grid:
            knobs = {"anchor_init_scale": base.anchor_init_scale, **parse_init(spec)}
            if knobs not in inits:
                inits.append(knobs)

    def scale(k: Mapping[str, Any]) -> float:
        return 0.0 if k["anchor_init"] == "zeros" else float(k["anchor_init_scale"])

    inits.sort(key=scale)
    points = [{"lambda_a": lam, **init} for lam in lambdas for init in inits]
    seeds = list(range(int(grid_seeds)))
    out: dict[str, Any] = {
        "split": "validation",
        "metric": METRIC,
        "seeds": seeds,
        "rule": (
            f"largest mean validation {METRIC} over grid seeds {seeds}; ties "
            f"(within {TIE_TOL:g}) -> smaller lambda_A, then smaller initial scale; "
            "test users are never used"
        ),
        "knobs": {
            "lambda_a": "given" if "lambda_a" in fixed else "grid",
            "anchor_init": "given" if init_fixed else "grid",
        },
        "lambda_grid": lambdas,
        "init_grid": [_init_text(k) for k in inits],
    }
    if len(points) == 1:
        given = "lambda_a" in fixed and init_fixed
        why = (
            "every tuned knob was given as is (--set); no grid was evaluated"
            if given
            else f"the grid has one point (lambda_A {lambdas[0]:g}, anchors "
            f"{_init_text(inits[0])}): nothing to choose, no grid was evaluated"
        )
        out.update(chosen=points[0], grid=[], skipped=why)
        return out
    _pretrain(  # every missing grid model, in parallel (one thread each)
        dataset,
        [setting_config("pia", base, seed=seed, **p) for p in points for seed in seeds],
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
    )
    curve = []
    for p in points:
        vals, stops = [], []
        for seed in seeds:
            config = setting_config("pia", base, seed=seed, **p)
            run = _evaluate_run(dataset, config, cache_dir, progress, split="val")
            vals.append(float(run["means"][METRIC]))
            stops.append(run.get("stopped"))
        curve.append({**p, "init": _init_text(p), "val": seed_spread(vals), "stopped": stops})
    finite = [c["val"]["mean"] for c in curve if np.isfinite(c["val"]["mean"])]
    if not finite:
        raise RadiusError(
            f"no validation user of {dataset.name!r} has a held-out item: {METRIC} is "
            "undefined at every grid point, so lambda_A cannot be chosen on validation"
        )
    best = max(finite)
    pick = next(
        i
        for i, c in enumerate(curve)  # points are sorted by (lambda, scale): first tie wins
        if np.isfinite(c["val"]["mean"]) and c["val"]["mean"] >= best - TIE_TOL
    )
    for i, c in enumerate(curve):
        c["chosen"] = i == pick
    out.update(chosen=points[pick], grid=curve, skipped=None)
    return out


# --------------------------------------------------------------------------- verdicts
def _interval_dict(iv: Interval) -> dict[str, Any]:
    return iv.to_dict()


def compare(
    lower: np.ndarray,
    higher: np.ndarray,
    *,
    sel: np.ndarray | None = None,
    min_users: int = MIN_USERS,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Does ``higher`` beat ``lower``? Two-stage bootstrap (seeds, then users) of the gain.

    Parameters
    ----------
    lower, higher : (S, n) per-seed, per-user scores on the same users (NaN: undefined).
    sel : (n,) boolean selection of users (a cohort), or None for all.
    min_users : fewer users with a defined difference -> INCONCLUSIVE.

    Returns
    -------
    dict: ``interval`` of the mean over seeds and users of
    :math:`m_{\text{higher},k,u} - m_{\text{lower},k,u}` (users with an undefined score in
    any seed dropped), ``outcome`` (PASS/FAIL/INCONCLUSIVE), ``verdict``
    (HOLDS/CONTRADICTED/INCONCLUSIVE), ``seeds`` (seed spread of the per-seed mean
    difference), ``n_users``, ``min_users``.
    """
    lo = np.atleast_2d(np.asarray(lower, dtype=np.float64))
    hi = np.atleast_2d(np.asarray(higher, dtype=np.float64))
    if lo.shape != hi.shape:
        raise ValueError(f"lower and higher differ in shape: {lo.shape} vs {hi.shape}")
    if sel is not None:
        lo, hi = lo[:, sel], hi[:, sel]
    diff = hi - lo
    diff = diff[:, np.all(np.isfinite(diff), axis=0)]
    iv = seed_user_interval(diff, level=level, n_boot=n_boot, seed=seed, unit="test users")
    outcome = decide(iv, direction=+1, min_n=min_users)
    per_seed = [_nanmean(h - lo_s) for lo_s, h in zip(lo, hi)]
    return {
        "interval": _interval_dict(iv),
        "outcome": outcome.value,
        "verdict": outcome.word("empirical"),
        "seeds": seed_spread(per_seed),
        "n_users": int(iv.n),
        "min_users": int(min_users),
    }


def both_ends(
    lower: np.ndarray,
    higher: np.ndarray,
    cohort: np.ndarray,
    *,
    min_users: int = MIN_USERS,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    seed: int = 0,
) -> dict[str, Any]:
    r"""Is the gain (higher - lower) largest at both cohort ends?

    :math:`T = \min(g_{\text{first}}, g_{\text{last}}) - \max_{\text{middle}} g_c`, with
    :math:`g_c` the mean seed-averaged gain of cohort :math:`c`'s users, over the
    non-empty cohorts (first and last are the ends, those between the middle).
    Two-stage bootstrap of :math:`T` (training seeds, then all test users jointly: one
    resample feeds every cohort). HOLDS when the interval lies above 0, CONTRADICTED below 0;
    INCONCLUSIVE when it contains 0, with fewer than three non-empty cohorts, or when a
    cohort in it has fewer than ``min_users`` users.
    """
    lo = np.atleast_2d(np.asarray(lower, dtype=np.float64))
    hi = np.atleast_2d(np.asarray(higher, dtype=np.float64))
    coh = np.asarray(cohort).ravel()
    if lo.shape != hi.shape or lo.shape[1] != coh.size:
        raise ValueError(
            f"shapes disagree: lower {lo.shape}, higher {hi.shape}, cohort {coh.shape}"
        )
    d = (hi - lo).mean(axis=0)
    ok = np.all(np.isfinite(hi - lo), axis=0)
    d, coh, per_seed_d = d[ok], coh[ok], (hi - lo)[:, ok]
    labels = [c[0] for c in COHORTS]
    users = {labels[k]: int(np.sum(coh == k)) for k in range(len(COHORTS))}
    present = [k for k in range(len(COHORTS)) if users[labels[k]] > 0]
    out: dict[str, Any] = {
        "statistic": "min(end gains) - max(middle gains)",
        "cohorts_used": [labels[k] for k in present],
        "users": users,
        "min_users": int(min_users),
    }
    if len(present) < 3:
        iv = Interval(float("nan"), float("nan"), float("nan"), level, "not formed", 0)
        out.update(
            interval=_interval_dict(iv),
            outcome=Outcome.INCONCLUSIVE.value,
            verdict=Outcome.INCONCLUSIVE.word("empirical"),
            seeds=seed_spread([]),
            reason=f"needs >= 3 non-empty cohorts to have two ends and a middle, got "
            f"{[labels[k] for k in present]}",
        )
        return out

    def stat_of(values: np.ndarray, cohorts: np.ndarray) -> float:
        g = []
        for k in present:
            v = values[cohorts == k]
            if not v.size:
                return float("nan")
            g.append(v.mean())
        return float(min(g[0], g[-1]) - max(g[1:-1]))

    iv = seed_user_interval(
        per_seed_d,
        level=level,
        n_boot=n_boot,
        seed=seed,
        statistic=lambda block, units: stat_of(block.mean(axis=0), coh[units]),
        pass_units=True,
        unit="test users (jointly over cohorts)",
    )
    small = [labels[k] for k in present if users[labels[k]] < min_users]
    outcome = Outcome.INCONCLUSIVE if small else decide(iv, direction=+1, min_n=2)
    reason = (
        f"cohort(s) {small} have fewer than {min_users} users"
        if small
        else f"ends {labels[present[0]]} and {labels[present[-1]]} against the middle "
        f"{[labels[k] for k in present[1:-1]]}; holds when the interval lies above 0"
    )
    g = [float(d[coh == k].mean()) for k in present]
    out.update(
        interval=_interval_dict(iv),
        outcome=outcome.value,
        verdict=outcome.word("empirical"),
        seeds=seed_spread([stat_of(row, coh) for row in per_seed_d]),
        ends=[labels[present[0]], labels[present[-1]]],
        end_gains=[g[0], g[-1]],
        middle_max_gain=max(g[1:-1]),
        argmax=labels[present[int(np.argmax(g))]],
        reason=reason,
    )
    return out


def _per_user(runs: list[dict[str, Any]], metric: str) -> np.ndarray:
    """(S, n) per-seed per-user values of ``metric``."""
    return np.stack([np.asarray(r["_per_user"][metric], dtype=np.float64) for r in runs])


def _ordering(
    runs: dict[str, list[dict[str, Any]]],
    metric: str,
    settings: Sequence[str],
    **kw: Any,
) -> dict[str, Any]:
    """Each step of ``settings`` (claimed increasing) as a paired comparison; combined."""
    steps = []
    for lo, hi in zip(settings[:-1], settings[1:]):
        c = compare(_per_user(runs[lo], metric), _per_user(runs[hi], metric), **kw)
        steps.append({"lower": lo, "higher": hi, **c})
    outcome = combine(s["outcome"] for s in steps)
    return {
        "metric": metric,
        "order": " < ".join(settings),
        "outcome": outcome.value,
        "verdict": outcome.word("empirical"),
        "steps": steps,
    }


def _pia_gain(
    runs: dict[str, list[dict[str, Any]]], metric: str, cohort: np.ndarray, **kw: Any
) -> dict[str, Any]:
    """Per-cohort gain of PIA over masking (paired users) and the 'both ends' statement."""
    lo, hi = _per_user(runs["masking"], metric), _per_user(runs["pia"], metric)
    per_cohort: dict[str, dict[str, Any]] = {}
    for k, (label, _, _) in enumerate(COHORTS):
        sel = cohort == k
        c = compare(lo, hi, sel=sel, **kw)
        base = _nanmean(lo[:, sel].mean(axis=0)) if sel.any() else float("nan")
        est = c["interval"]["estimate"]
        rel = est / base if np.isfinite(base) and base and np.isfinite(est) else float("nan")
        per_cohort[label] = {"users": int(sel.sum()), "relative_gain": float(rel), **c}
    return {
        "metric": metric,
        "per_cohort": per_cohort,
        "both_ends": both_ends(lo, hi, cohort, **kw),
    }


def _cohort_table(
    runs: dict[str, list[dict[str, Any]]],
    cohort: np.ndarray,
    *,
    level: float,
    n_boot: int,
    seed: int,
) -> dict[str, Any]:
    """setting -> cohort -> users and metric -> mean/std over seeds (+ user interval)."""
    cohorts: dict[str, dict[str, Any]] = {}
    for s, rs in runs.items():
        cohorts[s] = {}
        for k, (label, _, _) in enumerate(COHORTS):
            entry: dict[str, Any] = {"users": int(rs[0]["cohorts"][label]["users"])}
            for m in ABLATION_METRICS:
                st = _stats([r["cohorts"][label][m] for r in rs])
                entry[m] = {"mean": st["mean"], "std": st["std"], "n": st["n"]}
            iv = bootstrap_mean(
                _per_user(rs, METRIC)[:, cohort == k].mean(axis=0),
                level=level,
                n_boot=n_boot,
                seed=seed,
                unit="test users",
            )
            entry[METRIC]["interval"] = iv.to_dict()
            cohorts[s][label] = entry
    return cohorts


# --------------------------------------------------------------------------- ablation
def ablation(
    dataset: Dataset,
    *,
    seeds: int = 3,
    model: str = "multvae",
    base_config: TrainConfig | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = False,
    settings: Sequence[str] = ABLATION_SETTINGS,
    lambda_grid: Sequence[float] = DEFAULT_LAMBDA_GRID,
    init_grid: Sequence[str] = DEFAULT_INIT_GRID,
    fixed: Iterable[str] = (),
    grid_seeds: int = 1,
    controls: bool = False,
    min_users: int = MIN_USERS,
    level: float = BOOTSTRAP_LEVEL,
    n_boot: int = BOOTSTRAP_DRAWS,
    bootstrap_seed: int = 0,
    workers: int | None = None,
) -> dict[str, Any]:
    """Tune PIA on validation, train (or load) and evaluate every (setting, seed) on test.

    Parameters
    ----------
    dataset : the prepared dataset (validation users tune, test users are evaluated).
    seeds : number of seeds, 0..seeds-1 (``TrainConfig.seed``).
    model : ``"multvae"`` or ``"recvae"``.
    base_config : config the settings start from (default ``TrainConfig()``).
    cache_dir : model cache (``get_model``); None uses ``default_cache_dir()``.
    settings : settings to compare, in the order the paper claims is increasing.
    lambda_grid, init_grid, fixed, grid_seeds : PIA's tuning (:func:`tune_pia`).
    controls : add the attribution controls (``CONTROLS``), each against masking.
    min_users : fewer test users in a comparison -> INCONCLUSIVE.
    level, n_boot, bootstrap_seed : the bootstrap of every interval.
    workers : models trained at once (missing ones, one thread each; default the CPU
        count): the weights do not depend on it.

    Returns
    -------
    JSON-able dict: ``runs`` (per setting, per seed: means and cohort values),
    ``summary`` (setting -> metric -> mean/std/se/values), ``cohorts``, ``tuning``,
    ``statistics`` (level, draws, minimum users, rule), ``ordering``, ``pia_gain``
    (per cohort and ``both_ends``), ``controls`` (when asked), ``paper``.
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
    if controls and not {"masking", "pia"} <= set(settings):
        raise ValueError("controls need the 'masking' and 'pia' settings")
    if min_users < 2:
        raise ValueError(f"min_users must be >= 2, got {min_users}")
    base = (base_config or TrainConfig()).replace(model=model)
    t0 = time.perf_counter()
    tuning = None
    pia_knobs: dict[str, Any] = {}
    if "pia" in settings:
        tuning = tune_pia(
            dataset,
            base,
            lambda_grid=lambda_grid,
            init_grid=init_grid,
            fixed=fixed,
            grid_seeds=grid_seeds,
            cache_dir=cache_dir,
            progress=progress,
            workers=workers,
        )
        pia_knobs = dict(tuning["chosen"])
    configs: dict[str, Any] = {
        s: (
            lambda seed, s=s: setting_config(
                s, base, seed=seed, **(pia_knobs if s == "pia" else {})
            )
        )
        for s in settings
    }
    control_over: dict[str, dict[str, Any]] = {}
    if controls:
        for name, (start, over) in CONTROLS.items():
            over = {
                k: (base.epochs if k == "patience" and v is None else v) for k, v in over.items()
            }
            if start == "pia":
                over = {**pia_knobs, **over}
            control_over[name] = {"setting": start, **over}
            configs[name] = lambda seed, start=start, over=over: setting_config(
                start, base, seed=seed, **over
            )
    _pretrain(
        dataset,
        [make(seed) for make in configs.values() for seed in range(int(seeds))],
        cache_dir=cache_dir,
        workers=workers,
        progress=progress,
    )
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in configs}
    for name, make in configs.items():
        for seed in range(int(seeds)):
            rec = _evaluate_run(dataset, make(seed), cache_dir, progress, split="test")
            rec.update(setting=name, seed=seed)
            runs[name].append(rec)
    cohort = cohort_of(dataset.counts("test"))
    kw = {"min_users": min_users, "level": level, "n_boot": n_boot, "seed": bootstrap_seed}
    main_runs = {s: runs[s] for s in settings}
    summary = {
        s: {m: _stats([r["means"][m] for r in runs[s]]) for m in ABLATION_METRICS} for s in runs
    }
    out: dict[str, Any] = {
        "experiment": "ablation",
        "data": dataset.summary(),
        "model": model,
        "seeds": list(range(int(seeds))),
        "settings": list(settings),
        "setting_overrides": {
            s: {**SETTINGS[s], **(pia_knobs if s == "pia" else {})} for s in settings
        },
        "base_config": base.key_dict(),
        "metrics": list(ABLATION_METRICS),
        "test_users": runs[settings[0]][0]["n_users"],
        "tuning": tuning,
        "statistics": {
            "metric": METRIC,
            "level": level,
            "draws": n_boot,
            "bootstrap_seed": bootstrap_seed,
            "min_users": min_users,
            "method": "two-stage percentile bootstrap (training seeds, then test users) of "
            "the per-seed, per-user difference (seed k paired with seed k, user with "
            "user); seed spread of the per-seed difference beside it",
            "rule": "HOLDS when the interval lies above 0 (the claimed direction), "
            "CONTRADICTED when it lies below 0, INCONCLUSIVE when it contains 0 or rests "
            f"on fewer than {min_users} test users",
        },
        "runs": {
            s: [{k: v for k, v in r.items() if not k.startswith("_")} for r in rs]
            for s, rs in runs.items()
        },
        "summary": summary,
        "cohorts": _cohort_table(
            main_runs, cohort, level=level, n_boot=n_boot, seed=bootstrap_seed
        ),
        "ordering": _ordering(main_runs, METRIC, settings, **kw),
        "paper": PAPER_ABLATION,
    }
    if "masking" in runs and "pia" in runs:
        out["pia_gain"] = _pia_gain(runs, METRIC, cohort, **kw)
    if controls:
        lo = _per_user(runs["masking"], METRIC)
        rows = {}
        for name in CONTROLS:
            c = compare(lo, _per_user(runs[name], METRIC), **kw)
            rows[name] = {"label": CONTROL_TEXT[name], "config": control_over[name], **c}
        pia = compare(lo, _per_user(runs["pia"], METRIC), **kw)
        out["controls"] = {
            "against": "masking",
            "claim": "the control beats masking (gain above 0)",
            "pia": {"label": "masking + PIA (both terms)", **pia},
            "rows": rows,
        }
    out["seconds"] = time.perf_counter() - t0
    return out


# --------------------------------------------------------------------------- text
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


def interval_text(iv: Mapping[str, Any]) -> str:
    """``+0.0127 [+0.0090, +0.0170]`` from an interval dict (``[no interval]`` if NaN)."""
    est, lo, hi = (iv.get(k, float("nan")) for k in ("estimate", "low", "high"))
    if not isinstance(est, (int, float)) or not np.isfinite(est):
        return "n/a"
    if not all(isinstance(v, (int, float)) and np.isfinite(v) for v in (lo, hi)):
        return f"{est:+.4f} [no interval]"
    return f"{est:+.4f} [{lo:+.4f}, {hi:+.4f}]"


def verdict_text(c: Mapping[str, Any]) -> str:
    """``+0.0127 [+0.0090, +0.0170] HOLDS (seeds: +0.0120 ± 0.0010, 3/3 positive)``."""
    s = c.get("seeds") or {}
    vals = [v for v in s.get("values", []) if np.isfinite(v)]
    seeds = ""
    if vals:
        pos = sum(v > 0 for v in vals)
        seeds = f" (seeds: {_pm(s.get('mean', float('nan')), s.get('std', float('nan')))}, "
        seeds += f"{pos}/{len(vals)} positive)"
    return f"{interval_text(c.get('interval', {}))} {c.get('verdict', '?')}{seeds}"


def format_ablation(result: dict[str, Any]) -> str:
    """Readable tables of an ``ablation`` result: settings, cohorts, verdicts, grid."""
    settings = result["settings"]
    n = len(result["seeds"])
    st = result["statistics"]
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
                for s in result["summary"]
            ],
            ["setting", *result["metrics"]],
        ),
    ]
    capped = [  # the full-budget control runs to the cap by design: not a warning
        f"{r['setting']} seed {r['seed']}"
        for rs in result["runs"].values()
        for r in rs
        if r.get("stopped") == "cap" and r.get("setting") not in FULL_BUDGET
    ]
    if capped:
        parts += [
            "",
            f"WARNING: {len(capped)} run(s) hit the epoch cap before early stopping "
            f"(under-trained?): {', '.join(capped)}",
        ]
    tuning = result.get("tuning")
    if tuning:
        ch = tuning["chosen"]
        parts += [
            "",
            f"PIA knobs: lambda_A = {ch['lambda_a']:g}, anchors {_init_text(ch)} "
            f"(lambda_A {tuning['knobs']['lambda_a']}, init {tuning['knobs']['anchor_init']})",
        ]
        if tuning.get("skipped"):
            parts.append(f"  grid skipped: {tuning['skipped']}")
        else:
            parts.append(f"  rule: {tuning['rule']}")
            rows = [
                [
                    f"{g['lambda_a']:g}",
                    g["init"],
                    _pm(g["val"]["mean"], g["val"]["std"]),
                    "<- chosen" if g["chosen"] else "",
                ]
                for g in tuning["grid"]
            ]
            parts.append(_table(rows, ["lambda_A", "anchor init", f"val {METRIC}", ""]))
    parts += [
        "",
        f"verdicts on {st['metric']}: two-stage bootstrap (seeds, then users), "
        f"{st['level']:.0%} interval, "
        f"{st['draws']} draws; INCONCLUSIVE below {st['min_users']} users",
        "",
        f"{METRIC} per interaction-count cohort:",
    ]
    gain = result.get("pia_gain")
    rows = []
    for label, _, _ in COHORTS:
        row = [label, str(result["cohorts"][settings[0]][label]["users"])]
        row += [
            _pm(
                result["cohorts"][s][label][METRIC]["mean"],
                result["cohorts"][s][label][METRIC]["std"],
            )
            for s in settings
        ]
        if gain is not None:
            g = gain["per_cohort"][label]
            row += [interval_text(g["interval"]), g["verdict"]]
        rows.append(row)
    header = [
        "cohort",
        "users",
        *settings,
        *(["pia - masking [95% CI]", "outcome"] if gain is not None else []),
    ]
    parts.append(_table(rows, header))
    o = result["ordering"]
    parts += ["", f"ordering {o['order']} on {o['metric']}: {o['verdict']}"]
    for s in o["steps"]:
        parts.append(f"  {s['higher']} - {s['lower']}: {verdict_text(s)}")
    if gain is not None:
        b = gain["both_ends"]
        parts.append(
            f"PIA gain largest at both cohort ends ({b['statistic']}): "
            f"{interval_text(b['interval'])} {b['verdict']} ({b['reason']})"
        )
    ctl = result.get("controls")
    if ctl:
        parts += ["", f"attribution controls against {ctl['against']} (claim: {ctl['claim']}):"]
        for row in [ctl["pia"], *ctl["rows"].values()]:
            parts.append(f"  {row['label']}: {verdict_text(row)}")
    ref = result["paper"][METRIC]
    parts.append(
        "paper (ML-20M, nDCG@100, for direction only): "
        + " < ".join(f"{s} {ref[s]:.3f}" for s in ("clean", "masking", "pia"))
    )
    return "\n".join(parts)


def _floats(text: str | None, flag: str) -> list[float] | None:
    if text is None:
        return None
    try:
        vals = [float(v) for v in str(text).split(",") if v.strip()]
    except ValueError:
        raise RadiusError(f"{flag} expects comma-separated numbers, got {text!r}") from None
    if not vals or any(not np.isfinite(v) or v <= 0 for v in vals):
        raise RadiusError(f"{flag} expects values > 0, got {text!r}")
    return vals


def _inits(text: str | None) -> list[str] | None:
    if text is None:
        return None
    specs = [v.strip() for v in str(text).split(",") if v.strip()]
    for s in specs:
        try:
            parse_init(s)
        except ValueError as e:
            raise RadiusError(f"--init-grid: {e}") from None
    if not specs:
        raise RadiusError(f"--init-grid expects e.g. normal:0.01,normal:0.1, got {text!r}")
    return specs


def _int_option(args: argparse.Namespace, name: str, default: int) -> int:
    value = getattr(args, name, None)
    return default if value is None else int(value)


def run_experiment(args: argparse.Namespace) -> int:
    """``radius experiment ablation``: print the tables, write the JSON, return 0.

    The exit code is 0 whatever the verdicts: an experiment measures, it does not
    verify, and its outcomes are in the table and the JSON (``radius verify`` exits 1/3
    on a failed or inconclusive claim). Bad input exits 2.
    """
    from radius.io import atomic_write_json
    from radius.training.cache import default_cache_dir

    name = getattr(args, "name", "ablation") or "ablation"
    if name != "ablation":
        raise RadiusError(f"unknown experiment {name!r} (choose from ['ablation'])")
    model = getattr(args, "model", None) or "multvae"
    seeds = int(getattr(args, "seeds", 3))
    if seeds < 1:
        raise RadiusError(f"--seeds must be >= 1, got {seeds}")
    grid_seeds = _int_option(args, "grid_seeds", 1)
    if grid_seeds < 1:
        raise RadiusError(f"--grid-seeds must be >= 1, got {grid_seeds}")
    min_users = _int_option(args, "min_users", MIN_USERS)
    if min_users < 2:
        raise RadiusError(f"--min-users must be >= 2, got {min_users}")
    # knobs given with --set are used as is: no grid over them
    given = {str(p).split("=", 1)[0].strip() for p in (getattr(args, "set", None) or [])}
    fixed = sorted(given & set(TUNED_KNOBS))
    lambdas = _floats(getattr(args, "lambda_grid", None), "--lambda-grid")
    inits = _inits(getattr(args, "init_grid", None))
    ds = load_dataset(getattr(args, "data", "default") or "default")  # after the options
    # programmatic callers (tests) may pass base_config / cache_dir on the namespace
    cache = getattr(args, "cache_dir", None) or default_cache_dir()
    result = ablation(
        ds,
        seeds=seeds,
        model=model,
        base_config=getattr(args, "base_config", None),
        cache_dir=cache,
        progress=bool(getattr(args, "progress", True)),
        lambda_grid=lambdas or DEFAULT_LAMBDA_GRID,
        init_grid=inits or DEFAULT_INIT_GRID,
        fixed=fixed,
        grid_seeds=grid_seeds,
        controls=bool(getattr(args, "controls", False)),
        min_users=min_users,
        workers=getattr(args, "workers", None),
    )
    if getattr(args, "command_line", None):
        result["command"] = args.command_line
    print(format_ablation(result))
    out = Path(getattr(args, "out", None) or Path("runs") / ds.name / f"ablation-{model}.json")
    atomic_write_json(out, result)
    print(f"\nJSON: {out}")
    return 0
