"""Plain-text rendering of claim results: one renderer for the CLI and the Python API.

Each claim prints its checks grouped by **role** (statement, assumptions, mechanism,
implementation; ``radius.verify.base``), every note wrapped (never cut), then four lines
that keep apart what the verdict rests on and what it does not:

.. code-block:: text

    2.3 verdict: VACUOUS   (statement: 1 PASS, 1 VACUOUS, 1 HOLDS)
        assumptions: met       mechanism: 2 HOLDS, 1 INCONCLUSIVE
        implementation: verified
        warning: the 'pia' model: training hit its epoch cap ...

The legend (``LEGEND``) says what each word means; the CLI prints it once under the
summary table.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from radius.verify.base import ROLE_TITLES, ROLES, ClaimResult, PowerRow

__all__ = [
    "LEGEND",
    "EXIT_LEGEND",
    "claim_block",
    "summary_table",
    "format_table",
    "power_table",
    "verdict_line",
    "text_table",
]

NOTE_WIDTH = 60  # characters per line of the wrapped note column

LEGEND = """\
How to read it:
  statement       checks that follow from the claim as proved: only these decide the verdict
                  (PASS / FAIL / INCONCLUSIVE / VACUOUS; HOLDS / CONTRADICTED for intervals)
  assumptions     premises the proof needs, checked on this model and data: MET / NOT MET;
                  "none" = the claim states none that can be checked here
  mechanism       the paper's informal consequences in trained models, with intervals over
                  training seeds and users: HOLDS / CONTRADICTED / INCONCLUSIVE / NOT OBSERVED
                  (absent at the stated minimum size); never decides the verdict
  implementation  identities and constructed probes: "verified" = all pass (no evidence about
                  the model), "BROKEN" = one fails (a bug in radius: the claim FAILs),
                  "incomplete" = one unresolved, "none" = the claim has no such checks
  VACUOUS         the statement's premise holds for no real case (e.g. no pair inside T2.3's
                  sharing radius): more data would not change it; INCONCLUSIVE: it could
  weak evidence   the statement holds but no realistic model could violate it (an identity
                  of the loss, or no perturbation in the power table flips it)"""

EXIT_LEGEND = "exit codes: 0 PASS, 1 FAIL, 2 bad input, 3 INCONCLUSIVE, 4 VACUOUS (worst claim)"


def _short(v: Any) -> str:
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            return str(v)
        return f"{v:.4g}"
    return "" if v is None else str(v)


def text_table(
    rows: Sequence[Sequence[Any]],
    header: Sequence[str],
    *,
    wrap: Mapping[int, int] | None = None,
) -> str:
    """A plain-text table; the columns named in ``wrap`` (index -> width) are wrapped
    at word boundaries over as many lines as they need (nothing is cut)."""
    wrap = dict(wrap or {})
    cells: list[list[list[str]]] = []
    for r in rows:
        row = []
        for i, v in enumerate(r):
            text = v if isinstance(v, str) else _short(v)
            if i in wrap and text:
                row.append(textwrap.wrap(text, wrap[i], break_on_hyphens=False) or [""])
            else:
                row.append([text])
        cells.append(row)
    widths = [
        max([len(h), *(len(line) for r in cells for line in r[i])]) for i, h in enumerate(header)
    ]
    out = ["  ".join(h.ljust(w) for h, w in zip(header, widths)).rstrip()]
    out.append("  ".join("-" * w for w in widths))
    for r in cells:
        height = max(len(c) for c in r)
        for k in range(height):
            parts = [(c[k] if k < len(c) else "").ljust(w) for c, w in zip(r, widths)]
            out.append("  ".join(parts).rstrip())
    return "\n".join(out)


def _counts(labels: Sequence[str]) -> str:
    uniq = list(dict.fromkeys(labels))
    return ", ".join(f"{labels.count(u)} {u}" for u in uniq)


def verdict_line(res: ClaimResult) -> str:
    """``verdict PASS; holds; weak evidence (statement: 2 PASS)`` in one line."""
    st = res.by_role("statement")
    basis = f"statement: {_counts([c.label for c in st])}" if st else "no statement check ran"
    return f"verdict {res.verdict_text} ({basis})"


def _status_lines(res: ClaimResult, indent: str) -> list[str]:
    out = [
        f"{indent}assumptions: {res.assumptions}    mechanism: {res.mechanism}    "
        f"implementation: {res.implementation}"
    ]
    for w in res.weak_evidence:
        out += textwrap.wrap(
            f"weak evidence: {w}", 100, initial_indent=indent, subsequent_indent=indent + "  "
        )
    for w in res.warnings:
        out += textwrap.wrap(
            f"warning: {w}", 100, initial_indent=indent, subsequent_indent=indent + "  "
        )
    not_run = res.details.get("not_run") if isinstance(res.details, Mapping) else None
    if not_run:
        out += textwrap.wrap(
            f"not run: {not_run}", 100, initial_indent=indent, subsequent_indent=indent + "  "
        )
    for part in (
        (res.details.get("parts_not_run") or []) if isinstance(res.details, Mapping) else []
    ):
        out += textwrap.wrap(
            f"not run: {part}", 100, initial_indent=indent, subsequent_indent=indent + "  "
        )
    return out


def claim_block(res: ClaimResult, *, note_width: int = NOTE_WIDTH) -> str:
    """One claim: its checks grouped by role (notes wrapped), then the verdict line and
    the assumptions / mechanism / implementation / warnings lines."""
    lines = [f"{res.claim}  {res.title}"]
    for role in ROLES:
        checks = res.by_role(role)
        if not checks:
            continue
        lines.append(f"  {ROLE_TITLES[role]}:")
        rows = [
            [
                c.label,
                c.name,
                _short(c.measured),
                str(c.interval) if c.interval is not None else "",
                _short(c.bound),
                c.n,
                c.note,
            ]
            for c in checks
        ]
        table = text_table(
            rows,
            ["outcome", "check", "measured", "interval", "bound", "n", "note"],
            wrap={6: note_width},
        )
        lines += ["    " + ln for ln in table.splitlines()]
    lines.append(f"  {res.claim} {verdict_line(res)}")
    lines += _status_lines(res, "    ")
    return "\n".join(lines)


def summary_table(results: Mapping[str, ClaimResult]) -> str:
    """One row per claim: verdict, what it rests on, assumptions, mechanism, implementation."""
    rows = []
    for cid, res in results.items():
        st = res.by_role("statement")
        rows.append(
            [
                cid,
                res.verdict_text,
                _counts([c.label for c in st]) if st else "nothing ran",
                res.assumptions,
                res.mechanism,
                res.implementation,
            ]
        )
    return text_table(
        rows,
        ["claim", "verdict", "statement checks", "assumptions", "mechanism", "implementation"],
        wrap={1: 44, 4: 30},
    )


def format_table(results: Mapping[str, ClaimResult], *, legend: bool = True) -> str:
    """Every claim's block, the summary table and (``legend``) how to read them."""
    parts = [claim_block(r) for r in results.values()]
    parts.append(summary_table(results))
    if legend:
        parts.append(LEGEND)
    return "\n\n".join(parts)


def power_table(rows: Sequence[tuple[str, PowerRow]]) -> str:
    """Power rows ``(claim id, PowerRow)``: the grades with their outcomes and the
    mildest grade that flips the check ("cannot fail here" when none does)."""
    body = [
        [
            cid,
            r.check,
            r.kind,
            r.perturbation,
            r.baseline,
            ", ".join(f"{g['grade']} {g['outcome']}" for g in r.grades),
            r.label,
        ]
        for cid, r in rows
    ]
    return text_table(
        body,
        ["claim", "check", "kind", "perturbation", "baseline", "grades", "flips"],
        wrap={3: 36, 5: 44},
    )
