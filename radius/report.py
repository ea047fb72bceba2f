"""``radius report``: regenerate the results parts of ``paper_checks.md``.

``paper_checks.md`` mixes hand-written text (per claim: the statement verified, whether
it is a reconstruction, the method) with generated blocks between markers::

    <!-- radius:begin results 2.6 -->
    ... verdict, checks table, key numbers, command, figure, stamp ...
    <!-- radius:end results 2.6 -->

The generator replaces only what lies between a begin marker and its end marker;
every byte outside them, the marker lines included, is kept. Blocks it knows:

``results <claim id>``
    from the JSON report ``radius verify`` writes per claim (``ClaimResult.to_dict()``
    plus ``"seconds"``); a claim with no report renders "not run yet".
``ablation``
    from ``runs/<data>/ablation-*.json`` (``radius experiment ablation``).
``figures``
    the PNGs in ``figures/out/`` with the data files beside them.
``power <data>``
    the power table of ``runs/<data>/verify/power/*.json`` (``radius verify --power``):
    per bound and empirical check, the graded perturbations and the mildest one that
    flips it; "not run" with the command when absent.

Blocks with other keys are left as they are. Nothing in the output depends on the
clock, so regenerating from the same inputs gives the same file, byte for byte. When
the output file does not exist a full skeleton is written: one section per claim id of
``radius.verify.CLAIMS`` (title, statement and reconstruction label from the JSON
report or the claim module's constants), then the ablation and figures blocks.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radius.errors import RadiusError
from radius.io import atomic_write_text

__all__ = [
    "Block",
    "ReportInputs",
    "ReportSummary",
    "begin_marker",
    "end_marker",
    "parse_blocks",
    "check_structure",
    "replace_blocks",
    "load_claim_reports",
    "load_ablations",
    "claim_info",
    "render_claim",
    "render_ablation",
    "render_figures",
    "render_power",
    "load_power",
    "render_blocks",
    "skeleton",
    "generate",
    "run_report",
]

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

# A marker counts only on a line of its own (a mention inside prose or code does not).
_BEGIN_RE = re.compile(r"^[ \t]*<!-- radius:begin (?P<key>[^<>\n]*?) -->[ \t]*$", re.MULTILINE)
_END_RE = re.compile(r"^[ \t]*<!-- radius:end (?P<key>[^<>\n]*?) -->[ \t]*$", re.MULTILINE)
_MAX_KEY_NUMBERS = 12


def begin_marker(key: str) -> str:
    """The line that opens the generated block ``key`` (e.g. ``results 2.6``)."""
    return f"<!-- radius:begin {key} -->"


def end_marker(key: str) -> str:
    """The line that closes the generated block ``key``."""
    return f"<!-- radius:end {key} -->"


# --------------------------------------------------------------------------- parsing
@dataclass(frozen=True)
class Block:
    """A generated block: ``text[start:end]`` is its content, between the two markers."""

    key: str
    start: int
    end: int
    line: int  # 1-based line of the begin marker


def _line_of(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def parse_blocks(text: str) -> list[Block]:
    """The generated blocks of a document, in order.

    Raises
    ------
    RadiusError
        On an end marker without its begin marker, a begin marker without its end,
        nested blocks or a key used twice (each message names the line).
    """
    events = [
        (m.start(), m.end(), "begin", m.group("key").strip()) for m in _BEGIN_RE.finditer(text)
    ]
    events += [(m.start(), m.end(), "end", m.group("key").strip()) for m in _END_RE.finditer(text)]
    events.sort()
    blocks: list[Block] = []
    seen: dict[str, int] = {}
    open_: tuple[str, int, int] | None = None  # key, content start, marker position
    for start, end, kind, key in events:
        line = _line_of(text, start)
        if kind == "begin":
            if open_ is not None:
                raise RadiusError(
                    f"line {line}: block {key!r} begins inside block {open_[0]!r} "
                    f"(opened at line {_line_of(text, open_[2])}); blocks cannot nest"
                )
            if key in seen:
                raise RadiusError(
                    f"line {line}: block {key!r} appears twice (first at line {seen[key]})"
                )
            seen[key] = line
            open_ = (key, end, start)
        else:
            if open_ is None or open_[0] != key:
                raise RadiusError(f"line {line}: end marker of {key!r} without its begin marker")
            blocks.append(Block(key, open_[1], start, _line_of(text, open_[2])))
            open_ = None
    if open_ is not None:
        raise RadiusError(
            f"line {_line_of(text, open_[2])}: block {open_[0]!r} has no end marker "
            f"({end_marker(open_[0])})"
        )
    return blocks


def replace_blocks(text: str, contents: Mapping[str, str]) -> str:
    """``text`` with the content of each block named in ``contents`` replaced.

    The new content sits on its own lines between the unchanged marker lines; text
    outside the blocks and blocks not named in ``contents`` are kept byte for byte.
    """
    out: list[str] = []
    pos = 0
    for b in parse_blocks(text):
        if b.key not in contents:
            continue
        body = contents[b.key].strip("\n")
        out.append(text[pos : b.start])
        out.append("\n" + body + "\n" if body else "\n")
        pos = b.end
    out.append(text[pos:])
    return "".join(out)


def check_structure(text: str, claim_ids: Sequence[str] | None = None) -> list[str]:
    """Problems that keep ``text`` from being a ``paper_checks.md`` the generator fills.

    Empty when the markers are well formed and every claim id (default: all of
    ``radius.verify.CLAIMS``) has a ``results <id>`` block preceded, since the previous
    block, by a markdown heading that names the id (case-insensitive).
    """
    if claim_ids is None:
        from radius.verify import CLAIMS

        claim_ids = list(CLAIMS)
    try:
        blocks = parse_blocks(text)
    except RadiusError as e:
        return [str(e)]
    problems = []
    by_key = {b.key: b for b in blocks}
    for cid in claim_ids:
        b = by_key.get(f"results {cid}")
        if b is None:
            problems.append(f"claim {cid}: no {begin_marker(f'results {cid}')} block")
            continue
        prev_end = max((o.end for o in blocks if o.end < b.start), default=0)
        marker_pos = text.rfind("<!--", 0, b.start)
        region = text[prev_end:marker_pos]
        headings = [ln for ln in region.splitlines() if ln.lstrip().startswith("#")]
        pat = re.compile(rf"(?<![\d.]){re.escape(cid.lower())}(?![\d])")
        if not any(pat.search(h.lower()) for h in headings):
            problems.append(
                f"claim {cid}: no heading naming it before its results block (line {b.line})"
            )
    return problems


# --------------------------------------------------------------------------- inputs
@dataclass
class ReportInputs:
    """What a report is generated from.

    claims : claim id -> report dict (``ClaimResult.to_dict()`` + ``seconds``), or an
        ``{"error": message}`` dict for an unreadable report.
    sources : claim id -> path of its report.
    ablations : path -> ablation dict (``radius experiment ablation``).
    verify_dir : the folder the reports were read from (named in "not run yet").
    figures_dir : where figure PNGs are looked for.
    """

    claims: dict[str, dict[str, Any]] = field(default_factory=dict)
    sources: dict[str, Path] = field(default_factory=dict)
    ablations: dict[Path, dict[str, Any]] = field(default_factory=dict)
    verify_dir: Path = DEFAULT_VERIFY_DIR
    figures_dir: Path = DEFAULT_FIGURES_DIR


def load_claim_reports(verify_dir: str | os.PathLike) -> tuple[dict, dict]:
    """Reports in ``verify_dir``: (claim id -> dict, claim id -> path).

    A file is matched to its claim by its ``"claim"`` field, else by its name
    (``t2_6.json`` is claim 2.6). Unreadable files give ``{"error": ...}`` so the
    report says so instead of pretending the claim was not run.
    """
    from radius.verify import CLAIMS

    by_module = {m: c for c, m in CLAIMS.items()}
    claims: dict[str, dict[str, Any]] = {}
    sources: dict[str, Path] = {}
    folder = Path(verify_dir)
    if not folder.is_dir():
        return claims, sources
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict):
                raise ValueError("top level is not an object")
        except (OSError, ValueError) as e:
            cid = by_module.get(path.stem)
            if cid is not None:
                claims[cid] = {"error": f"{path}: unreadable ({type(e).__name__}: {e})"}
                sources[cid] = path
            continue
        cid = str(data.get("claim") or by_module.get(path.stem, ""))
        if not cid:
            continue
        claims[cid] = data
        sources[cid] = path
    return claims, sources


def load_ablations(data_dir: str | os.PathLike) -> dict[Path, dict[str, Any]]:
    """``ablation-*.json`` files of a data folder (e.g. ``runs/synthetic``), readable ones."""
    out: dict[Path, dict[str, Any]] = {}
    folder = Path(data_dir)
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("ablation-*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            out[path] = {"error": f"unreadable ({type(e).__name__}: {e})"}
            continue
        out[path] = data if isinstance(data, dict) else {"error": "top level is not an object"}
    return out


def claim_info(claim_id: str, report: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Title, statement, reconstruction flag and method of a claim.

    Taken from its report when there is one, else from the claim module's ``TITLE``,
    ``STATEMENT`` and ``RECONSTRUCTION`` constants (and the ``Method.`` paragraph of
    its docstring) when it imports; missing pieces are None.
    """
    info: dict[str, Any] = {
        "title": None,
        "statement": None,
        "reconstruction": None,
        "method": None,
    }
    if report and "error" not in report:
        for k in info:
            if report.get(k) not in (None, ""):
                info[k] = report[k]
    if any(v is None for v in info.values()):
        try:
            from radius.verify import CLAIMS, claim_module

            mod = claim_module(claim_id)
        except Exception:  # a claim module not written yet, or failing to import
            mod = None
        if mod is not None:
            for k, const in (
                ("title", "TITLE"),
                ("statement", "STATEMENT"),
                ("reconstruction", "RECONSTRUCTION"),
            ):
                if info[k] is None and hasattr(mod, const):
                    info[k] = getattr(mod, const)
            if info["method"] is None:
                info["method"] = _method_paragraph(mod.__doc__ or "", CLAIMS[claim_id])
    return info


