"""Readers of public recommendation data sets, and ``prepare`` / ``load_any``.

Formats (``FORMATS``)::

    ml-100k   u.data        user \\t item \\t rating \\t timestamp
    ml-1m     ratings.dat   user::item::rating::timestamp
    ml-20m    ratings.csv   userId,movieId,rating,timestamp (with that header)
    netflix   combined_data_*.txt or a folder of mv_*.txt: "MOVIEID:" header lines,
              each followed by "user,rating,date" lines
    msd       train_triplets.txt   user \\t song \\t play_count  (count -> ratings)
    csv       user,item[,rating[,...]]; header optional; delimiter sniffed among
              ``, \\t ; |`` and space; fields may be quoted (without the delimiter inside)
    recbole   RecBole atomic .inter: typed header "user_id:token\\titem_id:token\\t
              rating:float\\t...", columns located by name (rating optional)

Parsing is vectorised: a file is read in blocks of whole lines (16 MiB), field
boundaries come from the positions of the delimiter and newline bytes, integer and
plain-decimal fields are decoded with a few whole-array operations per character
column, and only unusual numbers (signs, exponents, spaces) fall back to numpy's
string conversion. String ids (csv, recbole, msd) are mapped to integer codes
(``Interactions.user_labels`` / ``item_labels`` keep the raw ids). A 20M-row file in
the ML-20M layout takes about 15 s of CPU to parse (1.7 GB peak with the split).

Every bad input is a :class:`radius.errors.DataError` naming the file, the line
number and the value: a line with the wrong number of fields, a non-numeric or
non-finite rating, a bad id, an empty file, a missing file. Blank lines are skipped.

``DEFAULT_SPLIT`` follows Liang et al. (2018), *Variational Autoencoders for
Collaborative Filtering*, Sec. 4.1: ML-20M keeps ratings > 3.5 and users with >= 5
ratings (10k validation / 10k test users); Netflix keeps ratings >= 4 and users
with >= 5 ratings (40k / 40k); MSD keeps every play count, users with >= 20 songs
and songs with >= 200 users (50k / 50k). The fixed held-out sizes apply only when
they do not exceed 10% of the users left after filtering; otherwise 10% + 10% is
used (``SplitParams.heldout_fallback``; the manifest's ``counts.heldout_rule`` says
which applied).
"""

from __future__ import annotations

import difflib
import hashlib
import logging
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from radius.data.dataset import Dataset
from radius.data.split import (
    Interactions,
    SplitParams,
    resolve_split_params,
    split_interactions,
)
from radius.errors import DataError
from radius.io import file_sha256

__all__ = [
    "FORMATS",
    "DEFAULT_SPLIT",
    "read_interactions",
    "guess_format",
    "source_files",
    "default_params",
    "defaults_name",
    "prepare",
    "load_any",
    "defaults_applied",
    "announce_defaults",
]

log = logging.getLogger(__name__)

FORMATS: tuple[str, ...] = ("ml-100k", "ml-1m", "ml-20m", "netflix", "msd", "csv", "recbole")

_FULL_SCALE = {"heldout_fallback": True}
DEFAULT_SPLIT: dict[str, SplitParams] = {
    "ml-100k": SplitParams(threshold=3.5, inclusive=False, min_user=5),
    "ml-1m": SplitParams(threshold=3.5, inclusive=False, min_user=5),
    "ml-20m": SplitParams(
        threshold=3.5, inclusive=False, min_user=5, n_heldout=10_000, **_FULL_SCALE
    ),
    "netflix": SplitParams(
        threshold=4.0, inclusive=True, min_user=5, n_heldout=40_000, **_FULL_SCALE
    ),
    "msd": SplitParams(threshold=None, min_user=20, min_item=200, n_heldout=50_000, **_FULL_SCALE),
    "csv": SplitParams(threshold=None, min_user=5),
    "recbole": SplitParams(threshold=None, min_user=5),
}

# RecBole atomic files of these data sets get that data set's default split.
_RECBOLE_DATASETS = {"ml-100k", "ml-1m", "ml-20m", "netflix"}

_BLOCK_SIZE = 1 << 24  # bytes read at a time (whole lines)
_NL, _CR, _SPACE, _QUOTE, _DOT, _COMMA, _COLON = 10, 13, 32, 34, 46, 44, 58
_UNIT_SEP = b"\x1f"  # stands in for a multi-byte delimiter ("::")


# ------------------------------------------------------------------ blocks and lines
def _iter_blocks(path: Path) -> Iterator[tuple[bytes, int]]:
    """Yield ``(block, first_line_number)``; each block is whole lines ending in ``\\n``."""
    line0 = 1
    rest = b""
    with open(path, "rb") as f:
        while True:
            chunk = f.read(_BLOCK_SIZE)
            if not chunk:
                break
            buf = rest + chunk if rest else chunk
            cut = buf.rfind(b"\n") + 1
            if cut == 0:
                rest = buf
                continue
            block, rest = buf[:cut], buf[cut:]
            yield block, line0
            line0 += block.count(b"\n")
    if rest:
        yield rest + b"\n", line0


