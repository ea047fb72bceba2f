r"""T2.5 Compromise gap: clean inputs push content-mismatched users apart.

Three parts.

(a) The exact compromise gap of the multinomial decoder,
:math:`G(u, v) = \int w_u n_u KL(p_u\|\bar p) + w_v n_v KL(p_v\|\bar p)\,dz` with
:math:`w = q(z)`, estimated by stratified sampling from :math:`(q_u + q_v)/2`
(``radius.analysis.gap``), on pairs of real test users encoded by the clean model: G >= 0; G = 0
for identical inputs; G = 0 without overlap (posteriors 1000 sigma apart); G > 0 once the
posteriors overlap (means coinciding); G grows as :math:`\mu_v` is moved toward
:math:`\mu_u` in steps :math:`\mu_v(\lambda) = \mu_u + \lambda(\mu_v - \mu_u)`.

These are *identities* of the formula (kind ``identity``): a failure is a bug in
radius, a pass says nothing about the model, and they never decide the claim.

(b) Empirical, decided by ``radius.stats.decide`` from 95% percentile-bootstrap
intervals over uniform random pairs of test users (HOLDS / CONTRADICTED / INCONCLUSIVE):

* ``spearman_input_vs_latent_clean``: :math:`\rho_{clean} =` Spearman(d_x, W2(q_u, q_v))
  > 0 on the clean model, with the *activity-controlled* input distance
  :math:`d_x = \|x_u/\|x_u\|_2 - x_v/\|x_v\|_2\|_2` (the L2-normalised rows the
  encoders see; raw l1 distance is dominated by :math:`n_u + n_v` and is reported
  beside it, not used);
* ``contrast_clean_vs_pia`` / ``contrast_clean_vs_masking``: the claim's contrast,
  :math:`\rho_{clean} - \rho_{other} > 0`, a paired bootstrap on the SAME pairs (each
  draw resamples the pairs once and evaluates both models on them).

(c) Empirical: ``cohort_silhouette_clean_gt_pia``: the mean per-user silhouette of the
activity-cohort labels (``radius.data.dataset.cohort_of`` on the test users'
interaction counts) on the latent means, clean minus masking + PIA, on the same users
(at most 2000, seeded), with a bootstrap interval over users (labels held fixed).

All latent codes are the inference means :math:`\mu_\phi(x)` on the clean input (b = 1);
the details name each model's input convention (``input_convention``).
``power(ctx)`` permutes the latent codes of a growing fraction of users and reports the
mildest fraction that flips each empirical check.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from radius.analysis.gap import compromise_gap_path
from radius.analysis.geometry import w2_diag
from radius.analysis.lipschitz import binary_l1_nearest, encode_double
from radius.data.dataset import COHORTS, cohort_of
from radius.model.protocol import input_convention
from radius.stats import (
    BOOTSTRAP_LEVEL,
    Interval,
    Outcome,
    bootstrap,
    paired_bootstrap,
)
from radius.verify.base import Check, ClaimResult, PowerRow
from radius.verify.context import VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "spearman",
    "spearman_interval",
    "spearman_contrast",
    "tracking_check",
    "contrast_check",
    "silhouette_check",
    "silhouette_per_user",
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
    "or w_u w_v = 0; the compromise gap G(u, v) = int Delta dz is >= 0, positive when "
    "p_u != p_v and the posteriors overlap, and grows as the posteriors are moved together. "
    "Consequences checked on trained models (empirical, with bootstrap intervals): under "
    "clean input, latent W2 increases with the distance of the L2-normalised inputs "
    "(activity controlled; Spearman > 0), more so than under masking + PIA and under "
    "masking (paired on the same pairs), and activity cohorts separate more in latent "
    "space (silhouette of cohort labels on mu) for clean input than for masking + PIA."
)
RECONSTRUCTION = True

LAMBDAS = (1.0, 0.75, 0.5, 0.25, 0.0)  # mu_v(lambda) = mu_u + lambda (mu_v - mu_u)
GAP_ZERO_TOL = 1e-9  # |G| <= tol * (n_u + n_v) for "G = 0"
NONNEG_TOL = 1e-12  # G >= -tol * (n_u + n_v)
N_SE = 3.0  # Monte Carlo slack in standard errors for the monotonicity check
GAP_MAX_PAIRS = 200  # pairs of the exact-gap part (a); 60 with quick options
GAP_MAX_PAIRS_QUICK = 60
GAP_MAX_MC = 1000  # draws per mixture component in part (a)
FAR_SIGMAS = 1000.0  # "no overlap": mu_v moved this many sigmas away
CONTROLS = (None, "permuted_inputs", "untrained")
N_BOOT = 1000  # bootstrap resamples of every interval of parts (b) and (c)
MIN_PAIRS = 20  # fewer pairs: INCONCLUSIVE
MIN_USERS = 20  # fewer silhouette users: INCONCLUSIVE
P_BAR_KINDS = ("optimal", "unweighted")
SIL_SAMPLE = 2000


def _dense(x, rows: np.ndarray) -> np.ndarray:
    return np.asarray(x[rows].todense(), dtype=np.float64)


def _random_pairs(
    users: np.ndarray, n: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """n uniform pairs of distinct entries of ``users`` (as indices into ``users``)."""
    a = rng.integers(0, users.size, size=n)
    b = (a + rng.integers(1, users.size, size=n)) % users.size
    return a, b


def _gap_part(
    ctx: VerifyContext,
    x,
    users: np.ndarray,
    model,
    *,
    p_bar: str,
    min_monotone_fraction: float,
    rng: np.random.Generator,
) -> tuple[list[Check], dict[str, Any]]:
    opts = ctx.options
    n_pairs = min(opts.n_pairs, GAP_MAX_PAIRS_QUICK if opts.quick else GAP_MAX_PAIRS)
    n_ctrl = min(20, n_pairs)
    n_mc = min(opts.n_mc, GAP_MAX_MC)
    # half random pairs, half l1-nearest neighbours (overlapping posteriors are likelier)
    n_rand = n_pairs - n_pairs // 2
    ra, rb = _random_pairs(users, n_rand, rng)
    anchors = rng.integers(0, users.size, size=n_pairs // 2)
    nb, _ = binary_l1_nearest(x[users], anchors)
    ia = np.concatenate([ra, anchors])
    ib = np.concatenate([rb, nb])
    kind = ["random"] * n_rand + ["nn"] * (n_pairs // 2)
    xa, xb = _dense(x, users[ia]), _dense(x, users[ib])
    mu_a, lv_a = (t.numpy() for t in encode_double(model, xa))
    mu_b, lv_b = (t.numpy() for t in encode_double(model, xb))
    lam = np.asarray(LAMBDAS)[:, None]  # (L, 1)
    seeds = rng.integers(2**31, size=n_pairs)
    vals, ses, ub, nsum = [], [], [], []
    for k in range(n_pairs):
        mu_path = mu_a[k] + lam * (mu_b[k] - mu_a[k])[None, :]  # (L, d)
        lv_path = np.broadcast_to(lv_b[k], mu_path.shape)
        path = compromise_gap_path(
            xa[k], xb[k], mu_a[k], lv_a[k], mu_path, lv_path,
            n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
        )  # fmt: skip
        vals.append(path.values)
        ses.append(path.std_errors)
        ub.append(path.upper_bound)
        nsum.append(xa[k].sum() + xb[k].sum())
    vals, ses = np.array(vals), np.array(ses)  # (P, L)
    ub, nsum = np.array(ub), np.array(nsum)
    differ = np.any(xa != xb, axis=1)  # p_u != p_v (binary rows)
    # controls: identical inputs (u, u) with the model's own posterior of u and of v
    g_same, g_far, n_same_sum, n_far_sum = [], [], [], []
    for k in range(n_ctrl):
        path = compromise_gap_path(
            xa[k], xa[k], mu_a[k], lv_a[k], mu_b[k][None, :], lv_b[k][None, :],
            n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
        )  # fmt: skip
        g_same.append(path.values[0])
        n_same_sum.append(2 * xa[k].sum())
        sig = np.exp(0.5 * np.maximum(lv_a[k], lv_b[k])).max()
        far = mu_a[k].copy()
        far[0] += FAR_SIGMAS * sig
        path = compromise_gap_path(
            xa[k], xb[k], mu_a[k], lv_a[k], far[None, :], lv_b[k][None, :],
            n_samples=n_mc, seed=int(seeds[k]), p_bar=p_bar,
        )  # fmt: skip
        g_far.append(path.values[0])
        n_far_sum.append(nsum[k])
    g_same, g_far = np.array(g_same), np.array(g_far)
    same_tol = GAP_ZERO_TOL * np.array(n_same_sum)
    far_tol = GAP_ZERO_TOL * np.array(n_far_sum)
    # monotone: no decrease beyond N_SE standard errors at any step, and an overall
    # increase from lambda = 1 to lambda = 0 beyond N_SE combined standard errors
    step_ok = np.all(vals[:, 1:] >= vals[:, :-1] - N_SE * np.hypot(ses[:, 1:], ses[:, :-1]), axis=1)
    rise = vals[:, -1] - vals[:, 0]
    rise_ok = rise > N_SE * np.hypot(ses[:, -1], ses[:, 0])
    mono = step_ok & rise_ok
    n_diff = int(differ.sum())
    pos = vals[:, -1] > 0
    neg_floor = -NONNEG_TOL * nsum[:, None]
    checks = [
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
        ),
        Check(
            "gap_zero_identical_inputs",
            "G(u, u') = 0 when x_u = x_u' (control pairs, real posteriors of two users)",
            float(np.abs(g_same).max()) if n_ctrl else float("nan"),
            float(same_tol.max()) if n_ctrl else 0.0,
            float((same_tol - np.abs(g_same)).min()) if n_ctrl else float("nan"),
            f"every control pair: |G| <= {GAP_ZERO_TOL:g} (n_u + n_v)",
            bool(n_ctrl > 0 and np.all(np.abs(g_same) <= same_tol)),
            int(n_ctrl),
            kind="identity",
        ),
        Check(
            "gap_zero_without_overlap",
            f"G(u, v) = 0 when mu_v is moved {FAR_SIGMAS:g} sigma away (no overlap)",
            float(np.abs(g_far).max()) if n_ctrl else float("nan"),
            float(far_tol.max()) if n_ctrl else 0.0,
            float((far_tol - np.abs(g_far)).min()) if n_ctrl else float("nan"),
            f"every control pair: |G| <= {GAP_ZERO_TOL:g} (n_u + n_v)",
            bool(n_ctrl > 0 and np.all(np.abs(g_far) <= far_tol)),
            int(n_ctrl),
            kind="identity",
        ),
        Check(
            "gap_positive_with_overlap",
            "G(u, v) > 0 when x_u != x_v and the means coincide (lambda = 0)",
            float(pos[differ].mean()) if n_diff else 0.0,
            1.0,
            float(pos[differ].mean()) - 1.0 if n_diff else -1.0,
            "every pair with x_u != x_v: G(lambda=0) > 0 (float64)",
            bool(n_diff > 0 and np.all(pos[differ])),
            n_diff,
            kind="identity",
        ),
        _monotone_check(step_ok[differ], rise_ok[differ], min_monotone_fraction),
    ]
    keep = np.arange(min(n_pairs, 100))
    info = {
        "n_pairs": n_pairs,
        "n_control_pairs": n_ctrl,
        "n_mc_per_component": n_mc,
        "caps": {
            "n_pairs_requested": opts.n_pairs,
            "n_pairs_cap": GAP_MAX_PAIRS_QUICK if opts.quick else GAP_MAX_PAIRS,
            "n_mc_requested": opts.n_mc,
            "n_mc_cap": GAP_MAX_MC,
            "why": "the exact gap costs pairs x path steps x draws x items; --n-pairs and "
            "--n-mc above the caps do not enlarge part (a)",
        },
        "lambdas": list(LAMBDAS),
        "p_bar": p_bar,
        "pair_sampling": "half uniform random pairs, half l1-nearest neighbours of random anchors",
        "gap_over_upper_bound_at_lambda_1": _quantiles(vals[:, 0] / np.where(ub > 0, ub, 1.0)),
        "gap_over_upper_bound_at_lambda_0": _quantiles(vals[:, -1] / np.where(ub > 0, ub, 1.0)),
        "fraction_step_ok": float(step_ok[differ].mean()) if n_diff else None,
        "fraction_rise_ok": float(rise_ok[differ].mean()) if n_diff else None,
        "identical_control_max_abs": float(np.abs(g_same).max()) if n_ctrl else None,
        "far_control_max_abs": float(np.abs(g_far).max()) if n_ctrl else None,
        "rows": [
            {
                "kind": kind[k],
                "u": int(users[ia[k]]),
                "v": int(users[ib[k]]),
                "n_u": int(xa[k].sum()),
                "n_v": int(xb[k].sum()),
                "w2": float(w2_diag(mu_a[k], lv_a[k], mu_b[k], lv_b[k])),
                "gap": [float(g) for g in vals[k]],
                "std_error": [float(s) for s in ses[k]],
                "upper_bound": float(ub[k]),
                "monotone": bool(mono[k]),
            }
            for k in keep
        ],
    }
    return checks, info


def _monotone_check(step_ok: np.ndarray, rise_ok: np.ndarray, min_fraction: float) -> Check:
    """Identity: G grows along the path that moves mu_v onto mu_u.

    Two parts, judged on the pairs with x_u != x_v: no step *decreases* by more than
    ``N_SE`` standard errors (a decrease would be a bug: FAIL when it happens on more
    than ``1 - min_fraction`` of the pairs), and the overall rise G(0) - G(1) exceeds
    ``N_SE`` standard errors. When the steps are fine but the Monte Carlo cannot resolve
    the rise on enough pairs (narrow, unequal posteriors make G tiny), the outcome is
    INCONCLUSIVE: the estimate's resolution, not the formula, is what is missing.
    """
    n = int(step_ok.size)
    f_step = float(step_ok.mean()) if n else 0.0
    f_both = float((step_ok & rise_ok).mean()) if n else 0.0
    if n == 0:
        outcome, note = Outcome.INCONCLUSIVE, "no pair with x_u != x_v"
    elif f_step < min_fraction:
        outcome, note = Outcome.FAIL, f"a step decreases beyond {N_SE:g} s.e. on {1 - f_step:.1%}"
    elif f_both < min_fraction:
        outcome = Outcome.INCONCLUSIVE
        note = (
            f"no step decreases, but the rise is within {N_SE:g} s.e. on {1 - f_both:.1%} of "
            "pairs: Monte Carlo resolution, not a violation"
        )
    else:
        outcome, note = Outcome.PASS, ""
    return Check(
        "gap_monotone_in_overlap",
        "G grows as mu_v moves toward mu_u (lambda = " + ", ".join(f"{v:g}" for v in LAMBDAS) + ")",
        f_both,
        min_fraction,
        f_both - min_fraction,
        f"fraction >= {min_fraction:g} of pairs with x_u != x_v: no step decreases by more "
        f"than {N_SE:g} s.e. (else FAIL) and G(0) - G(1) > {N_SE:g} s.e. (else INCONCLUSIVE: "
        "resolution); common random numbers",
        outcome is Outcome.PASS,
        n,
        kind="identity",
        outcome=outcome,
        note=note,
    )


def _quantiles(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    q = np.quantile(v, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {"n": int(v.size), "min": q[0], "q25": q[1], "median": q[2], "q75": q[3], "max": q[4]}


def _ranks(v: np.ndarray) -> np.ndarray:
    from scipy.stats import rankdata

    return rankdata(v)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation (average ranks for ties); NaN when a side is constant."""
    ra, rb = _ranks(np.asarray(a, dtype=np.float64)), _ranks(np.asarray(b, dtype=np.float64))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def spearman_interval(
    dist: np.ndarray, w2: np.ndarray, *, level: float = BOOTSTRAP_LEVEL, seed: int = 0
) -> Interval:
    """Percentile-bootstrap interval of Spearman(dist, w2) over the pairs."""
    dist, w2 = np.asarray(dist, dtype=np.float64), np.asarray(w2, dtype=np.float64)
    if dist.shape != w2.shape or dist.ndim != 1:
        raise ValueError(f"dist {dist.shape} and w2 {w2.shape} must be 1-D of the same length")
    return bootstrap(
        lambda i: spearman(dist[i], w2[i]), dist.size, level=level, seed=seed, unit="pairs",
        n_boot=N_BOOT,
    )  # fmt: skip


