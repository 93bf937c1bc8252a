"""Open a comparison bundle and read its parts (lazy polars scans, CSR codes, decoders)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors import SafetensorError, safe_open

from core.bundle.codes import SparseCodes
from core.bundle.schema import BUNDLE_KIND, MANIFEST, PART_FILES, SCHEMA_VERSION
from core.errors import BundleError
from core.sides import check_side


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
        return self.manifest["sides"][check_side(side)]

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
        return self.scan(f"features_{check_side(side)}.parquet")

    def matches(self) -> pl.LazyFrame:
        return self.scan("matches.parquet")

    def assignment(self) -> pl.LazyFrame:
        return self.scan("assignment.parquet")

    def feature_tokens(self, side: str) -> pl.LazyFrame:
        """Each feature's top tokens over its top 10% activations (written by the matching stage)."""
        return self.scan(f"feature_tokens_{check_side(side)}.parquet")

    def examples(self, side: str) -> pl.LazyFrame:
        return self.scan(f"examples_{check_side(side)}.parquet")

    def umap(self, side: str) -> pl.LazyFrame:
        return self.scan(f"umap_{check_side(side)}.parquet")

    def similarity(self) -> dict[str, Any]:
        self._need("similarity")
        return json.loads((self.path / "similarity.json").read_text())

    def codes(self, side: str) -> SparseCodes:
        """The CSR codes of one side (loaded once, then kept)."""
        self._need("codes")
        if side not in self._codes:
            self._codes[side] = SparseCodes.load(self.path / f"codes_{check_side(side)}.safetensors")
        return self._codes[side]

    def decoder(self, side: str) -> np.ndarray:
        """``W_dec`` of one side, float32 [d_sae, d_in]."""
        self._need("decoders")
        path = self.path / f"decoder_{check_side(side)}.safetensors"
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
