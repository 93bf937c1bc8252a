"""Frames the pages show, read from a bundle: pure polars/numpy, no Streamlit, no torch.

components/cache.py wraps these in ``st.cache_data`` keyed by (bundle path, manifest mtime);
keeping them plain makes them testable without a running app. Modules that pull in torch
(core.explore.search, core.dashboards.read) are imported inside the functions that need them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core.bundle.reader import Bundle
from core.sides import SIDES, other_side

# the "not computed yet" hint for each optional part: what the user runs to add it
PART_HINTS: dict[str, str] = {
    "matches": 'python -m core match BUNDLE  (or core.run_stage("matching", BUNDLE))',
    "assignment": 'python -m core match BUNDLE  (or core.run_stage("matching", BUNDLE))',
    "similarity": 'python -m core similarity BUNDLE  (or core.run_stage("similarity", BUNDLE))',
    "examples": 'python -m core dashboards BUNDLE  (or core.run_stage("dashboards", BUNDLE))',
    "dashboards": 'python -m core dashboards BUNDLE  (or core.run_stage("dashboards", BUNDLE))',
    "umap": 'python -m core umap BUNDLE  (or core.run_stage("umap", BUNDLE))',
    "analyses": 'python -m core analyses BUNDLE  (or core.run_stage("analyses", BUNDLE))',
    "causal": 'python -m core causal BUNDLE  (or core.run_stage("causal", BUNDLE))',
}


def n_features(bundle: Bundle, side: str) -> int:
    """How many features a side's SAE has (from the manifest, else the features frame)."""
    d_sae = bundle.manifest.get("sides", {}).get(side, {}).get("d_sae")
    if d_sae is not None:
        return int(d_sae)
    return int(bundle.features(side).select(pl.len()).collect().item())


def feature_labels(bundle: Bundle, side: str, n_tokens: int = 5) -> pl.DataFrame:
    """``feature``, ``label`` (its first top tokens, for hover text)."""
    return (
        bundle.features(side)
        .select(
            pl.col("feature").cast(pl.Int32),
            pl.col("top_tokens").list.head(n_tokens).list.join(" · ").fill_null("").alias("label"),
        )
        .collect()
    )


def best_partner_frame(bundle: Bundle, side: str) -> pl.DataFrame:
    """Each feature's best partner (rank 1 of matches, this side's direction): ``feature``, ``partner``, ``corr``."""
    schema = {"feature": pl.Int32, "partner": pl.Int32, "corr": pl.Float64}
    if not bundle.has("matches"):
        return pl.DataFrame(schema=schema)
    direction = "a->b" if side == "a" else "b->a"
    return (
        bundle.matches()
        .filter((pl.col("direction") == direction) & (pl.col("rank") == 1))
        .select(
            pl.col(f"feature_{side}").cast(pl.Int32).alias("feature"),
            pl.col(f"feature_{other_side(side)}").cast(pl.Int32).alias("partner"),
            pl.col("corr").cast(pl.Float64),
        )
        .collect()
    )


# the evidence every pair listing shows (written by the matching stage; null in an older bundle)
EVIDENCE_SCHEMA: dict[str, Any] = {
    "n_coactive": pl.Int64,
    "mu": pl.Float64,
    "k_over_mu": pl.Float64,
    "neglog10_p": pl.Float64,
    "q": pl.Float64,
    "flags": pl.List(pl.String),
    "token_overlap": pl.Float64,
    "combined_score": pl.Float64,
    "note": pl.String,
}


def _evidence_columns(names: list[str]) -> list[pl.Expr]:
    return [
        (pl.col(name) if name in names else pl.lit(None)).cast(dtype).alias(name)
        for name, dtype in EVIDENCE_SCHEMA.items()
    ]


def pair_frame(bundle: Bundle, kept_only: bool = False) -> pl.DataFrame:
    """The chosen pairing (assignment.parquet): ``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``,
    ``reason``, then the evidence columns of :data:`EVIDENCE_SCHEMA` (r, k, mu, k/mu, -log10 p, q,
    flags, token overlap, combined score, note)."""
    schema = {
        "feature_a": pl.Int32,
        "feature_b": pl.Int32,
        "corr": pl.Float64,
        "cos": pl.Float64,
        "kept": pl.Boolean,
        "reason": pl.String,
        **EVIDENCE_SCHEMA,
    }
    if not bundle.has("assignment"):
        return pl.DataFrame(schema=schema)
    frame = bundle.assignment()
    names = frame.collect_schema().names()
    frame = frame.select(
        pl.col("feature_a").cast(pl.Int32),
        pl.col("feature_b").cast(pl.Int32),
        pl.col("corr").cast(pl.Float64),
        (pl.col("cos") if "cos" in names else pl.lit(None)).cast(pl.Float64).alias("cos"),
        (pl.col("kept") if "kept" in names else pl.lit(True)).cast(pl.Boolean).alias("kept"),
        (pl.col("reason") if "reason" in names else pl.lit(None)).cast(pl.String).alias("reason"),
        *_evidence_columns(names),
    )
    if kept_only:
        frame = frame.filter(pl.col("kept"))
    return frame.collect()


ORPHAN_DEFINITION = (
    "orphan: a feature that varies on the corpus (not dead, not constant) but whose best partner on the other "
    "side correlates at most min_corr; the count the matching summary reports"
)
MAP_CATEGORIES = ("paired", "unpaired", "orphan", "dead")


def min_corr(bundle: Bundle) -> float:
    """The matching threshold the bundle was built with (0.1, the paper's, when unrecorded)."""
    return float(bundle.manifest.get("matching", {}).get("settings", {}).get("min_corr", 0.1))


def orphan_frame(bundle: Bundle) -> pl.DataFrame:
    """The orphans of both sides under the app's one definition (:data:`ORPHAN_DEFINITION`).

    The same rule as ``core.matching.assign.compute_orphans`` (which writes the manifest's
    ``n_orphans_a`` / ``n_orphans_b``), read back from matches.parquet: a feature with a top-k list
    (every feature except the zero-variance ones, dead or constant, which have none) is an orphan
    when its rank-1 partner correlates ``<= min_corr``.

    Returns:
        ``side``, ``feature``, ``best_partner`` (null when none), ``best_corr``, ``freq``, ``tokens``.
    """
    schema = {
        "side": pl.String,
        "feature": pl.Int32,
        "best_partner": pl.Int32,
        "best_corr": pl.Float64,
        "freq": pl.Float64,
        "tokens": pl.String,
    }
    if not bundle.has("matches"):
        return pl.DataFrame(schema=schema)
    threshold = min_corr(bundle)
    parts = []
    for side in SIDES:
        features = bundle.features(side).select(pl.col("feature").cast(pl.Int32), pl.col("freq").cast(pl.Float64))
        best = best_partner_frame(bundle, side).rename({"partner": "best_partner", "corr": "best_corr"})
        rows = (
            features.collect()
            .join(best, on="feature", how="inner")
            .filter(~(pl.col("best_corr").fill_nan(None).fill_null(-2.0) > threshold))
            .join(feature_labels(bundle, side).rename({"label": "tokens"}), on="feature", how="left")
            .select(pl.lit(side).alias("side"), "feature", "best_partner", "best_corr", "freq", "tokens")
        )
        parts.append(rows)
    return pl.concat(parts).cast(schema)


