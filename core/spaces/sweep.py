"""Layer x layer sweeps: one similarity per pair of SAEs, p-values corrected over the grid."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import polars as pl
import torch

from core.device import resolve_device
from core.errors import SimilarityError
from core.progress import ProgressFn, no_progress
from core.spaces.compute import _adjust_by_metric, compute_similarity
from core.spaces.metrics import PairIndices, check_pair_indices
from core.spaces.settings import SimilaritySettings

PairingSource = Callable[[int, int], Any] | Sequence[Sequence[Any]]


def _as_pair_indices(pairing: Any) -> PairIndices:
    if isinstance(pairing, pl.LazyFrame):
        pairing = pairing.collect()
    if isinstance(pairing, pl.DataFrame):
        if "kept" in pairing.columns:
            pairing = pairing.filter(pl.col("kept"))
        return pairing["feature_a"].to_numpy(), pairing["feature_b"].to_numpy()
    if isinstance(pairing, tuple) and len(pairing) == 2:
        return np.asarray(pairing[0]), np.asarray(pairing[1])
    raise SimilarityError(
        "A sweep pairing must be (feature_a array, feature_b array) or a frame with feature_a and feature_b columns; "
        f"got {type(pairing).__name__}."
    )


def compute_layer_sweep(
    decoders_a: Sequence[np.ndarray],
    decoders_b: Sequence[np.ndarray],
    pairing: PairingSource,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
    labels_a: Sequence[str] | None = None,
    labels_b: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Metrics plus permutation nulls for every (layer of A, layer of B), ready for a heatmap.

    Args:
        decoders_a: one ``W_dec`` [d_sae, d_in] per A layer.
        decoders_b: one ``W_dec`` per B layer.
        pairing: either a function ``(i, j) -> pairs`` or a nested list ``pairing[i][j]``;
            pairs are ``(feature_a array, feature_b array)`` or a polars frame with
            ``feature_a``, ``feature_b`` (and ``kept``, honoured when present).
        settings: metrics (``matched_corr`` is ignored), ``n_null``, seed, correction.
        device: torch device or name.
        progress: optional progress callback (``"sweep"``, cells done, cells).
        labels_a: display names of the A layers (default ``"0"``, ``"1"``, ...).
        labels_b: display names of the B layers.

    Returns:
        One row per (layer_a, layer_b, metric): ``layer_a``, ``layer_b``, ``label_a``,
        ``label_b``, ``metric``, ``value``, ``null_mean``, ``null_std``, ``p_value``,
        ``p_bonferroni``, ``p_bh``, ``p_adjusted`` (by ``settings.correction``),
        ``significant``, ``n_pairs``, ``k_a``, ``k_b`` (SVCCA only), ``n_null``, ``seed``,
        ``error`` (why a cell has no value, else null). Adjustment is per metric across cells.
    """
    settings = settings or SimilaritySettings(metrics=("svcca", "rsa"))
    progress = progress or no_progress
    device = resolve_device(device) if isinstance(device, str) else device
    labels_a = list(labels_a) if labels_a is not None else [str(i) for i in range(len(decoders_a))]
    labels_b = list(labels_b) if labels_b is not None else [str(j) for j in range(len(decoders_b))]
    if len(labels_a) != len(decoders_a) or len(labels_b) != len(decoders_b):
        raise SimilarityError("The sweep needs one label per decoder on each side; pass matching label lists.")
    rows: list[dict[str, Any]] = []
    total = len(decoders_a) * len(decoders_b)
    for i, dec_a in enumerate(decoders_a):
        for j, dec_b in enumerate(decoders_b):
            source = pairing(i, j) if callable(pairing) else pairing[i][j]
            base = {"layer_a": i, "layer_b": j, "label_a": labels_a[i], "label_b": labels_b[j]}
            try:
                ia, ib = check_pair_indices(*_as_pair_indices(source), dec_a.shape[0], dec_b.shape[0])
                results = compute_similarity(dec_a[ia], dec_b[ib], settings, device)
                for m, r in results.items():
                    prim = r.primary
                    rows.append(
                        {
                            **base,
                            "metric": m,
                            "value": r.value,
                            "null_mean": prim.mean if prim else float("nan"),
                            "null_std": prim.std if prim else float("nan"),
                            "p_value": prim.p_value if prim else float("nan"),
                            "n_pairs": int(ia.size),
                            "k_a": r.details.get("k_a"),
                            "k_b": r.details.get("k_b"),
                            "n_null": prim.n if prim else 0,
                            "seed": settings.seed,
                            "error": None,
                        }
                    )
            except SimilarityError as exc:
                n_pairs = 0
                try:
                    n_pairs = int(len(_as_pair_indices(source)[0]))
                except SimilarityError:
                    pass
                for m in settings.decoder_metrics:
                    rows.append(
                        {
                            **base,
                            "metric": m,
                            "value": float("nan"),
                            "null_mean": float("nan"),
                            "null_std": float("nan"),
                            "p_value": float("nan"),
                            "n_pairs": n_pairs,
                            "k_a": None,
                            "k_b": None,
                            "n_null": 0,
                            "seed": settings.seed,
                            "error": str(exc),
                        }
                    )
            progress("sweep", i * len(decoders_b) + j + 1, total)
    schema = {
        "layer_a": pl.Int64,
        "layer_b": pl.Int64,
        "label_a": pl.Utf8,
        "label_b": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
        "null_mean": pl.Float64,
        "null_std": pl.Float64,
        "p_value": pl.Float64,
        "n_pairs": pl.Int64,
        "k_a": pl.Int64,
        "k_b": pl.Int64,
        "n_null": pl.Int64,
        "seed": pl.Int64,
        "error": pl.Utf8,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    frame = _adjust_by_metric(frame, settings, [("p_value", "")])
    key = "p_bh" if settings.correction == "bh" else "p_bonferroni"
    return frame.with_columns(pl.col(key).alias("p_adjusted")).select(
        "layer_a",
        "layer_b",
        "label_a",
        "label_b",
        "metric",
        "value",
        "null_mean",
        "null_std",
        "p_value",
        "p_bonferroni",
        "p_bh",
        "p_adjusted",
        "significant",
        "n_pairs",
        "k_a",
        "k_b",
        "n_null",
        "seed",
        "error",
    )
