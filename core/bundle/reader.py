"""The comparison bundle: one folder on disk, the only thing the UI reads.

Layout and schema (version 1) are fixed in docs/architecture.md. Every file is written
to a temporary name and renamed into place; ``manifest.json`` is written last, so a
folder without a manifest is an interrupted build, never a whole bundle. Later stages
(matching, similarity, dashboards, UMAP) add their parts with :func:`add_parts`, which
writes the new files first and the updated manifest after them.
"""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from core.bundle.codes import SparseCodes
from core.errors import BundleError

SCHEMA_VERSION = 1
MANIFEST = "manifest.json"
BUNDLE_KIND = "featurebridge-comparison"
SIDES = ("a", "b")

# part name -> files that make it up (a part is present only when all its files are)
PART_FILES: dict[str, tuple[str, ...]] = {
    "units": ("units.parquet",),
    "docs": ("docs.parquet",),
    "codes": ("codes_a.safetensors", "codes_b.safetensors"),
    "decoders": ("decoder_a.safetensors", "decoder_b.safetensors"),
    "features": ("features_a.parquet", "features_b.parquet"),
    "matches": ("matches.parquet",),
    "weight_matches": ("weight_matches.parquet",),
    "assignment": ("assignment.parquet",),
    "similarity": ("similarity.json",),
    "examples": ("examples_a.parquet", "examples_b.parquet"),
    "dashboards": ("dashboards_a.parquet", "dashboards_b.parquet"),
    "umap": ("umap_a.parquet", "umap_b.parquet"),
}
REQUIRED_PARTS = ("units", "docs", "codes", "decoders", "features")
# work folders a build may leave behind and resume from; never mistaken for user files
WORK_DIRS = (".work",)


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


def _check_side(side: str) -> str:
    if side not in SIDES:
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    return side


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
        codes.save(self.path / f"codes_{_check_side(side)}.safetensors")

    def write_decoder(self, side: str, w_dec: np.ndarray) -> None:
        """Write decoder_{side}.safetensors: ``W_dec`` [d_sae, d_in] float32."""
        w_dec = np.asarray(w_dec, dtype=np.float32)
        write_tensors_atomic(
            {"W_dec": w_dec},
            self.path / f"decoder_{_check_side(side)}.safetensors",
            {"d_sae": str(w_dec.shape[0]), "d_in": str(w_dec.shape[1])},
        )

    def write_features(self, side: str, features: pl.DataFrame) -> None:
        """Write features_{side}.parquet (per-feature statistics)."""
        _require_columns(features, FEATURE_COLUMNS, "features")
        write_parquet_atomic(features, self.path / f"features_{_check_side(side)}.parquet")

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


UNITS_COLUMNS = ("unit", "doc", "pos", "text", "char_start", "char_end")
FEATURE_COLUMNS = ("feature", "freq", "mean", "std", "max", "is_dead", "is_dense", "top_tokens", "is_nonconcept")


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}")


def _present_parts(path: Path) -> dict[str, bool]:
    return {part: all((path / f).is_file() for f in files) for part, files in PART_FILES.items()}


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


@dataclass
class Bundle:
    """An opened comparison bundle. Frames are read lazily (``pl.scan_parquet``).

    Attributes:
        path: the bundle folder.
        manifest: the parsed manifest.json.
    """

    path: Path
    manifest: dict[str, Any]
    _codes: dict[str, SparseCodes] = field(default_factory=dict, repr=False)

    @property
    def parts(self) -> dict[str, bool]:
        return dict(self.manifest.get("parts", {}))

    def has(self, part: str) -> bool:
        """Whether the part is present (see ``PART_FILES``)."""
        return bool(self.parts.get(part, False))

    def side(self, side: str) -> dict[str, Any]:
        """The manifest's description of side ``a`` or ``b``."""
        return self.manifest["sides"][_check_side(side)]

    @property
    def n_units(self) -> int:
        return int(self.manifest["n_units"])

    def _need(self, part: str) -> None:
        if not self.has(part):
            raise BundleError(
                f"Bundle {self.path} has no '{part}' part yet; build it with `python -m core` (see README)."
            )

    def scan(self, name: str) -> pl.LazyFrame:
        """Lazily scan one parquet file of the bundle by file name."""
        part = next(p for p, files in PART_FILES.items() if name in files)
        self._need(part)
        return pl.scan_parquet(self.path / name)

    def units(self) -> pl.LazyFrame:
        return self.scan("units.parquet")

    def docs(self) -> pl.LazyFrame:
        return self.scan("docs.parquet")

    def features(self, side: str) -> pl.LazyFrame:
        return self.scan(f"features_{_check_side(side)}.parquet")

    def matches(self) -> pl.LazyFrame:
        return self.scan("matches.parquet")

    def assignment(self) -> pl.LazyFrame:
        return self.scan("assignment.parquet")

    def examples(self, side: str) -> pl.LazyFrame:
        return self.scan(f"examples_{_check_side(side)}.parquet")

    def umap(self, side: str) -> pl.LazyFrame:
        return self.scan(f"umap_{_check_side(side)}.parquet")

    def similarity(self) -> dict[str, Any]:
        self._need("similarity")
        return json.loads((self.path / "similarity.json").read_text())

    def codes(self, side: str) -> SparseCodes:
        """The CSR codes of one side (loaded once, then kept)."""
        self._need("codes")
        if side not in self._codes:
            self._codes[side] = SparseCodes.load(self.path / f"codes_{_check_side(side)}.safetensors")
        return self._codes[side]

    def decoder(self, side: str) -> np.ndarray:
        """``W_dec`` of one side, float32 [d_sae, d_in]."""
        self._need("decoders")
        path = self.path / f"decoder_{_check_side(side)}.safetensors"
        try:
            with safe_open(str(path), framework="numpy") as handle:
                return handle.get_tensor("W_dec")
        except (SafetensorError, OSError) as exc:
            raise BundleError(f"Decoder file {path} is unreadable ({exc}); rebuild the bundle.") from exc


def open_bundle(path: str | Path) -> Bundle:
    """Open a comparison bundle, checking that it is whole and of a known schema.

    Args:
        path: the bundle folder.

    Returns:
        The opened :class:`Bundle`.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise BundleError(
            f"Bundle folder {path} does not exist; check the path or build one with `python -m core demo`."
        )
    manifest_path = path / MANIFEST
    if not manifest_path.is_file():
        raise BundleError(
            f"{path} has no manifest.json, so it is not a finished comparison bundle; rebuild it (an interrupted build resumes)."
        )
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{manifest_path} is not valid JSON ({exc}); rebuild the bundle.") from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{path} is not a comparison bundle (its manifest has no kind {BUNDLE_KIND!r}).")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"Bundle {path} has schema version {version!r} but this version reads only {SCHEMA_VERSION}; "
            "rebuild it with this version of the tool."
        )
    parts = manifest.get("parts", {})
    for part, present in parts.items():
        if present and part in PART_FILES:
            absent = [f for f in PART_FILES[part] if not (path / f).is_file()]
            if absent:
                raise BundleError(f"Bundle {path} is incomplete: {absent[0]} is missing; rebuild the bundle.")
    return Bundle(path=path, manifest=manifest)