def umap_points(bundle: Bundle, side: str, pairing: pl.DataFrame | None = None) -> pl.DataFrame:
    """One side's UMAP points with what the map colours and marks.

    Args:
        bundle: an opened bundle with the umap part.
        side: ``"a"`` or ``"b"``.
        pairing: the pairs that count as paired on the map (``feature_a``, ``feature_b``,
            ``corr``); None: the kept pairs of the assignment.

    Returns:
        ``feature``, ``x``, ``y``, ``corr`` (the correlation of the feature's pair in
        ``pairing``, its strongest when several; null when unpaired), ``category`` (one of
        :data:`MAP_CATEGORIES`: ``paired``; ``unpaired``, live and with a partner above the
        threshold but no pair in ``pairing``; ``orphan`` per :data:`ORPHAN_DEFINITION`; ``dead``),
        ``is_orphan`` (category is ``orphan``), ``label`` (top tokens).
    """
    points = bundle.umap(side).select(pl.col("feature").cast(pl.Int32), "x", "y").collect()
    if pairing is None:
        pairing = pair_frame(bundle, kept_only=True)
    paired = (
        pairing.select(pl.col(f"feature_{side}").cast(pl.Int32).alias("feature"), pl.col("corr").cast(pl.Float64))
        .group_by("feature")
        .agg(pl.col("corr").max())
    )
    dead = bundle.features(side).filter(pl.col("is_dead")).select(pl.col("feature").cast(pl.Int32)).collect()
    if bundle.has("matches"):
        # zero variance (never fires, or constant): no correlation is defined, so no top-k list
        listed = best_partner_frame(bundle, side).select("feature")
        dead = points.select("feature").join(listed, on="feature", how="anti")
    orphans = orphan_frame(bundle).filter(pl.col("side") == side).select("feature")
    points = points.join(paired, on="feature", how="left").join(feature_labels(bundle, side), on="feature", how="left")
    category = (
        pl.when(pl.col("corr").is_not_null())
        .then(pl.lit("paired"))
        .when(pl.col("feature").is_in(dead["feature"].implode()))
        .then(pl.lit("dead"))
        .when(pl.col("feature").is_in(orphans["feature"].implode()))
        .then(pl.lit("orphan"))
        .otherwise(pl.lit("unpaired"))
    )
    return points.with_columns(category.alias("category"), pl.col("label").fill_null("")).with_columns(
        (pl.col("category") == "orphan").alias("is_orphan")
    )


def selection_pair_table(bundle: Bundle, side: str, features: list[int]) -> pl.DataFrame:
    """The pairs touching the selected features of ``side`` (all pairs, kept or not), with top tokens.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``, ``reason``, the evidence columns,
        ``tokens_a``, ``tokens_b`` (and ``causal_equivalence``, ``causal_p`` when the causal
        check ran); a selected feature without any pair appears with a null partner.
    """
    pairs = pair_frame(bundle).filter(pl.col(f"feature_{side}").is_in(features))
    mine = pl.DataFrame({f"feature_{side}": features}, schema={f"feature_{side}": pl.Int32})
    table = mine.join(pairs, on=f"feature_{side}", how="left")
    for s in SIDES:
        labels = feature_labels(bundle, s).rename({"feature": f"feature_{s}", "label": f"tokens_{s}"})
        table = table.join(labels, on=f"feature_{s}", how="left")
    table = table.select(
        "feature_a", "feature_b", "corr", "cos", "kept", "reason", *EVIDENCE_SCHEMA, "tokens_a", "tokens_b"
    ).sort("corr", descending=True, nulls_last=True)
    from components.diffing_data import with_causal

    return with_causal(bundle, table)


def partner_table(bundle: Bundle, side: str, feature: int) -> pl.DataFrame:
    """A feature's top-k partners (matches.parquet, its own direction) with their evidence and assignment status.

    Returns:
        ``partner``, ``rank``, ``corr``, ``cos``, the evidence columns, ``assigned`` (the pair is in
        the assignment), ``kept``, ``reason``; best r first. Empty without matches.
    """
    other = other_side(side)
    schema = {"partner": pl.Int32, "rank": pl.Int32, "corr": pl.Float64, "cos": pl.Float64, **EVIDENCE_SCHEMA}
    if not bundle.has("matches"):
        return pl.DataFrame(schema={**schema, "assigned": pl.Boolean, "kept": pl.Boolean, "reason": pl.String})
    frame = bundle.matches()
    names = frame.collect_schema().names()
    rows = (
        frame.filter((pl.col("direction") == f"{side}->{other}") & (pl.col(f"feature_{side}") == feature))
        .select(
            pl.col(f"feature_{other}").cast(pl.Int32).alias("partner"),
            pl.col("rank").cast(pl.Int32),
            pl.col("corr").cast(pl.Float64),
            (pl.col("cos") if "cos" in names else pl.lit(None)).cast(pl.Float64).alias("cos"),
            *_evidence_columns(names),
        )
        .collect()
    )
    status = pair_frame(bundle).filter(pl.col(f"feature_{side}") == feature)
    status = status.select(
        pl.col(f"feature_{other}").alias("partner"), pl.lit(True).alias("assigned"), "kept", "reason"
    )
    return rows.join(status, on="partner", how="left").with_columns(pl.col("assigned").fill_null(False)).sort("rank")


def feature_tokens(bundle: Bundle, side: str) -> Any:
    """A side's top tokens per feature (core.matching.evidence.FeatureTokens), or None without the part."""
    if not bundle.has("feature_tokens"):
        return None
    from core.matching.evidence import FeatureTokens  # numba kernels: loaded only where the part is read

    return FeatureTokens.from_frame(bundle.feature_tokens(side).collect())


