r"""T2.3 Latent sharing radius: a gradient step on user v transfers to user u.

With :math:`L_u(\theta) = \mathbb E_{z\sim q_u} l_u(\theta, z)` (clean input, decoder
output layer :math:`\theta = (W, b)`), :math:`g_u = \nabla_\theta L_u` and one step
:math:`\theta^+ = \theta - \eta g_v` (theory.md, T2.3):

1. :math:`L_u(\theta^+) - L_u(\theta) = -\eta\langle g_u, g_v\rangle + O(\eta^2)`;
2. :math:`\|g_v - g_u\| \le D_{uv} = L_{\theta z} W_1(q_u, q_v) + \Delta_x(u, v)`;
3. :math:`W_1(q_u, q_v) < r_{share} = [\|g_u\| - \Delta_x]_+ / L_{\theta z}
   \Rightarrow \langle g_u, g_v\rangle > 0`;
4. normalised transfer :math:`\langle g_u, g_v\rangle / \|g_u\|^2` decays with latent
   distance.

The theorem holds at every parameter value, so it is checked **along training**: at
initialisation, after 1 and 3 epochs, and at the best epoch (radius's models: the
cached model's own training run, ``radius.training.cache.get_along``; user models: the
``along`` option / ``radius verify --along LABEL=PATH``). Model: the ``pia`` setting;
with user models and no ``pia``, the ``masking`` one, else ``clean`` (said in
``details["parts_not_run"]``). Float64 copies for the exact statistics, float32 for the
searches. Expectations are Monte Carlo means over M = min(n_mc, 16) posterior samples with
common random numbers (the same :math:`\varepsilon_m` for every user), so every
statistic is exact for the Monte Carlo objective, and the samples :math:`z_{um}, z_{vm}`
are the W2-optimal coupling of :math:`q_u, q_v`.

Pair search (``details["search"]``), at each training point:

* anchors: a seeded sample of the training users (every user while
  anchors x items <= ``ANCHOR_ENTRIES``, else at least ``MIN_ANCHORS``);
* candidates of each anchor u over **all** training users: its ``K_CAND`` nearest by
  input Jaccard and its ``K_CAND`` nearest by latent W2 at this point
  (``radius.analysis.neighbours``: chunked sparse products, never users x users);
* screening by the theorem's own quantities: :math:`\|g_u\|` and :math:`\Delta_x(u, v)`
  for every candidate (``radius.analysis.transfer.screen_candidates``, float32, the
  same samples), so the fraction with :math:`r_{share} > 0`, i.e.
  :math:`\Delta_x < \|g_u\|`, is measured over thousands of candidates;
* kept, with exact float64 statistics: strata of ``n_pairs // 4`` anchors each, the same
  anchors at every point (u with its nearest Jaccard neighbour, a random user fixed per
  anchor, and at the best epoch also its nearest W2 neighbour), and ``n_pairs // 4``
  "searched" pairs, the candidates most likely inside: :math:`W_2 < r_{share}` iff
  :math:`(\Delta_x + L W_2) / \|g_u\| < 1`, so candidates are ranked by this with
  :math:`L` first a power law in :math:`n_v` fitted to the strata's estimates
  (:math:`L_{\theta z}` grows about as :math:`\sqrt{n_v}`), then the ``SHORTLIST`` x
  ``n_pairs // 4`` best again with a cheap per-pair estimate (one path, its two ends,
  three power iterations).

Roles (``radius.verify.base``). Statement checks (they alone decide):

* ``transfer_bound``: :math:`\|g_v - g_u\| \le L_{\theta z} W_2 + \Delta_x` on at least
  ``min_fraction`` of the real (pair, training point) cases. *Derivation:* T2.3.2 with
  :math:`W_1 \le W_2`. With ``weak`` when it still holds at L_thz x 0.1 (then the bound
  does not test the latent term).
* ``positive_inside_radius``: every real case with :math:`W_2 < r_{share}` has
  :math:`\langle g_u, g_v\rangle > 0`. *Derivation:* :math:`W_1 \le W_2 < r_{share}`
  gives :math:`D_{uv} < \|g_u\|`, so :math:`\langle g_u, g_v\rangle \ge \|g_u\|
  (\|g_u\| - D_{uv}) > 0` (T2.3.2-3). Cases are pooled over training points, each pair
  counted at its own point (a pair inside at two points is two cases). FAIL on any
  counterexample; PASS with at least ``MIN_INSIDE`` cases inside; VACUOUS otherwise,
  with the measured distance to the premise (fraction with :math:`r_{share} > 0`, max
  :math:`r_{share} / \|\mu_u - \mu_v\|`, :math:`\|\mu_u - \mu_v\| \le W_1`).
* ``transfer_decays_with_w2``: Spearman(W2, normalised transfer) < 0 on the pooled
  strata at the best epoch, bootstrap over anchors. *Derivation:* T2.3.4 as theory.md
  states it; 2 gives the floor :math:`\langle g_u, g_v\rangle / \|g_u\|^2 \ge 1 -
  (L_{\theta z} W_1 + \Delta_x) / \|g_u\|`, which falls linearly in the latent
  distance (a floor: the decay of the values themselves is the claim's reading of it,
  not a consequence proved for them).

Assumption: ``lipschitz_covers_secants``: the per-pair L_thz estimate (power iteration
on the mixed Jacobian at ``LIP_PATHS`` x ``LIP_SEGMENT`` points of the coupling segments,
``radius.analysis.transfer.pair_lipschitz``: an estimate, not certified) is at least every
measured secant ratio :math:`\|\nabla l_v(z) - \nabla l_v(z')\| / \|z - z'\|` on the M
coupling paths and their halves (``radius.analysis.transfer.pair_transfer``'s ``secant``:
certified lower bounds on L_thz): NOT MET when one exceeds it by more than ``LIP_TOL``.

Mechanism (never decide; intervals over training seeds, then anchors or pairs, by
``radius.stats.seed_user_interval``): ``transfer_decays_with_w2[jaccard|latent|random]``
(the strata apart), ``near_transfer_exceeds_random`` (per anchor, positive transfer
from its nearest Jaccard neighbour minus from a random user) and
``radius_certifies_transfer`` (the radius's tightness: the share of positively
transferring near-neighbour cases that lie inside it, over training points).

Implementation: ``first_order_slope[output|decoder]`` (finite differences, Taylor),
``search_matches_exact`` (the float32 screening equals the float64 statistics), and the
bound and radius on constructed edit probes (v = u minus one item).

``power(ctx)``: L_thz scaled (bound, assumption), the radius inflated by understating
Delta_x in it (positive inside), W2 permuted (decay).
"""

from __future__ import annotations

import copy
import time
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy import stats
from torch import nn

from radius.analysis.geometry import w1_empirical
from radius.analysis.neighbours import euclidean_topk, jaccard_pairs, jaccard_topk
from radius.analysis.transfer import (
    PARAM_SET_NAMES,
    PairTransfer,
    common_eps,
    first_order_residuals,
    loglog_slope,
    pair_lipschitz,
    pair_transfer,
    screen_candidates,
    sharing_radius,
    transfer_bound,
)
from radius.errors import RadiusError
from radius.stats import Interval, Outcome, bootstrap, decide, seed_user_interval
from radius.verify.base import Check, ClaimResult, PowerRow
from radius.verify.context import MissingModelError, VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "run",
    "power",
    "models_needed",
    "load_along",
    "check_first_order",
    "check_transfer_bound",
    "check_radius",
    "check_lipschitz",
    "check_decay",
    "check_search",
    "spearman",
    "edit_probes",
    "Measurement",
    "PointMeasurement",
    "measure",
]

CLAIM_ID = "2.3"
TITLE = "Latent sharing radius: gradient transfer between users (T2.3)"
STATEMENT = (
    "Reconstruction (theory.md T2.3). For the decoder's output layer theta, L_u(theta) = "
    "E_{z~q_u}[-log p_theta(x_u|z)] on the clean input and g_u = grad_theta L_u, at every "
    "training point examined (initialisation, epochs 1 and 3, best epoch): (2) ||g_v - g_u|| "
    "<= D_uv = L_thz W2(q_u, q_v) + Delta_x(u, v) with Delta_x = ||E_{q_u}[grad l_v - grad "
    "l_u]|| and L_thz the Lipschitz constant of z -> grad_theta l_v (estimated; W2 >= W1); "
    "(3) if W2(q_u, q_v) < r_share = [||g_u|| - Delta_x]_+ / L_thz then <g_u, g_v> > 0 "
    "(VACUOUS when no real pair lies inside at any point); (4) <g_u, g_v> / ||g_u||^2 "
    "decreases with W2 (pooled real pairs at the best epoch). Pairs are searched over all "
    "training users by the theorem's own quantity Delta_x / ||g_u||. (1), the first-order "
    "identity, and constructed edit probes check the implementation."
)
RECONSTRUCTION = True

SETTING = "pia"
FALLBACK = ("pia", "masking", "clean")  # with user models: the first one given
MAX_MC = 16  # Monte Carlo samples per user (common random numbers)
K_CAND = 10  # Jaccard and W2 neighbours screened per anchor
ANCHOR_ENTRIES = 8_000_000  # every user is an anchor while anchors x items stays below
MIN_ANCHORS = 1000  # else at least this many anchors
SLOPE_RANGE = (1.7, 2.3)  # accepted log-log slope of the first-order residual
STEP_LENGTHS = np.logspace(-4, -1, 7)  # ||eta g_v||: eta = STEP_LENGTHS / ||g_v||
N_FIRST_ORDER = 3  # pairs of the finite-difference check (one per stratum)
MIN_INSIDE = 5  # fewer real cases inside the radius: VACUOUS (premise too rare to test)
MIN_DECAY_PAIRS = 10  # fewer pairs: INCONCLUSIVE
REL_TOL = 1e-9  # float slack of the inequality (float64 statistics)
LIP_PATHS, LIP_SEGMENT, LIP_ITER = 2, 3, 8  # L_thz estimate: paths, points per path, iterations
# An estimate below a measured secant ratio by more than LIP_TOL (relative) is not an
# L_thz there. The estimate is a max over 6 points of Rayleigh quotients that approach the
# spectral norm from below: after LIP_ITER = 8 steps they were within 7% (median 1.5%)
# of 30 steps on the default model, and a max over finitely many points of a path
# understates its sup (a linear decoder early in training has secant ratios within 1%
# of its Jacobian norm everywhere). Shortfalls inside that error are the estimator's.
LIP_TOL = 0.05
SECANT_SPLIT = 2  # each coupling path and its halves
SEARCH_RTOL = 1e-4  # float32 screening against the float64 statistics (relative)
NEAR_MIN_EFFECT = 0.05  # near minus random share of positive transfer
STRATUM_MIN_EFFECT = 0.05  # |Spearman rho| of a stratum's decay
TIGHTNESS_MIN_EFFECT = 0.01  # share of positively transferring near pairs certified
N_EMPIRICAL_W1 = 10  # pairs with a sample-based W1 beside the sandwich
EMPIRICAL_W1_SAMPLES = 200
EDIT_FRACTION = 0.125  # edit probes, as a fraction of n_pairs
SHORTLIST = 4  # candidates re-ranked with a cheap L_thz, per pair kept
STRATA = ("jaccard", "latent", "random")
EARLY_STRATA = ("jaccard", "random")  # strata before the best epoch (the decay is judged there)
N_ROWS = 400  # pair rows kept per training point in the details
CHUNK_BYTES = 48 * 2**20  # memory of one chunk's (rows, items) arrays


