"""Compiled loops behind :mod:`core.dashboards` (numba, no Python objects).

numba because the work is per-feature bounded state updated entry by entry: a top-k heap, a
bottom-k hash sample, a growing histogram and a (feature, token) count table. numpy, scipy,
torch and polars have no streaming per-group top-k or per-group sample; the vectorised numpy
route (lexsort of each chunk's candidates, then a bisection per window lookup) measured about
10x slower at 200K units x 16K features (see benchmarks/dashboards.py for the end-to-end
ratio). Every kernel releases the GIL, so the two SAEs can be scanned on two threads.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit

EMPTY_KEY = -1

_U30 = np.uint64(30)
_U27 = np.uint64(27)
_U31 = np.uint64(31)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)


@njit(cache=True, inline="always")
def mix64(x: np.uint64) -> np.uint64:
    """The splitmix64 finaliser: a fast, well-mixed 64-bit hash."""
    x = (x ^ (x >> _U30)) * _M1
    x = (x ^ (x >> _U27)) * _M2
    return x ^ (x >> _U31)


# ---------------------------------------------------------------- heaps
# top-k heap: the root is the WORST kept entry (lowest act; among equal acts the highest unit)


@njit(cache=True, inline="always")
def _top_worse(va: float, ua: int | np.integer, vb: float, ub: int | np.integer) -> bool | np.bool_:
    return va < vb or (va == vb and ua > ub)


@njit(cache=True)
def _top_sift_down(vals: np.ndarray, units: np.ndarray, n: int, i: int) -> None:
    while True:
        left = 2 * i + 1
        worst = i
        if left < n and _top_worse(vals[left], units[left], vals[worst], units[worst]):
            worst = left
        if left + 1 < n and _top_worse(vals[left + 1], units[left + 1], vals[worst], units[worst]):
            worst = left + 1
        if worst == i:
            return
        vals[i], vals[worst] = vals[worst], vals[i]
        units[i], units[worst] = units[worst], units[i]
        i = worst


@njit(cache=True)
def _top_sift_up(vals: np.ndarray, units: np.ndarray, i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if not _top_worse(vals[i], units[i], vals[parent], units[parent]):
            return
        vals[i], vals[parent] = vals[parent], vals[i]
        units[i], units[parent] = units[parent], units[i]
        i = parent


# sample heap: the root is the LARGEST kept hash key (the first to leave)


@njit(cache=True)
def _smp_sift_down(keys: np.ndarray, vals: np.ndarray, units: np.ndarray, n: int, i: int) -> None:
    while True:
        left = 2 * i + 1
        big = i
        if left < n and keys[left] > keys[big]:
            big = left
        if left + 1 < n and keys[left + 1] > keys[big]:
            big = left + 1
        if big == i:
            return
        keys[i], keys[big] = keys[big], keys[i]
        vals[i], vals[big] = vals[big], vals[i]
        units[i], units[big] = units[big], units[i]
        i = big


@njit(cache=True)
def _smp_sift_up(keys: np.ndarray, vals: np.ndarray, units: np.ndarray, i: int) -> None:
    while i > 0:
        parent = (i - 1) // 2
        if keys[i] <= keys[parent]:
            return
        keys[i], keys[parent] = keys[parent], keys[i]
        vals[i], vals[parent] = vals[parent], vals[i]
        units[i], units[parent] = units[parent], units[i]
        i = parent


# ---------------------------------------------------------------- the streamed pass


@njit(cache=True, nogil=True)
def scan_columns(
    colptr: np.ndarray,
    rows_in_chunk: np.ndarray,
    values: np.ndarray,
    lo: int,
    token_id: np.ndarray,
    n_vocab: int,
    seed_mix: np.uint64,
    log2_bins: int,
    count: np.ndarray,
    total: np.ndarray,
    total_sq: np.ndarray,
    maxv: np.ndarray,
    top_val: np.ndarray,
    top_unit: np.ndarray,
    top_n: np.ndarray,
    smp_key: np.ndarray,
    smp_val: np.ndarray,
    smp_unit: np.ndarray,
    smp_n: np.ndarray,
    hist: np.ndarray,
    hist_exp: np.ndarray,
    hist_set: np.ndarray,
    tab_keys: np.ndarray,
    tab_n: np.ndarray,
    tab_s: np.ndarray,
    tab_used: int,
) -> int:
    """Fold one chunk of units, given column by column (CSC), into every per-feature state.

    Column order keeps one feature's state in cache while all of its entries in the chunk
    are folded in (feature-random order made the pass memory-bound, about 4x slower). Rows
    must ascend within a column, so ties keep the earliest unit.

    Args:
        colptr, rows_in_chunk, values: the chunk as CSC; rows count from ``lo``.
        lo: the chunk's first unit.

    Returns:
        The number of used slots in the (feature, token) table; the caller guarantees it
        has room for every entry of the chunk.
    """
    n_features = count.shape[0]
    k = top_val.shape[1]
    r = smp_key.shape[1]
    n_bins = hist.shape[1]
    mask = tab_keys.shape[0] - 1
    uf = np.uint64(n_features)
    for f in range(n_features):
        for p in range(colptr[f], colptr[f + 1]):
            row = lo + np.int64(rows_in_chunk[p])
            tok = token_id[row]
            v = values[p]
            v64 = np.float64(v)
            count[f] += 1
            total[f] += v64
            total_sq[f] += v64 * v64

            n = top_n[f]
            if n < k:
                top_val[f, n] = v
                top_unit[f, n] = row
                top_n[f] = n + 1
                _top_sift_up(top_val[f], top_unit[f], int(n))
            elif _top_worse(top_val[f, 0], top_unit[f, 0], v, row):
                top_val[f, 0] = v
                top_unit[f, 0] = row
                _top_sift_down(top_val[f], top_unit[f], k, 0)

            key = mix64(np.uint64(row) * uf + seed_mix + np.uint64(f))
            n = smp_n[f]
            if n < r:
                smp_key[f, n] = key
                smp_val[f, n] = v
                smp_unit[f, n] = row
                smp_n[f] = n + 1
                _smp_sift_up(smp_key[f], smp_val[f], smp_unit[f], n)
            elif key < smp_key[f, 0]:
                smp_key[f, 0] = key
                smp_val[f, 0] = v
                smp_unit[f, 0] = row
                _smp_sift_down(smp_key[f], smp_val[f], smp_unit[f], r, 0)

            if v > maxv[f]:
                maxv[f] = v
                # smallest power-of-two width w with v < n_bins * w (exact: frexp/ldexp)
                need = math.frexp(v64)[1] - log2_bins
                if not hist_set[f]:
                    hist_exp[f] = need
                    hist_set[f] = True
                elif need > hist_exp[f]:
                    # widening by 2**d merges old bin j into new bin j >> d: still exact
                    d = min(need - hist_exp[f], 62)
                    for j in range(1, n_bins):
                        t = j >> d
                        if t != j:
                            hist[f, t] += hist[f, j]
                            hist[f, j] = 0
                    hist_exp[f] = need
            b = int(math.floor(math.ldexp(v64, -hist_exp[f])))
            hist[f, b] += 1

            tkey = np.int64(f) * n_vocab + tok
            slot = np.int64(mix64(np.uint64(tkey)) & np.uint64(mask))
            while True:
                held = tab_keys[slot]
                if held == tkey:
                    tab_n[slot] += 1
                    tab_s[slot] += v64
                    break
                if held == EMPTY_KEY:
                    tab_keys[slot] = tkey
                    tab_n[slot] = 1
                    tab_s[slot] = v64
                    tab_used += 1
                    break
                slot = (slot + 1) & mask
    return tab_used


@njit(cache=True, nogil=True)
def rehash(keys: np.ndarray, ns: np.ndarray, ss: np.ndarray, capacity: int):  # noqa: ANN201
    """Move a count table into a new one of ``capacity`` slots (a power of two)."""
    new_keys = np.full(capacity, EMPTY_KEY, np.int64)
    new_ns = np.zeros(capacity, np.int64)
    new_ss = np.zeros(capacity, np.float64)
    mask = capacity - 1
    for i in range(keys.shape[0]):
        key = keys[i]
        if key == EMPTY_KEY:
            continue
        slot = np.int64(mix64(np.uint64(key)) & np.uint64(mask))
        while new_keys[slot] != EMPTY_KEY:
            slot = (slot + 1) & mask
        new_keys[slot] = key
        new_ns[slot] = ns[i]
        new_ss[slot] = ss[i]
    return new_keys, new_ns, new_ss


@njit(cache=True, nogil=True)
def table_get(keys: np.ndarray, ns: np.ndarray, ss: np.ndarray, query: np.ndarray):  # noqa: ANN201
    """Counts and sums of the given keys (0 where absent)."""
    mask = keys.shape[0] - 1
    out_n = np.zeros(query.shape[0], np.int64)
    out_s = np.zeros(query.shape[0], np.float64)
    for i in range(query.shape[0]):
        key = query[i]
        slot = np.int64(mix64(np.uint64(key)) & np.uint64(mask))
        while True:
            held = keys[slot]
            if held == key:
                out_n[i] = ns[slot]
                out_s[i] = ss[slot]
                break
            if held == EMPTY_KEY:
                break
            slot = (slot + 1) & mask
    return out_n, out_s


# ---------------------------------------------------------------- top tokens


@njit(cache=True, inline="always")
def _tok_worse(a1: float, a2: float, a3: int, b1: float, b2: float, b3: int) -> bool:
    # ranking: first key descending, second descending, token id ascending
    if a1 != b1:
        return a1 < b1
    if a2 != b2:
        return a2 < b2
    return a3 > b3


@njit(cache=True)
def _tok_offer(k1: np.ndarray, k2: np.ndarray, tok: np.ndarray, n: int, m: int, a1: float, a2: float, a3: int) -> int:
    """Offer one entry to a bounded heap (root = worst); returns the new size."""
    if n < m:
        i = n
        k1[i], k2[i], tok[i] = a1, a2, a3
        while i > 0:
            parent = (i - 1) // 2
            if not _tok_worse(k1[i], k2[i], tok[i], k1[parent], k2[parent], tok[parent]):
                break
            k1[i], k1[parent] = k1[parent], k1[i]
            k2[i], k2[parent] = k2[parent], k2[i]
            tok[i], tok[parent] = tok[parent], tok[i]
            i = parent
        return n + 1
    if not _tok_worse(k1[0], k2[0], tok[0], a1, a2, a3):
        return n
    k1[0], k2[0], tok[0] = a1, a2, a3
    i = 0
    while True:
        left = 2 * i + 1
        worst = i
        if left < m and _tok_worse(k1[left], k2[left], tok[left], k1[worst], k2[worst], tok[worst]):
            worst = left
        if left + 1 < m and _tok_worse(k1[left + 1], k2[left + 1], tok[left + 1], k1[worst], k2[worst], tok[worst]):
            worst = left + 1
        if worst == i:
            return n
        k1[i], k1[worst] = k1[worst], k1[i]
        k2[i], k2[worst] = k2[worst], k2[i]
        tok[i], tok[worst] = tok[worst], tok[i]
        i = worst


@njit(cache=True, nogil=True)
def top_tokens(keys: np.ndarray, ns: np.ndarray, ss: np.ndarray, n_features: int, n_vocab: int, m: int, min_count: int):  # noqa: ANN201
    """Per feature, the ``m`` top tokens by count and by mean activation (unsorted heaps).

    Returns:
        (count_key1 [F, m] counts, count_key2 sums, count_tok ids, count_size [F],
         mean_key1 means, mean_key2 counts, mean_tok ids, mean_size [F]).
    """
    c1 = np.zeros((n_features, m), np.float64)
    c2 = np.zeros((n_features, m), np.float64)
    ct = np.full((n_features, m), -1, np.int64)
    cn = np.zeros(n_features, np.int64)
    m1 = np.zeros((n_features, m), np.float64)
    m2 = np.zeros((n_features, m), np.float64)
    mt = np.full((n_features, m), -1, np.int64)
    mn = np.zeros(n_features, np.int64)
    for i in range(keys.shape[0]):
        key = keys[i]
        if key == EMPTY_KEY:
            continue
        f = key // n_vocab
        t = key % n_vocab
        n = ns[i]
        s = ss[i]
        cn[f] = _tok_offer(c1[f], c2[f], ct[f], cn[f], m, np.float64(n), s, t)
        if n >= min_count:
            mn[f] = _tok_offer(m1[f], m2[f], mt[f], mn[f], m, s / n, np.float64(n), t)
    return c1, c2, ct, cn, m1, m2, mt, mn


# ---------------------------------------------------------------- after the pass


@njit(cache=True, nogil=True)
def lookup(indptr: np.ndarray, indices: np.ndarray, values: np.ndarray, rows: np.ndarray, feats: np.ndarray):  # noqa: ANN201
    """``codes[rows[i], feats[i]]`` by binary search in each row's sorted feature ids."""
    out = np.zeros(rows.shape[0], np.float32)
    for i in range(rows.shape[0]):
        lo = indptr[rows[i]]
        hi = indptr[rows[i] + 1]
        f = feats[i]
        while lo < hi:
            mid = (lo + hi) >> 1
            if indices[mid] < f:
                lo = mid + 1
            else:
                hi = mid
        if lo < indptr[rows[i] + 1] and indices[lo] == f:
            out[i] = values[lo]
    return out


