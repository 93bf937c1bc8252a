"""Background builds: the demos built in a process of their own, followed through a status file.

A build started from the app runs ``python -m core demo ... --status FILE`` in a new session
(``start_new_session``), so no rerun of a Streamlit script can interrupt or repeat it: a second
start while one runs is refused (a lock file makes the check and the start one step), and a
build outlives the browser tab that started it. The child records every step's done/total and
its outcome in the status file (``core.progress.StatusFile``); the app reads that file to draw
progress on Home and to tell a page whose part is not built yet what it is waiting for. A build
that fails leaves its one-sentence error in the file; the parts it finished stay in the bundle.

Torch-free: nothing here imports a model; the paths come from ``core.demo.settings``.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.bundle.reader import open_bundle
from core.errors import UserError
from core.paths import cache_dir
from core.progress import process_alive, read_status, split_phase

ROOT = Path(__file__).resolve().parents[1]
# a status that has not moved for this long while its process is gone is a build that died
STALE_S = 5.0


@dataclass(frozen=True)
class BuildJob:
    """A build the app can start in the background.

    Attributes:
        name: short id (status and log files are named after it).
        title: what the user sees.
        argv: the command after ``python -m core`` (``--status FILE`` is appended).
        bundle: the bundle folder the build writes.
        phases: the build's phases in order, with their expected seconds on 2 CPU cores (for "time left").
        about: a rough duration for the button, e.g. ``"about 5 minutes"``.
    """

    name: str
    title: str
    argv: tuple[str, ...]
    bundle: Path
    phases: tuple[tuple[str, float], ...] = ()
    about: str = ""

    @property
    def status_path(self) -> Path:
        """Where the build records its progress."""
        return cache_dir("builds") / f"{self.name}.json"

    @property
    def log_path(self) -> Path:
        """Where the build's output goes."""
        return cache_dir("builds") / f"{self.name}.log"


@dataclass(frozen=True)
class Phase:
    """One phase of a build as the app shows it.

    Attributes:
        name: the phase (``harvest``, ``matching``, ...).
        state: ``done``, ``running``, ``pending`` or ``failed``.
        step: the label of its latest step (e.g. ``correlate``).
        done: units done of that step.
        total: units of that step (0: unknown).
        seconds: time spent in the phase so far.
        left: estimated seconds left in the phase (None: unknown).
    """

    name: str
    state: str
    step: str = ""
    done: int = 0
    total: int = 0
    seconds: float = 0.0
    left: float | None = None

    @property
    def fraction(self) -> float:
        """Share of the latest step done (1 for a finished phase)."""
        if self.state == "done":
            return 1.0
        return min(self.done / self.total, 1.0) if self.total else 0.0


@dataclass(frozen=True)
class BuildStatus:
    """What a background build is doing, read from its status file.

    Attributes:
        job: the job.
        state: ``running``, ``done`` or ``failed`` (a running build whose process is gone is ``failed``).
        phases: the phases in order.
        error: the failure's one sentence, if failed.
        started: Unix seconds.
        updated: Unix seconds of the last report.
        left: estimated seconds until the whole build is done (None when not running).
    """

    job: BuildJob
    state: str
    phases: tuple[Phase, ...] = field(default_factory=tuple)
    error: str | None = None
    started: float = 0.0
    updated: float = 0.0
    left: float | None = None

    @property
    def running(self) -> bool:
        return self.state == "running"

    def phase(self, name: str) -> Phase | None:
        """One phase by name."""
        return next((p for p in self.phases if p.name == name), None)

    def current(self) -> Phase | None:
        """The running phase (or the failed one)."""
        return next((p for p in self.phases if p.state in ("running", "failed")), None)


