"""Null distributions: permutation, random subset and subspace nulls, with what a permutation cannot change computed once."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.device import resolve_device
from core.errors import SimilarityError
from core.progress import ProgressFn, announce_estimate, no_progress
from core.spaces import kernels
from core.spaces.metrics import _center, _centered_triangle_ranks, check_paired_rows, compute_metric, count_components
from core.spaces.settings import METRICS

_GRAM_METRICS = ("svcca", "svcca_paper", "cka", "procrustes")


@dataclass(frozen=True, eq=False)
class PreparedPairs:
    """What a permutation of the B side leaves unchanged, computed once.

    Attributes:
        n: number of pairs.
        u_a: [n, r_a] left singular vectors of the centred A rows (device, null dtype).
        s_a: [r_a] singular values of the centred A rows.
        u_b: [n, r_b] likewise for B.
        s_b: [r_b].
        k_a, k_b: SVCCA components kept by the variance rule.
        kp_a, kp_b: SVCCA components kept by the paper's rule.
        rank_a, rank_b: [n_rsa, n_rsa] centred ranks of the RSM upper triangles, mirrored,
            zero diagonal (float32; numpy on the CPU, a tensor on the GPU), or None.
        rank_scale: ``sqrt(sum_{i<j} ra^2 * sum_{i<j} rb^2)``, the Spearman denominator.
        rsa_rows: the pair positions RSA uses (all, or a seeded subset).
        rsa_value: the observed RSA on those rows (float64).
        device: where the null samples are computed.
    """

    n: int
    u_a: torch.Tensor | None
    s_a: torch.Tensor | None
    u_b: torch.Tensor | None
    s_b: torch.Tensor | None
    k_a: int
    k_b: int
    kp_a: int
    kp_b: int
    rank_a: Any
    rank_b: Any
    rank_scale: float
    rsa_rows: np.ndarray | None
    rsa_value: float
    device: torch.device

    @property
    def n_rsa(self) -> int:
        """How many pairs RSA uses (0 when RSA was not prepared)."""
        return 0 if self.rsa_rows is None else len(self.rsa_rows)


def _dtype(name: str) -> torch.dtype:
    return torch.float32 if name == "float32" else torch.float64


def _rank_matrix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    tri = _centered_triangle_ranks(x)
    full = np.zeros((n, n), dtype=np.float32)
    iu = np.triu_indices(n, 1)
    full[iu] = tri
    full.T[iu] = tri
    return full, tri


def prepare_pairs(
    x: np.ndarray,
    y: np.ndarray,
    metrics: Sequence[str] = METRICS,
    variance: float = 0.99,
    device: torch.device | str = "cpu",
    null_dtype: str = "float32",
    rsa_max_pairs: int = 6000,
    seed: int = 0,
) -> PreparedPairs:
    """Compute once what every permutation null sample reuses.

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.
        metrics: the metrics whose nulls will be drawn.
        variance: SVCCA's variance fraction.
        device: torch device (or ``"auto"``/``"cpu"``/``"cuda"``).
        null_dtype: ``"float32"`` or ``"float64"`` for the null samples.
        rsa_max_pairs: RSA uses a seeded random subset of at most this many pairs.
        seed: seed of that subset.

    Returns:
        The prepared pairs.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    n = x.shape[0]
    dtype = _dtype(null_dtype)
    u_a: torch.Tensor | None = None
    s_a: torch.Tensor | None = None
    u_b: torch.Tensor | None = None
    s_b: torch.Tensor | None = None
    k_a = k_b = kp_a = kp_b = 0
    if any(m in metrics for m in _GRAM_METRICS):
        ua, sa, _ = torch.linalg.svd(torch.from_numpy(_center(x)).to(device), full_matrices=False)
        ub, sb, _ = torch.linalg.svd(torch.from_numpy(_center(y)).to(device), full_matrices=False)
        sa_np, sb_np = sa.cpu().numpy(), sb.cpu().numpy()
        k_a, k_b = count_components(sa_np, variance), count_components(sb_np, variance)
        kp_a, kp_b = count_components(sa_np, variance, "paper"), count_components(sb_np, variance, "paper")
        u_a, s_a, u_b, s_b = ua.to(dtype), sa.to(dtype), ub.to(dtype), sb.to(dtype)
    rank_a: Any = None
    rank_b: Any = None
    rsa_rows: np.ndarray | None = None
    rank_scale = rsa_value = float("nan")
    if "rsa" in metrics:
        rsa_rows = np.arange(n)
        if n > rsa_max_pairs:
            rsa_rows = np.sort(np.random.default_rng([seed, 3]).choice(n, rsa_max_pairs, replace=False))
        rank_a, tri_a = _rank_matrix(x[rsa_rows])
        rank_b, tri_b = _rank_matrix(y[rsa_rows])
        rank_scale = float(np.sqrt((tri_a @ tri_a) * (tri_b @ tri_b)))
        rsa_value = float(tri_a @ tri_b / rank_scale)
        if device.type != "cpu":
            rank_a = torch.from_numpy(rank_a).to(device)
            rank_b = torch.from_numpy(rank_b).to(device)
    return PreparedPairs(
        n, u_a, s_a, u_b, s_b, k_a, k_b, kp_a, kp_b, rank_a, rank_b, rank_scale, rsa_rows, rsa_value, device
    )


