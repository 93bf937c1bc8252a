"""Metrics with their nulls and p-values ((b+1)/(n+1)), and per-concept subspaces."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl
import torch

from core.device import resolve_device
from core.errors import SimilarityError
from core.progress import ProgressFn, announce_estimate, no_progress
from core.spaces.metrics import (
    check_paired_rows,
    compute_linear_cka,
    compute_procrustes,
    compute_svcca,
    svcca_forced_correlations,
    svcca_untestable_reason,
)
from core.spaces.nulls import (
    ESTIMATE_FROM,
    compute_permutation_nulls,
    compute_random_subset_null,
    compute_subspace_null,
    estimate_permutation_null_s,
    prepare_pairs,
)
from core.spaces.settings import SimilaritySettings
from core.spaces.stats import adjust_bh, adjust_bonferroni, permutation_p_value

# how every p-value here is computed (recorded in similarity.json)
P_VALUE_RULE = "(b + 1) / (n + 1), b = null samples >= value, one-sided"


@dataclass(frozen=True, eq=False)
class NullResult:
    """A null distribution summarised against the observed value.

    Attributes:
        kind: ``permutation``, ``random_subset`` or ``subspace``.
        n: number of samples.
        seed: seed of the draws.
        mean: null mean.
        std: null standard deviation (ddof 1).
        p_value: ``(b + 1) / (n + 1)``.
        samples: the samples (kept in memory, not written to JSON).
    """

    kind: str
    n: int
    seed: int
    mean: float
    std: float
    p_value: float
    samples: np.ndarray = field(repr=False)

    @classmethod
    def from_samples(cls, kind: str, samples: np.ndarray, value: float, seed: int) -> NullResult:
        """Summarise null samples against an observed value."""
        s = np.asarray(samples, dtype=np.float64)
        return cls(
            kind,
            int(s.size),
            int(seed),
            float(s.mean()) if s.size else float("nan"),
            float(s.std(ddof=1)) if s.size > 1 else float("nan"),
            permutation_p_value(value, s) if s.size else float("nan"),
            s,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (no samples)."""
        return {
            "null_kind": self.kind,
            "n_null": self.n,
            "seed": self.seed,
            "null_mean": _f(self.mean),
            "null_std": _f(self.std),
            "p_value": _f(self.p_value),
        }


@dataclass(frozen=True, eq=False)
class MetricResult:
    """One metric with its nulls and interval.

    Attributes:
        metric: the metric's name.
        value: observed value (float64).
        n_pairs: pairs it was computed on.
        details: method details (``k_a``/``k_b``/``variance_rule`` for SVCCA, ...).
        nulls: null results, the primary (permutation) first; may be empty.
        ci_low: lower bootstrap bound, or NaN.
        ci_high: upper bootstrap bound, or NaN.
        ci_kind: how the interval was made (``document bootstrap``), or ``None``.
        n_boot: bootstrap draws behind the interval.
    """

    metric: str
    value: float
    n_pairs: int
    details: dict[str, Any]
    nulls: tuple[NullResult, ...] = ()
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    ci_kind: str | None = None
    n_boot: int = 0

    @property
    def primary(self) -> NullResult | None:
        """The primary null (the permutation null), if one was drawn."""
        return self.nulls[0] if self.nulls else None

    def to_json(self, ci_level: float) -> dict[str, Any]:
        """The JSON form written into similarity.json."""
        primary = self.primary
        body: dict[str, Any] = {
            "value": _f(self.value),
            "n_pairs": self.n_pairs,
            "null_kind": primary.kind if primary else None,
            "null_mean": _f(primary.mean) if primary else None,
            "null_std": _f(primary.std) if primary else None,
            "n_null": primary.n if primary else 0,
            "p_value": _f(primary.p_value) if primary else None,
            "seed": primary.seed if primary else None,
            "details": self.details,
            "other_nulls": [nr.to_json() for nr in self.nulls[1:]],
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "ci_level": ci_level if self.ci_kind else None,
            "ci_kind": self.ci_kind,
            "n_boot": self.n_boot,
        }
        return body


def _f(v: float) -> float | None:
    # JSON has no NaN; a missing number is null
    return None if v is None or not np.isfinite(v) else float(v)


def _svcca_details(k_a: int, k_b: int, variance: float, rule: str, n: int) -> dict[str, Any]:
    untestable = svcca_untestable_reason(n, k_a, k_b)
    if rule == "paper":
        text = (
            f"paper rule: keep components while cumulative share < {variance} x total variance "
            "(un-normalised; keeps 1 when total variance > 1/variance), as the reference implementation does"
        )
    else:
        text = f"keep the fewest components explaining {variance:.0%} of each side's variance"
    return {
        "k_a": k_a,
        "k_b": k_b,
        "variance": variance,
        "variance_rule": text,
        "rule": rule,
        "n_correlations": min(k_a, k_b),
        "n": n,
        "forced_correlations": svcca_forced_correlations(n, k_a, k_b),
        "testable": untestable is None,
        "not_testable_reason": untestable,
    }


