r"""T2.5 Compromise gap: clean inputs push content-mismatched users apart.

The statement as proved (theory.md, "T2.5"; a reconstruction). For the multinomial
decoder, with weights :math:`w = q(z)` and :math:`p_u = x_u / n_u`, the best shared output
:math:`\bar p = (w_u n_u p_u + w_v n_v p_v) / (w_u n_u + w_v n_v)` leaves the pointwise
excess :math:`\Delta(z) = w_u n_u KL(p_u\|\bar p) + w_v n_v KL(p_v\|\bar p) \ge 0`, and the
compromise gap :math:`G(u, v) = \int\Delta\,dz` is (i) positive whenever
:math:`p_u \ne p_v` and the posteriors overlap and (ii) grows as the posteriors are moved
together. Everything below is measured on the test users' fold-in rows; latent codes are
the inference means :math:`\mu_\phi(x)` on the clean input (b = 1).

Statement (decides the verdict; on the real trained clean model's user pairs, half
uniform random pairs, half l1-nearest neighbours of random users, G by stratified
mixture sampling with common random numbers, ``radius.analysis.gap``):

* ``gap_positive_where_posteriors_overlap``: at the pairs' trained posteriors, every pair
  with :math:`p_u \ne p_v` whose posteriors overlap (Bhattacharyya coefficient
  :math:`BC(q_u, q_v) \ge` ``BC_MIN``) has :math:`\hat G > 0`. Derivation: (i) is the
  claim itself; :math:`\Delta(z) > 0` wherever :math:`w_u w_v > 0` and
  :math:`p_u \ne p_v`, and :math:`\hat G` averages :math:`\Delta/(q_u + q_v) \ge 0` over
  draws, so one positive draw proves G > 0. No real pair overlapping: VACUOUS, with the
  largest BC measured.
* ``gap_grows_as_posteriors_move_together``: for every such pair, moving
  :math:`\mu_v` onto :math:`\mu_u` in steps :math:`\mu_v(\lambda) = \mu_u +
  \lambda(\mu_v - \mu_u)`, :math:`\lambda = 1 \to 0` (:math:`\lambda = 1` the trained
  posterior), no step lowers G by more than ``z_fw`` standard errors of the step
  (common-noise difference; ``z_fw`` the one-sided normal quantile at family-wise false
  alarm ``FAMILY_FALSE_ALARM`` over all steps), and the total rise
  :math:`G(0) - G(1)` exceeds ``z_fw`` of its standard error (a pair the first draws
  cannot resolve is redrawn once, independently, with ``GAP_REFINE`` times the draws;
  a rise certainly below ``GAP_ZERO_TOL`` (n_u + n_v) is a violation). Derivation: (ii) is the
  claim itself, read along the straight path that moves the means together.

Both are properties of the loss that no trained model can violate (they hold for any
posteriors and rows), so they carry ``weak``: a PASS reads "holds; weak evidence". A
wrong shared output (``p_bar="unweighted"``) is the negative control that makes them
and the identities FAIL.

Implementation (identities of the formula on the same real posteriors; a failure is a
bug in radius): ``gap_nonnegative`` (every pair and step), ``gap_zero_identical_inputs``,
``gap_zero_without_overlap`` (:math:`\mu_v` 1000 sigma away), ``gap_positive_at_coinciding
_means`` (:math:`\lambda = 0`).

Mechanism (the paper's informal consequences in trained models; never decide). Each is
decided from a two-stage bootstrap interval (``radius.stats.seed_user_interval``: the
``ctx.options.seeds`` training seeds of each setting, then the pairs or users) against a
minimum effect stated before computing (``MIN_EFFECT_*``); the per-seed values and their
spread are in each note:

* ``spearman_input_vs_latent_clean``: Spearman(:math:`d_x`, W2) of the clean model >
  ``MIN_EFFECT_TRACKING`` with the activity-controlled input distance
  :math:`d_x = \|x_u/\|x_u\|_2 - x_v/\|x_v\|_2\|_2` (raw l1 distance, dominated by
  activity, is reported beside it);
* ``contrast_clean_vs_masking`` / ``contrast_clean_vs_pia``: :math:`\rho_{clean} -
  \rho_{other} >` ``MIN_EFFECT_CONTRAST``, the same pairs for both models;
* ``cohort_silhouette_clean_gt_masking`` / ``..._gt_pia``: the mean per-user silhouette
  of activity-cohort labels on :math:`\mu`, clean minus the other, >
  ``MIN_EFFECT_SILHOUETTE``, paired on the same users (at most ``SIL_SAMPLE``). Its
  premise is that some model clusters by cohort at all (its silhouette interval lies
  above 0); where none does, both read NOT OBSERVED (VACUOUS) with every model's
  silhouette in the note.

Claims run on what was given: the clean model is needed for everything; without the
masking (PIA) model the parts that need it are listed in ``details["parts_not_run"]``.

Cost follows the samples (issue 18): the fold-in rows stay sparse, input distances come
from sparse row products, only the sampled users (pair ends, silhouette users) are
encoded, in chunks of at most ``ENCODE_CHUNK_ELEMENTS`` dense entries, by the model in its
own float32 (no float64 copy of a model whose size grows with the items), and nothing is
users x items dense.

``power(ctx)``: graded perturbations of the real models for each mechanism check (against
a line that HOLDS: latent codes permuted among a growing fraction of users; for one that
does not: a growing multiple of the input distance added to the clean pairs' W2, or a
planted cohort offset in the latent means). The statement checks are weak and have no
power row.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp
import torch
from scipy.stats import norm

from radius.analysis.gap import compromise_gap_path, log_bhattacharyya
from radius.analysis.geometry import w2_diag
from radius.analysis.lipschitz import binary_l1_nearest
from radius.data.dataset import COHORTS, cohort_of
from radius.model.multvae import SparseBatch
from radius.model.protocol import input_convention
from radius.stats import (
    BOOTSTRAP_LEVEL,
    Interval,
    Outcome,
    bootstrap,
    seed_spread,
    seed_user_interval,
)
from radius.training.config import TrainConfig
from radius.verify.base import Check, ClaimResult, PowerRow, interval_note
from radius.verify.context import MissingModelError, VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "MIN_EFFECT_TRACKING",
    "MIN_EFFECT_CONTRAST",
    "MIN_EFFECT_SILHOUETTE",
    "models_needed",
    "spearman",
    "spearman_interval",
    "seed_pair_interval",
    "tracking_check",
    "contrast_check",
    "cohort_structure",
    "silhouette_check",
    "silhouette_per_user",
    "positive_check",
    "seed_note",
    "mechanism_check",
    "growth_check",
    "run",
    "power",
]

CLAIM_ID = "2.5"
TITLE = "Compromise gap: clean inputs push content-mismatched users apart (T2.5)"
STATEMENT = (
    "Reconstruction. For the multinomial decoder, with w_u = q_u(z), w_v = q_v(z) and "
    "p_u = x_u / n_u, the pointwise excess loss of the best shared output "
    "p_bar = (w_u n_u p_u + w_v n_v p_v) / (w_u n_u + w_v n_v) is "
    "Delta(z) = w_u n_u KL(p_u || p_bar) + w_v n_v KL(p_v || p_bar) >= 0, zero iff p_u = p_v "
    "or w_u w_v = 0; the compromise gap G(u, v) = int Delta dz is positive when p_u != p_v "
    "and the posteriors overlap, and grows as the posteriors are moved together (checked at "
    "the trained clean model's posteriors of real user pairs). Mechanism (the paper's "
    "consequences in trained models, over training seeds, never deciding): under clean "
    "input, latent W2 increases with the distance of the L2-normalised inputs (activity "
    "controlled), more so than under masking and masking + PIA (same pairs), and activity "
    "cohorts separate more in latent space (silhouette of cohort labels on mu) for clean "
    "input than for masking and masking + PIA."
)
RECONSTRUCTION = True

SETTINGS_USED = ("clean", "masking", "pia")
LAMBDAS = (1.0, 0.75, 0.5, 0.25, 0.0)  # mu_v(lambda) = mu_u + lambda (mu_v - mu_u)
GAP_ZERO_TOL = 1e-9  # |G| <= tol * (n_u + n_v) for "G = 0"
NONNEG_TOL = 1e-12  # G >= -tol * (n_u + n_v)
BC_MIN = 1e-6  # "the posteriors overlap": Bhattacharyya coefficient >= BC_MIN
FAMILY_FALSE_ALARM = 1e-3  # family-wise false alarm of the path-step tolerance
GAP_MAX_PAIRS = 200  # pairs of the exact-gap part; 60 with quick options
GAP_MAX_PAIRS_QUICK = 60
GAP_MAX_MC = 1000  # draws per mixture component of the exact gap
GAP_REFINE = 8  # pairs whose rise is unresolved are redrawn with this many times the draws
N_CONTROL_PAIRS = 20  # pairs of the identical-input and far-apart identities
FAR_SIGMAS = 1000.0  # "no overlap": mu_v moved this many sigmas away
CONTROLS = (None, "permuted_inputs")
P_BAR_KINDS = ("optimal", "unweighted")
MIN_PAIRS = 20  # fewer pairs: INCONCLUSIVE
MIN_USERS = 20  # fewer silhouette users: INCONCLUSIVE
SIL_SAMPLE = 2000  # silhouette users (silhouette is O(n^2))
ENCODE_CHUNK_ELEMENTS = 4_000_000  # dense entries of one encoder chunk (rows x items)
NN_CHUNK_ELEMENTS = 2_000_000  # (anchors x users) entries of one nearest-neighbour chunk
# minimum effects, stated before computing (mechanism checks)
MIN_EFFECT_TRACKING = 0.1  # Spearman rho: a "small" rank correlation
MIN_EFFECT_CONTRAST = 0.05  # difference of two Spearman rhos on the same pairs
MIN_EFFECT_SILHOUETTE = 0.02  # difference of mean silhouettes (range [-1, 1])


def models_needed(ctx: VerifyContext) -> list[TrainConfig]:
    """The configs T2.5 trains: clean, masking and PIA for every training seed ([] for
    user models)."""
    return ctx.seed_configs(SETTINGS_USED)


# --------------------------------------------------------------------------- data access
def _encode(
    model: torch.nn.Module, x: sp.csr_matrix, rows: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """mu, logvar (R, d), returned as float64, of ``model.encode`` in its own float32 on
    the rows ``rows`` of a sparse matrix, chunk by chunk: through the model's own
    ``encode_sparse`` when it has one (radius's models), else densified (at most
    ``ENCODE_CHUNK_ELEMENTS`` entries at once) for the protocol's ``encode``. No float64
    copy of the model: its size grows with the item count, and the gap's Monte Carlo error
    (1e-3 relative) is far above float32 rounding of the posteriors."""
    m = model.cpu().eval()
    dtype = next((p.dtype for p in m.parameters()), torch.float32)
    sparse_path = callable(getattr(m, "encode_sparse", None))  # radius's models: same maths
    step = max(1, min(1024, ENCODE_CHUNK_ELEMENTS // max(1, x.shape[1])))
    mus, lvs = [], []
    with torch.no_grad():
        for s in range(0, rows.size, step):
            chunk = x[rows[s : s + step]]
            if sparse_path:
                batch = SparseBatch.from_csr(chunk)
                mu, lv = m.encode_sparse(batch.with_values(batch.values.to(dtype)))
            else:
                mu, lv = m.encode(torch.as_tensor(chunk.toarray(), dtype=dtype))  # (C, I)
            mus.append(mu.detach().to(torch.float64).numpy())
            lvs.append(lv.detach().to(torch.float64).numpy())
    if not mus:
        d = int(getattr(model, "latent_dim", 0))
        return np.zeros((0, d)), np.zeros((0, d))
    return np.concatenate(mus), np.concatenate(lvs)


def _pair_distances(x: sp.csr_matrix, a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, ...]:
    """Sparse, per pair: ||x_a/|x_a|_2 - x_b/|x_b|_2||_2 and the raw ||x_a - x_b||_1.

    The first is :math:`\\sqrt{2 - 2\\cos(x_a, x_b)}`, rounded to 12 decimals so that
    pairs in one tie class (most random pairs share no item: exactly :math:`\\sqrt2`)
    stay exact ties for the rank correlation instead of being ordered by rounding noise.
    """
    xa, xb = x[a].astype(np.float64), x[b].astype(np.float64)
    na = np.sqrt(np.asarray(xa.multiply(xa).sum(axis=1)).ravel())
    nb = np.sqrt(np.asarray(xb.multiply(xb).sum(axis=1)).ravel())
    dot = np.asarray(xa.multiply(xb).sum(axis=1)).ravel()
    cos = dot / np.maximum(na * nb, 1e-300)
    dist = np.round(np.sqrt(np.clip(2.0 - 2.0 * cos, 0.0, None)), 12)
    l1 = np.asarray(abs(xa - xb).sum(axis=1)).ravel()
    return dist, l1


def _random_pairs(n: int, k: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """k uniform pairs of distinct indices in range(n)."""
    a = rng.integers(0, n, size=k)
    b = (a + rng.integers(1, n, size=k)) % n
    return a, b


# --------------------------------------------------------------------------- statement
def _quantiles(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"n": int(v.size), "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]}


def positive_check(g_trained: np.ndarray, log_bc: np.ndarray) -> Check:
    """Statement (i): G > 0 on every pair (with p_u != p_v) whose trained posteriors
    overlap (BC >= ``BC_MIN``); VACUOUS when no pair's posteriors overlap."""
    g_trained, log_bc = np.asarray(g_trained, float), np.asarray(log_bc, float)
    over = log_bc >= math.log(BC_MIN)
    n = int(over.sum())
    pos = g_trained > 0
    frac = float(pos[over].mean()) if n else 0.0
    max_bc = float(np.exp(log_bc.max())) if log_bc.size else float("nan")
    tol = f"every pair with p_u != p_v and BC(q_u, q_v) >= {BC_MIN:g}: G > 0 in float64"
    if n == 0:
        outcome = Outcome.VACUOUS
        note = (
            f"no pair's trained posteriors overlap (BC >= {BC_MIN:g}) among {log_bc.size} "
            f"pairs: the largest BC is {max_bc:.3g}; G > 0 was still resolved on "
            f"{int(pos.sum())} of them"
            if log_bc.size
            else "no pair with p_u != p_v"
        )
    elif frac < 1.0:
        outcome = Outcome.FAIL
        note = (
            f"G = 0 on {n - int(pos[over].sum())} of {n} overlapping pairs (smallest BC among "
            f"them {float(np.exp(log_bc[over & ~pos].min())):.3g})"
        )
    else:
        outcome = Outcome.PASS
        note = (
            f"{n} of {log_bc.size} pairs overlap (largest BC {max_bc:.3g}); G > 0 on all "
            f"{int(pos.sum())} pairs, overlapping or not"
        )
    return Check(
        "gap_positive_where_posteriors_overlap",
        "G(u, v) > 0 at the trained clean posteriors of real pairs with p_u != p_v whose "
        "posteriors overlap",
        frac,
        1.0,
        frac - 1.0,
        tol,
        outcome is Outcome.PASS,
        n,
        kind="bound",
        outcome=outcome,
        note=note,
        role="statement",
        weak="Delta(z) > 0 wherever both posteriors have mass and p_u != p_v: a property "
        "of the multinomial loss that holds for any posteriors",
    )