def permuted_triangle_dot(rank_a: Any, rank_b: Any, perms: np.ndarray) -> np.ndarray:
    """``sum_{i<j} A[i, j] * B[p_i, p_j]`` for each permutation ``p`` (symmetric A, B).

    Args:
        rank_a: [n, n] symmetric float32 matrix (numpy for the CPU kernel, or a tensor).
        rank_b: [n, n] symmetric float32 matrix, same kind as ``rank_a``.
        perms: int64 [n_perm, n] permutations.

    Returns:
        float64 [n_perm].
    """
    if isinstance(rank_a, torch.Tensor):
        out = np.empty(len(perms))
        for i, perm in enumerate(perms):
            p = torch.from_numpy(perm).to(rank_b.device)
            permuted = rank_b.index_select(0, p).index_select(1, p)
            # full sum counts each off-diagonal pair twice; the diagonals are zero
            out[i] = 0.5 * float(torch.sum(rank_a * permuted, dtype=torch.float64))
        return out
    return kernels.permuted_triangle_dot(rank_a, rank_b, np.ascontiguousarray(perms, dtype=np.int64))


def _singular_values(g: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch [c, p, q] via the eigenvalues of the smaller Gram matrix.

    Two to three times faster than ``svdvals`` on the CPU. In float32 the mean singular value
    moves by about 1e-7 against float64 (3000 pairs, 384 vs 576), far below any null's spread.
    """
    gram = g @ g.mT if g.shape[-2] <= g.shape[-1] else g.mT @ g
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()


def _gather_rows(u: torch.Tensor, perms: np.ndarray) -> torch.Tensor:
    # [c, n, r]; numpy's take is several times faster than torch fancy indexing on the CPU
    if u.device.type == "cpu":
        return torch.from_numpy(np.take(u.contiguous().numpy(), perms, axis=0))
    return u[torch.from_numpy(perms).to(u.device)]


def _gram_metrics_batch(prep: PreparedPairs, metrics: Sequence[str], perms: np.ndarray) -> dict[str, torch.Tensor]:
    # prepare_pairs computed the SVD parts because a Gram metric was asked for
    assert prep.u_a is not None and prep.u_b is not None and prep.s_a is not None and prep.s_b is not None
    # columns of U each metric needs: SVCCA only its kept directions, CKA/Procrustes all
    need_full = any(m in metrics for m in ("cka", "procrustes"))
    ra = (
        prep.u_a.shape[1]
        if need_full
        else max(prep.k_a if "svcca" in metrics else 0, prep.kp_a if "svcca_paper" in metrics else 0)
    )
    rb = (
        prep.u_b.shape[1]
        if need_full
        else max(prep.k_b if "svcca" in metrics else 0, prep.kp_b if "svcca_paper" in metrics else 0)
    )
    # G = U_a^T P U_b. Shuffling B by p equals shuffling A by p's inverse, so gather the
    # narrower side: the gather is memory-bound and costs as much as a third of the product
    if ra <= rb:
        inverse = np.argsort(perms, axis=1)
        g = torch.matmul(_gather_rows(prep.u_a[:, :ra], inverse).mT, prep.u_b[:, :rb])  # [c, ra, rb]
    else:
        g = torch.matmul(prep.u_a[:, :ra].T, _gather_rows(prep.u_b[:, :rb], perms))
    out: dict[str, torch.Tensor] = {}
    if "svcca" in metrics:
        out["svcca"] = _singular_values(g[:, : prep.k_a, : prep.k_b]).clamp(0, 1).mean(-1)
    if "svcca_paper" in metrics:
        out["svcca_paper"] = _singular_values(g[:, : prep.kp_a, : prep.kp_b]).clamp(0, 1).mean(-1)
    if need_full:
        sa, sb = prep.s_a, prep.s_b
        if "procrustes" in metrics:
            w = (
                (sa / torch.linalg.vector_norm(sa))[None, :, None]
                * g
                * (sb / torch.linalg.vector_norm(sb))[None, None, :]
            )
            out["procrustes"] = _singular_values(w).sum(-1)
        if "cka" in metrics:
            w = sa[None, :, None] * g * sb[None, None, :]
            denom = torch.sqrt(torch.sum(sa**4)) * torch.sqrt(torch.sum(sb**4))
            out["cka"] = (w * w).sum((-2, -1)) / denom
    return out


def compute_permutation_nulls(
    prep: PreparedPairs,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    chunk: int = 8,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Null distributions from shuffling the B side of the pairing.

    Permutations come from numpy generators seeded with ``[seed, 1]`` (SVCCA, CKA,
    Procrustes) and ``[seed, 2]`` (RSA), so a seed gives the same nulls on any device.

    Args:
        prep: from :func:`prepare_pairs` (with the same metrics).
        metrics: which nulls to draw (subset of :data:`METRICS`).
        n_null: samples per metric.
        seed: seed of the permutations.
        chunk: permutations per batched matrix product.
        progress: optional progress callback (``"null"``, done, total).

    Returns:
        metric -> float64 [n_null] null samples.
    """
    progress = progress or no_progress
    gram = [m for m in metrics if m in _GRAM_METRICS]
    out = {m: np.empty(n_null) for m in metrics}
    rng = np.random.default_rng([seed, 1])
    total = n_null * (bool(gram) + ("rsa" in metrics))
    done = 0
    if gram:
        for start in range(0, n_null, chunk):
            c = min(chunk, n_null - start)
            perms = rng.permuted(np.tile(np.arange(prep.n), (c, 1)), axis=1)
            with torch.no_grad():
                batch = _gram_metrics_batch(prep, gram, perms)
            for m, v in batch.items():
                out[m][start : start + c] = v.double().cpu().numpy()
            done += c
            progress("null", done, total)
    if "rsa" in metrics:
        rng_rsa = np.random.default_rng([seed, 2])
        assert prep.rsa_rows is not None
        n_rsa = len(prep.rsa_rows)
        step = max(chunk, 32)
        for start in range(0, n_null, step):
            c = min(step, n_null - start)
            perms = rng_rsa.permuted(np.tile(np.arange(n_rsa), (c, 1)), axis=1)
            out["rsa"][start : start + c] = permuted_triangle_dot(prep.rank_a, prep.rank_b, perms) / prep.rank_scale
            done += c
            progress("null", done, total)
    return out


# null sample counts from which the cost is measured and said before the samples are drawn
# (the probe costs about chunk + 32 samples, under 2% of the run from here on)
ESTIMATE_FROM = 2000


def estimate_permutation_null_s(prep: PreparedPairs, metrics: Sequence[str], n_null: int, chunk: int = 8) -> float:
    """Seconds :func:`compute_permutation_nulls` will take for ``n_null`` samples, from a measured probe.

    One chunk of Gram-metric permutations and one step of RSA permutations are timed (after a
    one-sample warm-up, so a kernel's compilation is not counted) with their own generator, so
    the real samples are unchanged. Their cost per sample does not depend on ``n_null``.

    Args:
        prep: from :func:`prepare_pairs`.
        metrics: the metrics whose nulls will be drawn.
        n_null: samples per metric.
        chunk: permutations per batched matrix product.

    Returns:
        The estimate in seconds.
    """
    rng = np.random.default_rng([0, 99])
    total = 0.0
    gram = [m for m in metrics if m in _GRAM_METRICS]
    if gram:
        for c in (1, chunk):
            perms = rng.permuted(np.tile(np.arange(prep.n), (c, 1)), axis=1)
            t0 = time.perf_counter()
            with torch.no_grad():
                _gram_metrics_batch(prep, gram, perms)
            per_sample = (time.perf_counter() - t0) / c
        total += per_sample * n_null
    if "rsa" in metrics and prep.rsa_rows is not None:
        step = max(chunk, 32)
        for c in (1, step):
            perms = rng.permuted(np.tile(np.arange(len(prep.rsa_rows)), (c, 1)), axis=1)
            t0 = time.perf_counter()
            permuted_triangle_dot(prep.rank_a, prep.rank_b, perms)
            per_sample = (time.perf_counter() - t0) / c
        total += per_sample * n_null
    return total


def compute_random_subset_null(
    decoder_a: np.ndarray,
    decoder_b: np.ndarray,
    n_pairs: int,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    variance: float = 0.99,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Null of random feature subsets: ``n_pairs`` random A rows paired with random B rows.

    Each sample recomputes every metric from scratch (nothing is shared between subsets),
    so keep ``n_null`` modest. Rows that are non-finite or constant are never drawn.

    Args:
        decoder_a: full ``W_dec`` of side A [d_sae_a, d_in_a].
        decoder_b: full ``W_dec`` of side B [d_sae_b, d_in_b].
        n_pairs: pairs per sample (the size of the real pairing).
        metrics: which metrics.
        n_null: samples.
        seed: seed (generator ``[seed, 4]``).
        variance: SVCCA's variance fraction.
        progress: optional progress callback.

    Returns:
        metric -> float64 [n_null].
    """
    progress = progress or no_progress
    valid_a = np.flatnonzero(np.isfinite(decoder_a).all(1) & (np.ptp(decoder_a, axis=1) > 0))
    valid_b = np.flatnonzero(np.isfinite(decoder_b).all(1) & (np.ptp(decoder_b, axis=1) > 0))
    if min(valid_a.size, valid_b.size) < n_pairs:
        raise SimilarityError(
            f"A random-subset null needs {n_pairs} usable features per side but there are {valid_a.size} and "
            f"{valid_b.size}; drop 'random_subset' from the nulls."
        )
    rng = np.random.default_rng([seed, 4])
    out = {m: np.empty(n_null) for m in metrics}
    t0 = time.perf_counter()
    for i in range(n_null):
        xa = decoder_a[rng.choice(valid_a, n_pairs, replace=False)]
        yb = decoder_b[rng.choice(valid_b, n_pairs, replace=False)]
        for m in metrics:
            out[m][i] = compute_metric(m, xa, yb, variance)
        if i == 0 and n_null > 1:
            # every sample costs the same (nothing is shared), so the first one sizes the rest
            first = time.perf_counter() - t0
            announce_estimate(
                "random-subset null",
                first * n_null,
                f"{n_null:,} random-subset samples",
                f"{first:.2g} s per sample measured on the first",
            )
        progress("random-subset null", i + 1, n_null)
    return out


def compute_subspace_null(
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    variance: float = 0.99,
    extra: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Null of random subspaces: random ``size``-subsets of the matched pairs, partners kept.

    Args:
        x: [n, d_a] A rows of all matched pairs.
        y: [n, d_b] B rows of the same pairs.
        size: pairs per sample (the concept's size).
        metrics: decoder metrics to compute per sample.
        n_null: samples.
        seed: seed (generator ``[seed, 5, size]``).
        variance: SVCCA's variance fraction.
        extra: optional [n] per-pair values (the matched correlation) whose subset mean is
            reported as metric ``matched_corr``.

    Returns:
        metric -> float64 [n_null].
    """
    rng = np.random.default_rng([seed, 5, size])
    names = list(metrics) + (["matched_corr"] if extra is not None else [])
    out = {m: np.empty(n_null) for m in names}
    for i in range(n_null):
        rows = rng.choice(x.shape[0], size, replace=False)
        for m in metrics:
            out[m][i] = compute_metric(m, x[rows], y[rows], variance)
        if extra is not None:
            out["matched_corr"][i] = float(np.mean(extra[rows]))
    return out
