"""Weight-space matches: cosine similarity of decoder (or encoder) directions, top-k both ways.

These sit beside the activation matches: a pair can correlate without sharing a direction
(different bases, different layers) or share a direction without firing together. Both
sides must live in the same space (equal ``d_in``); otherwise no cosine is defined.
"""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import torch

from core.errors import MatchingError
from core.matching.correlate import TopK, check_top_k
from core.progress import ProgressFn, no_progress


def _unit_rows(w: np.ndarray, side: str) -> tuple[np.ndarray, np.ndarray]:
    w = np.asarray(w, dtype=np.float64)
    if w.ndim != 2 or w.shape[0] == 0:
        raise MatchingError(f"SAE {side}'s weight matrix has shape {w.shape}, not (d_sae, d_in); reload the SAE.")
    if not np.all(np.isfinite(w)):
        raise MatchingError(f"SAE {side}'s weights contain NaN or inf; reload the SAE from a healthy checkpoint.")
    norms = np.linalg.norm(w, axis=1)
    live = norms > 0
    return w / np.where(live, norms, 1.0)[:, None], live


def compute_cosine_topk(
    w_a: np.ndarray,
    w_b: np.ndarray,
    top_k: int = 10,
    memory_mb: float = 1024,
    device: torch.device | str = "cpu",
    progress: ProgressFn | None = None,
) -> tuple[TopK, TopK]:
    """Top-k cosine partners of every row of ``w_a`` among the rows of ``w_b``, and back.

    Computed in blocks of A rows so the Fa x Fb matrix is never held whole when it would
    exceed ``memory_mb``. Zero rows have no direction and get no partners.

    Args:
        w_a: [Fa, d_in] directions of SAE A (``W_dec``, or ``W_enc.T``).
        w_b: [Fb, d_in] directions of SAE B.
        top_k: partners per feature, each direction.
        memory_mb: bound on one block of cosines, MiB.
        device: torch device.
        progress: called as ``progress("cosine", blocks_done, n_blocks)``.

    Returns:
        ``(ab, ba)``: :class:`~core.correlate.TopK` with cosines as scores and zero counts.
    """
    progress = progress or no_progress
    device = torch.device(device)
    u_a, live_a = _unit_rows(w_a, "A")
    u_b, live_b = _unit_rows(w_b, "B")
    if u_a.shape[1] != u_b.shape[1]:
        raise MatchingError(
            f"SAE A's directions have d_in={u_a.shape[1]} and SAE B's d_in={u_b.shape[1]}, so no cosine exists; "
            "compare them by activation correlation only."
        )
    n_a, n_b = u_a.shape[0], u_b.shape[0]
    check_top_k(top_k, n_a, n_b)
    t_b = torch.from_numpy(u_b).to(device)
    dead_b = torch.from_numpy(~live_b).to(device)
    height = int(max(1, min(n_a, (memory_mb * 2**20 / 2) // (8 * n_b))))
    row_v, row_i = np.full((n_a, top_k), -np.inf), np.zeros((n_a, top_k), np.int64)
    col_v = torch.full((n_b, top_k), -math.inf, dtype=torch.float64, device=device)
    col_i = torch.zeros((n_b, top_k), dtype=torch.int64, device=device)
    blocks = list(range(0, n_a, height))
    for done, lo in enumerate(blocks, start=1):
        hi = min(n_a, lo + height)
        block = torch.from_numpy(u_a[lo:hi]).to(device) @ t_b.T
        block.clamp_(-1.0, 1.0).masked_fill_(dead_b[None, :], -math.inf)
        block.masked_fill_(torch.from_numpy(~live_a[lo:hi]).to(device)[:, None], -math.inf)
        v, i = torch.topk(block, top_k, dim=1)
        row_v[lo:hi], row_i[lo:hi] = v.cpu().numpy(), i.cpu().numpy()
        v, i = torch.topk(block, min(top_k, hi - lo), dim=0)
        col_v, pick = torch.topk(torch.cat([col_v, v.T], dim=1), top_k, dim=1)
        col_i = torch.cat([col_i, i.T + lo], dim=1).gather(1, pick)
        progress("cosine", done, len(blocks))
    return _cos_topk(row_v, row_i), _cos_topk(col_v.cpu().numpy(), col_i.cpu().numpy())


def _cos_topk(score: np.ndarray, index: np.ndarray) -> TopK:
    absent = ~np.isfinite(score)
    return TopK(
        np.where(absent, -1, index).astype(np.int64),
        np.where(absent, np.nan, score).astype(np.float64),
        np.zeros(score.shape, np.int64),
    )


def compute_pair_cosine(w_a: np.ndarray, w_b: np.ndarray, pair_a: np.ndarray, pair_b: np.ndarray) -> np.ndarray:
    """Cosine of listed pairs of rows (nan where a row is zero).

    Args:
        w_a: [Fa, d_in] directions of SAE A.
        w_b: [Fb, d_in] directions of SAE B (same ``d_in``).
        pair_a: int [P] rows of ``w_a``.
        pair_b: int [P] rows of ``w_b``.

    Returns:
        float64 [P] cosines.
    """
    u_a, live_a = _unit_rows(w_a, "A")
    u_b, live_b = _unit_rows(w_b, "B")
    if u_a.shape[1] != u_b.shape[1]:
        raise MatchingError(
            f"SAE A's directions have d_in={u_a.shape[1]} and SAE B's d_in={u_b.shape[1]}, so no cosine exists; "
            "compare them by activation correlation only."
        )
    pair_a = np.asarray(pair_a, dtype=np.int64)
    pair_b = np.asarray(pair_b, dtype=np.int64)
    cos = np.einsum("ij,ij->i", u_a[pair_a], u_b[pair_b])
    return np.where(live_a[pair_a] & live_b[pair_b], np.clip(cos, -1.0, 1.0), np.nan)


def compute_weight_matches(
    w_dec_a: np.ndarray,
    w_dec_b: np.ndarray,
    top_k: int = 10,
    memory_mb: float = 1024,
    device: torch.device | str = "cpu",
    w_enc_a: np.ndarray | None = None,
    w_enc_b: np.ndarray | None = None,
) -> pl.DataFrame:
    """Decoder (and optionally encoder) cosine top-k in both directions, as one frame.

    Args:
        w_dec_a: ``W_dec`` of SAE A, [Fa, d_in].
        w_dec_b: ``W_dec`` of SAE B, [Fb, d_in].
        top_k: partners per feature, each direction.
        memory_mb: bound on one block of cosines, MiB.
        device: torch device.
        w_enc_a: optional ``W_enc`` of SAE A, [d_in, Fa] (sae-lens layout).
        w_enc_b: optional ``W_enc`` of SAE B, [d_in, Fb].

    Returns:
        Columns ``feature_a``, ``feature_b``, ``basis`` ("decoder" / "encoder"), ``direction``
        ("a->b" / "b->a"), ``rank`` (1 = best), ``cos``.
    """
    frames = [_frame(*compute_cosine_topk(w_dec_a, w_dec_b, top_k, memory_mb, device), "decoder")]
    if w_enc_a is not None and w_enc_b is not None:
        enc_a, enc_b = np.asarray(w_enc_a).T, np.asarray(w_enc_b).T
        frames.append(_frame(*compute_cosine_topk(enc_a, enc_b, top_k, memory_mb, device), "encoder"))
    return pl.concat(frames)


def _frame(ab: TopK, ba: TopK, basis: str) -> pl.DataFrame:
    parts = []
    for topk, direction in ((ab, "a->b"), (ba, "b->a")):
        n, k = topk.index.shape
        own = np.repeat(np.arange(n, dtype=np.int64), k)
        other = topk.index.reshape(-1)
        keep = other >= 0
        fa, fb = (own, other) if direction == "a->b" else (other, own)
        parts.append(
            pl.DataFrame(
                {
                    "feature_a": fa[keep],
                    "feature_b": fb[keep],
                    "basis": basis,
                    "direction": direction,
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep],
                    "cos": topk.score.reshape(-1)[keep],
                }
            )
        )
    return pl.concat(parts)
