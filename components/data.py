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
    "matches": "python -m core match BUNDLE  (or core.matching.build_matching(BUNDLE))",
    "assignment": "python -m core match BUNDLE  (or core.matching.build_matching(BUNDLE))",
    "similarity": "python -m core similarity BUNDLE  (or core.spaces.stage.build_similarity(BUNDLE))",
    "examples": "python -m core dashboards BUNDLE  (or core.dashboards.stage.build_dashboards(BUNDLE))",
    "dashboards": "python -m core dashboards BUNDLE  (or core.dashboards.stage.build_dashboards(BUNDLE))",
    "umap": "python -m core umap BUNDLE  (or core.embedding.stage.build_umap(BUNDLE))",
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


def pair_frame(bundle: Bundle, kept_only: bool = False) -> pl.DataFrame:
    """The chosen pairing (assignment.parquet): ``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``, ``reason``."""
    schema = {
        "feature_a": pl.Int32,
        "feature_b": pl.Int32,
        "corr": pl.Float64,
        "cos": pl.Float64,
        "kept": pl.Boolean,
        "reason": pl.String,
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
    )
    if kept_only:
        frame = frame.filter(pl.col("kept"))
    return frame.collect()


def umap_points(bundle: Bundle, side: str) -> pl.DataFrame:
    """One side's UMAP points with what the map colours and marks.

    Returns:
        ``feature``, ``x``, ``y``, ``corr`` (best partner correlation, null without matches),
        ``is_orphan`` (no kept pair in the assignment; without an assignment: best corr < 0.1),
        ``label`` (top tokens).
    """
    points = bundle.umap(side).select(pl.col("feature").cast(pl.Int32), "x", "y").collect()
    best = best_partner_frame(bundle, side).select("feature", "corr")
    points = points.join(best, on="feature", how="left").join(feature_labels(bundle, side), on="feature", how="left")
    if bundle.has("assignment"):
        kept = pair_frame(bundle, kept_only=True)[f"feature_{side}"].unique()
        orphan = ~pl.col("feature").is_in(kept.implode())
    else:
        threshold = float(bundle.manifest.get("matching", {}).get("settings", {}).get("min_corr", 0.1))
        orphan = pl.col("corr").fill_null(0.0) < threshold
    return points.with_columns(orphan.alias("is_orphan"), pl.col("label").fill_null(""))


def selection_pair_table(bundle: Bundle, side: str, features: list[int]) -> pl.DataFrame:
    """The pairs touching the selected features of ``side`` (all pairs, kept or not), with top tokens.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``, ``reason``, ``tokens_a``, ``tokens_b``;
        a selected feature without any pair appears with a null partner.
    """
    pairs = pair_frame(bundle).filter(pl.col(f"feature_{side}").is_in(features))
    mine = pl.DataFrame({f"feature_{side}": features}, schema={f"feature_{side}": pl.Int32})
    table = mine.join(pairs, on=f"feature_{side}", how="left")
    for s in SIDES:
        labels = feature_labels(bundle, s).rename({"feature": f"feature_{s}", "label": f"tokens_{s}"})
        table = table.join(labels, on=f"feature_{s}", how="left")
    return table.select("feature_a", "feature_b", "corr", "cos", "kept", "reason", "tokens_a", "tokens_b").sort(
        "corr", descending=True, nulls_last=True
    )


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
    """similarity.json's metrics as rows: ``metric``, ``value``, ``null_mean``, ``null_std``, ``p_value``, ``n_pairs``, ``ci_low``, ``ci_high``."""
    rows = []
    for name, body in (similarity.get("metrics") or {}).items():
        rows.append(
            {
                "metric": name,
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
    rows = bundle.similarity().get("sweep")
    if not rows:
        return None
    return pl.DataFrame(rows)


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
        sim = bundle.similarity()
        record["similarity_results"] = {
            name: {
                k: body.get(k) for k in ("value", "null_mean", "null_std", "n_null", "p_value", "n_pairs", "details")
            }
            for name, body in (sim.get("metrics") or {}).items()
        }
        record["similarity_p_value_rule"] = sim.get("p_value_rule")
    return record


def search_hits(bundle: Bundle, query: str) -> pl.DataFrame:
    """Features matching a search: a feature id (``a12``, ``b7`` or ``12`` for both sides) or a token.

    Returns:
        ``side``, ``feature``, ``why`` (what matched); empty for no hit.
    """
    query = query.strip()
    empty = pl.DataFrame(schema={"side": pl.String, "feature": pl.Int32, "why": pl.String})
    if not query:
        return empty
    low = query.lower()
    if low[:1] in ("a", "b") and low[1:].isdigit():
        side, fid = low[0], int(low[1:])
        if fid < n_features(bundle, side):
            return pl.DataFrame({"side": [side], "feature": [fid], "why": ["id"]}, schema=empty.schema)
        return empty
    if low.isdigit():
        fid = int(low)
        rows = [(s, fid, "id") for s in SIDES if fid < n_features(bundle, s)]
        return pl.DataFrame(rows, schema=empty.schema, orient="row")
    from core.dashboards.read import has_dashboards
    from core.explore.search import search_token

    if has_dashboards(bundle):
        found = search_token(bundle, query, limit=50)
        return found.select(
            pl.col("side").cast(pl.String),
            pl.col("feature").cast(pl.Int32),
            pl.format("token '{}' · mean {}", pl.col("token"), pl.col("mean_act").round(3)).alias("why"),
        )
    # without dashboards: the features whose top tokens list the token
    frames = []
    for side in SIDES:
        frames.append(
            bundle.features(side)
            .filter(pl.col("top_tokens").list.eval(pl.element().str.to_lowercase().str.strip_chars() == low).list.any())
            .select(pl.lit(side).alias("side"), pl.col("feature").cast(pl.Int32), pl.lit("top token").alias("why"))
            .collect()
        )
    return pl.concat(frames)


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
