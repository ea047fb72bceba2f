"""MovieLens-100k, as shipped inside the PyPI wheel ``recbole==1.2.1``.

The wheel holds ``recbole/dataset_example/ml-100k/ml-100k.inter`` (RecBole atomic
format: ``user_id:token  item_id:token  rating:float  timestamp:float``; 100,000
ratings of 943 users on 1,682 movies). The file is read straight from the zip:
recbole is never installed nor imported.

Getting the wheel is an explicit step (``radius data fetch-ml100k`` or
:func:`fetch_ml100k_wheel`); tests and library code only look for it with
:func:`find_ml100k_wheel`:

1. the path in the environment variable ``RADIUS_ML100K_WHEEL``;
2. ``<repo>/.cache/recbole-1.2.1-py3-none-any.whl``;
3. ``~/.cache/radius/recbole-1.2.1-py3-none-any.whl``.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import zipfile
from pathlib import Path

from radius.errors import DataError
from radius.io import atomic_path, file_sha256

__all__ = [
    "RECBOLE_VERSION",
    "WHEEL_NAME",
    "WHEEL_SHA256",
    "INTER_MEMBER",
    "INTER_SHA256",
    "ENV_VAR",
    "wheel_candidates",
    "find_ml100k_wheel",
    "fetch_ml100k_wheel",
    "extract_ml100k",
]

RECBOLE_VERSION = "1.2.1"
WHEEL_NAME = f"recbole-{RECBOLE_VERSION}-py3-none-any.whl"
# sha256 of the PyPI wheel and of the .inter file inside it.
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
INTER_MEMBER = "recbole/dataset_example/ml-100k/ml-100k.inter"
INTER_SHA256 = "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff"
ENV_VAR = "RADIUS_ML100K_WHEEL"


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def wheel_candidates() -> list[Path]:
    """Where :func:`find_ml100k_wheel` looks, in order (the env var first when set)."""
    out = []
    env = os.environ.get(ENV_VAR)
    if env:
        out.append(Path(env).expanduser())
    out.append(_repo_root() / ".cache" / WHEEL_NAME)
    out.append(Path.home() / ".cache" / "radius" / WHEEL_NAME)
    return out


def find_ml100k_wheel() -> Path | None:
    """The recbole 1.2.1 wheel if present (see module doc), else None.

    A ``RADIUS_ML100K_WHEEL`` naming a file that does not exist is an error rather
    than a silent fall-through.
    """
    env = os.environ.get(ENV_VAR)
    if env and not Path(env).expanduser().is_file():
        raise DataError(f"{ENV_VAR}={env}: no such file")
    for path in wheel_candidates():
        if path.is_file():
            return path
    return None


def fetch_ml100k_wheel(dest: str | Path) -> Path:
    """Download the wheel with pip into ``dest`` (network; an explicit user/CI step).

    Runs ``python -m pip download --no-deps recbole==1.2.1 -d dest`` and checks the
    wheel's sha256.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        f"recbole=={RECBOLE_VERSION}",
        "-d",
        str(dest),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    wheel = dest / WHEEL_NAME
    if proc.returncode != 0 or not wheel.is_file():
        tail = (proc.stderr or proc.stdout or "").strip().splitlines()[-5:]
        raise DataError(
            f"pip download of recbole=={RECBOLE_VERSION} failed (exit {proc.returncode}): "
            + " | ".join(tail)
        )
    _check_wheel(wheel)
    return wheel


def _check_wheel(wheel: Path) -> None:
    digest = file_sha256(wheel)
    if digest != WHEEL_SHA256:
        raise DataError(
            f"{wheel}: sha256 {digest} is not that of {WHEEL_NAME} ({WHEEL_SHA256}); "
            "delete it and fetch it again"
        )


def extract_ml100k(wheel: str | Path, dest_file: str | Path, *, verify: bool = True) -> Path:
    """Copy ``ml-100k.inter`` out of the wheel to ``dest_file`` (atomic write).

    With ``verify`` the wheel's and the file's sha256 are checked against the pinned
    values.
    """
    wheel, dest_file = Path(wheel), Path(dest_file)
    if not wheel.is_file():
        raise DataError(f"{wheel}: no such file")
    if verify:
        _check_wheel(wheel)
    try:
        with zipfile.ZipFile(wheel) as z:
            data = z.read(INTER_MEMBER)
    except zipfile.BadZipFile as e:
        raise DataError(f"{wheel}: not a zip/wheel file ({e})") from e
    except KeyError as e:
        raise DataError(f"{wheel}: has no {INTER_MEMBER}") from e
    if verify and hashlib.sha256(data).hexdigest() != INTER_SHA256:
        raise DataError(f"{wheel}: {INTER_MEMBER} does not have the expected sha256")
    with atomic_path(dest_file) as tmp:
        tmp.write_bytes(data)
    return dest_file
