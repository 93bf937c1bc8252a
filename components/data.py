"""Frames the pages show, read from a bundle: pure polars/numpy, no Streamlit, no torch.

components/cache.py wraps these in ``st.cache_data`` keyed by (bundle path, manifest mtime);
keeping them plain makes them testable without a running app. Modules that pull in torch
(core.explore.search, core.dashboards.read) are imported inside the functions that need them.
"""

from __future__ import annotations

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
    bundle: Bundle, feature_a: int, feature_b: int, window: int = 6, limit: int = 20_000
) -> pl.DataFrame:
    """Units where A ``feature_a`` or B ``feature_b`` fires, with both activations and the token in context.

    Args:
        bundle: an opened bundle.
        feature_a: the A feature.
        feature_b: the B feature.
        window: context units on each side (same document) in the hover text.
        limit: keep at most this many units (the strongest by max activation), to stay responsive.

    Returns:
        ``unit``, ``act_a``, ``act_b``, ``context`` (the unit's text bracketed in its window).
    """
    act_a, act_b = _column(bundle, "a", feature_a), _column(bundle, "b", feature_b)
    rows = np.flatnonzero((act_a > 0) | (act_b > 0))
    if rows.size > limit:
        rows = rows[np.argsort(-np.maximum(act_a[rows], act_b[rows]))[:limit]]
        rows.sort()
    units = bundle.units().select("unit", "doc", "text").collect()
    text, doc = units["text"].to_list(), units["doc"].to_numpy()
    contexts = []
    for u in rows.tolist():
        lo, hi = max(0, u - window), min(len(text), u + window + 1)
        parts = [f"[{text[i]}]" if i == u else text[i] for i in range(lo, hi) if doc[i] == doc[u]]
        contexts.append(" ".join(parts))
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
