"""The document-stratified co-firing test: p-values, bounds, and the planted acceptance tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.stats import hypergeom, poisson

from core.errors import MatchingError
from core.matching.correlate import compute_correlation
from core.matching.significance import (
    FLAG_LOW_K,
    benjamini_hochberg_log,
    compute_pair_null,
    compute_significance,
    document_index,
    log_pvalues,
    poisson_log_sf,
)
from tests.core.planted import build_bursty_config, make_bursty


def _null(ca: list[int], cb: list[int], lengths: list[int], k: int) -> tuple[float, float, float]:
    """mu, log Chernoff and fill share of one pair given per-document counts."""
    n_docs = len(lengths)
    col = lambda c: sp.csc_matrix(np.array(c, np.int64).reshape(n_docs, 1))  # noqa: E731
    zero = np.array([0])
    mu, log_c, fill = compute_pair_null(col(ca), col(cb), np.array(lengths), zero, zero, np.array([k]))
    return float(mu[0]), float(log_c[0]), float(fill[0])


def test_rare_pair_cofiring_once_in_exchangeable_tokens():
    # n_a = n_b = 7 in N = 2e5 exchangeable units: mu = 49 / 2e5 = 2.45e-4 and P(k >= 1) = 1 - e^-mu
    mu, log_c, _ = _null([7], [7], [200_000], k=1)
    assert mu == pytest.approx(2.45e-4)
    p = math.exp(log_pvalues(np.array([1.0]), np.array([mu]), np.array([log_c]))[0])
    assert p == pytest.approx(-math.expm1(-2.45e-4), rel=1e-9)
    assert p == pytest.approx(2.45e-4, rel=1e-3)


def _exact_tail(ca: list[int], cb: list[int], lengths: list[int], k: int) -> float:
    """P(sum_d X_d >= k), X_d ~ Hypergeometric: b's firings shuffled within each document."""
    pmf = np.array([1.0])
    for a, b, n in zip(ca, cb, lengths, strict=True):
        support = np.arange(0, min(a, b) + 1)
        pmf = np.convolve(pmf, hypergeom(n, b, a).pmf(support))
    return float(pmf[k:].sum())


@pytest.mark.parametrize(
    ("ca", "cb", "lengths"),
    [
        ([3], [4], [20]),
        ([10], [10], [30]),
        ([2, 5, 1], [3, 5, 4], [10, 12, 8]),
        ([8, 8], [8, 2], [8, 50]),  # a fills its first document
        ([1, 1, 1, 1], [1, 2, 1, 3], [40, 40, 40, 40]),
    ],
)
def test_chernoff_bound_is_never_below_the_exact_tail(ca, cb, lengths):
    max_k = sum(min(a, b) for a, b in zip(ca, cb, strict=True))
    for k in range(0, max_k + 1):
        _, log_c, _ = _null(ca, cb, lengths, k)
        exact = _exact_tail(ca, cb, lengths, k)
        assert math.exp(log_c) >= exact * (1 - 1e-9) - 1e-300, (k, math.exp(log_c), exact)


def test_document_filling_pair_is_flagged_and_not_significant():
    # a fills the document: every firing of b co-fires, so k = mu exactly
    mu, log_c, fill = _null([50], [5], [50], k=5)
    assert mu == pytest.approx(5.0) and fill == 1.0
    assert log_c == pytest.approx(0.0)


def test_poisson_tail_in_log_space():
    k = np.array([0, 1, 3, 10, 50, 400])
    mu = np.array([0.5, 2.0, 0.01, 1.5, 0.2, 1e-3])
    got = poisson_log_sf(k, mu)
    assert got[0] == 0.0
    np.testing.assert_allclose(got[:5], poisson.logsf(k[:5] - 1, mu[:5]), rtol=1e-9)
    # far below double range: the leading term dominates
    lead = 400 * math.log(1e-3) - 1e-3 - math.lgamma(401)
    assert got[5] == pytest.approx(lead, rel=1e-9) and np.isfinite(got[5])


def test_benjamini_hochberg_matches_the_textbook_formula():
    p = np.array([0.01, 0.04, 0.03, 0.005, 0.5])
    m = len(p)
    order = np.argsort(p)
    ranked = p[order] * m / np.arange(1, m + 1)
    q = np.minimum.accumulate(ranked[::-1])[::-1]
    want = np.empty(m)
    want[order] = np.minimum(q, 1)
    np.testing.assert_allclose(np.exp(benjamini_hochberg_log(np.log(p))), want, rtol=1e-12)


def test_document_index_checks_its_length():
    doc_of_unit, lengths = document_index(np.array([7, 7, 3, 3, 3]), 5)
    assert doc_of_unit.tolist() == [1, 1, 0, 0, 0] and lengths.tolist() == [3, 2]
    with pytest.raises(MatchingError, match="units"):
        document_index(np.array([1, 2]), 5)


@pytest.fixture(scope="module")
def bursty():
    data = make_bursty(build_bursty_config())
    result = compute_correlation(data.codes_a, data.codes_b, top_k=10)
    return data, result


def _calls(rows) -> dict[int, tuple[int, bool]]:
    return {a: (b, s) for a, b, s in zip(rows["feature_a"], rows["feature_b"], rows["significant"], strict=True)}


def test_stratified_test_keeps_planted_pairs_and_rejects_chance(bursty):
    data, result = bursty
    rows, candidates = compute_significance(result, data.codes_a, data.codes_b, data.docs)
    calls = _calls(rows)
    chance_called = np.mean([calls.get(int(a), (None, False))[1] for a in data.chance_a])
    assert chance_called < 0.01
    kept = []
    for a, b in data.planted:
        hit = np.flatnonzero(result.ab.index[a] == b)
        k = result.ab.count[a, hit[0]] if hit.size else 0
        if k >= 3:
            kept.append(calls.get(int(a), (None, False)) == (int(b), True))
    assert len(kept) >= 150 and np.mean(kept) >= 0.99
    # every called row carries its evidence; low-k rows are flagged
    for col in ("corr", "k", "n_a", "n_b", "mu", "k_over_mu", "neglog10_p", "q", "flags"):
        assert col in rows.columns
    low = rows.filter(rows["k"] <= 2)
    assert all(FLAG_LOW_K in f for f in low["flags"].to_list())
    assert candidates.height >= rows.height


def test_unstratified_test_calls_chance_rows(bursty):
    # the guard that stratification stays: treating the corpus as one document over-calls
    data, result = bursty
    rows, _ = compute_significance(result, data.codes_a, data.codes_b, None)
    calls = _calls(rows)
    chance_called = np.mean([calls.get(int(a), (None, False))[1] for a in data.chance_a])
    assert chance_called > 0.05
