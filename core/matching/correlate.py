"""Exact all-pairs Pearson correlation between two SAEs' features, from sparse codes.

For a feature ``a`` of SAE A and ``b`` of SAE B over the same ``N`` units::

    r_ab = (S_ab - N * mean_a * mean_b) / sqrt(M2_a * M2_b)

``S_ab = sum_u x_a(u) x_b(u)`` is non-zero only for pairs that co-fire somewhere, so it is
accumulated sparsely; the dense part, ``-N mean_a mean_b``, is a rank-1 update applied to a
whole block of pairs at once, so pairs that never co-fire get their exact (negative)
correlation as well. ``M2`` is the centred sum of squares, merged across unit chunks with
Chan's formula, which stays accurate for always-on features whose mean dwarfs their spread.
Nothing is approximated: the top-k lists are those of the full Fa x Fb matrix.

The work has the shape ARCHITECTURE.md asks for, so an engine can schedule it later:
:func:`compute_moments` per unit chunk and :meth:`FeatureMoments.merge` (associative,
float64); :func:`compute_coact_block` for a block of A rows streams every unit chunk into a
dense accumulator for those rows only; :func:`compute_correlation` is the in-process loop.
Memory is bounded by ``memory_mb``: the accumulator holds ``block x Fb`` pairs (12 bytes each),
never the whole Fa x Fb matrix unless it fits.

Backends: on CPU the co-activation sums come from a compiled numba loop (Gustavson's row
by row product with a dense row accumulator, parallel over A features); on CUDA from torch
(every co-firing pair expanded and scattered with ``index_add_``). Both feed the same
torch code for the correlation, the masks and the top-k, so the two agree to float64
rounding.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numba as nb
import numpy as np
import torch

from core.bundle.codes import SparseCodes
from core.errors import MatchingError
from core.progress import ProgressFn, no_progress

BACKENDS = ("auto", "numba", "torch")
# bytes per pair held in a block: float64 product sums + int32 co-firing counts
_BYTES_PER_PAIR = 12
# a feature whose spread is below this fraction of its mean is constant to float32 precision
_CONSTANT_RTOL = 1e-6


# --------------------------------------------------------------------------- moments


@dataclass(frozen=True, eq=False)
class FeatureMoments:
    """Per-feature sufficient statistics of one SAE over a set of units.

    Attributes:
        n_units: number of units (rows) summarised.
        mean: float64 [F], mean activation over all units (zeros included).
        m2: float64 [F], centred sum of squares ``sum_u (x(u) - mean)^2``.
        n_fire: int64 [F], number of units where the feature is non-zero.
    """

    n_units: int
    mean: np.ndarray
    m2: np.ndarray
    n_fire: np.ndarray

    @property
    def n_features(self) -> int:
        """Number of features summarised."""
        return int(self.mean.shape[0])

    @property
    def sum(self) -> np.ndarray:
        """float64 [F]: total activation."""
        return self.mean * self.n_units

    @property
    def std(self) -> np.ndarray:
        """float64 [F]: population standard deviation."""
        return np.sqrt(self.m2 / max(self.n_units, 1))

    @property
    def freq(self) -> np.ndarray:
        """float64 [F]: share of units where the feature fires."""
        return self.n_fire / max(self.n_units, 1)

    @property
    def is_dead(self) -> np.ndarray:
        """bool [F]: zero variance (never fires, or constant): no correlation is defined."""
        return (self.n_fire == 0) | (self.std <= _CONSTANT_RTOL * np.abs(self.mean))

    def merge(self, other: FeatureMoments) -> FeatureMoments:
        """Combine the statistics of two disjoint unit sets (Chan et al.; associative).

        Args:
            other: moments of the same features over other units.

        Returns:
            The moments over both unit sets.
        """
        if other.n_features != self.n_features:
            raise ValueError("cannot merge moments of different feature counts")
        n1, n2 = self.n_units, other.n_units
        n = n1 + n2
        if n1 == 0 or n2 == 0:
            return other if n1 == 0 else self
        delta = other.mean - self.mean
        mean = self.mean + delta * (n2 / n)
        m2 = self.m2 + other.m2 + delta * delta * (n1 * n2 / n)
        return FeatureMoments(n, mean, m2, self.n_fire + other.n_fire)


def compute_moments(codes: SparseCodes) -> FeatureMoments:
    """Per-feature mean, centred sum of squares and firing count of one block of codes.

    Args:
        codes: CSR codes (one chunk, or a whole corpus).

    Returns:
        The :class:`FeatureMoments` of those units.
    """
    n, f = codes.n_rows, codes.n_features
    idx = codes.indices
    vals = codes.values.astype(np.float64)
    n_fire = np.bincount(idx, minlength=f).astype(np.int64)
    mean = np.bincount(idx, weights=vals, minlength=f) / max(n, 1)
    dev = vals - mean[idx]
    # the units where a feature is zero each add mean^2
    m2 = np.bincount(idx, weights=dev * dev, minlength=f) + (n - n_fire) * mean * mean
    return FeatureMoments(n, mean, m2, n_fire)


def compute_moments_chunked(codes: SparseCodes, chunk_units: int) -> FeatureMoments:
    """Moments of all units, computed chunk by chunk and merged (the engine's reference loop).

    Args:
        codes: CSR codes.
        chunk_units: units per chunk.

    Returns:
        The merged :class:`FeatureMoments`.
    """
    total: FeatureMoments | None = None
    for lo, hi in unit_chunks(codes.n_rows, chunk_units):
        part = compute_moments(codes.row_slice(lo, hi))
        total = part if total is None else total.merge(part)
    assert total is not None
    return total


def unit_chunks(n_units: int, chunk_units: int) -> Iterator[tuple[int, int]]:
    """Yield ``(lo, hi)`` unit ranges of at most ``chunk_units`` rows covering ``n_units``."""
    step = max(1, int(chunk_units))
    for lo in range(0, max(n_units, 1), step):
        yield lo, min(lo + step, n_units)


# --------------------------------------------------------------------------- top-k containers


@dataclass(frozen=True, eq=False)
class TopK:
    """The best partners of every feature of one side, best first.

    Attributes:
        index: int64 [n, k], partner feature ids; -1 where there is no live partner.
        score: float64 [n, k], correlation (or cosine); nan where ``index`` is -1.
        count: int64 [n, k], co-firing counts (zeros for weight-space scores).
    """

    index: np.ndarray
    score: np.ndarray
    count: np.ndarray

    @property
    def k(self) -> int:
        """Partners kept per feature."""
        return int(self.index.shape[1])


@dataclass(frozen=True, eq=False)
class CorrelationResult:
    """Exact correlation top-k of two SAEs in both directions.

    Attributes:
        moments_a: statistics of SAE A's features.
        moments_b: statistics of SAE B's features.
        ab: for every A feature, its top-k B partners.
        ba: for every B feature, its top-k A partners.
        dense: float32 [Fa, Fb] correlation matrix (nan for dead features) when it was asked
            for and fitted in the memory setting, else None.
        backend: "numba" or "torch", what accumulated the co-activation sums.
        n_blocks: number of A-feature blocks streamed.
    """

    moments_a: FeatureMoments
    moments_b: FeatureMoments
    ab: TopK
    ba: TopK
    dense: np.ndarray | None
    backend: str
    n_blocks: int


# --------------------------------------------------------------------------- numba kernels


@nb.njit(cache=True)
def _block_csc(indptr, indices, values, lo, hi):  # pragma: no cover - compiled
    """Column-major copy of the entries of features [lo, hi), units ascending within a column."""
    width = hi - lo
    colptr = np.zeros(width + 1, np.int64)
    for p in range(indices.shape[0]):
        f = indices[p]
        if f >= lo and f < hi:
            colptr[f - lo + 1] += 1
    for j in range(width):
        colptr[j + 1] += colptr[j]
    fill = colptr[:-1].copy()
    units = np.empty(colptr[width], np.int64)
    vals = np.empty(colptr[width], np.float32)
    for u in range(indptr.shape[0] - 1):
        for p in range(indptr[u], indptr[u + 1]):
            f = indices[p]
            if f >= lo and f < hi:
                q = fill[f - lo]
                units[q] = u
                vals[q] = values[p]
                fill[f - lo] = q + 1
    return colptr, units, vals


@nb.njit(parallel=True, cache=True)
def _coact_numba(
    colptr, units, vals, b_indptr, b_indices, b_values, order, n_workers, sums, counts
):  # pragma: no cover
    # Gustavson, one A feature at a time: every unit it fires on scatters that unit's B entries
    # into a worker-local dense row (L2-resident), which is then added to the block row in one
    # sequential sweep. Scattering straight into the block row was slower (cold lines for the
    # many rare features); scipy's A^T B (single-threaded, sparse output) slower still.
    n_b = sums.shape[1]
    for w in nb.prange(n_workers):
        acc = np.zeros(n_b, np.float64)
        cnt = np.zeros(n_b, np.int32)
        for i in range(w, order.shape[0], n_workers):
            j = order[i]
            if colptr[j] == colptr[j + 1]:
                continue
            for p in range(colptr[j], colptr[j + 1]):
                u = units[p]
                va = np.float64(vals[p])
                for q in range(b_indptr[u], b_indptr[u + 1]):
                    b = b_indices[q]
                    acc[b] += va * b_values[q]
                    cnt[b] += 1
            for b in range(n_b):
                sums[j, b] += acc[b]
                counts[j, b] += cnt[b]
                acc[b] = 0.0
                cnt[b] = 0


@nb.njit(parallel=True, cache=True)
def _pair_products(a_colptr, a_rows, a_vals, b_colptr, b_rows, b_vals, pa, pb, out_s, out_k):  # pragma: no cover
    # merge-intersection of two sorted unit lists per pair
    for i in nb.prange(pa.shape[0]):
        p, pe = a_colptr[pa[i]], a_colptr[pa[i] + 1]
        q, qe = b_colptr[pb[i]], b_colptr[pb[i] + 1]
        s = 0.0
        k = 0
        while p < pe and q < qe:
            ra = a_rows[p]
            rb = b_rows[q]
            if ra == rb:
                s += np.float64(a_vals[p]) * np.float64(b_vals[q])
                k += 1
                p += 1
                q += 1
            elif ra < rb:
                p += 1
            else:
                q += 1
        out_s[i] = s
        out_k[i] = k


@nb.njit(parallel=True, cache=True)
def _finalize_numba(
    sums, counts, lo, n_units, mean_a, mean_b, inv_a, inv_b, live_a, live_b, row_v, row_i, row_c
):  # pragma: no cover
    # turns the block's sums into correlations in place and keeps each row's top-k; one pass,
    # rows in parallel (torch's top-k on CPU was 2-5x slower here and needs the r block copied)
    height, n_b = sums.shape
    k = row_v.shape[1]
    for j in nb.prange(height):
        a = lo + j
        for t in range(k):
            row_v[a, t] = -np.inf
            row_i[a, t] = -1
            row_c[a, t] = 0
        if not live_a[a]:
            for b in range(n_b):
                sums[j, b] = -np.inf
            continue
        na = n_units * mean_a[a]
        for b in range(n_b):
            if not live_b[b]:
                sums[j, b] = -np.inf
                continue
            v = (sums[j, b] - na * mean_b[b]) * inv_a[a] * inv_b[b]
            v = min(1.0, max(-1.0, v))
            sums[j, b] = v
            if v > row_v[a, k - 1]:
                pos = k - 1
                while pos > 0 and row_v[a, pos - 1] < v:
                    row_v[a, pos] = row_v[a, pos - 1]
                    row_i[a, pos] = row_i[a, pos - 1]
                    row_c[a, pos] = row_c[a, pos - 1]
                    pos -= 1
                row_v[a, pos] = v
                row_i[a, pos] = b
                row_c[a, pos] = counts[j, b]


@nb.njit(parallel=True, cache=True)
def _column_topk_numba(r, counts, lo, tile, col_v, col_i, col_c):  # pragma: no cover
    # merges a finalised block into the running per-B-feature top-k; tiles of columns run in
    # parallel and walk the block row by row, so reads stay contiguous
    height, n_b = r.shape
    k = col_v.shape[1]
    n_tiles = (n_b + tile - 1) // tile
    for t in nb.prange(n_tiles):
        c0 = t * tile
        c1 = min(n_b, c0 + tile)
        for j in range(height):
            for b in range(c0, c1):
                v = r[j, b]
                if v > col_v[b, k - 1]:
                    pos = k - 1
                    while pos > 0 and col_v[b, pos - 1] < v:
                        col_v[b, pos] = col_v[b, pos - 1]
                        col_i[b, pos] = col_i[b, pos - 1]
                        col_c[b, pos] = col_c[b, pos - 1]
                        pos -= 1
                    col_v[b, pos] = v
                    col_i[b, pos] = lo + j
                    col_c[b, pos] = counts[j, b]


# --------------------------------------------------------------------------- co-activation block


def block_rows(n_features_b: int, memory_mb: float, n_features_a: int) -> int:
    """How many A features one block may hold so that its accumulator fits the memory setting.

    Args:
        n_features_b: width of a block row (Fb).
        memory_mb: the memory setting, in MiB.
        n_features_a: Fa, the most a block can hold.

    Returns:
        The block height (at least 1).
    """
    # three quarters for the accumulator, the rest for the torch backend's pair expansion
    budget = 0.75 * memory_mb * 2**20
    return int(max(1, min(n_features_a, budget // (_BYTES_PER_PAIR * max(n_features_b, 1)))))


def compute_coact_block(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    lo: int,
    hi: int,
    chunk_units: int,
    device: torch.device,
    backend: str,
    memory_mb: float,
    out: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Co-activation sums and counts of A features [lo, hi) against every B feature.

    Streams every unit chunk; only the block's rows of the Fa x Fb matrix are ever held.

    Args:
        codes_a: codes of SAE A.
        codes_b: codes of SAE B on the same units.
        lo: first A feature of the block.
        hi: one past the last A feature of the block.
        chunk_units: units per streamed chunk.
        device: where the accumulator lives.
        backend: "numba" (CPU) or "torch" (any device).
        memory_mb: the memory setting, bounding the torch backend's temporaries.
        out: buffers of at least ``hi - lo`` rows to reuse (float64 and int32, on ``device``);
            reusing them saves the page faults of a fresh gigabyte per block.

    Returns:
        ``(sums, counts)``: float64 [hi-lo, Fb] of ``sum_u x_a x_b`` and int32 [hi-lo, Fb] of
        co-firing units, on ``device``.
    """
    width, n_b = hi - lo, codes_b.n_features
    if out is None:
        sums = torch.zeros((width, n_b), dtype=torch.float64, device=device)
        counts = torch.zeros((width, n_b), dtype=torch.int32, device=device)
    else:
        sums, counts = out[0][:width], out[1][:width]
        sums.zero_()
        counts.zero_()
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError("the numba backend runs on the CPU only")
        sums_np, counts_np = sums.numpy(), counts.numpy()
        # a random order spreads the power-law feature costs evenly over numba's static split
        order = np.random.default_rng(lo).permutation(width).astype(np.int64)
        # every chunk re-adds each touched block row, so fewer, larger chunks are faster here
        n_workers = 4 * nb.get_num_threads()
        for c_lo, c_hi in unit_chunks(codes_a.n_rows, chunk_units):
            ca, cb = codes_a.row_slice(c_lo, c_hi), codes_b.row_slice(c_lo, c_hi)
            colptr, units, vals = _block_csc(ca.indptr, ca.indices, ca.values, lo, hi)
            _coact_numba(colptr, units, vals, cb.indptr, cb.indices, cb.values, order, n_workers, sums_np, counts_np)
        return sums, counts
    if backend != "torch":
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    # each expanded pair costs about 64 bytes of temporaries; keep them in a quarter of the budget
    max_pairs = max(1 << 8, int(0.25 * memory_mb * 2**20) // 64)
    for c_lo, c_hi in unit_chunks(codes_a.n_rows, chunk_units):
        _coact_torch(codes_a.row_slice(c_lo, c_hi), codes_b.row_slice(c_lo, c_hi), lo, hi, sums, counts, max_pairs)
    return sums, counts


def _coact_torch(
    ca: SparseCodes, cb: SparseCodes, lo: int, hi: int, sums: torch.Tensor, counts: torch.Tensor, max_pairs: int
) -> None:
    device = sums.device
    n_b = cb.n_features
    a_idx = torch.from_numpy(ca.indices).to(device)
    keep = (a_idx >= lo) & (a_idx < hi)
    a_unit = torch.from_numpy(ca.row_ids()).to(device)[keep]
    a_row = (a_idx[keep] - lo).long()
    a_val = torch.from_numpy(ca.values).to(device)[keep].double()
    b_ptr = torch.from_numpy(cb.indptr).to(device)
    b_ind = torch.from_numpy(cb.indices).to(device).long()
    b_val = torch.from_numpy(cb.values).to(device).double()
    if a_unit.numel() == 0:
        return
    per_entry = (b_ptr[1:] - b_ptr[:-1])[a_unit]
    ends = torch.cumsum(per_entry, 0).cpu().numpy()
    flat_sums, flat_counts = sums.view(-1), counts.view(-1)
    start, n_entries = 0, ends.shape[0]
    while start < n_entries:
        # the next group of A entries whose expanded pairs stay under max_pairs (at least one entry)
        base = int(ends[start - 1]) if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + max_pairs, side="right")))
        reps = per_entry[start:stop]
        total = int(ends[stop - 1]) - base
        if total:
            entry = torch.repeat_interleave(torch.arange(start, stop, device=device), reps)
            first = torch.cumsum(reps, 0) - reps
            offset = torch.arange(total, device=device) - torch.repeat_interleave(first, reps)
            q = b_ptr[a_unit[entry]] + offset
            flat = a_row[entry] * n_b + b_ind[q]
            flat_sums.index_add_(0, flat, a_val[entry] * b_val[q])
            flat_counts.index_add_(0, flat, torch.ones_like(flat, dtype=torch.int32))
        start = stop