def _z_family(n_tests: int) -> float:
    """One-sided normal quantile at family-wise false alarm ``FAMILY_FALSE_ALARM``
    spread over ``n_tests`` (Bonferroni)."""
    return float(norm.isf(FAMILY_FALSE_ALARM / max(1, n_tests)))


def growth_check(
    values: np.ndarray,
    step_se: np.ndarray,
    rise_se: np.ndarray,
    scale: np.ndarray | None = None,
) -> Check:
    """Statement (ii): G grows along the path lambda = 1 -> 0 on every pair.

    values (P, L) along the path, step_se (P, L - 1) and rise_se (P,) the common-noise
    standard errors of the steps and of G(0) - G(1); scale (P,) n_u + n_v (default 1).
    A violation (FAIL) is a step below ``-z_fw`` step s.e., or a pair whose rise is
    certainly nil (G(0) - G(1) + z_fw s.e. <= ``GAP_ZERO_TOL`` n: G flat along the path).
    With none, a rise within ``z_fw`` s.e. on some pair leaves the check INCONCLUSIVE
    (Monte Carlo resolution, not a violation).
    """
    values = np.asarray(values, float).reshape(-1, len(LAMBDAS))
    step_se = np.asarray(step_se, float).reshape(values.shape[0], values.shape[1] - 1)
    rise_se = np.asarray(rise_se, float).ravel()
    n = int(values.shape[0])
    scale = np.ones(n) if scale is None else np.asarray(scale, float).ravel()
    z = _z_family(n * (values.shape[1] - 1))
    steps = np.diff(values, axis=1)  # (P, L-1), >= 0 when G grows
    with np.errstate(divide="ignore", invalid="ignore"):
        zs = np.where(step_se > 0, steps / step_se, np.where(steps < 0, -np.inf, 0.0))
    rise = values[:, -1] - values[:, 0] if n else np.zeros(0)
    resolved = rise > z * rise_se
    flat = rise + z * rise_se <= GAP_ZERO_TOL * scale  # certainly no growth
    bad = np.concatenate([zs < -z, flat[:, None]], axis=1)
    n_bad = int(bad.any(axis=1).sum())
    n_unres = int((~resolved).sum())
    tol = (
        f"every pair with p_u != p_v: no step lower by more than z = {z:.2f} step s.e. "
        f"(common noise; one-sided, family-wise false alarm {FAMILY_FALSE_ALARM:g} over "
        f"{n * (len(LAMBDAS) - 1)} steps) and G(0) - G(1) > z s.e. (FAIL when certainly "
        f"<= {GAP_ZERO_TOL:g} (n_u + n_v))"
    )
    if n == 0:
        outcome, note = Outcome.INCONCLUSIVE, "no pair with p_u != p_v"
    elif n_bad:
        k, j = np.unravel_index(int(np.argmin(zs)), zs.shape)
        outcome = Outcome.FAIL
        note = (
            f"G does not grow along the path on {n_bad} of {n} pairs ({int(flat.sum())} "
            f"flat: G(0) - G(1) <= {GAP_ZERO_TOL:g} (n_u + n_v)); worst step lambda "
            f"{LAMBDAS[j]:g} -> {LAMBDAS[j + 1]:g} changes G by {steps[k, j]:+.4g} "
            f"({zs[k, j]:.1f} s.e., tolerance -{z:.2f})"
        )
    elif n_unres:
        outcome = Outcome.INCONCLUSIVE
        note = (
            f"no step falls, but the rise G(0) - G(1) is within {z:.2f} s.e. on {n_unres} of "
            f"{n} pairs: Monte Carlo resolution, not a violation"
        )
    else:
        outcome = Outcome.PASS
        note = (
            f"G rises on all {n} pairs (median G(1) {float(np.median(values[:, 0])):.3g}, "
            f"G(0) {float(np.median(values[:, -1])):.3g}); smallest step "
            f"{float(zs.min()):+.1f} s.e."
        )
    frac = float((~bad.any(axis=1) & resolved).mean()) if n else 0.0
    return Check(
        "gap_grows_as_posteriors_move_together",
        "G grows as mu_v moves from the trained posterior onto mu_u (lambda = "
        + ", ".join(f"{v:g}" for v in LAMBDAS)
        + ")",
        frac,
        1.0,
        frac - 1.0,
        tol,
        outcome is Outcome.PASS,
        n,
        kind="bound",
        outcome=outcome,
        note=note,
        role="statement",
        weak="G is an f-divergence-like functional of the two posteriors that grows as they "
        "are moved together for any posteriors and rows: a property of the loss, not of "
        "the trained model",
    )