def summarize(job: BuildJob, status: dict[str, Any], now: float | None = None, alive: bool = True) -> BuildStatus:
    """A status file's content as phases with done/total and time left (pure: no files, no clock unless ``now``).

    Args:
        job: the job (its expected phases order the rows and estimate the pending ones).
        status: the status file's content.
        now: the current Unix time (default: ``time.time()``).
        alive: whether the build's process still runs.

    Returns:
        The summary. Time left: the running step's rate so far extrapolated to its total, plus the
        expected seconds of the phases not started.
    """
    now = time.time() if now is None else now
    state = status.get("state", "running")
    error = status.get("error")
    if state == "running" and not alive:
        state, error = "failed", error or "The build stopped without reporting why; see its log and start it again."
    steps = status.get("steps", [])
    expected = dict(job.phases)
    order = [name for name, _ in job.phases]
    for step in steps:
        if step.get("phase") not in order:
            order.append(step["phase"])
    seen = [step.get("phase") for step in steps]
    last_phase = seen[-1] if seen else None
    phases = []
    total_left: float | None = 0.0 if state == "running" else None
    for name in order:
        mine = [s for s in steps if s.get("phase") == name]
        if not mine:
            if state == "running" and total_left is not None:
                total_left += expected.get(name, 0.0)
            phases.append(Phase(name, "pending", left=expected.get(name) if state == "running" else None))
            continue
        latest = mine[-1]
        started = min(float(s.get("started", now)) for s in mine)
        finished = state == "done" or name != last_phase
        end = max(float(s.get("updated", started)) for s in mine) if finished else now
        phase_state = "done" if finished else ("failed" if state == "failed" else "running")
        left = None
        if phase_state == "running":
            done, total = int(latest.get("done", 0)), int(latest.get("total", 0))
            elapsed = now - float(latest.get("started", now))
            if total and done:
                left = max(elapsed * (total - done) / done, 0.0)
            elif name in expected:
                left = max(expected[name] - (now - started), 0.0)
            if total_left is not None:
                total_left = None if left is None else total_left + left
        _, step = split_phase(str(latest.get("label", name)))
        phases.append(
            Phase(
                name,
                phase_state,
                step=step,
                done=int(latest.get("done", 0)),
                total=int(latest.get("total", 0)),
                seconds=max(end - started, 0.0),
                left=left,
            )
        )
    return BuildStatus(
        job=job,
        state=state,
        phases=tuple(phases),
        error=error,
        started=float(status.get("started", now)),
        updated=float(status.get("updated", now)),
        left=total_left,
    )


def read_build(job: BuildJob) -> BuildStatus | None:
    """The job's status, or None when it was never started here."""
    status = read_status(job.status_path)
    if status is None:
        return None
    return summarize(job, status, alive=_alive(status))


def _alive(status: dict[str, Any]) -> bool:
    pid = int(status.get("pid", 0) or 0)
    if pid > 0 and process_alive(pid):
        return True
    # the launcher's provisional status, before the child's first report: give it a moment
    return status.get("state") == "running" and time.time() - float(status.get("updated", 0)) < STALE_S


