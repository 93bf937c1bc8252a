"""A safety net for the whole test session: no test may delete a system folder, a home, or an ancestor.

Tests of the deletion policy point `--out` at `/`, `~`, `.` and `..` on purpose. Should the code
under test regress, the test must fail, not wipe the machine (one such run on unguarded code
deleted /etc here). So while tests run, `shutil.rmtree`, `os.unlink`/`os.remove` and `os.rmdir`
refuse any path that is a filesystem root, a direct child of it, a home folder, or an ancestor of
the working folder, the repository or the home folder, raising PermissionError instead.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _forbidden(path: Any) -> bool:
    try:
        target = Path(os.fsdecode(path)).expanduser().absolute()
    except (TypeError, ValueError):
        return False
    target = Path(os.path.normpath(target))
    if target == Path(target.anchor) or target.parent == Path(target.anchor):
        return True
    protected = {ROOT, Path.home().absolute(), Path.cwd().absolute(), Path("/root"), Path("/home")}
    return any(target == p or target in p.parents for p in protected)


def _guarded(func: Callable[..., Any], name: str) -> Callable[..., Any]:
    def guard(path: Any, *args: Any, **kwargs: Any) -> Any:
        if kwargs.get("dir_fd") is None and _forbidden(path):
            raise PermissionError(f"test guard: refusing {name}({os.fsdecode(path)!r})")
        return func(path, *args, **kwargs)

    guard.__wrapped__ = func  # type: ignore[attr-defined]
    guard._featurebridge_test_guard = True  # type: ignore[attr-defined]
    return guard


def install() -> None:
    """Wrap the deleting functions for the rest of the process (idempotent).

    It checks for its own mark rather than any wrapper, so a guard a machine installs for
    itself (site-packages) does not stand in for this one: both then apply.
    """
    if getattr(shutil.rmtree, "_featurebridge_test_guard", False):
        return
    shutil.rmtree = _guarded(shutil.rmtree, "shutil.rmtree")  # type: ignore[assignment]
    os.unlink = _guarded(os.unlink, "os.unlink")  # type: ignore[assignment]
    os.remove = _guarded(os.remove, "os.remove")  # type: ignore[assignment]
    os.rmdir = _guarded(os.rmdir, "os.rmdir")  # type: ignore[assignment]
