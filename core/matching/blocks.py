"""The correlation reduce cut into independent row blocks, so an engine can run them anywhere.

:func:`coact_block` is one block of A features against every B feature: it streams every unit
of both codes (in memory or on disk, :class:`core.bundle.stream.CodesFile`), keeps a dense
accumulator for its rows only, and returns the exact Pearson top-k of its rows plus, for every
B feature, the best of its rows (the B-side candidates). :func:`merge_blocks` joins blocks in
row order. It is a thin wrapper around the kernels :func:`compute_correlation` runs (the same
``compute_coact_block``, ``finalize_numba`` and ``column_topk_numba`` over the same unit chunks),
so on the numba backend the result equals ``compute_correlation``'s to the bit, whatever the
number of blocks: a row's sums do not depend on which rows share its block, and the merged
column lists keep ``column_topk_numba``'s order (value descending, ties by A feature).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, cast

import numpy as np
import torch

from core.bundle.codes import SparseCodes
from core.bundle.stream import RowSliceable
from core.errors import MatchingError
from core.matching.correlate import CorrelationResult, TopK, block_rows, compute_coact_block, resolve_backend
from core.matching.kernels import column_topk_numba, finalize_numba
from core.matching.moments import FeatureMoments, compute_moments_chunked
from core.progress import ProgressFn, no_progress

# compute_correlation's moments chunk (float64 copies of a chunk's values stay small)
_MOMENT_CHUNK = 1 << 16


class Correlator(Protocol):
    """Runs the correlation reduce of a bundle's codes somewhere (an engine's scheduler).

    Called by the matching stage with the bundle folder (whose codes files the reduce may
    stream), the codes it already read, and ``compute_correlation``'s keyword options
    (``top_k``, ``memory_mb``, ``chunk_units``, ``device``, ``keep_dense``, ``progress``).
    """

    def __call__(
        self,
        bundle_path: Path,
        codes_a: SparseCodes,
        codes_b: SparseCodes,
        *,
        top_k: int,
        memory_mb: float,
        chunk_units: int,
        device: torch.device | str,
        keep_dense: bool,
        progress: ProgressFn | None,
    ) -> CorrelationResult:
        """Return what ``compute_correlation(codes_a, codes_b, **options)`` returns."""
        ...


@dataclass(frozen=True, eq=False)
class BlockTopK:
    """The top-k of one block of A rows, and the block's candidates for every B feature.

    Attributes:
        lo: first A feature of the block.
        hi: one past its last A feature.
        row_v: float64 [hi-lo, k] correlations, best first (-inf where there is no partner).
        row_i: int64 [hi-lo, k] B partners.
        row_c: int64 [hi-lo, k] co-firing counts.
        col_v: float64 [Fb, k] for every B feature, the best correlations among the block's rows.
        col_i: int64 [Fb, k] those A features.
        col_c: int64 [Fb, k] their co-firing counts.
        dense: float32 [hi-lo, Fb] the block's correlations (-inf for dead), when asked for.
        backend: what accumulated the sums.
    """

    lo: int
    hi: int
    row_v: np.ndarray
    row_i: np.ndarray
    row_c: np.ndarray
    col_v: np.ndarray
    col_i: np.ndarray
    col_c: np.ndarray
    dense: np.ndarray | None
    backend: str


def correlation_moments(codes: RowSliceable, chunk_units: int) -> FeatureMoments:
    """The moments :func:`compute_correlation` normalises by, computed the same way (bit-equal).

    Args:
        codes: in-memory codes or a :class:`CodesFile`.
        chunk_units: the correlation's unit chunk.

    Returns:
        The moments of all units.
    """
    return compute_moments_chunked(cast(SparseCodes, codes), min(chunk_units, _MOMENT_CHUNK))


def check_live(moments: FeatureMoments, side: str) -> np.ndarray:
    """The live features of one side; raise :class:`MatchingError` if there are none."""
    live = ~moments.is_dead
    if not live.any():
        raise MatchingError(
            f"Every feature of SAE {side} is dead or constant on these units, so no correlation exists; "
            "check the hook and the SAE, or use a larger corpus."
        )
    return live


def split_rows(n_features_a: int, n_features_b: int, n_blocks: int, memory_mb: float) -> list[tuple[int, int]]:
    """Cut the A features into at least ``n_blocks`` contiguous blocks that fit the memory setting.

    Args:
        n_features_a: Fa.
        n_features_b: Fb (the width of a block row).
        n_blocks: the blocks asked for (more are cut when one would not fit ``memory_mb``).
        memory_mb: the memory a block's accumulator may take, MiB.

    Returns:
        ``(lo, hi)`` per block, covering ``[0, Fa)`` in order.
    """
    height = min(math.ceil(n_features_a / max(1, n_blocks)), block_rows(n_features_b, memory_mb, n_features_a))
    return [(lo, min(lo + height, n_features_a)) for lo in range(0, n_features_a, max(1, height))]


def coact_block(
    codes_a: RowSliceable,
    codes_b: RowSliceable,
    moments_a: FeatureMoments,
    moments_b: FeatureMoments,
    lo: int,
    hi: int,
    top_k: int,
    chunk_units: int = 1 << 20,
    device: torch.device | str = "cpu",
    backend: str = "auto",
    memory_mb: float = 1024,
    keep_dense: bool = False,
) -> BlockTopK:
    """Exact Pearson top-k of A features ``[lo, hi)`` over all units, and the block's B-side candidates.

    Args:
        codes_a: codes of SAE A (in memory or a :class:`CodesFile`).
        codes_b: codes of SAE B on the same units.
        moments_a: :func:`correlation_moments` of ``codes_a``.
        moments_b: :func:`correlation_moments` of ``codes_b``.
        lo: first A feature.
        hi: one past the last A feature.
        top_k: partners kept per feature, both ways.
        chunk_units: units per streamed chunk (the same as the reference's for bit-equal sums).
        device: where the accumulator lives.
        backend: "auto", "numba" (CPU) or "torch".
        memory_mb: bounds the torch backend's temporaries.
        keep_dense: also return the block's correlations.

    Returns:
        The block's :class:`BlockTopK`.
    """
    device = torch.device(device)
    backend = resolve_backend(backend, device)
    n, n_b = codes_a.n_rows, codes_b.n_features
    live_a, live_b = ~moments_a.is_dead, ~moments_b.is_dead
    inv_a = np.where(live_a, 1.0 / np.sqrt(np.where(live_a, moments_a.m2, 1.0)), 0.0)
    inv_b = np.where(live_b, 1.0 / np.sqrt(np.where(live_b, moments_b.m2, 1.0)), 0.0)
    sums, counts = compute_coact_block(
        cast(SparseCodes, codes_a), cast(SparseCodes, codes_b), lo, hi, chunk_units, device, backend, memory_mb
    )
    width = hi - lo
    if backend == "numba":
        r, c = sums.numpy(), counts.numpy()
        row_v = np.full((width, top_k), -np.inf)
        row_i = np.full((width, top_k), -1, np.int64)
        row_c = np.zeros((width, top_k), np.int64)
        # the block's slices with lo=0 index exactly what the reference indexes with lo
        finalize_numba(
            r, c, 0, float(n), moments_a.mean[lo:hi], moments_b.mean, inv_a[lo:hi], inv_b, live_a[lo:hi], live_b,
            row_v, row_i, row_c,
        )  # fmt: skip
        col_v = np.full((n_b, top_k), -np.inf)
        col_i = np.zeros((n_b, top_k), np.int64)
        col_c = np.zeros((n_b, top_k), np.int64)
        column_topk_numba(r, c, lo, 256, col_v, col_i, col_c)
        dense = r.astype(np.float32) if keep_dense else None
        return BlockTopK(lo, hi, row_v, row_i, row_c, col_v, col_i, col_c, dense, backend)

    def on_device(x: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.ascontiguousarray(x)).to(device)

    rt = sums  # finalised in place, as in compute_correlation
    rt.addr_(on_device(moments_a.mean[lo:hi]), on_device(moments_b.mean), alpha=-float(n))
    rt.mul_(on_device(inv_a[lo:hi])[:, None]).mul_(on_device(inv_b)[None, :]).clamp_(-1.0, 1.0)
    rt.masked_fill_(on_device(~live_b)[None, :], -math.inf).masked_fill_(on_device(~live_a[lo:hi])[:, None], -math.inf)
    v, i = torch.topk(rt, top_k, dim=1)
    rows = (v.cpu().numpy(), i.cpu().numpy(), counts.gather(1, i).long().cpu().numpy())
    kk = min(top_k, width)
    v, i = torch.topk(rt, kk, dim=0)
    col = [v.T.cpu().numpy(), (i.T + lo).cpu().numpy(), counts.gather(0, i).T.long().cpu().numpy()]
    if kk < top_k:
        pad = top_k - kk
        col = [np.pad(col[0], ((0, 0), (0, pad)), constant_values=-np.inf)] + [
            np.pad(x, ((0, 0), (0, pad))) for x in col[1:]
        ]
    dense = rt.float().cpu().numpy() if keep_dense else None
    return BlockTopK(lo, hi, rows[0], rows[1], rows[2], col[0], col[1], col[2], dense, backend)


def merge_blocks(
    blocks: Sequence[BlockTopK],
    moments_a: FeatureMoments,
    moments_b: FeatureMoments,
    top_k: int,
) -> CorrelationResult:
    """Join the blocks of a row-block reduce into one correlation result.

    Args:
        blocks: every block, in any order; together they must cover ``[0, Fa)``.
        moments_a: the moments the blocks normalised by (A).
        moments_b: the same for B.
        top_k: partners kept per feature.

    Returns:
        The :class:`CorrelationResult` ``compute_correlation`` returns for the same codes.
    """
    blocks = sorted(blocks, key=lambda b: b.lo)
    edges = [0] + [b.hi for b in blocks]
    if [b.lo for b in blocks] != edges[:-1] or edges[-1] != moments_a.n_features:
        raise ValueError(f"blocks {[(b.lo, b.hi) for b in blocks]} do not cover [0, {moments_a.n_features})")
    ab = _as_topk(*(np.concatenate([getattr(b, f) for b in blocks]) for f in ("row_v", "row_i", "row_c")))
    col_v, col_i, col_c = (np.concatenate([getattr(b, f) for b in blocks], axis=1) for f in ("col_v", "col_i", "col_c"))
    # blocks in row order and a stable sort keep the reference's tie order (lower A feature first)
    pick = np.argsort(-col_v, axis=1, kind="stable")[:, :top_k]
    ba = _as_topk(*(np.take_along_axis(x, pick, axis=1) for x in (col_v, col_i, col_c)))
    dense = None
    if all(b.dense is not None for b in blocks):
        dense = np.concatenate([cast(np.ndarray, b.dense) for b in blocks])
        dense[~np.isfinite(dense)] = np.nan
    return CorrelationResult(moments_a, moments_b, ab, ba, dense, blocks[0].backend, len(blocks))


def _as_topk(score: np.ndarray, index: np.ndarray, count: np.ndarray) -> TopK:
    # the reference's convention: no partner is index -1, score nan, count 0
    absent = ~np.isfinite(score)
    score = np.where(absent, np.nan, score).astype(np.float64)
    index = np.where(absent, -1, index).astype(np.int64)
    count = np.where(absent, 0, count).astype(np.int64)
    return TopK(np.ascontiguousarray(index), np.ascontiguousarray(score), np.ascontiguousarray(count))


def compute_correlation_blocked(
    codes_a: RowSliceable,
    codes_b: RowSliceable,
    top_k: int = 10,
    n_blocks: int = 1,
    memory_mb: float = 1024,
    chunk_units: int = 1 << 20,
    device: torch.device | str = "cpu",
    keep_dense: bool = False,
    backend: str = "auto",
    progress: ProgressFn = no_progress,
) -> CorrelationResult:
    """The row-block reduce in this process: moments, every :func:`coact_block`, :func:`merge_blocks`.

    The in-process schedule of the same pure steps the Ray engine distributes; equal to
    ``compute_correlation``. Checks of the codes themselves (finite, aligned) are the caller's.

    Args:
        codes_a: codes of SAE A (in memory or on disk).
        codes_b: codes of SAE B on the same units.
        top_k: partners kept per feature.
        n_blocks: row blocks to cut (more when one would not fit ``memory_mb``).
        memory_mb: a block's accumulator bound, MiB.
        chunk_units: units per streamed chunk.
        device: where the accumulators live.
        keep_dense: also return the dense correlation matrix.
        backend: "auto", "numba" or "torch".
        progress: called as ``progress("correlate", blocks_done, n_blocks)``.

    Returns:
        The correlation result.
    """
    moments_a, moments_b = correlation_moments(codes_a, chunk_units), correlation_moments(codes_b, chunk_units)
    check_live(moments_a, "A")
    check_live(moments_b, "B")
    rows = split_rows(codes_a.n_features, codes_b.n_features, n_blocks, memory_mb)
    blocks = []
    progress("correlate", 0, len(rows))
    for done, (lo, hi) in enumerate(rows, start=1):
        blocks.append(
            coact_block(
                codes_a,
                codes_b,
                moments_a,
                moments_b,
                lo,
                hi,
                top_k,
                chunk_units,
                device,
                backend,
                memory_mb,
                keep_dense,
            )
        )
        progress("correlate", done, len(rows))
    return merge_blocks(blocks, moments_a, moments_b, top_k)
