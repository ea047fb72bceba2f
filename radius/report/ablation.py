"""The ``ablation`` block: settings, tuning grid, each verdict with its interval, controls."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radius.report.format import (
    _MAX_KEY_NUMBERS,
    ABLATION_FIGURES,
    DEFAULT_FIGURES_DIR,
    _ci,
    _figure_links,
    _flatten,
    _level,
    _md_table,
    _num,
    _pm,
    _seed_text,
    _verdict_line,
)


def _ablation_tuning(tuning: Mapping[str, Any]) -> list[str]:
    """The PIA knobs chosen on validation and the grid curve."""
    ch = tuning["chosen"]
    init = "zeros" if ch.get("anchor_init") == "zeros" else f"N(0, {ch.get('anchor_init_scale')}²)"
    knobs = tuning.get("knobs", {})
    lines = [
        "",
        f"PIA knobs: λ_A = {ch['lambda_a']:g} ({knobs.get('lambda_a', '?')}), anchors {init} "
        f"({knobs.get('anchor_init', '?')}).",
    ]
    if tuning.get("skipped"):
        return lines + [f"Grid skipped: {tuning['skipped']}."]
    rows = [
        [
            f"{g['lambda_a']:g}",
            g.get("init", "?"),
            _pm(g.get("val")),
            (g.get("val") or {}).get("n", "?"),
            "**chosen**" if g.get("chosen") else "",
        ]
        for g in tuning.get("grid") or []
    ]
    return lines + [
        f"Chosen on validation users: {tuning.get('rule', '?')}.",
        "",
        _md_table(
            ["λ_A", "anchor init", f"validation {tuning.get('metric', '?')}", "seeds", ""], rows
        ),
    ]


def _ablation_known(data: Mapping[str, Any]) -> str:
    """Tables of the ``radius.experiments.ablation`` layout (raises KeyError/TypeError).

    Files written before verdicts carried intervals (no ``statistics``) render their
    numbers with a note and no verdict: a point estimate decides nothing.
    """
    settings = list(data["settings"])
    summary = data["summary"]
    metrics = list(data.get("metrics") or next(iter(summary.values())).keys())
    dname = data.get("data", {}).get("name", "?") if isinstance(data.get("data"), Mapping) else "?"
    dhash = data.get("data", {}).get("hash", "?") if isinstance(data.get("data"), Mapping) else "?"
    seeds = data.get("seeds", [])
    n_seeds = len(seeds) if isinstance(seeds, list) else seeds
    stats = data.get("statistics") if isinstance(data.get("statistics"), Mapping) else None
    rows_of = [s for s in summary if s in settings] + [s for s in summary if s not in settings]
    lines = [
        f"{data.get('model', '?')} on `{dname}` (hash `{dhash}`), {n_seeds} seed(s), "
        f"{data.get('test_users', '?')} test users; mean ± sample std over seeds.",
        "",
        _md_table(
            ["setting", *metrics], [[s, *(_pm(summary[s][m]) for m in metrics)] for s in rows_of]
        ),
    ]
    runs = data.get("runs") if isinstance(data.get("runs"), Mapping) else {}
    capped = [
        f"{r.get('setting', name)} seed {r.get('seed', '?')}"
        for name, rs in runs.items()
        for r in (rs if isinstance(rs, list) else [])
        if isinstance(r, Mapping)
        and r.get("stopped") == "cap"
        and r.get("setting", name) != "masking_full_budget"  # runs to the cap by design
    ]
    if capped:
        lines += [
            "",
            f"**Warning:** {len(capped)} run(s) hit the epoch cap before early stopping "
            f"(under-trained?): {', '.join(capped)}.",
        ]
    if stats is None:
        lines += [
            "",
            "*Legacy layout: this file predates intervals and outcomes, so no verdict is "
            "drawn from it. Regenerate with `radius experiment ablation`.*",
        ]
    if isinstance(data.get("tuning"), Mapping):
        lines += _ablation_tuning(data["tuning"])
    if stats is not None:
        lines += [
            "",
            f"Verdicts on {stats.get('metric', '?')}: {stats.get('method', '?')}; "
            f"{_level(stats.get('level'))} level, {stats.get('draws', '?')} draws. "
            f"{stats.get('rule', '')}.",
        ]
    cohorts = data.get("cohorts")
    gain = data.get("pia_gain") if isinstance(data.get("pia_gain"), Mapping) else None
    if isinstance(cohorts, Mapping) and settings[0] in cohorts:
        metric = "ndcg@100" if "ndcg@100" in metrics else metrics[0]
        rows = []
        for label, entry in cohorts[settings[0]].items():
            row = [label, entry.get("users", "?") if isinstance(entry, Mapping) else "?"]
            row += [_pm(cohorts[s].get(label, {}).get(metric)) for s in settings]
            if gain is not None and stats is not None:
                g = gain.get("per_cohort", {}).get(label, {})
                row += [_ci(g.get("interval")), f"**{g.get('verdict', '?')}**"]
            elif gain is not None:
                g = gain.get("per_cohort", {}).get(label, {})
                row.append(_pm({"mean": g.get("gain_mean"), "std": g.get("gain_std")}))
            rows.append(row)
        header = ["cohort", "users", *settings]
        if gain is not None:
            header += (
                ["pia − masking [95% CI]", "outcome"] if stats is not None else ["pia − masking"]
            )
        lines += ["", f"{metric} per interaction-count cohort:", "", _md_table(header, rows)]
    order = data.get("ordering")
    if isinstance(order, Mapping) and stats is not None:
        lines += [
            "",
            f"Ordering {order.get('order', '?')} on {order.get('metric', '?')}: "
            f"**{order.get('verdict', '?')}** (combined over its steps).",
        ]
        for st in order.get("steps") or []:
            lines.append(f"- {st.get('higher')} − {st.get('lower')}: {_verdict_line(st)}")
    elif isinstance(order, Mapping):
        lines += ["", f"Ordering {order.get('order', '?')} on {order.get('metric', '?')}:"]
        for st in order.get("steps") or []:
            lines.append(
                f"- {st.get('higher')} − {st.get('lower')}: "
                f"{_pm({'mean': st.get('diff_mean'), 'std': st.get('diff_std')})} over seeds, "
                f"positive on {st.get('seeds_holding')}/{st.get('n_seeds')} seeds (no interval)"
            )
    if gain is not None and isinstance(gain.get("both_ends"), Mapping):
        b = gain["both_ends"]
        lines += [
            "",
            f"PIA gain largest at both cohort ends ({b.get('statistic', '?')}): "
            f"{_verdict_line(b)}; {b.get('reason', '')}.",
        ]
    controls = data.get("controls")
    if isinstance(controls, Mapping):
        rows = [
            [
                r.get("label", name),
                _ci(r.get("interval")),
                f"**{r.get('verdict', '?')}**",
                _seed_text(r.get("seeds")),
            ]
            for name, r in [("pia", controls.get("pia", {})), *(controls.get("rows") or {}).items()]
            if isinstance(r, Mapping)
        ]
        lines += [
            "",
            f"Attribution controls against {controls.get('against', '?')} "
            f"(claim: {controls.get('claim', '?')}):",
            "",
            _md_table(["model", "gain over masking [95% CI]", "outcome", "seeds"], rows),
        ]
    paper = data.get("paper")
    if isinstance(paper, Mapping):
        for metric, vals in paper.items():
            if isinstance(vals, Mapping):
                ref = ", ".join(f"{k} {_num(v)}" for k, v in vals.items())
                lines += ["", f"Paper (ML-20M, {metric}; direction only): {ref}."]
    return "\n".join(lines)


def _ablation_generic(data: Mapping[str, Any]) -> str:
    """Any JSON object: per-entry rows of a dict-of-dicts, else its scalar fields."""
    for key in ("summary", "results", "settings", "means"):
        table = data.get(key)
        if (
            isinstance(table, Mapping)
            and table
            and all(isinstance(v, Mapping) for v in table.values())
        ):
            flat = {name: dict(_flatten(v)) for name, v in table.items()}
            cols: list[str] = []
            for f in flat.values():
                cols += [c for c in f if c not in cols]
            order = {c: i for i, c in enumerate(cols)}
            cols = sorted(
                cols, key=lambda c: (not any(m in c for m in ("ndcg", "recall")), order[c])
            )
            more = max(0, len(cols) - 8)
            cols = cols[:8]
            out = _md_table([key, *cols], [[n, *(f.get(c) for c in cols)] for n, f in flat.items()])
            return out + (f"\n\n({more} more columns in the JSON.)" if more else "")
    scalars = _flatten(data, depth=1)
    if not scalars:
        return "(no table could be read from this file)"
    return "\n".join(f"- `{k}`: {_num(v)}" for k, v in scalars[:_MAX_KEY_NUMBERS])


def render_ablation(
    ablations: Mapping[Path, Mapping[str, Any]],
    *,
    figures_dir: Path = DEFAULT_FIGURES_DIR,
    out_dir: Path = Path("."),
    with_figures: bool = True,
) -> str:
    """Markdown of the ``ablation`` block: one section per ablation JSON file."""
    if not ablations:
        return (
            "**Not run yet.** No `ablation-*.json` found. Run `radius experiment ablation`, "
            "then `radius report`."
        )
    parts = []
    for path, data in ablations.items():
        head = f"From `{path.as_posix()}` (`radius experiment ablation"
        model = data.get("model") if isinstance(data, Mapping) else None
        if model and model != "multvae":
            head += f" --model {model}"
        head += "`):"
        if isinstance(data, Mapping) and data.get("command"):
            head = f"From `{path.as_posix()}` (`{data['command']}`):"
        if "error" in data:
            parts.append(f"{head} **unreadable**: {data['error']}.")
            continue
        try:
            body = _ablation_known(data)
        except (KeyError, TypeError, AttributeError, StopIteration, IndexError):
            body = _ablation_generic(data)
        parts.append(f"{head}\n\n{body}")
    if with_figures:
        figs = _figure_links(ABLATION_FIGURES, figures_dir, out_dir)
        parts.append("Figures: " + "; ".join(figs))
    return "\n\n".join(parts)
