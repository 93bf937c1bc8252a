"""Run the CLI and SIGKILL the process at the N-th file-system operation: the kill test's stand-in for a power cut.

Usage (from the repository root, so this checkout's ``core`` is imported)::

    python -m tests.core._killpoint COUNT_FILE SCOPE N before|after ARGS...

Every call of the operations in :data:`OPERATIONS` on a path inside the folder SCOPE (the
bundle's parent: the bundle, its staging copies, its lock) is counted, so the count does not
depend on caches elsewhere; at call ``N`` the process kills
itself with SIGKILL (no cleanup, no ``finally``, no atexit), either just before the operation
or just after it. ``N = 0`` kills nothing and writes the operations, one name a line, to COUNT_FILE at the
end, so a test can choose its kill points among all of them.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import core.bundle.safety as safety

# (module, function name): every way the bundle code creates, renames, links or deletes
OPERATIONS: list[tuple[Any, str]] = [
    (os, "replace"),
    (os, "rename"),
    (os, "link"),
    (os, "mkdir"),
    (os, "unlink"),
    (os, "rmdir"),
    (shutil, "rmtree"),
    (shutil, "copy2"),
    (safety, "_renameat2_exchange"),
]


def _inside(path: Any, scope: str) -> bool:
    try:
        return os.path.abspath(os.fsdecode(path)).startswith(scope + os.sep)
    except TypeError:
        return False


def install(scope: str, kill_at: int, when: str) -> list[str]:
    """Wrap the operations; returns the list of those run so far inside ``scope`` (by name)."""
    done: list[str] = []
    scope = os.path.abspath(scope)

    def wrap(name: str, func: Callable[..., Any]) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            if not args or kwargs.get("dir_fd") is not None or not _inside(args[0], scope):
                return func(*args, **kwargs)
            done.append(name)
            mine = len(done)  # nested operations (rmtree's own rmdir) count on
            if mine == kill_at and when == "before":
                os.kill(os.getpid(), signal.SIGKILL)
            try:
                return func(*args, **kwargs)
            finally:
                # also after an operation that failed (a missing file the caller expects to be missing)
                if mine == kill_at and when == "after":
                    os.kill(os.getpid(), signal.SIGKILL)

        return call

    for module, name in OPERATIONS:
        setattr(module, name, wrap(name, getattr(module, name)))
    return done


def main(argv: list[str]) -> int:
    """Run ``python -m core ARGS`` with the kill point armed; returns the CLI's exit status."""
    count_file, scope, kill_at, when, *args = argv
    done = install(scope, int(kill_at), when)
    from core.cli.main import main as cli_main

    status = cli_main(args)
    Path(count_file).write_text("\n".join(done))
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
