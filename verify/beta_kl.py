r"""beta-KL decomposition: E KL(q(z|x_h) || p) = I_q(X_h; Z) + KL(q_h || p), and its beta sweep.

Method. N = users x masks inputs :math:`x_h = x\odot b` (training users, masks at the
model's keep rate) are encoded; the aggregate posterior :math:`q_h` is the uniform
mixture of their N Gaussians. ``radius.analysis.decomposition.kl_decomposition``
estimates the mutual information and KL(q_h || p) by stratified Monte Carlo on
independent draw sets and the mean KL in closed form (see that module).

What each check is about (roles, ``radius.verify.base``)
-------------------------------------------------------

*Implementation* (identities: hold for any mixture; a failure is a bug in radius):

1. ``identity``: :math:`|\mathbb E\,\mathrm{KL} - (\hat I + \widehat{\mathrm{KL}})| \le
   k\,\mathrm{se} + \epsilon` on the masking model.
2. ``mi_upper_bound``: every sampled :math:`\log q_j(z) - \log q_h(z) \le \log N` (the
   first term is a mutual information over N inputs; a wrong aggregate breaks this, not
   the sum, which telescopes).
3. ``terms_nonnegative``: :math:`\hat I,\ \widehat{\mathrm{KL}} \ge -k\,\mathrm{se}`.
4. ``sweep_decompositions``: 1-3 on every sweep model.

*Statement* (decides the verdict). What the claim adds about beta. Write
:math:`F_\beta(\theta) = R(\theta) + \beta K(\theta)` for the training objective, R the
expected reconstruction loss and :math:`K(\theta) = \mathbb E_{x,b}\,
\mathrm{KL}(q_\theta(z|x_h)\,\|\,p)` its prior term, the left side of the decomposition.
If :math:`\theta_i` minimises :math:`F_{\beta_i}` (:math:`\beta_1<\beta_2`), then
:math:`F_{\beta_1}(\theta_1)\le F_{\beta_1}(\theta_2)` and
:math:`F_{\beta_2}(\theta_2)\le F_{\beta_2}(\theta_1)`; adding them,
:math:`(\beta_2-\beta_1)(K(\theta_2)-K(\theta_1))\le 0`: **E KL is non-increasing in
beta** over the optima (the standard fact that min f + beta g has g(x*_beta)
non-increasing in beta).

5. ``sweep_e_kl_falls``: Spearman's rank correlation of beta against the mean per-user
   E KL over the sweep's beta > 0 (not beta = 0 against the end: beta = 0 has no prior
   term to optimise) lies below 0, decided on the two-stage bootstrap interval (training
   seeds, then users; ``radius.stats.seed_user_interval``). RecVAE weights user u's
   KL by :math:`\gamma|x_u|`, so its K is the count-weighted mean and the per-user
   values are weighted by :math:`|x_u|`.

Power: beta labels reversed for a growing fraction of the users (``power``).

*Assumptions* (premises of the derivation, checked on these models):

6. ``penalty_is_kl_to_prior``: the models were trained on :math:`R + \beta K` with K
   the (count-weighted, RecVAE) mean KL to N(0, I). Multi-VAE: MET. RecVAE with its
   composite prior: NOT MET (its KL is to a mixture holding the previous encoder's
   posterior, so there is no fixed objective in which K is the penalty); RecVAE with
   ``recvae_prior="standard"``: MET. Sweep models given by the user: unresolved.
7. ``sweep_models_optimal``: the derivation only uses that each sweep model beats the
   others at its own beta, so that is what is checked: the largest advantage of
   another sweep model at a model's own beta,
   :math:`\max_{i\ne j} [F_{\beta_i}(\theta_i) - F_{\beta_i}(\theta_j)] /
   F_{\beta_i}(\theta_i)`, must lie below ``OPTIMALITY_TOL`` (1%, stated up front;
   the sweep models are trained for a few epochs, not to the optimum), on the same
   seed/user bootstrap. R and K are measured on the same users and masks, so every
   :math:`F_{\beta_i}(\theta_j)` is a linear combination of measured terms.

*Mechanism* (the paper's informal consequences; a minimum effect stated before
computing; the seed/user bootstrap; never the verdict):

8. ``sweep_mi_falls`` / 9. ``sweep_kl_aggregate_falls``: each term on its own falls.
   Only their sum must (5); a term could rise while the other falls more, so each is a
   mechanism. Spearman of beta against the term, minimum effect ``MIN_TREND`` = 0.5.
10. ``sweep_w2_contracts``: mean W2 from a user's posteriors to other users'
    ("beta-KL brings distant users together"). Talagrand's inequality bounds it,
    :math:`W_2(q_u,q_v)\le\sqrt{2\mathrm{KL}_u}+\sqrt{2\mathrm{KL}_v}`, an envelope
    that falls with K, but W2 itself need not fall: a mechanism, same rule as 8.
11. ``collapse_at_large_beta``: K -> 0 as beta grows (comparing with a collapsed model
    of the same class, :math:`K(\theta_\beta)\le(R_{\mathrm{collapsed}}-R(\theta_\beta))
    /\beta`), but that the *units* switch off one by one, rather than every unit
    shrinking evenly (measured on the default at beta = 2: all 200 units shrink), does
    not follow: a mechanism. The fraction of informative units falls from the
    smallest to the largest beta by more than ``MIN_COLLAPSE`` = 0.5 of the units.

Collapse, measured two ways (the deciding rule stated before computing). A unit is
*informative* when its information bound :math:`I^G_k = \tfrac12\log(\operatorname{
Var}_x\mu_k + \overline{\sigma_k^2}) - \tfrac12\overline{\log\sigma_k^2}` exceeds
``INFO_THRESHOLD`` = 0.01 nats (``radius.analysis.decomposition.unit_information``: an
upper bound on :math:`I(X_h;Z_k)`, unchanged by :math:`z_k\to a z_k+c`); this rule
decides. Burda et al.'s variance rule (:math:`\operatorname{Var}_x\mu_k > 0.01`,
``VAR_THRESHOLD``) is reported beside it: it reads the latent scale (a rescaled latent
space flips it; see ``power``). The per-unit KL to N(0, 1) is
:math:`I^G_k` plus the unit's scale mismatch with the prior, so it is not scale-free
either; it is reported too. Where the sweep stops before collapse, the note says how
far it got: the largest beta and the units active there by both rules.

The sweep (issue 18: at scale, not hours of retraining)
--------------------------------------------------------

Each sweep point beta is one model per training seed (``sweep_seeds``). Sources, first
that applies: the user's sweep models (``sweep_models``, ``radius verify
--sweep-checkpoint BETA=PATH``); the user's ``fit(beta)``; else a *warm start*
(default, ``sweep_start="warm"``): the masking model of that seed (radius's own, or the
radius checkpoint the user gave as ``masking``) fine-tuned at beta for ``sweep_epochs``
(default 4) epochs on a subsample of ``sweep_users`` (default 2000) training users,
beta at its cap from the first step (``anneal_steps=0``), batch 100 and 3x the base
learning rate, keeping the last epoch's weights (``keep="last"``: the best-validation
epoch of a fine-tune at large beta is its first, the one least adapted to beta);
``sweep_start="scratch"`` trains every sweep model from its seeded initialisation
(20 epochs, beta annealed over half of them, keeping the best-validation weights among
epochs wholly at the cap, ``keep="best-at-cap"``). A warm-started model's cache key
holds its parent's (``radius.training.warm``). A user's model without a radius config
and without fit or sweep checkpoints cannot be fine-tuned: the sweep is then listed
under ``details["parts_not_run"]`` with the options that would run it.

The swept field is the model's own KL weight (``KL_FIELDS``): Multi-VAE ``beta_cap``;
RecVAE ``gamma = beta / mean_count`` (its KL weight of user u is
:math:`\gamma\,|x_u|`, so the mean effective weight is beta); for RecVAE the
decomposition is measured against N(0, I), the theory's reference prior.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from radius.analysis.decomposition import (
    KLDecomposition,
    active_units,
    encode_masked,
    information_from_moments,
    kl_decomposition,
    kl_to_standard_normal,
    per_input_mean_w2,
    reconstruction_nll,
    spearman,
    unit_information,
    unit_kl,
    unit_moments,
)
from radius.errors import RadiusError
from radius.model.protocol import input_convention
from radius.stats import BOOTSTRAP_LEVEL, Interval, Outcome, decide, seed_user_interval
from radius.training.config import TrainConfig
from radius.verify.base import Check, ClaimResult, PowerRow
from radius.verify.context import MissingModelError, VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "DEFAULT_BETAS",
    "SWEEP_STARTS",
    "KL_FIELDS",
    "kl_field",
    "mean_count",
    "check_identity",
    "check_mi_upper_bound",
    "check_terms_nonnegative",
    "check_sweep_decompositions",
    "check_trend",
    "check_collapse",
    "check_penalty",
    "check_optimal",
    "trend_interval",
    "SweepOptions",
    "sweep_options",
    "sweep_config",
    "load_sweep_checkpoints",
    "models_needed",
    "run",
    "power",
]

CLAIM_ID = "beta-kl"
TITLE = "beta-KL decomposition: E KL = I_q(X_h; Z) + KL(q_h || p), and its beta sweep"
STATEMENT = (
    "For the aggregate posterior q_h = E_{x,b} q(z | x*b) (the uniform mixture over the "
    "sampled users and masks), E_{x,b} KL(q(z|x_h) || N(0, I)) = I_q(X_h; Z) + KL(q_h || N(0, I)), "
    "with 0 <= I_q <= log N and KL(q_h || p) >= 0 (an identity). Over a sweep of the KL "
    "weight beta, E KL falls: for minimisers of R + beta K it is non-increasing in beta "
    "(derived here), which decides the verdict. The summary's further statements, that each "
    "term falls, that the mean pairwise W2 contracts and that units collapse at large beta, do "
    "not follow from it and are reported as mechanisms. The sweep varies the model's own KL "
    "weight: beta_cap for Multi-VAE; for RecVAE, whose KL weight of user u is gamma * |x_u|, "
    "gamma = beta / (mean interaction count of the training users), measured against N(0, I). "
    "Reconstruction: the identity and the monotonicity are derived here; the summary states "
    "the sweep's directions qualitatively."
)
RECONSTRUCTION = True

# Geometric up to collapse: on the embedded default the masking model's units switch off
# between beta 4 and 16 (warm starts, seeds 0 and 1: 134-137 of 200 units informative at
# beta 4, 2-4 at 8, 0 at 16).
DEFAULT_BETAS: tuple[float, ...] = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
SWEEP_STARTS = ("warm", "scratch")
DEFAULT_SWEEP_EPOCHS = {"warm": 4, "scratch": 20}
DEFAULT_SWEEP_USERS: dict[str, int | None] = {"warm": 2000, "scratch": None}
DEFAULT_SWEEP_SEEDS = 2  # at most; fewer when VerifyOptions.seeds is smaller
WARM_BATCH = 100  # fine-tuning batch (more steps per epoch than the base 500)
WARM_LR_FACTOR = 3.0  # fine-tuning learning rate = 3 x the base config's
SCRATCH_ANNEAL_FRACTION = 0.5  # scratch sweep models anneal over half their epochs
INFO_THRESHOLD = 0.01  # nats: a unit with I^G_k at most this carries no information
VAR_THRESHOLD = 0.01  # Burda et al. (2016): active when Var_x mu_k > 0.01
MIN_TREND = 0.5  # minimum |Spearman| of a mechanism trend, stated up front
MIN_COLLAPSE = 0.5  # minimum drop of the informative fraction of units (collapse)
OPTIMALITY_TOL = 0.01  # relative advantage of another sweep model tolerated (1%)
MIN_USERS = 10  # fewer users: the sweep's interval checks are INCONCLUSIVE
MAX_INPUTS = 2000  # cap on N = users x masks (the mixture costs N^2 S d)
BAND_DRAWS = 500  # bootstrap draws of the per-beta bands (figure, details)
# The config field that is each model's KL weight (what a sweep point beta sets).
KL_FIELDS: dict[str, str] = {"multvae": "beta_cap", "recvae": "gamma"}


# --------------------------------------------------------------------------- identities
def check_identity(dec: KLDecomposition, *, n_se: float = 4.0, atol: float = 1e-6) -> Check:
    """|E KL - (I + KL(q_h||p))| <= n_se * se + atol * max(1, E KL)."""
    tol = n_se * dec.gap_se + atol * max(1.0, abs(dec.e_kl))
    ok = math.isfinite(dec.gap) and abs(dec.gap) <= tol
    return Check(
        name="identity",
        description="closed-form E KL(q(z|x_h)||p) equals MC I_q(X_h;Z) + MC KL(q_h||p)",
        measured=abs(dec.gap),
        bound=tol,
        slack=tol - abs(dec.gap),
        tolerance=f"|gap| <= {n_se:g} x combined standard error + {atol:g} x max(1, E KL)",
        passed=bool(ok and dec.n_inputs > 0),
        n=dec.n_inputs * dec.n_samples,
        kind="identity",
        role="implementation",
        note="" if ok else f"gap {dec.gap:+.4g} nats against a tolerance of {tol:.3g}",
    )


def check_mi_upper_bound(dec: KLDecomposition, *, atol: float = 1e-6) -> Check:
    """Every sampled log q_j(z) - log q_h(z) <= log N (q_h >= q_j / N pointwise)."""
    bound = dec.log_n + atol
    ok = math.isfinite(dec.max_pointwise_mi) and dec.max_pointwise_mi <= bound
    return Check(
        name="mi_upper_bound",
        description="max over draws of log q_j(z) - log q_h(z) <= log N (I is an MI over N inputs)",
        measured=dec.max_pointwise_mi,
        bound=bound,
        slack=bound - dec.max_pointwise_mi,
        tolerance=f"every draw (exact bound), absolute tolerance {atol:g} for float64 rounding",
        passed=bool(ok and dec.n_inputs > 0),
        n=dec.n_inputs * dec.n_samples,
        kind="identity",
        role="implementation",
        note="" if ok else f"a draw reached {dec.max_pointwise_mi:.4g} > log N = {dec.log_n:.4g}",
    )


def check_terms_nonnegative(dec: KLDecomposition, *, n_se: float = 4.0) -> Check:
    """I >= -n_se se_I and KL(q_h||p) >= -n_se se_KL."""
    slack = min(
        dec.mutual_info + n_se * dec.mutual_info_se,
        dec.kl_aggregate + n_se * dec.kl_aggregate_se,
    )
    ok = bool(math.isfinite(slack) and slack >= 0 and dec.n_inputs > 0)
    return Check(
        name="terms_nonnegative",
        description="I_q(X_h;Z) >= 0 and KL(q_h||p) >= 0 (measured: the smaller estimate)",
        measured=min(dec.mutual_info, dec.kl_aggregate),
        bound=0.0,
        slack=slack,
        tolerance=f"each estimate >= -{n_se:g} x its standard error",
        passed=ok,
        n=dec.n_inputs * dec.n_samples,
        kind="identity",
        role="implementation",
        note=""
        if ok
        else f"I = {dec.mutual_info:.4g}, KL(q_h||p) = {dec.kl_aggregate:.4g}: below -{n_se:g} se",
    )


def check_sweep_decompositions(decs: Sequence[tuple[str, KLDecomposition]], *, n_se=4.0) -> Check:
    """Checks 1-3 on every sweep model (``decs``: (label, decomposition) pairs)."""
    bad = [
        label
        for label, d in decs
        if not (
            check_identity(d, n_se=n_se).passed
            and check_mi_upper_bound(d).passed
            and check_terms_nonnegative(d, n_se=n_se).passed
        )
    ]
    return Check(
        name="sweep_decompositions",
        description="identity, log N bound and signs on every sweep model",
        measured=float(len(bad)),
        bound=0.0,
        slack=-float(len(bad)),
        tolerance="as identity, mi_upper_bound and terms_nonnegative, on each model",
        passed=bool(decs) and not bad,
        n=len(decs),
        kind="identity",
        role="implementation",
        note=(f"fails on {', '.join(bad)}" if bad else "" if decs else "no sweep model ran"),
        outcome=None if decs else Outcome.INCONCLUSIVE,
    )


# --------------------------------------------------------------------------- intervals
def trend_interval(
    values: np.ndarray,
    betas: Sequence[float],
    *,
    weights: np.ndarray | None = None,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    n_boot: int | None = None,
) -> Interval:
    r"""Spearman of beta against the sweep's mean curve, with the seed/user bootstrap.

    ``values`` is (B, S, U): a per-user quantity at each of B betas for S training seeds
    on the same U users. The statistic is :math:`\rho_S(\beta_b, \bar T_b)` with
    :math:`\bar T_b` the (``weights``-weighted) mean over the resampled seeds and users;
    ``seed_user_interval`` resamples seeds, then users, of an (S, U) index block, so each
    draw keeps every (seed, user) cell's whole curve over beta together.
    """
    v = np.asarray(values, dtype=np.float64)
    if v.ndim != 3 or v.shape[0] != len(betas):
        raise ValueError(
            f"values must be (betas, seeds, users) with {len(betas)} betas, got {v.shape}"
        )
    n_b, n_s, n_u = v.shape
    flat = v.reshape(n_b, n_s * n_u)
    w = np.ones(n_u) if weights is None else np.asarray(weights, dtype=np.float64)
    if w.shape != (n_u,):
        raise ValueError(f"weights must have shape ({n_u},), got {w.shape}")
    w_flat = np.tile(w, n_s)
    b = np.asarray(betas, dtype=np.float64)

    def stat(block: np.ndarray) -> float:
        idx = block.astype(np.int64).ravel()
        ww = w_flat[idx]
        return spearman(b, flat[:, idx] @ ww / ww.sum())

    index = np.arange(n_s * n_u, dtype=np.float64).reshape(n_s, n_u)
    kw = {} if n_boot is None else {"n_boot": n_boot}
    return seed_user_interval(index, statistic=stat, level=level, seed=seed, **kw)


def _weighted_mean_interval(values: np.ndarray, weights: np.ndarray, **kw) -> Interval:
    """Seed/user bootstrap of the ``weights``-weighted mean of (S, U) values."""
    v = np.asarray(values, dtype=np.float64)
    n_s, n_u = v.shape
    w = np.tile(np.asarray(weights, dtype=np.float64), n_s)
    flat = v.ravel()

    def stat(block: np.ndarray) -> float:
        idx = block.astype(np.int64).ravel()
        return float(flat[idx] @ w[idx] / w[idx].sum())

    index = np.arange(n_s * n_u, dtype=np.float64).reshape(n_s, n_u)
    return seed_user_interval(index, statistic=stat, **kw)


# --------------------------------------------------------------------------- sweep checks
def check_trend(
    name: str,
    values: np.ndarray,
    betas: Sequence[float],
    *,
    what: str,
    role: str,
    min_effect: float = 0.0,
    weights: np.ndarray | None = None,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    min_users: int = MIN_USERS,
) -> Check:
    """A per-user quantity falls over the sweep's beta > 0: Spearman of beta against its
    mean curve lies below 0 (``statement``; ``min_effect`` 0) or below -``min_effect``
    (``mechanism``). ``values`` (B, S, U) as in :func:`trend_interval`."""
    b = [float(x) for x in betas]
    if len(b) < 2:
        iv = Interval(float("nan"), float("nan"), float("nan"), level, "fewer than 2 betas", 0)
        return Check.from_interval(
            name,
            f"{what} falls over beta > 0",
            iv,
            tolerance="needs >= 2 betas > 0",
            min_n=min_users,
            direction=-1,
            role=role,
            min_effect=min_effect,
            note=f"only {len(b)} beta > 0 in the sweep: no trend to judge (give >= 2 betas > 0)",
        )
    iv = trend_interval(values, b, weights=weights, level=level, seed=seed)
    side = f"-{min_effect:g}" if min_effect else "0"
    return Check.from_interval(
        name,
        f"{what} falls over beta in {b[0]:g}..{b[-1]:g} (Spearman of beta against its mean)",
        iv,
        tolerance=f"{level:g} two-stage bootstrap interval (seeds, then users) of Spearman's "
        f"rho wholly below {side} (HOLDS)"
        + (
            f", wholly above +{min_effect:g} (CONTRADICTED), inside +-{min_effect:g} (NOT "
            "OBSERVED), else INCONCLUSIVE"
            if min_effect
            else ", wholly above 0 (CONTRADICTED), else INCONCLUSIVE"
        )
        + f"; >= {min_users} users",
        min_n=min_users,
        direction=-1,
        role=role,
        min_effect=min_effect,
    )


def _unit_counts(sums: np.ndarray, counts: np.ndarray, w: np.ndarray, threshold: float) -> int:
    return int(np.sum(information_from_moments(sums, counts, w) > threshold))


def check_collapse(
    moments_lo: Sequence[tuple[np.ndarray, np.ndarray]],
    moments_hi: Sequence[tuple[np.ndarray, np.ndarray]],
    *,
    latent_dim: int,
    beta_lo: float,
    beta_hi: float,
    variance_units: tuple[Sequence[int], Sequence[int]] | None = None,
    min_effect: float = MIN_COLLAPSE,
    threshold: float = INFO_THRESHOLD,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
    not_reached_note: str = "",
) -> Check:
    r"""Mechanism: the informative fraction of units falls from the smallest to the
    largest beta by more than ``min_effect`` (units switch off: collapse).

    ``moments_lo`` / ``moments_hi``: per seed, ``unit_moments`` output (sums (U, 4, d),
    counts (U,)) at the two betas, on the same users. The statistic of a draw is the
    mean over the resampled seeds of :math:`(A_s(\beta_{lo}) - A_s(\beta_{hi})) / d`,
    :math:`A` the units with :math:`I^G_k >` ``threshold`` on the resampled users. The
    note always says how far the sweep got (largest beta and active units there by the
    information rule and, when given, the variance rule); ``not_reached_note`` is added
    when collapse is not reached (why a model keeps its units).
    """
    n_s = len(moments_lo)
    if n_s != len(moments_hi) or n_s < 1:
        raise ValueError("moments_lo and moments_hi need one entry per seed, same length")
    n_u = moments_lo[0][0].shape[0]

    def stat(block: np.ndarray) -> float:
        rows = block.astype(np.int64)  # (S, U) of s * U + u
        out = []
        for r in rows:
            s = int(r[0] // n_u)
            w = np.bincount(r - s * n_u, minlength=n_u).astype(np.float64)
            lo = _unit_counts(*moments_lo[s], w, threshold)
            hi = _unit_counts(*moments_hi[s], w, threshold)
            out.append((lo - hi) / latent_dim)
        return float(np.mean(out))

    index = np.arange(n_s * n_u, dtype=np.float64).reshape(n_s, n_u)
    iv = seed_user_interval(index, statistic=stat, level=level, seed=seed)
    ones = np.ones(n_u)
    at_lo = [_unit_counts(*m, ones, threshold) for m in moments_lo]
    at_hi = [_unit_counts(*m, ones, threshold) for m in moments_hi]

    def span(v: Sequence[int]) -> str:
        return f"{min(v)}" if min(v) == max(v) else f"{min(v)}-{max(v)}"

    how_far = (
        f"informative units (I^G_k > {threshold:g} nats) {span(at_lo)}/{latent_dim} at beta "
        f"{beta_lo:g}, {span(at_hi)}/{latent_dim} at the sweep's largest beta {beta_hi:g}"
    )
    if variance_units is not None:
        how_far += (
            f"; by the variance rule (Var mu_k > {VAR_THRESHOLD:g}) {span(variance_units[0])} "
            f"and {span(variance_units[1])}"
        )
    outcome_pre = decide(iv, direction=+1, min_n=MIN_USERS, min_effect=min_effect)
    lead = {
        Outcome.PASS: "collapse reached",
        Outcome.VACUOUS: f"collapse not reached up to beta {beta_hi:g}",
        Outcome.FAIL: "units turn on as beta grows",
        Outcome.INCONCLUSIVE: "collapse undecided",
    }[outcome_pre]
    why = not_reached_note if outcome_pre is not Outcome.PASS else ""
    note = f"{lead}: {how_far}; drop {iv}" + (f". {why}" if why else "")
    return Check.from_interval(
        "collapse_at_large_beta",
        f"informative units fall by more than {min_effect:.0%} of the {latent_dim} units from "
        f"beta {beta_lo:g} to {beta_hi:g} (posterior collapse)",
        iv,
        tolerance=f"rule stated before computing: a unit is informative when I^G_k > "
        f"{threshold:g} nats (scale-free); minimum effect {min_effect:.0%} of the units; "
        f"{level:g} two-stage bootstrap (seeds, then users) of the drop",
        min_n=MIN_USERS,
        direction=+1,
        min_effect=min_effect,
        role="mechanism",
        note=note,
    )


def check_penalty(model: str | None, prior: str | None, *, given: bool) -> Check:
    """Assumption: the sweep models minimise R + beta K with K the (count-weighted) mean
    KL to N(0, I). ``model`` / ``prior``: the sweep configs' (None when unknown)."""
    if given or model is None:
        return Check(
            name="penalty_is_kl_to_prior",
            description="the sweep models were trained on R + beta E KL(q || N(0, I))",
            measured=float("nan"),
            bound=1.0,
            slack=float("nan"),
            tolerance="read from the training config",
            passed=False,
            n=0,
            kind="bound",
            role="assumption",
            outcome=Outcome.INCONCLUSIVE,
            note="the sweep models were given by the user: radius cannot read the objective "
            "they were trained on (assumed: the beta-ELBO against N(0, I))",
        )
    composite = model == "recvae" and prior != "standard"
    what = {
        "multvae": "Multi-VAE's beta-ELBO: R + beta E KL(q || N(0, I))",
        "recvae": "RecVAE: R + gamma sum_u |x_u| KL(q_u || prior)",
    }[model]
    note = ""
    if composite:
        note = (
            "RecVAE's composite prior is a mixture of N(0, I), the previous epoch's encoder "
            "posterior and a wide Gaussian, refreshed every epoch: the objective has no fixed "
            "penalty K, so E KL to N(0, I) need not fall (the statement is checked outside "
            "its premises; recvae_prior='standard' meets it)"
        )
    return Check(
        name="penalty_is_kl_to_prior",
        description=f"the penalty of the training objective is the KL to N(0, I) ({what})",
        measured=0.0 if composite else 1.0,
        bound=1.0,
        slack=-1.0 if composite else 0.0,
        tolerance="read from the training config",
        passed=not composite,
        n=1,
        kind="bound",
        role="assumption",
        note=note,
    )


