"""Benchmark: dashboard data for two SAEs in one streamed pass, against a naive per-feature loop.

Synthetic data shaped like a real harvest: ``--units`` units (Zipf-distributed tokens over a
20K vocabulary, documents of 128 units), two SAEs of ``--features`` features with about
``--l0`` active features per unit (half token-selective, half random), gamma activations.

Streamed: :func:`core.dashboards.compute_dashboards` (both SAEs, one thread each).
Naive: the obvious route, run in the same process on the same data: transpose the whole
codes to CSC, then loop over features in Python with numpy (argsort for the top examples,
``np.quantile``, ``np.histogram``, ``np.unique`` for top tokens, a scipy column slice per
example window). The naive loop is timed on ``--naive-features`` random features per SAE and
scaled linearly to all features (its cost is per feature); the transpose is timed whole.

A discovery scoring query (200 tokens, both SAEs, models excluded) is timed as well.

Run: ``.venv/bin/python benchmarks/dashboards.py`` (defaults: 1M units, 2 x 16K features).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.bundle.codes import SparseCodes, concat_codes  # noqa: E402
from core.dashboards.compute import UnitIndex, compute_dashboards  # noqa: E402
from core.dashboards.settings import QUANTILE_PROBS, DashboardSettings  # noqa: E402
from core.explore.discover import DiscoverSettings, score_features  # noqa: E402

N_VOCAB = 20_000
DOC_LEN = 128


def make_units(n_units: int, seed: int) -> tuple[pl.DataFrame, np.ndarray]:
    """Synthetic units: Zipf tokens, fixed-length documents."""
    rng = np.random.default_rng(seed)
    tokens = np.minimum(rng.zipf(1.2, n_units) - 1, N_VOCAB - 1).astype(np.int64)
    vocab = np.asarray([f"tok{i}" for i in range(N_VOCAB)], dtype=object)
    units = pl.DataFrame(
        {
            "unit": np.arange(n_units, dtype=np.int64),
            "doc": np.arange(n_units, dtype=np.int64) // DOC_LEN,
            "pos": np.arange(n_units, dtype=np.int64) % DOC_LEN,
            "text": pl.Series(vocab[tokens], dtype=pl.String),
        }
    )
    return units, tokens


def make_codes(tokens: np.ndarray, n_features: int, l0: int, seed: int) -> SparseCodes:
    """Synthetic SAE codes: half of each unit's features depend on its token, half are random."""
    rng = np.random.default_rng(seed)
    n = tokens.shape[0]
    half = l0 // 2
    parts = []
    for lo in range(0, n, 131_072):  # bounded temporaries
        tok = tokens[lo : lo + 131_072]
        m = tok.shape[0]
        idx = np.empty((m, l0), np.int64)
        idx[:, :half] = rng.integers(0, n_features, (m, half))
        idx[:, half:] = (tok[:, None] * (31 + seed) + rng.integers(0, 64, (m, l0 - half))) % n_features
        vals = rng.gamma(2.0, 1.0, (m, l0)).astype(np.float32)
        parts.append(SparseCodes.from_topk(idx, vals, n_features))
    return concat_codes(parts)


def naive_side(codes: SparseCodes, tokens: np.ndarray, features: np.ndarray, settings: DashboardSettings) -> float:
    """The naive per-feature loop on the given features; returns seconds for them."""
    csr = codes.to_scipy()
    csc = csr.tocsc()
    doc = np.arange(codes.n_rows) // DOC_LEN
    t0 = time.perf_counter()
    for f in features:
        rows = csc.indices[csc.indptr[f] : csc.indptr[f + 1]]
        vals = csc.data[csc.indptr[f] : csc.indptr[f + 1]]
        if vals.size == 0:
            continue
        top = rows[np.argsort(-vals, kind="stable")[: settings.n_top]]
        np.quantile(vals, QUANTILE_PROBS)
        np.histogram(vals, bins=settings.hist_bins)
        words, inverse, counts = np.unique(tokens[rows], return_inverse=True, return_counts=True)
        sums = np.bincount(inverse, weights=vals)
        np.argsort(-counts)[: settings.n_top_tokens]
        np.argsort(-(sums / counts))[: settings.n_top_tokens]
        edges = np.quantile(vals, np.linspace(0, 1, settings.n_quantiles + 1))
        groups = np.searchsorted(edges[1:-1], vals, side="right")
        picks = [rows[groups == q][: settings.n_per_quantile] for q in range(settings.n_quantiles)]
        for u in np.concatenate([top, *picks]):
            lo = max(u - settings.window, (doc[u]) * DOC_LEN)
            hi = min(u + settings.window + 1, (doc[u] + 1) * DOC_LEN)
            csc[lo:hi, [f]].toarray()
    return time.perf_counter() - t0


def main() -> None:
    """Run the benchmark and print timings and ratios."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16_384)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--naive-features", type=int, default=512)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    t0 = time.perf_counter()
    units, tokens = make_units(args.units, seed=0)
    codes = {
        "a": make_codes(tokens, args.features, args.l0, seed=1),
        "b": make_codes(tokens, args.features, args.l0, 2),
    }
    index = UnitIndex.from_frame(units)
    print(
        f"data: {args.units:,} units, 2 x {args.features:,} features, nnz a={codes['a'].nnz:,} b={codes['b'].nnz:,} "
        f"(built in {time.perf_counter() - t0:.1f} s); cpu cores visible: {os.cpu_count()}"
    )
    settings = DashboardSettings(threads=args.threads)

    # compile the kernels outside the timing (numba caches them on disk after the first run)
    warm = {s: c.row_slice(0, 2048) for s, c in codes.items()}
    compute_dashboards(warm, UnitIndex.from_frame(units.head(2048)), settings)

    t0 = time.perf_counter()
    results = compute_dashboards(codes, index, settings)
    streamed = time.perf_counter() - t0
    n_examples = sum(r.examples.height for r in results.values())
    print(f"streamed: {streamed:.1f} s for both SAEs ({n_examples:,} examples with windows)")

    rng = np.random.default_rng(0)
    naive_total = 0.0
    for side, c in codes.items():
        t0 = time.perf_counter()
        c.to_scipy().tocsc()
        transpose = time.perf_counter() - t0
        sample = rng.choice(args.features, size=min(args.naive_features, args.features), replace=False)
        loop = naive_side(c, tokens, sample, settings)
        scaled = transpose + loop * args.features / sample.shape[0]
        naive_total += scaled
        print(
            f"naive {side}: transpose {transpose:.1f} s + loop {loop:.1f} s on {sample.shape[0]} features "
            f"-> {scaled:.1f} s scaled to {args.features:,}"
        )
    print(f"naive (both SAEs, estimated): {naive_total:.1f} s")
    print(f"ratio naive / streamed: {naive_total / streamed:.1f}x")

    text_codes = codes["a"].row_slice(0, 200), codes["b"].row_slice(0, 200)
    tau = {s: np.asarray([q[list(QUANTILE_PROBS).index(0.95)] if q is not None else np.inf
                          for q in r.features["quantiles"].to_list()]) for s, r in results.items()}  # fmt: skip
    t0 = time.perf_counter()
    for side, tc in zip(("a", "b"), text_codes, strict=True):
        score_features(tc, tau[side], DiscoverSettings())
    print(f"discovery scoring, 200 tokens, both SAEs (models excluded): {1000 * (time.perf_counter() - t0):.1f} ms")


if __name__ == "__main__":
    main()