def split_group_frame(
    bundle: Bundle, side: str, feature: int, min_score: float = 0.1, tokens: Any = None
) -> tuple[pl.DataFrame, int | None]:
    """A feature's split group: its partners above ``min_score`` combined score, with their distinct tokens.

    Args:
        bundle: an opened bundle with matches.
        side: the feature's side.
        feature: the feature.
        min_score: a partner belongs to the group above this combined score.
        tokens: the other side's :func:`feature_tokens` (read here when None).

    Returns:
        ``(group, k)``: :func:`partner_table` rows of the group (plus ``distinct_tokens``), and ``k``, the
        number of partners above 0.1 when more than 3 pass (the "decomposed into k" badge), else None.
    """
    from core.matching.evidence import split_group

    partners = partner_table(bundle, side, feature).filter(pl.col("combined_score").is_not_null())
    tokens = tokens if tokens is not None else feature_tokens(bundle, other_side(side))
    if tokens is None or partners.height == 0:
        return partners.with_columns(distinct_tokens=pl.lit([], pl.List(pl.String))).head(0), None
    return split_group(partners, tokens, min_score)


def best_corr_frame(bundle: Bundle) -> pl.DataFrame:
    """Each feature's best partner correlation, both directions: ``direction``, ``feature``, ``corr``."""
    if not bundle.has("matches"):
        return pl.DataFrame(schema={"direction": pl.String, "feature": pl.Int64, "corr": pl.Float64})
    return (
        bundle.matches()
        .filter(pl.col("rank") == 1)
        .select(
            "direction",
            pl.when(pl.col("direction") == "a->b")
            .then(pl.col("feature_a"))
            .otherwise(pl.col("feature_b"))
            .cast(pl.Int64)
            .alias("feature"),
            pl.col("corr").cast(pl.Float64),
        )
        .collect()
    )


def similarity_frame(similarity: dict[str, Any]) -> pl.DataFrame:
    """similarity.json's metrics as rows.

    Returns:
        ``metric``, ``status`` (``tested``, ``no null``, or why the value is not testable),
        ``value``, ``null_mean``, ``null_std``, ``p_value``, ``n_pairs``, ``ci_low``, ``ci_high``.
    """
    rows = []
    for name, body in (similarity.get("metrics") or {}).items():
        details = body.get("details") or {}
        rows.append(
            {
                "metric": name,
                "status": details.get("not_testable_reason") or ("tested" if body.get("n_null") else "no null"),
                "value": body.get("value"),
                "null_mean": body.get("null_mean"),
                "null_std": body.get("null_std"),
                "p_value": body.get("p_value"),
                "n_pairs": body.get("n_pairs"),
                "ci_low": body.get("ci_low"),
                "ci_high": body.get("ci_high"),
            }
        )
    schema = {
        "metric": pl.String,
        "status": pl.String,
        "value": pl.Float64,
        "null_mean": pl.Float64,
        "null_std": pl.Float64,
        "p_value": pl.Float64,
        "n_pairs": pl.Int64,
        "ci_low": pl.Float64,
        "ci_high": pl.Float64,
    }
    return pl.DataFrame(rows, schema=schema)


# ---------------------------------------------------------------- faithful text

_SPACE = re.compile(r"\s+")


@dataclass(frozen=True)
class TextIndex:
    """Where every unit's characters are in the original documents.

    Attributes:
        doc: the unit's document, int64 [n_units].
        start: its first character in that document, int64 [n_units].
        end: one past its last character, int64 [n_units].
        docs: document id -> its text.
        tokens: each unit's own text (units.parquet ``text``: the raw token or span, shown on hover).
    """

    doc: np.ndarray
    start: np.ndarray
    end: np.ndarray
    docs: dict[int, str]
    tokens: list[str]


def load_text_index(bundle: Bundle) -> TextIndex:
    """The units' character offsets and the documents' text of a bundle (units.parquet, docs.parquet)."""
    units = bundle.units().select("doc", "char_start", "char_end", "text").collect()
    return text_index_from_frames(units, bundle.docs().select("doc", "text").collect())


def text_index_from_frames(units: pl.DataFrame, docs: pl.DataFrame) -> TextIndex:
    """A :class:`TextIndex` from a units frame (``doc``, ``char_start``, ``char_end``, ``text``) and docs (``doc``, ``text``)."""
    return TextIndex(
        doc=units["doc"].to_numpy().astype(np.int64),
        start=units["char_start"].to_numpy().astype(np.int64),
        end=units["char_end"].to_numpy().astype(np.int64),
        docs=dict(zip(docs["doc"].to_list(), docs["text"].to_list(), strict=True)),
        tokens=units["text"].fill_null("").to_list(),
    )


def window_segments(index: TextIndex, first: int, n: int) -> list[tuple[str, int | None]] | None:
    """The original text of units ``first .. first + n - 1`` as segments: each unit's characters, and the gaps.

    Works the same for token units and aligned spans (both carry character offsets); sub-word pieces
    join as the text has them ("infallible", not "in fall ible"). Whitespace between units becomes
    one space.

    Args:
        index: the bundle's :class:`TextIndex`.
        first: the window's first unit.
        n: how many units.

    Returns:
        ``(text, i)`` for the window's i-th unit and ``(text, None)`` for the text between two units;
        None when the offsets cannot place the window (units of several documents, offsets out of
        order or outside the text): the caller then shows the units' own texts.
    """
    if n <= 0 or first < 0 or first + n > index.doc.shape[0]:
        return None
    doc = int(index.doc[first])
    text = index.docs.get(doc)
    if text is None:
        return None
    segments: list[tuple[str, int | None]] = []
    pos = int(index.start[first])
    for i in range(n):
        u = first + i
        s, e = int(index.start[u]), int(index.end[u])
        if int(index.doc[u]) != doc or s < pos or e <= s or e > len(text):
            return None
        if s > pos:
            segments.append((_SPACE.sub(" ", text[pos:s]), None))
        segments.append((text[s:e], i))
        pos = e
    return segments


def context_text(index: TextIndex, unit: int, window: int) -> str:
    """The unit in its original context, its own characters in [brackets] (plain text, for hovers and tables).

    Args:
        index: the bundle's :class:`TextIndex`.
        unit: the unit.
        window: units of context on each side (within its document).

    Returns:
        e.g. ``"An [infallible] method of"`` for the unit ``infallible``, whitespace collapsed.
    """
    doc = index.doc
    lo = unit
    while lo > 0 and unit - lo < window and doc[lo - 1] == doc[unit]:
        lo -= 1
    hi = unit
    while hi + 1 < doc.shape[0] and hi - unit < window and doc[hi + 1] == doc[unit]:
        hi += 1
    segments = window_segments(index, lo, hi - lo + 1)
    if segments is None:
        # offsets that cannot place the window: the units' own texts, joined by spaces
        return " ".join(f"[{index.tokens[u]}]" if u == unit else index.tokens[u] for u in range(lo, hi + 1))
    return "".join(f"[{t}]" if i == unit - lo else t for t, i in segments).strip()


