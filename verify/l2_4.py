r"""L2.4 Encoder Lipschitz: similar inputs stay close.

For every sampled pair of inputs (x_u, x_v),

.. math::

    W_1 \le W_2(q_\phi(\cdot|x_u), q_\phi(\cdot|x_v)) \le L_\phi\,
        \lVert\tilde x_u - \tilde x_v\rVert_1 \le L_\phi\,c(x_u, x_v)\,\lVert x_u - x_v\rVert_1,

with :math:`L_\phi` the certified l1 -> l2 constant of the encoder on its normalised
input (``radius.analysis.lipschitz.encoder_lipschitz_bound``) and c the pair factor of the input
normalisation (``radius.analysis.lipschitz.normalization_factor``; c <= 1 on binary rows, so the
raw-input bound is the paper's W2 <= L_phi ||x_u - x_v||_1). Both inequalities are
checked on every pair, for each trained setting (clean, masking, pia).

Pairs (seeded, from the test users' fold-in rows, what the encoder sees at inference):
a third are one- to three-item EDITS of a real row (the most local case), a third are
each anchor's NEAREST other test user by l1 distance, a third are RANDOM pairs.
Encodings are computed in float64 on a float64 copy of the model, so the stated float
slack (relative 1e-6) covers rounding only.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np
import torch

from radius.analysis.geometry import w1_empirical, w1_sandwich, w1_sliced
from radius.analysis.lipschitz import (
    binary_l1_nearest,
    encode_double,
    encoder_lipschitz_bound,
    normalization_factor,
)
from radius.model.multvae import EPS_NORM
from radius.stats import Outcome
from radius.verify.base import Check, ClaimResult, PowerRow
from radius.verify.context import MissingModelError, VerifyContext

__all__ = ["CLAIM_ID", "TITLE", "STATEMENT", "RECONSTRUCTION", "run", "power", "sample_pairs"]

CLAIM_ID = "2.4"
TITLE = "Encoder Lipschitz: similar inputs stay close (L2.4)"
STATEMENT = (
    "Reconstruction. For the trained encoder q_phi(z|x) = N(mu(x), diag sigma(x)^2) "
    "and every pair of inputs, W1(q_u, q_v) <= W2(q_u, q_v) <= L_phi ||x~_u - x~_v||_1 "
    "<= L_phi c(x_u, x_v) ||x_u - x_v||_1, where x~ = x / (||x||_2 + eps) is the encoder's "
    "normalised input, L_phi = B * ||[W_mu; D W_logvar]||_2 (D = diag(exp(M_k/2)/2), M_k the "
    "logvar range: observed maximum + 0.5, capped by the certified global range) and B bounds "
    "the trunk: for Multi-VAE (tanh MLP) B = max_i ||W_in[i,:]||_2 * prod_k ||W_k||_2; for "
    "RecVAE (dense swish / layer-norm layers) B = B_L from B_1 = l_0 s max_i ||W_in[i,:]||_2, "
    "B_{k+1} = l_k s (||W_k + I||_2 B_k + sum_{j<k} B_j), l_k = max|gamma_k| / sqrt(eps_k) "
    "the layer norm's constant, s = 1.0999 >= sup |swish'|. c(x, y) = min((1 + ||y||_1/b)/a, "
    "(1 + ||x||_1/a)/b), a = ||x||_2 + eps, b = ||y||_2 + eps, for general rows, c <= 1 for "
    "binary rows with >= 1 item (normalisation is l1 non-expansive there), so on binary "
    "input W2 <= L_phi ||x_u - x_v||_1 as the paper states. The pair factor, the "
    "normalisation step and the RecVAE trunk bound are derived here "
    "(radius.analysis.lipschitz.normalization_factor, "
    "radius.analysis.lipschitz.encoder_lipschitz_bound)."
)
RECONSTRUCTION = True

REL_TOL = 1e-6  # relative float slack of the inequality (float64 encodings)
VACUOUS_FACTOR = 100.0  # certified / largest measured local constant above which the
# bound cannot bind: it still holds (PASS) but is weak evidence (``Check.weak``)
POWER_GRADES = (0.9, 0.5, 0.1, 0.01)  # constant scalings of power(ctx), mildest first
LOGVAR_MARGIN = 0.5
SETTINGS = ("clean", "masking", "pia")
CONSTANTS = ("certified", "empirical_median")
N_ROWS = 150  # pair rows kept in the details
N_EMPIRICAL_W1 = 6  # pairs for the sample-based W1 illustration
EMPIRICAL_W1_SAMPLES = 200


def sample_pairs(x: Any, n_pairs: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Seeded pairs of rows of the binary CSR ``x``: edits, l1-nearest neighbours, random.

    Returns dense float64 ``xa``, ``xb`` (P, I), ``kind`` (P,) str, ``ia``, ``ib`` (P,)
    row indices (``ib = -1`` for an edit, whose second row is a modified copy of ``ia``),
    ``n_edit`` (P,) items flipped (0 for real pairs).
    """
    import scipy.sparse as sp

    x = sp.csr_matrix(x)
    n_users, n_items = x.shape
    users = np.flatnonzero(np.diff(x.indptr) > 0)
    if users.size < 2 or n_pairs < 3:
        raise ValueError(f"need >= 2 non-empty rows and n_pairs >= 3, got {users.size}, {n_pairs}")
    n_edit = n_pairs // 3
    n_nn = n_pairs // 3
    n_rand = n_pairs - n_edit - n_nn
    # edits: flip 1-3 random items of a real row (never leaving it empty)
    ea = rng.choice(users, size=n_edit)
    xa_e = np.asarray(x[ea].todense(), dtype=np.float64)
    xb_e = xa_e.copy()
    k_edit = rng.integers(1, 4, size=n_edit)
    for r in range(n_edit):
        items = rng.choice(n_items, size=k_edit[r], replace=False)
        xb_e[r, items] = 1.0 - xb_e[r, items]
        if xb_e[r].sum() == 0:
            xb_e[r, items[0]] = 1.0
        k_edit[r] = int(np.abs(xb_e[r] - xa_e[r]).sum())
    # nearest neighbours by l1 among the non-empty rows
    sub = x[users]
    anchors = rng.choice(users.size, size=n_nn, replace=users.size < n_nn)
    nb, _ = binary_l1_nearest(sub, anchors)
    na, nn_b = users[anchors], users[nb]
    # random distinct pairs
    ra = rng.choice(users, size=n_rand)
    off = rng.integers(1, users.size, size=n_rand)
    rb = users[(np.searchsorted(users, ra) + off) % users.size]
    xa = np.concatenate([xa_e, np.asarray(x[na].todense()), np.asarray(x[ra].todense())])
    xb = np.concatenate([xb_e, np.asarray(x[nn_b].todense()), np.asarray(x[rb].todense())])
    kind = np.array(["edit"] * n_edit + ["nn"] * n_nn + ["random"] * n_rand)
    return {
        "xa": xa.astype(np.float64),
        "xb": xb.astype(np.float64),
        "kind": kind,
        "ia": np.concatenate([ea, na, ra]),
        "ib": np.concatenate([np.full(n_edit, -1), nn_b, rb]),
        "n_edit": np.concatenate([k_edit, np.zeros(n_nn + n_rand, dtype=np.int64)]),
    }


