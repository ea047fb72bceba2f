"""Markdown formatting shared by the blocks: numbers, tables, commands, stamps, checks by kind."""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

DEFAULT_VERIFY_DIR = Path("runs") / "synthetic" / "verify"


DEFAULT_FIGURES_DIR = Path("figures") / "out"


# Figures that illustrate a claim (``radius figures NAME`` writes NAME.png).
CLAIM_FIGURES: dict[str, tuple[str, ...]] = {
    "2.3": ("radius",),
    "2.5": ("tsne",),
    "2.6": ("masking",),
    "beta-kl": ("beta",),
}


ABLATION_FIGURES: tuple[str, ...] = ("cohorts", "tsne")


_MAX_KEY_NUMBERS = 12


# --------------------------------------------------------------------------- format
def _num(v: Any, digits: int = 4) -> str:
    """A number for a table: ``digits`` significant digits; JSON's "nan"/"inf" kept."""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.{digits}g}"
    if v is None:
        return "—"
    return str(v)


def _cell(v: Any) -> str:
    """Table cell text: numbers formatted, pipes escaped, one line."""
    s = _num(v) if not isinstance(v, str) else v
    return " ".join(s.replace("|", "\\|").split())


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(_cell(h) for h in header) + " |"]
    lines.append("|" + "|".join("---" for _ in header) + "|")
    lines += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def _rel(path: Path, base: Path) -> str:
    """``path`` relative to ``base`` with forward slashes (markdown links)."""
    try:
        rel = os.path.relpath(path.resolve(), base.resolve())
    except ValueError:  # different drives
        rel = str(path)
    return rel.replace(os.sep, "/")


def _command(claim_id: str, context: Mapping[str, Any]) -> str:
    parts = ["radius verify", f"--theorem {claim_id}"]
    name = context.get("dataset")
    if name and name != "synthetic":
        parts.append(f"--data {name}")
    seed = context.get("seed")
    if isinstance(seed, int) and seed != 0:
        parts.append(f"--seed {seed}")
    if context.get("checkpoint"):
        parts.append(f"--checkpoint {context['checkpoint']}")
    parts += _config_flags(context.get("base_config"))
    return " ".join(parts)


def _set_value(v: Any) -> str:
    """A value as ``--set`` reads it back: JSON, except a string that is not JSON stays bare."""
    if isinstance(v, str):
        try:
            json.loads(v)
        except json.JSONDecodeError:
            return v
    return json.dumps(v, separators=(",", ":"))


def _config_flags(base: Any) -> list[str]:
    """``--model`` / ``--set k=v`` flags for a base config that differs from the default."""
    if not isinstance(base, Mapping):
        return []
    from radius.training.config import TrainConfig

    # every field (key_dict leaves some out at default), at the model's own defaults
    # (``--model recvae`` alone implies RecVAE's lr and epochs)
    model = str(base.get("model", TrainConfig().model))
    default = TrainConfig(model=model).as_dict()
    flags = [f"--model {model}"] if model != TrainConfig().model else []
    for k, v in base.items():
        if k != "model" and k in default and v != default[k]:
            flags.append(f"--set {k}={_set_value(v)}")
    return flags


def _stamp(context: Mapping[str, Any], seconds: Any) -> str:
    bits = [
        f"data `{context.get('dataset', '?')}` (hash `{context.get('data_hash', '?')}`)",
        f"seed {context.get('seed', '?')}",
        f"code `{context.get('code_version', '?')}`",
    ]
    if context.get("checkpoint"):
        bits.append(f"checkpoint `{context['checkpoint']}`")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool):
        bits.append(f"{seconds:.1f} s")
    return ", ".join(bits)


_SKIP_DETAILS = ("seconds", "timings", "hooks", "rows")