@dataclass
class _Lines:
    """The non-blank lines of a block: byte ranges ``[start, end)``, file and line number.

    A block is one file's lines, or several small files concatenated (Netflix mv_*.txt).
    """

    files: list[Path]
    buf: np.ndarray  # (B,) uint8 view of the block
    start: np.ndarray  # (n,) int64
    end: np.ndarray  # (n,) int64, excludes "\n" and a "\r" before it
    lineno: np.ndarray  # (n,) 1-based line numbers in their file
    file_of: np.ndarray  # (n,) index into files
    blank: int  # blank lines skipped
    shown_delim: bytes = b""  # multi-byte delimiter replaced by _UNIT_SEP (for messages)

    def where(self, k: int) -> str:
        return f"{self.files[int(self.file_of[k])]}:{int(self.lineno[k])}"

    def __len__(self) -> int:
        return len(self.start)

    def text(self, k: int) -> str:
        raw = self.buf[self.start[k] : self.end[k]].tobytes()
        if self.shown_delim:
            raw = raw.replace(_UNIT_SEP, self.shown_delim)
        return raw.decode("utf-8", "replace")

    def fail(self, k: int, msg: str) -> NoReturn:
        raise DataError(f"{self.where(k)}: {msg}: {self.text(k)!r}")

    def fail_value(self, k: int, what: str, s: int, e: int) -> NoReturn:
        value = self.buf[s:e].tobytes()
        if self.shown_delim:
            value = value.replace(_UNIT_SEP, self.shown_delim)
        raise DataError(
            f"{self.where(k)}: {what}: {value.decode('utf-8', 'replace')!r} (line {self.text(k)!r})"
        )


def _lines(
    files: list[Path],
    block: bytes,
    line0: int = 1,
    *,
    offsets: np.ndarray | None = None,
    shown_delim: bytes = b"",
) -> _Lines:
    """Lines of ``block``: of ``files[0]`` from line ``line0``, or of several files whose
    contents start at byte ``offsets`` (each ending with a newline)."""
    buf = np.frombuffer(block, dtype=np.uint8)
    nl = np.flatnonzero(buf == _NL).astype(np.int64)  # the block ends with "\n"
    start = np.concatenate(([0], nl[:-1] + 1)).astype(np.int64)
    end = nl.copy()
    has = end > start
    cr = np.zeros(len(end), dtype=bool)
    cr[has] = buf[end[has] - 1] == _CR
    end[cr] -= 1
    keep = end > start
    idx = np.flatnonzero(keep)  # index of each kept line among all lines of the block
    if offsets is None:
        file_of = np.zeros(len(idx), dtype=np.int64)
        lineno = line0 + idx
    else:
        first_line = np.searchsorted(nl, offsets)  # lines before each file's first byte
        file_of = np.searchsorted(offsets, start[keep], side="right") - 1
        lineno = idx - first_line[file_of] + 1
    return _Lines(
        files=files,
        buf=buf,
        start=start[keep],
        end=end[keep],
        lineno=lineno,
        file_of=file_of,
        blank=int(len(keep) - keep.sum()),
        shown_delim=shown_delim,
    )


def _subset(lines: _Lines, idx: np.ndarray | slice) -> _Lines:
    """The lines ``idx`` of a block (row k of the result is line ``idx[k]``)."""
    return replace(
        lines,
        start=lines.start[idx],
        end=lines.end[idx],
        lineno=lines.lineno[idx],
        file_of=lines.file_of[idx],
    )


def _delimiter_count(lines: _Lines, delim: int) -> tuple[np.ndarray, np.ndarray]:
    """Positions of ``delim`` inside the lines, and how many each line holds."""
    d = np.flatnonzero(lines.buf == delim).astype(np.int64)
    owner = np.searchsorted(lines.end, d, side="right")  # line holding each delimiter
    inside = owner < len(lines)
    inside[inside] = d[inside] >= lines.start[owner[inside]]
    d, owner = d[inside], owner[inside]
    return d, np.bincount(owner, minlength=len(lines))


