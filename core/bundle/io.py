"""Atomic writes: every bundle file goes to a temp name and is renamed into place.

A failed write (a full disk, a missing permission) removes its temp file and raises
:class:`BundleWriteError`, one sentence naming the file and the free space; the file it was
replacing is untouched.
"""

from __future__ import annotations

import errno
import json
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors.numpy import save_file

from core.boundary import describe_os_error
from core.errors import BundleError

# polars and safetensors report an OS error inside their own exception's text
_OS_ERROR = re.compile(r"os error (\d+)")


class BundleWriteError(BundleError):
    """A bundle file could not be written (disk full, permissions, ...)."""


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def as_os_error(exc: BaseException, path: str | Path) -> OSError | None:
    """The OS error behind ``exc`` (itself, or one named in a library's message), or ``None``."""
    if isinstance(exc, OSError):
        return exc
    found = _OS_ERROR.search(str(exc))
    if found is None:
        return None
    code = int(found.group(1))
    return OSError(code, os.strerror(code) if code else "I/O error", str(path))


def write_atomic(path: str | Path, write: Callable[[Path], object]) -> None:
    """Write one file through ``write(temp_path)``, then rename it into place.

    Args:
        path: the final file.
        write: writes the content to the path it is given.
    """
    path = Path(path)
    tmp = _tmp(path)
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        cause = as_os_error(exc, path)
        if cause is None:
            raise
        if cause.filename is None or Path(str(cause.filename)) == tmp:
            # name the file the user knows, not our temp name
            cause = OSError(cause.errno or errno.EIO, cause.strerror or "I/O error", str(path))
        raise BundleWriteError(describe_os_error(cause, path)) from exc


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> None:
    """Write a polars frame to parquet under a temp name, then rename it into place."""
    write_atomic(path, frame.write_parquet)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    """Write JSON (sorted keys, indented) under a temp name, then rename it into place."""
    text = json.dumps(obj, indent=2, sort_keys=True, default=_json_default)
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_tensors_atomic(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str]) -> None:
    """Write numpy arrays to safetensors under a temp name, then rename it into place."""
    arrays = {k: np.ascontiguousarray(v) for k, v in tensors.items()}
    write_atomic(path, lambda tmp: save_file(arrays, str(tmp), metadata=metadata))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
