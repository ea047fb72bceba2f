"""Claim registry: one module per claim, each exposing ``run(ctx) -> ClaimResult``.

``CLAIMS`` maps the ids accepted by ``radius verify --theorem`` to module names under
``radius.verify``. Modules are imported lazily so a missing optional piece in one
claim never breaks another.
"""

from __future__ import annotations

import difflib
import importlib
from types import ModuleType

from radius.errors import RadiusError
from radius.verify.base import Check, ClaimResult, VerifyOptions

__all__ = [
    "CLAIMS",
    "Check",
    "ClaimResult",
    "VerifyOptions",
    "claim_module",
    "resolve_ids",
    "run",
    "run_all",
    "format_table",
]


def __getattr__(name: str):
    """``run`` / ``run_all`` / ``format_table``: the public API (``radius.verify.api``),
    imported on first use."""
    if name in ("run", "run_all", "format_table"):
        return getattr(importlib.import_module(f"{__name__}.api"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


CLAIMS: dict[str, str] = {
    "2.3": "t2_3",
    "2.4": "l2_4",
    "2.5": "t2_5",
    "2.6": "t2_6",
    "beta-kl": "beta_kl",
    "3.1": "p3_1",
    "3.2": "p3_2",
}

ALIASES: dict[str, str] = {
    "t2.3": "2.3",
    "l2.4": "2.4",
    "t2.5": "2.5",
    "t2.6": "2.6",
    "p3.1": "3.1",
    "p3.2": "3.2",
    "betakl": "beta-kl",
    "beta_kl": "beta-kl",
    "beta": "beta-kl",
}


def resolve_ids(theorem: str) -> list[str]:
    """Claim ids for a ``--theorem`` value (``all`` or comma-separated ids).

    Unknown ids raise ``RadiusError`` with close-match suggestions.
    """
    out: list[str] = []
    for raw in theorem.split(","):
        name = raw.strip().lower()
        if name == "all":
            out.extend(CLAIMS)
            continue
        name = ALIASES.get(name, name)
        if name not in CLAIMS:
            choices = [*CLAIMS, "all"]
            close = difflib.get_close_matches(name, choices, n=3, cutoff=0.4)
            hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
            raise RadiusError(
                f"unknown theorem {raw.strip()!r} (choose from {', '.join(choices)}){hint}"
            )
        out.append(name)
    return list(dict.fromkeys(out))


def claim_module(claim_id: str) -> ModuleType:
    """Import the module of one claim id."""
    return importlib.import_module(f"radius.verify.{CLAIMS[claim_id]}")
