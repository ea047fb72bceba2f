"""Marker lines in ``paper_checks.md``: finding, checking and replacing generated blocks."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from radius.errors import RadiusError

# A marker counts only on a line of its own (a mention inside prose or code does not).
_BEGIN_RE = re.compile(r"^[ \t]*<!-- radius:begin (?P<key>[^<>\n]*?) -->[ \t]*$", re.MULTILINE)


_END_RE = re.compile(r"^[ \t]*<!-- radius:end (?P<key>[^<>\n]*?) -->[ \t]*$", re.MULTILINE)


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