@contextmanager
def _locked(job: BuildJob) -> Iterator[None]:
    with open(cache_dir("builds") / f"{job.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def start_build(job: BuildJob, python: str = sys.executable) -> bool:
    """Start the job in its own process unless it already runs; returns whether this call started it.

    Args:
        job: the job.
        python: the interpreter to run ``-m core`` with.

    Returns:
        True when a new build started, False when one was already running.
    """
    import json

    with _locked(job):
        current = read_build(job)
        if current is not None and current.running:
            return False
        log = open(job.log_path, "w")  # noqa: SIM115  (the child keeps the descriptor; closed here after the start)
        try:
            process = subprocess.Popen(
                [python, "-m", "core", *job.argv, "--status", str(job.status_path)],
                cwd=ROOT,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env={**os.environ, "HF_HUB_OFFLINE": os.environ.get("HF_HUB_OFFLINE", "1"), "PYTHONUNBUFFERED": "1"},
            )
        finally:
            log.close()
        # a provisional status until the child writes its own: the lock's next holder sees a running build
        now = time.time()
        provisional = {"name": job.title, "pid": process.pid, "state": "running", "started": now, "updated": now}
        tmp = job.status_path.with_name(f".{job.status_path.name}.launch")
        tmp.write_text(json.dumps({**provisional, "steps": [], "bundle": str(job.bundle)}))
        os.replace(tmp, job.status_path)
        return True


def bundle_complete(path: Path, parts: Sequence[str] = ("assignment", "similarity", "dashboards", "umap")) -> bool:
    """Whether a bundle exists with every part a full build writes."""
    if not (path / "manifest.json").is_file():
        return False
    try:
        bundle = open_bundle(path)
    except UserError:
        return False
    return all(bundle.has(p) for p in parts)


def bundle_opens(path: Path) -> bool:
    """Whether the folder holds a bundle that opens (its harvest has landed)."""
    if not (path / "manifest.json").is_file():
        return False
    try:
        open_bundle(path)
    except UserError:
        return False
    return True


# ---------------------------------------------------------------- the demos

# seconds per phase of the demo build on 2 idle CPU cores, with the shipped SAEs (measured by
# benchmarks/first_run.py); only "time left" uses them
DEMO_PHASES = (
    ("SAEs", 15.0),
    ("harvest", 110.0),
    ("matching", 25.0),
    ("similarity", 15.0),
    ("dashboards", 20.0),
    ("umap", 90.0),
)
FAMILY_PHASES = (
    ("SAEs", 40.0),
    ("harvest", 200.0),
    ("matching", 15.0),
    ("similarity", 15.0),
    ("dashboards", 15.0),
    ("umap", 80.0),
)
SWEEP_PHASES = (("SAEs", 15.0), ("sweep", 300.0))


def demo_jobs() -> dict[str, BuildJob]:
    """The demos Home offers, by job name (``demo``, ``family``, ``sweep``)."""
    from core.demo.settings import cross_demo_bundle_path, demo_bundle_path

    demo = demo_bundle_path()
    return {
        "demo": BuildJob(
            "demo",
            "Demo: all-MiniLM-L6-v2 vs paraphrase-MiniLM-L3-v2",
            ("demo",),
            demo,
            DEMO_PHASES,
            "about 5 minutes on 2 CPU cores",
        ),
        "family": BuildJob(
            "family",
            "Cross-family demo: all-MiniLM-L6-v2 vs SmolLM2-135M (two tokenizers, a causal LM's logits)",
            ("demo", "--pair", "family"),
            cross_demo_bundle_path(),
            FAMILY_PHASES,
            "about 8 minutes on 2 CPU cores",
        ),
        "sweep": BuildJob(
            "sweep",
            "The demo's 3 x 3 layer sweep (SVCCA and RSA for every layer pair)",
            ("demo", "--sweep"),
            demo,
            SWEEP_PHASES,
            "about 6 minutes on 2 CPU cores, after the demo",
        ),
    }


def builds_for(path: str | Path) -> list[BuildStatus]:
    """Every build recorded in the builds folder that writes into ``path``, newest first, running or finished.

    The status files name their bundle, so a build started by the CLI with ``--status`` under the
    builds folder is found as well as one started from Home.
    """
    target = str(Path(path))
    known = demo_jobs()
    found = []
    for file in sorted(cache_dir("builds").glob("*.json")):
        status = read_status(file)
        if not status or str(status.get("bundle")) != target:
            continue
        name = file.stem
        job = known.get(name) or BuildJob(name, str(status.get("name") or name), (), Path(target))
        found.append(summarize(job, status, alive=_alive(status)))
    return sorted(found, key=lambda s: s.updated, reverse=True)


def running_build_for(path: str | Path) -> BuildStatus | None:
    """The build running into ``path`` right now, if any."""
    return next((s for s in builds_for(path) if s.running), None)


def autostart_demo() -> BuildStatus | None:
    """Start the demo build when its bundle is not complete and none runs (what ``make app`` relies on).

    Returns:
        The demo build's status after the check (None when the demo is complete and was never built here).
    """
    job = demo_jobs()["demo"]
    status = read_build(job)
    if status is not None and (status.running or status.state == "failed"):
        # a failed build waits for the user: Home shows its error and a button to try again
        return status
    if not bundle_complete(job.bundle):
        start_build(job)
        return read_build(job)
    return status


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m components.builds demo``: start the demo's background build unless it is built or running.

    ``make app`` runs this before serving the app, so the build starts with the server rather
    than with the first browser session; it prints where the build reports and returns at once.
    """
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["demo"]:
        print("usage: python -m components.builds demo", file=sys.stderr)
        return 2
    status = autostart_demo()
    job = demo_jobs()["demo"]
    state = status.state if status is not None else "built"
    print(f"demo: {state} (progress in {job.status_path}, log in {job.log_path})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
