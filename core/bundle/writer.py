"""Write a new bundle (parts first, manifest last) and add parts to an existing one."""

from __future__ import annotations

import shutil
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.bundle.io import write_json_atomic, write_parquet_atomic, write_tensors_atomic
from core.bundle.reader import Bundle, open_bundle
from core.bundle.schema import (
    BUNDLE_KIND,
    FEATURE_COLUMNS,
    MANIFEST,
    PART_FILES,
    REQUIRED_PARTS,
    SCHEMA_VERSION,
    UNITS_COLUMNS,
    WORK_DIRS,
    _present_parts,
)
from core.errors import BundleError
from core.sides import check_side


def prepare_output_dir(path: str | Path, overwrite: bool = False) -> Path:
    """Make sure ``path`` may receive a new bundle.

    An absent or empty folder is fine, and so is one holding only an interrupted build's
    work folder (which a resumed build reuses). Anything else is refused unless
    ``overwrite``, in which case the manifest goes first (so the folder stops being a
    bundle at once) and then the rest.

    Args:
        path: the output folder.
        overwrite: replace whatever the folder holds.

    Returns:
        The folder, created.
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise BundleError(f"Output path {path} is a file, not a folder; choose another --out.")
    if path.is_dir():
        foreign = [p for p in path.iterdir() if p.name not in WORK_DIRS]
        if foreign and not overwrite:
            what = "a comparison bundle" if (path / MANIFEST).exists() else f"{len(foreign)} other file(s)"
            raise BundleError(f"Output folder {path} already holds {what}; choose an empty folder or pass --overwrite.")
        if foreign:
            (path / MANIFEST).unlink(missing_ok=True)
            for item in foreign:
                if item.is_dir() and not item.is_symlink():
                    shutil.rmtree(item)
                else:
                    item.unlink(missing_ok=True)
    path.mkdir(parents=True, exist_ok=True)
    return path


class BundleWriter:
    """Writes the parts of a new bundle, then the manifest last.

    Args:
        path: output folder, already checked with :func:`prepare_output_dir`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_units(self, units: pl.DataFrame) -> None:
        """Write units.parquet (unit, doc, pos, text, char_start, char_end)."""
        _require_columns(units, UNITS_COLUMNS, "units")
        write_parquet_atomic(units.select(UNITS_COLUMNS), self.path / "units.parquet")

    def write_docs(self, docs: pl.DataFrame) -> None:
        """Write docs.parquet (doc, text)."""
        _require_columns(docs, ("doc", "text"), "docs")
        write_parquet_atomic(docs.select("doc", "text"), self.path / "docs.parquet")

    def write_codes(self, side: str, codes: SparseCodes) -> None:
        """Write codes_{side}.safetensors."""
        codes.save(self.path / f"codes_{check_side(side)}.safetensors")

    def write_decoder(self, side: str, w_dec: np.ndarray) -> None:
        """Write decoder_{side}.safetensors: ``W_dec`` [d_sae, d_in] float32."""
        w_dec = np.asarray(w_dec, dtype=np.float32)
        write_tensors_atomic(
            {"W_dec": w_dec},
            self.path / f"decoder_{check_side(side)}.safetensors",
            {"d_sae": str(w_dec.shape[0]), "d_in": str(w_dec.shape[1])},
        )

    def write_features(self, side: str, features: pl.DataFrame) -> None:
        """Write features_{side}.parquet (per-feature statistics)."""
        _require_columns(features, FEATURE_COLUMNS, "features")
        write_parquet_atomic(features, self.path / f"features_{check_side(side)}.parquet")

    def finalize(self, manifest: dict[str, Any]) -> Path:
        """Write manifest.json last, with the schema version and which parts exist.

        Args:
            manifest: the manifest body (sides, corpus, settings, versions, timings, ...).

        Returns:
            The bundle folder.
        """
        body = dict(manifest)
        body["schema_version"] = SCHEMA_VERSION
        body["kind"] = BUNDLE_KIND
        body.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        body["parts"] = _present_parts(self.path)
        missing = [p for p in REQUIRED_PARTS if not body["parts"][p]]
        if missing:
            raise RuntimeError(f"bundle is missing required parts {missing}")
        write_json_atomic(body, self.path / MANIFEST)
        return self.path


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}")


def add_parts(
    path: str | Path,
    frames: dict[str, pl.DataFrame] | None = None,
    json_files: dict[str, Any] | None = None,
    manifest_updates: dict[str, Any] | None = None,
) -> Bundle:
    """Add (or replace) parts of an existing bundle, then rewrite its manifest.

    Args:
        path: the bundle folder.
        frames: file name (for example ``"matches.parquet"``) -> frame to write.
        json_files: file name (for example ``"similarity.json"``) -> object to write.
        manifest_updates: top-level manifest keys to set (for example ``{"matching": {...}}``).

    Returns:
        The bundle, reopened.
    """
    bundle = open_bundle(path)
    known = {f for files in PART_FILES.values() for f in files}
    for name in [*(frames or {}), *(json_files or {})]:
        if name not in known:
            raise ValueError(f"{name} is not a bundle file; known: {sorted(known)}")
    for name, frame in (frames or {}).items():
        write_parquet_atomic(frame, bundle.path / name)
    for name, obj in (json_files or {}).items():
        write_json_atomic(obj, bundle.path / name)
    manifest = dict(bundle.manifest)
    manifest.update(manifest_updates or {})
    manifest["parts"] = _present_parts(bundle.path)
    write_json_atomic(manifest, bundle.path / MANIFEST)
    return open_bundle(bundle.path)