def _summary(v: np.ndarray) -> dict[str, float]:
    v = v[np.isfinite(v)]
    if v.size == 0:
        return {"n": 0}
    return {
        "n": int(v.size),
        "median": float(np.median(v)),
        "max": float(v.max()),
        "min": float(v.min()),
        "mean": float(v.mean()),
    }


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0/0 = 0 (identical inputs, identical posteriors) and x/0 = inf."""
    out = np.full(num.shape, np.inf)
    pos = den > 0
    out[pos] = num[pos] / den[pos]
    out[~pos & (num == 0)] = 0.0
    return out


def _setting(
    ctx: VerifyContext,
    setting: str,
    pairs: dict[str, np.ndarray],
    *,
    lipschitz_scale: float,
    constant: str,
    rng: np.random.Generator,
) -> tuple[list[Check], dict[str, Any]]:
    model = ctx.model(setting)
    xa, xb = torch.from_numpy(pairs["xa"]), torch.from_numpy(pairs["xb"])
    mu_a, lv_a = encode_double(model, xa)
    mu_b, lv_b = encode_double(model, xb)
    lower, w2t = w1_sandwich(mu_a, lv_a, mu_b, lv_b)
    w2, lower = w2t.numpy(), lower.numpy()
    normalized_input = str(getattr(model, "input_normalization", "l2")) != "none"
    if normalized_input:
        xn_a = xa / (torch.linalg.vector_norm(xa, dim=1, keepdim=True) + EPS_NORM)
        xn_b = xb / (torch.linalg.vector_norm(xb, dim=1, keepdim=True) + EPS_NORM)
        c = normalization_factor(xa, xb).numpy()  # (P,)
    else:  # the encoder reads the raw row: no normalisation step, c = 1
        xn_a, xn_b = xa, xb
        c = np.ones(xa.shape[0])
    dx = (xa - xb).abs().sum(dim=1).numpy()  # (P,) raw l1
    dxn = (xn_a - xn_b).abs().sum(dim=1).numpy()  # (P,) encoder-input l1
    emp_raw = _ratio(w2, dx)  # empirical local constants (0/0 pairs -> 0)
    emp_norm = _ratio(w2, dxn)
    emp_max = float(emp_norm[dxn > 0].max()) if np.any(dxn > 0) else float("nan")
    try:
        l_phi, factors = encoder_lipschitz_bound(
            model, logvar_observed=torch.cat([lv_a, lv_b]), logvar_margin=LOGVAR_MARGIN
        )
    except TypeError as e:  # UncertifiedLayerError: a layer with no certified constant
        layer = getattr(e, "layer", type(model).__name__)
        note = (
            f"no certified bound: {e}. Empirical local constant max W2/||dx~||_1 = "
            f"{emp_max:.4g} over {int((dxn > 0).sum())} pairs: estimated, not certified"
        )
        return [
            Check(
                name=f"bound_raw_{setting}",
                description=f"{setting}: W2(q_u, q_v) <= L ||dx||_1 needs a certified L "
                f"(uncertified layer {layer})",
                measured=emp_max,
                bound=float("nan"),
                slack=float("nan"),
                tolerance="certified constant required; none for this encoder",
                passed=False,
                n=0,
                kind="bound",
                outcome=Outcome.INCONCLUSIVE,
                note=note,
            )
        ], {
            "error": str(e),
            "uncertified_layer": layer,
            "empirical_local_normalized": _summary(emp_norm[dxn > 0]),
            "empirical_label": "estimated, not certified",
        }
    if constant == "certified":
        k_raw = k_norm = l_phi * lipschitz_scale
        bound_raw = k_raw * c * dx
    else:  # the median empirical constant W2/||dx||_1 replaces L_phi c (negative control)
        k_raw = float(np.median(emp_raw[dx > 0])) * lipschitz_scale
        k_norm = float(np.median(emp_norm[dxn > 0])) * lipschitz_scale
        bound_raw = k_raw * dx
    bound_norm = k_norm * dxn
    checks, info = [], {}
    for name, bound, route in (
        ("raw", bound_raw, "L c(x,y) ||x_u - x_v||_1 (raw input)"),
        ("normalized", bound_norm, "L ||x~_u - x~_v||_1 (normalised input)"),
    ):
        ratio = _ratio(w2, bound)
        ok = w2 <= (1.0 + REL_TOL) * bound
        n = int(ok.size)
        worst = float(ratio.max()) if n else float("nan")
        passed = bool(n > 0 and ok.all())
        outcome, weak = Outcome.of(passed), ""
        looseness = k_norm / emp_max if emp_max > 0 else float("inf")
        if n and passed:
            note = (
                f"W2 / bound at most {worst:.3g} over {n} pairs (the bound holds with "
                f"{1 / worst:.3g}x slack at the tightest pair)"
                if worst > 0
                else f"W2 = 0 on all {n} pairs"
            )
        elif n:
            note = (
                f"violated on {int((~ok).sum())} of {n} pairs: W2 / bound up to {worst:.4g} "
                f"(> 1 + {REL_TOL:g})"
            )
        else:
            note = "no pairs: no evidence"
        if passed and constant == "certified" and looseness > VACUOUS_FACTOR:
            weak = (
                f"the certified constant is {looseness:.3g}x the largest measured local "
                f"constant (> {VACUOUS_FACTOR:g}x): the bound holds by a margin no model of "
                "this architecture comes near, so it cannot bind"
            )
        checks.append(
            Check(
                name=f"bound_{name}_{setting}",
                description=f"{setting}: W2(q_u, q_v) <= {route} on every pair",
                measured=worst,
                bound=1.0 + REL_TOL,
                slack=(1.0 + REL_TOL) - worst,
                tolerance=f"every pair (no exception), relative float slack {REL_TOL:g}, "
                f"float64; weak evidence when L / max local constant > {VACUOUS_FACTOR:g}",
                passed=passed,
                n=n,
                kind="bound",
                outcome=outcome,
                note=note,
                role="statement",
                weak=weak,
            )
        )
        info[f"ratio_{name}"] = {
            "all": _summary(ratio),
            **{k: _summary(ratio[pairs["kind"] == k]) for k in ("edit", "nn", "random")},
        }
        info[f"violations_{name}"] = int((~ok).sum())
    info.update(
        {
            "constant": constant,
            "lipschitz_scale": lipschitz_scale,
            "l_phi_certified": l_phi,
            "l_used_raw": k_raw,
            "l_used_normalized": k_norm,
            "factors": factors,
            "empirical_local_raw": {
                "all": _summary(emp_raw[dx > 0]),
                **{
                    k: _summary(emp_raw[(pairs["kind"] == k) & (dx > 0)])
                    for k in ("edit", "nn", "random")
                },
            },
            "empirical_local_normalized": _summary(emp_norm[dxn > 0]),
            "certified_over_empirical_max_normalized": float(l_phi / emp_max)
            if emp_max > 0
            else None,
            "vacuous_factor": VACUOUS_FACTOR,
            "input_normalization": "l2" if normalized_input else "none",
            "normalization_factor": _summary(c),
            "w1_lower_over_w2": _summary(_ratio(lower, w2)),
            "rows": [
                {
                    "kind": str(pairs["kind"][i]),
                    "ia": int(pairs["ia"][i]),
                    "ib": int(pairs["ib"][i]),
                    "n_a": int(pairs["xa"][i].sum()),
                    "n_b": int(pairs["xb"][i].sum()),
                    "dx_l1": float(dx[i]),
                    "dxn_l1": float(dxn[i]),
                    "c": float(c[i]),
                    "w1_lower": float(lower[i]),
                    "w2": float(w2[i]),
                    "ratio_raw": float(_ratio(w2[i : i + 1], bound_raw[i : i + 1])[0]),
                    "ratio_normalized": float(_ratio(w2[i : i + 1], bound_norm[i : i + 1])[0]),
                }
                for i in _row_sample(pairs["kind"], rng)
            ],
        }
    )
    if setting == "clean":
        info["w1_empirical"] = _empirical_w1(mu_a, lv_a, mu_b, lv_b, lower, w2, pairs, rng)
    return checks, info


def _row_sample(kind: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if kind.size <= N_ROWS:
        return np.arange(kind.size)
    return np.sort(rng.choice(kind.size, size=N_ROWS, replace=False))


def _empirical_w1(mu_a, lv_a, mu_b, lv_b, lower, w2, pairs, rng) -> dict[str, Any]:
    """POT's sample-based W1 on a few pairs, beside the certified sandwich (never alone)."""
    idx = rng.choice(lower.size, size=min(N_EMPIRICAL_W1, lower.size), replace=False)
    gen = torch.Generator().manual_seed(int(rng.integers(2**31)))
    rows = []
    for i in np.sort(idx):
        za = mu_a[i] + torch.exp(0.5 * lv_a[i]) * torch.randn(
            EMPIRICAL_W1_SAMPLES, mu_a.shape[1], generator=gen, dtype=torch.float64
        )
        zb = mu_b[i] + torch.exp(0.5 * lv_b[i]) * torch.randn(
            EMPIRICAL_W1_SAMPLES, mu_b.shape[1], generator=gen, dtype=torch.float64
        )
        rows.append(
            {
                "kind": str(pairs["kind"][i]),
                "w1_lower": float(lower[i]),
                "w2": float(w2[i]),
                "w1_emd": w1_empirical(za, zb).value,
                "w1_sliced": w1_sliced(za, zb, seed=int(i)).value,
            }
        )
    return {
        "n_samples": EMPIRICAL_W1_SAMPLES,
        "note": (
            "ot.emd2 on samples is biased upward (Jensen; ~n^(-1/d) in d dimensions) and may "
            "exceed W2; sliced W1 is a lower bound of the samples' W1. Neither is used in a check."
        ),
        "rows": rows,
    }


