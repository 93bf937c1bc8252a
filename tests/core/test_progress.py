"""The progress protocol: phases, tee, and the status file a background build writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import SpecError
from core.progress import StatusFile, in_phase, process_alive, read_status, split_phase, tee


def test_in_phase_names_the_phase_and_split_phase_reads_it_back() -> None:
    seen: list[tuple[str, int, int]] = []
    report = in_phase(lambda *r: seen.append(r), "matching")
    report("correlate", 3, 10)
    assert seen == [("matching · correlate", 3, 10)]
    assert split_phase("matching · correlate") == ("matching", "correlate")
    assert split_phase("harvest") == ("harvest", "harvest")
    # a nested phase keeps the outer one first
    in_phase(in_phase(lambda *r: seen.append(r), "SAEs"), "x")("y", 1, 2)
    assert split_phase(seen[-1][0]) == ("SAEs", "x · y")


def test_tee_reports_to_every_callback() -> None:
    a: list = []
    b: list = []
    tee(lambda *r: a.append(r), lambda *r: b.append(r))("s", 1, 2)
    assert a == b == [("s", 1, 2)]


def test_status_file_records_steps_in_order_with_done_total_and_the_outcome(tmp_path: Path) -> None:
    path = tmp_path / "builds" / "job.json"
    status = StatusFile(path, "a build", {"bundle": "/b"})
    first = read_status(path)
    assert first is not None and first["state"] == "running" and first["pid"] == os.getpid()
    assert first["bundle"] == "/b" and first["steps"] == []
    status("harvest · harvest", 0, 100)
    status("harvest · harvest", 100, 100)  # a finished step is written at once, whatever the interval
    status("matching · correlate", 1, 4)
    status.finish("/b")
    body = read_status(path)
    assert body is not None and body["state"] == "done" and body["result"] == "/b"
    assert [(s["label"], s["phase"], s["done"], s["total"]) for s in body["steps"]] == [
        ("harvest · harvest", "harvest", 100, 100),
        ("matching · correlate", "matching", 1, 4),
    ]
    assert all(s["started"] <= s["updated"] for s in body["steps"])


def test_status_file_keeps_a_user_error_as_its_sentence_and_a_bug_with_its_traceback(tmp_path: Path) -> None:
    user = StatusFile(tmp_path / "u.json", "u")
    user.fail(SpecError("The corpus is empty; give a corpus with some text."), user_error=True)
    body = read_status(tmp_path / "u.json")
    assert body is not None and body["state"] == "failed"
    assert body["error"] == "The corpus is empty; give a corpus with some text." and "traceback" not in body
    bug = StatusFile(tmp_path / "b.json", "b")
    try:
        raise KeyError("oops")
    except KeyError as exc:
        bug.fail(exc, user_error=False)
    body = read_status(tmp_path / "b.json")
    assert body is not None and body["error"].startswith("KeyError") and "raise KeyError" in body["traceback"]


def test_read_status_of_a_missing_or_torn_file_is_none(tmp_path: Path) -> None:
    assert read_status(tmp_path / "none.json") is None
    (tmp_path / "torn.json").write_text('{"state": "runn')
    assert read_status(tmp_path / "torn.json") is None
    (tmp_path / "ok.json").write_text(json.dumps({"state": "done"}))
    assert read_status(tmp_path / "ok.json") == {"state": "done"}


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert not process_alive(child.pid)


@pytest.mark.parametrize("interval", [0.0])
def test_status_file_writes_are_atomic_renames(
    tmp_path: Path, interval: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("core.progress.STATUS_INTERVAL_S", interval)
    status = StatusFile(tmp_path / "s.json", "s")
    for i in range(50):
        status("x", i, 50)
        assert read_status(tmp_path / "s.json") is not None
    assert not list(tmp_path.glob(".*tmp"))
