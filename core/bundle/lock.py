"""One writer per bundle: an advisory lock file beside the bundle folder.

``<parent>/.<name>.lock`` is locked with ``flock`` for as long as a build or a stage writes the
bundle ``<parent>/<name>`` (the kernel drops it when the process dies, so a killed run never
blocks the next one). It records the holder's pid and start time, so a second writer is told
"another run is writing this bundle since 12:03, pid 4711" instead of crashing into it. The lock
is re-entrant inside one thread (a build holds it and the stages it runs take it again).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from core.errors import BundleError

try:
    import fcntl
except ImportError:  # not POSIX: the lock degrades to the in-process one
    fcntl = None  # type: ignore[assignment]


class BundleBusyError(BundleError):
    """Another run holds the bundle's lock."""


_HELD: dict[str, tuple[int, int]] = {}  # lock file -> (thread id, depth)
_GUARD = threading.Lock()


def lock_path(bundle: str | Path) -> Path:
    """The lock file of a bundle folder: a hidden file beside it (it survives the folder's swap)."""
    bundle = Path(os.path.abspath(Path(bundle).expanduser()))
    return bundle.with_name(f".{bundle.name}.lock")


def _describe_holder(path: Path) -> str:
    try:
        info = json.loads(path.read_text())
        since = datetime.fromtimestamp(float(info["started"])).strftime("%H:%M")
        return f"since {since}, pid {int(info['pid'])}"
    except (OSError, ValueError, KeyError, TypeError):
        return "right now"


@contextmanager
def bundle_lock(bundle: str | Path) -> Iterator[None]:
    """Hold the write lock of ``bundle`` for the body of the ``with``.

    Args:
        bundle: the bundle folder (it need not exist yet).

    Raises:
        BundleBusyError: another process (or another thread of this one) is writing it.
    """
    path = lock_path(bundle)
    key = str(path)
    me = threading.get_ident()
    with _GUARD:
        holder = _HELD.get(key)
        if holder is not None:
            if holder[0] != me:
                raise BundleBusyError(
                    f"Another build in this process is writing {Path(bundle)} right now; wait for it to finish."
                )
            _HELD[key] = (me, holder[1] + 1)
            reentered = True
        else:
            reentered = False
    if reentered:
        try:
            yield
        finally:
            with _GUARD:
                thread, depth = _HELD[key]
                _HELD[key] = (thread, depth - 1)
        return
    handle = _acquire(path, Path(bundle))
    with _GUARD:
        _HELD[key] = (me, 1)
    try:
        yield
    finally:
        with _GUARD:
            del _HELD[key]
        _release(path, handle)


def _acquire(path: Path, bundle: Path) -> int | None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if fcntl is None:
        return None
    while True:
        handle = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(handle)
            raise BundleBusyError(
                f"Another run is writing {bundle} {_describe_holder(path)}; wait for it to finish, then run again."
            ) from None
        except OSError:
            os.close(handle)
            raise
        # the previous holder may have unlinked the file between our open and our lock: retry on the new one
        try:
            same = os.stat(path).st_ino == os.fstat(handle).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(handle)
    body = json.dumps({"pid": os.getpid(), "started": datetime.now().timestamp()}).encode()
    os.ftruncate(handle, 0)
    os.write(handle, body)
    return handle


def _release(path: Path, handle: int | None) -> None:
    if handle is None:
        return
    try:
        path.unlink(missing_ok=True)
    finally:
        os.close(handle)
