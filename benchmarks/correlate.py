"""Benchmark: exact sparse correlation top-k against a dense chunked-matmul baseline.

Makes realistic codes (power-law feature frequencies, L0 about 64, a share of B features
planted as noisy copies of A features), saves them, then runs each method in its own
subprocess so that its peak RSS is its own (loading the codes included):

- ``exact``: :func:`core.matching.correlate.compute_correlation` on all units;
- ``exact-subset``: the same on the first ``--dense-units`` units (when fewer than all);
- ``dense``: the baseline on those ``--dense-units`` units (default: all of them, run whole):
  dense float32 chunks, one GEMM per chunk accumulated in float64, then the r matrix and
  top-k both ways with torch.

Each worker reports its wall time and its CPU time (user + system of the process). The machine
may be shared: the load average is printed with every figure, and the ratio is given both in
wall time and in CPU time (the CPU-time ratio moves far less with the load). When the dense
baseline runs on fewer units than the exact method, its full-size time is also extrapolated
linearly (said so in the output). The run checks that both methods give the same top-k.

Usage:
    python benchmarks/correlate.py --units 100000 --features 4096            (the 50x comparison)
    python benchmarks/correlate.py --units 1000000 --features 16384 --skip-dense   (the 20 s target)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.bundle.codes import SparseCodes, concat_codes  # noqa: E402


def make_codes(
    n_units: int, n_a: int, n_b: int, l0: int, planted_share: float, seed: int
) -> tuple[SparseCodes, SparseCodes]:
    """Power-law codes for A and B; ``planted_share`` of B features copy an A feature (p = 0.8).

    Args:
        n_units: units.
        n_a: features of A.
        n_b: features of B.
        l0: target mean L0; each unit draws ``l0 * 9 / 8`` features since duplicate draws merge
            (about 63 at 16K features for ``l0 = 64``; the printed line gives the actual L0).
        planted_share: share of B features that are noisy copies of an A feature.
        seed: random seed.

    Returns:
        ``(codes_a, codes_b)``.
    """
    rng = np.random.default_rng(seed)

    def cdf(n: int) -> tuple[np.ndarray, np.ndarray]:
        w = 1.0 / np.arange(1, n + 1) ** 0.9
        c = np.cumsum(w)
        return c / c[-1], rng.permutation(n)

    cdf_a, ids_a = cdf(n_a)
    cdf_b, ids_b = cdf(n_b)
    partner = np.full(n_a, -1, np.int64)
    n_planted = int(planted_share * min(n_a, n_b))
    partner[rng.choice(n_a, n_planted, replace=False)] = rng.choice(n_b, n_planted, replace=False)
    parts_a, parts_b = [], []
    step = 65536
    draws = int(round(l0 * 9 / 8))
    for lo in range(0, n_units, step):
        n = min(step, n_units - lo)
        idx_a = ids_a[np.searchsorted(cdf_a, rng.random((n, draws)))]
        val_a = (rng.exponential(1.0, (n, draws)) + 0.05).astype(np.float32)
        idx_b = ids_b[np.searchsorted(cdf_b, rng.random((n, draws)))]
        val_b = (rng.exponential(1.0, (n, draws)) + 0.05).astype(np.float32)
        copy = (partner[idx_a] >= 0) & (rng.random((n, draws)) < 0.8)
        idx_b = np.where(copy, partner[idx_a], idx_b)
        val_b = np.where(copy, val_a * rng.uniform(0.7, 1.3, (n, draws)).astype(np.float32), val_b)
        parts_a.append(SparseCodes.from_topk(idx_a, val_a, n_a))
        parts_b.append(SparseCodes.from_topk(idx_b, val_b, n_b))
    return concat_codes(parts_a), concat_codes(parts_b)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far, GB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def run_exact(data: Path, units: int, top_k: int, memory_mb: float, device: str) -> dict:
    """Worker: load codes, run the exact method, report time, RSS and the top-k."""
    from core.matching.correlate import compute_correlation

    codes_a = SparseCodes.load(data / "codes_a.safetensors").row_slice(0, units)
    codes_b = SparseCodes.load(data / "codes_b.safetensors").row_slice(0, units)
    # compile the kernels first so the timing is of the computation, not of numba's JIT
    compute_correlation(codes_a.row_slice(0, 64), codes_b.row_slice(0, 64), top_k=top_k, device=device)
    start, cpu = time.perf_counter(), time.process_time()
    result = compute_correlation(codes_a, codes_b, top_k=top_k, memory_mb=memory_mb, device=device)
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(data / f"exact_{units}_ab.npy", result.ab.score)
    np.save(data / f"exact_{units}_ba.npy", result.ba.score)
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "peak_rss_gb": peak_rss_gb(),
        "n_blocks": result.n_blocks,
        "backend": result.backend,
        "phases": result.timings,
        "load": os.getloadavg()[0],
    }


def run_dense(data: Path, units: int, top_k: int, device: str) -> dict:
    """Worker: the dense chunked-matmul baseline on the first ``units`` units."""
    import torch

    codes_a = SparseCodes.load(data / "codes_a.safetensors").row_slice(0, units)
    codes_b = SparseCodes.load(data / "codes_b.safetensors").row_slice(0, units)
    dev = torch.device(device)
    n_a, n_b = codes_a.n_features, codes_b.n_features
    start, cpu = time.perf_counter(), time.process_time()
    cross = torch.zeros((n_a, n_b), dtype=torch.float64, device=dev)
    sum_a = torch.zeros(n_a, dtype=torch.float64, device=dev)
    sum_b = torch.zeros(n_b, dtype=torch.float64, device=dev)
    sq_a = torch.zeros(n_a, dtype=torch.float64, device=dev)
    sq_b = torch.zeros(n_b, dtype=torch.float64, device=dev)
    chunk = 2048
    for lo in range(0, units, chunk):
        xa = torch.from_numpy(codes_a.row_slice(lo, lo + chunk).to_dense()).to(dev)
        xb = torch.from_numpy(codes_b.row_slice(lo, lo + chunk).to_dense()).to(dev)
        cross += (xa.T @ xb).double()
        sum_a += xa.sum(0).double()
        sum_b += xb.sum(0).double()
        sq_a += (xa.double() ** 2).sum(0)
        sq_b += (xb.double() ** 2).sum(0)
    gemm = time.perf_counter() - start
    var_a = sq_a - sum_a**2 / units
    var_b = sq_b - sum_b**2 / units
    cross -= torch.outer(sum_a, sum_b) / units
    cross /= torch.sqrt(torch.outer(var_a.clamp_min(1e-300), var_b.clamp_min(1e-300)))
    cross[var_a <= 1e-12] = -torch.inf
    cross[:, var_b <= 1e-12] = -torch.inf
    ab = torch.topk(cross, top_k, dim=1).values
    ba = torch.topk(cross, top_k, dim=0).values.T
    if dev.type == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter() - start, time.process_time() - cpu
    np.save(data / f"dense_{units}_ab.npy", ab.cpu().numpy())
    np.save(data / f"dense_{units}_ba.npy", ba.cpu().numpy())
    return {
        "wall_s": wall,
        "cpu_s": cpu,
        "gemm_s": gemm,
        "finalize_s": wall - gemm,
        "peak_rss_gb": peak_rss_gb(),
        "load": os.getloadavg()[0],
    }


def _worker(args: argparse.Namespace, method: str, units: int) -> dict:
    cmd = [
        sys.executable,
        __file__,
        "--worker",
        method,
        "--data",
        str(args.data),
        "--units",
        str(units),
        "--top-k",
        str(args.top_k),
        "--memory-mb",
        str(args.memory_mb),
        "--device",
        args.device,
    ]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.1f} / {five:.1f} / {fifteen:.1f}"


def main() -> None:
    """Parse arguments; generate codes, run the methods in subprocesses and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=100_000)
    parser.add_argument("--features", type=int, default=4096, help="features per side (both sides)")
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--top-k", type=int, default=10)
    parser.add_argument("--memory-mb", type=float, default=1024)
    parser.add_argument("--dense-units", type=int, default=None, help="units for the dense baseline (default: all)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-dense", action="store_true")
    parser.add_argument("--worker", choices=["exact", "dense"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker == "exact":
        print(json.dumps(run_exact(args.data, args.units, args.top_k, args.memory_mb, args.device)))
        return
    if args.worker == "dense":
        print(json.dumps(run_dense(args.data, args.units, args.top_k, args.device)))
        return

    import numba
    import torch

    with tempfile.TemporaryDirectory() as tmp:
        args.data = Path(tmp)
        start = time.perf_counter()
        codes_a, codes_b = make_codes(args.units, args.features, args.features, args.l0, 0.25, args.seed)
        codes_a.save(args.data / "codes_a.safetensors")
        codes_b.save(args.data / "codes_b.safetensors")
        l0_a, l0_b = codes_a.nnz / codes_a.n_rows, codes_b.nnz / codes_b.n_rows
        del codes_a, codes_b
        print(
            f"codes: {args.units:,} units x {args.features:,} + {args.features:,} features, "
            f"L0 {l0_a:.1f} / {l0_b:.1f}, made in {time.perf_counter() - start:.1f} s; "
            f"device {args.device}, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}, "
            f"numba threads {numba.get_num_threads()}; load average {_load()}"
        )
        exact = _worker(args, "exact", args.units)
        phases = ", ".join(f"{k} {v:.2f} s" for k, v in exact["phases"].items())
        print(
            f"exact  {args.units:>10,} units: {exact['wall_s']:8.2f} s wall, {exact['cpu_s']:8.2f} s CPU, "
            f"peak RSS {exact['peak_rss_gb']:.2f} GB ({phases}; {exact['n_blocks']} blocks, {exact['backend']}, "
            f"memory setting {args.memory_mb:.0f} MB; load {exact['load']:.1f})"
        )
        if args.skip_dense:
            return
        sub = min(args.dense_units or args.units, args.units)
        exact_sub = exact if sub == args.units else _worker(args, "exact", sub)
        dense = _worker(args, "dense", sub)
        if sub < args.units:
            print(
                f"exact  {sub:>10,} units: {exact_sub['wall_s']:8.2f} s wall, {exact_sub['cpu_s']:8.2f} s CPU, "
                f"peak RSS {exact_sub['peak_rss_gb']:.2f} GB (load {exact_sub['load']:.1f})"
            )
        print(
            f"dense  {sub:>10,} units: {dense['wall_s']:8.2f} s wall, {dense['cpu_s']:8.2f} s CPU, peak RSS "
            f"{dense['peak_rss_gb']:.2f} GB (GEMM {dense['gemm_s']:.2f} s, finalize {dense['finalize_s']:.2f} s; "
            f"load {dense['load']:.1f}, run whole)"
        )
        worst = 0.0
        for direction in ("ab", "ba"):
            ours = np.load(args.data / f"exact_{sub}_{direction}.npy")
            theirs = np.load(args.data / f"dense_{sub}_{direction}.npy")
            both = np.isfinite(ours) & np.isfinite(theirs)
            worst = max(worst, float(np.abs(ours[both] - theirs[both]).max()))
        print(f"top-k agreement: max |r_exact - r_dense| = {worst:.2e}")
        print(
            f"ratio on {sub:,} units (measured, same run): dense / exact = {dense['wall_s'] / exact_sub['wall_s']:.1f}x "
            f"wall, {dense['cpu_s'] / exact_sub['cpu_s']:.1f}x CPU (load average now {_load()})"
        )
        if sub < args.units:
            full = dense["gemm_s"] * args.units / sub + dense["finalize_s"]
            print(
                f"ratio at {args.units:,} units (dense GEMM extrapolated linearly from {sub:,} units: "
                f"{full:.0f} s): dense / exact = {full / exact['wall_s']:.1f}x"
            )


if __name__ == "__main__":
    main()
