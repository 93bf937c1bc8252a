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
    """Write numpy arrays to safetensors (tensors in name order, reproducible bytes), atomically."""
    write_safetensors_exact(dict(sorted(tensors.items())), path, metadata)


# numpy dtype -> safetensors dtype name
_ST_DTYPES = {"int64": "I64", "int32": "I32", "float32": "F32", "float64": "F64", "float16": "F16", "uint8": "U8"}


def write_safetensors_exact(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str]) -> None:
    """Write a safetensors file whose bytes depend only on its content, under a temp name then renamed.

    The safetensors library writes the metadata map in hash order, which changes from one
    process to the next, so two runs of the same build would differ in their bytes. Here the
    header lists the metadata keys sorted and the tensors in the order given (the layout the
    format specifies: an 8-byte little-endian header length, the JSON header padded with spaces
    to a multiple of 8, then each tensor's little-endian bytes); ``safe_open`` reads it as usual.

    Args:
        tensors: name -> array, written in this order.
        path: the file.
        metadata: string -> string metadata.
    """
    header: dict[str, Any] = {"__metadata__": dict(sorted(metadata.items()))}
    arrays, offset = [], 0
    for name, array in tensors.items():
        array = np.ascontiguousarray(array)
        array = array.astype(array.dtype.newbyteorder("<"), copy=False)
        header[name] = {
            "dtype": _ST_DTYPES[array.dtype.name],
            "shape": list(array.shape),
            "data_offsets": [offset, offset + array.nbytes],
        }
        arrays.append(array)
        offset += array.nbytes
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as handle:
            handle.write(len(blob).to_bytes(8, "little"))
            handle.write(blob)
            for array in arrays:
                array.tofile(handle)

    write_atomic(path, write)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