def _columns(bundle: Bundle, side: str, features: list[int]) -> np.ndarray:
    """Dense activations of a few features on every unit, float64 [n_units, len(features)].

    Scans the CSR ``indices`` once (vectorised) instead of converting the whole matrix to CSC,
    which would cost seconds per call on a large bundle.
    """
    codes = bundle.codes(side)
    if not features:
        return np.zeros((codes.n_rows, 0), np.float64)
    unique, inverse = np.unique(np.asarray(features, dtype=np.int64), return_inverse=True)
    out = np.zeros((codes.n_rows, unique.size), np.float64)
    hit = np.flatnonzero(np.isin(codes.indices, unique))
    rows = np.searchsorted(codes.indptr, hit, side="right") - 1
    out[rows, np.searchsorted(unique, codes.indices[hit])] = codes.values[hit]
    return out[:, inverse]


def _column(bundle: Bundle, side: str, feature: int) -> np.ndarray:
    """One feature's activation on every unit (dense float32 [n_units])."""
    return _columns(bundle, side, [int(feature)])[:, 0].astype(np.float32)


def unit_pair_frame(
    bundle: Bundle,
    feature_a: int,
    feature_b: int,
    window: int = 6,
    limit: int = 20_000,
    text_index: TextIndex | None = None,
) -> pl.DataFrame:
    """Units where A ``feature_a`` or B ``feature_b`` fires, with both activations and the token in context.

    Args:
        bundle: an opened bundle.
        feature_a: the A feature.
        feature_b: the B feature.
        window: context units on each side (same document) in the hover text.
        limit: keep at most this many units (the strongest by max activation), to stay responsive.
        text_index: the bundle's :class:`TextIndex` (read from the bundle when not given).

    Returns:
        ``unit``, ``act_a``, ``act_b``, ``context`` (the original text around the unit, its characters
        in [brackets]).
    """
    act_a, act_b = _column(bundle, "a", feature_a), _column(bundle, "b", feature_b)
    rows = np.flatnonzero((act_a > 0) | (act_b > 0))
    if rows.size > limit:
        rows = rows[np.argsort(-np.maximum(act_a[rows], act_b[rows]))[:limit]]
        rows.sort()
    index = text_index if text_index is not None else load_text_index(bundle)
    contexts = [context_text(index, u, window) for u in rows.tolist()]
    return pl.DataFrame(
        {"unit": rows.astype(np.int64), "act_a": act_a[rows], "act_b": act_b[rows], "context": contexts},
        schema={"unit": pl.Int64, "act_a": pl.Float32, "act_b": pl.Float32, "context": pl.String},
    )


def pair_stats(frame: pl.DataFrame, n_units: int) -> dict[str, float]:
    """Pearson over all units (zeros included) and co-activation Jaccard, from a unit-pair frame."""
    a = np.zeros(n_units, np.float64)
    b = np.zeros(n_units, np.float64)
    units = frame["unit"].to_numpy()
    a[units], b[units] = frame["act_a"].to_numpy(), frame["act_b"].to_numpy()
    fa, fb = a > 0, b > 0
    union = int((fa | fb).sum())
    with np.errstate(invalid="ignore", divide="ignore"):
        pearson = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else float("nan")
    return {
        "pearson": pearson,
        "jaccard": float((fa & fb).sum() / union) if union else float("nan"),
        "n_a": int(fa.sum()),
        "n_b": int(fb.sum()),
        "n_both": int((fa & fb).sum()),
    }


