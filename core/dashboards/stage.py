"""The dashboards stage: one streamed pass per side writes examples_{a,b} and dashboards_{a,b}."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from core.bundle.io import write_parquet_atomic
from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.dashboards.compute import UnitIndex, compute_dashboards
from core.dashboards.logits import Unembedding
from core.dashboards.settings import DASHBOARD_FILES, EXAMPLE_FILES, QUANTILE_PROBS, DashboardSettings
from core.progress import ProgressFn

_MAX_U64 = np.iinfo(np.uint64).max


def build_dashboards(
    bundle_path: str | Path,
    settings: DashboardSettings | None = None,
    progress: ProgressFn | None = None,
    unembedding_a: Unembedding | None = None,
    unembedding_b: Unembedding | None = None,
) -> Bundle:
    """Compute dashboard data for every feature of both SAEs and add it to the bundle.

    Writes ``examples_{a,b}.parquet`` and ``dashboards_{a,b}.parquet`` (each atomically),
    then the manifest (key ``dashboards``: settings, quantile probabilities, timings, and
    which sides carry a logit effect).

    Args:
        bundle_path: a finished bundle (units, docs, codes, decoders, features).
        settings: what to keep (defaults: :class:`DashboardSettings`).
        progress: called with ``("dashboards a" | "dashboards b", units done, total)``.
        unembedding_a: side A's unembedding (causal LMs only); adds the logit effect.
        unembedding_b: side B's unembedding.

    Returns:
        The bundle, reopened.
    """
    settings = settings or DashboardSettings()
    bundle = open_bundle(bundle_path)
    started = time.perf_counter()
    units = UnitIndex.from_frame(bundle.units().select("unit", "doc", "pos", "text").collect())
    unembeddings = {"a": unembedding_a, "b": unembedding_b}
    results = compute_dashboards(
        {side: bundle.codes(side) for side in ("a", "b")},
        units,
        settings,
        progress=progress,
        unembeddings=unembeddings,
        decoders={side: bundle.decoder(side) for side in ("a", "b") if unembeddings[side] is not None},
    )
    computed = time.perf_counter()
    for side, result in results.items():
        # dashboards_{a,b}.parquet are not (yet) registered bundle files, so add_parts would
        # refuse them; they are written atomically here, before add_parts rewrites the manifest
        write_parquet_atomic(result.features, bundle.path / DASHBOARD_FILES[side])
    bundle = add_parts(
        bundle.path,
        frames={EXAMPLE_FILES[side]: result.examples for side, result in results.items()},
        manifest_updates={
            "dashboards": {
                "settings": settings.to_dict(),
                "quantile_probs": list(QUANTILE_PROBS),
                "files": sorted([*DASHBOARD_FILES.values(), *EXAMPLE_FILES.values()]),
                "logit_effect": {side: unembeddings[side] is not None for side in ("a", "b")},
                "timings_s": {
                    "compute": round(computed - started, 3),
                    "write": round(time.perf_counter() - computed, 3),
                },
            }
        },
    )
    return bundle