def _method_paragraph(doc: str, module: str) -> str | None:
    """The paragraph of a module docstring that starts with ``Method.`` (prefix dropped)."""
    for para in re.split(r"\n\s*\n", doc):
        p = " ".join(para.split())
        if p.startswith("Method."):
            p = p[len("Method.") :].strip().replace("``", "`")
            p = re.sub(r":math:`([^`]*)`", r"$\1$", p)
            if p.endswith(":"):
                p = p[:-1] + f" (continued in the docstring of `verify/{module}.py`)."
            return p
    return None


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
    from radius.config import TrainConfig

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


# --------------------------------------------------------------------------- checks by kind
_KINDS = ("identity", "bound", "empirical")
_OUTCOMES = ("PASS", "FAIL", "INCONCLUSIVE")
_KIND_HEADINGS = {
    "identity": "Identities (maths or implementation: a failure is a bug in radius; they "
    "never decide the verdict):",
    "bound": "Bounds (inequalities a trained model could violate):",
    "empirical": "Empirical (decided from an interval: HOLDS / CONTRADICTED / INCONCLUSIVE):",
}


def _kind(c: Mapping[str, Any]) -> str:
    k = c.get("kind")
    return k if k in _KINDS else "bound"  # reports written before kinds existed


def _outcome(c: Mapping[str, Any]) -> str:
    o = c.get("outcome")
    if o in _OUTCOMES:
        return str(o)
    return "PASS" if c.get("passed") else "FAIL"


