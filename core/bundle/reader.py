"""Open a comparison bundle and read its parts (lazy polars scans, CSR codes, decoders).

Opening checks the manifest (kind, schema version, required keys) and the header of every
part it lists (parquet footer, safetensors header, JSON), which is cheap. A missing or damaged
harvest part makes the bundle unusable: opening fails with the command that rebuilds it. A
missing or damaged stage part is set aside (:attr:`Bundle.broken`): the bundle opens, that part
reads as absent, and whatever needs it is told which command rebuilds it (rerunning the stage
does, since a stage never needs its own parts).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors import SafetensorError, safe_open

from core.bundle.codes import SparseCodes
from core.bundle.repair import harvest_command, repair_command
from core.bundle.schema import BUNDLE_KIND, MANIFEST, PART_FILES, REQUIRED_PARTS, SCHEMA_VERSION
from core.errors import BundleError
from core.sides import check_side

# keys every manifest carries (the writer adds kind, schema_version and parts itself)
REQUIRED_KEYS = ("kind", "schema_version", "parts", "sides", "n_units")


@dataclass
class Bundle:
    """An opened comparison bundle. Frames are read lazily (``pl.scan_parquet``).

    Attributes:
        path: the bundle folder.
        manifest: the parsed manifest.json.
        broken: stage parts the manifest lists that are missing or unreadable -> why
            (they read as absent; rerunning their stage rebuilds them).
    """

    path: Path
    manifest: dict[str, Any]
    broken: dict[str, str] = field(default_factory=dict)
    _codes: dict[str, SparseCodes] = field(default_factory=dict, repr=False)

    @property
    def parts(self) -> dict[str, bool]:
        """Part name -> present and readable."""
        return {p: bool(ok) and p not in self.broken for p, ok in self.manifest.get("parts", {}).items()}

    def has(self, part: str) -> bool:
        """Whether the part is present and readable (see ``PART_FILES``)."""
        return bool(self.parts.get(part, False))

    def repair_hint(self, part: str) -> str:
        """The command that (re)builds ``part`` of this bundle."""
        return repair_command(self.manifest, self.path, part)

    def side(self, side: str) -> dict[str, Any]:
        """The manifest's description of side ``a`` or ``b``."""
        return self.manifest["sides"][check_side(side)]

    @property
    def n_units(self) -> int:
        return int(self.manifest["n_units"])

    def _need(self, part: str) -> None:
        if part in self.broken:
            raise BundleError(f"Bundle {self.path}: {self.broken[part]}; rebuild it with `{self.repair_hint(part)}`.")
        if not self.has(part):
            raise BundleError(f"Bundle {self.path} has no '{part}' part yet; build it with `{self.repair_hint(part)}`.")

    def scan(self, name: str) -> pl.LazyFrame:
        """Lazily scan one parquet file of the bundle by file name."""
        part = next(p for p, files in PART_FILES.items() if name in files)
        self._need(part)
        return pl.scan_parquet(self.path / name)

    def read(self, name: str) -> pl.DataFrame:
        """Read one parquet file of the bundle whole, with one sentence if its content is damaged."""
        frame = self.scan(name)
        try:
            return frame.collect()
        except pl.exceptions.PolarsError as exc:
            part = next(p for p, files in PART_FILES.items() if name in files)
            raise BundleError(
                f"Bundle file {self.path / name} is damaged ({_first_line(exc)}); rebuild it with "
                f"`{self.repair_hint(part)}`."
            ) from exc

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

    def examples(self, side: str) -> pl.LazyFrame:
        return self.scan(f"examples_{check_side(side)}.parquet")

    def umap(self, side: str) -> pl.LazyFrame:
        return self.scan(f"umap_{check_side(side)}.parquet")

    def similarity(self) -> dict[str, Any]:
        self._need("similarity")
        path = self.path / "similarity.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"Bundle file {path} is damaged ({_first_line(exc)}); rebuild it with "
                f"`{self.repair_hint('similarity')}`."
            ) from exc

    def codes(self, side: str) -> SparseCodes:
        """The CSR codes of one side (loaded once, then kept)."""
        self._need("codes")
        if side not in self._codes:
            path = self.path / f"codes_{check_side(side)}.safetensors"
            try:
                self._codes[side] = SparseCodes.load(path)
            except (BundleError, ValueError) as exc:
                raise BundleError(
                    f"Bundle file {path} is damaged ({_first_line(exc)}); rebuild the bundle with "
                    f"`{self.repair_hint('codes')}`."
                ) from exc
        return self._codes[side]

    def decoder(self, side: str) -> np.ndarray:
        """``W_dec`` of one side, float32 [d_sae, d_in]."""
        self._need("decoders")
        path = self.path / f"decoder_{check_side(side)}.safetensors"
        try:
            with safe_open(str(path), framework="numpy") as handle:
                return handle.get_tensor("W_dec")
        except (SafetensorError, OSError) as exc:
            raise BundleError(
                f"Decoder file {path} is unreadable ({_first_line(exc)}); rebuild the bundle with "
                f"`{self.repair_hint('decoders')}`."
            ) from exc


