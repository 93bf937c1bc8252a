"""Atomic writes: every bundle file goes to a temp name and is renamed into place."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors.numpy import save_file


def _tmp(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp")


def write_parquet_atomic(frame: pl.DataFrame, path: str | Path) -> None:
    """Write a polars frame to parquet under a temp name, then rename it into place."""
    path = Path(path)
    tmp = _tmp(path)
    frame.write_parquet(tmp)
    os.replace(tmp, path)


def write_json_atomic(obj: Any, path: str | Path) -> None:
    """Write JSON (sorted keys, indented) under a temp name, then rename it into place."""
    path = Path(path)
    tmp = _tmp(path)
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=_json_default))
    os.replace(tmp, path)


def write_tensors_atomic(tensors: dict[str, np.ndarray], path: str | Path, metadata: dict[str, str]) -> None:
    """Write numpy arrays to safetensors under a temp name, then rename it into place."""
    path = Path(path)
    tmp = _tmp(path)
    save_file({k: np.ascontiguousarray(v) for k, v in tensors.items()}, str(tmp), metadata=metadata)
    os.replace(tmp, path)


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
