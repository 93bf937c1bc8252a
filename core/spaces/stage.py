"""The similarity stage of a bundle: paired decoder rows of the kept pairs, metrics, nulls, concept subspaces, bootstrap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.provenance import input_digests
from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.device import resolve_device
from core.errors import BundleError, SimilarityError
from core.progress import ProgressFn, no_progress
from core.spaces.compute import P_VALUE_RULE, MetricResult, _f, compute_concept_similarity, compute_similarity
from core.spaces.concepts import DEFAULT_CONCEPTS_PATH, load_concept_groups, select_concept_pairs
from core.spaces.metrics import check_pair_indices, check_paired_rows, compute_metric
from core.spaces.settings import BUNDLE_METRICS, SIMILARITY_SCHEMA, SimilaritySettings
from core.spaces.stats import (
    bootstrap_pair_correlations,
    compute_document_sums,
    compute_pair_correlations,
    percentile_interval,
)

ASSIGNMENT_COLUMNS = ("feature_a", "feature_b", "method", "corr", "kept", "reason")


def load_kept_pairs(bundle: Bundle) -> pl.DataFrame:
    """The kept rows of the bundle's assignment (``kept == True``), in file order.

    Args:
        bundle: an opened bundle with an assignment part.

    Returns:
        Frame with ``feature_a``, ``feature_b``, ``method``, ``corr``.
    """
    if not bundle.has("assignment"):
        raise BundleError(f"Bundle {bundle.path} has no assignment yet; run the matching stage before similarity.")
    frame = bundle.assignment().collect()
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise BundleError(f"assignment.parquet in {bundle.path} lacks columns {missing}; rebuild the matching stage.")
    return frame.filter(pl.col("kept").fill_null(False)).select("feature_a", "feature_b", "method", "corr")


def _top_tokens(bundle: Bundle, side: str, features: np.ndarray) -> list[list[str] | None]:
    table = bundle.features(side).select("feature", "top_tokens").collect()
    lookup = dict(zip(table["feature"].to_list(), table["top_tokens"].to_list(), strict=True))
    return [lookup.get(int(f)) for f in features]


def _unit_docs(bundle: Bundle) -> np.ndarray:
    units = bundle.units().select("unit", "doc").collect().sort("unit")
    return units["doc"].to_numpy()


def build_similarity(
    bundle_path: str | Path,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
) -> Bundle:
    """The similarity stage: metrics, nulls, intervals and concepts into ``similarity.json``.

    Reads the kept rows of ``assignment.parquet`` and both decoders, computes every requested
    metric with its permutation null (and optional random-subset null), the matched
    correlation with a document bootstrap interval, optional document-bootstrap intervals for
    the decoder metrics, and concept subspaces against their own nulls, then writes
    ``similarity.json`` with :func:`core.bundle.add_parts`.

    Args:
        bundle_path: the bundle folder (needs the assignment part).
        settings: what to compute; defaults to :class:`SimilaritySettings`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, or a torch device.
        progress: optional progress callback.

    Returns:
        The bundle, reopened, with the similarity part present.
    """
    settings = settings or SimilaritySettings()
    progress = progress or no_progress
    device = resolve_device(device) if isinstance(device, str) else device
    bundle = open_bundle(bundle_path)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    # the assignment this result belongs to (core.bundle.provenance marks it stale when that changes)
    built_from = input_digests(bundle.path, ["assignment.parquet"])
    pairs = load_kept_pairs(bundle)
    dec_a, dec_b = bundle.decoder("a"), bundle.decoder("b")
    ia, ib = check_pair_indices(
        pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy(), dec_a.shape[0], dec_b.shape[0]
    )
    x, y = check_paired_rows(dec_a[ia], dec_b[ib], need_row_variance="rsa" in settings.metrics)
    corr = pairs["corr"].cast(pl.Float64).to_numpy()
    n = int(ia.size)

    results = compute_similarity(x, y, settings, device, progress, dec_a, dec_b)
    timings["metrics_and_nulls_s"] = time.perf_counter() - t0

    boot_corr: np.ndarray | None = None
    if (
        bundle.has("codes")
        and bundle.has("units")
        and (("matched_corr" in settings.metrics and settings.n_boot) or settings.n_boot_metrics)
    ):
        t1 = time.perf_counter()
        progress("bootstrap", 0, 1)
        sums = compute_document_sums(bundle.codes("a"), bundle.codes("b"), _unit_docs(bundle), ia, ib)
        recomputed = compute_pair_correlations(sums)
        n_draws = max(settings.n_boot, settings.n_boot_metrics)
        boot_corr = bootstrap_pair_correlations(sums, n_draws, settings.seed)
        timings["bootstrap_s"] = time.perf_counter() - t1
    if "matched_corr" in settings.metrics:
        ci = (float("nan"), float("nan"))
        details: dict[str, Any] = {"source": "assignment.parquet corr of kept pairs", "null": "none (see docs)"}
        if boot_corr is not None and settings.n_boot:
            ci = percentile_interval(np.nanmean(boot_corr[: settings.n_boot], axis=1), settings.ci_level)
            details["recomputed_mean"] = _f(float(np.nanmean(recomputed)))
            details["n_docs"] = int(len(sums.count))
        results["matched_corr"] = MetricResult(
            "matched_corr",
            float(np.mean(corr)),
            n,
            details,
            (),
            ci[0],
            ci[1],
            "document bootstrap" if np.isfinite(ci[0]) else None,
            settings.n_boot if np.isfinite(ci[0]) else 0,
        )
    if boot_corr is not None and settings.n_boot_metrics:
        t1 = time.perf_counter()
        results = _bootstrap_metric_intervals(x, y, boot_corr[: settings.n_boot_metrics], results, settings, progress)
        timings["metric_bootstrap_s"] = time.perf_counter() - t1

    concepts_json: dict[str, Any] | None = None
    if settings.concepts and bundle.has("features"):
        t1 = time.perf_counter()
        groups = load_concept_groups(settings.concepts_path)
        concept_rows = select_concept_pairs(
            _top_tokens(bundle, "a", ia),
            _top_tokens(bundle, "b", ib),
            groups,
            settings.concept_match,
            settings.concept_top_n,
        )
        frame = compute_concept_similarity(
            x, y, concept_rows, settings, device, corr if "matched_corr" in settings.metrics else None, progress
        )
        concepts_json = {
            "source": str(settings.concepts_path or DEFAULT_CONCEPTS_PATH.name),
            "groups": {k: list(v) for k, v in groups.items()},
            "match": settings.concept_match,
            "top_n": settings.concept_top_n,
            "min_pairs": settings.min_concept_pairs,
            "n_null": settings.n_null_concepts,
            "null_kinds": ["permutation", "subspace"],
            "correction": settings.correction,
            "pairs": {k: [int(i) for i in v] for k, v in concept_rows.items()},
            "results": [
                {k: (_f(v) if isinstance(v, float) else v) for k, v in row.items()} for row in frame.to_dicts()
            ],
        }
        timings["concepts_s"] = time.perf_counter() - t1

    order = [m for m in BUNDLE_METRICS if m in results]
    body = {
        "schema_version": SIMILARITY_SCHEMA,
        "n_pairs": n,
        "d_in_a": int(dec_a.shape[1]),
        "d_in_b": int(dec_b.shape[1]),
        "pairing": {
            "source": "assignment.parquet (kept == True)",
            "methods": sorted(set(pairs["method"].cast(pl.Utf8).to_list())),
            "n_unique_a": int(np.unique(ia).size),
            "n_unique_b": int(np.unique(ib).size),
        },
        "p_value_rule": P_VALUE_RULE,
        "device": str(device),
        "settings": _settings_json(settings),
        "metrics": {m: results[m].to_json(settings.ci_level) for m in order},
        "concepts": concepts_json,
        "timings": timings,
    }
    timings["total_s"] = time.perf_counter() - t0
    return add_parts(
        bundle.path,
        json_files={"similarity.json": body},
        manifest_updates={"similarity": {"settings": _settings_json(settings), "n_pairs": n, "built_from": built_from}},
    )


def _settings_json(settings: SimilaritySettings) -> dict[str, Any]:
    return settings.to_dict()


def _bootstrap_metric_intervals(
    x: np.ndarray,
    y: np.ndarray,
    boot_corr: np.ndarray,
    results: dict[str, MetricResult],
    settings: SimilaritySettings,
    progress: ProgressFn,
) -> dict[str, MetricResult]:
    # each draw keeps the pairs whose resampled correlation still passes the threshold, so the
    # interval reflects which pairs the corpus supports; the pairing itself is not re-derived
    metrics = [m for m in settings.decoder_metrics if m in results]
    draws: dict[str, list[float]] = {m: [] for m in metrics}
    for b, row in enumerate(boot_corr):
        keep = np.flatnonzero(np.nan_to_num(row, nan=-np.inf) > settings.boot_min_corr)
        if keep.size >= 3:
            sx, sy = x[keep], y[keep]
            sub: np.ndarray | slice
            if "rsa" in metrics and keep.size > settings.rsa_max_pairs:
                sub = np.sort(
                    np.random.default_rng([settings.seed, 6, b]).choice(
                        keep.size, settings.rsa_max_pairs, replace=False
                    )
                )
            else:
                sub = slice(None)
            for m in metrics:
                try:
                    draws[m].append(
                        compute_metric(
                            m, sx[sub] if m == "rsa" else sx, sy[sub] if m == "rsa" else sy, settings.variance
                        )
                    )
                except SimilarityError:
                    draws[m].append(float("nan"))
        progress("metric bootstrap", b + 1, len(boot_corr))
    out = dict(results)
    for m in metrics:
        low, high = percentile_interval(np.asarray(draws[m]), settings.ci_level)
        r = results[m]
        details = {**r.details, "ci_pairs_rule": f"pairs with resampled corr > {settings.boot_min_corr}"}
        out[m] = MetricResult(m, r.value, r.n_pairs, details, r.nulls, low, high, "document bootstrap", len(boot_corr))
    return out