def spearman_contrast(
    dist: np.ndarray,
    w2_a: np.ndarray,
    w2_b: np.ndarray,
    *,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> Interval:
    """Paired bootstrap of Spearman(dist, w2_a) - Spearman(dist, w2_b) over the SAME pairs
    (each draw resamples pairs once and uses them for both models)."""
    dist = np.asarray(dist, dtype=np.float64)
    w2_a, w2_b = np.asarray(w2_a, dtype=np.float64), np.asarray(w2_b, dtype=np.float64)
    if not dist.shape == w2_a.shape == w2_b.shape or dist.ndim != 1:
        raise ValueError(
            f"dist {dist.shape}, w2_a {w2_a.shape} and w2_b {w2_b.shape} must be 1-D of one length"
        )
    return bootstrap(
        lambda i: spearman(dist[i], w2_a[i]) - spearman(dist[i], w2_b[i]),
        dist.size, level=level, seed=seed, unit="pairs (paired)", n_boot=N_BOOT,
    )  # fmt: skip


def tracking_check(
    dist: np.ndarray, w2: np.ndarray, *, level: float = BOOTSTRAP_LEVEL, seed: int = 0,
    name: str = "spearman_input_vs_latent_clean", what: str = "clean model",
) -> Check:  # fmt: skip
    """Empirical: Spearman(activity-free input distance, latent W2) > 0 (interval above 0)."""
    iv = spearman_interval(dist, w2, level=level, seed=seed)
    return Check.from_interval(
        name,
        f"{what}: Spearman(||x_u/|x_u| - x_v/|x_v|||_2, W2(q_u, q_v)) > 0",
        iv,
        tolerance=f"{level:g} bootstrap interval over pairs wholly above 0 (HOLDS), wholly "
        f"below (CONTRADICTED), else INCONCLUSIVE; >= {MIN_PAIRS} pairs",
        min_n=MIN_PAIRS,
    )


def contrast_check(
    dist: np.ndarray, w2_clean: np.ndarray, w2_other: np.ndarray, *, other: str,
    level: float = BOOTSTRAP_LEVEL, seed: int = 0,
) -> Check:  # fmt: skip
    """Empirical: latent distance tracks input distance more under clean input than under
    ``other`` (rho_clean - rho_other > 0, paired bootstrap over the same pairs)."""
    iv = spearman_contrast(dist, w2_clean, w2_other, level=level, seed=seed)
    return Check.from_interval(
        f"contrast_clean_vs_{other}",
        f"Spearman(input distance, W2) is higher for clean input than for {other} "
        "(same pairs, distance of L2-normalised inputs: activity removed)",
        iv,
        tolerance=f"{level:g} paired bootstrap interval of rho_clean - rho_{other} over the "
        f"same pairs wholly above 0 (HOLDS), wholly below (CONTRADICTED), else "
        f"INCONCLUSIVE; >= {MIN_PAIRS} pairs",
        min_n=MIN_PAIRS,
    )


def silhouette_check(
    sil_clean: np.ndarray, sil_other: np.ndarray, *, other: str = "pia",
    level: float = BOOTSTRAP_LEVEL, seed: int = 0,
) -> Check:  # fmt: skip
    """Empirical: mean per-user silhouette (cohort labels on mu) is higher for clean input
    than for ``other``; bootstrap over users of the paired per-user difference."""
    a, b = np.asarray(sil_clean, dtype=np.float64), np.asarray(sil_other, dtype=np.float64)
    if a.shape != b.shape:
        raise ValueError(f"per-user silhouettes differ in shape: {a.shape} vs {b.shape}")
    iv = paired_bootstrap(b, a, level=level, seed=seed, n_boot=N_BOOT, unit="users")
    return Check.from_interval(
        f"cohort_silhouette_clean_gt_{other}",
        "silhouette(activity-cohort labels, mu) is higher for clean input than "
        f"for {'masking + PIA' if other == 'pia' else other}",
        iv,
        tolerance=f"{level:g} bootstrap interval (over users, cohort labels fixed) of the mean "
        "per-user silhouette difference wholly above 0 (HOLDS), wholly below (CONTRADICTED), "
        f"else INCONCLUSIVE; >= {MIN_USERS} users",
        min_n=MIN_USERS,
    )


def _untrained_like(ctx: VerifyContext, seed: int) -> torch.nn.Module:
    """The clean setting's model, freshly initialised from ``seed`` (a baseline for scale)."""
    from radius.training.build import build_model

    with torch.random.fork_rng(devices=[]):
        m = build_model(ctx.config("clean").replace(seed=seed), ctx.dataset.n_items)
    return m.eval()


def silhouette_per_user(mu: np.ndarray, labels: np.ndarray) -> np.ndarray | None:
    """Per-user silhouette (sklearn, Euclidean) of ``labels`` on rows of ``mu``; None when
    fewer than 2 cohorts or 3 users are present."""
    from sklearn.metrics import silhouette_samples

    if np.unique(labels).size < 2 or labels.size < 3:
        return None
    return silhouette_samples(np.asarray(mu, dtype=np.float64), labels)


@dataclass(frozen=True)
class _Geometry:
    """Everything parts (b) and (c) read, computed once per context (run and power)."""

    ia: np.ndarray  # (P,) pair ends, indices into users
    ib: np.ndarray
    dist: np.ndarray  # (P,) ||x_a/|x_a| - x_b/|x_b|||_2
    dist_l1: np.ndarray  # (P,) raw ||x_a - x_b||_1
    mu: dict[str, np.ndarray]  # setting -> (U, d) latent means of all users
    logvar: dict[str, np.ndarray]
    sub: np.ndarray  # (S,) indices into users for the silhouette
    labels: np.ndarray  # (S,) cohort labels
    conventions: dict[str, str]


def _geometry(ctx: VerifyContext, settings: tuple[str, ...]) -> _Geometry:
    opts = ctx.options
    rng = np.random.default_rng([opts.seed, 25, 1])
    x = ctx.dataset.test_tr
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    ia, ib = _random_pairs(users, opts.n_pairs, rng)
    xu = _dense(x, users)  # (U, I)
    xn = xu / (np.linalg.norm(xu, axis=1, keepdims=True) + 1e-12)
    dist = np.linalg.norm(xn[ia] - xn[ib], axis=1)
    dist_l1 = np.abs(xu[ia] - xu[ib]).sum(axis=1)
    mu, lv, conv = {}, {}, {}
    for s in settings:
        model = _untrained_like(ctx, opts.seed) if s == "untrained" else ctx.model(s)
        m, v = encode_double(model, xu)
        mu[s], lv[s] = m.numpy(), v.numpy()
        conv[s] = input_convention(model)
    labels = cohort_of(ctx.dataset.counts("test"))[users]
    sub = np.arange(users.size)
    if users.size > SIL_SAMPLE:  # seeded subsample; silhouette is O(n^2)
        sub = np.sort(rng.choice(users.size, size=SIL_SAMPLE, replace=False))
    return _Geometry(ia, ib, dist, dist_l1, mu, lv, sub, labels[sub], conv)


def _w2(g: _Geometry, s: str, perm: np.ndarray | None = None) -> np.ndarray:
    """W2 of the pairs under setting s; with ``perm`` the codes are those of permuted users."""
    ia, ib = (g.ia, g.ib) if perm is None else (perm[g.ia], perm[g.ib])
    mu, lv = torch.as_tensor(g.mu[s]), torch.as_tensor(g.logvar[s])
    return w2_diag(mu[ia], lv[ia], mu[ib], lv[ib]).numpy()


def _partial_perm(n: int, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """A permutation of range(n) that moves a random ``fraction`` of the entries (a cycle)."""
    perm = np.arange(n)
    k = int(round(fraction * n))
    if k >= 2:
        moved = rng.choice(n, size=k, replace=False)
        perm[moved] = np.roll(moved, 1)
    return perm


def run(
    ctx: VerifyContext,
    *,
    control: str | None = None,
    p_bar: str = "optimal",
    min_monotone_fraction: float = 0.9,
    level: float = BOOTSTRAP_LEVEL,
) -> ClaimResult:
    """Check T2.5: exact compromise gap identities; Spearman, contrast and silhouette.

    Parameters
    ----------
    ctx : the verification context.
    control : None; ``"permuted_inputs"`` (negative control: the clean model's latent
        codes of the pairs and of the silhouette users belong to randomly permuted users,
        so tracking, both contrasts and the silhouette difference can no longer HOLD); or
        ``"untrained"`` (the clean model is replaced by a freshly initialised one of the
        same class and sizes; a random encoder is itself a smooth map of the normalised
        input, so the tracking check alone can HOLD on it, measured on the tiny test
        data: it is the contrasts that are specific to the input regime).
    p_bar : ``"optimal"``, or ``"unweighted"`` (negative control: the wrong shared
        output (p_u + p_v)/2; the no-overlap and monotonicity identities must FAIL).
    min_monotone_fraction : fraction of pairs on which G must grow along the path.
    level : two-sided level of every bootstrap interval.
    """
    if control not in CONTROLS:
        raise ValueError(f"control must be None, 'permuted_inputs' or 'untrained', got {control!r}")
    if p_bar not in P_BAR_KINDS:
        raise ValueError(f"p_bar must be 'optimal' or 'unweighted', got {p_bar!r}")
    if not 0.0 < min_monotone_fraction <= 1.0:
        raise ValueError(f"min_monotone_fraction must be in (0, 1], got {min_monotone_fraction}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    t0 = time.perf_counter()
    opts = ctx.options
    rng = np.random.default_rng([opts.seed, 25])
    ds = ctx.dataset
    x = ds.test_tr
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    if users.size < 3:
        raise ValueError(f"T2.5 needs at least 3 test users with interactions, got {users.size}")
    clean = ctx.model("clean")
    checks: list[Check] = []
    details: dict[str, Any] = {
        "users": "test users' fold-in rows (test_tr)",
        "n_users": int(users.size),
    }

    # (a) exact compromise gap on real pairs (clean model): identities of the formula
    c, info = _gap_part(
        ctx, x, users, clean, p_bar=p_bar, min_monotone_fraction=min_monotone_fraction, rng=rng
    )
    checks += c
    details["gap"] = info
    t_gap = time.perf_counter() - t0

    # (b) latent distance tracks activity-free input distance, and more so under clean input
    g = _geometry(ctx, ("clean", "masking", "pia", "untrained"))
    checked = "untrained" if control == "untrained" else "clean"
    perm = (
        np.random.default_rng([opts.seed, 25, 2]).permutation(users.size)
        if control == "permuted_inputs"
        else None
    )
    w2 = {s: _w2(g, s) for s in ("clean", "masking", "pia", "untrained")}
    w2_checked = _w2(g, checked, perm)
    seed = opts.seed
    checks.append(tracking_check(g.dist, w2_checked, level=level, seed=seed))
    for other in ("pia", "masking"):
        checks.append(
            contrast_check(g.dist, w2_checked, w2[other], other=other, level=level, seed=seed)
        )
    spear: dict[str, Any] = {
        "distance": "l2 distance of the L2-normalised inputs (the encoder's view; activity "
        "removed); raw l1 distance, dominated by activity n_u + n_v, reported beside it",
        "control": control,
        "checked": checked,
        "n_pairs": int(g.dist.size),
        "pair_sampling": "uniform random pairs of distinct test users",
        "input_convention": g.conventions,
    }
    for s in ("clean", "masking", "pia", "untrained"):
        spear[s] = {
            "rho": spearman(g.dist, w2[s]),
            "interval": spearman_interval(g.dist, w2[s], level=level, seed=seed).to_dict(),
            "rho_raw_l1": spearman(g.dist_l1, w2[s]),
        }
    spear["untrained"]["note"] = "the clean model freshly initialised (same sizes), for scale"
    details["spearman"] = spear

    # (c) cohort silhouette on mu of the same test users for every model
    mu_checked = g.mu[checked] if perm is None else g.mu[checked][perm]
    sil_c = silhouette_per_user(mu_checked[g.sub], g.labels)
    sil_p = silhouette_per_user(g.mu["pia"][g.sub], g.labels)
    if sil_c is None or sil_p is None:
        sil_c = sil_p = np.zeros(0)
    checks.append(silhouette_check(sil_c, sil_p, other="pia", level=level, seed=seed))
    sil: dict[str, Any] = {}
    for s in ("clean", "masking", "pia"):
        per = silhouette_per_user(g.mu[s][g.sub], g.labels)
        sil[s] = {
            "silhouette": float(per.mean()) if per is not None else None,
            "per_cohort": {
                COHORTS[k][0]: float(per[g.labels == k].mean()) for k in np.unique(g.labels)
            }
            if per is not None
            else {},
        }
    sil["n"] = int(g.sub.size)
    sil["cohort_counts"] = {COHORTS[k][0]: int((g.labels == k).sum()) for k in range(len(COHORTS))}
    sil["labels"] = "cohort_of(dataset.counts('test')): fold-in + held-out interaction counts"
    details["silhouette"] = sil
    details["seconds"] = {"gap": round(t_gap, 2), "total": round(time.perf_counter() - t0, 2)}
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=(
            "Identities: exact G by stratified mixture sampling (log-odds form, common random "
            f"numbers along the path; at most {GAP_MAX_PAIRS} pairs and {GAP_MAX_MC} draws per "
            "component, whatever --n-pairs / --n-mc ask), controls with identical inputs and "
            "far-apart posteriors. Empirical (decide the claim): Spearman of the l2 distance of "
            "L2-normalised inputs (activity controlled) vs closed-form W2 of the clean model on "
            f"{opts.n_pairs} random test-user pairs; the contrasts clean - masking+PIA and "
            "clean - masking as paired bootstraps over the same pairs; sklearn silhouette of "
            "activity cohorts on mu, clean minus masking+PIA, bootstrapped over users. "
            f"Intervals: {level:g} percentile bootstrap, {N_BOOT} draws."
        ),
        details=details,
        context=ctx.describe(),
    )


POWER_FRACTIONS = (0.1, 0.25, 0.5, 1.0)  # fraction of users whose codes are permuted
POWER_PLANT = (0.02, 0.05, 0.1, 0.25, 0.5)  # planted cohort offset, in latent rms units


def _plant_cohorts(mu: np.ndarray, labels: np.ndarray, size: float, seed: int) -> np.ndarray:
    """mu + size * rms(mu - mean mu) * v_label, with one fixed random unit vector per cohort."""
    rng = np.random.default_rng([seed, 25, 4])
    dirs = rng.standard_normal((len(COHORTS), mu.shape[1]))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    rms = float(np.sqrt(((mu - mu.mean(axis=0)) ** 2).sum(axis=1).mean()))
    return mu + size * rms * dirs[labels]


def power(ctx: VerifyContext, *, level: float = BOOTSTRAP_LEVEL) -> list[PowerRow]:
    """Graded perturbations of the real trained models for each empirical check of T2.5.

    Tracking and the two contrasts: the latent codes of a growing fraction of the users
    are permuted (10%, 25%, 50%, 100%) before W2 is taken, in the clean model when the
    unperturbed outcome is HOLDS or INCONCLUSIVE (the perturbation works against the
    claim) and in the other model when it is CONTRADICTED (it works for it). Silhouette:
    a cohort separation is planted in the latent means (a fixed random direction per
    cohort, 0.02 ... 0.5 times the latent rms): in masking + PIA's when the difference
    HOLDS or is INCONCLUSIVE, in the clean model's when it is CONTRADICTED.
    Identities have no power row.
    """
    opts = ctx.options
    seed = opts.seed
    g = _geometry(ctx, ("clean", "masking", "pia"))
    users_n = g.mu["clean"].shape[0]
    rng = np.random.default_rng([seed, 25, 3])
    perms = {f: _partial_perm(users_n, f, rng) for f in POWER_FRACTIONS}
    w2 = {s: _w2(g, s) for s in ("clean", "masking", "pia")}
    rows: list[PowerRow] = []
    base = tracking_check(g.dist, w2["clean"], level=level, seed=seed)
    grades = []
    for f, p in perms.items():
        c = tracking_check(g.dist, _w2(g, "clean", p), level=level, seed=seed)
        grades.append((f"{f:.0%} of users", c.outcome, c.measured))
    rows.append(
        PowerRow.from_grades(
            base.name,
            "empirical",
            "clean model's latent codes permuted among a fraction of users",
            base.outcome,
            grades,
        )  # fmt: skip
    )
    for other in ("pia", "masking"):
        base = contrast_check(g.dist, w2["clean"], w2[other], other=other, level=level, seed=seed)
        target = other if base.outcome is Outcome.FAIL else "clean"
        grades = []
        for f, p in perms.items():
            wa = _w2(g, "clean", p) if target == "clean" else w2["clean"]
            wb = _w2(g, other, p) if target == other else w2[other]
            c = contrast_check(g.dist, wa, wb, other=other, level=level, seed=seed)
            grades.append((f"{f:.0%} of users", c.outcome, c.measured))
        rows.append(
            PowerRow.from_grades(
                base.name,
                "empirical",
                f"{target} model's latent codes permuted among a fraction of users",
                base.outcome,
                grades,
            )  # fmt: skip
        )
    sil = {s: silhouette_per_user(g.mu[s][g.sub], g.labels) for s in ("clean", "pia")}
    if sil["clean"] is not None and sil["pia"] is not None:
        base = silhouette_check(sil["clean"], sil["pia"], level=level, seed=seed)
        target = "clean" if base.outcome is Outcome.FAIL else "pia"
        grades = []
        for f in POWER_PLANT:
            mu = _plant_cohorts(g.mu[target][g.sub], g.labels, f, seed)
            pert = silhouette_per_user(mu, g.labels)
            a, b = (pert, sil["pia"]) if target == "clean" else (sil["clean"], pert)
            c = silhouette_check(a, b, level=level, seed=seed)
            grades.append((f"{f:g} x latent rms", c.outcome, c.measured))
        rows.append(
            PowerRow.from_grades(
                base.name,
                "empirical",
                f"cohort separation planted in the {target} model's "
                "latent means (a fixed random direction per cohort)",
                base.outcome,
                grades,
                note="permuting means does not work here: with overlapping cohorts "
                "(negative silhouettes) a permutation raises the silhouette towards 0",
            )  # fmt: skip
        )
    return rows
