"""What the report reads: claim JSON reports, ablation JSON, power tables, claim metadata."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from radius.report.format import DEFAULT_FIGURES_DIR, DEFAULT_VERIFY_DIR


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
