"""Is a match more than chance? A per-pair co-firing test stratified by document.

Two rare features that co-fire once can reach r = 0.1-0.2 by chance, and text is bursty:
features that fire in the same documents co-fire far more often than a whole-corpus
shuffle predicts, without any token-level link. So the null hypothesis here shuffles B's
firings only WITHIN each document (b keeps its per-document counts), and the test asks
whether the pair co-fires more often than that.

For a pair (a, b) with ``k`` co-firing units, per document ``d`` of ``L_d`` units where a
fires ``c_a(d)`` times and b ``c_b(d)`` times:

- ``mu = sum_d c_a(d) c_b(d) / L_d`` is the expected co-firing count under the null;
- the Poisson tail ``P(Poisson(mu) >= k)`` is computed in log space;
- the Chernoff bound ``inf_{lambda >= 0} exp(-lambda k + sum_d m_d log(1 + pi_d (e^lambda - 1)))``
  with ``m_d = min(c_a, c_b)``, ``pi_d = max(c_a, c_b) / L_d`` bounds the exact tail (each
  document's co-firing count is hypergeometric, which is dominated in convex order by
  Binomial(m_d, pi_d), Hoeffding 1963), and stays valid when a feature fills whole documents;
- ``p = min(Poisson tail, Chernoff bound)``.

Per A feature, the candidates are its top ``n_candidates`` partners by r; the partner with
the smallest p is chosen (r stays the displayed effect size), its p is Bonferroni-adjusted
over the live B features (the candidates were picked from all of them), and
Benjamini-Hochberg turns the row p-values of all tested A features into q-values. A row is
called a match at ``q <= alpha``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numba as nb
import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.special import gammainc, gammaln

from core.bundle.codes import SparseCodes
from core.errors import MatchingError
from core.matching.moments import FeatureMoments

if TYPE_CHECKING:  # torch-free at run time: core.matching.explain (the app's pair view) reads this module
    from core.matching.correlate import CorrelationResult

FLAG_LOW_K = "k <= 2: indistinguishable from chance"
FLAG_FILLING = "document-filling: token-level test uninformative"
# a pair counts as document-filling when at least this share of its possible co-firings
# lies in documents that one of the two features covers at least half of
_FILL_PI = 0.5
_FILL_SHARE = 0.5


def document_index(docs: np.ndarray | None, n_units: int) -> tuple[np.ndarray, np.ndarray]:
    """Dense document ids per unit and the length of each document.

    Args:
        docs: the ``doc`` of each unit (any integer ids), or None for one document holding
            every unit (the unstratified test).
        n_units: number of units.

    Returns:
        ``(doc_of_unit, doc_len)``: int64 [n_units] in ``0..n_docs-1`` and int64 [n_docs].
    """
    if docs is None:
        return np.zeros(n_units, np.int64), np.array([n_units], np.int64)
    docs = np.asarray(docs)
    if docs.shape != (n_units,):
        raise MatchingError(
            f"The units table names a document for {docs.shape[0]} units but the codes have {n_units}; "
            "rebuild the bundle so units and codes agree."
        )
    _, doc_of_unit = np.unique(docs, return_inverse=True)
    doc_of_unit = doc_of_unit.astype(np.int64).reshape(-1)
    return doc_of_unit, np.bincount(doc_of_unit).astype(np.int64)


def compute_doc_counts(codes: SparseCodes, doc_of_unit: np.ndarray, n_docs: int) -> sp.csc_matrix:
    """How many units of each document each feature fires on.

    Args:
        codes: CSR codes.
        doc_of_unit: int [n_units] dense document ids.
        n_docs: number of documents.

    Returns:
        CSC int64 [n_docs, n_features], documents sorted within each column.
    """
    total = sp.csc_matrix((n_docs, codes.n_features), dtype=np.int64)
    # chunked so the COO triplets of a whole corpus (24 bytes per activation) never exist at once
    for lo in range(0, codes.n_rows, 1 << 18):
        chunk = codes.row_slice(lo, lo + (1 << 18))
        rows = doc_of_unit[lo + chunk.row_ids()]
        total = total + sp.csc_matrix(
            (np.ones(chunk.nnz, np.int64), (rows, chunk.indices)), shape=(n_docs, codes.n_features)
        )
    total = sp.csc_matrix(total)
    total.sum_duplicates()
    total.sort_indices()
    return total


@dataclass(frozen=True, eq=False)
class DocCounts:
    """Per-document firing counts of both sides: what every pair's null needs, computed once.

    Attributes:
        counts_a: :func:`compute_doc_counts` of side A.
        counts_b: :func:`compute_doc_counts` of side B.
        doc_len: int64 [n_docs] units per document.
        cache: (a, b, k) -> (mu, log Chernoff bound, filling share) of every pair computed so far:
            the stage asks for the same pairs several times (both directions' candidates, every
            listed row, each pairing method), and each null walks both features' documents.
    """

    counts_a: sp.csc_matrix
    counts_b: sp.csc_matrix
    doc_len: np.ndarray
    cache: dict[tuple[int, int, int], tuple[float, float, float]] = field(default_factory=dict, repr=False)

    def null(self, pair_a: np.ndarray, pair_b: np.ndarray, k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """:func:`compute_pair_null` of listed pairs, each pair computed once per DocCounts."""
        pair_a, pair_b = np.asarray(pair_a, np.int64), np.asarray(pair_b, np.int64)
        k = np.asarray(k, np.int64)
        keys = list(zip(pair_a.tolist(), pair_b.tolist(), k.tolist(), strict=True))
        todo = sorted({key for key in keys if key not in self.cache})
        if todo:
            ta, tb, tk = (np.array(col, np.int64) for col in zip(*todo, strict=True))
            mu, log_c, fill = compute_pair_null(self.counts_a, self.counts_b, self.doc_len, ta, tb, tk)
            self.cache.update(zip(todo, zip(mu.tolist(), log_c.tolist(), fill.tolist(), strict=True), strict=True))
        if not keys:
            return np.zeros(0), np.zeros(0), np.zeros(0)
        out = np.array([self.cache[key] for key in keys], np.float64)
        return out[:, 0].copy(), out[:, 1].copy(), out[:, 2].copy()


def compute_document_counts(codes_a: SparseCodes, codes_b: SparseCodes, docs: np.ndarray | None) -> DocCounts:
    """:class:`DocCounts` of two sides' codes (``docs``: each unit's document, None for one document)."""
    doc_of_unit, doc_len = document_index(docs, codes_a.n_rows)
    return DocCounts(
        compute_doc_counts(codes_a, doc_of_unit, doc_len.shape[0]),
        compute_doc_counts(codes_b, doc_of_unit, doc_len.shape[0]),
        doc_len,
    )


def pair_flags(k: np.ndarray, fill_share: np.ndarray) -> list[list[str]]:
    """The flags of pairs with co-firing counts ``k`` and document-filling shares ``fill_share``."""
    return [
        ([FLAG_LOW_K] if kv <= 2 else []) + ([FLAG_FILLING] if fv >= _FILL_SHARE else [])
        for kv, fv in zip(np.asarray(k), np.asarray(fill_share), strict=True)
    ]


def k_over_mu(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """Observed over expected co-firings (inf where mu is 0 and k is not, nan where both are)."""
    k, mu = np.asarray(k, np.float64), np.asarray(mu, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(mu > 0, k / np.where(mu > 0, mu, 1.0), np.where(k > 0, np.inf, np.nan))


@nb.njit(parallel=True, cache=True)
def _pair_null(
    a_ptr, a_doc, a_cnt, b_ptr, b_doc, b_cnt, doc_len, pa, pb, k, mu, log_chernoff, fill
):  # pragma: no cover
    for i in nb.prange(pa.shape[0]):
        p, pe = a_ptr[pa[i]], a_ptr[pa[i] + 1]
        q, qe = b_ptr[pb[i]], b_ptr[pb[i] + 1]
        size = min(pe - p, qe - q)
        m = np.empty(size, np.float64)
        pi = np.empty(size, np.float64)
        n = 0
        expect = 0.0
        while p < pe and q < qe:
            if a_doc[p] == b_doc[q]:
                length = doc_len[a_doc[p]]
                ca, cb = a_cnt[p], b_cnt[q]
                expect += ca * cb / length
                m[n] = min(ca, cb)
                pi[n] = max(ca, cb) / length
                n += 1
                p += 1
                q += 1
            elif a_doc[p] < b_doc[q]:
                p += 1
            else:
                q += 1
        mu[i] = expect
        s_m = 0.0
        s_mpi = 0.0
        s_fill = 0.0
        for t in range(n):
            s_m += m[t]
            s_mpi += m[t] * pi[t]
            if pi[t] >= _FILL_PI:
                s_fill += m[t]
        fill[i] = s_fill / s_m if s_m > 0 else 0.0
        kk = k[i]
        if kk <= s_mpi:
            log_chernoff[i] = 0.0  # the infimum sits at lambda = 0
            continue
        if kk >= s_m:
            # limit lambda -> infinity: every possible co-firing happened
            acc = 0.0
            for t in range(n):
                acc += m[t] * math.log(pi[t])
            log_chernoff[i] = acc if kk == s_m else -np.inf
            continue
        # g'(lambda) = sum m pi / (pi + (1 - pi) e^-lambda) - k rises from s_mpi - k < 0 to s_m - k > 0.
        # Newton steps on g' (g'' > 0), kept inside a bisection bracket: a handful of passes over the
        # documents instead of a hundred bisection passes with an exp per document (this was most
        # of the matching stage's time). e^-lambda is one number per pass.
        lo, hi = 0.0, 1.0
        while True:
            e = math.exp(-hi)
            grad = -kk
            for t in range(n):
                grad += m[t] * pi[t] / (pi[t] + (1.0 - pi[t]) * e)
            if grad > 0 or hi > 1e4:
                break
            lo, hi = hi, hi * 2.0
        lam = 0.5 * (lo + hi)
        for _ in range(200):
            e = math.exp(-lam)
            grad = -kk
            curv = 0.0
            for t in range(n):
                den = pi[t] + (1.0 - pi[t]) * e
                grad += m[t] * pi[t] / den
                curv += m[t] * pi[t] * (1.0 - pi[t]) * e / (den * den)
            if grad > 0:
                hi = lam
            else:
                lo = lam
            step = grad / curv if curv > 0 else 0.0
            nxt = lam - step
            if not (lo < nxt < hi) or curv <= 0:
                nxt = 0.5 * (lo + hi)
            if abs(nxt - lam) <= 1e-13 * (1.0 + lam) or hi - lo <= 1e-13 * (1.0 + hi):
                lam = nxt
                break
            lam = nxt
        g = -lam * kk
        e = math.exp(-lam)
        for t in range(n):
            g += m[t] * (lam + math.log(pi[t] + (1.0 - pi[t]) * e))
        log_chernoff[i] = min(0.0, g)


def compute_pair_null(
    counts_a: sp.csc_matrix,
    counts_b: sp.csc_matrix,
    doc_len: np.ndarray,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    k: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Expected co-firings, the log Chernoff bound and the document-filling share of listed pairs.

    Args:
        counts_a: :func:`compute_doc_counts` of side A.
        counts_b: :func:`compute_doc_counts` of side B.
        doc_len: int [n_docs] units per document.
        pair_a: int [P] A features.
        pair_b: int [P] B features.
        k: int [P] observed co-firing counts.

    Returns:
        ``(mu, log_chernoff, fill_share)``, float64 [P] each.
    """
    n = len(pair_a)
    mu, log_c, fill = np.zeros(n), np.zeros(n), np.zeros(n)
    if n:
        _pair_null(
            counts_a.indptr.astype(np.int64),
            counts_a.indices.astype(np.int64),
            counts_a.data.astype(np.float64),
            counts_b.indptr.astype(np.int64),
            counts_b.indices.astype(np.int64),
            counts_b.data.astype(np.float64),
            doc_len.astype(np.float64),
            np.asarray(pair_a, np.int64),
            np.asarray(pair_b, np.int64),
            np.asarray(k, np.float64),
            mu,
            log_c,
            fill,
        )
    return mu, log_c, fill