def compute_similarity(
    x: np.ndarray,
    y: np.ndarray,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
    decoder_a: np.ndarray | None = None,
    decoder_b: np.ndarray | None = None,
) -> dict[str, MetricResult]:
    """Every requested decoder metric on paired rows, each with its nulls.

    Args:
        x: [n, d_a] A decoder rows of the matched pairs.
        y: [n, d_b] B decoder rows, paired with ``x`` by row.
        settings: what to compute (``matched_corr`` is ignored here).
        device: torch device or ``"auto"``/``"cpu"``/``"cuda"``.
        progress: optional progress callback.
        decoder_a: full A decoder, needed only for the ``random_subset`` null.
        decoder_b: full B decoder, likewise.

    Returns:
        metric -> :class:`MetricResult`, in :data:`METRICS` order.
    """
    settings = settings or SimilaritySettings()
    metrics = settings.decoder_metrics
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    n = x.shape[0]
    prep = prepare_pairs(
        x, y, metrics, settings.variance, device, settings.null_dtype, settings.rsa_max_pairs, settings.seed
    )
    nulls: dict[str, list[NullResult]] = {m: [] for m in metrics}
    values: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for m in metrics:
        if m in ("svcca", "svcca_paper"):
            rule = "variance" if m == "svcca" else "paper"
            res = compute_svcca(x, y, settings.variance, rule)
            values[m] = res.value
            details[m] = _svcca_details(res.k_a, res.k_b, settings.variance, rule, n)
        elif m == "rsa":
            values[m] = prep.rsa_value
            assert prep.rsa_rows is not None
            n_rsa = len(prep.rsa_rows)
            details[m] = {
                "inner": "pearson correlation between rows",
                "outer": "spearman over the upper triangle",
                "n_rsa_pairs": n_rsa,
                "subsampled": bool(n_rsa < n),
            }
        elif m == "cka":
            values[m] = compute_linear_cka(x, y)
            details[m] = {"kind": "linear", "centered": True}
        elif m == "procrustes":
            res_p = compute_procrustes(x, y)
            values[m] = res_p.value
            details[m] = {
                "disparity": res_p.disparity,
                "normalisation": "centred, unit Frobenius norm",
                "padding": "zero-pad the narrower side",
                "similarity": "1 - disparity / 2",
            }
    if settings.n_null >= ESTIMATE_FROM:
        seconds = estimate_permutation_null_s(prep, metrics, settings.n_null, settings.chunk)
        announce_estimate(
            "similarity null",
            seconds,
            f"--n-null {settings.n_null:,}",
            f"{seconds / settings.n_null * 1e3:.2g} ms per sample measured on {n:,} pairs",
        )
    if settings.n_null:
        samples = compute_permutation_nulls(prep, metrics, settings.n_null, settings.seed, settings.chunk, progress)
        for m in metrics:
            nulls[m].append(NullResult.from_samples("permutation", samples[m], values[m], settings.seed))
    if "random_subset" in settings.nulls and settings.n_null_subset:
        if decoder_a is None or decoder_b is None:
            raise SimilarityError("The random-subset null needs the full decoders; pass decoder_a and decoder_b.")
        samples = compute_random_subset_null(
            decoder_a, decoder_b, n, metrics, settings.n_null_subset, settings.seed, settings.variance, progress
        )
        for m in metrics:
            nulls[m].append(NullResult.from_samples("random_subset", samples[m], values[m], settings.seed))
    return {
        m: MetricResult(m, values[m], prep.n_rsa if m == "rsa" else n, details[m], tuple(nulls[m])) for m in metrics
    }


