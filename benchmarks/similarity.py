"""Benchmark: 1000-sample permutation nulls for SVCCA and RSA at 3000 pairs, d 384 vs 576.

Goal (issue 4): each null under 60 s on 2 CPU cores. The baseline is the naive loop that
recomputes everything for every null sample (permute B, centre, SVD both sides, CCA through
covariances; or both RSMs and scipy's spearmanr), timed on a few samples in the same run and
scaled to the same number of samples. Prints one line per measurement and the ratios.

Usage:
    python benchmarks/similarity.py [--pairs 3000] [--d-a 384] [--d-b 576] [--n-null 1000]
        [--naive-samples 3] [--threads 0] [--device auto] [--fact]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.device import resolve_device  # noqa: E402
from core.spaces.metrics import compute_svcca  # noqa: E402
from core.spaces.nulls import compute_permutation_nulls, prepare_pairs  # noqa: E402


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Decoder-like rows: random unit directions."""
    w = rng.standard_normal((n, d))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def naive_svcca(x: np.ndarray, y: np.ndarray, variance: float = 0.99) -> float:
    """Everything from scratch, the textbook way: PCA scores, then CCA through covariance matrices."""
    xc, yc = x - x.mean(0), y - y.mean(0)
    ua, sa, _ = np.linalg.svd(xc, full_matrices=False)
    ub, sb, _ = np.linalg.svd(yc, full_matrices=False)
    ka = int(np.argmax(np.cumsum(sa**2) / np.sum(sa**2) >= variance)) + 1
    kb = int(np.argmax(np.cumsum(sb**2) / np.sum(sb**2) >= variance)) + 1
    pa, pb = ua[:, :ka] * sa[:ka], ub[:, :kb] * sb[:kb]
    cov = np.cov(pa.T, pb.T)
    sxx, sxy, syy = cov[:ka, :ka], cov[:ka, ka:], cov[ka:, ka:]

    def inv_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return (v / np.sqrt(w)) @ v.T

    return float(np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False).mean())


def naive_rsa(x: np.ndarray, y: np.ndarray) -> float:
    """Both RSMs and scipy's Spearman, from scratch."""
    iu = np.triu_indices(x.shape[0], 1)
    return float(stats.spearmanr(np.corrcoef(x)[iu], np.corrcoef(y)[iu]).statistic)


def time_naive(fn, x: np.ndarray, y: np.ndarray, samples: int, seed: int) -> float:
    """Seconds per null sample of the naive loop."""
    rng = np.random.default_rng(seed)
    start = time.perf_counter()
    for _ in range(samples):
        fn(x, y[rng.permutation(y.shape[0])])
    return (time.perf_counter() - start) / samples


def time_fast(
    metric: str, x: np.ndarray, y: np.ndarray, n_null: int, device: torch.device
) -> tuple[float, float, float]:
    """(prepare seconds, null seconds, null mean) of the prepared route for one metric."""
    start = time.perf_counter()
    prep = prepare_pairs(x, y, (metric,), device=device)
    prepared = time.perf_counter()
    null = compute_permutation_nulls(prep, (metric,), n_null, seed=0)[metric]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return prepared - start, time.perf_counter() - prepared, float(null.mean())


def main() -> None:
    """Run the benchmark and print the ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", type=int, default=3000)
    parser.add_argument("--d-a", type=int, default=384)
    parser.add_argument("--d-b", type=int, default=576)
    parser.add_argument("--n-null", type=int, default=1000)
    parser.add_argument("--naive-samples", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0, help="torch and BLAS threads (0: library default)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--fact", action="store_true", help="also print SVCCA of random unit rows, 3000 x 512 vs 768")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(limits=args.threads)
        except ImportError:
            pass
    device = resolve_device(args.device)
    rng = np.random.default_rng(0)
    x = unit_rows(rng, args.pairs, args.d_a)
    q, _ = np.linalg.qr(rng.standard_normal((args.d_b, args.d_a)))
    y = x @ q.T + 0.5 * unit_rows(rng, args.pairs, args.d_b)
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"pairs {args.pairs}, d {args.d_a} vs {args.d_b}, n_null {args.n_null}, device {device}, "
        f"torch threads {torch.get_num_threads()}, cpus {os.cpu_count()}, load {load:.1f}"
    )
    # warm up the compiled RSA kernel so compile time is not billed to one metric
    warm = prepare_pairs(x[:50], y[:50], ("rsa",), device=device)
    compute_permutation_nulls(warm, ("rsa",), 2)

    for metric, naive in (("svcca", naive_svcca), ("rsa", naive_rsa)):
        prep_s, null_s, null_mean = time_fast(metric, x, y, args.n_null, device)
        fast_total = prep_s + null_s
        per_naive = time_naive(naive, x, y, args.naive_samples, seed=1)
        naive_total = per_naive * args.n_null
        goal = "meets" if fast_total < 60 else "MISSES"
        print(
            f"{metric}: prepared {fast_total:.1f} s for {args.n_null} samples (prepare {prep_s:.1f} s + null "
            f"{null_s:.1f} s, {1000 * null_s / args.n_null:.1f} ms/sample, null mean {null_mean:.4f}); "
            f"naive {per_naive:.2f} s/sample x {args.n_null} = {naive_total:.0f} s "
            f"(measured on {args.naive_samples}); ratio {naive_total / fast_total:.0f}x; 60 s goal: {goal}"
        )
    if args.fact:
        rx, ry = unit_rows(rng, 3000, 512), unit_rows(rng, 3000, 768)
        corrected = compute_svcca(rx, ry, 0.99, "variance")
        paper = compute_svcca(rx, ry, 0.99, "paper")
        print(
            f"random unit rows 3000 x 512 vs 768: corrected SVCCA {corrected.value:.3f} "
            f"(k {corrected.k_a}/{corrected.k_b}), "
            f"paper-rule SVCCA {paper.value:.3f} (k {paper.k_a}/{paper.k_b})"
        )


if __name__ == "__main__":
    main()