def poisson_log_sf(k: np.ndarray, mu: np.ndarray) -> np.ndarray:
    """``log P(Poisson(mu) >= k)``, accurate far into the tail.

    Args:
        k: observed counts (>= 0).
        mu: Poisson means (>= 0).

    Returns:
        float64 log tail probabilities (0 where k <= 0, -inf where mu = 0 < k).
    """
    k = np.asarray(k, np.float64)
    mu = np.asarray(mu, np.float64)
    out = np.zeros(np.broadcast(k, mu).shape)
    k, mu = np.broadcast_to(k, out.shape), np.broadcast_to(mu, out.shape)
    pos = k > 0
    with np.errstate(divide="ignore"):
        # P(X >= k) is the regularised lower incomplete gamma P(k, mu)
        tail = np.where(pos & (mu > 0), gammainc(np.maximum(k, 1), mu), 0.0)
        out[pos] = np.log(tail[pos])
    deep = pos & (mu > 0) & (tail < 1e-280)
    if deep.any():
        # below double range: e^-mu mu^k / k! * sum_j mu^j k! / (k + j)!, the sum converging fast
        kd, md = k[deep], mu[deep]
        term, total = np.ones_like(kd), np.ones_like(kd)
        for j in range(1, 200):
            term = term * md / (kd + j)
            total += term
            if np.all(term < 1e-17 * total):
                break
        out[deep] = kd * np.log(md) - md - gammaln(kd + 1) + np.log(total)
    return out


