"""The progress protocol every long core step reports through.

Core never draws progress bars itself: the CLI passes a tqdm-backed callback, the app an
``st.progress``-backed one, tests a list-appending one. A step whose cost is known before it
runs (from its settings and a small measured probe) announces itself here when it is long
(:func:`announce_estimate`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable

# (stage label, units done, units total); total 0 means "unknown"
ProgressFn = Callable[[str, int, int], None]


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
