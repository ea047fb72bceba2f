r"""beta-KL decomposition: E KL(q(z|x_h) || p) = I_q(X_h; Z) + KL(q_h || p), and its beta sweep.

Method. N = users x masks inputs :math:`x_h = x\odot b` (training users, masks at the
model's keep rate) are encoded; the aggregate posterior :math:`q_h` is the uniform
mixture of their N Gaussians. ``radius.decomposition.kl_decomposition`` estimates the
mutual information and KL(q_h || p) by stratified Monte Carlo on independent draw sets
and the mean KL in closed form (see that module for the estimator and its error).

On the ``masking`` model:

1. ``identity``: :math:`|\mathbb E\,\mathrm{KL} - (\hat I + \widehat{\mathrm{KL}})| \le
   k\,\mathrm{se} + \epsilon`.
2. ``mi_upper_bound``: every sampled :math:`\log q_j(z) - \log q_h(z) \le \log N`, i.e.
   the first term is a mutual information over N inputs (this, not the sum, is what a
   wrong aggregate posterior breaks: the sum telescopes for any density used in both
   terms).
3. ``terms_nonnegative``: :math:`\hat I,\ \widehat{\mathrm{KL}} \ge -k\,\mathrm{se}`.

Over a beta sweep (``ctx.model_for(sweep_config(masking, b, ...))``, the same users
and masks for every beta):

4. ``sweep_mi_falls`` / 5. ``sweep_kl_aggregate_falls``: Spearman rho(beta, term) < 0
   and the term at the largest beta below the term at the smallest.
6. ``sweep_w2_contracts``: mean pairwise W2 (pairs of different users) at the largest
   beta < at the smallest.
7. ``sweep_active_units_drop``: active units (Var_x mu_k > 0.01) at the largest beta <
   at the smallest (posterior collapse).

The swept field is the model's own KL weight (``KL_FIELDS``). Multi-VAE: ``beta_cap``
(the cap of its annealed beta), so a sweep point beta sets ``beta_cap = beta`` (with
the epochs and annealing shortened as ``sweep_config`` says). RecVAE ignores
``beta_cap``: its KL term of user u is weighted by :math:`\gamma\,|x_u|` (``gamma``
times the user's interaction count), so a sweep point beta is mapped to
:math:`\gamma = \beta / \bar n`, with :math:`\bar n` the mean interaction count of
the training users (``mean_count``: the mean row sum of ``ctx.dataset.train``); the
mean effective per-user KL weight :math:`\gamma\,\overline{|x_u|}` is then beta.
RecVAE has no annealing, so only ``gamma`` (and the shortened epochs and patience)
change; the annealing fields are left as they are. Each sweep row records the field
swept and its value (``kl_field``, e.g. ``"gamma"``, and ``gamma``), and ``details``
the mean count.

For RecVAE the decomposition is measured against N(0, I), the theory's reference prior,
not RecVAE's composite training prior (a mixture of N(0, I), the previous encoder's
posterior and a wide Gaussian): the checks are about the encoder's posteriors relative
to the standard normal, whatever prior they were trained against.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import spearmanr

from radius.config import TrainConfig
from radius.decomposition import (
    KLDecomposition,
    active_units,
    encode_masked,
    kl_decomposition,
    mean_pairwise_w2,
)
from radius.verify.base import Check, ClaimResult
from radius.verify.context import VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "DEFAULT_BETAS",
    "DEFAULT_SWEEP_EPOCHS",
    "KL_FIELDS",
    "kl_field",
    "mean_count",
    "check_identity",
    "check_mi_upper_bound",
    "check_terms_nonnegative",
    "check_falls",
    "check_decreases",
    "sweep_config",
    "run",
]

CLAIM_ID = "beta-kl"
TITLE = "beta-KL decomposition: E KL = I_q(X_h; Z) + KL(q_h || p), and its beta sweep"
STATEMENT = (
    "For the aggregate posterior q_h = E_{x,b} q(z | x*b) (the uniform mixture over the "
    "sampled users and masks), E_{x,b} KL(q(z|x_h) || N(0, I)) = I_q(X_h; Z) + KL(q_h || N(0, I)), "
    "with 0 <= I_q <= log N and KL(q_h || p) >= 0. As the KL weight beta grows, both terms "
    "fall, the mean pairwise W2 between posteriors contracts and active units "
    "(Var_x E_q[z_k] > 0.01) drop (posterior collapse). The sweep varies the model's own KL "
    "weight: beta_cap for Multi-VAE; for RecVAE, whose KL weight of user u is gamma * |x_u|, "
    "gamma = beta / (mean interaction count of the training users), so the mean effective "
    "per-user weight is beta, and the decomposition is taken against N(0, I) (the theory's "
    "reference prior), not RecVAE's composite training prior. Reconstruction: the identity is "
    "exact for the sampled mixture (derived here); the sweep directions are the summary's "
    "qualitative statements made into checks."
)
RECONSTRUCTION = True

DEFAULT_BETAS: tuple[float, ...] = (0.0, 0.2, 0.5, 1.0, 2.0)
DEFAULT_SWEEP_EPOCHS = 20  # epochs of each sweep model (the base config's when None)
MAX_INPUTS = 2000  # cap on N = users x masks (the mixture costs N^2 S d)
# The config field that is each model's KL weight (what a sweep point beta sets).
KL_FIELDS: dict[str, str] = {"multvae": "beta_cap", "recvae": "gamma"}


# --------------------------------------------------------------------------- checks
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
    )


def check_terms_nonnegative(dec: KLDecomposition, *, n_se: float = 4.0) -> Check:
    """I >= -n_se se_I and KL(q_h||p) >= -n_se se_KL."""
    slack = min(
        dec.mutual_info + n_se * dec.mutual_info_se,
        dec.kl_aggregate + n_se * dec.kl_aggregate_se,
    )
    return Check(
        name="terms_nonnegative",
        description="I_q(X_h;Z) >= 0 and KL(q_h||p) >= 0 (measured: the smaller estimate)",
        measured=min(dec.mutual_info, dec.kl_aggregate),
        bound=0.0,
        slack=slack,
        tolerance=f"each estimate >= -{n_se:g} x its standard error",
        passed=bool(math.isfinite(slack) and slack >= 0 and dec.n_inputs > 0),
        n=dec.n_inputs * dec.n_samples,
    )


def _sweep_arrays(betas: Sequence[float], values: Sequence[float]) -> tuple[np.ndarray, np.ndarray]:
    b = np.asarray(betas, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if b.ndim != 1 or b.shape != v.shape:
        raise ValueError(f"betas {b.shape} and values {v.shape} must be 1-D of the same length")
    return b, v


def check_falls(name: str, betas: Sequence[float], values: Sequence[float], *, what: str) -> Check:
    """A term falls with beta: Spearman rho(beta, value) < 0 and value(max beta) < value(min beta).

    ``slack`` is min(-rho, relative drop from the smallest to the largest beta); it is
    positive exactly when both hold. Fewer than 3 distinct betas is no evidence (FAIL).
    """
    b, v = _sweep_arrays(betas, values)
    tolerance = "Spearman rho(beta, value) < 0 and value(beta_max) < value(beta_min), >= 3 betas"
    if len(np.unique(b)) < 3 or not np.all(np.isfinite(v)):
        return Check(
            name,
            f"{what} falls as beta grows",
            float("nan"),
            0.0,
            float("nan"),
            tolerance,
            False,
            0,
        )
    rho = float(spearmanr(b, v).statistic)
    lo, hi = v[np.argmin(b)], v[np.argmax(b)]
    drop = (lo - hi) / max(abs(lo), 1e-12)
    slack = min(-rho, drop) if math.isfinite(rho) else float("nan")
    return Check(
        name=name,
        description=f"{what} falls as beta grows (measured: Spearman rho over the sweep)",
        measured=rho,
        bound=0.0,
        slack=slack,
        tolerance=tolerance,
        passed=bool(math.isfinite(slack) and slack > 0),
        n=len(b),
    )


def check_decreases(
    name: str, betas: Sequence[float], values: Sequence[float], *, what: str, n: int | None = None
) -> Check:
    """value at the largest beta < value at the smallest beta (strict)."""
    b, v = _sweep_arrays(betas, values)
    tolerance = "value(beta_max) < value(beta_min), strict, >= 2 distinct betas"
    if len(np.unique(b)) < 2 or not np.all(np.isfinite(v)):
        return Check(
            name,
            f"{what} decreases from the smallest to the largest beta",
            float("nan"),
            float("nan"),
            float("nan"),
            tolerance,
            False,
            0,
        )
    lo, hi = float(v[np.argmin(b)]), float(v[np.argmax(b)])
    return Check(
        name=name,
        description=f"{what} at the largest beta < at the smallest beta",
        measured=hi,
        bound=lo,
        slack=lo - hi,
        tolerance=tolerance,
        passed=bool(hi < lo),
        n=len(b) if n is None else n,
    )


# --------------------------------------------------------------------------- sweep
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
    sweep_epochs: int | None,
    n_train: int,
    anneal_fraction: float = 0.5,
    mean_count: float | None = None,
) -> TrainConfig:
    """The masking config at sweep point ``beta``, for the model ``base.model``.

    Multi-VAE: ``beta_cap = beta``. With ``sweep_epochs`` set, epochs (and patience,
    capped) are reduced and the annealing is shortened to at most ``anneal_fraction`` of
    the sweep's epochs, so beta reaches its cap inside the shortened training; with None
    the base config is used unchanged apart from ``beta_cap`` (also when
    ``sweep_epochs`` >= the base epochs).

    RecVAE: ``gamma = beta / mean_count`` (``mean_count``, required, is the mean
    interaction count of the training users), so the mean effective per-user KL weight
    ``gamma * |x_u|`` is ``beta``; epochs and patience are shortened as for Multi-VAE and
    nothing else changes (RecVAE has no annealing; ``beta_cap`` and the annealing fields
    are left as they are).
    """
    field = kl_field(base.model)
    if field == "gamma":
        if mean_count is None or not (math.isfinite(mean_count) and mean_count > 0):
            raise ValueError(
                f"a RecVAE sweep needs mean_count > 0 (the mean interaction count of the "
                f"training users), got {mean_count}"
            )
        cfg = base.replace(gamma=float(beta) / float(mean_count))
    else:
        cfg = base.replace(beta_cap=float(beta))
    if sweep_epochs is None or sweep_epochs >= base.epochs:
        return cfg
    cfg = cfg.replace(epochs=int(sweep_epochs), patience=min(base.patience, int(sweep_epochs)))
    if field == "gamma":
        return cfg
    if base.anneal_steps is not None:
        steps = math.ceil(n_train / base.batch_size) * sweep_epochs
        return cfg.replace(
            anneal_steps=max(1, min(base.anneal_steps, round(anneal_fraction * steps)))
        )
    return cfg.replace(anneal_epochs=min(base.anneal_epochs, anneal_fraction * sweep_epochs))


def _training_record(ctx: VerifyContext, config: TrainConfig) -> dict[str, Any]:
    """Best epoch and the KL weight reached by it, read back from the cached checkpoint.

    The history's ``beta`` is the annealed beta for Multi-VAE and ``gamma`` for RecVAE;
    the key says which (``beta_at_best_epoch`` or ``gamma_at_best_epoch``).
    """
    try:
        from radius.train import cache_key, default_cache_dir, load_checkpoint

        path = Path(ctx.cache_dir or default_cache_dir()) / (
            f"{config.model}-{cache_key(ctx.dataset, config)}.pt"
        )
        payload = load_checkpoint(path, ctx.dataset).payload
        best = int(payload["best_epoch"])
        hist = payload.get("history") or []
        rec = next((h for h in hist if h.get("epoch") == best), {})
        key = "gamma_at_best_epoch" if kl_field(config.model) == "gamma" else "beta_at_best_epoch"
        return {"best_epoch": best, key: rec.get("beta"), "epochs_run": len(hist)}
    except Exception as e:  # noqa: BLE001 - bookkeeping only, never the verdict
        return {"record_error": f"{type(e).__name__}: {e}"}


def _measure(
    model: Any,
    ctx: VerifyContext,
    users: np.ndarray,
    *,
    n_masks: int,
    keep_rate: float,
    n_samples: int,
    threshold: float,
) -> tuple[KLDecomposition, dict[str, Any]]:
    seed = ctx.options.seed
    mu, logvar, groups = encode_masked(
        model, ctx.dataset.train, users, n_masks=n_masks, keep_rate=keep_rate, seed=seed
    )
    dec = kl_decomposition(mu, logvar, n_samples=n_samples, seed=seed + 1)
    w2, n_pairs = mean_pairwise_w2(mu, logvar, groups=groups)
    row = {
        **dec.to_dict(),
        "mean_pairwise_w2": w2,
        "w2_pairs": n_pairs,
        "active_units": active_units(mu, threshold=threshold),
        "latent_dim": int(mu.shape[1]),
        "mean_logvar": float(logvar.mean()),
    }
    return dec, row


def _sweep_method(
    field: str,
    betas: Sequence[float],
    sweep_epochs: int | None,
    *,
    n_bar: float,
    base_gamma: float,
) -> str:
    """The middle of the method text: what the sweep varies (model-specific)."""
    if field == "beta_cap":
        return f"form. Sweep: beta caps {list(betas)}, " + (
            f"{sweep_epochs} epochs each, beta annealed over at most the first half of them"
            if sweep_epochs is not None
            else "the base config's epochs and annealing"
        )
    return (
        "form, all against N(0, I) (the theory's reference prior, not RecVAE's composite "
        "training prior). Sweep: RecVAE's KL weight of user u is gamma x |x_u|, so each beta "
        f"in {list(betas)} sets gamma = beta / {n_bar:.4g} (the mean interaction count of "
        "the training users) and the mean effective per-user KL weight is beta (the masking "
        f"model's gamma {base_gamma:g} is beta {base_gamma * n_bar:.4g}); "
        + (
            f"{sweep_epochs} epochs each"
            if sweep_epochs is not None
            else "the base config's epochs"
        )
        + " (no annealing in RecVAE)"
    )


def run(
    ctx: VerifyContext,
    *,
    betas: Sequence[float] = DEFAULT_BETAS,
    sweep_epochs: int | None = DEFAULT_SWEEP_EPOCHS,
    n_masks: int = 5,
    n_samples: int = 4,
    n_se: float = 4.0,
    threshold: float = 0.01,
) -> ClaimResult:
    """Verify the beta-KL decomposition on the masking model and over a beta sweep.

    Parameters
    ----------
    ctx : the verify context (users: ``ctx.options.n_users``, capped so N <= 2000); the
        model is ``ctx.base_config.model``.
    betas : sweep points (>= 3 distinct values, each >= 0): Multi-VAE beta caps; for
        RecVAE mean effective KL weights, gamma = beta / mean interaction count.
    sweep_epochs : epochs of each sweep model (None: the base config's epochs).
    n_masks : masks per user (N = users x masks).
    n_samples : Monte Carlo draws per mixture component and term.
    n_se : standard errors allowed in the identity and sign checks.
    threshold : active-unit threshold on Var_x mu_k.
    """
    betas = [float(b) for b in betas]
    if any(not (b >= 0) for b in betas):
        raise ValueError(f"betas must be >= 0, got {betas}")
    if sweep_epochs is not None and sweep_epochs < 1:
        raise ValueError(f"sweep_epochs must be >= 1 or None, got {sweep_epochs}")
    t0 = time.perf_counter()
    base = ctx.config("masking")
    n_train = ctx.dataset.train.shape[0]
    n_users = max(1, min(ctx.options.n_users, n_train, MAX_INPUTS // n_masks))
    rng = np.random.default_rng(ctx.options.seed)
    users = np.sort(rng.choice(n_train, size=n_users, replace=False))
    kw = dict(n_masks=n_masks, keep_rate=base.keep_rate, n_samples=n_samples, threshold=threshold)
    field = kl_field(base.model)
    n_bar = mean_count(ctx.dataset.train)

    dec, main_row = _measure(ctx.model("masking"), ctx, users, **kw)
    t_main = time.perf_counter() - t0
    checks = [
        check_identity(dec, n_se=n_se),
        check_mi_upper_bound(dec),
        check_terms_nonnegative(dec, n_se=n_se),
    ]

    rows: list[dict[str, Any]] = []
    t_train = t_measure = 0.0
    for b in betas:
        cfg = sweep_config(base, b, sweep_epochs=sweep_epochs, n_train=n_train, mean_count=n_bar)
        t1 = time.perf_counter()
        model = ctx.model_for(cfg)
        t2 = time.perf_counter()
        _, row = _measure(model, ctx, users, **kw)
        t_measure += time.perf_counter() - t2
        t_train += t2 - t1
        rows.append(
            {
                "beta": b,
                "kl_field": field,
                field: getattr(cfg, field),
                **row,
                **_training_record(ctx, cfg),
            }
        )
    bs = [r["beta"] for r in rows]
    checks += [
        check_falls("sweep_mi_falls", bs, [r["mutual_info"] for r in rows], what="I_q(X_h;Z)"),
        check_falls(
            "sweep_kl_aggregate_falls", bs, [r["kl_aggregate"] for r in rows], what="KL(q_h||p)"
        ),
        check_decreases(
            "sweep_w2_contracts",
            bs,
            [r["mean_pairwise_w2"] for r in rows],
            what="mean pairwise W2 between posteriors of different users",
            n=int(rows[0]["w2_pairs"]) if rows else 0,
        ),
        check_decreases(
            "sweep_active_units_drop",
            bs,
            [r["active_units"] for r in rows],
            what=f"active units (Var_x mu_k > {threshold:g})",
        ),
    ]
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=(
            f"{n_users} training users x {n_masks} masks (keep rate {base.keep_rate}) -> "
            f"N = {n_users * n_masks} posteriors; aggregate posterior = their uniform mixture "
            f"(every component, log-density by logsumexp in float64); {n_samples} stratified "
            "draws per component for I and, independently, for KL(q_h||p); E KL in closed "
            + _sweep_method(field, betas, sweep_epochs, n_bar=n_bar, base_gamma=base.gamma)
            + "; the same users and masks for every beta."
        ),
        details={
            "masking_model": main_row,
            "sweep": rows,
            "sweep_epochs": sweep_epochs,
            "kl_field": field,
            "mean_count": n_bar,
            "n_users": n_users,
            "n_masks": n_masks,
            "seconds": {
                "masking_model_measure": t_main,
                "sweep_training_or_loading": t_train,
                "sweep_measure": t_measure,
                "total": time.perf_counter() - t0,
            },
        },
        context=ctx.describe(),
    )
