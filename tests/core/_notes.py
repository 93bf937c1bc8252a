"""The CLI's ``note:`` lines in captured stderr."""

from __future__ import annotations

import re

# tqdm.write clears the progress bars before a note: cursor moves and spaces land in front of it
_TERMINAL_CONTROL = re.compile(r"\x1b\[[0-9;]*[A-Za-z]|\r")


def note_lines(err: str) -> list[str]:
    """The ``note: ...`` lines of a captured stderr, with the terminal control that tqdm put before them removed."""
    lines = (_TERMINAL_CONTROL.sub("", line).strip() for line in err.splitlines())
    return [line for line in lines if line.startswith("note: ")]
