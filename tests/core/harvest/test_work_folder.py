"""A harvest's work folder is removed only when it holds nothing but what a harvest writes."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.errors import HarvestError
from core.harvest.run import remove_work_dir


def _work_folder(path: Path) -> Path:
    (path / "shard_00000").mkdir(parents=True)
    (path / "shard_00000" / "summary.json").write_text("{}")
    (path / ".shard_00001.part-0123abcd").mkdir()
    (path / "plan.json").write_text("{}")
    return path


def test_a_harvest_folder_is_removed(tmp_path: Path) -> None:
    work = _work_folder(tmp_path / ".work")
    remove_work_dir(work)
    assert not work.exists()


def test_a_folder_holding_anything_else_is_refused_and_kept(tmp_path: Path) -> None:
    work = _work_folder(tmp_path / ".work")
    (work / "notes.txt").write_text("mine")
    with pytest.raises(HarvestError, match="notes.txt"):
        remove_work_dir(work)
    assert (work / "notes.txt").read_text() == "mine" and (work / "shard_00000").is_dir()
