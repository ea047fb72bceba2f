r"""T2.6 masking: stochastic contraction and expansion (a reconstruction).

Method. On the training users (``ctx.dataset.train``), with sizes from ``ctx.options``:

- pairs: ``n_pairs // 2`` *near* pairs (u uniform, v its most Jaccard-similar user in a
  uniform pool of ``min(2000, users)`` candidates) and ``n_pairs // 2`` *distant* pairs
  (two distinct users drawn uniformly), plus a grid of generated (d, s) pairs;
- triples: ``n_users // 2`` *next* triples (v the nearest candidate by Jaccard, w the
  next most similar candidate with d_uw > d_uv) and ``n_users // 2`` *random* triples
  (w uniform among candidates with d_uw > d_uv), plus generated pattern counts;
- keep rates rho in (0.25, 0.5, 0.75, 0.9); ``n_mc`` Monte Carlo masks per case, drawn
  item by item on the actual sets (``radius.masking.simulate_*``), shared over rho.

Checks (decided by rules fixed before computing):

1. ``pair_law_moments``: the convolved pmf has mass 1, mean rho d + 2 rho(1-rho) s and
   variance d rho(1-rho) + s q(1-q), relative error <= 1e-9.
2. ``pair_exact_in_mc_ci``: for every (pair, rho) and 7 events (upper tails at
   ED + {0, 1, 2} sd, lower tails at ED - {0, 1, 2} sd, the pmf at round(ED)), the exact
   probability lies in the Clopper-Pearson interval of its Monte Carlo frequency at
   per-comparison level 1 - (1 - confidence)/M (Bonferroni over all M comparisons, so
   the family-wise confidence is ``confidence``): all must be inside.
3. ``pair_{hoeffding,chernoff,kl}_bound``: bound >= exact tail, both sides, at
   t = {0.25, 0.5, 1, 1.5, 2, 3, 4, 6} sd, on every (pair, rho) with sd > 0.
4. ``triple_exact_in_mc_ci``: exact P(D_uw <= D_uv) inside its Bonferroni
   Clopper-Pearson interval, for every (triple, rho).
5. ``triple_hoeffding_bound``: exp(-2 m^2 / sum c_i^2) >= exact flip probability on
   every (triple, rho) with m = E[D_uw - D_uv] > 0.

Negative-control hooks: ``law`` (a wrong pair law: ``"uniform"`` Bin(d+s, rho) or
``"contraction"`` Bin(d, rho)) must fail check 2; ``triple_law="independent"``
(u's mask drawn twice) must fail check 4; ``bound_scale > 1`` (every exponent
multiplied) must fail checks 3 and 5.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from radius import masking as mk
from radius.verify.base import Check, ClaimResult
from radius.verify.context import VerifyContext

__all__ = [
    "CLAIM_ID",
    "TITLE",
    "STATEMENT",
    "RECONSTRUCTION",
    "RHOS",
    "MC_SIGMAS",
    "BOUND_SIGMAS",
    "check_mc_agreement",
    "check_bound_dominates",
    "run",
]

CLAIM_ID = "2.6"
TITLE = "Masking: stochastic contraction and expansion (reconstruction)"
STATEMENT = (
    "Reconstruction of T2.6. With independent per-user keep-masks b_u ~ Bernoulli(rho)^I, "
    "the masked distance D = ||x_u b_u - x_v b_v||_1 of a pair with clean distance "
    "d = |S_u xor S_v| and overlap s = |S_u and S_v| is exactly "
    "Binomial(d, rho) + Binomial(s, 2 rho (1 - rho)) (independent), "
    "E D = rho d + 2 rho (1 - rho) s, so masking is not a uniform contraction by rho: "
    "shared items add 2 rho (1 - rho) s expected disagreement (neighbours expand relative "
    "to distant pairs). Its tails obey Hoeffding exp(-2 t^2 / (d + s)) and the "
    "multiplicative and relative-entropy Chernoff bounds. For u, a near neighbour v and a "
    "farther w (d_uv < d_uw), D_uw - D_uv is a sum of independent per-item terms in "
    "[-1, 1]; P(D_uw <= D_uv) is computed exactly by convolution and is at most "
    "exp(-2 m^2 / sum_i c_i^2) when m = E[D_uw - D_uv] > 0 (c_i the range of item i's term)."
)
RECONSTRUCTION = True

RHOS: tuple[float, ...] = (0.25, 0.5, 0.75, 0.9)
MC_SIGMAS: tuple[float, ...] = (0.0, 1.0, 2.0)
BOUND_SIGMAS: tuple[float, ...] = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0)
GEN_SIZES = (0, 1, 3, 10, 40, 150)
GEN_SIZES_QUICK = (0, 1, 5, 30)
N_CANDIDATES = 2000
BOUND_RTOL = 1e-9
MOMENT_RTOL = 1e-9


# --------------------------------------------------------------------------- checks
def check_mc_agreement(
    name: str,
    description: str,
    exact: np.ndarray,
    count: np.ndarray,
    n_mc: int,
    *,
    confidence: float,
) -> tuple[Check, dict[str, Any]]:
    r"""All exact probabilities inside Bonferroni Clopper-Pearson intervals of their MC counts.

    With M comparisons each interval has level :math:`1 - (1 - \mathrm{confidence})/M`,
    so under the exact law all M are inside with probability >= ``confidence`` whatever
    their dependence. ``measured`` is the fraction inside, ``slack`` the smallest signed
    distance of an exact value to its interval's edge. Zero comparisons fail.

    Returns the check and a summary (worst cases, fraction inside the per-case
    ``confidence`` interval for information).
    """
    exact = np.asarray(exact, dtype=np.float64).ravel()
    count = np.asarray(count).ravel()
    m = int(exact.size)
    alpha_each = (1.0 - confidence) / max(m, 1)
    tolerance = (
        f"all M exact probabilities inside Clopper-Pearson intervals at per-comparison level "
        f"1 - (1 - {confidence})/M (Bonferroni, family-wise {confidence}); n_mc = {n_mc}"
    )
    if m == 0:
        return Check(name, description, float("nan"), 1.0, float("nan"), tolerance, False, 0), {}
    lo, hi = mk.clopper_pearson(count, n_mc, confidence=1.0 - alpha_each)
    # signed distance to the interval's edges; an edge at 0 or 1 cannot be crossed
    margin_lo = np.where(lo > 0, exact - lo, np.inf)
    margin_hi = np.where(hi < 1, hi - exact, np.inf)
    margin = np.minimum(margin_lo, margin_hi)
    inside = margin >= -1e-12
    slack = float(margin.min()) if np.isfinite(margin.min()) else 1.0
    lo1, hi1 = mk.clopper_pearson(count, n_mc, confidence=confidence)
    worst = np.argsort(margin)[:10]
    summary = {
        "comparisons": m,
        "per_comparison_level": 1.0 - alpha_each,
        "outside": int((~inside).sum()),
        "fraction_inside_per_case_ci": float(np.mean((exact >= lo1) & (exact <= hi1))),
        "worst": [
            {
                "index": int(i),
                "exact": float(exact[i]),
                "mc": float(count[i] / n_mc),
                "ci": [float(lo[i]), float(hi[i])],
            }
            for i in worst
        ],
    }
    check = Check(
        name=name,
        description=description,
        measured=float(inside.mean()),
        bound=1.0,
        slack=slack,
        tolerance=tolerance,
        passed=bool(inside.all()),
        n=m,
    )
    return check, summary


def check_bound_dominates(
    name: str, description: str, exact: np.ndarray, bound: np.ndarray
) -> Check:
    """bound >= exact on every case (relative tolerance 1e-9); measured = max exact/bound.

    Zero cases fail.
    """
    exact = np.asarray(exact, dtype=np.float64).ravel()
    bound = np.asarray(bound, dtype=np.float64).ravel()
    tolerance = f"exact <= bound * (1 + {BOUND_RTOL:g}) on every case"
    if exact.size == 0:
        return Check(name, description, float("nan"), 1.0, float("nan"), tolerance, False, 0)
    ok = exact <= bound * (1.0 + BOUND_RTOL) + 1e-300
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(bound > 0, exact / bound, np.where(exact > 0, np.inf, 0.0))
    worst = float(ratio.max())
    return Check(
        name=name,
        description=description,
        measured=worst,
        bound=1.0 + BOUND_RTOL,
        slack=1.0 + BOUND_RTOL - worst,
        tolerance=tolerance,
        passed=bool(ok.all()),
        n=int(exact.size),
    )


# --------------------------------------------------------------------------- helpers
def _generated_pairs(quick: bool) -> tuple[mk.MaskEntries, np.ndarray, np.ndarray]:
    """Grid of (d, s); d is split into ceil(d/2) only-u and floor(d/2) only-v items."""
    sizes = np.asarray(GEN_SIZES_QUICK if quick else GEN_SIZES)
    d, s = (a.ravel() for a in np.meshgrid(sizes, sizes, indexing="ij"))
    return mk.pair_entries_from_counts(d - d // 2, d // 2, s), d, s


def _generated_triples(n: int, rng: np.random.Generator) -> np.ndarray:
    """(n, 7) pattern counts: scales 3, 12, 40 per code, plus near ties (n_4 ~ n_2)."""
    scale = rng.choice([3, 12, 40], size=(n, 1))
    counts = rng.integers(0, scale + 1, size=(n, 7))
    spread = (3 * np.sqrt(scale[:, 0])).astype(np.int64) + 2
    counts[:, 3] = counts[:, 1] + rng.integers(0, spread)  # n_4 >= n_2: near ties and clear wins
    return counts


def _pair_summary(
    d: np.ndarray, s: np.ndarray, jac: np.ndarray, rhos: Sequence[float]
) -> dict[str, Any]:
    out: dict[str, Any] = {
        "n": int(d.size),
        "mean_d": float(d.mean()),
        "mean_s": float(s.mean()),
        "mean_jaccard": float(jac.mean()),
        "per_rho": {},
    }
    pos = d > 0
    for rho in rhos:
        q = mk.shared_flip_rate(rho)
        ed = mk.pair_mean(d, s, rho)
        out["per_rho"][f"{rho:g}"] = {
            "mean_contraction_rho_d": float(np.mean(rho * d)),
            "mean_excess_q_s": float(np.mean(q * s)),
            "mean_ED": float(np.mean(ed)),
            "mean_ED_over_d": float(np.mean(ed[pos] / d[pos])) if pos.any() else None,
            "median_ED_over_d": float(np.median(ed[pos] / d[pos])) if pos.any() else None,
            "mean_ED_over_rho_d": float(np.mean(ed[pos] / (rho * d[pos]))) if pos.any() else None,
        }
    return out


# --------------------------------------------------------------------------- run
def run(
    ctx: VerifyContext,
    *,
    rhos: Sequence[float] = RHOS,
    law: str = "masked",
    triple_law: str = "masked",
    bound_scale: float = 1.0,
) -> ClaimResult:
    """Check T2.6 on the training users of ``ctx.dataset`` (no model needed).

    Parameters
    ----------
    ctx : the verification context; uses ``options.n_pairs``, ``n_users``, ``n_mc``,
        ``confidence``, ``seed``, ``quick``.
    rhos : keep rates.
    law, triple_law : the exact laws tested (``"masked"``; wrong laws are negative
        controls, see ``radius.masking.pair_law`` / ``triple_law``).
    bound_scale : multiplies every bound's exponent (> 1: a too-tight bound, negative
        control).
    """
    t0 = time.perf_counter()
    opts = ctx.options
    rhos = tuple(float(r) for r in rhos)
    for r in rhos:
        mk.shared_flip_rate(r)  # validates
    if law not in mk.PAIR_LAWS:
        raise ValueError(f"law must be one of {', '.join(map(repr, mk.PAIR_LAWS))}, got {law!r}")
    if triple_law not in mk.TRIPLE_LAWS:
        raise ValueError(
            f"triple_law must be one of {', '.join(map(repr, mk.TRIPLE_LAWS))}, got {triple_law!r}"
        )
    seeds = np.random.SeedSequence([opts.seed, 26]).spawn(7)
    rng = [np.random.default_rng(s) for s in seeds]
    x = ctx.dataset.train
    n_pair_each = max(1, opts.n_pairs // 2)
    n_tri_each = max(1, opts.n_users // 2)
    n_cand = min(N_CANDIDATES, x.shape[0])

    # ---- sample cases
    near = mk.sample_near_pairs(x, n_pair_each, n_candidates=n_cand, seed=rng[0])
    dist = mk.sample_random_pairs(x, n_pair_each, seed=rng[1])
    gen_entries, _, _ = _generated_pairs(opts.quick)
    pair_parts = [mk.pair_entries(x, *near), mk.pair_entries(x, *dist), gen_entries]
    group = np.concatenate(
        [np.full(p.n_cases, g) for g, p in zip(("near", "distant", "generated"), pair_parts)]
    )
    pairs = mk.MaskEntries.concat(pair_parts)
    pc = pairs.pattern_counts(3)
    d, s = pc[:, 0] + pc[:, 1], pc[:, 2]

    tri_next = mk.sample_triples(x, n_tri_each, far="next", n_candidates=n_cand, seed=rng[2])
    tri_rand = mk.sample_triples(x, n_tri_each, far="random", n_candidates=n_cand, seed=rng[3])
    n_gen_tri = 12 if opts.quick else 36
    tri_parts = [
        mk.triple_entries(x, *tri_next),
        mk.triple_entries(x, *tri_rand),
        mk.triple_entries_from_counts(_generated_triples(n_gen_tri, rng[4])),
    ]
    tgroup = np.concatenate(
        [np.full(p.n_cases, g) for g, p in zip(("next", "random", "generated"), tri_parts)]
    )
    triples = mk.MaskEntries.concat(tri_parts)
    tc = triples.pattern_counts(7)
    t_sample = time.perf_counter() - t0

    # ---- Monte Carlo on the actual sets (all rho at once)
    sim_pair = mk.simulate_pair_distance(pairs, rhos, opts.n_mc, seed=rng[5])  # (R, n_mc, K)
    sim_tri = mk.simulate_triple_delta(triples, rhos, opts.n_mc, seed=rng[6])  # (R, n_mc, T)
    t_mc = time.perf_counter() - t0 - t_sample

    # ---- exact laws, events, bounds
    moment_err = 0.0
    mc_exact, mc_count = [], []
    bnd: dict[str, tuple[list[np.ndarray], list[np.ndarray]]] = {
        k: ([], []) for k in mk.BOUND_KINDS
    }
    tri_exact, tri_count, tri_bound_exact, tri_bound = [], [], [], []
    pair_rows: list[dict[str, Any]] = []
    tri_summary: dict[str, Any] = {}
    for r, rho in enumerate(rhos):
        lw = mk.pair_law(d, s, rho, law=law)
        mean, var = lw.mean(), lw.var()
        f_mean, f_var = mk.pair_mean(d, s, rho), mk.pair_var(d, s, rho)
        moment_err = max(
            moment_err,
            float(np.max(np.abs(lw.total() - 1.0), initial=0.0)),
            float(np.max(np.abs(mean - f_mean) / np.maximum(1.0, f_mean), initial=0.0)),
            float(np.max(np.abs(var - f_var) / np.maximum(1.0, f_var), initial=0.0)),
        )
        sd = np.sqrt(np.maximum(var, 0.0))
        sims = sim_pair[r]  # (n_mc, K)
        for c in MC_SIGMAS:
            k_up = mk.tail_threshold(mean, c * sd, side="upper")
            k_lo = mk.tail_threshold(mean, c * sd, side="lower")
            mc_exact += [lw.prob_ge(k_up), lw.prob_le(k_lo)]
            mc_count += [(sims >= k_up).sum(0), (sims <= k_lo).sum(0)]
        k_eq = np.rint(mean).astype(np.int64)
        mc_exact.append(lw.prob_eq(k_eq))
        mc_count.append((sims == k_eq).sum(0))

        live = np.sqrt(f_var) > 0
        sd_f = np.sqrt(f_var)[live]
        sub = lw.take(np.nonzero(live)[0])
        for c in BOUND_SIGMAS:
            t = c * sd_f
            for side in ("upper", "lower"):
                k = mk.tail_threshold(mean[live], t, side=side)
                ex = sub.prob_ge(k) if side == "upper" else sub.prob_le(k)
                for kind in mk.BOUND_KINDS:
                    b = mk.pair_tail_bound(
                        d[live], s[live], rho, t, side=side, kind=kind, scale=bound_scale
                    )
                    bnd[kind][0].append(ex)
                    bnd[kind][1].append(b)
        k_sd = mk.tail_threshold(mean, sd, side="upper")
        p_sd, f_sd = lw.prob_ge(k_sd), (sims >= k_sd).mean(0)
        for g in ("near", "distant"):
            for i in np.nonzero(group == g)[0][:10]:
                pair_rows.append(
                    {
                        "group": g,
                        "rho": rho,
                        "d": int(d[i]),
                        "s": int(s[i]),
                        "ED": float(mean[i]),
                        "P_ge_ED_plus_sd": float(p_sd[i]),
                        "mc_ge_ED_plus_sd": float(f_sd[i]),
                    }
                )

        # triples
        flip = mk.triple_flip_prob(tc, rho, law=triple_law)
        cnt = (sim_tri[r] <= 0).sum(0)
        tri_exact.append(flip)
        tri_count.append(cnt)
        m_tri = mk.triple_mean(tc, rho)
        bound = mk.triple_flip_bound(tc, rho, scale=bound_scale)
        pos = m_tri > 0
        tri_bound_exact.append(flip[pos])
        tri_bound.append(bound[pos])
        per: dict[str, Any] = {}
        for g in ("next", "random", "generated"):
            sel = tgroup == g
            if not sel.any():
                per[g] = {"n": 0}
                continue
            fp = flip[sel]
            per[g] = {
                "n": int(sel.sum()),
                "mean_flip": float(fp.mean()),
                "median_flip": float(np.median(fp)),
                "max_flip": float(fp.max()),
                "fraction_flip_ge_0.5": float(np.mean(fp >= 0.5)),
                "fraction_expected_order_reversed": float(np.mean(m_tri[sel] <= 0)),
                "mean_mc_flip": float(np.mean(cnt[sel] / opts.n_mc)),
                "mean_bound_where_m_pos": (
                    float(np.mean(bound[sel & pos])) if (sel & pos).any() else None
                ),
            }
        tri_summary[f"{rho:g}"] = per
    t_exact = time.perf_counter() - t0 - t_sample - t_mc

    # ---- checks
    checks: list[Check] = []
    n_law = int(d.size) * len(rhos)
    checks.append(
        Check(
            name="pair_law_moments",
            description=(
                "convolved pmf of D has mass 1, mean rho d + q s, var d rho(1-rho) + s q(1-q)"
            ),
            measured=moment_err,
            bound=MOMENT_RTOL,
            slack=MOMENT_RTOL - moment_err,
            tolerance=f"max relative error <= {MOMENT_RTOL:g} over all (pair, rho)",
            passed=bool(n_law > 0 and moment_err <= MOMENT_RTOL),
            n=n_law,
        )
    )
    pair_mc, pair_mc_summary = check_mc_agreement(
        "pair_exact_in_mc_ci",
        "exact tail/pmf of D (7 events per pair and rho) inside the MC interval",
        np.concatenate(mc_exact) if mc_exact else np.zeros(0),
        np.concatenate(mc_count) if mc_count else np.zeros(0),
        opts.n_mc,
        confidence=opts.confidence,
    )
    checks.append(pair_mc)
    labels = {
        "hoeffding": "Hoeffding exp(-2 t^2/(d+s))",
        "chernoff": "multiplicative Chernoff",
        "kl": "relative-entropy Chernoff-Hoeffding",
    }
    for kind in mk.BOUND_KINDS:
        ex, b = bnd[kind]
        checks.append(
            check_bound_dominates(
                f"pair_{kind}_bound",
                f"{labels[kind]} bound >= exact P(D >= ED + t) and P(D <= ED - t)",
                np.concatenate(ex) if ex else np.zeros(0),
                np.concatenate(b) if b else np.zeros(0),
            )
        )
    tri_mc, tri_mc_summary = check_mc_agreement(
        "triple_exact_in_mc_ci",
        "exact flip probability P(D_uw <= D_uv) inside the MC interval",
        np.concatenate(tri_exact) if tri_exact else np.zeros(0),
        np.concatenate(tri_count) if tri_count else np.zeros(0),
        opts.n_mc,
        confidence=opts.confidence,
    )
    checks.append(tri_mc)
    checks.append(
        check_bound_dominates(
            "triple_hoeffding_bound",
            "exp(-2 m^2 / sum c_i^2) >= exact P(D_uw <= D_uv) where m = E[D_uw - D_uv] > 0",
            np.concatenate(tri_bound_exact) if tri_bound_exact else np.zeros(0),
            np.concatenate(tri_bound) if tri_bound else np.zeros(0),
        )
    )

    # ---- details
    jac = np.where(d + s > 0, s / np.maximum(d + s, 1), 0.0)
    tri_rows = []
    d_uv, s_uv, d_uw, s_uw = mk.triple_pair_counts(tc)
    for g in ("next", "random", "generated"):
        for i in np.nonzero(tgroup == g)[0][:15]:
            tri_rows.append(
                {
                    "group": g,
                    "counts": tc[i].tolist(),
                    "d_uv": int(d_uv[i]),
                    "s_uv": int(s_uv[i]),
                    "d_uw": int(d_uw[i]),
                    "s_uw": int(s_uw[i]),
                    "flip_exact": {
                        f"{rho:g}": float(tri_exact[r][i]) for r, rho in enumerate(rhos)
                    },
                    "flip_mc": {
                        f"{rho:g}": float(tri_count[r][i] / opts.n_mc) for r, rho in enumerate(rhos)
                    },
                }
            )
    details: dict[str, Any] = {
        "sizes": {
            "near_pairs": int((group == "near").sum()),
            "distant_pairs": int((group == "distant").sum()),
            "generated_pairs": int((group == "generated").sum()),
            "next_triples": int((tgroup == "next").sum()),
            "random_triples": int((tgroup == "random").sum()),
            "generated_triples": int((tgroup == "generated").sum()),
            "candidates": n_cand,
            "n_mc": opts.n_mc,
            "rhos": list(rhos),
        },
        "hooks": {"law": law, "triple_law": triple_law, "bound_scale": bound_scale},
        "pairs": {
            g: _pair_summary(d[group == g], s[group == g], jac[group == g], rhos)
            for g in ("near", "distant")
        },
        "triples": tri_summary,
        "pair_mc": pair_mc_summary,
        "triple_mc": tri_mc_summary,
        "pair_rows": pair_rows,
        "triple_rows": tri_rows,
        "timings_s": {
            "sample": round(t_sample, 3),
            "monte_carlo": round(t_mc, 3),
            "exact_and_bounds": round(t_exact, 3),
            "total": round(time.perf_counter() - t0, 3),
        },
    }
    method = (
        f"{details['sizes']['near_pairs']} near + {details['sizes']['distant_pairs']} distant "
        f"training pairs + {details['sizes']['generated_pairs']} generated (d, s); "
        f"{tri_next[0].size} next + {tri_rand[0].size} random triples + {n_gen_tri} generated; "
        f"rho in {list(rhos)}; {opts.n_mc} MC masks per case drawn on the actual item sets; "
        "exact laws by direct convolution; MC agreement by Bonferroni Clopper-Pearson "
        f"(family-wise {opts.confidence}); bounds at t = {list(BOUND_SIGMAS)} sd."
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