def _key_numbers(details: Any) -> list[tuple[str, Any]]:
    """At most 12 scalar entries of ``details``.

    ``details["key_numbers"]`` (a dict) chooses them when present; otherwise scalar
    leaves up to two levels deep are taken in order, skipping timings, negative-control
    hooks and row dumps (keys containing ``seconds``, ``timings``, ``hooks``, ``rows``).
    """
    if not isinstance(details, Mapping):
        return []
    chosen = details.get("key_numbers")
    if isinstance(chosen, Mapping):
        return [(str(k), v) for k, v in _flatten(chosen, depth=2)][:_MAX_KEY_NUMBERS]
    out = []
    for k, v in _flatten(details, depth=2):
        if any(skip in part for part in k.split(".") for skip in _SKIP_DETAILS):
            continue
        if isinstance(v, str) and len(v) > 80:
            continue
        out.append((k, v))
    return out[:_MAX_KEY_NUMBERS]


def _figure_links(names: Sequence[str], figures_dir: Path, out_dir: Path) -> list[str]:
    links = []
    for name in names:
        png = figures_dir / f"{name}.png"
        if png.is_file():
            extra = [
                f"[{p.suffix[1:]}]({_rel(p, out_dir)})"
                for p in (figures_dir / f"{name}.csv", figures_dir / f"{name}.json")
                if p.is_file()
            ]
            tail = f" (data: {', '.join(extra)})" if extra else ""
            links.append(f"![{name}]({_rel(png, out_dir)}){tail}")
        else:
            links.append(f"`{name}` not drawn yet: `radius figures {name}`")
    return links


# --------------------------------------------------------------------------- checks by role
_KINDS = ("identity", "bound", "empirical")


_OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE", "VACUOUS")


_ROLES = ("statement", "assumption", "mechanism", "implementation")


_ROLE_HEADINGS = {
    "statement": "Statement (follows from the claim as proved; only these decide the verdict):",
    "assumption": "Assumptions (premises of the proof, checked on this model and data: MET / "
    "NOT MET):",
    "mechanism": "Mechanism (the paper's informal consequences in trained models, intervals "
    "over training seeds and users; never decides the verdict):",
    "implementation": "Implementation (identities and constructed probes: a failure is a bug "
    "in radius; a pass is no evidence about the model):",
}


def _kind(c: Mapping[str, Any]) -> str:
    k = c.get("kind")
    return k if k in _KINDS else "bound"  # reports written before kinds existed


def _role(c: Mapping[str, Any]) -> str:
    r = c.get("role")
    if r in _ROLES:
        return str(r)
    # reports written before roles existed: identities and probes were the implementation
    if _kind(c) == "identity" or c.get("evidence", "real") != "real":
        return "implementation"
    return "statement"


def _outcome(c: Mapping[str, Any]) -> str:
    o = c.get("outcome")
    if o in _OUTCOMES:
        return str(o)
    return "PASS" if c.get("passed") else "FAIL"


def _passed(c: Mapping[str, Any]) -> bool:
    return _outcome(c) == "PASS"


def _decides(c: Mapping[str, Any]) -> bool:
    return _role(c) == "statement"


def _label(c: Mapping[str, Any]) -> str:
    from radius.stats import Outcome

    return Outcome(_outcome(c)).word(_kind(c), _role(c))


def _interval_text(iv: Any) -> str:
    """``+0.12 [+0.05, +0.20]`` from an Interval dict (empty when absent)."""
    if not isinstance(iv, Mapping):
        return ""
    est, lo, hi = iv.get("estimate"), iv.get("low"), iv.get("high")

    def f(v: Any) -> str:
        return f"{v:+.4g}" if isinstance(v, (int, float)) and math.isfinite(v) else str(v)

    if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in (lo, hi)):
        return f"{f(est)} [no interval]"
    level = iv.get("level")
    lev = f" ({level:.0%})" if isinstance(level, (int, float)) else ""
    seeds = iv.get("seeds")
    per = (
        "; per seed " + ", ".join(f(v) for v in seeds)
        if isinstance(seeds, list) and len(seeds) > 1
        else ""
    )
    return f"{f(est)} [{f(lo)}, {f(hi)}]{lev}{per}"


