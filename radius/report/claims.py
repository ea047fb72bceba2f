"""The blocks of one claim (``results <id>``) and of a power table (``power <data>``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from radius.report.format import (
    CLAIM_FIGURES,
    DEFAULT_FIGURES_DIR,
    DEFAULT_VERIFY_DIR,
    _checks_by_role,
    _command,
    _config_flags,
    _decides,
    _failing_list,
    _figure_links,
    _key_numbers,
    _label,
    _md_table,
    _num,
    _passed,
    _stamp,
)
from radius.report.inputs import load_claim_reports, load_power


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
    verdict = (
        report.get("verdict_text")
        or report.get("verdict")
        or ("PASS" if checks and all(_passed(c) for c in checks) else "FAIL")
    )
    deciding = [c for c in checks if _decides(c)]
    if not checks:
        summary = "no checks recorded (no evidence)"
    elif deciding:
        labels = [_label(c) for c in deciding]
        uniq = list(dict.fromkeys(labels))
        summary = f"rests on {len(deciding)} statement checks: " + ", ".join(
            f"{labels.count(u)} {u}" for u in uniq
        )
    else:
        summary = "no statement check ran: nothing decides it"
    context = report.get("context") or {}
    recon = report.get("reconstruction")
    form = {True: " Reconstruction.", False: " As stated in the paper."}.get(recon, "")
    head = f"**Verdict: {verdict}** ({summary})."
    lines = [f"{head}{form}", ""]
    status = []
    for key, word in (
        ("assumptions", "Assumptions"),
        ("mechanism", "Mechanism"),
        ("implementation", "Implementation"),
    ):
        val = report.get(key)  # absent from reports written before roles existed
        if val is not None:
            status.append(f"- {word}: **{val}**")
    lines += status
    for w in report.get("weak_evidence") or []:
        lines.append(f"- Weak evidence: {w}")
    for w in report.get("warnings") or []:
        lines.append(f"- Warning: {w}")
    details = report.get("details") if isinstance(report.get("details"), Mapping) else {}
    if details.get("not_run"):
        lines.append(f"- Not run: {details['not_run']}")
    for part in details.get("parts_not_run") or []:
        lines.append(f"- Not run: {part}")
    lines += ["", f"Stamp: {_stamp(context, report.get('seconds'))}."]
    lines += _checks_by_role(checks)
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
