"""Read every part a bundle lists, in full: what ``python -m core info BUNDLE --check`` reports.

Opening a bundle checks headers only (cheap); this reads the content (every parquet row group,
every codes array, every decoder), so damage inside a file shows too.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
from safetensors import safe_open

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle, open_bundle
from core.bundle.schema import PART_FILES
from core.errors import BundleError


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


def explain_bundle_failure(path: str | Path, exc: BaseException) -> str | None:
    """The sentence for a failure met while reading the bundle at ``path``, when damage explains it.

    A page or a command that trips over a damaged part sees a library error (polars,
    safetensors, JSON) that names no file. This opens the bundle again and reads every listed
    part in full: the first part that fails is the answer, with the command that rebuilds it.
    When every part reads, the failure was not the bundle's, and ``None`` is returned (the
    caller treats it as a bug).

    Args:
        path: the bundle folder.
        exc: the failure.

    Returns:
        One sentence naming the damaged file and the repairing command, or ``None``.
    """
    try:
        bundle = open_bundle(path)
    except BundleError as opened:
        return str(opened)  # the manifest or a harvest part: opening names it and the command
    damaged = {**bundle.broken, **check_parts(bundle)}
    if not damaged:
        return None
    part, reason = next(iter(damaged.items()))
    more = f" ({len(damaged) - 1} more part(s) fail too: see `python -m core info {bundle.path} --check`)"
    return (
        f"Bundle {bundle.path} is damaged: {reason}; rebuild it with `{bundle.repair_hint(part)}`"
        f"{more if len(damaged) > 1 else ''}."
    )
