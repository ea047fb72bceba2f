"""Atomic writes: all or nothing, usual permissions."""

from __future__ import annotations

import os

import pytest

from radius.io import atomic_write_json, atomic_write_text


def test_failed_write_leaves_old_file_and_no_temporaries(tmp_path):
    """An exception while writing keeps the previous content and leaves no .tmp file."""
    target = tmp_path / "report.json"
    atomic_write_text(target, "old\n")

    class Boom:
        pass

    with pytest.raises(TypeError):
        atomic_write_json(target, {"x": Boom()})
    assert target.read_text() == "old\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json"]


def test_written_file_has_umask_permissions(tmp_path):
    """Files are readable by others as with a plain open() (not mkstemp's 0600)."""
    target = tmp_path / "a.txt"
    atomic_write_text(target, "x")
    umask = os.umask(0)
    os.umask(umask)
    assert target.stat().st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize(
    ("status", "suffix"), [("", ""), (" M radius/training/trainer.py\n", ".dirty")]
)
def test_code_version_marks_uncommitted_code(monkeypatch, status, suffix):
    """code_version names the commit, with .dirty when tracked code differs from it."""
    import subprocess

    import radius

    def fake_run(cmd, **kwargs):
        out = "abc1234\n" if "rev-parse" in cmd else status
        if "status" in cmd:
            assert {"radius", "verify", "figures", ":(exclude)figures/out"} <= set(cmd)
        return subprocess.CompletedProcess(cmd, 0, stdout=out, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    assert radius.code_version() == f"{radius.__version__}+gabc1234{suffix}"