def compute_concept_similarity(
    x: np.ndarray,
    y: np.ndarray,
    concept_rows: Mapping[str, np.ndarray],
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    pair_corr: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> pl.DataFrame:
    """Metrics per concept subspace, each against its own nulls, adjusted across concepts.

    For each concept with at least ``min_concept_pairs`` pairs: every decoder metric on the
    concept's pairs, with (1) a permutation null that shuffles the B side within the concept
    and (2) a subspace null of random same-size subsets of all matched pairs (partners kept).
    Bonferroni and Benjamini-Hochberg adjust each metric's p-values across the tested concepts.
    A metric that cannot be tested on a concept is marked ``tested = False`` with the reason in
    ``not_testable`` and no p-values (so it does not count towards the adjustment): too few pairs,
    or an SVCCA whose kept directions outnumber the dimensions the concept's pairs span (its
    canonical correlations are then 1 by construction, see
    :func:`core.spaces.metrics.svcca_forced_correlations`).

    Args:
        x: [n, d_a] A rows of all matched pairs.
        y: [n, d_b] B rows of the same pairs.
        concept_rows: concept -> pair positions (from :func:`core.concepts.select_concept_pairs`).
        settings: metrics, ``n_null_concepts``, seed, thresholds.
        device: torch device or name.
        pair_corr: optional [n] matched activation correlation per pair (adds ``matched_corr``,
            tested with the subspace null only).
        progress: optional progress callback.

    Returns:
        One row per (concept, metric): ``concept``, ``metric``, ``n_pairs``, ``tested``,
        ``not_testable`` (why not, or null), ``value``, ``null_mean``, ``null_std``, ``p_value`` (permutation), ``p_bonferroni``,
        ``p_bh``, ``subspace_null_mean``, ``subspace_null_std``, ``subspace_p_value``,
        ``subspace_p_bonferroni``, ``subspace_p_bh``, ``n_null``, ``seed``, ``significant``.
    """
    settings = settings or SimilaritySettings()
    progress = progress or no_progress
    metrics = list(settings.decoder_metrics)
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    rows: list[dict[str, Any]] = []
    names = list(concept_rows)
    for ci, name in enumerate(names):
        idx = np.asarray(concept_rows[name], dtype=np.int64)
        m_pairs = int(idx.size)
        tested = m_pairs >= settings.min_concept_pairs
        results: dict[str, MetricResult] = {}
        sub: dict[str, np.ndarray] = {}
        if tested:
            concept_settings = SimilaritySettings(
                metrics=tuple(metrics),
                n_null=settings.n_null_concepts,
                seed=settings.seed,
                variance=settings.variance,
                rsa_max_pairs=settings.rsa_max_pairs,
                null_dtype=settings.null_dtype,
                chunk=settings.chunk,
                concepts=False,
                n_boot=0,
            )
            results = compute_similarity(x[idx], y[idx], concept_settings, device)
            if settings.n_null_concepts and m_pairs < x.shape[0]:
                sub = compute_subspace_null(
                    x, y, m_pairs, metrics, settings.n_null_concepts, settings.seed, settings.variance, pair_corr
                )
        for m in metrics + (["matched_corr"] if pair_corr is not None else []):
            why = None if tested else f"not testable: {m_pairs} pairs, fewer than {settings.min_concept_pairs}"
            if tested and m in results:
                why = results[m].details.get("not_testable_reason")
            row: dict[str, Any] = {
                "concept": name,
                "metric": m,
                "n_pairs": m_pairs,
                "tested": why is None,
                "not_testable": why,
            }
            if m == "matched_corr":
                value = float(np.mean(pair_corr[idx])) if m_pairs and pair_corr is not None else float("nan")
                prim = None
            else:
                value = results[m].value if m in results else float("nan")
                prim = results[m].primary if m in results and why is None else None
            row.update(
                value=value,
                null_mean=prim.mean if prim else float("nan"),
                null_std=prim.std if prim else float("nan"),
                p_value=prim.p_value if prim else float("nan"),
            )
            if m in sub and why is None:
                sn = NullResult.from_samples("subspace", sub[m], value, settings.seed)
                row.update(subspace_null_mean=sn.mean, subspace_null_std=sn.std, subspace_p_value=sn.p_value)
            else:
                row.update(
                    subspace_null_mean=float("nan"), subspace_null_std=float("nan"), subspace_p_value=float("nan")
                )
            row.update(n_null=settings.n_null_concepts if why is None else 0, seed=settings.seed)
            rows.append(row)
        progress("concepts", ci + 1, len(names))
    schema = {
        "concept": pl.Utf8,
        "metric": pl.Utf8,
        "n_pairs": pl.Int64,
        "tested": pl.Boolean,
        "not_testable": pl.Utf8,
        "value": pl.Float64,
        "null_mean": pl.Float64,
        "null_std": pl.Float64,
        "p_value": pl.Float64,
        "subspace_null_mean": pl.Float64,
        "subspace_null_std": pl.Float64,
        "subspace_p_value": pl.Float64,
        "n_null": pl.Int64,
        "seed": pl.Int64,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return _adjust_by_metric(frame, settings, [("p_value", ""), ("subspace_p_value", "subspace_")])


def _adjust_by_metric(
    frame: pl.DataFrame, settings: SimilaritySettings, columns: list[tuple[str, str]]
) -> pl.DataFrame:
    # tests done together = one metric's p-values across concepts (or layer pairs)
    parts = []
    for metric in frame["metric"].unique(maintain_order=True).to_list() if frame.height else []:
        part = frame.filter(pl.col("metric") == metric)
        for col, prefix in columns:
            p = part[col].fill_null(float("nan")).to_numpy()
            part = part.with_columns(
                pl.Series(f"{prefix}p_bonferroni", adjust_bonferroni(p)),
                pl.Series(f"{prefix}p_bh", adjust_bh(p)),
            )
        parts.append(part)
    if not parts:
        extra = {f"{prefix}{k}": pl.Float64 for _, prefix in columns for k in ("p_bonferroni", "p_bh")}
        return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in extra.items()]).with_columns(
            pl.lit(None, dtype=pl.Boolean).alias("significant")
        )
    out = pl.concat(parts)
    key = "p_bh" if settings.correction == "bh" else "p_bonferroni"
    return out.with_columns(
        pl.when(pl.col(key).is_nan()).then(None).otherwise(pl.col(key) < settings.alpha).alias("significant")
    )
