"""Read dashboards from a bundle (torch-free: the app and search use it)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from core.bundle.reader import Bundle
from core.dashboards.settings import DASHBOARD_FILES, QUANTILE_PROBS
from core.errors import BundleError, SpecError


def has_dashboards(bundle: Bundle) -> bool:
    """Whether the bundle carries dashboard data for both sides."""
    return bundle.has("examples") and all((bundle.path / f).is_file() for f in DASHBOARD_FILES.values())


def load_dashboards(bundle: Bundle, side: str) -> pl.LazyFrame:
    """The per-feature dashboard frame of one side, scanned lazily.

    Args:
        bundle: an opened bundle.
        side: ``"a"`` or ``"b"``.

    Returns:
        A lazy frame with :data:`DASHBOARD_COLUMNS` (and :data:`LOGIT_COLUMNS` when present).
    """
    if side not in DASHBOARD_FILES:
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    if not has_dashboards(bundle):
        raise BundleError(
            f"Bundle {bundle.path} has no dashboards yet; add them with core.dashboards.build_dashboards "
            "(or `python -m core dashboards --bundle ...`)."
        )
    return pl.scan_parquet(bundle.path / DASHBOARD_FILES[side])


def tau_from_quantiles(quantiles: Sequence[Sequence[float] | None] | pl.Series, q: float) -> np.ndarray:
    """Per-feature threshold at quantile ``q`` of the non-zero activations.

    Interpolates linearly between the stored :data:`QUANTILE_PROBS` (exact at those).

    Args:
        quantiles: the ``quantiles`` column of a dashboard frame (null for dead features).
        q: the quantile in [0, 1].

    Returns:
        float64 [n_features]; ``inf`` for dead features (they can never pass).
    """
    if not 0.0 <= q <= 1.0:
        raise SpecError(f"The tau quantile must lie in [0, 1], got {q}.")
    probs = np.asarray(QUANTILE_PROBS)
    rows = list(quantiles) if not isinstance(quantiles, pl.Series) else quantiles.to_list()
    out = np.full(len(rows), np.inf)
    for i, row in enumerate(rows):
        if row is not None and len(row) == len(probs):
            out[i] = np.interp(q, probs, np.asarray(row, dtype=np.float64))
    return out
