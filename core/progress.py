"""The progress protocol every long core step reports through.

Core never draws progress bars itself: the CLI passes a tqdm-backed callback, the app an
``st.progress``-backed one, tests a list-appending one.
"""

from __future__ import annotations

from collections.abc import Callable

# (stage label, units done, units total); total 0 means "unknown"
ProgressFn = Callable[[str, int, int], None]


def no_progress(stage: str, done: int, total: int) -> None:
    """A progress callback that ignores every report."""