def run(
    ctx: VerifyContext,
    *,
    lipschitz_scale: float = 1.0,
    constant: str = "certified",
    settings: tuple[str, ...] = SETTINGS,
) -> ClaimResult:
    """Check W2 <= L_phi ||dx||_1 on every sampled pair, for each trained setting.

    Parameters
    ----------
    ctx : the verification context (test users' fold-in rows, trained models).
    lipschitz_scale : multiplies the certified constant (1.0; a value < 1, e.g. 1e-3, is
        a negative control that must FAIL).
    constant : ``"certified"`` or ``"empirical_median"`` (the median empirical local
        constant in place of the certified one: a negative control that must FAIL).
    settings : trained settings to check.
    """
    if not (lipschitz_scale > 0 and np.isfinite(lipschitz_scale)):
        raise ValueError(f"lipschitz_scale must be a positive number, got {lipschitz_scale}")
    if constant not in CONSTANTS:
        raise ValueError(f"constant must be one of {CONSTANTS}, got {constant!r}")
    if not settings:
        raise ValueError("settings must name at least one trained setting")
    t0 = time.perf_counter()
    opts = ctx.options
    rng = np.random.default_rng([opts.seed, 24])
    pairs = sample_pairs(ctx.dataset.test_tr, opts.n_pairs, rng)
    checks: list[Check] = []
    per_setting: dict[str, Any] = {}
    missing: dict[str, str] = {}
    for s in settings:
        try:
            c, info = _setting(
                ctx, s, pairs, lipschitz_scale=lipschitz_scale, constant=constant, rng=rng
            )
        except MissingModelError as e:  # user models: a setting not provided is skipped
            missing[s] = str(e)
            continue
        checks += c
        per_setting[s] = info
    if len(missing) == len(settings):
        raise MissingModelError(
            f"L2.4 needs at least one of the models {list(settings)}; none was provided",
            list(missing),
        )
    kinds, counts = np.unique(pairs["kind"], return_counts=True)
    details = {
        "pairs": {
            "source": "test users' fold-in rows (test_tr)",
            "n": int(pairs["kind"].size),
            "by_kind": {str(k): int(n) for k, n in zip(kinds, counts)},
            "edit_sizes": {str(k): int((pairs["n_edit"] == k).sum()) for k in (1, 2, 3)},
            "sampling": "edit: 1-3 random item flips of a random row; nn: l1-nearest other "
            "test user of a random anchor; random: uniform distinct pairs",
        },
        "rel_tol": REL_TOL,
        "logvar_margin": LOGVAR_MARGIN,
        "settings": per_setting,
        "missing_models": missing,
        "seconds": round(time.perf_counter() - t0, 2),
    }
    return ClaimResult(
        claim=CLAIM_ID,
        title=TITLE,
        statement=STATEMENT,
        reconstruction=RECONSTRUCTION,
        checks=checks,
        method=(
            "Certified constant from the weights (first layer max row 2-norm, spectral norms; "
            "for RecVAE also layer-norm and swish constants through the dense connections; "
            "sigma head bounded over the observed logvar range + margin), closed-form W2 of "
            "float64 encodings, on edit / nearest-neighbour / random pairs of test users; "
            "the bound must hold on every pair, slack and empirical local constants reported; "
            f"a certified constant over {VACUOUS_FACTOR:g}x the largest local constant still "
            "holds but is labelled weak evidence; an encoder layer with no certified constant "
            "gives INCONCLUSIVE with the local constant estimated, not certified."
            + (f" Not checked (model not provided): {', '.join(missing)}." if missing else "")
        ),
        details=details,
        context=ctx.describe(),
    )


