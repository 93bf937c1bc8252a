"""Open a comparison bundle and read its parts (lazy polars scans, CSR codes, decoders).

Opening checks the manifest (kind, schema version, required keys) and the header of every
part it lists (parquet footer, safetensors header, JSON), which is cheap. A missing or damaged
harvest part makes the bundle unusable: opening fails with the command that rebuilds it. A
missing or damaged stage part is set aside (:attr:`Bundle.broken`): the bundle opens, that part
reads as absent, and whatever needs it is told which command rebuilds it (rerunning the stage
does, since a stage never needs its own parts).

Besides the raw parts, a :class:`Bundle` answers the questions a notebook asks: ``pairs()``
(the chosen pairing), ``pair(a, b)`` (one pair's numbers), ``partners(side, feature)`` and
``similarity()`` (every metric with its null); ``similarity_json()`` is the raw file.
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
from core.bundle.results import PairStats, SimilarityReport, jaccard_of, pearson
from core.bundle.schema import BUNDLE_KIND, MANIFEST, PART_FILES, REQUIRED_PARTS, SCHEMA_VERSION
from core.errors import BundleError, DashboardError
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
    manifest: dict[str, Any] = field(repr=False)
    broken: dict[str, str] = field(default_factory=dict)
    _codes: dict[str, SparseCodes] = field(default_factory=dict, repr=False)

    def __repr__(self) -> str:
        present = [p for p, ok in self.parts.items() if ok]
        return f"Bundle({str(self.path)!r}, n_units={self.manifest.get('n_units')}, parts={present})"

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

    def feature_tokens(self, side: str) -> pl.LazyFrame:
        """Each feature's top tokens over its top 10% activations (written by the matching stage)."""
        return self.scan(f"feature_tokens_{check_side(side)}.parquet")

    def examples(self, side: str) -> pl.LazyFrame:
        return self.scan(f"examples_{check_side(side)}.parquet")

    def umap(self, side: str) -> pl.LazyFrame:
        return self.scan(f"umap_{check_side(side)}.parquet")

    def similarity_json(self) -> dict[str, Any]:
        """similarity.json as written (a dict); :meth:`similarity` is the typed view."""
        self._need("similarity")
        path = self.path / "similarity.json"
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"Bundle file {path} is damaged ({_first_line(exc)}); rebuild it with "
                f"`{self.repair_hint('similarity')}`."
            ) from exc

    def similarity(self) -> SimilarityReport:
        """Every similarity metric with its null and p-value, concepts and sweep where present.

        Returns:
            The :class:`~core.bundle.results.SimilarityReport` (``.metrics`` frame,
            ``.metric("svcca")`` one row).
        """
        return SimilarityReport.from_json(self.similarity_json())

    def pairs(self, kept_only: bool = True) -> pl.DataFrame:
        """The chosen pairing (assignment.parquet): ``feature_a``, ``feature_b``, ``method``, ``corr``, ``kept``, ...

        Args:
            kept_only: only the pairs that survived the filters.

        Returns:
            One row per pair, best correlation first.
        """
        frame = self.assignment()
        if kept_only:
            frame = frame.filter(pl.col("kept").fill_null(False))
        return frame.sort("corr", descending=True, nulls_last=True).collect()

    def partners(self, side: str, feature: int) -> pl.DataFrame:
        """One feature's top-k partners on the other side (matches.parquet), best first.

        Args:
            side: ``a`` or ``b``, the side of ``feature``.
            feature: the feature id.

        Returns:
            The feature's rows of matches.parquet in its own direction (``feature_a``,
            ``feature_b``, ``rank``, ``corr``, ``cos``, ``jaccard``, ``n_coactive``, ``is_mutual``,
            ...), with ``in_assignment`` (the pair is a row of assignment.parquet, a candidate of
            the chosen pairing), ``kept`` (it survived the pairing and filters) and ``reason``.
        """
        side = check_side(side)
        feature = self._check_feature(side, feature)
        direction = "a->b" if side == "a" else "b->a"
        frame = (
            self.matches()
            .filter((pl.col("direction") == direction) & (pl.col(f"feature_{side}") == feature))
            .sort("rank")
            .collect()
        )
        keys = ["feature_a", "feature_b"]
        chosen = self._assigned(frame["feature_a"].to_list(), frame["feature_b"].to_list()).with_columns(
            pl.col(k).cast(frame.schema[k]) for k in keys
        )
        return frame.join(chosen, on=keys, how="left", maintain_order="left").with_columns(
            pl.col("in_assignment").fill_null(False)
        )

    def pair(self, feature_a: int, feature_b: int) -> PairStats:
        """One pair's numbers: r, co-firing counts, Jaccard, cosine, ranks, significance, kept/reason.

        r and the counts come from matches.parquet when the pair is in a top-k list, else they
        are computed exactly from the codes (``source`` says which).

        Args:
            feature_a: the A feature.
            feature_b: the B feature.

        Returns:
            The pair's :class:`~core.bundle.results.PairStats`.
        """
        fa, fb = self._check_feature("a", feature_a), self._check_feature("b", feature_b)
        rows: list[dict[str, Any]] = []
        if self.has("matches"):
            rows = self.matches().filter((pl.col("feature_a") == fa) & (pl.col("feature_b") == fb)).collect().to_dicts()
        by_direction = {r["direction"]: r for r in rows}
        ab, ba = by_direction.get("a->b"), by_direction.get("b->a")
        assigned = self._assigned([fa], [fb]).to_dicts() if self.has("assignment") else []
        chosen = assigned[0] if assigned else {}
        if rows:
            first = ab or ba or {}
            corr, n_co, n_a, n_b = first["corr"], first["n_coactive"], first["n_a"], first["n_b"]
            jac, source = first["jaccard"], "matches"
            cos = first.get("cos")
        else:
            col_a, col_b = _column(self.codes("a"), fa), _column(self.codes("b"), fb)
            on_a, on_b = col_a != 0, col_b != 0
            n_a, n_b, n_co = int(on_a.sum()), int(on_b.sum()), int((on_a & on_b).sum())
            corr, jac, source = pearson(col_a, col_b), jaccard_of(n_co, n_a, n_b), "codes"
            cos = chosen.get("cos") if chosen else self._cosine(fa, fb)
        # the assignment tests exactly this pair; matches.parquet only A's candidates and chosen partner
        q = _first(chosen.get("q"), (ab or {}).get("q"))
        significant = _first(chosen.get("significant"), (ab or {}).get("significant"))
        neglog10_p = _first(chosen.get("neglog10_p"), (ab or {}).get("neglog10_p"))
        return PairStats(
            feature_a=fa,
            feature_b=fb,
            corr=float(corr) if corr is not None else float("nan"),
            n_coactive=int(n_co),
            n_a=int(n_a),
            n_b=int(n_b),
            jaccard=float(jac),
            cos=None if cos is None else float(cos),
            rank_a_to_b=None if ab is None else int(ab["rank"]),
            rank_b_to_a=None if ba is None else int(ba["rank"]),
            is_mutual=bool((ab or ba or {}).get("is_mutual", False)),
            q=None if q is None else float(q),
            significant=None if significant is None else bool(significant),
            neglog10_p=None if neglog10_p is None else float(neglog10_p),
            method=chosen.get("method"),
            kept=chosen.get("kept"),
            reason=chosen.get("reason"),
            source=source,
        )

    def _check_feature(self, side: str, feature: int) -> int:
        d_sae = self.manifest.get("sides", {}).get(side, {}).get("d_sae")
        if isinstance(feature, bool) or not isinstance(feature, int | np.integer):
            raise DashboardError(f"Feature ids are integers; got {feature!r} for side {side}.")
        if d_sae is not None and not 0 <= int(feature) < int(d_sae):
            raise DashboardError(f"Side {side} has features 0..{int(d_sae) - 1}; {feature} is not one of them.")
        return int(feature)

    def _assigned(self, features_a: list[int], features_b: list[int]) -> pl.DataFrame:
        # the assignment's row for each given pair: in_assignment, method, kept, reason, cos, q, ...
        empty = pl.DataFrame(
            schema={
                "feature_a": pl.Int64,
                "feature_b": pl.Int64,
                "in_assignment": pl.Boolean,
                "kept": pl.Boolean,
                "reason": pl.String,
            }
        )
        if not self.has("assignment") or not features_a:
            return empty
        wanted = pl.DataFrame(
            {"feature_a": features_a, "feature_b": features_b}, schema=empty.select("feature_a", "feature_b").schema
        )
        frame = self.assignment().collect()
        keep = [
            c
            for c in ("feature_a", "feature_b", "method", "kept", "reason", "cos", "q", "significant", "neglog10_p")
            if c in frame.columns
        ]
        frame = frame.select(keep).with_columns(
            pl.col("feature_a", "feature_b").cast(pl.Int64), in_assignment=pl.lit(True)
        )
        return wanted.join(frame, on=["feature_a", "feature_b"], how="inner")

    def _cosine(self, feature_a: int, feature_b: int) -> float | None:
        if not self.has("decoders"):
            return None
        dec_a, dec_b = self.decoder("a"), self.decoder("b")
        if dec_a.shape[1] != dec_b.shape[1]:
            return None
        u, v = dec_a[feature_a].astype(np.float64), dec_b[feature_b].astype(np.float64)
        norm = float(np.linalg.norm(u) * np.linalg.norm(v))
        return float(u @ v / norm) if norm > 0 else None

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


def _first(*values: Any) -> Any:
    """The first value that is not None (None if all are)."""
    return next((v for v in values if v is not None), None)


def _column(codes: SparseCodes, feature: int) -> np.ndarray:
    """One feature's activations on every unit, dense float64."""
    out = np.zeros(codes.n_rows, dtype=np.float64)
    hit = codes.indices == feature
    out[codes.row_ids()[hit]] = codes.values[hit]
    return out


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
