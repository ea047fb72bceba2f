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
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from radius.io import atomic_write_text
from radius.report.ablation import render_ablation  # noqa: F401
from radius.report.claims import render_claim, render_power  # noqa: F401
from radius.report.format import (  # noqa: F401
    _OUTCOMES,
    DEFAULT_FIGURES_DIR,
    DEFAULT_VERIFY_DIR,
    _config_flags,
    _decides,
    _kind,
    _label,
    _md_table,
    _outcome,
    _passed,
    _rel,
    _role,
)
from radius.report.inputs import (  # noqa: F401
    ReportInputs,
    claim_info,
    load_ablations,
    load_claim_reports,
    load_power,
)
from radius.report.markers import (  # noqa: F401
    Block,
    begin_marker,
    check_structure,
    end_marker,
    parse_blocks,
    replace_blocks,
)

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
            rows.append([cid, "not run yet", "", "", "", "", ""])
            continue
        if "error" in rep:
            rows.append([cid, "unreadable", "", "", "", "", ""])
            continue
        checks = [c for c in rep.get("checks", []) if isinstance(c, Mapping)]
        deciding = [c for c in checks if _decides(c)]
        labels = [_label(c) for c in deciding]
        basis = ", ".join(f"{labels.count(u)} {u}" for u in dict.fromkeys(labels)) or "none"
        failed = [
            f"`{c.get('name', '?')}` {_label(c)}" + ("" if _decides(c) else f" ({_role(c)})")
            for c in checks
            if not _passed(c)
        ]
        rows.append(
            [
                cid,
                f"**{rep.get('verdict_text') or rep.get('verdict', '?')}**",
                basis,
                rep.get("assumptions", "—"),
                rep.get("mechanism", "—"),
                rep.get("implementation"),
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
        [
            "claim",
            "verdict",
            "statement checks",
            "assumptions",
            "mechanism",
            "implementation",
            "not passed (all)",
        ],
        rows,
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