# --------------------------------------------------------------------------- main loop


def check_codes(codes_a: SparseCodes, codes_b: SparseCodes) -> None:
    """Raise :class:`MatchingError` if two SAEs' codes cannot be matched.

    Args:
        codes_a: codes of SAE A.
        codes_b: codes of SAE B.
    """
    for side, codes in (("A", codes_a), ("B", codes_b)):
        if codes.n_features < 0:
            raise MatchingError(
                f"SAE {side}'s codes claim {codes.n_features} features (negative); rebuild them from the SAE."
            )
        if codes.n_features == 0 or codes.n_rows == 0:
            raise MatchingError(
                f"SAE {side}'s codes are empty ({codes.n_rows} units x {codes.n_features} features); "
                "harvest a non-empty corpus first."
            )
        if not np.all(np.isfinite(codes.values)):
            raise MatchingError(
                f"SAE {side}'s codes contain NaN or inf activations; re-harvest them (check the SAE's dtype)."
            )
        if codes.nnz and (codes.indices.min() < 0 or codes.indices.max() >= codes.n_features):
            raise MatchingError(
                f"SAE {side}'s codes name features outside [0, {codes.n_features}); rebuild them from the SAE."
            )
    if codes_a.n_rows != codes_b.n_rows:
        raise MatchingError(
            f"The codes are not aligned: SAE A has {codes_a.n_rows} units and SAE B {codes_b.n_rows}; "
            "harvest both on the same aligned units."
        )