def correlation_block(bundle: Bundle, features_a: list[int], features_b: list[int]) -> pl.DataFrame:
    """Exact Pearson correlation (over all units) for every (A, B) pair of two small feature sets.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``: one row per cell, A-major.
    """
    if not features_a or not features_b:
        return pl.DataFrame(schema={"feature_a": pl.Int32, "feature_b": pl.Int32, "corr": pl.Float64})
    cols = {
        side: _columns(bundle, side, [int(f) for f in feats]) for side, feats in (("a", features_a), ("b", features_b))
    }
    xa, xb = cols["a"] - cols["a"].mean(axis=0), cols["b"] - cols["b"].mean(axis=0)
    na, nb = np.linalg.norm(xa, axis=0), np.linalg.norm(xb, axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = (xa.T @ xb) / np.outer(na, nb)
    corr[~np.isfinite(corr)] = 0.0
    return pl.DataFrame(
        {
            "feature_a": np.repeat(np.asarray(features_a, np.int32), len(features_b)),
            "feature_b": np.tile(np.asarray(features_b, np.int32), len(features_a)),
            "corr": corr.ravel(),
        }
    )


def sweep_frame(bundle: Bundle) -> pl.DataFrame | None:
    """A layer x layer sweep if the bundle's similarity.json carries one (``sweep`` rows), else None."""
    if not bundle.has("similarity"):
        return None
    rows = bundle.similarity_json().get("sweep")
    if not rows:
        return None
    return pl.DataFrame(rows)


def sweep_cells(sweep: pl.DataFrame, metric: str) -> tuple[pl.DataFrame, str, str]:
    """One metric's cells of a layer x layer sweep, in layer order, with the columns that name them.

    Args:
        sweep: the frame :func:`sweep_frame` returns.
        metric: the metric to keep.

    Returns:
        (cells, row column, column column): the hook labels (``label_a``, ``label_b``) when the sweep
        carries them, else the layer numbers.
    """
    cells = sweep.filter(pl.col("metric") == metric).sort("layer_a", "layer_b")
    labelled = {"label_a", "label_b"} <= set(cells.columns)
    row, col = ("label_a", "label_b") if labelled else ("layer_a", "layer_b")
    return cells, row, col


def methods_record(bundle: Bundle) -> dict[str, Any]:
    """What was compared, with which settings, seeds and versions: the paper appendix's methods JSON."""
    m = bundle.manifest
    record: dict[str, Any] = {
        "bundle": str(bundle.path),
        "schema_version": m.get("schema_version"),
        "created_at": m.get("created_at"),
        "sides": {
            s: {
                k: v
                for k, v in m.get("sides", {}).get(s, {}).items()
                if k in ("label", "model", "sae", "hook", "d_in", "d_sae", "architecture", "alive_features")
            }
            for s in SIDES
        },
        "corpus": m.get("corpus"),
        "n_units": m.get("n_units"),
        "harvest": m.get("settings", m.get("harvest")),
        "versions": m.get("versions"),
        "parts": m.get("parts"),
    }
    for stage in ("matching", "similarity", "dashboards", "umap"):
        if stage in m:
            body = m[stage]
            record[stage] = {
                k: v for k, v in body.items() if k in ("settings", "summary", "aligned", "n_relations", "n_pairs")
            }
    if bundle.has("similarity"):
        sim = bundle.similarity_json()
        record["similarity_results"] = {
            name: {
                k: body.get(k) for k in ("value", "null_mean", "null_std", "n_null", "p_value", "n_pairs", "details")
            }
            for name, body in (sim.get("metrics") or {}).items()
        }
        record["similarity_p_value_rule"] = sim.get("p_value_rule")
    return record


HIT_COLUMNS = ("side", "feature", "why", "tokens", "partner", "partner_corr", "partner_q", "partner_status")


def best_partners(bundle: Bundle, side: str) -> pl.DataFrame:
    """Each feature's partner to show beside it: its kept pair, else its strongest assigned pair, else its rank-1 match.

    Returns:
        ``feature``, ``partner``, ``partner_corr``, ``partner_q``, ``partner_status``
        (``kept`` / ``dropped`` / ``best match``).
    """
    other = other_side(side)
    schema = {
        "feature": pl.Int32,
        "partner": pl.Int32,
        "partner_corr": pl.Float64,
        "partner_q": pl.Float64,
        "partner_status": pl.String,
    }
    parts = []
    if bundle.has("assignment"):
        frame = _with_columns(bundle.assignment(), {"q": pl.Float64, "kept": pl.Boolean})
        parts.append(
            frame.select(
                pl.col(f"feature_{side}").cast(pl.Int32).alias("feature"),
                pl.col(f"feature_{other}").cast(pl.Int32).alias("partner"),
                pl.col("corr").cast(pl.Float64).alias("partner_corr"),
                pl.col("q").cast(pl.Float64).alias("partner_q"),
                pl.when(pl.col("kept").fill_null(True))
                .then(pl.lit("kept"))
                .otherwise(pl.lit("dropped"))
                .alias("partner_status"),
                pl.col("kept").fill_null(True).cast(pl.Int8).alias("_order"),
            ).collect()
        )
    if bundle.has("matches"):
        direction = "a->b" if side == "a" else "b->a"
        frame = _with_columns(bundle.matches(), {"q": pl.Float64})
        parts.append(
            frame.filter((pl.col("direction") == direction) & (pl.col("rank") == 1))
            .select(
                pl.col(f"feature_{side}").cast(pl.Int32).alias("feature"),
                pl.col(f"feature_{other}").cast(pl.Int32).alias("partner"),
                pl.col("corr").cast(pl.Float64).alias("partner_corr"),
                pl.col("q").cast(pl.Float64).alias("partner_q"),
                pl.lit("best match").alias("partner_status"),
                pl.lit(-1, pl.Int8).alias("_order"),
            )
            .collect()
        )
    if not parts:
        return pl.DataFrame(schema=schema)
    return (
        pl.concat(parts)
        .sort(["feature", "_order", "partner_corr"], descending=[False, True, True], nulls_last=True)
        .unique("feature", keep="first", maintain_order=True)
        .select(list(schema))
        .cast(schema)
    )


def search_hits(bundle: Bundle, query: str) -> pl.DataFrame:
    """Every feature matching a search: a feature id (``a12``, ``b7`` or ``12`` for both sides) or a token.

    Returns:
        :data:`HIT_COLUMNS`: ``side``, ``feature``, ``why`` (what matched), ``tokens`` (its top
        tokens) and the partner to show beside it (:func:`best_partners`); best first, empty for no hit.
    """
    query = query.strip()
    empty = pl.DataFrame(schema={"side": pl.String, "feature": pl.Int32, "why": pl.String})
    if not query:
        return _hits_with_partners(bundle, empty)
    low = query.lower()
    if low[:1] in ("a", "b") and low[1:].isdigit():
        side, fid = low[0], int(low[1:])
        hits = empty
        if fid < n_features(bundle, side):
            hits = pl.DataFrame({"side": [side], "feature": [fid], "why": ["id"]}, schema=empty.schema)
        return _hits_with_partners(bundle, hits)
    if low.isdigit():
        fid = int(low)
        rows = [(s, fid, "id") for s in SIDES if fid < n_features(bundle, s)]
        return _hits_with_partners(bundle, pl.DataFrame(rows, schema=empty.schema, orient="row"))
    from core.dashboards.read import has_dashboards
    from core.explore.search import search_token

    if has_dashboards(bundle):
        found = search_token(bundle, query, limit=None)
        hits = found.select(
            pl.col("side").cast(pl.String),
            pl.col("feature").cast(pl.Int32),
            pl.format("token '{}' · mean {}", pl.col("token"), pl.col("mean_act").round(3)).alias("why"),
        )
        return _hits_with_partners(bundle, hits)
    # without dashboards: the features whose top tokens list the token
    frames = []
    for side in SIDES:
        frames.append(
            bundle.features(side)
            .filter(pl.col("top_tokens").list.eval(pl.element().str.to_lowercase().str.strip_chars() == low).list.any())
            .select(pl.lit(side).alias("side"), pl.col("feature").cast(pl.Int32), pl.lit("top token").alias("why"))
            .collect()
        )
    return _hits_with_partners(bundle, pl.concat(frames))


def _hits_with_partners(bundle: Bundle, hits: pl.DataFrame) -> pl.DataFrame:
    parts = []
    for side in SIDES:
        rows = hits.filter(pl.col("side") == side).with_row_index("_order")
        rows = rows.join(feature_labels(bundle, side).rename({"label": "tokens"}), on="feature", how="left")
        parts.append(rows.join(best_partners(bundle, side), on="feature", how="left"))
    out = pl.concat(parts, how="diagonal_relaxed") if parts else hits
    schema = {
        "side": pl.String,
        "feature": pl.Int32,
        "why": pl.String,
        "tokens": pl.String,
        "partner": pl.Int32,
        "partner_corr": pl.Float64,
        "partner_q": pl.Float64,
        "partner_status": pl.String,
    }
    for c, t in schema.items():
        if c not in out.columns:
            out = out.with_columns(pl.lit(None, dtype=t).alias(c))
    # the hits' own order (best first) across both sides
    order = hits.with_row_index("_rank").select("side", "feature", "_rank")
    return out.join(order, on=["side", "feature"], how="left").sort("_rank").select(list(schema)).cast(schema)


# ---------------------------------------------------------------- every pair, one table

# the pairs table's leading columns, in order; evidence columns a newer matching stage adds follow them
PAIR_COLUMNS = (
    "feature_a",
    "feature_b",
    "status",
    "reason",
    "corr",
    "q",
    "significant",
    "n_coactive",
    "n_a",
    "n_b",
    "jaccard",
    "cos",
    "rank_ab",
    "rank_ba",
    "is_mutual",
    "split_a",
    "split_b",
    "method",
    "reasons",
    "tokens_a",
    "tokens_b",
)
STATUSES = ("kept", "dropped", "candidate")
# statistics both matches.parquet and assignment.parquet may carry: the assignment's (exact for its pairs) win
_SHARED_STATS = ("corr", "cos", "jaccard", "n_coactive", "q", "significant", "mu", "neglog10_p")


def _with_columns(frame: pl.LazyFrame, wanted: dict[str, pl.DataType]) -> pl.LazyFrame:
    """Add any of ``wanted`` the frame lacks as typed nulls (older bundles carry fewer columns)."""
    names = frame.collect_schema().names()
    return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in wanted.items() if c not in names])