def _checks_by_role(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown tables of the checks, one per role (statement, assumptions, mechanism,
    implementation)."""
    lines: list[str] = []
    for role in _ROLES:
        group = [c for c in checks if _role(c) == role]
        if not group:
            continue
        rows = [
            [
                f"`{c.get('name', '?')}`",
                c.get("description", ""),
                c.get("kind", ""),
                c.get("measured"),
                _interval_text(c.get("interval")),
                c.get("bound"),
                c.get("slack"),
                c.get("n"),
                c.get("tolerance", ""),
                f"**{_label(c)}**" if not _passed(c) else _label(c),
                c.get("note", "") or "",
            ]
            for c in group
        ]
        header = ["check", "what", "kind", "measured", "interval", "bound", "slack", "n"]
        header += ["tolerance", "outcome", "note"]
        lines += ["", _ROLE_HEADINGS[role], "", _md_table(header, rows)]
    return lines


def _failing_list(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every check that is not PASS, with its role (only statement checks decide)."""
    bad = [c for c in checks if not _passed(c)]
    if not bad:
        return []
    out = ["", "Checks that did not pass (all of them, deciding or not):", ""]
    for c in bad:
        role = _role(c)
        what = "decides the verdict" if role == "statement" else f"{role}: does not decide"
        note = f"; {c['note']}" if c.get("note") else ""
        out.append(f"- `{c.get('name', '?')}` {_label(c)} ({_kind(c)}, {what}){note}")
    return out


def _pm(stat: Any) -> str:
    """``mean ± std`` from a ``{"mean", "std"}`` dict (std omitted when NaN)."""
    if not isinstance(stat, Mapping):
        return _num(stat)
    mean, std = stat.get("mean"), stat.get("std")
    if not isinstance(mean, (int, float)) or (isinstance(mean, float) and math.isnan(mean)):
        return "n/a"
    if isinstance(std, (int, float)) and not (isinstance(std, float) and math.isnan(std)):
        return f"{mean:.4f} ± {std:.4f}"
    return f"{mean:.4f}"


def _flatten(obj: Any, prefix: str = "", depth: int = 3) -> list[tuple[str, Any]]:
    """Scalar leaves of nested dicts as dotted keys (lists skipped)."""
    if isinstance(obj, Mapping) and depth > 0:
        out = []
        for k, v in obj.items():
            out += _flatten(v, f"{prefix}{k}.", depth - 1)
        return out
    if isinstance(obj, (bool, int, float)) or (isinstance(obj, str) and len(obj) <= 40):
        return [(prefix[:-1], obj)]
    return []


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _level(v: Any) -> str:
    return f"{v:.0%}" if _is_num(v) else "?"


def _ci(iv: Any) -> str:
    """``+0.0127 [+0.0090, +0.0170]`` from an interval dict of ``radius.stats.Interval``."""
    if not isinstance(iv, Mapping) or not _is_num(iv.get("estimate")):
        return "n/a"
    if not (_is_num(iv.get("low")) and _is_num(iv.get("high"))):
        return f"{iv['estimate']:+.4f} [no interval]"
    return f"{iv['estimate']:+.4f} [{iv['low']:+.4f}, {iv['high']:+.4f}]"


def _seed_text(spread: Any) -> str:
    """``seeds +0.0120 ± 0.0010, 3/3 positive`` from a ``seed_spread`` dict."""
    if not isinstance(spread, Mapping):
        return ""
    vals = [v for v in spread.get("values") or [] if _is_num(v)]
    if not vals:
        return ""
    pos = sum(v > 0 for v in vals)
    return f"seeds {_pm(spread)}, {pos}/{len(vals)} positive"


def _verdict_line(c: Mapping[str, Any]) -> str:
    seeds = _seed_text(c.get("seeds"))
    return f"{_ci(c.get('interval'))} **{c.get('verdict', '?')}**" + (
        f" ({seeds})" if seeds else ""
    )