def _first_line(exc: BaseException, limit: int = 140) -> str:
    lines = str(exc).strip().splitlines()
    line = lines[0] if lines else exc.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def check_part_file(path: Path) -> str | None:
    """Why a part file cannot be read (missing, truncated, not its format), or ``None``; reads headers only.

    Args:
        path: the part file.

    Returns:
        The reason, or ``None`` when its header reads.
    """
    if not path.exists():
        return f"{path.name} is missing"
    if not path.is_file():
        return f"{path.name} is not a file"
    try:
        if path.suffix == ".parquet":
            pl.read_parquet_schema(path)
        elif path.suffix == ".safetensors":
            with safe_open(str(path), framework="numpy") as handle:
                handle.keys()
        elif path.suffix == ".json":
            json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:  # each format's reader raises its own error types for damaged bytes
        return f"{path.name} is damaged ({_first_line(exc, 100)})"
    return None


def open_bundle(path: str | Path) -> Bundle:
    """Open a comparison bundle, checking that it is whole and of a known schema.

    Args:
        path: the bundle folder.

    Returns:
        The opened :class:`Bundle` (stage parts that fail their check are in ``broken``).

    Raises:
        BundleError: not a bundle, of another schema, or a harvest part is missing or damaged.
    """
    path = Path(path).expanduser()
    if path.exists() and not path.is_dir():
        raise BundleError(f"{path} is a file, not a bundle folder; give the folder that holds manifest.json.")
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
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(
            f"{manifest_path} is not valid JSON ({_first_line(exc)}); rebuild the bundle with `python -m core compare ... --out {path} --overwrite`."
        ) from exc
    if not isinstance(manifest, dict) or manifest.get("kind") != BUNDLE_KIND:
        raise BundleError(f"{path} is not a comparison bundle (its manifest has no kind {BUNDLE_KIND!r}).")
    version = manifest.get("schema_version")
    if version != SCHEMA_VERSION:
        raise BundleError(
            f"Bundle {path} has schema version {version!r} but this version reads only {SCHEMA_VERSION}; "
            "rebuild it with this version of the tool."
        )
    missing_keys = [k for k in REQUIRED_KEYS if k not in manifest]
    sides = manifest.get("sides")
    if not missing_keys and not (isinstance(sides, dict) and all(isinstance(sides.get(s), dict) for s in "ab")):
        missing_keys = ["sides.a / sides.b"]
    if not missing_keys and not isinstance(manifest.get("parts"), dict):
        missing_keys = ["parts"]
    if missing_keys:
        raise BundleError(
            f"{manifest_path} lacks the key(s) {', '.join(missing_keys)}, so the bundle cannot be read; rebuild it "
            f"with `{harvest_command(manifest, path)}`."
        )
    broken: dict[str, str] = {}
    for part, present in manifest["parts"].items():
        if not present or part not in PART_FILES:
            continue
        for name in PART_FILES[part]:
            reason = check_part_file(path / name)
            if reason is None:
                continue
            if part in REQUIRED_PARTS:
                raise BundleError(
                    f"Bundle {path} is incomplete: {reason}; only a new harvest makes it: "
                    f"`{harvest_command(manifest, path)}`."
                )
            broken[part] = reason
            break
    return Bundle(path=path, manifest=manifest, broken=broken)