def _passed(c: Mapping[str, Any]) -> bool:
    return _outcome(c) == "PASS"


def _decides(c: Mapping[str, Any]) -> bool:
    return _kind(c) != "identity" and c.get("evidence", "real") == "real"


def _label(c: Mapping[str, Any]) -> str:
    o = _outcome(c)
    if _kind(c) == "empirical":
        return {"PASS": "HOLDS", "FAIL": "CONTRADICTED"}.get(o, o)
    return o


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
    return f"{f(est)} [{f(lo)}, {f(hi)}]{lev}"


def _checks_by_kind(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Markdown tables of the checks, one per kind (identity, bound, empirical)."""
    lines: list[str] = []
    for kind in _KINDS:
        group = [c for c in checks if _kind(c) == kind]
        if not group:
            continue
        rows = [
            [
                f"`{c.get('name', '?')}`",
                c.get("description", ""),
                c.get("evidence", "real"),
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
        header = ["check", "what", "evidence", "measured", "interval", "bound", "slack", "n"]
        header += ["tolerance", "outcome", "note"]
        lines += ["", _KIND_HEADINGS[kind], "", _md_table(header, rows)]
    return lines


def _failing_list(checks: Sequence[Mapping[str, Any]]) -> list[str]:
    """Every check that is not PASS, including those that do not decide the verdict."""
    bad = [c for c in checks if not _passed(c)]
    if not bad:
        return []
    out = ["", "Sub-checks that did not pass (all of them, deciding or not):", ""]
    for c in bad:
        role = (
            "decides the verdict"
            if _decides(c)
            else (
                "identity: counts as the implementation"
                if _kind(c) == "identity"
                else "probe: counts as the implementation"
            )
        )
        note = f"; {c['note']}" if c.get("note") else ""
        out.append(f"- `{c.get('name', '?')}` {_label(c)} ({_kind(c)}, {role}){note}")
    return out


# --------------------------------------------------------------------------- power
def load_power(verify_dir: str | os.PathLike) -> dict[str, dict[str, Any]]:
    """``power/<module>.json`` files of a verify folder (``radius verify --power``), by claim."""
    folder = Path(verify_dir) / "power"
    out: dict[str, dict[str, Any]] = {}
    if not folder.is_dir():
        return out
    for path in sorted(folder.glob("*.json")):
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            out[path.stem] = {"error": f"{path}: unreadable ({type(e).__name__}: {e})"}
            continue
        if isinstance(data, dict):
            out[str(data.get("claim") or path.stem)] = data
    return out


def render_power(data_dir: Path) -> str:
    """Markdown of a ``power NAME`` block: for every bound and empirical check of the
    claims verified with ``--power`` in ``runs/NAME/verify``, the graded perturbations and
    the mildest grade that flips it ("cannot fail here" when none does)."""
    from radius.verify import CLAIMS

    vdir = data_dir / "verify"
    power = load_power(vdir)
    claims, _ = load_claim_reports(vdir)
    context = next((r["context"] for r in claims.values() if "context" in r), None)
    if isinstance(context, Mapping):  # the data and config of the claim reports beside
        name = context.get("dataset")
        flags = [f"--data {name}"] if name and name != "synthetic" else []
        flags += _config_flags(context.get("base_config"))
    else:
        flags = [] if data_dir.name == "synthetic" else [f"--data {data_dir.name}"]
    cmd = " ".join(["radius verify --theorem all --power", *flags, f"--out {vdir.as_posix()}"])
    if not power:
        return (
            f"**Power table: not run.** No `{(vdir / 'power').as_posix()}/`. Run `{cmd}`, "
            "then `radius report`."
        )
    rows, notes = [], []
    for cid in [*CLAIMS, *(c for c in power if c not in CLAIMS)]:
        rep = power.get(cid)
        if rep is None:
            notes.append(f"- {cid}: not run with `--power`")
            continue
        if "error" in rep:
            notes.append(f"- {cid}: {rep['error']}")
            continue
        for r in rep.get("rows") or []:
            grades = ", ".join(f"{g.get('grade')} {g.get('outcome')}" for g in r.get("grades", []))
            flips = r.get("flips_at")
            rows.append(
                [
                    cid,
                    f"`{r.get('check', '?')}`",
                    r.get("kind", ""),
                    r.get("perturbation", ""),
                    r.get("baseline", ""),
                    grades,
                    f"flips at {flips}" if flips is not None else "**cannot fail here**",
                    r.get("note", ""),
                ]
            )
        if rep.get("note"):
            notes.append(f"- {cid}: {rep['note']}")
    header = ["claim", "check", "kind", "perturbation", "baseline", "grades", "result", "note"]
    lines = [_md_table(header, rows)] if rows else ["No power rows recorded."]
    if notes:
        lines += ["", "Claims without rows:", "", *notes]
    lines += ["", f"Regenerate: `{cmd}`, then `radius report`."]
    return "\n".join(lines)


# --------------------------------------------------------------------------- render
def render_claim(
    claim_id: str,
    report: Mapping[str, Any] | None,
    *,
    source: Path | None = None,
    verify_dir: Path = DEFAULT_VERIFY_DIR,
    figures_dir: Path = DEFAULT_FIGURES_DIR,
    out_dir: Path = Path("."),
) -> str:
    """Markdown of one ``results <claim id>`` block.

    With a report: verdict (what it rests on: the bound and empirical checks on real
    data; "implementation verified/BROKEN" from the identities and probes), the checks
    grouped by kind (identity, bound, empirical) with evidence, interval, tolerance,
    outcome and note, every sub-check that did not pass (deciding or not), key numbers
    from ``details``, the command that regenerates it, the
    figure link, and the stamp (data hash, seed, code version) from ``context``.
    Without one: "not run yet" and the command to run.
    """
    cmd_default = f"radius verify --theorem {claim_id}"
    figs = CLAIM_FIGURES.get(claim_id, ())
    if report is None:
        return (
            f"**Verdict: not run yet.** No report for claim {claim_id} in "
            f"`{verify_dir.as_posix()}/`. Run `{cmd_default}`, then `radius report`."
        )
    if "error" in report:
        return (
            f"**Verdict: report unreadable.** {report['error']}. Rerun `{cmd_default}`, "
            "then `radius report`."
        )
    checks = [c for c in report.get("checks") or [] if isinstance(c, Mapping)]
    verdict = report.get("verdict") or (
        "PASS" if checks and all(_passed(c) for c in checks) else "FAIL"
    )
    deciding = [c for c in checks if _decides(c)]
    if not checks:
        summary = "no checks recorded (no evidence)"
    elif deciding:
        counts = {o: sum(_outcome(c) == o for c in deciding) for o in _OUTCOMES}
        summary = f"rests on {len(deciding)} bound/empirical checks on real data: " + ", ".join(
            f"{n} {o}" for o, n in counts.items() if n
        )
    else:
        summary = "no bound or empirical check on real data decides it"
    impl = report.get("implementation")
    impl_text = {"verified": "implementation verified", "BROKEN": "implementation BROKEN"}.get(
        str(impl), ""
    )
    context = report.get("context") or {}
    recon = report.get("reconstruction")
    form = {True: " Reconstruction.", False: " As stated in the paper."}.get(recon, "")
    head = f"**Verdict: {verdict}** ({summary})" + (f"; {impl_text}" if impl_text else "")
    lines = [
        f"{head}.{form}",
        "",
        f"Stamp: {_stamp(context, report.get('seconds'))}.",
    ]
    lines += _checks_by_kind(checks)
    lines += _failing_list(checks)
    keys = _key_numbers(report.get("details"))
    if keys:
        lines += ["", "Key numbers:", ""]
        lines += [f"- `{k}`: {_num(v, 6)}" for k, v in keys]
    where = f" (report: `{source.as_posix()}`)" if source is not None else ""
    lines += ["", f"Regenerate: `{_command(claim_id, context)}`, then `radius report`{where}."]
    if figs:
        lines += ["", "Figure: " + "; ".join(_figure_links(figs, figures_dir, out_dir))]
    return "\n".join(lines)


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


def render_figures(figures_dir: Path = DEFAULT_FIGURES_DIR, *, out_dir: Path = Path(".")) -> str:
    """Markdown of the ``figures`` block: every PNG in ``figures_dir`` and its data files,
    then those of its model subfolders (``radius figures --model recvae`` writes
    ``figures_dir/recvae/``)."""
    pngs = sorted(figures_dir.glob("*.png")) if figures_dir.is_dir() else []
    sub_pngs = sorted(figures_dir.glob("*/*.png")) if figures_dir.is_dir() else []
    if not pngs and not sub_pngs:
        return (
            f"**No figures drawn yet** in `{figures_dir.as_posix()}/`. Run `radius figures all`, "
            "then `radius report`."
        )
    rows = []
    for png in pngs + sub_pngs:
        data = [
            f"[{p.name}]({_rel(p, out_dir)})"
            for p in (png.with_suffix(".csv"), png.with_suffix(".json"))
            if p.is_file()
        ]
        if png.parent == figures_dir:
            command = f"`radius figures {png.stem}`"
        elif png.parent.name in ("multvae", "recvae"):
            command = f"`radius figures {png.stem} --model {png.parent.name}`"
        else:
            command = f"`radius figures {png.stem} --out {png.parent.as_posix()}`"
        rows.append(
            [
                f"[{_rel(png, figures_dir)}]({_rel(png, out_dir)})",
                ", ".join(data) or "—",
                command,
            ]
        )
    return _md_table(["figure", "data", "command"], rows)


def render_blocks(inputs: ReportInputs, *, out_dir: Path = Path(".")) -> dict[str, str]:
    """Content of every block the generator knows, keyed by block key."""
    from radius.verify import CLAIMS

    blocks: dict[str, str] = {}
    for cid in [*CLAIMS, *(c for c in inputs.claims if c not in CLAIMS)]:
        blocks[f"results {cid}"] = render_claim(
            cid,
            inputs.claims.get(cid),
            source=inputs.sources.get(cid),
            verify_dir=inputs.verify_dir,
            figures_dir=inputs.figures_dir,
            out_dir=out_dir,
        )
    blocks["ablation"] = render_ablation(
        inputs.ablations, figures_dir=inputs.figures_dir, out_dir=out_dir
    )
    blocks["figures"] = render_figures(inputs.figures_dir, out_dir=out_dir)
    runs = inputs.verify_dir.parent.parent  # runs/<data>/verify -> runs
    if runs.is_dir():
        for vdir in sorted(runs.glob("*/verify")):
            blocks[f"data {vdir.parent.name}"] = render_data(
                vdir.parent, figures_dir=inputs.figures_dir, out_dir=out_dir
            )
            blocks[f"power {vdir.parent.name}"] = render_power(vdir.parent)
    else:
        blocks[f"power {inputs.verify_dir.parent.name}"] = render_power(inputs.verify_dir.parent)
    return blocks


def render_data(data_dir: Path, *, figures_dir: Path, out_dir: Path = Path(".")) -> str:
    """Markdown of a ``data NAME`` block: every claim's verdict and the ablations of one
    data folder (``runs/NAME``), for datasets beside the default."""
    from radius.verify import CLAIMS

    claims, _ = load_claim_reports(data_dir / "verify")
    rows = []
    for cid in CLAIMS:
        rep = claims.get(cid)
        if rep is None:
            rows.append([cid, "not run yet", "", "", ""])
            continue
        if "error" in rep:
            rows.append([cid, "unreadable", "", "", ""])
            continue
        checks = [c for c in rep.get("checks", []) if isinstance(c, Mapping)]
        deciding = [c for c in checks if _decides(c)]
        counts = {o: sum(_outcome(c) == o for c in deciding) for o in _OUTCOMES}
        basis = ", ".join(f"{n} {o}" for o, n in counts.items() if n) or "none"
        failed = [
            f"`{c.get('name', '?')}` {_label(c)}" + ("" if _decides(c) else f" ({_kind(c)})")
            for c in checks
            if not _passed(c)
        ]
        rows.append(
            [
                cid,
                f"**{rep.get('verdict', '?')}**",
                rep.get("implementation"),
                basis,
                ", ".join(failed) or "-",
            ]
        )
    stamp = ""
    contexts = [r["context"] for r in claims.values() if "context" in r]
    if contexts:
        c = contexts[0]

        def values(key: str) -> str:
            return ", ".join(f"`{v}`" for v in sorted({str(x.get(key)) for x in contexts}))

        stamp = (
            f"\n\nData `{c.get('dataset')}` (hash {values('data_hash')}), seed "
            f"{values('seed').replace('`', '')}, code {values('code_version')}; JSON in "
            f"`{(data_dir / 'verify').as_posix()}/`."
        )
        flags = sorted({" ".join(_config_flags(x.get("base_config"))) for x in contexts})
        if flags != [""]:
            used = ", ".join(f"`{f or 'defaults'}`" for f in flags)
            stamp += f" Models trained with {used}."
        if len({str(x.get("data_hash")) for x in contexts}) > 1:
            stamp += " **The reports come from different data (hashes differ).**"
    table = _md_table(
        ["claim", "verdict", "implementation", "deciding checks", "not passed (all)"], rows
    )
    ablations = load_ablations(data_dir)
    if not ablations:
        return f"{table}{stamp}"
    abl = render_ablation(ablations, figures_dir=figures_dir, out_dir=out_dir, with_figures=False)
    return f"{table}{stamp}\n\n{abl}"


# --------------------------------------------------------------------------- skeleton
SKELETON_INTRO = """# Paper checks

What `radius` verifies of "On the Mechanisms of Collaborative Learning in VAE
Recommenders" (ICLR 2026, arXiv 2511.06781), claim by claim. The paper's full text was
not available; statements marked *reconstruction* are precise versions derived in
`theory.md`, consistent with the paper's summary, not quotations.

Text outside the `radius:begin` / `radius:end` comment markers is written by hand
and kept as is. Text between them is regenerated by `radius report` from
the JSON reports of `radius verify` (`runs/synthetic/verify/`), the ablation JSON
(`runs/synthetic/ablation-multvae.json`) and the figures (`figures/out/`).
"""


def _claim_section(cid: str, info: Mapping[str, Any]) -> str:
    title = info.get("title") or "(title to be written)"
    recon = info.get("reconstruction")
    form = {
        True: "reconstruction (a precise version derived in `theory.md`, not the paper's text)",
        False: "as stated in the paper",
    }.get(recon, "(to be stated)")
    return "\n".join(
        [
            f"## Claim {cid}: {title}",
            "",
            f"- **Statement verified:** {info.get('statement') or '(to be written)'}",
            f"- **Form:** {form}",
            f"- **Method:** {info.get('method') or '(to be written)'}",
            "",
            "### Results",
            "",
            begin_marker(f"results {cid}"),
            end_marker(f"results {cid}"),
            "",
        ]
    )


def skeleton(infos: Mapping[str, Mapping[str, Any]]) -> str:
    """A full ``paper_checks.md`` with empty blocks: one section per claim id of ``infos``."""
    parts = [SKELETON_INTRO]
    parts += [_claim_section(cid, info) for cid, info in infos.items()]
    parts.append(
        "\n".join(
            [
                "## Ablation: clean, masking, masking + PIA",
                "",
                begin_marker("ablation"),
                end_marker("ablation"),
                "",
                "## Figures",
                "",
                begin_marker("figures"),
                end_marker("figures"),
                "",
            ]
        )
    )
    return "\n".join(parts)


# --------------------------------------------------------------------------- generate
@dataclass
class ReportSummary:
    """What ``generate`` did: the file, whether it was created, the blocks it filled."""

    path: Path
    created: bool
    filled: list[str]
    appended: list[str]
    unknown: list[str]
    verdicts: dict[str, str]
    changed: bool


def generate(
    output: str | os.PathLike,
    *,
    verify_dir: str | os.PathLike = DEFAULT_VERIFY_DIR,
    figures_dir: str | os.PathLike = DEFAULT_FIGURES_DIR,
    ablation_dir: str | os.PathLike | None = None,
) -> ReportSummary:
    """Regenerate the blocks of ``output`` (a skeleton first when it does not exist).

    Parameters
    ----------
    output : the markdown file (``paper_checks.md``).
    verify_dir : folder of the claim JSON reports.
    figures_dir : folder of the figures.
    ablation_dir : folder holding ``ablation-*.json``; None means the parent of
        ``verify_dir`` (``runs/synthetic`` for the default).

    Claims of ``radius.verify.CLAIMS`` with no section in an existing file get one
    appended at the end (nothing else outside the blocks changes). The file is
    written atomically, and only when its content changes.
    """
    from radius.verify import CLAIMS

    out = Path(output)
    vdir = Path(verify_dir)
    claims, sources = load_claim_reports(vdir)
    inputs = ReportInputs(
        claims=claims,
        sources=sources,
        ablations=load_ablations(Path(ablation_dir) if ablation_dir is not None else vdir.parent),
        verify_dir=vdir,
        figures_dir=Path(figures_dir),
    )
    created = not out.is_file()
    if created:
        text = skeleton({cid: claim_info(cid, claims.get(cid)) for cid in CLAIMS})
        old = None
    else:
        text = out.read_bytes().decode("utf-8")  # no newline translation: CRLF kept
        old = text
    present = {b.key for b in parse_blocks(text)}
    missing = [cid for cid in CLAIMS if f"results {cid}" not in present]
    if missing:
        text = (
            text.rstrip("\n")
            + "\n\n"
            + "\n".join(_claim_section(cid, claim_info(cid, claims.get(cid))) for cid in missing)
        )
    blocks = render_blocks(inputs, out_dir=out.parent)
    keys = [b.key for b in parse_blocks(text)]
    new = replace_blocks(text, blocks)
    changed = new != old
    if changed:
        atomic_write_text(out, new)
    verdicts = {}
    for cid in CLAIMS:
        rep = claims.get(cid)
        verdicts[cid] = (
            "not run yet"
            if rep is None
            else "unreadable"
            if "error" in rep
            else str(rep.get("verdict", "?"))
        )
    return ReportSummary(
        path=out,
        created=created,
        filled=[k for k in keys if k in blocks],
        appended=missing if not created else [],
        unknown=[k for k in keys if k not in blocks],
        verdicts=verdicts,
        changed=changed,
    )


def run_report(args: argparse.Namespace) -> int:
    """``radius report``: regenerate the results blocks, print one line per claim, return 0."""
    verify_dir = getattr(args, "verify_dir", None) or DEFAULT_VERIFY_DIR
    output = getattr(args, "output", None) or "paper_checks.md"
    figures_dir = getattr(args, "figures_dir", None) or DEFAULT_FIGURES_DIR
    ablation_dir = getattr(args, "ablation_dir", None)
    if not Path(verify_dir).is_dir():
        print(f"note: no verify reports folder {verify_dir}/; every claim renders 'not run yet'")
    summ = generate(
        output, verify_dir=verify_dir, figures_dir=figures_dir, ablation_dir=ablation_dir
    )
    width = max(len(c) for c in summ.verdicts) if summ.verdicts else 5
    print("claim".ljust(width) + "  verdict")
    print("-" * width + "  -------")
    for cid, verdict in summ.verdicts.items():
        print(cid.ljust(width) + "  " + verdict)
    action = "created (skeleton)" if summ.created else "updated" if summ.changed else "unchanged"
    print(f"\n{summ.path}: {action}; {len(summ.filled)} block(s) regenerated")
    if summ.appended:
        print(f"appended sections for claims {', '.join(summ.appended)}")
    if summ.unknown:
        print(f"left as they are (unknown blocks): {', '.join(summ.unknown)}")
    return 0
