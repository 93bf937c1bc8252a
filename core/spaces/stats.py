"""Statistics shared by the similarity stage: permutation p-values, multiplicity, bootstrap.

Everything here is plain numpy/scipy on small arrays; the heavy null sampling lives in
:mod:`core.similarity`. Conventions: a null sample "beats" the observed value when it is
at least as large (every similarity here grows with similarity), and a p-value is
``(b + 1) / (n + 1)`` so it is never 0 (a finite null can never prove p = 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from scipy import stats

from core.bundle.codes import SparseCodes
from core.errors import SimilarityError

# Null samples are often computed in float32 while the observed value is float64: a null
# sample equal to the observed value (identity permutation, symmetric data) must still count
# as a tie, so ties are judged within this absolute tolerance (conservative: p only grows).
TIE_TOLERANCE = 1e-6


def permutation_p_value(value: float, null: np.ndarray) -> float:
    """One-sided permutation p-value, never 0.

    Args:
        value: the observed statistic (larger means more similar).
        null: the statistic under the null, one entry per sample.

    Returns:
        ``(b + 1) / (n + 1)`` where ``b`` counts null samples ``>= value`` (within
        :data:`TIE_TOLERANCE`) and ``n`` is the number of finite null samples.
    """
    null = np.asarray(null, dtype=np.float64)
    null = null[np.isfinite(null)]
    b = int(np.count_nonzero(null >= value - TIE_TOLERANCE))
    return (b + 1) / (null.size + 1)


def adjust_bonferroni(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Bonferroni-adjusted p-values (family-wise error), ``min(1, m * p)``.

    Args:
        p_values: the raw p-values of the tests done together (NaN entries are kept as
            NaN and do not count towards ``m``).

    Returns:
        float64 array of adjusted p-values in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    out[ok] = np.minimum(1.0, p[ok] * int(ok.sum()))
    return out


def adjust_bh(p_values: Sequence[float] | np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg adjusted p-values (false discovery rate), via scipy.

    Args:
        p_values: the raw p-values of the tests done together (NaN entries are kept as
            NaN and do not count towards ``m``).

    Returns:
        float64 array of adjusted p-values (q-values) in the input order.
    """
    p = np.asarray(p_values, dtype=np.float64)
    out = np.full(p.shape, np.nan)
    ok = np.isfinite(p)
    if ok.any():
        out[ok] = stats.false_discovery_control(p[ok], method="bh")
    return out


def adjust_p_values(p_values: Sequence[float] | np.ndarray, method: str) -> np.ndarray:
    """Adjust p-values for multiplicity by name.

    Args:
        p_values: raw p-values of the tests done together.
        method: ``"bh"`` (Benjamini-Hochberg) or ``"bonferroni"``.

    Returns:
        The adjusted p-values.
    """
    if method == "bh":
        return adjust_bh(p_values)
    if method == "bonferroni":
        return adjust_bonferroni(p_values)
    raise ValueError(f"unknown correction {method!r}; choose 'bh' or 'bonferroni'")


def percentile_interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    """Percentile bootstrap interval.

    Args:
        samples: bootstrap replicates of a statistic (NaNs ignored).
        level: coverage, for example 0.95.

    Returns:
        ``(low, high)``; NaNs when no replicate is finite.
    """
    s = np.asarray(samples, dtype=np.float64)
    s = s[np.isfinite(s)]
    if s.size == 0:
        return float("nan"), float("nan")
    tail = (1.0 - level) / 2.0 * 100.0
    low, high = np.percentile(s, [tail, 100.0 - tail])
    return float(low), float(high)


@dataclass(frozen=True)
class DocumentSums:
    """Per-document sufficient statistics of the activation pairs (pairs on columns).

    Pearson correlation over any multiset of documents follows from sums of these rows,
    so a document bootstrap never touches the units again.

    Attributes:
        count: float64 [n_docs], units per document.
        sum_a, sum_b, sum_aa, sum_bb, sum_ab: float64 [n_docs, n_pairs].
    """

    count: np.ndarray
    sum_a: np.ndarray
    sum_b: np.ndarray
    sum_aa: np.ndarray
    sum_bb: np.ndarray
    sum_ab: np.ndarray


