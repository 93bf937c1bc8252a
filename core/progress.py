"""The progress protocol every long core step reports through, and a status file another process reads.

Core never draws progress bars itself: the CLI passes a tqdm-backed callback, the app an
``st.progress``-backed one, tests a list-appending one. A build names its phases (``harvest``,
``matching``, ...) with :func:`in_phase`, so a step's label reads ``"matching · correlate"``;
:class:`StatusFile` records every label's done/total, when it started and the build's outcome in
a JSON file, which is how the app follows a build that runs in a process of its own.
A step whose cost is known before it runs (from its settings and a small measured probe)
announces itself here when it is long (:func:`announce_estimate`).
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

# (stage label, units done, units total); total 0 means "unknown"
ProgressFn = Callable[[str, int, int], None]

PHASE_SEP = " · "
# a status file is rewritten at most this often (plus on every new label and at the end)
STATUS_INTERVAL_S = 0.5


def no_progress(stage: str, done: int, total: int) -> None:
    """A progress callback that ignores every report."""


# a step estimated (or projected) to take longer than this is announced before it runs on
NOTICE_AFTER_S = 180.0
# notices go to this logger; the CLI prints its warnings as ``note:`` lines, the app shows them
LOG = logging.getLogger("core")


def format_seconds(s: float) -> str:
    """``3 h 20 min``-style duration."""
    if s >= 86400:
        return f"{s / 86400:.1f} days"
    if s >= 3600:
        return f"{int(s // 3600)} h {int(s % 3600 // 60)} min"
    if s >= 60:
        return f"{int(s // 60)} min"
    return f"{int(s)} s"


def announce_estimate(step: str, seconds: float, sized_by: str, basis: str, after_s: float | None = None) -> str | None:
    """Say, before a long step runs, how long it will take, when that exceeds :data:`NOTICE_AFTER_S`.

    Args:
        step: what is about to run ("similarity null").
        seconds: the estimate.
        sized_by: the setting that sizes it, as the user gives it ("--n-null 1,000,000").
        basis: what the estimate rests on ("12 ms per sample measured on 16 samples").
        after_s: the threshold (``None``: :data:`NOTICE_AFTER_S`).

    Returns:
        The notice, or ``None`` when the step is short.
    """
    if seconds <= (NOTICE_AFTER_S if after_s is None else after_s):
        return None
    message = (
        f"{step}: about {format_seconds(seconds)} with {sized_by} ({basis}); lower it for a quicker run, "
        "or Ctrl-C stops it."
    )
    LOG.warning(message)
    return message


def in_phase(progress: ProgressFn, phase: str) -> ProgressFn:
    """A callback that reports ``progress``'s steps as steps of ``phase`` (``"phase · step"``).

    Args:
        progress: the callback to report to.
        phase: the phase's name (a build's top-level part: ``harvest``, ``matching``, ...).

    Returns:
        The wrapped callback.
    """

    def report(stage: str, done: int, total: int) -> None:
        progress(f"{phase}{PHASE_SEP}{stage}", done, total)

    return report


def split_phase(label: str) -> tuple[str, str]:
    """(phase, step) of a label written through :func:`in_phase`; a label without a phase is its own phase."""
    phase, sep, step = label.partition(PHASE_SEP)
    return (phase, step) if sep else (label, label)


def tee(*callbacks: ProgressFn) -> ProgressFn:
    """One callback reporting to several (a tqdm bar and a status file)."""

    def report(stage: str, done: int, total: int) -> None:
        for callback in callbacks:
            callback(stage, done, total)

    return report


class StatusFile:
    """A progress callback that keeps a build's state in a JSON file, written atomically.

    The file holds ``name``, ``pid``, ``state`` (``running``, ``done`` or ``failed``), ``started``
    and ``updated`` (Unix seconds), ``steps`` (one entry per label, in first-seen order: ``label``,
    ``phase``, ``done``, ``total``, ``started``, ``updated``), and, once finished, ``result`` (e.g. the
    bundle path) or ``error`` (the one-sentence message of a user error, or the exception for a bug).

    Args:
        path: the JSON file.
        name: what is being built (shown with the progress).
        extra: more fields to record (e.g. the bundle folder the build writes).
    """

    def __init__(self, path: str | Path, name: str, extra: dict[str, Any] | None = None) -> None:
        self.path = Path(path)
        now = time.time()
        self.status: dict[str, Any] = {
            "name": name,
            "pid": os.getpid(),
            "state": "running",
            "started": now,
            "updated": now,
            "steps": [],
            **(extra or {}),
        }
        self._index: dict[str, int] = {}
        self._last_write = 0.0
        self._write()

    def __call__(self, stage: str, done: int, total: int) -> None:
        now = time.time()
        phase, _ = split_phase(stage)
        if stage not in self._index:
            self._index[stage] = len(self.status["steps"])
            self.status["steps"].append({"label": stage, "phase": phase, "started": now})
            force = True
        else:
            force = bool(total) and done >= total
        self.status["steps"][self._index[stage]].update({"done": int(done), "total": int(total), "updated": now})
        self.status["updated"] = now
        if force or now - self._last_write >= STATUS_INTERVAL_S:
            self._write()

    def finish(self, result: Any = None) -> None:
        """Record success (and what was built)."""
        self.status.update({"state": "done", "result": result, "updated": time.time()})
        self._write()

    def fail(self, error: BaseException, user_error: bool) -> None:
        """Record a failure: a user error's sentence, or a bug's exception with its traceback."""
        message = str(error) if user_error else f"{type(error).__name__}: {error}"
        self.status.update({"state": "failed", "error": message, "updated": time.time()})
        if not user_error:
            self.status["traceback"] = "".join(traceback.format_exception(error))[-4000:]
        self._write()

    def _write(self) -> None:
        self._last_write = time.time()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.status, default=str))
        os.replace(tmp, self.path)


def read_status(path: str | Path) -> dict[str, Any] | None:
    """A status file's content, or None when there is none (or it is being replaced right now)."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def process_alive(pid: int) -> bool:
    """Whether a process with this id runs (and is not a zombie) on this machine."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True
