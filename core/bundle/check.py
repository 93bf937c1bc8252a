"""Read every part a bundle lists, in full: what ``python -m core info BUNDLE --check`` reports.

Opening a bundle checks headers only (cheap); this reads the content (every parquet row group,
every codes array, every decoder), so damage inside a file shows too.
"""

from __future__ import annotations

import json

import polars as pl
from safetensors import safe_open

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle
from core.bundle.schema import PART_FILES


def _read_file(bundle: Bundle, name: str) -> None:
    path = bundle.path / name
    if name.endswith(".parquet"):
        pl.read_parquet(path)
    elif name.startswith("codes_"):
        SparseCodes.load(path)
    elif name.endswith(".safetensors"):
        with safe_open(str(path), framework="numpy") as handle:
            for key in handle.keys():
                handle.get_tensor(key)
    elif name.endswith(".json"):
        json.loads(path.read_text(encoding="utf-8"))


def check_parts(bundle: Bundle) -> dict[str, str]:
    """Every listed part that fails to read in full, with why.

    Args:
        bundle: an opened bundle.

    Returns:
        Part name -> reason (empty when every part reads).
    """
    damaged: dict[str, str] = {}
    for part, present in bundle.parts.items():
        if not present:
            continue
        for name in PART_FILES.get(part, ()):
            try:
                _read_file(bundle, name)
            except Exception as exc:  # each format raises its own error types for damaged content
                first = (str(exc).strip().splitlines() or [exc.__class__.__name__])[0][:140]
                damaged[part] = f"{name} does not read ({first})"
                break
    return damaged
