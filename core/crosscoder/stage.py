"""The analyses stage of a crosscoder bundle: every latent tagged and scaled, written as its own part.

Reads ``crosscoder_latents.parquet`` (written with the harvest) and writes ``analyses.parquet``
(one row per latent, :func:`core.crosscoder.taxonomy.compute_analyses`) and ``analyses.json``
(the taxonomy counts in the model card's JSON shape, both tag modes, medians, settings); the
manifest's ``analyses`` key records the settings and counts. Rerun it with other thresholds
with ``python -m core analyses BUNDLE``: no model is loaded.
"""

from __future__ import annotations

import time
from pathlib import Path

import polars as pl

from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.crosscoder.settings import AnalysisSettings
from core.crosscoder.taxonomy import LATENT_COLUMNS, compute_analyses, summarize_analyses
from core.errors import BundleError
from core.progress import ProgressFn, no_progress


def load_latents(bundle: Bundle) -> pl.DataFrame:
    """The bundle's per-latent crosscoder stats, checked for the columns the analyses need."""
    if not bundle.has("crosscoder"):
        raise BundleError(
            f"Bundle {bundle.path} has no crosscoder part; build it with `python -m core compare --crosscoder ...`."
        )
    frame = pl.read_parquet(bundle.path / "crosscoder_latents.parquet")
    missing = [c for c in LATENT_COLUMNS if c not in frame.columns]
    if missing:
        raise BundleError(f"crosscoder_latents.parquet in {bundle.path} lacks columns {missing}; rebuild the bundle.")
    return frame


def build_analyses(
    bundle_path: str | Path, settings: AnalysisSettings | None = None, progress: ProgressFn | None = None
) -> Bundle:
    """(Re)compute a crosscoder bundle's analyses part.

    Args:
        bundle_path: a crosscoder bundle.
        settings: thresholds, top-N size, Latent Scaling cuts (defaults if ``None``).
        progress: progress callback (stage ``analyses``).

    Returns:
        The bundle, reopened.
    """
    settings = settings or AnalysisSettings()
    progress = progress or no_progress
    started = time.perf_counter()
    bundle = open_bundle(bundle_path)
    progress("analyses", 0, 1)
    frame = compute_analyses(load_latents(bundle), settings)
    summary = summarize_analyses(frame, settings)
    summary["timings_s"] = round(time.perf_counter() - started, 3)
    progress("analyses", 1, 1)
    return add_parts(
        bundle.path,
        frames={"analyses.parquet": frame},
        json_files={"analyses.json": summary},
        manifest_updates={
            "analyses": {
                "settings": settings.to_dict(),
                "taxonomy": summary["taxonomy"],
                "taxonomy_top_n": summary["taxonomy_top_n"],
                "median_dec_cos_shared": summary["median_dec_cos_shared"],
            }
        },
    )
