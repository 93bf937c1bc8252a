"""Background builds: phases and time left from a status file, one build at a time, failures kept."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from components import builds
from core.progress import StatusFile, read_status

JOB = builds.BuildJob("tiny", "Tiny", ("demo",), Path("/b"), (("harvest", 100.0), ("matching", 30.0), ("umap", 60.0)))


def _step(label: str, done: int, total: int, started: float, updated: float) -> dict:
    return {
        "label": label,
        "phase": label.split(" · ")[0],
        "done": done,
        "total": total,
        "started": started,
        "updated": updated,
    }


def test_summarize_orders_phases_and_extrapolates_the_running_step() -> None:
    now = 1000.0
    status = {
        "state": "running",
        "started": 900.0,
        "updated": 999.0,
        "steps": [
            _step("harvest · harvest", 600, 600, 900.0, 950.0),
            _step("harvest · writing", 2, 2, 950.0, 960.0),
            # 1 of 4 blocks in 20 s: 60 s to go
            _step("matching · correlate", 1, 4, 980.0, 999.0),
        ],
    }
    s = builds.summarize(JOB, status, now=now)
    assert [(p.name, p.state) for p in s.phases] == [("harvest", "done"), ("matching", "running"), ("umap", "pending")]
    harvest, matching, umap = s.phases
    assert harvest.seconds == pytest.approx(60.0) and harvest.fraction == 1.0
    assert (matching.step, matching.done, matching.total) == ("correlate", 1, 4)
    assert matching.fraction == pytest.approx(0.25)
    assert matching.left == pytest.approx(60.0)
    assert umap.left == 60.0
    # time left: the running step's extrapolation plus the expected seconds of what has not started
    assert s.left == pytest.approx(120.0)
    assert s.current() is matching and s.running


def test_summarize_without_a_rate_falls_back_on_the_expected_time_and_adds_unknown_phases() -> None:
    status = {
        "state": "running",
        "started": 0.0,
        "steps": [_step("harvest · loading", 0, 0, 0.0, 0.0), _step("extra · x", 0, 0, 1.0, 1.0)],
    }
    s = builds.summarize(JOB, status, now=30.0)
    assert [p.name for p in s.phases] == ["harvest", "matching", "umap", "extra"]
    assert s.phase("harvest").state == "done"  # a later phase has started
    extra = s.phase("extra")
    assert extra.state == "running" and extra.left is None and s.left is None


def test_a_running_build_whose_process_is_gone_is_failed_and_keeps_its_finished_phases() -> None:
    status = {
        "state": "running",
        "steps": [_step("harvest · harvest", 10, 10, 0, 5), _step("matching · correlate", 1, 4, 5, 6)],
    }
    s = builds.summarize(JOB, status, now=10.0, alive=False)
    assert s.state == "failed" and "stopped" in (s.error or "")
    assert s.phase("harvest").state == "done" and s.phase("matching").state == "failed"
    assert s.left is None


def test_a_failed_build_reports_its_sentence() -> None:
    status = {"state": "failed", "error": "The model folder /x does not exist; check the path.", "steps": []}
    s = builds.summarize(JOB, status, now=1.0, alive=False)
    assert s.error == "The model folder /x does not exist; check the path." and not s.running


def test_builds_for_finds_every_status_naming_the_bundle(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path))
    folder = tmp_path / "builds"
    StatusFile(folder / "one.json", "one", {"bundle": str(tmp_path / "b1")})("harvest · harvest", 1, 2)
    StatusFile(folder / "two.json", "two", {"bundle": str(tmp_path / "b2")})
    found = builds.builds_for(tmp_path / "b1")
    assert [b.job.name for b in found] == ["one"] and found[0].running
    assert builds.running_build_for(tmp_path / "b1") is not None
    assert builds.running_build_for(tmp_path / "elsewhere") is None


@pytest.mark.slow
def test_a_background_build_runs_once_and_a_failure_keeps_its_one_sentence(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path / "cache"))
    missing = tmp_path / "no-such-model"
    job = builds.BuildJob(
        "broken",
        "A comparison of a model that is not there",
        (
            "compare",
            "--model-a",
            str(missing),
            "--sae-a",
            str(missing),
            "--model-b",
            str(missing),
            "--sae-b",
            str(missing),
            "--out",
            str(tmp_path / "out"),
        ),
        tmp_path / "out",
    )
    assert builds.start_build(job)
    # a second start while it runs is refused: reruns and other tabs cannot duplicate a build
    assert not builds.start_build(job)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        status = builds.read_build(job)
        if status is not None and not status.running:
            break
        time.sleep(0.5)
    assert status is not None and status.state == "failed"
    # the user error's one sentence, as the CLI prints it
    assert status.error and str(missing) in status.error and "Traceback" not in status.error
    assert (read_status(job.status_path) or {}).get("pid") != os.getpid()
    assert job.log_path.is_file()
    # once it stopped, it can be started again
    assert builds.start_build(job)
    while builds.read_build(job).running:  # type: ignore[union-attr]
        time.sleep(0.5)


def test_autostart_starts_the_demo_once_and_leaves_a_failed_one_to_the_user(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path))
    started: list[str] = []

    def fake_start(job: builds.BuildJob, python: str = sys.executable) -> bool:
        started.append(job.name)
        StatusFile(job.status_path, job.title, {"bundle": str(job.bundle)})
        return True

    monkeypatch.setattr(builds, "start_build", fake_start)
    status = builds.autostart_demo()
    assert started == ["demo"] and status is not None and status.running
    builds.autostart_demo()
    assert started == ["demo"]  # it runs: not started again
    job = builds.demo_jobs()["demo"]
    StatusFile(job.status_path, job.title, {"bundle": str(job.bundle)}).fail(ValueError("x"), user_error=False)
    assert builds.autostart_demo().state == "failed"  # type: ignore[union-attr]
    assert started == ["demo"]