def check_optimal(
    recon: np.ndarray,
    kl: np.ndarray,
    betas: Sequence[float],
    *,
    kl_weights: np.ndarray | None = None,
    tol: float = OPTIMALITY_TOL,
    level: float = BOOTSTRAP_LEVEL,
    seed: int = 0,
) -> Check:
    r"""Assumption: each sweep model beats the others at its own beta (to ``tol``).

    ``recon``, ``kl``: (B, S, U) per-user reconstruction loss and KL of the model
    trained at each beta. :math:`F_{\beta_i}(\theta_j)_u = R_{ju} + \beta_i w_u K_{ju}`
    (``kl_weights`` w: RecVAE's count weights). The statistic of a draw is
    :math:`\max_{i\ne j}[\bar F_{\beta_i}(\theta_i) - \bar F_{\beta_i}(\theta_j)] /
    \bar F_{\beta_i}(\theta_i)` over the resampled seeds and users: MET when the
    interval lies wholly below ``tol``, NOT MET when wholly above.
    """
    r = np.asarray(recon, dtype=np.float64)
    k = np.asarray(kl, dtype=np.float64)
    b = np.asarray(betas, dtype=np.float64)
    n_b, n_s, n_u = r.shape
    w = np.ones(n_u) if kl_weights is None else np.asarray(kl_weights, dtype=np.float64)
    rf, kf = r.reshape(n_b, -1), (k * w[None, None, :]).reshape(n_b, -1)
    worst_pair: list[tuple[int, int]] = []

    def stat(block: np.ndarray) -> float:
        idx = block.astype(np.int64).ravel()
        rm, km = rf[:, idx].mean(axis=1), kf[:, idx].mean(axis=1)  # (B,)
        f = rm[None, :] + b[:, None] * km[None, :]  # f[i, j] = F_beta_i(theta_j)
        own = np.diag(f)
        adv = (own[:, None] - f) / np.abs(own)[:, None]
        np.fill_diagonal(adv, -np.inf)
        if not worst_pair:
            worst_pair.append(tuple(int(x) for x in np.unravel_index(np.argmax(adv), adv.shape)))
        return float(adv.max())

    index = np.arange(n_s * n_u, dtype=np.float64).reshape(n_s, n_u)
    iv = seed_user_interval(index, statistic=stat, level=level, seed=seed)
    i, j = worst_pair[0] if worst_pair else (0, 0)
    note = (
        f"largest advantage of another sweep model: the beta {b[j]:g} model at beta {b[i]:g}, "
        f"{iv.estimate:+.3%} of F (interval [{iv.low:+.3%}, {iv.high:+.3%}]) against the "
        f"tolerance {tol:.0%}"
    )
    return Check.from_interval(
        "sweep_models_optimal",
        "each sweep model has the lowest R + beta K at its own beta among the sweep's models "
        "(the premise the monotonicity uses)",
        iv,
        tolerance=f"{level:g} two-stage bootstrap interval of the largest relative advantage "
        f"wholly below {tol:.0%} (MET), wholly above (NOT MET), else unresolved",
        min_n=MIN_USERS,
        direction=-1,
        threshold=tol,
        role="assumption",
        note=note,
    )