@njit(cache=True, nogil=True)
def finish_samples(
    smp_key: np.ndarray,
    smp_val: np.ndarray,
    smp_unit: np.ndarray,
    smp_n: np.ndarray,
    probs: np.ndarray,
    n_quantiles: int,
    n_per_quantile: int,
):  # noqa: ANN201
    """Quantiles of every feature's sample, and its quantile examples.

    Quantiles use numpy's default ('linear') rule on the sorted sample. Quantile group ``q``
    holds sampled activations ``v`` with ``edge_q <= v < edge_{q+1}`` (the last group also takes
    the maximum), where ``edge_q`` is the ``q / n_quantiles`` quantile; within a group the
    examples with the smallest hash keys (a uniform random pick) are taken.

    Returns:
        (quantiles [F, len(probs)] NaN for dead features, ex_feat, ex_group, ex_unit, ex_val).
    """
    n_features = smp_key.shape[0]
    quant = np.full((n_features, probs.shape[0]), np.nan, np.float64)
    cap = n_features * n_quantiles * n_per_quantile
    ex_feat = np.empty(cap, np.int64)
    ex_group = np.empty(cap, np.int64)
    ex_unit = np.empty(cap, np.int64)
    ex_val = np.empty(cap, np.float32)
    n_ex = 0
    edges = np.empty(n_quantiles + 1, np.float64)
    taken = np.zeros(n_quantiles, np.int64)
    for f in range(n_features):
        n = smp_n[f]
        if n == 0:
            continue
        vals = np.sort(smp_val[f, :n].astype(np.float64))
        for j in range(probs.shape[0]):
            quant[f, j] = _linear_quantile(vals, probs[j])
        for q in range(n_quantiles + 1):
            edges[q] = _linear_quantile(vals, q / n_quantiles)
        taken[:] = 0
        by_key = np.argsort(smp_key[f, :n])
        for i in by_key:
            v = np.float64(smp_val[f, i])
            group = 0
            while group < n_quantiles - 1 and v >= edges[group + 1]:
                group += 1
            if taken[group] < n_per_quantile:
                taken[group] += 1
                ex_feat[n_ex] = f
                ex_group[n_ex] = group
                ex_unit[n_ex] = smp_unit[f, i]
                ex_val[n_ex] = smp_val[f, i]
                n_ex += 1
    return quant, ex_feat[:n_ex], ex_group[:n_ex], ex_unit[:n_ex], ex_val[:n_ex]


@njit(cache=True, inline="always")
def _linear_quantile(sorted_vals: np.ndarray, p: float) -> float:
    h = p * (sorted_vals.shape[0] - 1)
    lo = int(math.floor(h))
    hi = min(lo + 1, sorted_vals.shape[0] - 1)
    return sorted_vals[lo] + (h - lo) * (sorted_vals[hi] - sorted_vals[lo])