# ---------------------------------------------------------------------------- checks
def check_first_order(slopes: np.ndarray, *, param_set: str = "output") -> Check:
    """Implementation: every finite-difference residual slope lies in SLOPE_RANGE.

    Taylor's theorem makes the residual O(eta^2) for any smooth model, so a failure is a
    bug in the gradients or the finite differences, not evidence about the model.
    """
    slopes = np.asarray(slopes, dtype=np.float64)
    lo, hi = SLOPE_RANGE
    ok = np.isfinite(slopes) & (slopes >= lo) & (slopes <= hi)
    margin = np.where(np.isfinite(slopes), np.minimum(slopes - lo, hi - slopes), -np.inf)
    worst = int(np.argmin(margin)) if len(slopes) else 0
    passed = bool(len(slopes) > 0 and ok.all())
    note = ""
    if not passed:
        note = (
            f"slope {slopes[worst]:.3g} outside [{lo}, {hi}]"
            if len(slopes)
            else "no pair was checked"
        ) + ": the residual is not second order (a bug in the gradients)"
    return Check(
        name=f"first_order_slope[{param_set}]",
        description=(
            f"({PARAM_SET_NAMES[param_set]}) |L_u(theta - eta g_v) - L_u(theta) + eta <g_u, g_v>| "
            "= O(eta^2): log-log slope of the residual over ||eta g_v|| in 1e-4..1e-1"
        ),
        measured=float(slopes[worst]) if len(slopes) else float("nan"),
        bound=2.0,
        slack=float(margin[worst]) if len(slopes) else float("-inf"),
        tolerance=f"every slope in [{lo}, {hi}] (least squares on 7 log-spaced eta); n = 0 fails",
        passed=passed,
        n=len(slopes),
        kind="identity",
        role="implementation",
        note=note,
    )


def _holds(diff_norm: np.ndarray, bound: np.ndarray) -> np.ndarray:
    return np.asarray(diff_norm) <= np.asarray(bound) * (1 + REL_TOL) + 1e-12


def check_transfer_bound(
    diff_norm: np.ndarray,
    bound: np.ndarray,
    *,
    min_fraction: float = 0.99,
    delta_x: np.ndarray | None = None,
    bound_weak: np.ndarray | None = None,
    weak_scale: float = 0.1,
    evidence: str = "real",
) -> Check:
    """Statement: ||g_v - g_u|| <= D_uv on at least ``min_fraction`` of the cases.

    No case is no evidence (INCONCLUSIVE). ``delta_x`` adds the fraction on which D =
    Delta_x alone (L_thz = 0) already holds to the note. ``bound_weak`` is D with L_thz
    scaled by ``weak_scale``: when the bound holds with it too, the check is labelled
    weak evidence (the data cannot tell a right L_thz from one ``1 / weak_scale`` times
    too small, so the latent term is untested).
    """
    diff_norm = np.asarray(diff_norm, dtype=np.float64)
    bound = np.asarray(bound, dtype=np.float64)
    holds = _holds(diff_norm, bound)
    n = len(holds)
    frac = float(holds.mean()) if n else float("nan")
    parts = []
    if n:
        worst = int(np.argmax(diff_norm / np.where(bound > 0, bound, np.nan))) if n else 0
        parts.append(
            f"holds on {int(holds.sum())} of {n} cases ({frac:.1%}; needed "
            f"{min_fraction:.0%}); largest ||g_v - g_u|| / D = "
            f"{diff_norm[worst] / bound[worst]:.3g}"
        )
    if delta_x is not None and n:
        frac0 = float(_holds(diff_norm, delta_x).mean())
        parts.append(f"with L_thz = 0 (D = Delta_x alone) it holds on {frac0:.1%}")
    weak = ""
    if bound_weak is not None and n:
        frac_w = float(_holds(diff_norm, bound_weak).mean())
        if frac_w >= min_fraction:
            weak = (
                f"the bound also holds with L_thz x{weak_scale:g} ({frac_w:.1%} of the cases): "
                "an L_thz estimate that much too small would pass, so the latent term is "
                "not tested"
            )
    if not n:
        outcome, parts = Outcome.INCONCLUSIVE, ["no cases: no evidence"]
    else:
        outcome = Outcome.of(frac >= min_fraction)
    tag = "" if evidence == "real" else f"[{evidence}]"
    return Check(
        name=f"transfer_bound{tag}",
        description=(
            "(output layer) ||g_v - g_u|| <= L_thz W2(q_u, q_v) + Delta_x(u, v), "
            "L_thz an estimate (power iteration on coupling segments)"
            + (
                " - edit probes (constructed)"
                if evidence == "probe"
                else " - real pairs at every training point"
            )
        ),
        measured=frac,
        bound=min_fraction,
        slack=frac - min_fraction if n else float("nan"),
        tolerance=(
            f"fraction of cases >= {min_fraction} (relative float slack {REL_TOL}); "
            "L_thz estimated, not certified; no cases: INCONCLUSIVE"
        ),
        passed=outcome is Outcome.PASS,
        n=n,
        kind="bound",
        outcome=outcome,
        evidence=evidence,
        note="; ".join(parts),
        role="statement" if evidence == "real" else "implementation",
        weak=weak if evidence == "real" else "",
    )


def check_radius(
    inner: np.ndarray,
    w2: np.ndarray,
    r_share: np.ndarray,
    *,
    mu_dist: np.ndarray | None = None,
    min_inside: int = MIN_INSIDE,
    distance_note: str = "",
    evidence: str = "real",
) -> Check:
    """Statement: every case with W2 < r_share has <g_u, g_v> > 0.

    FAIL when any case inside has <g_u, g_v> <= 0 (a counterexample decides, however few
    cases are inside); PASS with at least ``min_inside`` cases inside, all positive;
    otherwise VACUOUS: the premise holds for too few real cases to test, and the note
    says how far the data are from it (``distance_note``; with ``mu_dist`` the largest
    r_share / ||mu_u - mu_v||, ||mu_u - mu_v|| <= W1). For the constructed probes
    (``evidence="probe"``) too few cases is INCONCLUSIVE (the construction failed).
    """
    inner = np.asarray(inner, dtype=np.float64)
    w2 = np.asarray(w2, dtype=np.float64)
    r_share = np.asarray(r_share, dtype=np.float64)
    inside = w2 < r_share
    n_in = int(inside.sum())
    n_pos = int((inner[inside] > 0).sum())
    n_r = int((r_share > 0).sum())
    n = len(inner)
    if n_pos < n_in:
        outcome = Outcome.FAIL
    elif n_in >= min_inside:
        outcome = Outcome.PASS
    else:
        outcome = Outcome.VACUOUS if evidence == "real" else Outcome.INCONCLUSIVE
    base = f"{n_r} of {n} cases have r_share > 0, {n_in} lie inside, {n_pos} of them transfer"
    if outcome is Outcome.FAIL:
        bad = np.flatnonzero(inside & (inner <= 0))
        base = (
            f"{n_in - n_pos} of {n_in} cases inside r_share have <g_u, g_v> <= 0 (smallest "
            f"{inner[bad].min():.3g}): the claim is contradicted; " + base
        )
    elif outcome is not Outcome.PASS:
        ratio = ""
        if mu_dist is not None and n:
            with np.errstate(divide="ignore", invalid="ignore"):
                rr = r_share / np.asarray(mu_dist, dtype=np.float64)
            rr = rr[np.isfinite(rr)]
            if len(rr):
                ratio = (
                    f"; max r_share / ||mu_u - mu_v|| = {rr.max():.3g} (||mu_u - mu_v|| <= W1: "
                    f"the closest case is {1 / rr.max():.3g}x outside)"
                    if rr.max() > 0
                    else "; r_share = 0 for every case"
                )
        base = (
            f"only {n_in} cases inside r_share (need {min_inside}): "
            + ("the premise holds for too few real cases to test; " if evidence == "real" else "")
            + base
            + ratio
        )
    if distance_note:
        base += "; " + distance_note
    tag = "" if evidence == "real" else f"[{evidence}]"
    return Check(
        name=f"positive_inside_radius{tag}",
        description=(
            "(output layer) every case with W2(q_u, q_v) < r_share(u, v) has <g_u, g_v> > 0"
            + (
                " - edit probes (constructed)"
                if evidence == "probe"
                else " - real pairs, pooled over training points"
            )
        ),
        measured=float(n_pos / n_in) if n_in else float("nan"),
        bound=1.0,
        slack=float(n_pos - n_in) if n_in >= min_inside else float(n_in - min_inside),
        tolerance=(
            f"FAIL if any case inside has <g_u, g_v> <= 0; PASS with >= {min_inside} cases "
            "inside, all positive; else "
            + ("VACUOUS (premise too rare)" if evidence == "real" else "INCONCLUSIVE")
        ),
        passed=outcome is Outcome.PASS,
        n=n_in,
        kind="bound",
        outcome=outcome,
        evidence=evidence,
        note=base,
        role="statement" if evidence == "real" else "implementation",
    )


