"""The session's deletion guard (tests/_delete_guard.py) is installed and refuses the right paths.

Only the pure predicate is exercised with system paths: nothing here ever calls a deleting function
on a real system folder.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from tests._delete_guard import ROOT, _forbidden


def test_the_guard_wraps_the_deleting_functions() -> None:
    for func in (shutil.rmtree, os.unlink, os.remove, os.rmdir):
        assert getattr(func, "__wrapped__", None) is not None


def test_system_folders_homes_and_ancestors_are_refused(tmp_path: Path) -> None:
    for path in ("/", "/etc", "/usr", "/tmp", "~", str(Path.home().parent), str(ROOT), str(ROOT.parent), ".", ".."):
        assert _forbidden(path), path
    assert not _forbidden(tmp_path / "bundle")
    assert not _forbidden(ROOT / "build")


def test_a_refused_deletion_raises_and_deletes_nothing(tmp_path: Path, monkeypatch) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep.txt").write_text("keep")
    monkeypatch.chdir(work)
    try:
        shutil.rmtree(".")
    except PermissionError as exc:
        assert "test guard" in str(exc)
    else:
        raise AssertionError("rmtree('.') was not refused")
    assert (work / "keep.txt").read_text() == "keep"