def compute_document_sums(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    unit_doc: np.ndarray,
    idx_a: np.ndarray,
    idx_b: np.ndarray,
) -> DocumentSums:
    """Sum each pair's activations (and squares and products) within every document.

    Args:
        codes_a: codes of side A, one row per unit.
        codes_b: codes of side B, same rows.
        unit_doc: int [n_units], the document of each unit.
        idx_a: int [n_pairs], A feature of each pair.
        idx_b: int [n_pairs], B feature of each pair.

    Returns:
        The per-document sums.
    """
    if codes_a.n_rows != codes_b.n_rows or codes_a.n_rows != len(unit_doc):
        raise SimilarityError(
            f"Codes have {codes_a.n_rows} and {codes_b.n_rows} rows but there are {len(unit_doc)} units; "
            "rebuild the bundle so both sides cover the same units."
        )
    _, doc_index = np.unique(np.asarray(unit_doc), return_inverse=True)
    n_docs = int(doc_index.max()) + 1 if doc_index.size else 0
    n_units = codes_a.n_rows
    # doc x unit indicator: one sparse product per statistic sums units into documents
    indicator = sp.csr_matrix(
        (np.ones(n_units), (doc_index, np.arange(n_units))), shape=(n_docs, n_units), dtype=np.float64
    )
    xa = codes_a.to_scipy().tocsc()[:, np.asarray(idx_a)].astype(np.float64)
    xb = codes_b.to_scipy().tocsc()[:, np.asarray(idx_b)].astype(np.float64)

    def dense(m: sp.spmatrix) -> np.ndarray:
        return np.asarray((indicator @ m).todense())

    return DocumentSums(
        count=np.asarray(indicator.sum(axis=1)).ravel(),
        sum_a=dense(xa),
        sum_b=dense(xb),
        sum_aa=dense(xa.multiply(xa).tocsc()),
        sum_bb=dense(xb.multiply(xb).tocsc()),
        sum_ab=dense(xa.multiply(xb).tocsc()),
    )


def _pearson_from_sums(n: np.ndarray, sa, sb, saa, sbb, sab) -> np.ndarray:
    # n may be [B, 1] and sums [B, P]; undefined correlations (a constant side) become NaN
    cov = n * sab - sa * sb
    var_a = n * saa - sa * sa
    var_b = n * sbb - sb * sb
    with np.errstate(invalid="ignore", divide="ignore"):
        r = cov / np.sqrt(var_a * var_b)
    r[~((var_a > 0) & (var_b > 0))] = np.nan
    return np.clip(r, -1.0, 1.0)


def compute_pair_correlations(sums: DocumentSums, weights: np.ndarray | None = None) -> np.ndarray:
    """Pearson correlation of every pair over (re-weighted) documents.

    Args:
        sums: per-document sums from :func:`compute_document_sums`.
        weights: optional float [n_boot, n_docs] document multiplicities (a bootstrap
            draw); ``None`` means every document once.

    Returns:
        float64 [n_pairs] (no weights) or [n_boot, n_pairs]; NaN where undefined.
    """
    if weights is None:
        w = np.ones((1, sums.count.size))
    else:
        w = np.asarray(weights, dtype=np.float64)
    n = (w @ sums.count)[:, None]
    r = _pearson_from_sums(n, w @ sums.sum_a, w @ sums.sum_b, w @ sums.sum_aa, w @ sums.sum_bb, w @ sums.sum_ab)
    return r[0] if weights is None else r


def draw_document_weights(n_docs: int, n_boot: int, seed: int) -> np.ndarray:
    """Bootstrap multiplicities: each row resamples ``n_docs`` documents with replacement.

    Args:
        n_docs: number of documents.
        n_boot: number of bootstrap draws.
        seed: seed of the draws.

    Returns:
        float64 [n_boot, n_docs] counts (each row sums to ``n_docs``).
    """
    rng = np.random.default_rng([seed, 7])
    return rng.multinomial(n_docs, np.full(n_docs, 1.0 / n_docs), size=n_boot).astype(np.float64)


def bootstrap_pair_correlations(sums: DocumentSums, n_boot: int, seed: int, chunk: int = 200) -> np.ndarray:
    """Every pair's correlation under ``n_boot`` document bootstrap draws.

    Args:
        sums: per-document sums.
        n_boot: number of draws.
        seed: seed of the draws (same seed, same draws).
        chunk: draws processed at once (bounds memory).

    Returns:
        float64 [n_boot, n_pairs].
    """
    weights = draw_document_weights(sums.count.size, n_boot, seed)
    parts = [compute_pair_correlations(sums, weights[i : i + chunk]) for i in range(0, n_boot, chunk)]
    return np.concatenate(parts, axis=0) if parts else np.zeros((0, sums.sum_a.shape[1]))