def assignment_frame(bundle: Bundle) -> pl.DataFrame:
    """assignment.parquet with every column it has (lists kept as lists), plus both features' top tokens."""
    if not bundle.has("assignment"):
        return pl.DataFrame(schema={"feature_a": pl.Int32, "feature_b": pl.Int32})
    frame = bundle.assignment().collect()
    for s in SIDES:
        labels = feature_labels(bundle, s).rename({"feature": f"feature_{s}", "label": f"tokens_{s}"})
        frame = frame.join(labels.cast({f"feature_{s}": frame.schema[f"feature_{s}"]}), on=f"feature_{s}", how="left")
    return frame


def pairs_table(bundle: Bundle) -> pl.DataFrame:
    """Every pair the bundle knows: the assignment's (kept and dropped) and every top-k candidate.

    Returns:
        One row per (feature_a, feature_b): :data:`PAIR_COLUMNS` then any further evidence
        columns of assignment.parquet / matches.parquet. ``status`` is ``kept`` / ``dropped``
        (in the assignment) or ``candidate`` (only in a top-k list); ``reason`` is the first
        reason a dropped pair was dropped; ``rank_ab`` is B's rank in A's top-k (``rank_ba``
        the other way); ``split_a`` marks a pair inside A's 1 -> k split group (``split_b``
        B's); ``n_a`` / ``n_b`` are the features' firing counts.
    """
    stat_types = {
        "corr": pl.Float64,
        "cos": pl.Float64,
        "jaccard": pl.Float64,
        "n_coactive": pl.Int64,
        "q": pl.Float64,
        "significant": pl.Boolean,
        "mu": pl.Float64,
        "neglog10_p": pl.Float64,
    }
    keys = [pl.col("feature_a").cast(pl.Int32), pl.col("feature_b").cast(pl.Int32)]
    candidates: pl.DataFrame | None = None
    if bundle.has("matches"):
        m = _with_columns(bundle.matches(), {**stat_types, "is_mutual": pl.Boolean, "is_split": pl.Boolean})
        ab = m.filter(pl.col("direction") == "a->b").select(
            *keys,
            pl.col("rank").cast(pl.Int32).alias("rank_ab"),
            *[pl.col(c).cast(t) for c, t in stat_types.items()],
            pl.col("is_mutual").cast(pl.Boolean),
            pl.col("is_split").cast(pl.Boolean).alias("split_a"),
        )
        ba = m.filter(pl.col("direction") == "b->a").select(
            *keys,
            pl.col("rank").cast(pl.Int32).alias("rank_ba"),
            *[
                pl.col(c).cast(t).alias(f"{c}_ba")
                for c, t in stat_types.items()
                if c in ("corr", "cos", "jaccard", "n_coactive")
            ],
            pl.col("is_mutual").cast(pl.Boolean).alias("is_mutual_ba"),
            pl.col("is_split").cast(pl.Boolean).alias("split_b"),
        )
        candidates = (
            ab.join(ba, on=["feature_a", "feature_b"], how="full", coalesce=True)
            .with_columns(
                [pl.coalesce(c, f"{c}_ba").alias(c) for c in ("corr", "cos", "jaccard", "n_coactive")]
                + [pl.coalesce("is_mutual", "is_mutual_ba").alias("is_mutual")]
            )
            .drop([f"{c}_ba" for c in ("corr", "cos", "jaccard", "n_coactive")] + ["is_mutual_ba"])
            .collect()
        )
    if bundle.has("assignment"):
        asg = _with_columns(bundle.assignment(), {**stat_types, "kept": pl.Boolean, "reason": pl.String}).collect()
        asg = asg.with_columns(
            pl.col("feature_a").cast(pl.Int32),
            pl.col("feature_b").cast(pl.Int32),
            pl.when(pl.col("kept").fill_null(True)).then(pl.lit("kept")).otherwise(pl.lit("dropped")).alias("status"),
        ).drop("kept")
        if candidates is None:
            table = asg
        else:
            table = asg.join(candidates, on=["feature_a", "feature_b"], how="full", coalesce=True, suffix="_m")
            shared = [c for c in _SHARED_STATS if f"{c}_m" in table.columns]
            table = table.with_columns([pl.coalesce(c, f"{c}_m").alias(c) for c in shared]).drop(
                [f"{c}_m" for c in shared]
            )
    elif candidates is not None:
        table = candidates
    else:
        return pl.DataFrame(schema={c: pl.Int32 for c in ("feature_a", "feature_b")})
    table = table.with_columns(
        pl.col("status").fill_null("candidate") if "status" in table.columns else pl.lit("candidate").alias("status")
    )
    for s in SIDES:
        counts = bundle.features(s).select(
            pl.col("feature").cast(pl.Int32).alias(f"feature_{s}"),
            (pl.col("freq") * bundle.n_units).round(0).cast(pl.Int64).alias(f"_n_{s}"),
        )
        labels = feature_labels(bundle, s).rename({"feature": f"feature_{s}", "label": f"tokens_{s}"})
        table = table.join(counts.collect(), on=f"feature_{s}", how="left").join(labels, on=f"feature_{s}", how="left")
        own = f"n_{s}"
        table = table.with_columns(
            (pl.coalesce(own, f"_n_{s}") if own in table.columns else pl.col(f"_n_{s}")).alias(own)
        ).drop(f"_n_{s}")
    for c, t in {
        "reason": pl.String,
        "rank_ab": pl.Int32,
        "rank_ba": pl.Int32,
        "is_mutual": pl.Boolean,
        "split_a": pl.Boolean,
        "split_b": pl.Boolean,
        "method": pl.String,
        "reasons": pl.List(pl.String),
        **stat_types,
    }.items():
        if c not in table.columns:
            table = table.with_columns(pl.lit(None, dtype=t).alias(c))
    table = table.with_columns(pl.col("split_a").fill_null(False), pl.col("split_b").fill_null(False))
    first = list(PAIR_COLUMNS)
    order = pl.col("status").replace_strict({s: i for i, s in enumerate(STATUSES)}, default=len(STATUSES))
    return (
        table.select(first + [c for c in table.columns if c not in first])
        .with_columns(order.alias("_order"))
        .sort(["_order", "corr"], descending=[False, True], nulls_last=True)
        .drop("_order")
    )