def log_pvalues(k: np.ndarray, mu: np.ndarray, log_chernoff: np.ndarray) -> np.ndarray:
    """``log p = min(log Poisson tail, log Chernoff bound)`` per pair (0 where k = 0)."""
    return np.minimum(poisson_log_sf(k, mu), log_chernoff)


def benjamini_hochberg_log(log_p: np.ndarray) -> np.ndarray:
    """Benjamini-Hochberg q-values, in log space so tiny p-values keep their order.

    Args:
        log_p: natural-log p-values of the tested hypotheses.

    Returns:
        Natural-log q-values (at most 0).
    """
    m = log_p.shape[0]
    if m == 0:
        return log_p.copy()
    order = np.argsort(log_p, kind="stable")
    ranked = log_p[order] + math.log(m) - np.log(np.arange(1, m + 1))
    ranked = np.minimum.accumulate(ranked[::-1])[::-1]
    out = np.empty(m)
    out[order] = np.minimum(ranked, 0.0)
    return out


def compute_significance(
    result: CorrelationResult,
    codes_a: SparseCodes | None,
    codes_b: SparseCodes | None,
    docs: np.ndarray | None,
    n_candidates: int = 10,
    alpha: float = 0.05,
    doc_counts: DocCounts | None = None,
    direction: str = "a->b",
) -> tuple[pl.DataFrame, pl.DataFrame]:
    """The per-feature significance test of the module docstring (per A feature, or per B feature).

    Args:
        result: the correlation top-k (its ``ab`` (or ``ba``) lists give the candidates and their k).
        codes_a: codes of SAE A (None when ``doc_counts`` is given).
        codes_b: codes of SAE B (None when ``doc_counts`` is given).
        docs: the document of each unit (``units.parquet``'s ``doc``), or None for the
            unstratified test (one document; kept for comparison, not for use).
        n_candidates: candidates per feature (its top partners by r).
        alpha: q-value at which a row is called.
        doc_counts: :func:`compute_document_counts` of the codes (computed here if None).
        direction: "a->b" (one hypothesis per A feature, Bonferroni over the live B features) or
            "b->a" (the mirror: per B feature, over the live A features).

    Returns:
        ``(rows, candidates)``. ``rows``: one row per live feature with a candidate:
        ``feature_a``, ``feature_b`` (the chosen pair), ``rank``, ``corr``, ``k``, ``n_a``,
        ``n_b``, ``mu``, ``k_over_mu``, ``neglog10_p``, ``neglog10_p_row`` (Bonferroni),
        ``q``, ``significant``, ``flags``. ``candidates``: every tested pair with ``feature_a``,
        ``feature_b``, ``rank``, ``mu``, ``neglog10_p``.
    """
    if direction not in ("a->b", "b->a"):
        raise ValueError(f"direction must be 'a->b' or 'b->a', got {direction!r}")
    if doc_counts is None:
        if codes_a is None or codes_b is None:
            raise ValueError("compute_significance needs the codes or their doc_counts")
        doc_counts = compute_document_counts(codes_a, codes_b, docs)
    forward = direction == "a->b"
    topk = result.ab if forward else result.ba
    c = min(n_candidates, topk.k)
    idx, corr, kk = topk.index[:, :c], topk.score[:, :c], topk.count[:, :c]
    own, ranks = np.nonzero(idx >= 0)
    other = idx[own, ranks]
    k = kk[own, ranks]
    fa_all, fb_all = (own, other) if forward else (other, own)
    mu, log_c, fill = doc_counts.null(fa_all, fb_all, k)
    log_p = log_pvalues(k, mu, log_c)
    candidates = pl.DataFrame(
        {
            "feature_a": fa_all.astype(np.int64),
            "feature_b": fb_all.astype(np.int64),
            "rank": (ranks + 1).astype(np.int32),
            "mu": mu,
            "neglog10_p": -log_p / math.log(10),
        }
    )
    if own.size == 0:
        return _empty_rows(), candidates
    # best candidate per feature: smallest p, then the higher r (lower rank) on ties
    order = np.lexsort((ranks, log_p, own))
    first = np.ones(order.shape[0], bool)
    first[1:] = own[order][1:] != own[order][:-1]
    pick = order[first]
    searched = result.moments_b if forward else result.moments_a
    n_live = int((~searched.is_dead).sum())
    log_row = np.minimum(0.0, log_p[pick] + math.log(max(n_live, 1)))
    log_q = benjamini_hochberg_log(log_row)
    fa, fb, kp, mup = fa_all[pick], fb_all[pick], k[pick], mu[pick]
    rows = pl.DataFrame(
        {
            "feature_a": fa.astype(np.int64),
            "feature_b": fb.astype(np.int64),
            "rank": (ranks[pick] + 1).astype(np.int32),
            "corr": corr[own[pick], ranks[pick]],
            "k": kp.astype(np.int64),
            "n_a": result.moments_a.n_fire[fa],
            "n_b": result.moments_b.n_fire[fb],
            "mu": mup,
            "k_over_mu": k_over_mu(kp, mup),
            "neglog10_p": -log_p[pick] / math.log(10),
            "neglog10_p_row": -log_row / math.log(10),
            "q": np.exp(log_q),
            "significant": log_q <= math.log(alpha),
            "flags": pl.Series(pair_flags(kp, fill[pick]), dtype=pl.List(pl.String)),
        }
    )
    return rows.sort("feature_a" if forward else "feature_b"), candidates


