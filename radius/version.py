"""The package version and the code version stamped into every report (floor 0)."""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "code_version"]


def code_version() -> str:
    """Package version plus the git commit when run from a checkout (``0.1.0+g1a2b3c4``).

    ``.dirty`` is appended when tracked code (``radius/``, ``verify/``, ``figures/``
    without its drawn output ``figures/out/``, ``pyproject.toml``) differs from that
    commit, so a report never names a commit whose code did not produce it.
    """
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
        )
        if out.returncode == 0 and out.stdout.strip():
            version = f"{__version__}+g{out.stdout.strip()}"
            code = ["radius", "verify", "figures", ":(exclude)figures/out", "pyproject.toml"]
            status = subprocess.run(
                ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--"]
                + code,
                capture_output=True,
                text=True,
                timeout=5,
            )
            if status.returncode != 0 or status.stdout.strip():
                version += ".dirty"
            return version
    except (OSError, subprocess.SubprocessError):
        pass
    return __version__