def _split_fields(lines: _Lines, delim: int, k: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Field boundaries ``(starts, ends)``, each (n, k); every line must have k fields."""
    d, count = _delimiter_count(lines, delim)
    bad = np.flatnonzero(count != k - 1)
    if len(bad):
        j = int(bad[0])
        lines.fail(j, f"expected {k} fields separated by {name}, found {int(count[j]) + 1}")
    dd = d.reshape(len(lines), k - 1)
    starts = np.column_stack([lines.start, dd + 1])
    ends = np.column_stack([dd, lines.end])
    return starts, ends


def _strip(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Trim spaces, then one pair of surrounding double quotes (generic CSV)."""
    s, e = s.copy(), e.copy()
    last = len(buf) - 1
    for _ in range(64):
        m = (s < e) & (buf[np.minimum(s, last)] == _SPACE)
        if not m.any():
            break
        s[m] += 1
    for _ in range(64):
        m = (e > s) & (buf[np.maximum(e - 1, 0)] == _SPACE)
        if not m.any():
            break
        e[m] -= 1
    q = (e - s >= 2) & (buf[np.minimum(s, last)] == _QUOTE) & (buf[np.maximum(e - 1, 0)] == _QUOTE)
    s[q] += 1
    e[q] -= 1
    return s, e


# ------------------------------------------------------------------ numbers and tokens
def _parse_uint(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Decimal digits -> int64 by Horner's rule over character columns; (values, bad)."""
    n = len(s)
    length = e - s
    v = np.zeros(n, dtype=np.int64)
    bad = (length == 0) | (length > 18)
    width = int(min(length.max(initial=0), 18))
    last = len(buf) - 1
    for j in range(width):
        m = j < length
        c = buf[np.minimum(s + j, last)].astype(np.int64) - 48
        bad |= m & ((c < 0) | (c > 9))
        v = np.where(m, v * 10 + c, v)
    return v, bad


def _parse_decimal(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Plain decimals ``ddd[.ddd]`` -> float64 (correctly rounded); (values, not_plain).

    With at most 15 digits the integer ``v`` of all digits and ``10**f`` (f digits after
    the point) are exact doubles, so ``v / 10**f`` is the correctly rounded value, the
    same double ``float(text)`` gives.
    """
    n = len(s)
    length = e - s
    v = np.zeros(n, dtype=np.int64)
    n_dig = np.zeros(n, dtype=np.int64)
    dot = np.full(n, -1, dtype=np.int64)
    bad = (length == 0) | (length > 16)
    width = int(min(length.max(initial=0), 16))
    last = len(buf) - 1
    for j in range(width):
        m = j < length
        ch = buf[np.minimum(s + j, last)].astype(np.int64)
        is_dot = m & (ch == _DOT)
        bad |= is_dot & (dot >= 0)
        dot = np.where(is_dot, j, dot)
        dig = m & ~is_dot
        c = ch - 48
        bad |= dig & ((c < 0) | (c > 9))
        v = np.where(dig, v * 10 + c, v)
        n_dig += dig
    bad |= (n_dig == 0) | (n_dig > 15)
    frac = np.where(dot >= 0, length - 1 - dot, 0)
    return v / 10.0**frac, bad


def _tokens(buf: np.ndarray, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Fields as a fixed-width bytes array (n,) ``S{w}``."""
    length = e - s
    width = int(length.max(initial=0))
    if width == 0:
        return np.zeros(len(s), dtype="S1")
    if width > 64:  # a few long fields: avoid an (n, width) index matrix
        return np.array([buf[a:b].tobytes() for a, b in zip(s.tolist(), e.tolist())], dtype=bytes)
    j = np.arange(width)
    idx = np.minimum(s[:, None] + j[None, :], len(buf) - 1)  # (n, w)
    mat = np.where(j[None, :] < length[:, None], buf[idx], 0).astype(np.uint8)
    return np.ascontiguousarray(mat).view(f"S{width}").ravel()


def _ratings(lines: _Lines, s: np.ndarray, e: np.ndarray) -> np.ndarray:
    """Ratings (n,) float64; a non-numeric or non-finite value is a DataError."""
    r, odd = _parse_decimal(lines.buf, s, e)
    if odd.any():  # signs, exponents, spaces...: numpy's own conversion, one by one on error
        k_odd = np.flatnonzero(odd)
        toks = _tokens(lines.buf, s[k_odd], e[k_odd])
        try:
            r[k_odd] = toks.astype(np.float64)
        except ValueError:
            for k in k_odd.tolist():
                try:
                    float(lines.buf[s[k] : e[k]].tobytes())
                except ValueError:
                    lines.fail_value(k, "rating is not a number", int(s[k]), int(e[k]))
    nonfinite = np.flatnonzero(~np.isfinite(r))
    if len(nonfinite):
        k = int(nonfinite[0])
        lines.fail_value(k, "rating is not a finite number", int(s[k]), int(e[k]))
    return r


def _int_ids(lines: _Lines, s: np.ndarray, e: np.ndarray, what: str) -> np.ndarray:
    v, bad = _parse_uint(lines.buf, s, e)
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        lines.fail_value(k, f"{what} id is not a non-negative integer", int(s[k]), int(e[k]))
    return v


class _Vocab:
    """Maps string ids to codes 0, 1, ...: new ids of a block get the next codes, in the
    block's sorted order (deterministic for a given file and block size)."""

    def __init__(self) -> None:
        self.index: dict[bytes, int] = {}

    def codes(self, lines: _Lines, s: np.ndarray, e: np.ndarray, what: str) -> np.ndarray:
        empty = np.flatnonzero(e <= s)
        if len(empty):
            k = int(empty[0])
            lines.fail_value(k, f"empty {what} id", int(s[k]), int(e[k]))
        uniq, inv = np.unique(_tokens(lines.buf, s, e), return_inverse=True)
        index = self.index
        code = np.fromiter(
            (index.setdefault(t, len(index)) for t in uniq.tolist()), np.int64, len(uniq)
        )
        return code[inv.ravel()]

    def labels(self) -> np.ndarray:
        return np.array([t.decode("utf-8", "replace") for t in self.index], dtype=str)


# ------------------------------------------------------------------ delimited formats
@dataclass(frozen=True)
class _Layout:
    """How to read one delimited text format."""

    delim: bytes
    n_fields: int
    user_col: int
    item_col: int
    rating_col: int | None
    int_ids: bool  # ids must be integers (MovieLens); else string tokens
    header: bool  # the first line is a header
    strip: bool = False  # trim spaces and quotes around fields (generic CSV)

    @property
    def name(self) -> str:
        return {"\t": "tabs", ",": "commas", "::": "'::'", " ": "spaces"}.get(
            self.delim.decode(), repr(self.delim.decode())
        )


class _Collector:
    """Accumulates parsed columns of one or more files."""

    def __init__(self, int_ids: bool) -> None:
        self.int_ids = int_ids
        self.users: list[np.ndarray] = []
        self.items: list[np.ndarray] = []
        self.ratings: list[np.ndarray] = []
        self.has_ratings = True
        self.uv, self.iv = _Vocab(), _Vocab()
        self.blank = 0
        self.header_lines = 0

    def ids(self, lines: _Lines, s: np.ndarray, e: np.ndarray, what: str) -> np.ndarray:
        if self.int_ids:
            return _int_ids(lines, s, e, what)
        return (self.uv if what == "user" else self.iv).codes(lines, s, e, what)

    def finish(self, source: dict, where: Path) -> Interactions:
        if not self.users or sum(len(u) for u in self.users) == 0:
            what = "only a header and blank lines" if self.header_lines else "only blank lines"
            raise DataError(f"{where}: no interactions ({what})")
        users = np.concatenate(self.users)
        items = np.concatenate(self.items)
        ratings = np.concatenate(self.ratings) if self.has_ratings else None
        stats = {"rows_read": int(len(users)), "blank_lines_skipped": int(self.blank)}
        return Interactions(
            users,
            items,
            ratings,
            source=source,
            stats=stats,
            user_labels=None if self.int_ids else self.uv.labels(),
            item_labels=None if self.int_ids else self.iv.labels(),
        )


def _read_delimited(path: Path, layout: _Layout, out: _Collector) -> None:
    multi = len(layout.delim) > 1
    delim = _UNIT_SEP[0] if multi else layout.delim[0]
    header_pending = layout.header
    for block, line0 in _iter_blocks(path):
        if multi:
            block = block.replace(layout.delim, _UNIT_SEP)
        lines = _lines([path], block, line0, shown_delim=layout.delim if multi else b"")
        out.blank += lines.blank
        if header_pending and len(lines):
            header_pending = False
            first = lines.buf[lines.start[0]]
            if not (layout.int_ids and 48 <= first <= 57):  # ML-20M without its header
                lines = _subset(lines, slice(1, None))
                out.header_lines += 1
        if len(lines) == 0:
            continue
        starts, ends = _split_fields(lines, delim, layout.n_fields, layout.name)
        if layout.strip:
            for c in range(layout.n_fields):
                starts[:, c], ends[:, c] = _strip(lines.buf, starts[:, c], ends[:, c])
        uc, ic, rc = layout.user_col, layout.item_col, layout.rating_col
        out.users.append(out.ids(lines, starts[:, uc], ends[:, uc], "user"))
        out.items.append(out.ids(lines, starts[:, ic], ends[:, ic], "item"))
        if rc is None:
            out.has_ratings = False
        else:
            out.ratings.append(_ratings(lines, starts[:, rc], ends[:, rc]))


def _netflix_block(lines: _Lines, movie: int | None, out: _Collector) -> int | None:
    """Parse "MOVIEID:" lines and the "user,rating,date" lines below them.

    ``movie`` is the movie open at the end of the previous block of the same file
    (None at a file's start); returns the movie open at the end of this block.
    """
    buf = lines.buf
    is_header = buf[lines.end - 1] == _COLON
    commas, count = _delimiter_count(lines, _COMMA)
    bad = np.flatnonzero(np.where(is_header, count != 0, count != 2))
    if len(bad):
        j = int(bad[0])
        if is_header[j]:
            lines.fail(j, "expected a movie header 'MOVIEID:'")
        lines.fail(j, f"expected 3 fields 'user,rating,date', found {int(count[j]) + 1}")
    header = np.flatnonzero(is_header)
    heads = _subset(lines, header)
    movie_ids = _int_ids(heads, heads.start, heads.end - 1, "movie")
    data = np.flatnonzero(~is_header)
    if len(data):
        owner = np.searchsorted(header, data) - 1  # last header above each data line
        orphan = (owner < 0) if movie is None else np.zeros(len(data), dtype=bool)
        # in a block of several files, a header only opens a movie for its own file
        if len(header):
            orphan |= (owner >= 0) & (
                lines.file_of[header[np.maximum(owner, 0)]] != lines.file_of[data]
            )
        if orphan.any():
            lines.fail(int(data[np.argmax(orphan)]), "rating line before any 'MOVIEID:' header")
        prev = -1 if movie is None else movie
        items = np.full(len(data), prev, dtype=np.int64)
        items[owner >= 0] = movie_ids[owner[owner >= 0]]
        dd = commas.reshape(len(data), 2)
        sub = _subset(lines, data)
        out.users.append(_int_ids(sub, sub.start, dd[:, 0], "user"))
        out.items.append(items)
        out.ratings.append(_ratings(sub, dd[:, 0] + 1, dd[:, 1]))
    return int(movie_ids[-1]) if len(header) else movie


def _read_netflix(files: list[Path], out: _Collector) -> None:
    """Netflix files: big ones block by block, small ones (mv_*.txt) many per block."""
    group: list[tuple[Path, bytes]] = []
    size = 0

    def flush() -> None:
        nonlocal group, size
        if group:
            offsets = np.cumsum([0] + [len(d) for _, d in group[:-1]]).astype(np.int64)
            paths = [f for f, _ in group]
            lines = _lines(paths, b"".join(d for _, d in group), offsets=offsets)
            out.blank += lines.blank
            if len(lines):
                _netflix_block(lines, None, out)
        group, size = [], 0

    for f in files:
        if f.stat().st_size >= _BLOCK_SIZE // 4:
            flush()
            movie = None
            for block, line0 in _iter_blocks(f):
                lines = _lines([f], block, line0)
                out.blank += lines.blank
                if len(lines):
                    movie = _netflix_block(lines, movie, out)
            continue
        data = f.read_bytes()
        group.append((f, data if data.endswith(b"\n") else data + b"\n"))
        size += len(data)
        if size >= _BLOCK_SIZE:
            flush()
    flush()


# ------------------------------------------------------------------ format detection
_FOLDER_FILES: tuple[tuple[str, str], ...] = (
    ("u.data", "ml-100k"),
    ("ratings.dat", "ml-1m"),
    ("ratings.csv", "ml-20m"),
    ("train_triplets.txt", "msd"),
)
_CSV_DELIMS = (b"\t", b",", b";", b"|", b" ")
_NAMES = {
    "user": ("user_id", "userid", "user", "uid", "u", "customer_id", "customerid"),
    "item": (
        "item_id",
        "itemid",
        "item",
        "iid",
        "i",
        "movie_id",
        "movieid",
        "movie",
        "song_id",
        "songid",
        "song",
        "product_id",
        "productid",
        "business_id",
    ),
    "rating": ("rating", "ratings", "score", "stars", "value", "play_count", "count", "plays"),
}


def _head(path: Path, n: int = 20) -> list[bytes]:
    """The first ``n`` non-blank lines (without line ends)."""
    with open(path, "rb") as f:
        data = f.read(1 << 16)
    lines = [ln.rstrip(b"\r") for ln in data.split(b"\n")]
    if len(data) == 1 << 16:
        lines = lines[:-1]  # maybe cut
    return [ln for ln in lines if ln.strip()][:n]


def _netflix_files(folder: Path) -> list[Path]:
    files = sorted(folder.glob("combined_data_*.txt"))
    if files:
        return files
    for sub in (folder, folder / "training_set"):
        files = sorted(sub.glob("mv_*.txt"))
        if files:
            return files
    return []


def _check_fmt(fmt: str) -> str:
    if fmt == "auto" or fmt in FORMATS:
        return fmt
    close = difflib.get_close_matches(str(fmt), FORMATS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    raise DataError(f"unknown format {fmt!r}{hint}; known formats: auto, {', '.join(FORMATS)}")


def guess_format(path: str | Path) -> tuple[str, str]:
    """Guess the format of a file or folder from its name, extension and first line.

    Returns ``(format, reason)``; raises DataError when nothing fits.
    """
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_dir():
        for fname, fmt in _FOLDER_FILES:
            if (p / fname).is_file():
                return fmt, f"the folder holds {fname}"
        if _netflix_files(p):
            return "netflix", "the folder holds combined_data_*.txt or mv_*.txt files"
        if list(p.glob("*.inter")):
            return "recbole", "the folder holds a RecBole .inter file"
        raise DataError(
            f"{p}: cannot guess the format of this folder (no u.data, ratings.dat, ratings.csv, "
            "train_triplets.txt, combined_data_*.txt, mv_*.txt or *.inter); "
            f"pass a file or fmt= one of {', '.join(FORMATS)}"
        )
    name = p.name
    head = _head(p, 3)
    if not head:
        raise DataError(f"{p}: empty file (no interactions)")
    first = head[0].decode("utf-8", "replace").strip()
    if name == "u.data":
        return "ml-100k", "file name u.data"
    if name == "ratings.dat" or "::" in first:
        return "ml-1m", "file name ratings.dat or '::' separators"
    if re.fullmatch(r"(combined_data_\d+|mv_\d+)\.txt", name) or re.fullmatch(r"\d+:", first):
        return "netflix", "Netflix file name or a 'MOVIEID:' first line"
    if name.endswith(".inter") or re.search(r"^\w+:(token|float)\b", first):
        return "recbole", "'.inter' extension or a typed RecBole header"
    if first.replace(" ", "").lower().startswith("userid,movieid,rating"):
        return "ml-20m", "header userId,movieId,rating,timestamp"
    fields = first.split("\t")
    if name == "train_triplets.txt" or (
        len(fields) == 3 and re.fullmatch(r"[0-9a-f]{40}", fields[0]) and fields[1].startswith("SO")
    ):
        return "msd", "file name train_triplets.txt or MSD-style user/song ids"
    if p.suffix.lower() in (".csv", ".tsv", ".txt", ".dat", ""):
        return "csv", f"generic delimited text ({p.suffix or 'no extension'})"
    raise DataError(f"{p}: cannot guess the format; pass fmt= one of {', '.join(FORMATS)}")


def source_files(path: str | Path, fmt: str) -> list[Path]:
    """The files a format reads from ``path`` (a file, or a folder holding them)."""
    p = Path(path)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    if p.is_file():
        return [p]
    if fmt == "netflix":
        files = _netflix_files(p)
        if not files:
            raise DataError(f"{p}: no combined_data_*.txt or mv_*.txt files (Netflix)")
        return files
    for fname, f in _FOLDER_FILES:
        if f == fmt:
            if (p / fname).is_file():
                return [p / fname]
            raise DataError(f"{p}: no {fname} in this folder ({fmt})")
    if fmt == "recbole":
        files = sorted(p.glob("*.inter"))
        preferred = p / f"{p.name}.inter"
        if preferred.is_file():
            return [preferred]
        if len(files) == 1:
            return files
        what = "no" if not files else "several"
        raise DataError(f"{p}: {what} .inter files; pass the file itself")
    raise DataError(f"{p}: is a folder; pass the {fmt} file itself")


def _sniff_csv(path: Path, head: list[bytes]) -> _Layout:
    """Delimiter, header and columns of a generic delimited file."""
    body = head[1:] or head
    for d in _CSV_DELIMS:
        counts = {ln.count(d) for ln in body}
        if len(counts) == 1 and counts.pop() >= 1:
            break
    else:
        raise DataError(
            f"{path}:1: cannot find the delimiter (tried tab, comma, semicolon, '|', space) "
            f"of a user,item[,rating] line: {head[0].decode('utf-8', 'replace')!r}"
        )
    names = [
        f.strip().strip('"').lower() for f in head[0].decode("utf-8", "replace").split(d.decode())
    ]
    n_fields = len(names)
    cols = {k: next((j for j, f in enumerate(names) if f in v), None) for k, v in _NAMES.items()}
    header = any(c is not None for c in cols.values())
    parts = [ln.split(d) for ln in head[:2]]
    if not header and len(parts) == 2 and min(len(parts[0]), len(parts[1])) >= 3:
        # a text first line above numbers in the rating column
        third = [x[2].strip().strip(b'"') for x in parts]
        header = not _is_number(third[0]) and _is_number(third[1])
    user_col = cols["user"] if header and cols["user"] is not None else 0
    item_col = cols["item"] if header and cols["item"] is not None else 1
    rating_col = cols["rating"] if header else None
    if rating_col is None and n_fields >= 3 and not (header and cols["user"] is not None):
        rating_col = 2
    if n_fields < 2:
        raise DataError(f"{path}:1: need at least user and item columns")
    if len({user_col, item_col, rating_col} - {None}) < (2 if rating_col is None else 3):
        raise DataError(f"{path}:1: user, item and rating columns overlap in header {names}")
    return _Layout(d, n_fields, user_col, item_col, rating_col, False, header, strip=True)


def _is_number(b: bytes) -> bool:
    try:
        float(b)
    except ValueError:
        return False
    return True


def _recbole_layout(path: Path, head: list[bytes]) -> _Layout:
    fields = head[0].decode("utf-8", "replace").split("\t")
    names = [f.split(":")[0].strip() for f in fields]

    def col(name: str, required: bool) -> int | None:
        if name in names:
            return names.index(name)
        if required:
            raise DataError(
                f"{path}:1: RecBole header has no {name!r} column (found {', '.join(fields)})"
            )
        return None

    return _Layout(
        b"\t",
        len(fields),
        col("user_id", True),
        col("item_id", True),
        col("rating", False),
        int_ids=False,
        header=True,
    )


_LAYOUTS = {
    "ml-100k": _Layout(b"\t", 4, 0, 1, 2, int_ids=True, header=False),
    "ml-1m": _Layout(b"::", 4, 0, 1, 2, int_ids=True, header=False),
    "ml-20m": _Layout(b",", 4, 0, 1, 2, int_ids=True, header=True),
    "msd": _Layout(b"\t", 3, 0, 1, 2, int_ids=False, header=False),
}


# ------------------------------------------------------------------ public API
def read_interactions(path: str | Path, fmt: str = "auto") -> Interactions:
    """Parse a raw data file (or a folder holding one) into :class:`Interactions`.

    Parameters
    ----------
    path : a file, or a folder holding the format's file(s) (Netflix: several).
    fmt : one of ``FORMATS`` or ``"auto"`` (guessed from the name and first line; the
        choice and the reason are logged and stored in ``source["format_guess"]``).

    Returns
    -------
    Interactions with ``source = {"path", "format", "files", ...}`` and ``stats``
    (``rows_read``, ``blank_lines_skipped``). Ratings are None for files without a
    rating column; MSD play counts are the ratings.
    """
    p = Path(path)
    fmt = _check_fmt(fmt)
    if not p.exists():
        raise DataError(f"{p}: no such file or folder")
    source: dict = {"path": str(p)}
    if fmt == "auto":
        fmt, reason = guess_format(p)
        log.info("%s: read as %s (%s)", p, fmt, reason)
        source["format_guess"] = reason
    source["format"] = fmt
    files = source_files(p, fmt)
    for f in files:
        if f.stat().st_size == 0:
            raise DataError(f"{f}: empty file (no interactions)")
    source["files"] = [str(f) for f in files] if len(files) <= 20 else len(files)
    if fmt == "netflix":
        out = _Collector(int_ids=True)
        _read_netflix(files, out)
        return out.finish(source, p)
    (f,) = files
    if fmt in _LAYOUTS:
        layout = _LAYOUTS[fmt]
    else:
        head = _head(f)
        if not head:
            raise DataError(f"{f}: empty file (no interactions)")
        layout = _recbole_layout(f, head) if fmt == "recbole" else _sniff_csv(f, head)
        if fmt == "recbole" and f.stem in _RECBOLE_DATASETS:
            source["dataset"] = f.stem
            source["dataset_guess"] = f"the file is named {f.name}"
    source["columns"] = {
        "user": layout.user_col,
        "item": layout.item_col,
        "rating": layout.rating_col,
    }
    out = _Collector(int_ids=layout.int_ids)
    _read_delimited(f, layout, out)
    return out.finish(source, p)


def defaults_name(inter: Interactions) -> str:
    """Whose defaults apply: the data set (RecBole files of a known one) or the format."""
    return str(inter.source.get("dataset") or inter.source.get("format"))


def default_params(inter: Interactions) -> SplitParams:
    """``DEFAULT_SPLIT`` of the data set the interactions came from."""
    key = defaults_name(inter)
    if key not in DEFAULT_SPLIT:
        raise DataError(f"no default split for {key!r}; pass params=SplitParams(...)")
    return DEFAULT_SPLIT[key]


def _split(
    inter: Interactions,
    path: Path,
    *,
    params: SplitParams | None,
    split: Mapping[str, Any] | None,
    name: str | None,
) -> Dataset:
    """Split with ``params`` (else the format's defaults) updated by ``split``.

    Every default chosen from the file's name or format (``defaults_applied``) is
    printed on stderr and stored in the manifest (``defaults_applied``, and
    ``source.format_guess`` / ``source.dataset_guess`` for what was guessed), each with
    the option that turns it off.
    """
    if params is None:
        base, defaults = default_params(inter), defaults_name(inter)
    else:
        base, defaults = params, None
    resolved, origin = resolve_split_params(base, split, defaults=defaults)
    if params is not None:  # every field of a caller's SplitParams counts as given
        origin["given"] = list(params.__dataclass_fields__)
    notes = defaults_applied(inter, resolved, origin)
    announce_defaults(inter.source.get("path", str(path)), notes, inter.source)
    ds = split_interactions(inter, resolved, name=name or _default_name(inter, path), origin=origin)
    ds.manifest["defaults_applied"] = notes
    return ds


def defaults_applied(
    inter: Interactions, params: SplitParams, origin: Mapping[str, Any]
) -> list[dict[str, str]]:
    """The split defaults a format or file name chose and the caller did not give.

    One entry per rule, ``{"rule", "because", "off"}``: the rating threshold (when the
    data has ratings), the minimum counts, a fixed held-out size, and the protocol. An
    explicit ``params=SplitParams(...)`` leaves none (every field counts as given).
    """
    given = set(origin.get("given", ())) | set(origin.get("implied", {}))
    who = origin.get("defaults")
    if who is None:
        return []
    because = (
        f"the {who} defaults ({inter.source['dataset_guess']})"
        if inter.source.get("dataset_guess")
        else f"the {who} format's defaults"
    )
    out = []

    def add(rule: str, off: str) -> None:
        out.append({"rule": rule, "because": because, "off": off})

    if "threshold" not in given and params.threshold is not None and inter.ratings is not None:
        add(
            f"keep ratings {'>=' if params.inclusive else '>'} {params.threshold:g}",
            "split={'threshold': None} / --all-ratings keeps every rating",
        )
    if "min_user" not in given and params.min_user > 0:
        add(
            f"keep users with >= {params.min_user} interactions",
            "split={'min_user': N} / --min-user N (0 keeps every user)",
        )
    if "min_item" not in given and params.min_item > 0:
        add(
            f"keep items with >= {params.min_item} interactions",
            "split={'min_item': N} / --min-item N (0 keeps every item)",
        )
    if params.protocol == "strong" and "n_heldout" not in given and params.n_heldout is not None:
        add(
            f"{params.n_heldout} validation and {params.n_heldout} test users"
            + (" (10% each when that is fewer)" if params.heldout_fallback else ""),
            "split={'n_heldout': N} or {'heldout_frac': F} / --heldout-users N|F",
        )
    if "protocol" not in given:
        add(
            "protocol 'strong' (Liang et al.): whole users held out, 10% + 10%",
            "split={'protocol': 'weak'} / --protocol weak splits each user's interactions "
            "80/10/10 (RecBole's and cornac's default)",
        )
    return out


def announce_defaults(where: str, notes: list[dict[str, str]], source: Mapping[str, Any]) -> None:
    """Print the guessed format and the defaults applied on stderr (one line each)."""
    import sys

    if source.get("format_guess"):
        print(
            f"radius: note: {where}: read as format {source.get('format')!r} "
            f"({source['format_guess']}); fmt= / --format chooses another",
            file=sys.stderr,
        )
    for n in notes:
        print(
            f"radius: note: {where}: {n['rule']}, by {n['because']}; off: {n['off']}",
            file=sys.stderr,
        )


def _sources_sha256(files: list[Path]) -> str:
    """sha256 of the one file, or of the "name sha256" lines of several."""
    if len(files) == 1:
        return file_sha256(files[0])
    h = hashlib.sha256()
    for f in files:
        h.update(f"{f.name} {file_sha256(f)}\n".encode())
    return h.hexdigest()


def _default_name(inter: Interactions, path: Path) -> str:
    fmt = defaults_name(inter)
    return fmt if fmt in ("ml-100k", "ml-1m", "ml-20m", "netflix", "msd") else path.stem


def prepare(
    path: str | Path,
    out_dir: str | Path,
    *,
    fmt: str = "auto",
    params: SplitParams | None = None,
    split: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Dataset:
    """Read, split (strong generalisation) and save a data set atomically.

    Parameters
    ----------
    path : raw file, or a folder holding the format's file(s).
    out_dir : folder written (atomically) with the CSR matrices and ``manifest.json``.
    fmt : one of ``FORMATS`` or ``"auto"``.
    params : every split parameter at once; None uses the format's defaults
        (``DEFAULT_SPLIT``, chosen after reading, so ``fmt="auto"`` works).
    split : field -> value overrides of those parameters (any :class:`SplitParams`
        field), e.g. ``{"threshold": 4, "inclusive": True, "n_heldout": 600}``; see
        :func:`radius.data.split.resolve_split_params` for the fields that follow.
    name : dataset name in the manifest (default: the data set or the file stem).

    The manifest records the source path, format and sha256 (of the file, or of the
    list of per-file hashes for a Netflix folder), every split parameter used
    (``params``) and where each came from (``params_origin``: ``defaults``, ``given``,
    ``implied``). On any error nothing is written: ``out_dir`` is created only by the
    final rename (an existing ``out_dir`` is replaced only after the new one is
    complete). Overrides are checked before the file is read.
    """
    p = Path(path)
    if split:
        resolve_split_params(params or SplitParams(), split, defaults=None)  # fail fast
    inter = read_interactions(p, fmt)
    inter.source["sha256"] = _sources_sha256(source_files(p, inter.source["format"]))
    ds = _split(inter, p, params=params, split=split, name=name)
    ds.save(out_dir)
    return ds


def load_any(
    spec: str | Path, *, split: Mapping[str, Any] | None = None, fmt: str = "auto"
) -> Dataset:
    """A data set from ``"default"``/``"synthetic"``, a prepared folder or a raw file.

    A raw file (or raw data folder) is read (``fmt``, default guessed) and split in
    memory with its format's default split updated by ``split`` (as in :func:`prepare`);
    nothing is saved. A prepared folder is already split: ``split`` or a ``fmt`` is then
    an error.
    """
    if str(spec) in ("default", "synthetic"):
        from radius.data.synthetic import default_dataset

        return default_dataset(overrides=split)
    p = Path(spec)
    if not p.exists():
        raise DataError(
            f"{spec}: no such file or folder (expected 'default', 'synthetic', "
            "a prepared folder or a raw data file)"
        )
    if p.is_dir() and (p / "manifest.json").is_file():
        if split:
            raise DataError(
                f"{p}: a prepared dataset is already split; prepare the raw file again "
                f"to change {', '.join(sorted(split))}"
            )
        if fmt != "auto":
            raise DataError(f"{p}: a prepared dataset has no format to choose (fmt={fmt!r})")
        return Dataset.load(p)
    if p.is_dir():
        try:
            guess_format(p)
        except DataError as e:
            raise DataError(f"{p}: not a prepared dataset (no manifest.json) and {e}") from e
    if split:
        resolve_split_params(SplitParams(), split, defaults=None)  # fail fast
    inter = read_interactions(p, fmt)
    return _split(inter, p, params=None, split=split, name=None)