def filter_pairs(table: pl.DataFrame, f: Any) -> pl.DataFrame:
    """The rows of a :func:`pairs_table` that pass a ``components.state.PairFilter``.

    Args:
        table: the pairs table.
        f: the filter (``kept``, ``min_corr``, ``max_q``, ``reason``, ``splits_only``, ``text``).

    Returns:
        The passing rows, in table order.
    """
    cond = pl.lit(True)
    if f.kept == "kept":
        cond &= pl.col("status") == "kept"
    elif f.kept == "dropped":
        cond &= pl.col("status") == "dropped"
    elif f.kept == "assigned":
        cond &= pl.col("status") != "candidate"
    if f.min_corr is not None:
        cond &= pl.col("corr").fill_nan(None) >= f.min_corr
    if f.max_q is not None:
        cond &= pl.col("q").fill_nan(None) <= f.max_q
    if f.reason:
        cond &= pl.col("reason") == f.reason
    if f.splits_only:
        cond &= pl.col("split_a") | pl.col("split_b")
    text = (f.text or "").strip().lower()
    if text:
        cond &= pl.col("tokens_a").str.to_lowercase().str.contains(text, literal=True).fill_null(False) | pl.col(
            "tokens_b"
        ).str.to_lowercase().str.contains(text, literal=True).fill_null(False)
    return table.filter(cond.fill_null(False))


def split_groups(bundle: Bundle) -> pl.DataFrame:
    """1 -> k split groups: a feature whose concept is shared by several features on the other side.

    Read from matches.parquet's ``is_split`` rows (``core.matching.assign.compute_splits``: two or
    more partners above the split threshold in the hub's own top-k).

    Returns:
        ``side`` (the hub's side), ``feature`` (the hub), ``k``, ``partners`` (list, strongest
        first), ``partner_corr`` (list), ``kept_partner`` (the hub's kept pair, null if none),
        ``tokens`` (the hub's top tokens).
    """
    schema = {
        "side": pl.String,
        "feature": pl.Int32,
        "k": pl.UInt32,
        "partners": pl.List(pl.Int32),
        "partner_corr": pl.List(pl.Float64),
        "kept_partner": pl.Int32,
        "tokens": pl.String,
    }
    if not bundle.has("matches") or "is_split" not in bundle.matches().collect_schema().names():
        return pl.DataFrame(schema=schema)
    kept = pair_frame(bundle, kept_only=True)
    parts = []
    for side, direction in (("a", "a->b"), ("b", "b->a")):
        other = other_side(side)
        groups = (
            bundle.matches()
            .filter((pl.col("direction") == direction) & pl.col("is_split"))
            .select(
                pl.col(f"feature_{side}").cast(pl.Int32).alias("feature"),
                pl.col(f"feature_{other}").cast(pl.Int32).alias("partner"),
                pl.col("corr").cast(pl.Float64),
            )
            .sort(["feature", "corr"], descending=[False, True])
            .group_by("feature", maintain_order=True)
            .agg(pl.len().alias("k"), pl.col("partner").alias("partners"), pl.col("corr").alias("partner_corr"))
            .collect()
        )
        kept_partner = kept.select(
            pl.col(f"feature_{side}").alias("feature"), pl.col(f"feature_{other}").alias("kept_partner")
        ).unique("feature", keep="first")
        parts.append(
            groups.join(kept_partner, on="feature", how="left")
            .join(feature_labels(bundle, side).rename({"label": "tokens"}), on="feature", how="left")
            .with_columns(pl.lit(side).alias("side"))
        )
    return (
        pl.concat(parts)
        .select(list(schema))
        .cast(schema)
        .sort(["k", "side", "feature"], descending=[True, False, False])
    )


def partner_lists(bundle: Bundle, side: str, feature: int, n: int = 10) -> pl.DataFrame:
    """One feature's partners two ways: by activation correlation (matches) and by decoder cosine (weight_matches).

    Returns:
        ``rank``, ``by_activation`` (partner id), ``corr``, ``by_decoder`` (partner id),
        ``cos``, ``in_both`` (the decoder partner is also among the activation partners); up
        to ``n`` rows, null where one list is shorter or absent.
    """
    other = other_side(side)
    direction = "a->b" if side == "a" else "b->a"
    lists = []
    for part, value, name in (("matches", "corr", "by_activation"), ("weight_matches", "cos", "by_decoder")):
        if bundle.has(part):
            frame = bundle.matches() if part == "matches" else bundle.scan("weight_matches.parquet")
            names = frame.collect_schema().names()
            if "basis" in names:
                frame = frame.filter(pl.col("basis") == "decoder")
            rows = (
                frame.filter((pl.col("direction") == direction) & (pl.col(f"feature_{side}") == int(feature)))
                .select(
                    pl.col("rank").cast(pl.Int32),
                    pl.col(f"feature_{other}").cast(pl.Int32).alias(name),
                    pl.col(value).cast(pl.Float64),
                )
                .sort("rank")
                .head(n)
                .collect()
            )
        else:
            rows = pl.DataFrame(schema={"rank": pl.Int32, name: pl.Int32, value: pl.Float64})
        lists.append(rows)
    ranks = pl.DataFrame({"rank": np.arange(1, n + 1, dtype=np.int32)})
    out = ranks.join(lists[0], on="rank", how="left").join(lists[1], on="rank", how="left")
    both = set(out["by_activation"].drop_nulls().to_list())
    out = out.with_columns(pl.col("by_decoder").is_in(list(both)).fill_null(False).alias("in_both"))
    return out.filter(pl.col("by_activation").is_not_null() | pl.col("by_decoder").is_not_null())