def check_top_k(top_k: int, n_features_a: int, n_features_b: int) -> None:
    """Raise :class:`MatchingError` if ``top_k`` is not a usable partner count for both sides."""
    if top_k < 1 or top_k > min(n_features_a, n_features_b):
        raise MatchingError(
            f"top_k={top_k} must lie between 1 and the smaller side's feature count "
            f"({min(n_features_a, n_features_b)}); lower top_k."
        )


def _live_or_fail(moments: FeatureMoments, side: str) -> np.ndarray:
    live = ~moments.is_dead
    if not live.any():
        raise MatchingError(
            f"Every feature of SAE {side} is dead or constant on these units, so no correlation exists; "
            "check the hook and the SAE, or use a larger corpus."
        )
    return live


def resolve_backend(backend: str, device: torch.device) -> str:
    """Pick the co-activation backend: numba on CPU, torch elsewhere, unless one is named."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    return backend


def compute_correlation(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    top_k: int = 10,
    memory_mb: float = 1024,
    chunk_units: int = 1 << 20,
    device: torch.device | str = "cpu",
    keep_dense: bool = False,
    backend: str = "auto",
    progress: ProgressFn | None = None,
) -> CorrelationResult:
    """Exact Pearson correlation of every A feature with every B feature; keep the top-k both ways.

    Args:
        codes_a: codes of SAE A.
        codes_b: codes of SAE B on the same units.
        top_k: partners kept per feature, in each direction.
        memory_mb: bound on the dense block accumulator (and the kept dense matrix), MiB.
        chunk_units: units per streamed chunk.
        device: torch device for the accumulator and the top-k.
        keep_dense: also return the whole float32 r matrix, if it fits in ``memory_mb``.
        backend: "auto" (numba on CPU, torch on CUDA), "numba" or "torch".
        progress: called as ``progress("correlate", blocks_done, n_blocks)``.

    Returns:
        A :class:`CorrelationResult`; dead (zero-variance) features get no partners and are
        never anyone's partner.
    """
    progress = progress or no_progress
    device = torch.device(device)
    backend = resolve_backend(backend, device)
    check_codes(codes_a, codes_b)
    n_a, n_b = codes_a.n_features, codes_b.n_features
    check_top_k(top_k, n_a, n_b)
    # moments gather float64 copies of a chunk's values: smaller chunks keep that transient small
    mom_a = compute_moments_chunked(codes_a, min(chunk_units, 1 << 16))
    mom_b = compute_moments_chunked(codes_b, min(chunk_units, 1 << 16))
    live_a = _live_or_fail(mom_a, "A")
    live_b = _live_or_fail(mom_b, "B")
    n = codes_a.n_rows

    def on_device(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    mean_a, mean_b = on_device(mom_a.mean), on_device(mom_b.mean)
    inv_a = on_device(np.where(live_a, 1.0 / np.sqrt(np.where(live_a, mom_a.m2, 1.0)), 0.0))
    inv_b = on_device(np.where(live_b, 1.0 / np.sqrt(np.where(live_b, mom_b.m2, 1.0)), 0.0))
    dead_a, dead_b = on_device(~live_a), on_device(~live_b)

    keep_dense = keep_dense and n_a * n_b * 4 <= memory_mb * 2**20
    dense = np.full((n_a, n_b), np.nan, np.float32) if keep_dense else None
    height = block_rows(n_b, memory_mb, n_a)
    blocks = [(lo, min(lo + height, n_a)) for lo in range(0, n_a, height)]
    k_row = top_k  # same k both ways
    row_v = np.full((n_a, k_row), -np.inf)
    row_i = np.zeros((n_a, k_row), np.int64)
    row_c = np.zeros((n_a, k_row), np.int64)
    col_v = torch.full((n_b, top_k), -math.inf, dtype=torch.float64, device=device)
    col_i = torch.zeros((n_b, top_k), dtype=torch.int64, device=device)
    col_c = torch.zeros((n_b, top_k), dtype=torch.int64, device=device)
    buffers = (
        torch.empty((height, n_b), dtype=torch.float64, device=device),
        torch.empty((height, n_b), dtype=torch.int32, device=device),
    )
    inputs = (mom_a.mean, mom_b.mean, inv_a.cpu().numpy(), inv_b.cpu().numpy(), live_a, live_b)
    col_np = (col_v.numpy(), col_i.numpy(), col_c.numpy()) if backend == "numba" else None
    progress("correlate", 0, len(blocks))
    for done, (lo, hi) in enumerate(blocks, start=1):
        sums, counts = compute_coact_block(
            codes_a, codes_b, lo, hi, chunk_units, device, backend, memory_mb, out=buffers
        )
        if col_np is not None:
            r_np, c_np = sums.numpy(), counts.numpy()
            _finalize_numba(r_np, c_np, lo, float(n), *inputs, row_v, row_i, row_c)
            _column_topk_numba(r_np, c_np, lo, 256, *col_np)
        else:
            r = sums  # finalised in place: the block is the largest thing held
            r.addr_(mean_a[lo:hi], mean_b, alpha=-float(n))
            r.mul_(inv_a[lo:hi, None]).mul_(inv_b[None, :]).clamp_(-1.0, 1.0)
            r.masked_fill_(dead_b[None, :], -math.inf).masked_fill_(dead_a[lo:hi, None], -math.inf)
            v, i = torch.topk(r, top_k, dim=1)
            row_v[lo:hi] = v.cpu().numpy()
            row_i[lo:hi] = i.cpu().numpy()
            row_c[lo:hi] = counts.gather(1, i).long().cpu().numpy()
            v, i = torch.topk(r, min(top_k, hi - lo), dim=0)
            c = counts.gather(0, i).long()
            keep_v, pick = torch.topk(torch.cat([col_v, v.T], dim=1), top_k, dim=1)
            col_i = torch.cat([col_i, i.T + lo], dim=1).gather(1, pick)
            col_c = torch.cat([col_c, c.T], dim=1).gather(1, pick)
            col_v = keep_v
        if dense is not None:
            dense[lo:hi] = sums.float().cpu().numpy()
        del sums, counts
        progress("correlate", done, len(blocks))
    if dense is not None:
        dense[~np.isfinite(dense)] = np.nan
    ba = _to_topk(col_v.cpu().numpy(), col_i.cpu().numpy(), col_c.cpu().numpy())
    return CorrelationResult(mom_a, mom_b, _to_topk(row_v, row_i, row_c), ba, dense, backend, len(blocks))


def _to_topk(score: np.ndarray, index: np.ndarray, count: np.ndarray) -> TopK:
    absent = ~np.isfinite(score)
    score = np.where(absent, np.nan, score).astype(np.float64)
    index = np.where(absent, -1, index).astype(np.int64)
    count = np.where(absent, 0, count).astype(np.int64)
    return TopK(np.ascontiguousarray(index), np.ascontiguousarray(score), np.ascontiguousarray(count))


# --------------------------------------------------------------------------- arbitrary pairs


def compute_pair_stats(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    moments_a: FeatureMoments,
    moments_b: FeatureMoments,
    pair_a: np.ndarray,
    pair_b: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Exact correlation and co-firing count of listed pairs (for pairs outside the top-k).

    Each pair costs the length of its two unit lists, so this is for thousands of pairs,
    not for all of them.

    Args:
        codes_a: codes of SAE A.
        codes_b: codes of SAE B.
        moments_a: :func:`compute_moments` of ``codes_a``.
        moments_b: :func:`compute_moments` of ``codes_b``.
        pair_a: int [P] A feature ids.
        pair_b: int [P] B feature ids.

    Returns:
        ``(corr, count)``: float64 [P] (nan where either feature is dead) and int64 [P].
    """
    pair_a = np.ascontiguousarray(pair_a, dtype=np.int64)
    pair_b = np.ascontiguousarray(pair_b, dtype=np.int64)
    sums = np.zeros(pair_a.shape[0], np.float64)
    counts = np.zeros(pair_a.shape[0], np.int64)
    if pair_a.size:
        csc_a = codes_a.to_scipy().tocsc()
        csc_b = codes_b.to_scipy().tocsc()
        csc_a.sort_indices()
        csc_b.sort_indices()
        _pair_products(
            csc_a.indptr.astype(np.int64),
            csc_a.indices,
            csc_a.data,
            csc_b.indptr.astype(np.int64),
            csc_b.indices,
            csc_b.data,
            pair_a,
            pair_b,
            sums,
            counts,
        )
    n = moments_a.n_units
    num = sums - n * moments_a.mean[pair_a] * moments_b.mean[pair_b]
    den = np.sqrt(moments_a.m2[pair_a] * moments_b.m2[pair_b])
    dead = moments_a.is_dead[pair_a] | moments_b.is_dead[pair_b]
    with np.errstate(divide="ignore", invalid="ignore"):
        corr = np.where(dead, np.nan, np.clip(num / np.where(dead, 1.0, den), -1.0, 1.0))
    return corr, counts


def jaccard(count: np.ndarray, n_fire_a: np.ndarray, n_fire_b: np.ndarray) -> np.ndarray:
    """Jaccard index of the binarised codes: co-firing units over units where either fires.

    Args:
        count: co-firing counts.
        n_fire_a: firing counts of the A features of each pair.
        n_fire_b: firing counts of the B features of each pair.

    Returns:
        float64 array, 0 where neither fires.
    """
    union = n_fire_a + n_fire_b - count
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(union > 0, count / np.maximum(union, 1), 0.0)
