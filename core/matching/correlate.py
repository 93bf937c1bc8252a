"""Exact Pearson correlation of every A feature with every B feature, streamed from sparse codes."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numba as nb
import numpy as np
import torch

from core.bundle.codes import SparseCodes
from core.errors import MatchingError
from core.matching.kernels import block_csc, coact_numba, finalize_topk_numba, pair_products
from core.matching.moments import FeatureMoments, compute_moments_chunked, unit_chunks
from core.progress import ProgressFn, no_progress

BACKENDS = ("auto", "numba", "torch")


# bytes per pair held in a block: float64 product sums + int32 co-firing counts
_BYTES_PER_PAIR = 12


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
        timings: seconds spent in each phase ("moments", "coact", "finalize"), wall clock.
    """

    moments_a: FeatureMoments
    moments_b: FeatureMoments
    ab: TopK
    ba: TopK
    dense: np.ndarray | None
    backend: str
    n_blocks: int
    timings: dict[str, float] = field(default_factory=dict)


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
    if backend == "numba":
        if device.type != "cpu":
            raise ValueError("the numba backend runs on the CPU only")
        if out is None:
            sums = torch.empty((width, n_b), dtype=torch.float64)
            counts = torch.empty((width, n_b), dtype=torch.int32)
        else:
            sums, counts = out[0][:width], out[1][:width]
        sums_np, counts_np = sums.numpy(), counts.numpy()
        # feature id order: ids carry no frequency order (power-law costs are spread by the
        # interleaved split below), and walking the block's features in order reads its unit lists
        # and writes its rows in order (a random permutation here cost 25% more CPU)
        order = np.arange(width, dtype=np.int64)
        # many small work items, handed out one at a time: on a busy machine a thread that loses
        # its core no longer holds up the block (a static split of a few items per thread did)
        n_workers = min(width, 32 * nb.get_num_threads())
        previous = nb.get_parallel_chunksize()
        nb.set_parallel_chunksize(1)
        try:
            # every chunk re-adds each touched block row, so fewer, larger chunks are faster here;
            # the first chunk writes the rows, which also spares zeroing the block
            for number, (c_lo, c_hi) in enumerate(unit_chunks(codes_a.n_rows, chunk_units)):
                ca, cb = codes_a.row_slice(c_lo, c_hi), codes_b.row_slice(c_lo, c_hi)
                colptr, units, vals = block_csc(ca.indptr, ca.indices, ca.values, lo, hi)
                coact_numba(
                    colptr,
                    units,
                    vals,
                    cb.indptr,
                    cb.indices,
                    cb.values,
                    order,
                    n_workers,
                    sums_np,
                    counts_np,
                    number == 0,
                )
        finally:
            nb.set_parallel_chunksize(previous)
        return sums, counts
    if out is None:
        sums = torch.zeros((width, n_b), dtype=torch.float64, device=device)
        counts = torch.zeros((width, n_b), dtype=torch.int32, device=device)
    else:
        sums, counts = out[0][:width], out[1][:width]
        sums.zero_()
        counts.zero_()
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
    # one compiled pass per chunk (no float64 copies of the values any more), so whole chunks
    timings = {"moments": 0.0, "coact": 0.0, "finalize": 0.0}
    t0 = time.perf_counter()
    mom_a = compute_moments_chunked(codes_a, chunk_units)
    mom_b = compute_moments_chunked(codes_b, chunk_units)
    timings["moments"] = time.perf_counter() - t0
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
        t0 = time.perf_counter()
        sums, counts = compute_coact_block(
            codes_a, codes_b, lo, hi, chunk_units, device, backend, memory_mb, out=buffers
        )
        timings["coact"] += time.perf_counter() - t0
        t0 = time.perf_counter()
        if col_np is not None:
            r_np, c_np = sums.numpy(), counts.numpy()
            finalize_topk_numba(r_np, c_np, lo, float(n), *inputs, row_v, row_i, row_c, *col_np, nb.get_num_threads())
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
        timings["finalize"] += time.perf_counter() - t0
        del sums, counts
        progress("correlate", done, len(blocks))
    if dense is not None:
        dense[~np.isfinite(dense)] = np.nan
    ba = _to_topk(col_v.cpu().numpy(), col_i.cpu().numpy(), col_c.cpu().numpy())
    timings = {k: round(v, 3) for k, v in timings.items()}
    return CorrelationResult(mom_a, mom_b, _to_topk(row_v, row_i, row_c), ba, dense, backend, len(blocks), timings)


def _to_topk(score: np.ndarray, index: np.ndarray, count: np.ndarray) -> TopK:
    absent = ~np.isfinite(score)
    score = np.where(absent, np.nan, score).astype(np.float64)
    index = np.where(absent, -1, index).astype(np.int64)
    count = np.where(absent, 0, count).astype(np.int64)
    return TopK(np.ascontiguousarray(index), np.ascontiguousarray(score), np.ascontiguousarray(count))


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
        pair_products(
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