def _empty_rows() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "feature_a": pl.Int64,
            "feature_b": pl.Int64,
            "rank": pl.Int32,
            "corr": pl.Float64,
            "k": pl.Int64,
            "n_a": pl.Int64,
            "n_b": pl.Int64,
            "mu": pl.Float64,
            "k_over_mu": pl.Float64,
            "neglog10_p": pl.Float64,
            "neglog10_p_row": pl.Float64,
            "q": pl.Float64,
            "significant": pl.Boolean,
            "flags": pl.List(pl.String),
        }
    )


def compute_pair_significance(
    moments_a: FeatureMoments,
    moments_b: FeatureMoments,
    codes_a: SparseCodes | None,
    codes_b: SparseCodes | None,
    docs: np.ndarray | None,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
    k: np.ndarray,
    alpha: float = 0.05,
    doc_counts: DocCounts | None = None,
) -> pl.DataFrame:
    """The same test for a given list of pairs (an assignment), one hypothesis per pair.

    Each pair's p is Bonferroni-adjusted by the larger side's live feature count (the
    pairing searched one side for each feature of the other), then Benjamini-Hochberg runs
    over the listed pairs.

    Args:
        moments_a: statistics of SAE A.
        moments_b: statistics of SAE B.
        codes_a: codes of SAE A (None when ``doc_counts`` is given).
        codes_b: codes of SAE B (None when ``doc_counts`` is given).
        docs: the document of each unit, or None (unstratified).
        pair_a: int [P] A features.
        pair_b: int [P] B features.
        k: int [P] co-firing counts of the pairs.
        alpha: q-value at which a pair is significant.
        doc_counts: :func:`compute_document_counts` of the codes (computed here if None).

    Returns:
        ``mu``, ``k_over_mu``, ``neglog10_p``, ``q``, ``significant``, ``flags`` for the pairs, in
        their order.
    """
    if doc_counts is None:
        if codes_a is None or codes_b is None:
            raise ValueError("compute_pair_significance needs the codes or their doc_counts")
        doc_counts = compute_document_counts(codes_a, codes_b, docs)
    dc = doc_counts
    mu, log_c, fill = dc.null(pair_a, pair_b, k)
    log_p = log_pvalues(k, mu, log_c)
    m = max(int((~moments_a.is_dead).sum()), int((~moments_b.is_dead).sum()), 1)
    log_q = benjamini_hochberg_log(np.minimum(0.0, log_p + math.log(m)))
    return pl.DataFrame(
        {
            "mu": mu,
            "k_over_mu": k_over_mu(k, mu),
            "neglog10_p": -log_p / math.log(10),
            "q": np.exp(log_q),
            "significant": log_q <= math.log(alpha),
            "flags": pl.Series(pair_flags(k, fill), dtype=pl.List(pl.String)),
        }
    )