def check_lipschitz(lip: np.ndarray, secant: np.ndarray, *, tol: float = LIP_TOL) -> Check:
    """Assumption: the L_thz estimate is at least every measured secant ratio.

    A secant ratio ||grad l_v(z) - grad l_v(z')|| / ||z - z'|| is a certified lower bound
    on the Lipschitz constant; an estimate below one (by more than ``tol``, relative) is
    not a Lipschitz constant along that coupling: NOT MET. No case: INCONCLUSIVE.
    """
    lip = np.asarray(lip, dtype=np.float64)
    secant = np.asarray(secant, dtype=np.float64)
    ok = np.isfinite(secant)
    n = int(ok.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = secant[ok] / lip[ok]
    worst = float(np.max(ratio)) if n else float("nan")
    over = int((ratio > (1 + tol) * (1 + 1e-9)).sum()) if n else 0
    if not n:
        outcome, note = Outcome.INCONCLUSIVE, "no secant could be measured: no evidence"
    else:
        outcome = Outcome.of(over == 0)
        within = int((ratio > 1 + 1e-9).sum()) - over
        note = f"largest secant ratio / L_thz estimate {worst:.3g} over {n} cases" + (
            f"; {over} cases above the estimate by more than {tol:.0%}: it is not a "
            "Lipschitz constant there"
            if over
            else ""
        )
        if within:
            note += f"; {within} above it by less than {tol:.0%} (the estimator's error)"
    return Check(
        name="lipschitz_covers_secants",
        description=(
            "the per-pair L_thz estimate >= every measured secant ratio ||grad l_v(z) - "
            "grad l_v(z')|| / ||z - z'|| on the coupling paths and their halves"
        ),
        measured=worst,
        bound=1.0 + tol,
        slack=(1.0 + tol) - worst if n else float("nan"),
        tolerance=f"every secant ratio <= (1 + {tol:g}) x estimate; no case: INCONCLUSIVE",
        passed=outcome is Outcome.PASS,
        n=n,
        kind="bound",
        outcome=outcome,
        note=note,
        role="assumption",
    )


def check_search(screened: np.ndarray, exact: np.ndarray, *, rtol: float = SEARCH_RTOL) -> Check:
    """Implementation: the float32 screening of Delta_x / ||g_u|| equals the float64 exact
    statistics on the kept pairs (relative ``rtol``): the search ranks by the theorem's
    quantity, not an approximation of it."""
    screened = np.asarray(screened, dtype=np.float64)
    exact = np.asarray(exact, dtype=np.float64)
    ok = np.isfinite(screened) & np.isfinite(exact)
    n = int(ok.sum())
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(screened[ok] - exact[ok]) / np.maximum(np.abs(exact[ok]), 1e-300)
    worst = float(rel.max()) if n else float("nan")
    passed = bool(n and worst <= rtol)
    return Check(
        name="search_matches_exact",
        description=(
            "Delta_x / ||g_u|| of the float32 screening equals the float64 statistics "
            "of the kept pairs"
        ),
        measured=worst,
        bound=rtol,
        slack=rtol - worst if n else float("-inf"),
        tolerance=f"largest relative difference <= {rtol:g}; no pair: FAIL",
        passed=passed,
        n=n,
        kind="identity",
        role="implementation",
        note="" if passed else f"largest relative difference {worst:.3g} > {rtol:g}",
    )


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 1..n along the last axis with ties given their average rank
    (``scipy.stats.rankdata``'s ``average``), vectorised over rows, without scipy's
    per-call overhead (the bootstraps call it thousands of times)."""
    a = np.atleast_2d(np.asarray(a, dtype=np.float64))
    n = a.shape[1]
    order = np.argsort(a, axis=1, kind="mergesort")
    sa = np.take_along_axis(a, order, axis=1)
    pos = np.broadcast_to(np.arange(n), a.shape)
    first = np.ones(a.shape, dtype=bool)
    first[:, 1:] = sa[:, 1:] != sa[:, :-1]
    last = np.ones(a.shape, dtype=bool)
    last[:, :-1] = first[:, 1:]
    start = np.maximum.accumulate(np.where(first, pos, 0), axis=1)  # first place of the tie
    end = np.minimum.accumulate(np.where(last, pos, n - 1)[:, ::-1], axis=1)[:, ::-1]
    out = np.empty(a.shape)
    np.put_along_axis(out, order, 0.5 * (start + end) + 1.0, axis=1)
    return out


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each row pair of a, b (R, n) -> (R,); NaN for a constant
    row or n < 2."""
    ra, rb = _ranks(a), _ranks(b)
    ra -= ra.mean(axis=1, keepdims=True)
    rb -= rb.mean(axis=1, keepdims=True)
    den = np.sqrt((ra * ra).sum(axis=1) * (rb * rb).sum(axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        rho = (ra * rb).sum(axis=1) / den
    return np.where((den > 0) & (a.shape[-1] >= 2), rho, np.nan)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when a side is constant."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if len(a) < 2:
        return float("nan")
    return float(_spearman_rows(a[None, :], b[None, :])[0])


def check_decay(
    w2: np.ndarray,
    transfer: np.ndarray,
    *,
    groups: np.ndarray | None = None,
    min_n: int = MIN_DECAY_PAIRS,
    seed: int = 0,
) -> Check:
    r"""Statement: Spearman(W2, <g_u, g_v> / ||g_u||^2) < 0 on the pooled real pairs.

    Decided by ``radius.stats.decide`` on a percentile bootstrap interval (direction -1,
    threshold 0): HOLDS when the whole interval is below 0, CONTRADICTED when above,
    INCONCLUSIVE when it contains 0 or rests on fewer than ``min_n`` pairs. With
    ``groups`` (one label per pair, e.g. its anchor) the bootstrap resamples groups, so
    pairs sharing an anchor stay together.
    """
    w2 = np.asarray(w2, dtype=np.float64)
    transfer = np.asarray(transfer, dtype=np.float64)
    ok = np.isfinite(w2) & np.isfinite(transfer)
    a, b = w2[ok], transfer[ok]
    g = np.arange(len(a)) if groups is None else np.asarray(groups)[ok]
    labels, inv = np.unique(g, return_inverse=True)
    members = [np.flatnonzero(inv == j) for j in range(len(labels))]
    n = int(ok.sum())

    def stat(idx: np.ndarray) -> float:
        rows = np.concatenate([members[j] for j in idx]) if len(idx) else np.zeros(0, int)
        return spearman(a[rows], b[rows])

    unit = "pairs" if groups is None else "anchors"
    iv = bootstrap(stat, len(labels), seed=seed, unit=unit)
    iv = Interval(iv.estimate, iv.low, iv.high, iv.level, iv.method, n)
    outcome = decide(iv, direction=-1, threshold=0.0, min_n=min_n)
    note = ""
    if n < min_n:
        note = f"only {n} pairs (need {min_n}): no evidence"
    return Check.from_interval(
        "transfer_decays_with_w2",
        (
            "(output layer, pooled real pairs at the best epoch) Spearman correlation of "
            "W2(q_u, q_v) with <g_u, g_v> / ||g_u||^2 is negative"
        ),
        iv,
        tolerance=(
            f"{iv.level:.0%} bootstrap interval of rho ({unit} resampled) below 0 (holds), "
            f"above 0 (contradicted), else inconclusive; fewer than {min_n} pairs: "
            "inconclusive"
        ),
        min_n=min_n,
        direction=-1,
        note=note if outcome is not Outcome.PASS else "",
        role="statement",
    )


def _seed_spearman(w2: list[np.ndarray], transfer: list[np.ndarray], *, seed: int) -> Interval:
    """Two-stage interval (training seeds, then pairs) of the mean within-seed Spearman
    correlation; ``w2[s]``, ``transfer[s]`` are seed s's pairs (equal counts). The
    (S, U) block given to ``seed_user_interval`` holds codes s * U + j, so each resampled
    row is decoded back to its seed's pairs."""
    s_n = len(w2)
    u_n = min(len(a) for a in w2) if w2 else 0
    codes = np.arange(s_n)[:, None] * max(u_n, 1) + np.arange(u_n)[None, :]  # (S, U)
    w = np.stack([np.asarray(a[:u_n], dtype=np.float64) for a in w2]) if s_n else np.zeros((0, 0))
    t = np.stack([np.asarray(a[:u_n], dtype=np.float64) for a in transfer]) if s_n else w

    def stat(block: np.ndarray) -> float:
        code = block.astype(np.int64)  # (S', U'): one training seed per row
        s_i, j = code // max(u_n, 1), code % max(u_n, 1)
        rhos = _spearman_rows(w[s_i, j], t[s_i, j])
        return float(np.nanmean(rhos)) if np.isfinite(rhos).any() else float("nan")

    return seed_user_interval(codes.astype(np.float64), statistic=stat, seed=seed, unit="pairs")


def _mechanism_decay(
    kind: str, w2: list[np.ndarray], transfer: list[np.ndarray], *, seed: int
) -> Check:
    iv = _seed_spearman(w2, transfer, seed=seed)
    return Check.from_interval(
        f"transfer_decays_with_w2[{kind}]",
        (
            f"({kind} pairs only, best epoch) Spearman correlation of W2 with the normalised "
            "transfer is negative"
        ),
        iv,
        tolerance=(
            f"{iv.level:.0%} two-stage bootstrap (training seeds, then pairs) of the mean "
            f"rho below -{STRATUM_MIN_EFFECT} (holds), above +{STRATUM_MIN_EFFECT} "
            f"(contradicted), inside +-{STRATUM_MIN_EFFECT} (not observed), else inconclusive"
        ),
        min_n=MIN_DECAY_PAIRS,
        direction=-1,
        role="mechanism",
        min_effect=STRATUM_MIN_EFFECT,
    )


# ---------------------------------------------------------------------------- models
def _setting(ctx: VerifyContext, setting: str | None) -> tuple[str, list[str]]:
    """The setting the claim runs on and what was not run because of it."""
    if setting is not None:
        return setting, []
    if not ctx.user_models:
        return SETTING, []
    given = [s for s in FALLBACK if s in (ctx.models or {})]
    if not given:
        raise MissingModelError(
            "T2.3 needs one trained model (pia, masking or clean); none was given",
            ["pia"],
        )
    chosen = given[0]
    notes = []
    if chosen != SETTING:
        notes.append(
            f"the 'pia' model (the paper's, masking + PIA) was not given: T2.3 ran on the "
            f"{chosen!r} model instead (give models={{'pia': ...}} or --checkpoint pia=PATH)"
        )
    return chosen, notes


def models_needed(ctx: VerifyContext) -> list[Any]:
    """The models ``run`` trains (radius's own: one per training seed of the ``pia``
    setting; the along-training weights come from the main one's side file). Empty with
    user models."""
    if ctx.user_models:
        return []
    return list(ctx.seed_configs([SETTING]))


def load_along(
    specs: list[str],
    dataset: Any,
    *,
    factory: str | None = None,
    setting: str = SETTING,
    settings: Mapping[str, Mapping[str, Any]] | None = None,
) -> dict[str, nn.Module]:
    """``LABEL=PATH`` specs (``radius verify --along``) -> {label: model}, in the order
    given: the claim's model (of ``setting``) at earlier training points. Each checkpoint
    is read as ``--checkpoint SETTING=PATH`` reads one (``radius.verify.api.load_models``,
    with the per-setting options ``settings``); errors are ``RadiusError`` (exit 2)."""
    from radius.verify.api import load_models

    out: dict[str, nn.Module] = {}
    for spec in specs:
        label, sep, path = str(spec).partition("=")
        label = label.strip()
        if not sep or not label or not path:
            raise RadiusError(f"--along expects LABEL=PATH (e.g. 'epoch 1=e1.pt'), got {spec!r}")
        if label in out:
            raise RadiusError(f"--along: training point {label!r} given twice")
        out[label] = load_models(
            [f"{setting}={path}"], dataset, factory=factory, settings=settings
        )[setting]
    return out


@dataclass
class _Points:
    labels: list[str]
    models: list[nn.Module]
    epochs: list[int | None]
    source: str
    not_run: list[str]


def _training_points(
    ctx: VerifyContext, setting: str, along: Mapping[str, nn.Module] | None
) -> _Points:
    """The training points examined, in training order, the final model last."""
    final = ctx.model(setting)
    if along is not None:
        from radius.model.wrap import validate

        if not isinstance(along, Mapping):
            raise TypeError(f"along must map labels to models, got {type(along).__name__}")
        labels, models = [], []
        for label, m in along.items():
            if not isinstance(label, str) or not label.strip():
                raise ValueError(f"along: labels must be non-empty strings, got {label!r}")
            validate(m, n_items=ctx.dataset.n_items, name=f"along[{label!r}]")
            labels.append(label.strip())
            models.append(m.cpu().eval())
        return _Points(
            [*labels, "given model"],
            [*models, final],
            [None] * (len(labels) + 1),
            "given (along=...)",
            [],
        )
    how = (
        "pass along={'init': m0, 'epoch 1': m1, ...} (API) or --along LABEL=PATH (CLI, "
        "repeatable) to examine earlier training points"
    )
    if ctx.user_models:
        return _Points(
            ["given model"],
            [final],
            [None],
            "the given model only",
            [f"training points before the given model (initialisation, first epochs): {how}"],
        )
    if ctx.checkpoint is not None:
        return _Points(
            [f"checkpoint {Path(ctx.checkpoint).name}"],
            [final],
            [None],
            "the checkpoint only",
            [f"training points before the checkpoint: {how}"],
        )
    from radius.training.cache import get_along

    got = get_along(ctx.dataset, ctx.config(setting), cache_dir=ctx.cache_dir)
    best = got.best_epoch
    return _Points(
        [*got.models, f"best epoch ({best + 1 if best is not None else '?'})"],
        [*(m.eval() for m in got.models.values()), final],
        [*got.epochs.values(), (best + 1) if best is not None else None],
        f"the cached model's own training run (along-training side file, {got.source})",
        [],
    )


# ---------------------------------------------------------------------------- measurement
@torch.no_grad()
def _encode_all(model: nn.Module, x: sp.csr_matrix) -> torch.Tensor:
    """(mu, sigma) of every row, float32 -> (N, 2d): the W2 search space. radius's models
    encode the sparse rows directly (``encode_sparse``, an embedding bag: work nnz x H);
    other models get dense chunks of about ``BLOCK_BYTES``."""
    from radius.analysis.neighbours import BLOCK_BYTES
    from radius.model.multvae import SparseBatch

    sparse = callable(getattr(model, "encode_sparse", None))
    chunk = 4096 if sparse else max(1, BLOCK_BYTES // (4 * max(x.shape[1], 1)))
    out = []
    for s in range(0, x.shape[0], chunk):
        rows = x[s : s + chunk]
        if sparse:
            mu, lv = model.encode_sparse(SparseBatch.from_csr(rows))
        else:
            mu, lv = model.encode(torch.as_tensor(rows.toarray(), dtype=torch.float32))
        out.append(torch.cat([mu, torch.exp(0.5 * lv)], dim=1).float())
    return torch.cat(out)


def edit_probes(
    x: sp.csr_matrix, anchors: np.ndarray, *, rng: np.random.Generator
) -> tuple[sp.csr_matrix, np.ndarray]:
    """Hypothetical near-duplicate users: each anchor (with >= 2 items) minus one of its
    items, drawn by ``rng``. Constructed probes (``evidence="probe"``): they show the
    radius check works where pairs lie inside, and never decide the claim. Returns the
    (n, I) edited rows and the anchor of each (n,)."""
    x = sp.csr_matrix(x)
    counts = np.diff(x.indptr)
    anchors = np.asarray(anchors, dtype=np.int64)
    anchors = anchors[counts[anchors] >= 2]
    if not len(anchors):
        return sp.csr_matrix((0, x.shape[1]), dtype=x.dtype), np.zeros(0, dtype=np.int64)
    rows = x[anchors].tolil()
    for r, a in enumerate(anchors):
        items = x.indices[x.indptr[a] : x.indptr[a + 1]]
        rows[r, items[rng.integers(0, len(items))]] = 0
    edited = sp.csr_matrix(rows)
    edited.eliminate_zeros()
    return edited, anchors


@dataclass(frozen=True)
class PointMeasurement:
    """What T2.3 measures at one training point (before any verdict).

    pairs (P, 2) kept pairs; kind (P,) ``searched`` / ``jaccard`` / ``latent`` /
    ``random``; slot (P,) the stratum anchor's position (-1 for searched pairs);
    jacc (P,) input Jaccard; pt the exact statistics; lip (P,) the L_thz estimate;
    secant (P,) the largest measured secant ratio; screened (P,) Delta_x / ||g_u|| of
    the float32 screening; search: the screening's summary.
    """

    label: str
    epochs: int | None
    pairs: np.ndarray
    kind: np.ndarray
    slot: np.ndarray
    jacc: np.ndarray
    pt: PairTransfer
    lip: np.ndarray
    secant: np.ndarray
    screened: np.ndarray
    search: dict[str, Any]


@dataclass(frozen=True)
class Measurement:
    """Everything T2.3 measures, before any verdict: the training points, the probes,
    the first-order rows, the other training seeds' strata."""

    setting: str
    points_source: str
    not_run: list[str]
    n_users: int
    n_mc: int
    n_anchors: int
    points: list[PointMeasurement]
    probe: dict[str, Any]
    first_order: dict[str, list[dict[str, Any]]]
    w1_sandwich: list[dict[str, Any]]
    seeds: list[dict[str, np.ndarray]]
    timings: dict[str, float] = field(default_factory=dict)


def _n_anchors(n: int, n_items: int, n_pairs: int) -> int:
    if n * n_items <= ANCHOR_ENTRIES:
        return n
    return int(min(n, max(MIN_ANCHORS, ANCHOR_ENTRIES // max(n_items, 1), n_pairs)))


def _chunk(n_items: int, per_item_bytes: int, *, low: int = 4, high: int = 64) -> int:
    """Rows per chunk so that one chunk's (rows, items) arrays stay near ``CHUNK_BYTES``
    (``per_item_bytes``: bytes per row and item over the arrays alive at once)."""
    return int(np.clip(CHUNK_BYTES // max(1, per_item_bytes * n_items), low, high))


def _exact(
    m64: nn.Module, m32: nn.Module, x: sp.csr_matrix, pairs: np.ndarray, eps64, seed: int
) -> tuple[PairTransfer, np.ndarray, np.ndarray]:
    """Exact statistics, L_thz estimate and secant ratios of ``pairs``; chunks sized by
    the item count (about 7 live (M, I) float64 arrays per pair in ``pair_transfer``,
    about 10 (points, I) float32 arrays per pair in ``pair_lipschitz``)."""
    n_items, m = x.shape[1], eps64.shape[0]
    pt = pair_transfer(
        m64,
        x,
        pairs,
        eps=eps64,
        chunk_size=_chunk(n_items, 7 * 8 * m),
        secant_split=SECANT_SPLIT,
    )
    lip = pair_lipschitz(
        m32,
        x,
        pairs,
        eps=eps64.float(),
        seed=seed,
        n_paths=LIP_PATHS,
        n_segment=LIP_SEGMENT,
        n_iter=LIP_ITER,
        chunk_size=_chunk(n_items, 10 * 4 * LIP_PATHS * LIP_SEGMENT),
    )
    return pt, np.asarray(lip, dtype=np.float64), pt.secant


def _strata_pairs(
    strata_anchors: np.ndarray, jac_first: np.ndarray, w2_first: np.ndarray, partner: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    a = strata_anchors
    k = len(a)
    pairs = np.concatenate(
        [np.stack([a, jac_first], 1), np.stack([a, w2_first], 1), np.stack([a, partner], 1)]
    ).astype(np.int64)
    kind = np.repeat(np.array(STRATA), k)
    slot = np.tile(np.arange(k), 3)
    return pairs, kind, slot


class _PowerLaw:
    """L_thz ~ exp(a) n_v^b, least squares in logs over the strata's estimates (the
    search's proxy: L_thz grows with the stepping user's count n_v); the median where
    fewer than 3 estimates or one count."""

    def __init__(self, n_v: np.ndarray, lip: np.ndarray) -> None:
        ok = np.isfinite(lip) & (lip > 0) & (n_v > 0)
        self.a, self.b = (float(np.log(np.median(lip[ok]))) if ok.any() else 0.0), 0.0
        if ok.sum() >= 3 and np.ptp(np.log(n_v[ok])) > 0:
            design = np.stack([np.ones(ok.sum()), np.log(n_v[ok])], 1)
            self.a, self.b = (
                float(c) for c in np.linalg.lstsq(design, np.log(lip[ok]), rcond=None)[0]
            )
        self.describe = f"exp({self.a:.3g}) n_v^{self.b:.3g} (fitted on the strata)"

    def __call__(self, n_v: np.ndarray) -> np.ndarray:
        return np.exp(self.a) * np.asarray(n_v, dtype=np.float64) ** self.b


def _lipschitz_proxy(n_v: np.ndarray, lip: np.ndarray) -> _PowerLaw:
    return _PowerLaw(np.asarray(n_v, dtype=np.float64), np.asarray(lip, dtype=np.float64))


def _lowest(
    score: np.ndarray, anchors: np.ndarray, cand: np.ndarray, k: int, taken: set
) -> np.ndarray:
    """(row, column) of the k lowest finite scores whose pair (anchor, candidate) is not in
    ``taken`` (which is updated) -> (<= k, 2)."""
    chosen = []
    for flat in np.argsort(score, axis=None, kind="stable"):
        if len(chosen) >= k or not np.isfinite(score.flat[flat]):
            break
        r, c = divmod(int(flat), score.shape[1])
        key = (int(anchors[r]), int(cand[r, c]))
        if key in taken:
            continue
        taken.add(key)
        chosen.append((r, c))
    return np.array(chosen, dtype=np.int64).reshape(-1, 2)


def _measure_point(
    label: str,
    epochs: int | None,
    model: nn.Module,
    x: sp.csr_matrix,
    *,
    anchors: np.ndarray,
    jac_idx: np.ndarray,
    partner: np.ndarray,
    n_strata: int,
    n_search: int,
    n_mc: int,
    seed: int,
    kinds: tuple[str, ...] = STRATA,
) -> PointMeasurement:
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    m32 = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    eps64 = common_eps(n_mc, int(m64.latent_dim), seed=seed, dtype=torch.float64)
    base = _encode_all(m32, x)  # (N, 2d) float32
    w2_idx, _ = euclidean_topk(base[anchors], base, K_CAND, query_index=anchors)
    # strata first: their L_thz estimates set the search's L-hat
    s_pairs, s_kind, s_slot = _strata_pairs(
        anchors[:n_strata], jac_idx[:n_strata, 0], w2_idx[:n_strata, 0], partner[:n_strata]
    )
    sel = np.isin(s_kind, kinds)
    s_pairs, s_kind, s_slot = s_pairs[sel], s_kind[sel], s_slot[sel]
    pt_s, lip_s, sec_s = _exact(m64, m32, x, s_pairs, eps64, seed)
    counts = np.diff(x.indptr).astype(np.float64)
    l_fit = _lipschitz_proxy(counts[s_pairs[:, 1]], lip_s)
    # screening every anchor's Jaccard and W2 candidates over all users
    cand = np.concatenate([jac_idx, w2_idx], axis=1)  # (A, 2K)
    dup = np.zeros_like(cand, dtype=bool)
    for j in range(1, cand.shape[1]):
        dup[:, j] = (cand[:, :j] == cand[:, j : j + 1]).any(axis=1)
    cand = np.where(dup, -1, cand)
    sc = screen_candidates(
        m32, x, anchors, cand, eps=eps64.float(), chunk_size=_chunk(x.shape[1], 3 * 4 * n_mc)
    )
    ok = cand >= 0
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = sc.delta_x / sc.norm_u[:, None]  # (A, 2K)
    w2c = np.full(cand.shape, np.nan)
    rows, cols = np.nonzero(ok)
    diff = base[anchors[rows]].double() - base[cand[rows, cols]].double()
    w2c[rows, cols] = diff.norm(dim=1).numpy()
    l_proxy = np.where(ok, l_fit(counts[np.maximum(cand, 0)]), np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        score = ratio + l_proxy * w2c / sc.norm_u[:, None]  # estimated D / ||g_u||
    score = np.where(ok & np.isfinite(score), score, np.inf)
    taken = {(int(u), int(v)) for u, v in s_pairs}
    short = _lowest(score, anchors, cand, SHORTLIST * n_search, taken)
    short_pairs = np.stack([anchors[short[:, 0]], cand[short[:, 0], short[:, 1]]], 1)
    # the shortlist ranked again with a cheap per-pair L_thz (one path, its two ends)
    lip_cheap = (
        pair_lipschitz(
            m32,
            x,
            short_pairs,
            eps=eps64.float(),
            seed=seed,
            n_paths=1,
            n_segment=2,
            n_iter=3,
            chunk_size=_chunk(x.shape[1], 10 * 4 * 2),
        )
        if len(short)
        else np.zeros(0)
    )
    score1 = (
        ratio[short[:, 0], short[:, 1]]
        + lip_cheap * w2c[short[:, 0], short[:, 1]] / sc.norm_u[short[:, 0]]
    )
    keep = short[np.argsort(score1, kind="stable")[:n_search]]
    if len(keep):
        rr, cc = keep[:, 0], keep[:, 1]
        q_pairs = np.stack([anchors[rr], cand[rr, cc]], 1).astype(np.int64)
        pt_q, lip_q, sec_q = _exact(m64, m32, x, q_pairs, eps64, seed)
        screened_q = ratio[rr, cc]
    else:
        q_pairs = np.zeros((0, 2), np.int64)
        pt_q = pair_transfer(m64, x, q_pairs, eps=eps64)
        lip_q = sec_q = screened_q = np.zeros(0)
    # the strata's screened ratio, where the stratum pair was among the candidates
    slot_of = {(int(anchors[r]), int(cand[r, c])): ratio[r, c] for r, c in zip(rows, cols)}
    screened_s = np.array([slot_of.get((int(u), int(v)), np.nan) for u, v in s_pairs])
    pairs = np.concatenate([q_pairs, s_pairs])
    pt = PairTransfer(
        **{k: np.concatenate([getattr(pt_q, k), getattr(pt_s, k)]) for k in pt_s.__dict__}
    )
    finite = ratio[ok]
    search = {
        "anchors": int(len(anchors)),
        "candidates_screened": int(ok.sum()),
        "fraction_r_share_positive": float((finite < 1).mean()) if finite.size else float("nan"),
        "n_r_share_positive": int((finite < 1).sum()),
        "min_delta_x_over_norm_u": float(np.nanmin(finite)) if finite.size else float("nan"),
        "L_proxy": l_fit.describe,
        "fraction_estimated_inside (L_proxy)": float((score[ok] < 1).mean())
        if ok.any()
        else float("nan"),
        "shortlist": int(len(short)),
        "shortlist_estimated_inside (cheap L)": int((score1 < 1).sum()),
    }
    return PointMeasurement(
        label=label,
        epochs=epochs,
        pairs=pairs,
        kind=np.concatenate([np.array(["searched"] * len(q_pairs)), s_kind]),
        slot=np.concatenate([np.full(len(q_pairs), -1), s_slot]),
        jacc=jaccard_pairs(x, pairs),
        pt=pt,
        lip=np.concatenate([lip_q, lip_s]),
        secant=np.concatenate([sec_q, sec_s]),
        screened=np.concatenate([screened_q, screened_s]),
        search=search,
    )


def _seed_strata(
    model: nn.Module,
    x: sp.csr_matrix,
    *,
    anchors: np.ndarray,
    jac_first: np.ndarray,
    partner: np.ndarray,
    n_mc: int,
    seed: int,
) -> dict[str, np.ndarray]:
    """Another training seed's strata at its best epoch (no radius: inner products, norms
    and W2 only)."""
    m64 = copy.deepcopy(model).to(device="cpu", dtype=torch.float64).eval()
    m32 = copy.deepcopy(model).to(device="cpu", dtype=torch.float32).eval()
    eps64 = common_eps(n_mc, int(m64.latent_dim), seed=seed, dtype=torch.float64)
    base = _encode_all(m32, x)
    w2_idx, _ = euclidean_topk(base[anchors], base, 1, query_index=anchors)
    pairs, kind, _ = _strata_pairs(anchors, jac_first, w2_idx[:, 0], partner)
    pt = pair_transfer(m64, x, pairs, eps=eps64, chunk_size=_chunk(x.shape[1], 7 * 8 * n_mc))
    return {"kind": kind, "inner": pt.inner, "norm_u": pt.norm_u, "w2": pt.w2}


def measure(
    ctx: VerifyContext,
    *,
    setting: str | None = None,
    along: Mapping[str, nn.Module] | None = None,
) -> Measurement:
    """Search pairs and compute every T2.3 statistic at every training point."""
    t0 = time.perf_counter()
    opts = ctx.options
    setting, notes = _setting(ctx, setting)
    points = _training_points(ctx, setting, along)
    rng = np.random.default_rng(opts.seed)
    x = sp.csr_matrix(ctx.dataset.train, dtype=np.float32)
    n = x.shape[0]
    if n < 3:
        raise RadiusError(f"T2.3 needs at least 3 training users, got {n}")
    n_mc = int(min(opts.n_mc, MAX_MC))
    n_anchors = _n_anchors(n, x.shape[1], opts.n_pairs)
    anchors = rng.permutation(n)[:n_anchors].astype(np.int64)
    partner = (anchors + rng.integers(1, n, size=len(anchors))) % n  # a random other user
    n_strata = max(1, min(len(anchors), opts.n_pairs // 4))
    n_search = max(1, opts.n_pairs // 4)
    jac_idx, _ = jaccard_topk(x, K_CAND, rows=anchors)
    t_jac = time.perf_counter()
    measured = [
        _measure_point(
            label,
            ep,
            model,
            x,
            anchors=anchors,
            jac_idx=jac_idx,
            partner=partner,
            n_strata=n_strata,
            n_search=n_search,
            n_mc=n_mc,
            seed=opts.seed,
            kinds=STRATA if i == len(points.labels) - 1 else EARLY_STRATA,
        )
        for i, (label, ep, model) in enumerate(zip(points.labels, points.epochs, points.models))
    ]
    t_points = time.perf_counter()
    # best point extras: first order, edit probes, the W1 sandwich
    final = points.models[-1]
    m64 = copy.deepcopy(final).to(device="cpu", dtype=torch.float64).eval()
    m32 = copy.deepcopy(final).to(device="cpu", dtype=torch.float32).eval()
    eps64 = common_eps(n_mc, int(m64.latent_dim), seed=opts.seed, dtype=torch.float64)
    best = measured[-1]
    with np.errstate(divide="ignore", invalid="ignore"):
        cos = best.pt.inner / (best.pt.norm_u * best.pt.norm_v)
    fo_idx = []
    for k in STRATA:
        idx = np.flatnonzero((best.kind == k) & np.isfinite(cos))
        if len(idx):
            fo_idx.append(int(idx[np.argmax(np.abs(cos[idx]))]))
    fo_idx = fo_idx[:N_FIRST_ORDER]
    first_order: dict[str, list[dict[str, Any]]] = {}
    for ps in ("output", "decoder"):
        rows = []
        for i in fo_idx:
            res = first_order_residuals(
                m64,
                x,
                (int(best.pairs[i, 0]), int(best.pairs[i, 1])),
                etas=STEP_LENGTHS,
                relative_step=True,
                eps=eps64,
                param_set=ps,
            )
            rows.append(
                {
                    "pair": best.pairs[i].tolist(),
                    "kind": str(best.kind[i]),
                    "slope": res.slope,
                    "inner": res.inner,
                    "inner_factorised": float(best.pt.inner[i]) if ps == "output" else None,
                    "norm_v": res.norm_v,
                    "etas": res.etas,
                    "delta_loss": res.delta_loss,
                    "predicted": res.predicted,
                    "residual": res.residual,
                }
            )
        first_order[ps] = rows
    t_fo = time.perf_counter()
    edited, edit_anchor = edit_probes(
        x, anchors[: max(1, int(EDIT_FRACTION * opts.n_pairs))], rng=rng
    )
    xp = sp.vstack([x, edited.astype(np.float32)]).tocsr()
    probe_pairs = np.stack([edit_anchor, n + np.arange(len(edit_anchor))], 1).astype(np.int64)
    if len(probe_pairs):
        pt_p, lip_p, _ = _exact(m64, m32, xp, probe_pairs, eps64, opts.seed)
    else:
        pt_p, lip_p = pair_transfer(m64, xp, probe_pairs, eps=eps64), np.zeros(0)
    probe = {"pairs": probe_pairs, "pt": pt_p, "lip": lip_p}
    t_probe = time.perf_counter()
    emp = []
    w1_rng = np.random.default_rng(opts.seed + 1)
    for i in np.flatnonzero(best.kind == "jaccard")[:N_EMPIRICAL_W1]:
        u, v = best.pairs[i]
        with torch.no_grad():
            mu, lv = m64.encode(torch.as_tensor(x[[u, v]].toarray(), dtype=torch.float64))
        sd = torch.exp(0.5 * lv).numpy()
        d = mu.shape[1]
        su = mu[0].numpy() + sd[0] * w1_rng.standard_normal((EMPIRICAL_W1_SAMPLES, d))
        sv = mu[1].numpy() + sd[1] * w1_rng.standard_normal((EMPIRICAL_W1_SAMPLES, d))
        emp.append(
            {
                "pair": [int(u), int(v)],
                "mu_dist (W1 lower)": float(best.pt.mu_dist[i]),
                "w2 (W1 upper)": float(best.pt.w2[i]),
                "w1_pot_emd (biased upward)": w1_empirical(su, sv).value,
            }
        )
    # the other training seeds' strata at their best epoch (mechanism intervals)
    seed_models = ctx.seed_models(setting)
    strata_anchors = anchors[:n_strata]
    seeds = [
        {
            "kind": best.kind[best.kind != "searched"],
            "inner": best.pt.inner[best.kind != "searched"],
            "norm_u": best.pt.norm_u[best.kind != "searched"],
            "w2": best.pt.w2[best.kind != "searched"],
        }
    ]
    for m in seed_models[1:]:
        seeds.append(
            _seed_strata(
                m,
                x,
                anchors=strata_anchors,
                jac_first=jac_idx[:n_strata, 0],
                partner=partner[:n_strata],
                n_mc=n_mc,
                seed=opts.seed,
            )
        )
    t_seeds = time.perf_counter()
    return Measurement(
        setting=setting,
        points_source=points.source,
        not_run=[*notes, *points.not_run],
        n_users=int(n),
        n_mc=n_mc,
        n_anchors=int(len(anchors)),
        points=measured,
        probe=probe,
        first_order=first_order,
        w1_sandwich=emp,
        seeds=seeds,
        timings={
            "jaccard_search": t_jac - t0,
            "training_points": t_points - t_jac,
            "first_order": t_fo - t_points,
            "probes": t_probe - t_fo,
            "seeds_and_w1": t_seeds - t_probe,
        },
    )


_CACHE: dict[str, Any] = {}


def _along_key(along: Mapping[str, nn.Module] | None) -> Any:
    if along is None:
        return None
    if not isinstance(along, Mapping):
        raise TypeError(f"along must map labels to models, got {type(along).__name__}")
    return tuple((k, id(v)) for k, v in along.items())


def _measured(
    ctx: VerifyContext, setting: str | None, along: Mapping[str, nn.Module] | None
) -> Measurement:
    """``measure`` once per context and arguments (``run`` then ``power`` share it)."""
    key = (
        setting,
        _along_key(along),
        ctx.options,
        str(ctx.checkpoint),
        repr(sorted(ctx.base_config.key_dict().items())),
        ctx.dataset.hash,
    )
    ref = _CACHE.get("ctx")
    if ref is not None and ref() is ctx and _CACHE.get("key") == key:
        return _CACHE["measurement"]
    m = measure(ctx, setting=setting, along=along)
    _CACHE.clear()
    _CACHE.update(ctx=weakref.ref(ctx), key=key, measurement=m)
    return m


@dataclass(frozen=True)
class _Pooled:
    """The real cases of every training point, concatenated (point index ``point``)."""

    point: np.ndarray
    kind: np.ndarray
    slot: np.ndarray
    pairs: np.ndarray
    lip: np.ndarray
    secant: np.ndarray
    screened: np.ndarray
    inner: np.ndarray
    norm_u: np.ndarray
    diff_norm: np.ndarray
    delta_x: np.ndarray
    w2: np.ndarray
    mu_dist: np.ndarray
    path_gap: np.ndarray


def _pool(m: Measurement) -> _Pooled:
    cat = np.concatenate
    return _Pooled(
        point=cat([np.full(len(p.pairs), i) for i, p in enumerate(m.points)]),
        kind=cat([p.kind for p in m.points]),
        slot=cat([p.slot for p in m.points]),
        pairs=cat([p.pairs for p in m.points]),
        lip=cat([p.lip for p in m.points]),
        secant=cat([p.secant for p in m.points]),
        screened=cat([p.screened for p in m.points]),
        **{
            k: cat([getattr(p.pt, k) for p in m.points])
            for k in ("inner", "norm_u", "diff_norm", "delta_x", "w2", "mu_dist", "path_gap")
        },
    )


def _permute(values: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A ``fraction`` of ``values`` permuted among themselves (power and negative control:
    the latent distance no longer belongs to its pair)."""
    out = np.array(values, dtype=np.float64, copy=True)
    if fraction <= 0 or len(out) < 2:
        return out
    pick = rng.choice(len(out), size=int(round(fraction * len(out))), replace=False)
    out[pick] = out[rng.permutation(pick)]
    return out


def _radius_distance(m: Measurement, pooled: _Pooled, r_share: np.ndarray) -> tuple[str, list]:
    """How far the data are from the radius's premise, per training point (note + rows)."""
    rows, parts = [], []
    for i, p in enumerate(m.points):
        sel = pooled.point == i
        with np.errstate(divide="ignore", invalid="ignore"):
            rr = r_share[sel] / pooled.mu_dist[sel]
        rr = rr[np.isfinite(rr)]
        ratio = float(rr.max()) if len(rr) else float("nan")
        rows.append({"label": p.label, "max_r_share_over_mu_dist": ratio})
        parts.append(
            f"{p.label}: r_share > 0 for {p.search['fraction_r_share_positive']:.2%} of "
            f"{p.search['candidates_screened']} screened candidates, max r_share / "
            f"||mu_u - mu_v|| {ratio:.3g}"
        )
    return "; ".join(parts), rows


def _slope(row: dict[str, Any], scale: float) -> float:
    """The first-order residual's log-log slope with the prediction multiplied by ``scale``
    (1 is the claim; -1 or 2 plant a wrong formula: the residual is then first order)."""
    predicted = -float(scale) * row["etas"] * row["inner"]
    return loglog_slope(row["etas"], np.abs(row["delta_loss"] - predicted))


def _checks(
    m: Measurement,
    *,
    min_fraction: float,
    seed: int,
    lipschitz_scale: float = 1.0,
    delta_x_scale: float = 1.0,
    shuffle_fraction: float = 0.0,
    shuffle_seed: int | None = None,
    first_order_scale: float = 1.0,
    mechanism: bool = True,
    decay: bool = True,
) -> tuple[list[Check], dict[str, Any]]:
    """The checks of one measurement, with the power / negative-control knobs applied;
    ``mechanism=False`` / ``decay=False`` leave out the (bootstrapped) mechanism checks /
    the decay statement (the power table's other rows need neither)."""
    pooled = _pool(m)
    lip = lipschitz_scale * pooled.lip
    bound = transfer_bound(lip, pooled.w2, pooled.delta_x)
    r_share = sharing_radius(pooled.norm_u, delta_x_scale * pooled.delta_x, lip)
    with np.errstate(divide="ignore", invalid="ignore"):
        norm_transfer = pooled.inner / pooled.norm_u**2
        exact_ratio = pooled.delta_x / pooled.norm_u
    shuffle_rng = np.random.default_rng(seed + 7 if shuffle_seed is None else shuffle_seed)
    checks = [
        check_first_order(
            np.array([_slope(r, first_order_scale) for r in m.first_order[ps]]), param_set=ps
        )
        for ps in ("output", "decoder")
    ]
    checks.append(check_search(pooled.screened, exact_ratio))
    checks.append(
        check_transfer_bound(
            pooled.diff_norm,
            bound,
            min_fraction=min_fraction,
            delta_x=pooled.delta_x,
            bound_weak=transfer_bound(0.1 * lip, pooled.w2, pooled.delta_x),
        )
    )
    distance, _ = _radius_distance(m, pooled, r_share)
    checks.append(
        check_radius(
            pooled.inner, pooled.w2, r_share, mu_dist=pooled.mu_dist, distance_note=distance
        )
    )
    best = len(m.points) - 1
    strat = (pooled.point == best) & (pooled.kind != "searched")
    w2_decay = _permute(pooled.w2[strat], shuffle_fraction, shuffle_rng)
    checks.append(check_decay(w2_decay, norm_transfer[strat], groups=pooled.slot[strat], seed=seed))
    checks.append(check_lipschitz(lip, pooled.secant))
    # constructed probes at the best epoch (implementation)
    pp = m.probe["pt"]
    lip_p = lipschitz_scale * m.probe["lip"]
    checks.append(
        check_transfer_bound(
            pp.diff_norm,
            transfer_bound(lip_p, pp.w2, pp.delta_x),
            min_fraction=min_fraction,
            delta_x=pp.delta_x,
            evidence="probe",
        )
    )
    checks.append(
        check_radius(
            pp.inner,
            pp.w2,
            sharing_radius(pp.norm_u, delta_x_scale * pp.delta_x, lip_p),
            evidence="probe",
        )
    )
    if mechanism:
        checks += _mechanism_checks(
            m, pooled, r_share, seed=seed, shuffle_fraction=shuffle_fraction, rng=shuffle_rng
        )
    return checks, {
        "pooled": pooled,
        "lip": lip,
        "bound": bound,
        "r_share": r_share,
        "norm_transfer": norm_transfer,
    }


def _mechanism_checks(
    m: Measurement,
    pooled: _Pooled,
    r_share: np.ndarray,
    *,
    seed: int,
    shuffle_fraction: float,
    rng: np.random.Generator,
) -> list[Check]:
    out = []
    n_seeds = len(m.seeds)
    one_seed = "; one training run: the interval carries no seed spread" if n_seeds == 1 else ""
    for k in STRATA:
        w2s, ts = [], []
        for sd in m.seeds:
            sel = sd["kind"] == k
            w2s.append(_permute(sd["w2"][sel], shuffle_fraction, rng))
            with np.errstate(divide="ignore", invalid="ignore"):
                ts.append(sd["inner"][sel] / sd["norm_u"][sel] ** 2)
        c = _mechanism_decay(k, w2s, ts, seed=seed)
        out.append(c.replace(note=c.note + one_seed) if c.note else c)
    # near neighbours transfer positively more often than random users (paired by anchor)
    diff = []
    for sd in m.seeds:
        pos_j = (sd["inner"][sd["kind"] == "jaccard"] > 0).astype(float)
        pos_r = (sd["inner"][sd["kind"] == "random"] > 0).astype(float)
        diff.append(pos_j - pos_r)
    iv = seed_user_interval(np.stack(diff), seed=seed, unit="anchors")
    c = Check.from_interval(
        "near_transfer_exceeds_random",
        (
            "(best epoch) share of anchors whose nearest Jaccard neighbour transfers "
            "positively minus the share whose random partner does"
        ),
        iv,
        tolerance=(
            f"{iv.level:.0%} two-stage bootstrap (training seeds, then anchors) above "
            f"+{NEAR_MIN_EFFECT} (holds), below -{NEAR_MIN_EFFECT} (contradicted), inside "
            f"+-{NEAR_MIN_EFFECT} (not observed), else inconclusive"
        ),
        min_n=MIN_DECAY_PAIRS,
        direction=+1,
        role="mechanism",
        min_effect=NEAR_MIN_EFFECT,
    )
    out.append(c.replace(note=c.note + one_seed) if c.note else c)
    # the radius's tightness: near-neighbour cases transferring positively that it certifies
    near = pooled.kind == "jaccard"
    pos = pooled.inner[near] > 0
    inside = pooled.w2[near] < r_share[near]
    code = np.where(pos & inside, 2.0, np.where(pos, 1.0, 0.0))[None, :]

    def tight(block: np.ndarray) -> float:
        n_pos = float((block >= 1).sum())
        return float((block == 2).sum()) / n_pos if n_pos else float("nan")

    iv = seed_user_interval(code, statistic=tight, seed=seed, unit="cases")
    c = Check.from_interval(
        "radius_certifies_transfer",
        (
            "(near-neighbour stratum, every training point) share of the positively "
            "transferring cases that lie inside r_share (the radius's tightness)"
        ),
        iv,
        tolerance=(
            f"{iv.level:.0%} bootstrap over (anchor, training point) cases above "
            f"{TIGHTNESS_MIN_EFFECT} (holds), inside +-{TIGHTNESS_MIN_EFFECT} (not observed), "
            "else inconclusive"
        ),
        min_n=MIN_DECAY_PAIRS,
        direction=+1,
        role="mechanism",
        min_effect=TIGHTNESS_MIN_EFFECT,
    )
    along = " (along one training run: no seed spread)"
    out.append(c.replace(note=c.note + along) if c.note else c)
    return out


def _summary(a: np.ndarray) -> dict[str, float]:
    a = np.asarray(a, dtype=np.float64)
    a = a[np.isfinite(a)]
    if not len(a):
        return {"n": 0}
    q = np.quantile(a, [0.0, 0.1, 0.5, 0.9, 1.0])
    return {"n": len(a), "min": q[0], "p10": q[1], "median": q[2], "p90": q[3], "max": q[4]}


def _binomial(k: int, n: int) -> dict[str, Any]:
    """k of n with its exact (Clopper-Pearson) 95% interval."""
    if n == 0:
        return {"k": 0, "n": 0, "fraction": None, "interval": None}
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    return {"k": k, "n": n, "fraction": k / n, "interval": [float(ci.low), float(ci.high)]}


def _point_details(m: Measurement, a: dict[str, Any]) -> list[dict[str, Any]]:
    """Per training point: the search, the radius and transfer inside it, pair rows."""
    pooled = a["pooled"]
    out = []
    for i, p in enumerate(m.points):
        sel = pooled.point == i
        r = a["r_share"][sel]
        w2 = pooled.w2[sel]
        inner = pooled.inner[sel]
        kind = pooled.kind[sel]
        inside = w2 < r
        pos = inner > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            r_mu = r / pooled.mu_dist[sel]
            r_w2 = r / w2
        per_kind = {
            k: {
                "n": int((kind == k).sum()),
                "fraction_positive_transfer": float(pos[kind == k].mean())
                if (kind == k).any()
                else None,
                "n_r_share_positive": int((r[kind == k] > 0).sum()),
                "n_inside": int(inside[kind == k].sum()),
                "w2": _summary(w2[kind == k]),
                "spearman_w2_transfer": spearman(w2[kind == k], a["norm_transfer"][sel][kind == k])
                if (kind == k).sum() >= 3
                else None,
            }
            for k in ("searched", *STRATA)
        }
        near = kind == "jaccard"
        rows_idx = np.arange(int(sel.sum()))
        if len(rows_idx) > N_ROWS:
            keep = np.unique(
                np.concatenate(
                    [np.flatnonzero(inside), np.flatnonzero(kind == "searched")[: N_ROWS // 2]]
                    + [np.flatnonzero(kind == k)[: N_ROWS // 6] for k in STRATA]
                )
            )
        else:
            keep = rows_idx
        pairs = pooled.pairs[sel]
        rows = [
            {
                "u": int(pairs[j, 0]),
                "v": int(pairs[j, 1]),
                "kind": str(kind[j]),
                "jaccard": float(p.jacc[j]),
                "w2": float(w2[j]),
                "mu_dist": float(pooled.mu_dist[sel][j]),
                "inner": float(inner[j]),
                "norm_u": float(pooled.norm_u[sel][j]),
                "normalised_transfer": float(a["norm_transfer"][sel][j]),
                "diff_norm": float(pooled.diff_norm[sel][j]),
                "delta_x": float(pooled.delta_x[sel][j]),
                "lipschitz": float(a["lip"][sel][j]),
                "secant": float(pooled.secant[sel][j]),
                "bound": float(a["bound"][sel][j]),
                "r_share": float(r[j]),
                "inside": bool(inside[j]),
            }
            for j in keep
        ]
        out.append(
            {
                "label": p.label,
                "epochs": p.epochs,
                "search": p.search,
                "n_pairs": int(sel.sum()),
                "n_r_share_positive": int((r > 0).sum()),
                "fraction_r_share_positive": float((r > 0).mean()),
                "n_inside": int(inside.sum()),
                "fraction_inside": float(inside.mean()),
                "positive_inside": _binomial(int((inside & pos).sum()), int(inside.sum())),
                "max_r_share_over_mu_dist": float(np.nanmax(r_mu))
                if np.isfinite(r_mu).any()
                else None,
                "max_r_share_over_w2": float(np.nanmax(r_w2)) if np.isfinite(r_w2).any() else None,
                "fraction_bound_holds": float(
                    _holds(pooled.diff_norm[sel], a["bound"][sel]).mean()
                ),
                "near_positive_transfer": _binomial(int(pos[near].sum()), int(near.sum())),
                "tightness_near": _binomial(
                    int((inside & pos & near).sum()), int((pos & near).sum())
                ),
                "spearman_w2_transfer_strata": spearman(
                    w2[kind != "searched"], a["norm_transfer"][sel][kind != "searched"]
                ),
                "per_kind": per_kind,
                "rows": rows,
            }
        )
    return out


def run(
    ctx: VerifyContext,
    *,
    setting: str | None = None,
    along: Mapping[str, nn.Module] | None = None,
    lipschitz_scale: float = 1.0,
    delta_x_scale: float = 1.0,
    first_order_scale: float = 1.0,
    shuffle_latent: bool | float = False,
) -> ClaimResult:
    """Verify T2.3 along training on the training users.

    Parameters
    ----------
    setting : the setting whose model is examined (default: ``pia``; with user models
        the first of pia, masking, clean given).
    along : {label: model} the same model at earlier training points, in training order
        (user models; radius's own come from the cache's along-training side file).
    lipschitz_scale, delta_x_scale, first_order_scale, shuffle_latent : negative controls
        and the power table: L_thz multiplied (0.01 plants a wrong constant), Delta_x in
        r_share multiplied (below 1 the radius is inflated for every pair: pairs outside
        count as inside), the first-order prediction multiplied
        (-1 or 2 plant a wrong formula), W2 permuted among the pooled pairs of the decay
        checks (``True`` = all of them, a float = that fraction).
    """
    t0 = time.perf_counter()
    opts = ctx.options
    m = _measured(ctx, setting, along)
    shuffle_fraction = (
        float(shuffle_latent)
        if not isinstance(shuffle_latent, bool)
        else (1.0 if shuffle_latent else 0.0)
    )
    checks, a = _checks(
        m,
        min_fraction=opts.min_fraction,
        seed=opts.seed,
        lipschitz_scale=lipschitz_scale,
        delta_x_scale=delta_x_scale,
        shuffle_fraction=shuffle_fraction,
        first_order_scale=first_order_scale,
    )
    pooled = a["pooled"]
    points = _point_details(m, a)
    holds = _holds(pooled.diff_norm, a["bound"])
    holds0 = _holds(pooled.diff_norm, pooled.delta_x)
    inside = pooled.w2 < a["r_share"]
    with np.errstate(divide="ignore", invalid="ignore"):
        latent_share = a["lip"] * pooled.w2 / a["bound"]
        latent_used = pooled.path_gap / (a["lip"] * pooled.w2)
    pp = m.probe["pt"]
    n_probe_inside = int(
        (
            pp.w2
            < sharing_radius(
                pp.norm_u, delta_x_scale * pp.delta_x, lipschitz_scale * m.probe["lip"]
            )
        ).sum()
    )
    details = {
        "setting": m.setting,
        "users": "training users, clean input",
        "n_users": m.n_users,
        "n_mc": m.n_mc,
        "training_points_source": m.points_source,
        "parts_not_run": list(m.not_run),
        "parameter_sets": {
            "statement, assumption, mechanism": PARAM_SET_NAMES["output"],
            "first order": [PARAM_SET_NAMES["output"], PARAM_SET_NAMES["decoder"]],
        },
        "search": {
            "anchors": m.n_anchors,
            "candidates": (
                f"each anchor's {K_CAND} nearest other training users by input Jaccard and "
                f"its {K_CAND} nearest by latent W2 at the training point, over all "
                f"{m.n_users} training users (radius.analysis.neighbours)"
            ),
            "screening": (
                "||g_u|| and Delta_x(u, v) of every candidate in float32 on the same "
                f"{m.n_mc} common-random-number samples (radius.analysis.transfer."
                "screen_candidates); r_share > 0 iff Delta_x < ||g_u||"
            ),
            "kept": (
                "the candidates with the smallest (Delta_x + L_hat W2) / ||g_u|| "
                "('searched', L_hat the median L_thz estimate of the strata at the point; "
                "W2 < r_share iff this is < 1), plus strata of the same anchors at every "
                "point: nearest Jaccard neighbour, nearest W2 neighbour, a random user"
            ),
            "cases": (
                "a (pair, training point) is one case: a pair kept at two points counts "
                "twice, each at its own model"
            ),
        },
        "training_points": points,
        "lipschitz": {
            "estimate": (
                f"max over {LIP_PATHS} coupled paths x {LIP_SEGMENT} points (t = 0..1) of a "
                f"{LIP_ITER}-step power iteration on J^T J (float32), per pair"
            ),
            "scale_applied": lipschitz_scale,
            "summary": _summary(a["lip"]),
            "secant_over_estimate": _summary(pooled.secant / a["lip"]),
        },
        "delta_x_scale_in_r_share": delta_x_scale,
        "shuffle_latent": shuffle_fraction,
        "n_cases": int(len(pooled.inner)),
        "n_r_share_positive": int((a["r_share"] > 0).sum()),
        "n_inside_radius": int(inside.sum()),
        "n_inside_radius_probe": n_probe_inside,
        "bound_with_and_without_latent_term": {
            "fraction_holds_with_latent": float(holds.mean()) if len(holds) else None,
            "fraction_holds_delta_x_only": float(holds0.mean()) if len(holds0) else None,
            "D_with_latent": _summary(a["bound"]),
            "D_delta_x_only": _summary(pooled.delta_x),
            "latent_share_of_D": _summary(latent_share),
            "latent_term_used (mean path gap / (L_thz W2))": _summary(latent_used),
        },
        "first_order": {
            "step_lengths (eta ||g_v||)": STEP_LENGTHS,
            "first_order_scale": first_order_scale,
            **m.first_order,
        },
        "w1_sandwich_with_pot": m.w1_sandwich,
        "seeds": len(m.seeds),
        "key_numbers": {
            "training points": ", ".join(p["label"] for p in points),
            "cases (pair, point)": int(len(pooled.inner)),
            "cases inside r_share": int(inside.sum()),
            **{
                f"{p['label']}: r_share > 0 (screened)": p["search"]["fraction_r_share_positive"]
                for p in points
            },
            **{f"{p['label']}: inside (kept)": p["n_inside"] for p in points},
            **{
                f"{p['label']}: max r_share / ||mu_u - mu_v||": p["max_r_share_over_mu_dist"]
                for p in points
            },
            "bound holds, D = L W2 + Delta_x": float(holds.mean()) if len(holds) else None,
            "bound holds, D = Delta_x (L_thz = 0)": float(holds0.mean()) if len(holds0) else None,
        },
        "timings_s": {**m.timings, "checks": time.perf_counter() - t0},
    }
    method = (
        "At each training point: float32 encodings of every training user; each anchor's "
        "Jaccard and W2 nearest neighbours over all users; ||g_u|| and Delta_x screened "
        "for every candidate (float32, same samples); the pairs with the smallest "
        "(Delta_x + L_hat W2) / ||g_u|| and three strata kept; float64 output-layer "
        "<g_u, g_v>, ||g_u||, ||g_v - g_u||, Delta_x from factorised Gram sums "
        "(radius.analysis.transfer.pair_transfer); W2 closed form; L_thz estimated per pair "
        "by power iteration on the coupling segments (pair_lipschitz) and checked against "
        "measured secant ratios (path_secants); first order by finite differences at the "
        "best epoch. Decay: Spearman on the pooled strata, bootstrap over anchors; "
        "mechanism intervals over training seeds, then anchors (radius.stats."
        "seed_user_interval)."
    )
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=method,
        details=details,
        context=ctx.describe(),
    )


# ---------------------------------------------------------------------------- power
LIPSCHITZ_GRADES: tuple[float, ...] = (0.9, 0.5, 0.1, 0.01, 0.0)
RADIUS_GRADES: tuple[float, ...] = (0.9, 0.5, 0.1, 0.0)  # Delta_x scaled in r_share
SHUFFLE_GRADES: tuple[float, ...] = (0.25, 0.5, 1.0)
N_PERMUTATIONS = 5  # independent permutations per shuffle grade


def power(
    ctx: VerifyContext,
    *,
    setting: str | None = None,
    along: Mapping[str, nn.Module] | None = None,
) -> list[PowerRow]:
    """Graded perturbations of the real trained model's T2.3 statistics.

    * ``transfer_bound`` and ``lipschitz_covers_secants``: the estimated L_thz scaled by
      0.9, 0.5, 0.1, 0.01 and 0 (the last is D = Delta_x alone);
    * ``positive_inside_radius``: the radius inflated, r_share = [||g_u|| - s Delta_x]_+ /
      L_thz with s = 0.9, 0.5, 0.1, 0 (pairs outside the radius counted as inside; a
      multiple of r_share would leave every r_share = 0 pair outside);
    * ``transfer_decays_with_w2``: W2 permuted among 25%, 50% and 100% of the pooled
      pairs; each grade is ``N_PERMUTATIONS`` permutations, reported by its most
      frequent outcome (ties go to INCONCLUSIVE) and median rho.
    """
    opts = ctx.options
    m = _measured(ctx, setting, along)
    kw = {"min_fraction": opts.min_fraction, "seed": opts.seed, "mechanism": False}
    base = {c.name: c for c in _checks(m, **kw)[0]}
    graded_l = {
        g: {c.name: c for c in _checks(m, lipschitz_scale=g, decay=False, **kw)[0]}
        for g in LIPSCHITZ_GRADES
    }
    graded_r = {
        g: {c.name: c for c in _checks(m, delta_x_scale=g, decay=False, **kw)[0]}
        for g in RADIUS_GRADES
    }
    rows = [
        PowerRow.from_grades(
            name,
            "bound",
            perturbation,
            base[name].outcome,
            [(f"x{g:g}", graded[g][name].outcome, graded[g][name].measured) for g in graded],
            note=note,
        )
        for name, perturbation, graded, note in (
            (
                "transfer_bound",
                "estimated L_thz scaled",
                graded_l,
                "measured: fraction of real cases holding",
            ),
            (
                "lipschitz_covers_secants",
                "estimated L_thz scaled",
                graded_l,
                "measured: largest secant ratio / L_thz estimate",
            ),
            (
                "positive_inside_radius",
                "r_share inflated: Delta_x scaled in it (pairs outside count as inside)",
                graded_r,
                "measured: fraction positive among real cases inside",
            ),
        )
    ]
    name = "transfer_decays_with_w2"
    grades = []
    for g in SHUFFLE_GRADES:
        runs = [
            {
                c.name: c
                for c in _checks(m, shuffle_fraction=g, shuffle_seed=opts.seed + 7 + r, **kw)[0]
            }[name]
            for r in range(N_PERMUTATIONS)
        ]
        outs = [c.outcome for c in runs]
        mode = max(Outcome, key=lambda o, outs=outs: (outs.count(o), o is Outcome.INCONCLUSIVE))
        grades.append((f"{g:.0%}", mode, float(np.nanmedian([c.measured for c in runs]))))
    rows.append(
        PowerRow.from_grades(
            name,
            "empirical",
            "W2 permuted among the pooled pairs (fraction)",
            base[name].outcome,
            grades,
            note=f"outcome: most frequent over {N_PERMUTATIONS} permutations; measured: their "
            "median Spearman rho",
        )
    )
    return rows