def power(
    ctx: VerifyContext,
    *,
    grades: tuple[float, ...] = POWER_GRADES,
    settings: tuple[str, ...] = SETTINGS,
) -> list[PowerRow]:
    """How far the certified constant must shrink before each bound check FAILs.

    Runs the claim with ``lipschitz_scale`` = each grade (mildest first: 0.9, 0.5, 0.1,
    0.01) on the same pairs and models and reports, per check, the mildest grade whose
    outcome differs from the unperturbed one (``PowerRow.flips_at``). A check that the
    0.01 grade does not flip is labelled "cannot fail here" (a vacuous bound is).
    """
    if not grades or any(not (0 < g < 1) for g in grades):
        raise ValueError(f"grades must be scalings in (0, 1), got {grades}")
    base = run(ctx, settings=settings)
    scaled = {
        g: {c.name: c for c in run(ctx, lipschitz_scale=g, settings=settings).checks}
        for g in grades
    }
    rows = []
    for c in base.checks:
        if c.kind == "identity":
            continue
        trail = [
            (f"x{g:g}", scaled[g][c.name].outcome, scaled[g][c.name].measured)
            for g in grades
            if c.name in scaled[g]
        ]
        rows.append(
            PowerRow.from_grades(
                c.name,
                c.kind,
                "certified L_phi scaled",
                c.outcome,
                trail,
                note=c.note or "measured = max W2 / bound over the pairs; FAIL once it exceeds 1",
            )
        )
    return rows
