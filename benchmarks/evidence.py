"""Benchmark: the evidence columns of every kept pair (top tokens, overlap, combined score), one pass per side.

Makes power-law codes (as benchmarks/correlate.py does) and a Zipf vocabulary for the units, then
times what the matching stage does for the evidence: every feature's top tokens over its top 10%
activations on both sides (:func:`core.matching.evidence.compute_feature_tokens`, one pass over
each side's codes) and the evidence of the pairs (``--pairs`` of them, default one per A feature:
the size of a 1-1 assignment; ``--matches-rows`` adds the top-k lists' rows too).

The baseline is the per-pair route (SplatNLP's ``_get_top_tokens`` for both features of each pair,
each from that feature's column of a CSC copy): measured on ``--baseline-pairs`` pairs in the same
run and scaled linearly to all pairs (said so in the output). The run checks that both routes
give the same overlap on the measured pairs.

Usage:
    python benchmarks/evidence.py --units 1000000 --features 16384
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import polars as pl

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from correlate import make_codes  # noqa: E402

from core.matching.evidence import compute_feature_tokens, compute_pair_evidence, unit_token_ids  # noqa: E402
from core.tokens import normalize_token_expr  # noqa: E402


def per_pair_tokens(csc, texts: np.ndarray, feature: int) -> set[str]:
    """SplatNLP's rule for one feature, from its CSC column (the baseline)."""
    lo, hi = csc.indptr[feature], csc.indptr[feature + 1]
    units, vals = csc.indices[lo:hi], csc.data[lo:hi]
    order = np.lexsort((units, -vals))[: max(1, units.size // 10)] if units.size else []
    counts = Counter(t for t in texts[units[order]] if t)
    return {t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:50]}


def main() -> None:
    """Parse arguments, make the codes, time both routes and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=16384)
    parser.add_argument("--l0", type=int, default=64)
    parser.add_argument("--vocab", type=int, default=30_000)
    parser.add_argument("--pairs", type=int, default=None, help="pairs to score (default: one per A feature)")
    parser.add_argument("--matches-rows", type=int, default=10, help="also score top-k rows: k per feature both ways")
    parser.add_argument("--baseline-pairs", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    import numba

    load = os.getloadavg()
    start = time.perf_counter()
    codes_a, codes_b = make_codes(args.units, args.features, args.features, args.l0, 0.25, args.seed)
    rng = np.random.default_rng(args.seed)
    ranks = rng.zipf(1.2, args.units) % args.vocab
    texts = pl.Series([f"tok{r}" for r in ranks])
    print(
        f"codes: {args.units:,} units x {args.features:,} + {args.features:,} features, L0 "
        f"{codes_a.nnz / codes_a.n_rows:.1f}, vocabulary {args.vocab:,}; made in {time.perf_counter() - start:.1f} s; "
        f"numba threads {numba.get_num_threads()}, load average {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f}"
    )
    n_pairs = args.pairs or args.features
    pa = rng.integers(0, args.features, n_pairs)
    pb = rng.integers(0, args.features, n_pairs)
    corr = rng.uniform(-0.2, 1.0, n_pairs)
    # compile first, so the timing is of the computation
    tiny_ids, tiny_vocab = unit_token_ids(texts.head(64))
    tiny = compute_feature_tokens(codes_a.row_slice(0, 64), tiny_ids, tiny_vocab)
    compute_pair_evidence(tiny, tiny, np.zeros(1, np.int64), np.zeros(1, np.int64), np.zeros(1))

    cpu0 = time.process_time()
    t0 = time.perf_counter()
    ids, vocab = unit_token_ids(texts)
    t_ids = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens_a = compute_feature_tokens(codes_a, ids, vocab)
    tokens_b = compute_feature_tokens(codes_b, ids, vocab)
    t_tokens = time.perf_counter() - t0
    t0 = time.perf_counter()
    evidence = compute_pair_evidence(tokens_a, tokens_b, pa, pb, corr)
    t_pairs = time.perf_counter() - t0
    cpu = time.process_time() - cpu0
    rows = 2 * args.features * args.matches_rows
    ra, rb = rng.integers(0, args.features, rows), rng.integers(0, args.features, rows)
    t0 = time.perf_counter()
    compute_pair_evidence(tokens_a, tokens_b, ra, rb, rng.uniform(-0.2, 1.0, rows))
    t_rows = time.perf_counter() - t0
    total = t_ids + t_tokens + t_pairs
    print(
        f"ours:      {total:6.2f} s wall, {cpu:.2f} s CPU for {n_pairs:,} pairs (unit ids {t_ids:.2f} s, top tokens both sides "
        f"{t_tokens:.2f} s, pair evidence {t_pairs:.3f} s); + {rows:,} top-k rows {t_rows:.2f} s; "
        f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6:.2f} GB"
    )

    t0 = time.perf_counter()
    csc_a, csc_b = codes_a.to_scipy().tocsc(), codes_b.to_scipy().tocsc()
    t_csc = time.perf_counter() - t0
    plain = pl.DataFrame({"t": texts}).select(normalize_token_expr("t"))["t"].to_numpy()
    m = min(args.baseline_pairs, n_pairs)
    t0 = time.perf_counter()
    worst = 0.0
    for i in range(m):
        sa = per_pair_tokens(csc_a, plain, int(pa[i]))
        sb = per_pair_tokens(csc_b, plain, int(pb[i]))
        union = sa | sb
        overlap = len(sa & sb) / len(union) if union else 0.0
        worst = max(worst, abs(overlap - float(evidence["token_overlap"][i])))
    t_base = (time.perf_counter() - t0) / m * n_pairs + t_csc
    print(
        f"per pair:  {t_base:6.1f} s for {n_pairs:,} pairs (CSC copy {t_csc:.1f} s, then {m} pairs measured and "
        f"scaled linearly); overlap agreement on those pairs: max |diff| = {worst:.1e}"
    )
    print(f"ratio: per pair / ours = {t_base / total:.1f}x wall (load average now {os.getloadavg()[0]:.1f})")


if __name__ == "__main__":
    main()
