"""Typed views of a bundle's results: one pair's numbers, and the similarity report (torch-free).

``Bundle.pair(a, b)`` returns a :class:`PairStats`, ``Bundle.similarity()`` and
``core.similarity(x, y)`` a :class:`SimilarityReport`; both are frozen and print readably in
a notebook. The raw similarity.json stays available as ``Bundle.similarity_json()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from core.errors import SpecError

# the similarity report's columns, one row per metric
METRIC_COLUMNS: dict[str, Any] = {
    "metric": pl.String,
    "value": pl.Float64,
    "null_mean": pl.Float64,
    "null_std": pl.Float64,
    "n_null": pl.Int64,
    "p_value": pl.Float64,
    "n_pairs": pl.Int64,
    "null_kind": pl.String,
    "seed": pl.Int64,
    "ci_low": pl.Float64,
    "ci_high": pl.Float64,
    "ci_level": pl.Float64,
}


@dataclass(frozen=True)
class PairStats:
    """Everything a bundle knows about one (A feature, B feature) pair.

    Attributes:
        feature_a: the A feature.
        feature_b: the B feature.
        corr: Pearson r of their activations over all units (zeros included).
        n_coactive: units where both fire.
        n_a: units where A fires.
        n_b: units where B fires.
        jaccard: ``n_coactive / (n_a + n_b - n_coactive)``.
        cos: decoder cosine (None when the two decoders differ in ``d_in``).
        rank_a_to_b: B's rank among A's top-k partners (None: not in the list).
        rank_b_to_a: A's rank among B's top-k partners.
        is_mutual: each is the other's best partner.
        q: the significance test's q-value (assignment.parquet's for its rows, else
            matches.parquet's; None where the pair was not tested).
        significant: q at or below the matching's alpha (where tested).
        neglog10_p: -log10 of the pair's p-value (where tested).
        method: the pairing method, if the pair is a row of assignment.parquet.
        kept: whether that row survived the pairing and the filters (None: not a row).
        reason: why the row was dropped (None: kept, or not a row).
        source: ``matches`` when r and the counts come from matches.parquet, ``codes`` when the
            pair is in no top-k list and they were computed from the codes.
    """

    feature_a: int
    feature_b: int
    corr: float
    n_coactive: int
    n_a: int
    n_b: int
    jaccard: float
    cos: float | None
    rank_a_to_b: int | None
    rank_b_to_a: int | None
    is_mutual: bool
    q: float | None
    significant: bool | None
    neglog10_p: float | None
    method: str | None
    kept: bool | None
    reason: str | None
    source: str


@dataclass(frozen=True)
class MetricSummary:
    """One similarity metric with its null and p-value.

    Attributes:
        metric: the metric's name (``svcca``, ``rsa``, ``cka``, ``procrustes``, ...).
        value: the observed value.
        null_mean: mean of the permutation null (None without a null).
        null_std: its standard deviation.
        n_null: null samples.
        p_value: ``(b + 1) / (n + 1)``, b = null samples at or above the value.
        n_pairs: pairs the value was computed on.
        ci_low: lower bootstrap bound (None without one).
        ci_high: upper bootstrap bound.
        details: method details (kept SVCCA components, the variance rule, ...).
    """

    metric: str
    value: float | None
    null_mean: float | None
    null_std: float | None
    n_null: int
    p_value: float | None
    n_pairs: int
    ci_low: float | None = None
    ci_high: float | None = None
    details: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


@dataclass(frozen=True, eq=False)
class SimilarityReport:
    """How similar two paired feature spaces are: every metric with its null, and what else was computed.

    Attributes:
        metrics: one row per metric (``METRIC_COLUMNS``).
        n_pairs: pairs compared.
        p_value_rule: how p-values were computed.
        settings: the similarity settings used.
        concepts: one row per (concept, metric) when concept subspaces were computed, else None.
        sweep: layer x layer rows when a sweep is attached, else None.
        details: metric -> its method details.
    """

    metrics: pl.DataFrame
    n_pairs: int
    p_value_rule: str
    settings: dict[str, Any]
    concepts: pl.DataFrame | None = None
    sweep: pl.DataFrame | None = None
    details: dict[str, dict[str, Any]] = field(default_factory=dict, repr=False)

    def metric(self, name: str) -> MetricSummary:
        """One metric's summary.

        Args:
            name: a metric in ``metrics`` (``svcca``, ``rsa``, ...).

        Returns:
            The metric's :class:`MetricSummary`.
        """
        rows = self.metrics.filter(pl.col("metric") == name).to_dicts()
        if not rows:
            known = ", ".join(self.metrics["metric"].to_list())
            raise SpecError(f"No similarity metric {name!r} was computed; computed: {known}.")
        row = rows[0]
        return MetricSummary(
            metric=name,
            value=row["value"],
            null_mean=row["null_mean"],
            null_std=row["null_std"],
            n_null=int(row["n_null"] or 0),
            p_value=row["p_value"],
            n_pairs=int(row["n_pairs"] or 0),
            ci_low=row["ci_low"],
            ci_high=row["ci_high"],
            details=dict(self.details.get(name) or {}),
        )

    @classmethod
    def from_json(cls, body: Mapping[str, Any]) -> SimilarityReport:
        """Read the similarity.json form (what the similarity stage writes).

        Args:
            body: the parsed similarity.json (``metrics``, ``n_pairs``, ``concepts``, ``sweep``, ...).

        Returns:
            The report.
        """
        metrics = body.get("metrics") or {}
        rows = [
            {"metric": name, **{k: m.get(k) for k in METRIC_COLUMNS if k != "metric"}} for name, m in metrics.items()
        ]
        concepts = body.get("concepts") or {}
        concept_rows = concepts.get("results") if isinstance(concepts, Mapping) else None
        sweep = body.get("sweep")
        return cls(
            metrics=pl.DataFrame(rows, schema=METRIC_COLUMNS, orient="row"),
            n_pairs=int(body.get("n_pairs") or 0),
            p_value_rule=str(body.get("p_value_rule") or ""),
            settings=dict(body.get("settings") or {}),
            concepts=pl.DataFrame(concept_rows, infer_schema_length=None) if concept_rows else None,
            sweep=pl.DataFrame(sweep, infer_schema_length=None) if sweep else None,
            details={name: dict(m.get("details") or {}) for name, m in metrics.items()},
        )


def jaccard_of(n_coactive: int, n_a: int, n_b: int) -> float:
    """``n_coactive / (n_a + n_b - n_coactive)`` (0 when neither fires)."""
    union = n_a + n_b - n_coactive
    return float(n_coactive / union) if union else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson r of two float columns in float64 (nan when either is constant)."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    denom = math.sqrt(float(dx @ dx) * float(dy @ dy))
    return float(dx @ dy / denom) if denom > 0 else float("nan")