def _gap_part(
    ctx: VerifyContext,
    x: sp.csr_matrix,
    users: np.ndarray,
    model: torch.nn.Module,
    *,
    p_bar: str,
    rng: np.random.Generator,
) -> tuple[list[Check], dict[str, Any]]:
    """Exact gaps of real pairs at the clean model's trained posteriors (float64)."""
    opts = ctx.options
    n_pairs = min(opts.n_pairs, GAP_MAX_PAIRS_QUICK if opts.quick else GAP_MAX_PAIRS)
    n_mc = min(opts.n_mc, GAP_MAX_MC)
    n_rand = n_pairs - n_pairs // 2
    ra, rb = _random_pairs(users.size, n_rand, rng)
    anchors = rng.integers(0, users.size, size=n_pairs // 2)
    support = x[users].astype(bool).astype(np.int8).tocsr()  # neighbours by support
    # (chunk, U) int64 products per chunk: at most NN_CHUNK_ELEMENTS entries at once
    nb, _ = binary_l1_nearest(
        support, anchors, chunk_size=max(1, min(256, NN_CHUNK_ELEMENTS // users.size))
    )
    ia, ib = np.concatenate([ra, anchors]), np.concatenate([rb, nb])
    kind = ["random"] * n_rand + ["nn"] * (n_pairs // 2)
    ends, inv = np.unique(np.concatenate([ia, ib]), return_inverse=True)
    mu_e, lv_e = _encode(model, x, users[ends])
    ka, kb = inv[:n_pairs], inv[n_pairs:]
    mu_a, lv_a, mu_b, lv_b = mu_e[ka], lv_e[ka], mu_e[kb], lv_e[kb]
    log_bc = log_bhattacharyya(mu_a, lv_a, mu_b, lv_b)
    lam = np.asarray(LAMBDAS)[:, None]  # (L, 1)
    seeds = rng.integers(2**31, size=n_pairs)
    vals, step_se, rise_se, ub, nsum, differ = [], [], [], [], [], []
    g_same, g_far, tol_same, tol_far = [], [], [], []
    for k in range(n_pairs):
        xa = x[users[ia[k]]].toarray().ravel().astype(np.float64)  # (I,) one row at a time
        xb = x[users[ib[k]]].toarray().ravel().astype(np.float64)
        mu_path = mu_a[k] + lam * (mu_b[k] - mu_a[k])[None, :]  # (L, d)
        lv_path = np.broadcast_to(lv_b[k], mu_path.shape)
        path = compromise_gap_path(
            xa, xb, mu_a[k], lv_a[k], mu_path, lv_path,
            n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
        )  # fmt: skip
        vals.append(path.values)
        step_se.append(path.step_std_errors)
        rise_se.append(path.rise_std_error)
        ub.append(path.upper_bound)
        nsum.append(xa.sum() + xb.sum())
        differ.append(not np.allclose(xa / xa.sum(), xb / xb.sum(), rtol=0.0, atol=1e-15))
        if k < N_CONTROL_PAIRS:  # identities: identical inputs, posteriors far apart
            same = compromise_gap_path(
                xa, xa, mu_a[k], lv_a[k], mu_b[k][None, :], lv_b[k][None, :],
                n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
            )  # fmt: skip
            g_same.append(same.values[0])
            tol_same.append(GAP_ZERO_TOL * 2 * xa.sum())
            far = mu_a[k].copy()
            far[0] += FAR_SIGMAS * np.exp(0.5 * np.maximum(lv_a[k], lv_b[k])).max()
            apart = compromise_gap_path(
                xa, xb, mu_a[k], lv_a[k], far[None, :], lv_b[k][None, :],
                n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
            )  # fmt: skip
            g_far.append(apart.values[0])
            tol_far.append(GAP_ZERO_TOL * nsum[-1])
    vals, step_se = np.array(vals).reshape(n_pairs, -1), np.array(step_se).reshape(n_pairs, -1)
    rise_se, ub, nsum = np.array(rise_se), np.array(ub), np.array(nsum)
    differ = np.array(differ, dtype=bool)
    # pairs whose rise the first draws cannot resolve (no step falling): fresh draws,
    # GAP_REFINE times as many; the decision uses only the fresh, independent estimate
    z = _z_family(int(differ.sum()) * (len(LAMBDAS) - 1))
    falls = np.any(np.diff(vals, axis=1) < -z * step_se, axis=1)
    refine = np.flatnonzero(differ & ~falls & (vals[:, -1] - vals[:, 0] <= z * rise_se))
    for k in refine:
        xa = x[users[ia[k]]].toarray().ravel().astype(np.float64)
        xb = x[users[ib[k]]].toarray().ravel().astype(np.float64)
        mu_path = mu_a[k] + lam * (mu_b[k] - mu_a[k])[None, :]
        path = compromise_gap_path(
            xa, xb, mu_a[k], lv_a[k], mu_path, np.broadcast_to(lv_b[k], mu_path.shape),
            n_samples=GAP_REFINE * n_mc, seed=int(seeds[k]) + 1, p_bar=p_bar,
        )  # fmt: skip
        vals[k], step_se[k], rise_se[k] = path.values, path.step_std_errors, path.rise_std_error
    g_same, g_far = np.array(g_same), np.array(g_far)
    tol_same, tol_far = np.array(tol_same), np.array(tol_far)
    n_ctrl = int(g_same.size)
    neg_floor = -NONNEG_TOL * nsum[:, None]
    pos0 = vals[:, -1] > 0
    n_diff = int(differ.sum())
    checks = [
        positive_check(vals[differ, 0], log_bc[differ]),
        growth_check(vals[differ], step_se[differ], rise_se[differ], nsum[differ]),
        Check(
            "gap_nonnegative",
            "G(u, v) >= 0 on every pair and every step of the path",
            float(vals.min()) if vals.size else float("nan"),
            0.0,
            float((vals - neg_floor).min()) if vals.size else float("nan"),
            f"every (pair, step): G >= -{NONNEG_TOL:g} (n_u + n_v)",
            bool(vals.size > 0 and np.all(vals >= neg_floor)),
            int(vals.size),
            kind="identity",
            role="implementation",
            note=""
            if vals.size and np.all(vals >= neg_floor)
            else f"G = {float(vals.min()):.3g} < 0 on some (pair, step)",
        ),  # fmt: skip
        _zero_check(
            "gap_zero_identical_inputs",
            "G(u, u') = 0 when x_u = x_u' (control pairs, real posteriors of two users)",
            g_same,
            tol_same,
        ),
        _zero_check(
            "gap_zero_without_overlap",
            f"G(u, v) = 0 when mu_v is moved {FAR_SIGMAS:g} sigma away (no overlap)",
            g_far,
            tol_far,
        ),
        Check(
            "gap_positive_at_coinciding_means",
            "G(u, v) > 0 when p_u != p_v and the means coincide (lambda = 0)",
            float(pos0[differ].mean()) if n_diff else 0.0,
            1.0,
            float(pos0[differ].mean()) - 1.0 if n_diff else -1.0,
            "every pair with p_u != p_v: G(lambda=0) > 0 (float64)",
            bool(n_diff > 0 and np.all(pos0[differ])),
            n_diff,
            kind="identity",
            role="implementation",
            note=""
            if n_diff and np.all(pos0[differ])
            else f"G(lambda=0) = 0 on {int((~pos0[differ]).sum())} of {n_diff} pairs"
            if n_diff
            else "no pair with p_u != p_v",
        ),  # fmt: skip
    ]
    ratio = vals / np.where(ub > 0, ub, 1.0)[:, None]
    over = log_bc >= math.log(BC_MIN)
    info = {
        "n_pairs": n_pairs,
        "n_pairs_differ": n_diff,
        "n_control_pairs": n_ctrl,
        "n_mc_per_component": n_mc,
        "n_pairs_refined": int(refine.size),
        "n_mc_refined": GAP_REFINE * n_mc,
        "caps": {
            "n_pairs_requested": opts.n_pairs,
            "n_pairs_cap": GAP_MAX_PAIRS_QUICK if opts.quick else GAP_MAX_PAIRS,
            "n_mc_requested": opts.n_mc,
            "n_mc_cap": GAP_MAX_MC,
            "why": "the exact gap costs pairs x path steps x draws x (distinct item classes); "
            "--n-pairs and --n-mc above the caps do not enlarge it",
        },
        "lambdas": list(LAMBDAS),
        "p_bar": p_bar,
        "pair_sampling": "half uniform random pairs of test users, half l1-nearest neighbours "
        "(by support) of random test users",
        "overlap": {
            "bc_min": BC_MIN,
            "n_overlapping": int(over[differ].sum()),
            "fraction_overlapping_random": float(over[:n_rand].mean()) if n_rand else None,
            "fraction_overlapping_nn": float(over[n_rand:].mean()) if n_pairs > n_rand else None,
            "log_bc": _quantiles(log_bc),
        },
        "gap_over_upper_bound_at_trained": _quantiles(ratio[:, 0]),
        "gap_over_upper_bound_at_coinciding_means": _quantiles(ratio[:, -1]),
        "rows": [
            {
                "kind": kind[k],
                "u": int(users[ia[k]]),
                "v": int(users[ib[k]]),
                "n_u": int(nsum[k] - x[users[ib[k]]].sum()),
                "n_v": int(x[users[ib[k]]].sum()),
                "log_bc": float(log_bc[k]),
                "w2": float(w2_diag(mu_a[k], lv_a[k], mu_b[k], lv_b[k])),
                "gap": [float(g) for g in vals[k]],
                "std_error_rise": float(rise_se[k]),
                "upper_bound": float(ub[k]),
            }
            for k in range(min(n_pairs, 100))
        ],
    }
    return checks, info


def _zero_check(name: str, description: str, g: np.ndarray, tol: np.ndarray) -> Check:
    n = int(g.size)
    ok = bool(n > 0 and np.all(np.abs(g) <= tol))
    worst = float(np.abs(g).max()) if n else float("nan")
    return Check(
        name,
        description,
        worst,
        float(tol.max()) if n else 0.0,
        float((tol - np.abs(g)).min()) if n else float("nan"),
        f"every control pair: |G| <= {GAP_ZERO_TOL:g} (n_u + n_v)",
        ok,
        n,
        kind="identity",
        role="implementation",
        note="" if ok else (f"|G| up to {worst:.3g} > tolerance" if n else "no control pair"),
    )


# --------------------------------------------------------------------------- mechanism
def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when a side is constant."""
    return float(_spearman_rows(np.asarray(a, float), np.asarray(b, float)[None, :])[0])


def _spearman_rows(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman of ``a`` (P,) with every row of ``b`` (R, P): (R,), NaN for a constant side."""
    keys = _tie_keys(np.vstack([a[None, :], b]))
    return _spearman_keys(keys, np.arange(keys.shape[1]))


def _tie_keys(v: np.ndarray) -> np.ndarray:
    """(R, P) int keys per row: equal values get equal keys, ordered as the values."""
    return np.stack([np.unique(row, return_inverse=True)[1].ravel() for row in v])


def _spearman_keys(keys: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Spearman of row 0 with rows 1.. of ``keys[:, idx]`` (R, P) tie keys (``_tie_keys``).

    Average ranks (ties share the mean of their positions) from counts, without sorting:
    for each row, ``rank(key) = cum_count(key) - (count(key) - 1) / 2``; then Pearson.
    """
    k = keys[:, idx]  # (R, P')
    r_n, n_keys = k.shape[0], int(keys.max()) + 1 if keys.size else 1
    flat = k + (np.arange(r_n) * n_keys)[:, None]
    counts = np.bincount(flat.ravel(), minlength=r_n * n_keys).reshape(r_n, n_keys)
    avg = np.cumsum(counts, axis=1) - (counts - 1) / 2.0  # (R, n_keys) 1-based mean ranks
    r = np.take_along_axis(avg, k, axis=1)
    r -= r.mean(axis=1, keepdims=True)
    num = r[1:] @ r[0]
    den = np.sqrt((r[1:] ** 2).sum(axis=1) * float((r[0] ** 2).sum()))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


def spearman_interval(
    dist: np.ndarray, w2: np.ndarray, *, level: float = BOOTSTRAP_LEVEL, seed: int = 0
) -> Interval:
    """Percentile-bootstrap interval of Spearman(dist, w2) over the pairs (one model)."""
    dist, w2 = np.asarray(dist, dtype=np.float64), np.asarray(w2, dtype=np.float64)
    if dist.shape != w2.shape or dist.ndim != 1:
        raise ValueError(f"dist {dist.shape} and w2 {w2.shape} must be 1-D of the same length")
    return bootstrap(lambda i: spearman(dist[i], w2[i]), dist.size, level=level, seed=seed,
                     unit="pairs")  # fmt: skip


def seed_pair_interval(
    statistic: Callable[[np.ndarray, np.ndarray], float],
    n_seeds: int,
    n_units: int,
    *,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    unit: str = "pairs",
) -> Interval:
    """``radius.stats.seed_user_interval`` for a statistic that is not a mean over units.

    ``statistic(seed_rows (S',), unit_idx (U',))`` evaluates the quantity on resampled
    training seeds and units (e.g. a Spearman correlation over the resampled pairs,
    averaged over the resampled seeds). The two-stage bootstrap runs over the index grid
    ``s * n_units + u``, so each draw resamples seeds, then units, exactly as for a mean.
    """
    if n_seeds < 1:
        raise ValueError(f"n_seeds must be >= 1, got {n_seeds}")
    grid = np.arange(n_seeds * n_units, dtype=np.float64).reshape(n_seeds, n_units)

    def stat(block: np.ndarray) -> float:
        idx = block.astype(np.int64)
        return float(statistic(idx[:, 0] // n_units, idx[0] % n_units))

    return seed_user_interval(grid, level=level, seed=seed, statistic=stat, unit=unit)


def _as_rows(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"{name} must be (seeds, units) or (units,), got shape {a.shape}")
    return a


def seed_note(iv: Interval, min_effect: float) -> str:
    """Per-seed values and their spread beside the stated minimum effect (the note of every
    mechanism line; P3.1 uses it too)."""
    if not iv.seeds:
        return ""
    per = ", ".join(f"{v:+.4f}" for v in iv.seeds)
    if len(iv.seeds) < 2:
        return f"one training seed ({per}): the interval carries no training spread"
    sd = seed_spread(iv.seeds)["std"]
    return (
        f"per training seed {per} (seed-to-seed sd {sd:.4f} against the stated minimum "
        f"effect {min_effect:g})"
    )


def mechanism_check(
    name: str,
    description: str,
    iv: Interval,
    *,
    min_effect: float,
    min_n: int,
    tolerance: str,
    prefix: str = "",
) -> Check:
    """A mechanism check decided from ``iv`` against ``min_effect`` (above 0), its note
    with the per-seed values (and, when it does not HOLD, the interval in words)."""
    from radius.stats import decide

    outcome = decide(iv, direction=+1, threshold=0.0, min_n=min_n, min_effect=min_effect)
    parts = [prefix] if prefix else []
    if outcome is not Outcome.PASS:
        parts.append(interval_note(iv, outcome, min_effect=min_effect, min_n=min_n))
    parts.append(seed_note(iv, min_effect))
    return Check.from_interval(
        name, description, iv, tolerance=tolerance, min_n=min_n, min_effect=min_effect,
        role="mechanism", note="; ".join(p for p in parts if p),
    )  # fmt: skip


def tracking_check(
    dist: np.ndarray,
    w2: np.ndarray,
    *,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    min_effect: float = MIN_EFFECT_TRACKING,
    name: str = "spearman_input_vs_latent_clean",
    what: str = "clean model",
) -> Check:
    """Mechanism: Spearman(activity-free input distance, latent W2) > ``min_effect``.

    dist (P,); w2 (S, P) per training seed (or (P,) for one); the interval is the
    two-stage bootstrap (seeds, then pairs) of the seed-averaged Spearman.
    """
    dist, w2 = np.asarray(dist, dtype=np.float64), _as_rows(w2, "w2")
    if w2.shape[1] != dist.size:
        raise ValueError(f"w2 has {w2.shape[1]} pairs, dist {dist.size}")
    keys = _tie_keys(np.vstack([dist[None, :], w2]))  # (1 + S, P)
    iv = seed_pair_interval(
        lambda s, p: float(np.mean(_spearman_keys(keys[np.r_[0, 1 + s]], p))),
        w2.shape[0], dist.size, level=level, seed=seed,
    )  # fmt: skip
    return mechanism_check(
        name,
        f"{what}: Spearman(||x_u/|x_u| - x_v/|x_v|||_2, W2(q_u, q_v)) > {min_effect:g}",
        iv,
        min_effect=min_effect,
        min_n=MIN_PAIRS,
        tolerance=f"{level:g} two-stage bootstrap interval (training seeds, then pairs) above "
        f"{min_effect:g} (HOLDS), below -{min_effect:g} (CONTRADICTED), inside "
        f"+-{min_effect:g} (NOT OBSERVED), else INCONCLUSIVE; >= {MIN_PAIRS} pairs",
    )


def contrast_check(
    dist: np.ndarray,
    w2_clean: np.ndarray,
    w2_other: np.ndarray,
    *,
    other: str,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    min_effect: float = MIN_EFFECT_CONTRAST,
) -> Check:
    """Mechanism: latent distance tracks input distance more under clean input than under
    ``other``: rho_clean - rho_other > ``min_effect`` on the same pairs.

    w2_clean, w2_other (S, P): row k of each is training seed k (the first min(S_clean,
    S_other) rows are paired); each bootstrap draw resamples seed rows, then pairs, once
    for both models.
    """
    dist = np.asarray(dist, dtype=np.float64)
    a, b = _as_rows(w2_clean, "w2_clean"), _as_rows(w2_other, "w2_other")
    if not (a.shape[1] == b.shape[1] == dist.size):
        raise ValueError(
            f"dist {dist.shape}, w2_clean {a.shape} and w2_other {b.shape} must share the pairs"
        )
    s = min(a.shape[0], b.shape[0])
    a, b = a[:s], b[:s]

    keys = _tie_keys(np.vstack([dist[None, :], a, b]))  # (1 + 2S, P)

    def stat(rows: np.ndarray, p: np.ndarray) -> float:
        r = _spearman_keys(keys[np.r_[0, 1 + rows, 1 + s + rows]], p)
        return float(np.mean(r[: rows.size] - r[rows.size :]))

    iv = seed_pair_interval(stat, s, dist.size, level=level, seed=seed, unit="pairs (paired)")
    label = "masking + PIA" if other == "pia" else other
    return mechanism_check(
        f"contrast_clean_vs_{other}",
        f"Spearman(input distance, W2) is higher for clean input than for {label} by more "
        f"than {min_effect:g} (same pairs; L2-normalised inputs: activity removed)",
        iv,
        min_effect=min_effect,
        min_n=MIN_PAIRS,
        tolerance=f"{level:g} two-stage bootstrap interval (training seeds, then the same "
        f"pairs for both models) of rho_clean - rho_{other} above {min_effect:g} (HOLDS), "
        f"below -{min_effect:g} (CONTRADICTED), inside +-{min_effect:g} (NOT OBSERVED), "
        f"else INCONCLUSIVE; >= {MIN_PAIRS} pairs",
    )


def silhouette_per_user(mu: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per-user silhouette (sklearn, Euclidean) of ``labels`` on rows of ``mu``; None when
    fewer than 2 cohorts or 3 users are present."""
    from sklearn.metrics import silhouette_samples

    if np.unique(labels).size < 2 or labels.size < 3:
        return None
    return silhouette_samples(np.asarray(mu, dtype=np.float64), labels)


def cohort_structure(
    sil: Mapping[str, np.ndarray], *, level: float = BOOTSTRAP_LEVEL, seed: int = 0
) -> dict[str, Interval]:
    """Each model's mean silhouette (S, U per-user values) with its two-stage interval:
    a model clusters by cohort when its interval lies wholly above 0."""
    return {
        s: seed_user_interval(_as_rows(v, s), level=level, seed=seed, unit="users")
        for s, v in sil.items()
    }


def silhouette_check(
    sil_clean: np.ndarray,
    sil_other: np.ndarray,
    *,
    other: str = "pia",
    structure: Mapping[str, Interval] | None = None,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    min_effect: float = MIN_EFFECT_SILHOUETTE,
) -> Check:
    """Mechanism: the mean per-user silhouette of cohort labels on mu is higher for clean
    input than for ``other`` by more than ``min_effect``.

    sil_clean, sil_other (S, U): per-user silhouettes per training seed on the same users
    (rows paired by seed). ``structure`` (``cohort_structure``) is the premise: when no
    model's silhouette interval lies above 0, no model clusters by cohort at all and the
    check is NOT OBSERVED (VACUOUS), whatever the difference.
    """
    a, b = _as_rows(sil_clean, "sil_clean"), _as_rows(sil_other, "sil_other")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"per-user silhouettes differ in users: {a.shape} vs {b.shape}")
    s = min(a.shape[0], b.shape[0])
    iv = seed_user_interval(a[:s] - b[:s], level=level, seed=seed, unit="users (paired)")
    label = "masking + PIA" if other == "pia" else other
    c = mechanism_check(
        f"cohort_silhouette_clean_gt_{other}",
        f"silhouette(activity-cohort labels, mu) is higher for clean input than for {label} "
        f"by more than {min_effect:g}",
        iv,
        min_effect=min_effect,
        min_n=MIN_USERS,
        tolerance=f"{level:g} two-stage bootstrap interval (training seeds, then users; "
        f"labels fixed) of the mean per-user silhouette difference above {min_effect:g} "
        f"(HOLDS), below -{min_effect:g} (CONTRADICTED), inside +-{min_effect:g} (NOT "
        f"OBSERVED), else INCONCLUSIVE; NOT OBSERVED when no model's silhouette interval "
        f"lies above 0 (no cohort structure); >= {MIN_USERS} users",
    )
    if structure and not any(v.defined and v.low > 0 for v in structure.values()):
        words = ", ".join(f"{k} {v}" for k, v in structure.items())
        c = c.replace(
            outcome=Outcome.VACUOUS,
            passed=False,
            note=(
                "no cohort structure in any model: no model's mean silhouette interval lies "
                f"above 0 ({words}); the difference {iv} is between models that do not "
                "cluster by activity cohort at all; " + seed_note(iv, min_effect)
            ),
        )
    return c


# --------------------------------------------------------------------------- geometry
@dataclass(frozen=True)
class _Geometry:
    """What the mechanism checks read: pairs, distances, codes of the sampled users."""

    users: np.ndarray  # (U,) test users with interactions
    ia: np.ndarray  # (P,) pair ends, indices into ``need``
    ib: np.ndarray
    dist: np.ndarray  # (P,) ||x_a/|x_a| - x_b/|x_b|||_2
    dist_l1: np.ndarray  # (P,) raw ||x_a - x_b||_1
    need: np.ndarray  # (K,) indices into users that were encoded
    sub: np.ndarray  # (S,) silhouette users, indices into ``need``
    labels: np.ndarray  # (S,) cohort labels
    mu: dict[str, np.ndarray]  # setting -> (seeds, K, d) latent means
    logvar: dict[str, np.ndarray]
    conventions: dict[str, str]
    not_run: tuple[str, ...]  # settings that were not given


def _geometry(ctx: VerifyContext, clean_models: list[torch.nn.Module]) -> _Geometry:
    opts = ctx.options
    rng = np.random.default_rng([opts.seed, 25, 1])
    x = ctx.dataset.test_tr.tocsr()
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    pa, pb = _random_pairs(users.size, opts.n_pairs, rng)
    sub_u = np.arange(users.size)
    if users.size > SIL_SAMPLE:  # seeded subsample; silhouette is O(n^2)
        sub_u = np.sort(rng.choice(users.size, size=SIL_SAMPLE, replace=False))
    need, inv = np.unique(np.concatenate([pa, pb, sub_u]), return_inverse=True)
    ia, ib, sub = inv[: pa.size], inv[pa.size : 2 * pa.size], inv[2 * pa.size :]
    dist, dist_l1 = _pair_distances(x, users[pa], users[pb])
    mu, lv, conv, not_run = {}, {}, {}, []
    for s in SETTINGS_USED:
        try:
            models = clean_models if s == "clean" else ctx.seed_models(s)
        except MissingModelError:
            not_run.append(s)
            continue
        enc = [_encode(m, x, users[need]) for m in models]
        mu[s] = np.stack([e[0] for e in enc]).astype(np.float32)  # (seeds, K, d)
        lv[s] = np.stack([e[1] for e in enc]).astype(np.float32)
        conv[s] = input_convention(models[0])
    labels = cohort_of(ctx.dataset.counts("test"))[users[need[sub]]]
    return _Geometry(users, ia, ib, dist, dist_l1, need, sub, labels, mu, lv, conv, tuple(not_run))


def _w2(g: _Geometry, s: str, perm: np.ndarray | None = None) -> np.ndarray:
    """(seeds, P) W2 of the pairs under setting s; ``perm`` permutes the encoded users."""
    ia, ib = (g.ia, g.ib) if perm is None else (perm[g.ia], perm[g.ib])
    mu, lv = torch.as_tensor(g.mu[s]), torch.as_tensor(g.logvar[s])
    return w2_diag(mu[:, ia], lv[:, ia], mu[:, ib], lv[:, ib]).numpy()


def _silhouettes(g: _Geometry, mu: np.ndarray) -> np.ndarray | None:
    """(seeds, S) per-user silhouettes of mu (seeds, K, d) on the silhouette users."""
    rows = [silhouette_per_user(m[g.sub], g.labels) for m in mu]
    return None if any(r is None for r in rows) else np.stack(rows)


def _partial_perm(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) that moves a random ``fraction`` of the entries (a cycle)."""
    perm = np.arange(n)
    k = int(round(fraction * n))
    if k >= 2:
        moved = rng.choice(n, size=k, replace=False)
        perm[moved] = np.roll(moved, 1)
    return perm


def _missing_part(setting: str, parts: str) -> str:
    return (
        f"{parts}: need the {setting!r} model, which was not given (radius.verify.run(..., "
        f"models={{'{setting}': ...}}) or radius verify --checkpoint {setting}=PATH)"
    )


def _mechanism_checks(
    g: _Geometry,
    *,
    level: float,
    seed: int,
    clean_w2: np.ndarray | None = None,
    clean_mu: np.ndarray | None = None,
) -> tuple[list[Check], dict[str, Any]]:
    """Tracking, contrasts and silhouettes on the geometry (``clean_*`` replace the clean
    model's W2 / means: controls and power)."""
    w2 = {s: _w2(g, s) for s in g.mu}
    if clean_w2 is not None:
        w2["clean"] = clean_w2
    mus = dict(g.mu)
    if clean_mu is not None:
        mus["clean"] = clean_mu
    checks = [tracking_check(g.dist, w2["clean"], level=level, seed=seed)]
    for other in ("masking", "pia"):
        if other in w2:
            checks.append(contrast_check(g.dist, w2["clean"], w2[other], other=other,
                                         level=level, seed=seed))  # fmt: skip
    sil = {s: _silhouettes(g, m) for s, m in mus.items()}
    sil = {s: v for s, v in sil.items() if v is not None}
    structure = cohort_structure(sil, level=level, seed=seed) if "clean" in sil else {}
    for other in ("masking", "pia"):
        if "clean" in sil and other in sil:
            checks.append(
                silhouette_check(
                    sil["clean"], sil[other], other=other, structure=structure, level=level,
                    seed=seed,
                )
            )  # fmt: skip
    return checks, {"w2": w2, "silhouette": sil, "structure": structure}


# --------------------------------------------------------------------------- run
def run(
    ctx: VerifyContext,
    *,
    control: str | None = None,
    p_bar: str = "optimal",
    level: float = BOOTSTRAP_LEVEL,
) -> ClaimResult:
    """Check T2.5: the gap's statement at the trained posteriors, its identities, and the
    mechanism lines over training seeds (module docstring).

    Parameters
    ----------
    ctx : the verification context (clean model required; masking and PIA optional).
    control : None, or ``"permuted_inputs"`` (negative control: the clean model's latent
        codes belong to randomly permuted users, so no mechanism check can HOLD).
    p_bar : ``"optimal"``, or ``"unweighted"`` (negative control: the wrong shared output
        (p_u + p_v)/2; the statement and the no-overlap identity must FAIL).
    level : two-sided level of every bootstrap interval.
    """
    if control not in CONTROLS:
        raise ValueError(f"control must be None or 'permuted_inputs', got {control!r}")
    if p_bar not in P_BAR_KINDS:
        raise ValueError(f"p_bar must be 'optimal' or 'unweighted', got {p_bar!r}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    t0, c0 = time.perf_counter(), time.process_time()
    opts = ctx.options
    rng = np.random.default_rng([opts.seed, 25])
    x = ctx.dataset.test_tr.tocsr()
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    if users.size < 3:
        raise ValueError(f"T2.5 needs at least 3 test users with interactions, got {users.size}")
    clean_models = ctx.seed_models("clean")  # MissingModelError: nothing can run
    checks: list[Check] = []
    details: dict[str, Any] = {
        "users": "test users' fold-in rows (test_tr)",
        "n_users": int(users.size),
    }

    # statement and identities: exact gaps at the main clean model's trained posteriors
    c, info = _gap_part(ctx, x, users, clean_models[0], p_bar=p_bar, rng=rng)
    checks += c
    details["gap"] = info
    t_gap = time.perf_counter() - t0

    # mechanism: every training seed of every setting given
    g = _geometry(ctx, clean_models)
    clean_w2 = clean_mu = None
    if control == "permuted_inputs":
        perm = np.random.default_rng([opts.seed, 25, 2]).permutation(g.need.size)
        clean_w2, clean_mu = _w2(g, "clean", perm), g.mu["clean"][:, perm]
    mech, meas = _mechanism_checks(
        g, level=level, seed=opts.seed, clean_w2=clean_w2, clean_mu=clean_mu
    )
    checks += mech
    details["parts_not_run"] = [
        _missing_part(s, f"contrast_clean_vs_{s} and cohort_silhouette_clean_gt_{s}")
        for s in g.not_run
    ]
    details["seeds"] = {s: int(v.shape[0]) for s, v in g.mu.items()}
    details["min_effects"] = {
        "tracking": MIN_EFFECT_TRACKING,
        "contrast": MIN_EFFECT_CONTRAST,
        "silhouette": MIN_EFFECT_SILHOUETTE,
        "stated": "before computing (module constants)",
    }
    details["spearman"] = {
        "distance": "l2 distance of the L2-normalised inputs (the encoder's view; activity "
        "removed); raw l1 distance, dominated by activity n_u + n_v, reported beside it",
        "control": control,
        "n_pairs": int(g.dist.size),
        "pair_sampling": "uniform random pairs of distinct test users",
        "input_convention": g.conventions,
        **{
            s: {
                "rho_per_seed": _spearman_rows(g.dist, w).tolist(),
                "rho_raw_l1_per_seed": _spearman_rows(g.dist_l1, w).tolist(),
            }
            for s, w in meas["w2"].items()
        },
    }
    sil: dict[str, Any] = {
        s: {
            "silhouette": meas["structure"][s].estimate if s in meas["structure"] else None,
            "interval": meas["structure"][s].to_dict() if s in meas["structure"] else None,
            "per_cohort": {
                COHORTS[k][0]: float(v[:, g.labels == k].mean()) for k in np.unique(g.labels)
            },
        }
        for s, v in meas["silhouette"].items()
    }
    sil["n"] = int(g.sub.size)
    sil["cohort_counts"] = {COHORTS[k][0]: int((g.labels == k).sum()) for k in range(len(COHORTS))}
    sil["labels"] = "cohort_of(dataset.counts('test')): fold-in + held-out interaction counts"
    sil["structure"] = any(v.defined and v.low > 0 for v in meas["structure"].values())
    details["silhouette"] = sil
    details["memory"] = {
        "encoded_users": int(g.need.size),
        "dense_entries_per_chunk": ENCODE_CHUNK_ELEMENTS,
        "why": "only the sampled users are encoded; rows stay sparse until a chunk needs them",
    }
    key = {
        "gap.n_pairs": info["n_pairs"],
        "gap.overlapping_pairs": info["overlap"]["n_overlapping"],
        "gap.max_log_bc": info["overlap"]["log_bc"].get("max"),
        "seeds": details["seeds"].get("clean"),
    }
    for s in meas["w2"]:
        key[f"rho.{s}"] = float(np.mean(details["spearman"][s]["rho_per_seed"]))
    for s in meas["structure"]:
        key[f"silhouette.{s}"] = meas["structure"][s].estimate
    details["key_numbers"] = key
    details["seconds"] = {
        "gap": round(t_gap, 2),
        "total": round(time.perf_counter() - t0, 2),
        "cpu": round(time.process_time() - c0, 2),
    }
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=(
            f"Statement: exact G at the trained clean model's posteriors of {info['n_pairs']} "
            "real test-user pairs (half random, half l1-nearest neighbours), by stratified "
            f"mixture sampling with {info['n_mc_per_component']} draws per component and "
            "common random numbers along the path that moves mu_v onto mu_u; overlap = "
            f"Bhattacharyya coefficient >= {BC_MIN:g}; path steps judged against their "
            f"common-noise standard errors (family-wise false alarm {FAMILY_FALSE_ALARM:g}); "
            f"pairs whose rise is unresolved redrawn once with {GAP_REFINE}x the draws "
            f"({info['n_pairs_refined']} here). Identities on the same posteriors. "
            "Mechanism over the training seeds of each "
            f"setting ({', '.join(f'{s}: {n}' for s, n in details['seeds'].items())}): "
            "Spearman of the l2 distance of L2-normalised inputs vs closed-form W2 on "
            f"{opts.n_pairs} random test-user pairs, clean minus masking / masking + PIA on "
            f"the same pairs, and the silhouette of activity cohorts on mu ({g.sub.size} "
            "users), each by a two-stage bootstrap (seeds, then pairs or users) against a "
            f"minimum effect ({MIN_EFFECT_TRACKING:g}, {MIN_EFFECT_CONTRAST:g}, "
            f"{MIN_EFFECT_SILHOUETTE:g}) stated before computing; {level:g} intervals."
        ),
        details=details,
        context=ctx.describe(),
    )


POWER_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # fraction of users whose codes are permuted
POWER_TRACK = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # input distance added to W2 (see power)


POWER_PLANT = (0.02, 0.05, 0.1, 0.25, 0.5)  # planted cohort offset, in latent rms units


def _om(c: Check) -> tuple[Outcome, float]:
    return c.outcome, c.measured


def _plant_cohorts(mu: np.ndarray, labels: np.ndarray, size: float, seed: int) -> np.ndarray:
    """mu + size * rms(mu - mean mu) * v_label on the silhouette users of every seed, one
    fixed random unit vector per cohort. mu (seeds, S, d)."""
    rng = np.random.default_rng([seed, 25, 4])
    dirs = rng.standard_normal((len(COHORTS), mu.shape[-1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    out = mu.copy()
    for k in range(mu.shape[0]):
        rms = float(np.sqrt(((mu[k] - mu[k].mean(axis=0)) ** 2).sum(axis=1).mean()))
        out[k] = mu[k] + size * rms * dirs[labels]
    return out


def power(ctx: VerifyContext, *, level: float = BOOTSTRAP_LEVEL) -> list[PowerRow]:
    """Graded perturbations of the real trained models for each mechanism check.

    Tracking and the contrasts: when a check HOLDS, the clean model's latent codes of a
    growing fraction of the encoded users are permuted (10%, 25%, 50%, 100%; every seed
    alike) before W2 is taken (against the claim); otherwise a growing multiple of the
    activity-free input distance is added to the clean pairs' W2 (for the claim).
    Silhouettes: a cohort offset is planted in the latent means (a fixed random direction
    per cohort, 0.02 ... 0.5 times the latent rms), in the clean model's unless the check
    HOLDS (then in the other's). The statement checks are weak (properties of the loss)
    and have no power row.
    """
    opts = ctx.options
    seed = opts.seed
    g = _geometry(ctx, ctx.seed_models("clean"))
    rng = np.random.default_rng([seed, 25, 3])
    perms = {f: _partial_perm(g.need.size, f, rng) for f in POWER_FRACTIONS}
    w2 = {s: _w2(g, s) for s in g.mu}
    unit = w2["clean"].mean(axis=1, keepdims=True) / max(float(g.dist.mean()), 1e-300)

    def graded(check: Callable[[np.ndarray], Check], base: Check) -> tuple[str, list]:
        """Against the claim (clean codes permuted) when it HOLDS, else for it (the clean
        pairs' W2 plus a growing multiple of the input distance)."""
        if base.outcome is Outcome.PASS:
            what = "clean model's latent codes permuted among a fraction of users"
            out = [(f"{f:.0%} of users", *_om(check(_w2(g, "clean", p)))) for f, p in perms.items()]
        else:
            what = (
                "clean model's pair W2 plus a growing multiple t of the input distance, "
                "t in units of mean W2 / mean input distance (an input-tracking component)"
            )
            grades = [check(w2["clean"] + t * unit * g.dist[None, :]) for t in POWER_TRACK]
            out = [(f"t = {t:g}", *_om(c)) for t, c in zip(POWER_TRACK, grades)]
        return what, out

    rows: list[PowerRow] = []
    base = tracking_check(g.dist, w2["clean"], level=level, seed=seed)
    what, grades = graded(lambda w: tracking_check(g.dist, w, level=level, seed=seed), base)
    rows.append(PowerRow.from_grades(base.name, "empirical", what, base.outcome, grades))
    for other in ("masking", "pia"):
        if other not in w2:
            continue

        def contrast(w: np.ndarray, other: str = other) -> Check:
            return contrast_check(g.dist, w, w2[other], other=other, level=level, seed=seed)

        base = contrast(w2["clean"])
        what, grades = graded(contrast, base)
        rows.append(PowerRow.from_grades(base.name, "empirical", what, base.outcome, grades))
    sil = {s: _silhouettes(g, m) for s, m in g.mu.items()}
    if sil.get("clean") is None:
        return rows
    structure = cohort_structure({s: v for s, v in sil.items() if v is not None}, level=level,
                                 seed=seed)  # fmt: skip
    for other in ("masking", "pia"):
        if sil.get(other) is None:
            continue
        base = silhouette_check(sil["clean"], sil[other], other=other, structure=structure,
                                level=level, seed=seed)  # fmt: skip
        target = other if base.outcome is Outcome.PASS else "clean"
        grades = []
        for f in POWER_PLANT:
            mu = _plant_cohorts(g.mu[target][:, g.sub], g.labels, f, seed)
            pert = np.stack([silhouette_per_user(m, g.labels) for m in mu])
            both = {**sil, target: pert}
            st = cohort_structure({s: v for s, v in both.items() if v is not None},
                                  level=level, seed=seed)  # fmt: skip
            c = silhouette_check(both["clean"], both[other], other=other, structure=st,
                                 level=level, seed=seed)  # fmt: skip
            grades.append((f"{f:g} x latent rms", c.outcome, c.measured))
        rows.append(PowerRow.from_grades(
            base.name, "empirical",
            f"cohort separation planted in the {target} model's latent means "
            "(a fixed random direction per cohort)",
            base.outcome, grades,
            note="permuting means does not work here: with overlapping cohorts (negative "
            "silhouettes) a permutation raises the silhouette towards 0",
        ))  # fmt: skip
    return rows
