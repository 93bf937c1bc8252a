"""Per-feature basic statistics for the bundle's features_{a,b}.parquet."""

from __future__ import annotations

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.tokens import load_nonconcept_tokens, normalize_token

TOP_TOKENS = 5
# a feature firing on at least this share of units is "dense" (always-on)
DENSE_FREQ = 0.5


def top_tokens_per_feature(
    codes: SparseCodes, unit_text: list[str] | np.ndarray, k: int = TOP_TOKENS
) -> list[list[str]]:
    """The ``k`` distinct token texts of each feature's highest activations.

    Args:
        codes: CSR codes [n_units, d_sae].
        unit_text: the text of every unit (units.parquet ``text``).
        k: how many distinct tokens to keep.

    Returns:
        One list per feature, highest activation first (empty for dead features).
    """
    rows = codes.row_ids()
    order = np.lexsort((-codes.values, codes.indices))
    feats = codes.indices[order]
    starts = np.searchsorted(feats, np.arange(codes.n_features))
    ends = np.searchsorted(feats, np.arange(codes.n_features), side="right")
    texts = np.asarray(unit_text, dtype=object)
    out: list[list[str]] = []
    for lo, hi in zip(starts, ends, strict=True):
        seen: list[str] = []
        # distinct tokens are usually found within the first few dozen activations
        for cut in (lo + 64, hi):
            seen = list(dict.fromkeys(texts[rows[order[lo:cut]]]))[:k]
            if len(seen) >= k:
                break
        out.append([str(t) for t in seen])
    return out


def compute_feature_frame(
    moments: dict[str, np.ndarray],
    n_units: int,
    top_tokens: list[list[str]],
    nonconcept: frozenset[str] | None = None,
) -> pl.DataFrame:
    """Per-feature statistics over all units (zeros included).

    Args:
        moments: ``count``, ``sum``, ``sumsq``, ``max`` float64 [d_sae] (see harvest.feature_moments).
        n_units: number of units the moments cover.
        top_tokens: per feature, its top token texts.
        nonconcept: the non-concept list; ``None`` reads the shipped one.

    Returns:
        Frame with feature, freq, mean, std, max, is_dead, is_dense, top_tokens, is_nonconcept.
    """
    nonconcept = load_nonconcept_tokens() if nonconcept is None else nonconcept
    n = max(n_units, 1)
    mean = moments["sum"] / n
    var = np.maximum(moments["sumsq"] / n - mean**2, 0.0)
    freq = moments["count"] / n
    is_nonconcept = [any(normalize_token(t) in nonconcept for t in toks) for toks in top_tokens]
    return pl.DataFrame(
        {
            "feature": np.arange(len(mean), dtype=np.int64),
            "freq": freq,
            "mean": mean,
            "std": np.sqrt(var),
            "max": moments["max"],
            "is_dead": moments["count"] == 0,
            "is_dense": freq >= DENSE_FREQ,
            "top_tokens": pl.Series(top_tokens, dtype=pl.List(pl.String)),
            "is_nonconcept": is_nonconcept,
        }
    )