def p_floor_note(similarity: dict[str, Any]) -> str | None:
    """A note when every metric's p-value sits at the ``1 / (n + 1)`` floor of its permutation null.

    Returns:
        The sentence to show, or None when some p-value is above its floor.
    """
    rows = [
        (name, body.get("p_value"), body.get("n_null"))
        for name, body in (similarity.get("metrics") or {}).items()
        if body.get("p_value") is not None and body.get("n_null")
    ]
    if not rows:
        return None
    if all(abs(float(p) - 1.0 / (int(n) + 1)) <= 1e-12 for _, p, n in rows):
        n_values = sorted({int(n) for _, _, n in rows})
        n_text = " / ".join(f"{n:,}" for n in n_values)
        floor = 1.0 / (max(n_values) + 1)
        return (
            f"Every p-value sits at the floor 1/(n+1) of its permutation null (n = {n_text} samples): no null "
            f"sample reached the observed value, so read each as p <= {floor:.2g}. The true p may be smaller: "
            "more null samples would lower the floor; how far beyond the null a value lies is the gap to the "
            "null mean in null standard deviations."
        )
    return None


def selection_rows(
    table: pl.DataFrame, selection: dict[str, tuple[int, ...]], include_dropped: bool = True
) -> pl.DataFrame:
    """The assignment's pairs touching a selection, from a :func:`pairs_table`; selected features with no pair get a row too.

    Args:
        table: the pairs table.
        selection: side -> selected feature ids.
        include_dropped: also list dropped pairs (else kept only).

    Returns:
        The table's columns, strongest first; an unpaired selected feature has a null partner.
    """
    wanted = ["kept", "dropped"] if include_dropped else ["kept"]
    rows = table.filter(pl.col("status").is_in(wanted))
    touch = pl.lit(False)
    for side in SIDES:
        ids = [int(f) for f in selection.get(side, ())]
        if ids:
            touch |= pl.col(f"feature_{side}").is_in(ids)
    found = rows.filter(touch)
    lonely = []
    for side in SIDES:
        paired = set(found[f"feature_{side}"].to_list())
        for f in selection.get(side, ()):
            if int(f) not in paired:
                lonely.append({f"feature_{side}": int(f)})
    if lonely:
        extra = pl.DataFrame(lonely, schema={"feature_a": pl.Int32, "feature_b": pl.Int32}).with_columns(
            pl.lit("no pair").alias("status")
        )
        found = pl.concat([found, extra], how="diagonal_relaxed")
    return found.sort("corr", descending=True, nulls_last=True)


def recorded_settings(bundle: Bundle, section: str) -> Any:
    """The settings a stage recorded in the manifest, as that stage's settings object (defaults where unrecorded).

    Args:
        bundle: an opened bundle.
        section: ``matching``, ``similarity`` or ``umap``.

    Returns:
        A ``MatchSettings``, ``SimilaritySettings`` or ``UMAPSettings`` (torch-free settings modules).
    """
    from dataclasses import fields

    from core.embedding.settings import UMAPSettings
    from core.matching.settings import MatchSettings
    from core.spaces.settings import SimilaritySettings

    cls = {"matching": MatchSettings, "similarity": SimilaritySettings, "umap": UMAPSettings}[section]
    recorded = bundle.manifest.get(section, {}).get("settings", {}) or {}
    kwargs = {}
    for f in fields(cls):
        if f.name in recorded:
            value = recorded[f.name]
            kwargs[f.name] = tuple(value) if isinstance(value, list) else value
    return cls(**kwargs)


def concepts_frame(similarity: dict[str, Any]) -> pl.DataFrame | None:
    """similarity.json's concept rows with a ``status`` column: ``tested`` or why not.

    Bundles written before the core marked untestable SVCCA rows get the mark here when an SVCCA
    value is 1 on fewer pairs than the spaces have dimensions (then it is 1 by construction).
    """
    concepts = similarity.get("concepts") or {}
    rows = concepts.get("results") or []
    if not rows:
        return None
    frame = pl.DataFrame(rows, infer_schema_length=None)
    if "not_testable" not in frame.columns:
        frame = frame.with_columns(pl.lit(None, dtype=pl.String).alias("not_testable"))
    dims = min(int(similarity.get("d_in_a") or 0), int(similarity.get("d_in_b") or 0))
    legacy = (
        pl.col("metric").str.starts_with("svcca")
        & pl.col("tested").fill_null(False)
        & pl.col("not_testable").is_null()
        & (pl.col("value").fill_null(0.0) > 1 - 1e-6)
        & (pl.col("n_pairs") <= dims)
    )
    frame = frame.with_columns(
        pl.when(legacy)
        .then(pl.format("not testable: {} pairs in {}-dim spaces, SVCCA is 1 by construction", "n_pairs", pl.lit(dims)))
        .otherwise(pl.col("not_testable"))
        .alias("not_testable")
    )
    frame = frame.with_columns(
        pl.when(pl.col("not_testable").is_null())
        .then(pl.lit("tested"))
        .otherwise(pl.col("not_testable"))
        .alias("status")
    )
    first = [
        "concept",
        "metric",
        "n_pairs",
        "status",
        "value",
        "null_mean",
        "p_value",
        "p_bh",
        "subspace_null_mean",
        "subspace_p_value",
        "subspace_p_bh",
        "significant",
    ]
    present = [c for c in first if c in frame.columns]
    untested = pl.col("status") != "tested"
    nulled = [c for c in present if c.startswith(("p_", "subspace_p")) or c == "significant"]
    return frame.with_columns([pl.when(untested).then(None).otherwise(pl.col(c)).alias(c) for c in nulled]).select(
        present
    )


def hit_contexts(bundle: Bundle, hits: pl.DataFrame, index: TextIndex, window: int = 6) -> pl.DataFrame:
    """Search hits with ``context``: each feature's strongest example in its original text, the unit in [brackets].

    Args:
        bundle: an opened bundle.
        hits: ``side``, ``feature``, ``why`` (:func:`search_hits`).
        index: the bundle's :class:`TextIndex`.
        window: units of context on each side.

    Returns:
        ``hits`` with a ``context`` column (empty where the bundle has no examples).
    """
    if hits.height == 0 or not bundle.has("examples"):
        return hits.with_columns(pl.lit("").alias("context"))
    units: dict[tuple[str, int], int] = {}
    for side in SIDES:
        ids = hits.filter(pl.col("side") == side)["feature"].to_list()
        if not ids:
            continue
        top = (
            bundle.examples(side)
            .filter(pl.col("feature").is_in(ids) & (pl.col("kind") == "top") & (pl.col("rank") == 0))
            .select("feature", "unit")
            .collect()
        )
        units.update({(side, int(f)): int(u) for f, u in top.iter_rows()})
    contexts = [
        context_text(index, units[(s, int(f))], window) if (s, int(f)) in units else ""
        for s, f in zip(hits["side"].to_list(), hits["feature"].to_list(), strict=True)
    ]
    return hits.with_columns(pl.Series("context", contexts, dtype=pl.String))