# --------------------------------------------------------------------------- sweep set-up
def kl_field(model: str) -> str:
    """The config field a sweep point sets: ``beta_cap`` (Multi-VAE) or ``gamma`` (RecVAE)."""
    try:
        return KL_FIELDS[model]
    except KeyError:
        raise ValueError(
            f"no KL weight field for model {model!r} (known: {sorted(KL_FIELDS)})"
        ) from None


def mean_count(train: Any) -> float:
    """Mean interaction count per training user: the mean row sum of ``train`` (users x items).

    The same count RecVAE scales its KL weight by (the row sum of the user's values).
    """
    n_users = int(train.shape[0])
    if n_users < 1:
        raise ValueError("no training users to take the mean interaction count over")
    return float(train.sum()) / n_users


def sweep_config(
    base: TrainConfig,
    beta: float,
    *,
    start: str = "warm",
    sweep_epochs: int,
    n_train: int,
    mean_count: float | None = None,
) -> TrainConfig:
    """The masking config at sweep point ``beta`` for the model ``base.model``.

    The KL weight: Multi-VAE ``beta_cap = beta``; RecVAE ``gamma = beta / mean_count``
    (``mean_count`` required: the mean interaction count of the training users, so the
    mean effective per-user weight ``gamma * |x_u|`` is beta).

    ``start="warm"`` (fine-tuning the masking model, ``radius.training.warm``):
    ``sweep_epochs`` epochs with no early stop, beta at its cap from the first step
    (``anneal_steps=0``), batch ``min(base, WARM_BATCH)``, learning rate
    ``WARM_LR_FACTOR`` x the base's, the last epoch kept (``keep="last"``).
    ``start="scratch"``: ``sweep_epochs`` epochs from the seeded initialisation, beta
    annealed over ``SCRATCH_ANNEAL_FRACTION`` of the ``n_train``-user epochs (RecVAE:
    no annealing), the best-validation weights among epochs wholly at the cap
    (``keep="best-at-cap"``).
    """
    if start not in SWEEP_STARTS:
        raise ValueError(f"start must be one of {SWEEP_STARTS}, got {start!r}")
    if not (isinstance(sweep_epochs, (int, np.integer)) and sweep_epochs >= 1):
        raise ValueError(f"sweep_epochs must be an integer >= 1, got {sweep_epochs!r}")
    field_ = kl_field(base.model)
    if field_ == "gamma":
        if mean_count is None or not (math.isfinite(mean_count) and mean_count > 0):
            raise ValueError(
                f"a RecVAE sweep needs mean_count > 0 (the mean interaction count of the "
                f"training users), got {mean_count}"
            )
        cfg = base.replace(gamma=float(beta) / float(mean_count))
    else:
        cfg = base.replace(beta_cap=float(beta))
    e = int(sweep_epochs)
    cfg = cfg.replace(epochs=e, patience=e)
    if start == "warm":
        return cfg.replace(
            anneal_steps=0,
            keep="last",
            batch_size=min(base.batch_size, WARM_BATCH),
            lr=base.lr * WARM_LR_FACTOR,
        )
    cfg = cfg.replace(keep="best-at-cap")
    if field_ == "gamma":
        return cfg
    steps = math.ceil(n_train / base.batch_size) * e
    return cfg.replace(anneal_steps=max(1, round(SCRATCH_ANNEAL_FRACTION * steps)))


