"""Frames the Model diffing page and the causal sections show: plain polars reads, no Streamlit, no torch.

components/cache.py wraps these in ``st.cache_data`` keyed by (bundle path, manifest mtime). Tags
for another top-N or threshold are recomputed here with ``core.crosscoder.taxonomy`` (torch-free),
the same code the analyses stage runs.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import numpy as np
import polars as pl

from core.bundle.reader import Bundle
from core.crosscoder.settings import AnalysisSettings
from core.crosscoder.taxonomy import taxonomy_counts, threshold_tags, top_n_tags

# what the causal tables show (the per-probe vectors stay for the pair view)
CAUSAL_COLUMNS = (
    "feature_a",
    "feature_b",
    "tag",
    "cos",
    "corr",
    "equivalence",
    "p_value",
    "status",
    "n_active",
    "n_probes_used",
    "mean_shift_a",
    "mean_shift_b",
)


def is_crosscoder(bundle: Bundle) -> bool:
    """Whether the bundle holds one crosscoder (its manifest has a ``crosscoder`` record)."""
    return "crosscoder" in bundle.manifest


def analysis_settings(bundle: Bundle) -> AnalysisSettings:
    """The settings the bundle's analyses stage ran with (defaults when absent)."""
    body = bundle.manifest.get("analyses", {}).get("settings") or {}
    known = AnalysisSettings.__dataclass_fields__
    return AnalysisSettings(**{k: v for k, v in body.items() if k in known})


def analyses_frame(bundle: Bundle) -> pl.DataFrame:
    """analyses.parquet with the tags as strings."""
    return (
        bundle.scan("analyses.parquet")
        .with_columns(pl.col("tag_threshold").cast(pl.String), pl.col("tag_top_n").cast(pl.String))
        .collect()
    )


def retag(frame: pl.DataFrame, mode: str, settings: AnalysisSettings) -> pl.DataFrame:
    """The analyses frame with a ``tag`` column for ``mode`` (``threshold`` or ``top_n``) under ``settings``.

    Args:
        frame: :func:`analyses_frame`.
        mode: which tagging to apply.
        settings: its thresholds and top-N size.

    Returns:
        The frame plus ``tag``.
    """
    delta = frame["delta_norm_b_only_1"].fill_null(float("nan")).to_numpy()
    dead = frame["is_dead"].to_numpy()
    tags = top_n_tags(delta, dead, settings) if mode == "top_n" else threshold_tags(delta, dead, settings)
    return frame.with_columns(tag=pl.Series(tags.astype(str)))


def card_counts(frame: pl.DataFrame) -> dict[str, int]:
    """The taxonomy counts of a tagged frame in the model card's JSON shape."""
    return taxonomy_counts(frame["tag"].to_numpy())


def pair_link(bundle_path: str, latent_a: int, latent_b: int) -> str:
    """The deep link that opens the pair dashboard (Feature page) on A ``latent_a`` with partner ``latent_b``."""
    return "/feature?" + urlencode({"bundle": bundle_path, "side": "a", "feature": latent_a, "partner": latent_b})


def latent_table(frame: pl.DataFrame, tag: str, bundle_path: str, limit: int = 500) -> pl.DataFrame:
    """The latents of one tag, most B-only first (A-only: most A-only first), with a link to each pair dashboard.

    Returns:
        ``latent``, ``delta_norm_b_only_1``, ``relative_norm``, ``norm_a``, ``norm_b``, ``dec_cos``,
        ``enc_cos``, ``fire``, ``nu_recon``, ``nu_error``, ``link``.
    """
    rows = frame.filter(pl.col("tag") == tag)
    descending = tag != "a_only"
    rows = rows.sort(["delta_norm_b_only_1", "latent"], descending=[descending, False], nulls_last=True).head(limit)
    keep = [
        "latent",
        "delta_norm_b_only_1",
        "relative_norm",
        "norm_a",
        "norm_b",
        "dec_cos",
        "enc_cos",
        "fire",
        "nu_recon",
        "nu_error",
    ]
    return rows.select(keep).with_columns(
        link=pl.Series([pair_link(bundle_path, int(j), int(j)) for j in rows["latent"].to_list()], dtype=pl.String)
    )


def shared_cosines(frame: pl.DataFrame) -> np.ndarray:
    """Decoder cosines of the shared latents (finite values only)."""
    values = frame.filter(pl.col("tag") == "shared")["dec_cos"].fill_null(float("nan")).to_numpy()
    return values[np.isfinite(values)]


def causal_table(bundle: Bundle) -> pl.DataFrame:
    """causal.parquet without the per-probe vectors (empty frame with the columns when absent)."""
    if not bundle.has("causal"):
        return pl.DataFrame(schema={c: pl.Float64 for c in CAUSAL_COLUMNS})
    frame = bundle.scan("causal.parquet")
    names = frame.collect_schema().names()
    return frame.select([c for c in CAUSAL_COLUMNS if c in names]).collect()


def causal_pair(bundle: Bundle, feature_a: int, feature_b: int) -> dict[str, Any] | None:
    """One checked pair's row, with its per-probe shift vectors, or ``None`` when it was not checked."""
    if not bundle.has("causal"):
        return None
    rows = (
        bundle.scan("causal.parquet")
        .filter((pl.col("feature_a") == feature_a) & (pl.col("feature_b") == feature_b))
        .collect()
    )
    return rows.row(0, named=True) if rows.height else None


def with_causal(bundle: Bundle, table: pl.DataFrame) -> pl.DataFrame:
    """A pairs table with ``causal_equivalence`` and ``causal_p`` joined on (feature_a, feature_b), when checked."""
    if not bundle.has("causal") or table.height == 0:
        return table
    causal = causal_table(bundle).select(
        pl.col("feature_a").cast(table.schema["feature_a"]),
        pl.col("feature_b").cast(table.schema["feature_b"]),
        pl.col("equivalence").alias("causal_equivalence"),
        pl.col("p_value").alias("causal_p"),
    )
    return table.join(causal, on=["feature_a", "feature_b"], how="left", maintain_order="left")


def crosscoder_summary(bundle: Bundle) -> dict[str, Any]:
    """The manifest's crosscoder record, flattened for the page's header."""
    record = bundle.manifest.get("crosscoder", {})
    checkpoint = record.get("checkpoint", {})
    ev = record.get("explained_variance", {})
    return {
        "ev_a": ev.get("a"),
        "ev_b": ev.get("b"),
        "l0": record.get("l0"),
        "dead_fraction": record.get("dead_fraction"),
        "n_latents": checkpoint.get("n_latents"),
        "architecture": checkpoint.get("architecture"),
        "format": checkpoint.get("format"),
        "code_normalization": checkpoint.get("code_normalization"),
        "path": checkpoint.get("path"),
        "threshold_uncalibrated": bool(checkpoint.get("threshold_uncalibrated")),
        "unknown_keys": list(checkpoint.get("unknown_keys") or []),
        "scaling": record.get("scaling", {}),
    }