@dataclass(frozen=True)
class SweepOptions:
    """The sweep's options, validated (``sweep_options`` fills the defaults)."""

    betas: tuple[float, ...]
    epochs: int
    users: int | None
    seeds: int
    start: str
    models: dict[float, list[Any]] | None = field(default=None, compare=False)
    workers: int | None = None

    def describe(self) -> dict[str, Any]:
        return {
            "betas": list(self.betas),
            "epochs": self.epochs,
            "users": self.users,
            "seeds": self.seeds,
            "start": "given" if self.models else self.start,
        }


def sweep_options(
    ctx: VerifyContext,
    *,
    betas: Sequence[float] | None = None,
    sweep_epochs: int | None = None,
    sweep_users: int | None = None,
    sweep_seeds: int | None = None,
    sweep_start: str = "warm",
    sweep_models: Mapping[float, Any] | None = None,
    workers: int | None = None,
) -> SweepOptions:
    """Validate the sweep's options and fill the defaults (module constants)."""
    if sweep_start not in SWEEP_STARTS:
        raise ValueError(f"sweep_start must be one of {SWEEP_STARTS}, got {sweep_start!r}")
    models = None
    if sweep_models is not None:
        if not isinstance(sweep_models, Mapping) or not sweep_models:
            raise ValueError("sweep_models must map betas to models (or lists, one per seed)")
        from radius.model.wrap import validate

        models = {}
        for b, m in sweep_models.items():
            seq = list(m) if isinstance(m, Sequence) else [m]
            if not seq:
                raise ValueError(f"sweep_models[{b!r}] is an empty list")
            models[float(b)] = [
                validate(x, n_items=ctx.dataset.n_items, name=f"the sweep model at beta {b}")
                for x in seq
            ]
        given = sorted(models)
        if betas is not None and sorted(float(b) for b in betas) != given:
            raise ValueError(
                f"betas {sorted(float(b) for b in betas)} differ from the betas of the given "
                f"sweep models {given}; leave betas out to use the given ones"
            )
        betas = given
    b = sorted({float(x) for x in (DEFAULT_BETAS if betas is None else betas)})
    if any(not (x >= 0 and math.isfinite(x)) for x in b):
        raise ValueError(f"betas must be finite and >= 0, got {b}")
    if b and len(b) < 2:
        raise ValueError(f"the sweep needs at least 2 distinct betas (or none), got {b}")
    epochs = DEFAULT_SWEEP_EPOCHS[sweep_start] if sweep_epochs is None else sweep_epochs
    if not (isinstance(epochs, (int, np.integer)) and epochs >= 1):
        raise ValueError(f"sweep_epochs must be an integer >= 1, got {sweep_epochs!r}")
    users = DEFAULT_SWEEP_USERS[sweep_start] if sweep_users is None else sweep_users
    if users is not None and not (isinstance(users, (int, np.integer)) and users >= 2):
        raise ValueError(f"sweep_users must be an integer >= 2 or None (all), got {users!r}")
    if users is not None and users >= ctx.dataset.train.shape[0]:
        users = None  # every training user
    if sweep_seeds is None:
        seeds = min(DEFAULT_SWEEP_SEEDS, int(ctx.options.seeds))
    elif isinstance(sweep_seeds, (int, np.integer)) and sweep_seeds >= 1:
        seeds = int(sweep_seeds)
    else:
        raise ValueError(f"sweep_seeds must be an integer >= 1, got {sweep_seeds!r}")
    if workers is not None and not (isinstance(workers, (int, np.integer)) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    if models:
        seeds = min(len(v) for v in models.values())
    return SweepOptions(tuple(b), int(epochs), users, seeds, sweep_start, models, workers)


def load_sweep_checkpoints(
    specs: Sequence[str], dataset: Any, *, factory: str | None = None
) -> dict[float, list[Any]]:
    """Sweep models from ``BETA=PATH`` specs (``radius verify --sweep-checkpoint``); a beta
    repeated gives one model per training seed, in order. Each file is loaded as the
    masking checkpoints are (``radius.verify.api.load_models``: a radius checkpoint, or
    ``factory`` builds the architecture). Bad specs raise ``RadiusError`` (exit 2)."""
    from radius.verify.api import load_models

    out: dict[float, list[Any]] = {}
    for spec in specs:
        raw_beta, sep, path = str(spec).partition("=")
        try:
            beta = float(raw_beta)
        except ValueError:
            beta = float("nan")
        if not sep or not path or not (math.isfinite(beta) and beta >= 0):
            raise RadiusError(
                f"--sweep-checkpoint {spec!r}: expected BETA=PATH with BETA a number >= 0"
            )
        model = load_models([f"masking={path}"], dataset, factory=factory)["masking"]
        out.setdefault(beta, []).append(model)
    return out


# --------------------------------------------------------------------------- sweep points
@dataclass
class _Point:
    beta: float
    seed: int  # index 0..S-1
    source: str  # given | fit | warm | scratch
    label: str
    model: Any = None
    job: Any = None  # WarmStart (warm) or TrainConfig (scratch)
    record: dict[str, Any] = field(default_factory=dict)


def _parent_of(ctx: VerifyContext, k: int) -> tuple[Any, TrainConfig] | None:
    """Seed k's masking model to warm-start from and its config, or None (cannot)."""
    if not ctx.user_models:
        cfg = ctx.config("masking")
        parent = cfg if k == 0 else cfg.replace(seed=cfg.seed + k)
        return parent, parent
    if "masking" not in (ctx.models or {}):
        return None
    models = ctx.seed_models("masking")
    m = models[k % len(models)]
    cfg = getattr(m, "radius_config", None)
    if not isinstance(cfg, TrainConfig):
        return None
    return m, cfg.replace(seed=cfg.seed + k if k >= len(models) else cfg.seed)


def _plan(ctx: VerifyContext, opts: SweepOptions) -> tuple[list[_Point], list[str]]:
    """The sweep's points (beta, seed, source) and what could not run, in words."""
    if not opts.betas:
        return [], ["the beta sweep: no betas given (--sweep-betas / betas=)"]
    pts: list[_Point] = []
    if opts.models:
        for b in opts.betas:
            for k in range(opts.seeds):
                pts.append(
                    _Point(
                        b, k, "given", f"given sweep model beta {b:g} #{k}", model=opts.models[b][k]
                    )
                )
        return pts, []
    if ctx.user_models and ctx.fit_beta is not None:
        base_seed = int(ctx.base_config.seed)
        for b in opts.betas:
            for k in range(opts.seeds):
                pts.append(_Point(b, k, "fit", f"fit({b:g}) seed {base_seed + k}"))
        return pts, []
    parents = [_parent_of(ctx, k) for k in range(opts.seeds)]
    if any(p is None for p in parents):
        why = (
            "the 'masking' model was not given"
            if "masking" not in (ctx.models or {})
            else "the given 'masking' model is not a radius checkpoint (no training config "
            "to fine-tune it with)"
        )
        return (
            [],
            [
                f"the beta sweep: {why}; run it with --sweep-checkpoint BETA=PATH (repeatable; "
                "API: sweep_models={beta: model}), fit(beta) (API), or a radius masking "
                "checkpoint (--checkpoint masking=PATH) to warm-start from"
            ],
        )
    if ctx.user_models and opts.start == "scratch":
        return (
            [],
            [
                "the beta sweep from scratch: with user models radius trains no substitute; use "
                "sweep_start='warm' (--sweep-start warm) or give the sweep's models"
            ],
        )
    from radius.training.warm import WarmStart

    n_bar = mean_count(ctx.dataset.train)
    n_sub = min(opts.users or ctx.dataset.train.shape[0], ctx.dataset.train.shape[0])
    for b in opts.betas:
        for k in range(opts.seeds):
            parent, pcfg = parents[k]  # type: ignore[misc]
            cfg = sweep_config(
                pcfg,
                b,
                start=opts.start,
                sweep_epochs=opts.epochs,
                n_train=n_sub,
                mean_count=n_bar,
            ).replace(seed=pcfg.seed)
            if opts.start == "warm":
                job: Any = WarmStart(cfg, parent, opts.users, int(ctx.options.seed))
            else:
                job = cfg
            pts.append(
                _Point(b, k, opts.start, f"{opts.start} beta {b:g} seed {cfg.seed}", job=job)
            )
    return pts, []


def _cache_dir(ctx: VerifyContext):
    from radius.training.cache import default_cache_dir

    return ctx.cache_dir or default_cache_dir()


def _scratch_data(ctx: VerifyContext, opts: SweepOptions):
    from radius.training.warm import subsample_users

    return subsample_users(ctx.dataset, opts.users, seed=int(ctx.options.seed))


def _train_points(ctx: VerifyContext, pts: list[_Point], opts: SweepOptions) -> None:
    """Train the sweep models missing from the cache, in parallel (one thread each)."""
    from radius.training.cache import train_many
    from radius.training.warm import train_warm_many

    warm = [p.job for p in pts if p.source == "warm"]
    if warm:
        train_warm_many(
            ctx.dataset,
            warm,
            cache_dir=_cache_dir(ctx),
            workers=opts.workers,
            progress=ctx.progress,
        )
    scratch = [p.job for p in pts if p.source == "scratch"]
    if scratch:
        train_many(
            _scratch_data(ctx, opts),
            scratch,
            cache_dir=_cache_dir(ctx),
            workers=opts.workers,
            progress=ctx.progress,
        )


def _load_point(ctx: VerifyContext, p: _Point, opts: SweepOptions) -> Any:
    """The model of one sweep point (from the cache, the user or fit); records how it was
    trained in ``p.record``. Loaded one at a time, so memory holds one sweep model."""
    from radius.training.cache import get_model
    from radius.training.warm import get_warm_model

    if p.source == "given":
        return p.model
    if p.source == "fit":
        return ctx.sweep_model(p.beta, seed=int(ctx.base_config.seed) + p.seed)
    if p.source == "warm":
        model, p.record = get_warm_model(ctx.dataset, p.job, cache_dir=_cache_dir(ctx))
        return model
    data = _scratch_data(ctx, opts)
    p.record = _scratch_record(data, p.job, ctx)
    return get_model(data, p.job, cache_dir=_cache_dir(ctx)).cpu().eval()


def _scratch_record(data, config: TrainConfig, ctx: VerifyContext) -> dict[str, Any]:
    from radius.training.cache import cache_path
    from radius.training.checkpoints import load_checkpoint

    payload = load_checkpoint(cache_path(data, config, _cache_dir(ctx)), data).payload
    best = int(payload["best_epoch"])
    rec = next((h for h in payload.get("history") or [] if h.get("epoch") == best), {})
    return {
        "best_epoch": best,
        "kl_weight_at_best_epoch": rec.get("beta"),
        "epochs_run": len(payload.get("history") or []),
        "train_users": int(data.train.shape[0]),
    }


# --------------------------------------------------------------------------- measuring
def _measure(
    model: Any,
    ctx: VerifyContext,
    users: np.ndarray,
    *,
    n_masks: int,
    keep_rate: float,
    n_samples: int,
    recon: bool = False,
) -> tuple[KLDecomposition, dict[str, Any], dict[str, Any]]:
    """Decomposition, W2, unit activity (both rules) and, with ``recon``, the
    reconstruction loss of one model on the given users x masks (the same masks for
    every model: seeded by ``ctx.options.seed``).

    Returns the decomposition, a JSON row and per-user arrays (U,) (a user's masks
    averaged): E KL, the I and KL(q_h||p) integrands, mean W2 to other users,
    reconstruction loss; ``moments`` (unit_moments output) and ``mu`` / ``logvar``.
    """
    seed = ctx.options.seed
    mu, logvar, groups = encode_masked(
        model, ctx.dataset.train, users, n_masks=n_masks, keep_rate=keep_rate, seed=seed
    )
    n_u = len(users)
    dec = kl_decomposition(mu, logvar, n_samples=n_samples, seed=seed + 1)
    # every user has n_masks inputs, so the mean of the per-input means is the mean over
    # the pairs of different users (``mean_pairwise_w2``) with one distance matrix
    w2_in = per_input_mean_w2(mu, logvar, groups=groups)

    def per_user(v: np.ndarray) -> np.ndarray:
        return v.reshape(n_u, n_masks).mean(axis=1)

    info_k = unit_information(mu, logvar)
    per = {
        "e_kl": per_user(kl_to_standard_normal(mu, logvar)),
        "mutual_info": per_user(dec.mi_per_input),
        "kl_aggregate": per_user(dec.kl_aggregate_per_input),
        "w2": per_user(w2_in),
        "moments": unit_moments(mu, logvar, groups),
        "mu": mu,
        "logvar": logvar,
    }
    row = {
        **dec.to_dict(),
        "mean_pairwise_w2": float(w2_in.mean()),
        "w2_pairs": len(groups) * (len(groups) - n_masks) // 2,
        "active_units": active_units(mu, threshold=VAR_THRESHOLD),
        "informative_units": int(np.sum(info_k > INFO_THRESHOLD)),
        "kl_units": int(np.sum(unit_kl(mu, logvar) > INFO_THRESHOLD)),
        "information_sum": float(info_k.sum()),
        "latent_dim": int(mu.shape[1]),
        "mean_logvar": float(logvar.mean()),
        "input_convention": input_convention(model),
    }
    if recon:
        r = per_user(
            reconstruction_nll(model, ctx.dataset.train, groups, mu, logvar, seed=seed + 2)
        )
        per["reconstruction"] = r
        row["reconstruction"] = float(r.mean())
    return dec, row, per


def _setup(ctx: VerifyContext, opts: SweepOptions | None, n_masks: int) -> np.ndarray:
    """Measurement users, drawn inside the sweep's training subsample when it has one."""
    from radius.training.warm import subsample_rows

    n_train = int(ctx.dataset.train.shape[0])
    sub = None if opts is None or opts.models else opts.users
    pool = subsample_rows(n_train, sub, seed=int(ctx.options.seed))
    n_users = max(2, min(ctx.options.n_users, pool.size, MAX_INPUTS // n_masks))
    rng = np.random.default_rng(ctx.options.seed)
    return np.sort(rng.choice(pool, size=n_users, replace=False))


@dataclass
class _Measured:
    """Every sweep model measured on the same users and masks."""

    betas: list[float]
    seeds: int
    rows: list[dict[str, Any]]
    per: dict[tuple[float, int], dict[str, Any]]
    decs: list[tuple[str, KLDecomposition]]
    model: str | None  # the sweep configs' model (None: given by the user)
    prior: str | None
    given: bool
    latent_dim: int
    counts: np.ndarray  # (U,) interaction counts of the measurement users

    def stack(self, key: str, betas: Sequence[float] | None = None) -> np.ndarray:
        """(B, S, U) per-user values of ``key``."""
        bs = self.betas if betas is None else betas
        return np.stack([np.stack([self.per[(b, k)][key] for k in range(self.seeds)]) for b in bs])

    @property
    def positive(self) -> list[float]:
        return [b for b in self.betas if b > 0]

    @property
    def kl_weights(self) -> np.ndarray | None:
        """RecVAE's per-user KL weights |x_u| / mean (None: one weight for all users)."""
        if self.model != "recvae":
            return None
        return self.counts / self.counts.mean()


def _measure_sweep(
    ctx: VerifyContext,
    pts: list[_Point],
    opts: SweepOptions,
    users: np.ndarray,
    *,
    n_masks: int,
    n_samples: int,
    keep_rate: float,
) -> _Measured:
    rows, per, decs = [], {}, []
    field_ = None
    cfg0 = None
    for p in pts:
        model = _load_point(ctx, p, opts)
        cfg = {"warm": getattr(p.job, "config", None), "scratch": p.job}.get(p.source)
        cfg0 = cfg0 or cfg
        dec, row, pu = _measure(
            model,
            ctx,
            users,
            n_masks=n_masks,
            keep_rate=keep_rate,
            n_samples=n_samples,
            recon=True,
        )
        del model
        per[(p.beta, p.seed)] = pu
        decs.append((p.label, dec))
        entry: dict[str, Any] = {"beta": p.beta, "seed": p.seed, "source": p.source}
        if isinstance(cfg, TrainConfig):
            field_ = kl_field(cfg.model)
            entry.update(seed=int(cfg.seed), kl_field=field_, **{field_: getattr(cfg, field_)})
        rows.append({**entry, **row, **p.record})
    counts = np.asarray(ctx.dataset.train[users].sum(axis=1), dtype=np.float64).ravel()
    return _Measured(
        betas=list(opts.betas),
        seeds=opts.seeds,
        rows=rows,
        per=per,
        decs=decs,
        model=None if cfg0 is None else cfg0.model,
        prior=None if cfg0 is None else cfg0.recvae_prior,
        given=cfg0 is None,
        latent_dim=int(rows[0]["latent_dim"]),
        counts=counts,
    )


def _recvae_collapse_note(m: _Measured) -> str:
    """Why RecVAE keeps its units (said when collapse is not reached)."""
    if m.model == "recvae" and m.prior != "standard":
        return (
            "RecVAE's composite prior mixes N(0, I) with the previous epoch's encoder "
            "posterior, which pulls each posterior toward its own last position rather than "
            "toward N(0, I), so a larger KL weight need not switch units off (its N(0, I) "
            "ablation is --set recvae_prior=standard)"
        )
    return ""


def _sweep_checks(m: _Measured, *, level: float, seed: int, n_se: float) -> list[Check]:
    bp = m.positive
    weights = m.kl_weights
    what = (
        "count-weighted E KL(q(z|x_h) || N(0, I))"
        if weights is not None
        else ("E KL(q(z|x_h) || N(0, I))")
    )
    checks = [
        check_trend(
            "sweep_e_kl_falls",
            m.stack("e_kl", bp),
            bp,
            what=what,
            role="statement",
            weights=weights,
            level=level,
            seed=seed,
        ),
        check_penalty(m.model, m.prior, given=m.given),
    ]
    if len(bp) >= 2 and not (m.model == "recvae" and m.prior != "standard"):
        checks.append(
            check_optimal(
                m.stack("reconstruction", bp),
                m.stack("e_kl", bp),
                bp,
                kl_weights=weights,
                level=level,
                seed=seed,
            )
        )
    for name, key, text in (
        ("sweep_mi_falls", "mutual_info", "I_q(X_h; Z) (per-user share)"),
        ("sweep_kl_aggregate_falls", "kl_aggregate", "KL(q_h || N(0, I)) (per-user share)"),
        ("sweep_w2_contracts", "w2", "mean W2 from a user's posteriors to other users'"),
    ):
        checks.append(
            check_trend(
                name,
                m.stack(key, bp),
                bp,
                what=text,
                role="mechanism",
                min_effect=MIN_TREND,
                level=level,
                seed=seed,
            )
        )
    if len(bp) >= 2:
        lo, hi = bp[0], bp[-1]
        var_units = tuple([r["active_units"] for r in m.rows if r["beta"] == b] for b in (lo, hi))
        checks.append(
            check_collapse(
                [m.per[(lo, k)]["moments"] for k in range(m.seeds)],
                [m.per[(hi, k)]["moments"] for k in range(m.seeds)],
                latent_dim=m.latent_dim,
                beta_lo=lo,
                beta_hi=hi,
                variance_units=var_units,  # type: ignore[arg-type]
                level=level,
                seed=seed,
                not_reached_note=_recvae_collapse_note(m),
            )
        )
    checks.append(check_sweep_decompositions(m.decs, n_se=n_se))
    return checks


def _bands(m: _Measured, *, level: float, seed: int) -> dict[str, dict[str, Any]]:
    """Per beta: the seed/user bootstrap interval of each term's mean (figure bands) and
    the units active by each rule, per seed."""
    out: dict[str, dict[str, Any]] = {}
    for b in m.betas:
        entry: dict[str, Any] = {}
        for key in ("e_kl", "mutual_info", "kl_aggregate", "w2", "reconstruction"):
            vals = np.stack([m.per[(b, k)][key] for k in range(m.seeds)])
            entry[key] = seed_user_interval(
                vals, level=level, seed=seed, n_boot=BAND_DRAWS
            ).to_dict()
            if key == "e_kl" and m.kl_weights is not None:  # the statement's K (RecVAE)
                entry["e_kl_count_weighted"] = _weighted_mean_interval(
                    vals, m.kl_weights, level=level, seed=seed, n_boot=BAND_DRAWS
                ).to_dict()
        rows = [r for r in m.rows if r["beta"] == b]
        for key in ("informative_units", "active_units", "kl_units", "information_sum"):
            entry[key] = [r[key] for r in rows]
        out[f"{b:g}"] = entry
    return out


def _collapse_summary(m: _Measured) -> dict[str, Any]:
    """How far the sweep got: the largest beta and the units active there by both rules,
    and the smallest beta whose every seed has at most 10% of the units informative."""
    hi = max(m.betas)
    at = [r for r in m.rows if r["beta"] == hi]
    first = next(
        (
            b
            for b in m.positive
            if all(r["informative_units"] <= 0.1 * m.latent_dim for r in m.rows if r["beta"] == b)
        ),
        None,
    )
    return {
        "largest_beta": hi,
        "informative_units_at_largest": [r["informative_units"] for r in at],
        "variance_units_at_largest": [r["active_units"] for r in at],
        "first_beta_with_at_most_10pct_informative": first,
        "latent_dim": m.latent_dim,
        "info_threshold_nats": INFO_THRESHOLD,
        "variance_threshold": VAR_THRESHOLD,
    }


def _method(
    m: _Measured | None,
    opts: SweepOptions,
    ctx: VerifyContext,
    n_users: int,
    n_masks: int,
    n_samples: tuple[int, int],
    keep_rate: float,
) -> str:
    text = (
        f"{n_users} training users x {n_masks} masks (keep rate {keep_rate}) -> N = "
        f"{n_users * n_masks} posteriors per model; aggregate posterior = their uniform mixture; "
        f"{n_samples[0]} stratified draws per component ({n_samples[1]} for each sweep model) "
        "for I and, independently, for KL(q_h||p); E KL in closed form. "
    )
    if m is None:
        return text + "Sweep: not run."
    src = {
        "given": "the user's sweep models",
        "fit": "the user's fit(beta)",
        "warm": f"warm starts from the masking model of each seed, {opts.epochs} epochs at "
        f"beta (at its cap from the first step, batch {WARM_BATCH}, {WARM_LR_FACTOR:g}x "
        "the base learning rate, the last epoch kept) on "
        + (f"{opts.users} sampled training users" if opts.users else "all training users"),
        "scratch": f"trained from scratch, {opts.epochs} epochs (beta annealed over "
        f"{SCRATCH_ANNEAL_FRACTION:.0%} of them; the best-validation epoch wholly at the cap "
        "kept) on "
        + (f"{opts.users} sampled training users" if opts.users else "all training users"),
    }[m.rows[0]["source"]]
    kl = (
        "RecVAE's KL weight of user u is gamma x |x_u|: beta sets gamma = beta / "
        f"{mean_count(ctx.dataset.train):.4g} (the mean count), measured against N(0, I)"
        if m.model == "recvae"
        else "beta is the KL weight (Multi-VAE's beta_cap)"
    )
    return text + (
        f"Sweep: betas {m.betas} ({kl}), {m.seeds} training seed(s) each, {src}; the same "
        "users and masks for every model. Trends are Spearman's rho of beta against the "
        "mean curve over beta > 0 with a two-stage bootstrap (seeds, then users); collapse "
        f"by the information rule (I^G_k > {INFO_THRESHOLD:g} nats, decides) beside the "
        f"variance rule (Var mu_k > {VAR_THRESHOLD:g})."
    )


def run(
    ctx: VerifyContext,
    *,
    betas: Sequence[float] | None = None,
    sweep_epochs: int | None = None,
    sweep_users: int | None = None,
    sweep_seeds: int | None = None,
    sweep_start: str = "warm",
    sweep_models: Mapping[float, Any] | None = None,
    workers: int | None = None,
    n_masks: int = 5,
    n_samples: int = 4,
    sweep_samples: int = 2,
    n_se: float = 4.0,
    level: float = BOOTSTRAP_LEVEL,
) -> ClaimResult:
    """Verify the beta-KL decomposition on the masking model and over a beta sweep.

    Parameters
    ----------
    ctx : the verify context (users: ``ctx.options.n_users``, capped so N <= 2000).
    betas : sweep points (>= 2 distinct values >= 0; trends use those > 0); default
        ``DEFAULT_BETAS``. Multi-VAE: KL weights; RecVAE: mean effective KL weights.
    sweep_epochs : epochs of each sweep model (default 4 warm, 20 scratch).
    sweep_users : training users of each sweep model (default 2000 warm, all scratch).
    sweep_seeds : training seeds per beta (default min(2, ``ctx.options.seeds``)).
    sweep_start : ``"warm"`` (fine-tune the masking model) or ``"scratch"``.
    sweep_models : the user's sweep models, beta -> model or list (one per seed).
    workers : sweep models trained at once (processes, one thread each; default: CPUs).
    n_masks, n_samples : masks per user; Monte Carlo draws per component and term
        (the masking model's identities).
    sweep_samples : the same draws for each sweep model (its per-user I and
        KL(q_h||p) shares are averaged over n_masks x sweep_samples draws).
    n_se : standard errors allowed in the identities.
    level : level of every bootstrap interval.
    """
    t0 = time.perf_counter()
    opts = sweep_options(
        ctx,
        betas=betas,
        sweep_epochs=sweep_epochs,
        sweep_users=sweep_users,
        sweep_seeds=sweep_seeds,
        sweep_start=sweep_start,
        sweep_models=sweep_models,
        workers=workers,
    )
    if not (isinstance(n_masks, (int, np.integer)) and n_masks >= 1):
        raise ValueError(f"n_masks must be an integer >= 1, got {n_masks!r}")
    users = _setup(ctx, opts, n_masks)
    keep_rate = ctx.config("masking").keep_rate
    kw = dict(n_masks=n_masks, keep_rate=keep_rate, n_samples=n_samples)
    checks: list[Check] = []
    parts_not_run: list[str] = []
    main_row = None
    missing: MissingModelError | None = None
    try:
        masking = ctx.model("masking")
    except MissingModelError as e:
        masking, missing = None, e
    if masking is not None:
        dec, main_row, _ = _measure(masking, ctx, users, **kw)
        checks += [
            check_identity(dec, n_se=n_se),
            check_mi_upper_bound(dec),
            check_terms_nonnegative(dec, n_se=n_se),
        ]
    t_main = time.perf_counter() - t0
    pts, not_run = _plan(ctx, opts)
    parts_not_run += not_run
    if masking is None:
        if not pts:
            raise missing  # type: ignore[misc]
        parts_not_run.append(
            "the decomposition on the masking model: it was not given (--checkpoint "
            "masking=PATH); the identities are checked on the sweep models only"
        )
    t1 = time.perf_counter()
    measured = None
    if pts:
        _train_points(ctx, pts, opts)
        t2 = time.perf_counter()
        measured = _measure_sweep(ctx, pts, opts, users, **{**kw, "n_samples": sweep_samples})
        checks += _sweep_checks(measured, level=level, seed=ctx.options.seed, n_se=n_se)
    t3 = time.perf_counter()
    details: dict[str, Any] = {
        "parts_not_run": parts_not_run,
        "sweep_not_run": "; ".join(not_run) or None,
        "masking_model": main_row,
        "sweep_options": opts.describe(),
        "n_users": len(users),
        "n_masks": n_masks,
        "mean_count": mean_count(ctx.dataset.train),
    }
    if measured is not None:
        details.update(
            sweep=[r for r in measured.rows if r["seed"] == measured.rows[0]["seed"]],
            sweep_all_seeds=measured.rows,
            per_beta=_bands(measured, level=level, seed=ctx.options.seed),
            collapse=_collapse_summary(measured),
            kl_field=measured.rows[0].get("kl_field"),
            seconds={
                "masking_model_measure": t_main,
                "sweep_training_or_loading": t2 - t1,
                "sweep_measure": t3 - t2,
            },
        )
        c = details["collapse"]
        details["key_numbers"] = {
            "largest_beta": c["largest_beta"],
            "informative_units_at_largest_beta": c["informative_units_at_largest"],
            "variance_rule_units_at_largest_beta": c["variance_units_at_largest"],
            "e_kl_at_smallest_and_largest_beta": [
                details["per_beta"][f"{b:g}"]["e_kl"]["estimate"]
                for b in (min(measured.positive or measured.betas), max(measured.betas))
            ],
        }
    details.setdefault("seconds", {})["total"] = time.perf_counter() - t0
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=_method(
            measured, opts, ctx, len(users), n_masks, (n_samples, sweep_samples), keep_rate
        ),
        details=details,
        context=ctx.describe(),
    )


SWEEP_OPTIONS = (
    "betas",
    "sweep_epochs",
    "sweep_users",
    "sweep_seeds",
    "sweep_start",
    "sweep_models",
    "workers",
)


def models_needed(ctx: VerifyContext, **options: Any) -> list[TrainConfig]:
    """The models to train up front (in parallel, by the CLI) before the claim runs:
    the masking model, and the sweep's parents (warm: the masking model of each sweep
    seed) or, from scratch on all users, the sweep models themselves. [] for user models.
    ``options``: the claim options of ``run`` (others are ignored)."""
    if ctx.user_models:
        return []
    opts = sweep_options(ctx, **{k: v for k, v in options.items() if k in SWEEP_OPTIONS})
    needed = [ctx.config("masking")]
    if opts.models or not opts.betas:
        return needed
    pts, _ = _plan(ctx, opts)
    if opts.start == "warm":
        needed += [p.job.parent for p in pts if isinstance(p.job.parent, TrainConfig)]
    elif opts.users is None or opts.users >= ctx.dataset.train.shape[0]:
        needed += [p.job for p in pts]
    return list(dict.fromkeys(needed))


POWER_SWAP = (0.1, 0.25, 0.5, 0.75, 1.0)  # fraction of users whose beta labels are reversed
POWER_SCALE = (0.1, 0.3, 3.0, 10.0)  # z -> c z at the largest beta (invariance control)


def _reversed_for(values: np.ndarray, users: np.ndarray) -> np.ndarray:
    out = values.copy()
    out[:, :, users] = values[::-1][:, :, users]
    return out


def power(ctx: VerifyContext, **options: Any) -> list[PowerRow]:
    """Graded perturbations of the real sweep (``options``: ``run``'s sweep options).

    * ``sweep_e_kl_falls`` (statement) and the three trend mechanisms: the beta labels
      of a growing fraction of the users are reversed (10% ... 100%), which flattens and
      then reverses the mean curve.
    * ``collapse_at_large_beta``: (a) the sweep cut short, its largest beta dropped
      point by point (how far a sweep must go to see collapse); (b) z -> c z for the
      largest-beta models (a reparametrisation the decoder absorbs): the information
      rule must not flip, and (c) the same for Burda et al.'s variance rule, which does.
    """
    from radius.analysis.decomposition import unit_activity

    opts = sweep_options(ctx, **{k: v for k, v in options.items() if k in SWEEP_OPTIONS})
    n_masks, n_samples = int(options.get("n_masks", 5)), int(options.get("sweep_samples", 2))
    level = float(options.get("level", BOOTSTRAP_LEVEL))
    users = _setup(ctx, opts, n_masks)
    keep_rate = ctx.config("masking").keep_rate
    pts, not_run = _plan(ctx, opts)
    if not pts:
        raise MissingModelError("; ".join(not_run) or "no sweep", ["the beta sweep"])
    _train_points(ctx, pts, opts)
    m = _measure_sweep(
        ctx, pts, opts, users, n_masks=n_masks, keep_rate=keep_rate, n_samples=n_samples
    )
    seed = ctx.options.seed
    base = {c.name: c for c in _sweep_checks(m, level=level, seed=seed, n_se=4.0)}
    bp = m.positive
    order = np.random.default_rng([seed, 77]).permutation(len(users))
    out: list[PowerRow] = []
    for name, key, role, eff, w in (
        ("sweep_e_kl_falls", "e_kl", "statement", 0.0, m.kl_weights),
        ("sweep_mi_falls", "mutual_info", "mechanism", MIN_TREND, None),
        ("sweep_kl_aggregate_falls", "kl_aggregate", "mechanism", MIN_TREND, None),
        ("sweep_w2_contracts", "w2", "mechanism", MIN_TREND, None),
    ):
        vals = m.stack(key, bp)
        grades = []
        for f in POWER_SWAP:
            sw = order[: int(round(f * len(users)))]
            c = check_trend(
                name,
                _reversed_for(vals, sw),
                bp,
                what=key,
                role=role,
                min_effect=eff,
                weights=w,
                level=level,
                seed=seed,
            )
            grades.append((f"{f:.0%} of users", c.outcome, c.measured))
        out.append(
            PowerRow.from_grades(
                name,
                "empirical",
                "beta labels reversed for a fraction of the users",
                base[name].outcome,
                grades,
            )
        )
    if "collapse_at_large_beta" not in base:
        return out
    lo = bp[0]
    grades = []
    for hi in reversed(bp[1:-1]):
        c = check_collapse(
            [m.per[(lo, k)]["moments"] for k in range(m.seeds)],
            [m.per[(hi, k)]["moments"] for k in range(m.seeds)],
            latent_dim=m.latent_dim,
            beta_lo=lo,
            beta_hi=hi,
            level=level,
            seed=seed,
        )
        grades.append((f"up to beta {hi:g}", c.outcome, c.measured))
    out.append(
        PowerRow.from_grades(
            "collapse_at_large_beta",
            "empirical",
            "the sweep cut short (largest betas dropped)",
            base["collapse_at_large_beta"].outcome,
            grades,
            note="the largest beta a sweep must reach to see collapse on this model",
        )
    )
    hi = bp[-1]
    lo_m = [m.per[(lo, k)]["moments"] for k in range(m.seeds)]
    info_grades, var_grades = [], []
    var_lo = [r["active_units"] for r in m.rows if r["beta"] == lo]
    groups = np.repeat(np.arange(len(users)), n_masks)
    for c_ in POWER_SCALE:
        hi_m = []
        var_hi = []
        for k in range(m.seeds):
            mu, lv = m.per[(hi, k)]["mu"] * c_, m.per[(hi, k)]["logvar"] + 2 * math.log(c_)
            hi_m.append(unit_moments(mu, lv, groups))
            var_hi.append(int(np.sum(unit_activity(mu) > VAR_THRESHOLD)))
        c = check_collapse(
            lo_m, hi_m, latent_dim=m.latent_dim, beta_lo=lo, beta_hi=hi, level=level, seed=seed
        )
        info_grades.append((f"z x{c_:g}", c.outcome, c.measured))
        drop = (np.array(var_lo) - np.array(var_hi)) / m.latent_dim
        var_out = (
            Outcome.PASS
            if drop.min() > MIN_COLLAPSE
            else (Outcome.VACUOUS if np.abs(drop).max() <= MIN_COLLAPSE else Outcome.INCONCLUSIVE)
        )
        var_grades.append((f"z x{c_:g}", var_out, float(drop.mean())))
    var_drop = (
        np.array(var_lo) - np.array([r["active_units"] for r in m.rows if r["beta"] == hi])
    ) / m.latent_dim
    var_base = (
        Outcome.PASS
        if var_drop.min() > MIN_COLLAPSE
        else (Outcome.VACUOUS if np.abs(var_drop).max() <= MIN_COLLAPSE else Outcome.INCONCLUSIVE)
    )
    out.append(
        PowerRow.from_grades(
            "collapse_at_large_beta",
            "empirical",
            "z -> c z at the largest beta (the decoder absorbs it): information rule",
            base["collapse_at_large_beta"].outcome,
            info_grades,
            note="invariance control: a reparametrisation must not flip it ('cannot fail here' "
            "is the correct result)",
        )
    )
    out.append(
        PowerRow.from_grades(
            "collapse_at_large_beta[variance rule]",
            "empirical",
            "the same rescaling read by Burda et al.'s Var mu_k > 0.01 (reported, never decides)",
            var_base,
            var_grades,
            note="the variance rule reads the latent scale: a rescaled, equally informative "
            "latent space changes its count",
        )
    )
    return out
