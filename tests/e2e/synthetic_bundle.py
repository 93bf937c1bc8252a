"""A synthetic bundle of any width: random TopK codes and every part the pages read.

Shared by the browser tests (tests/e2e/test_app_state.py runs on a 16K x 16K one, as issue 11 asks)
and benchmarks/app_pages.py (``--synthetic 65536``). Its codes and decoders are real arrays, so
the matching stage can be re-run on it; its assignment, matches and UMAP are random.
"""

from __future__ import annotations

from pathlib import Path


def build_synthetic(out: Path, n_features: int, n_units: int, k: int = 32, d_in: int = 256, seed: int = 0) -> Path:
    """A bundle of random TopK codes with every part the pages read (matching parts are random too)."""
    import numpy as np
    import polars as pl

    from core.bundle.codes import SparseCodes
    from core.bundle.writer import BundleWriter, add_parts, prepare_output_dir
    from core.dashboards.settings import DashboardSettings
    from core.dashboards.stage import build_dashboards

    if (out / "manifest.json").is_file():
        from core.bundle.reader import open_bundle

        if open_bundle(out).has("dashboards"):
            return out
    rng = np.random.default_rng(seed)
    prepare_output_dir(out, overwrite=True)
    writer = BundleWriter(out)
    words = np.array("the cat sat on a mat while seven dogs barked loudly at night and time flies".split())
    doc_len = 100
    texts = words[rng.integers(0, words.size, n_units)]
    lengths = np.char.str_len(texts.astype(str)) + 1
    starts = np.zeros(n_units, np.int64)
    for lo in range(0, n_units, doc_len):
        hi = min(lo + doc_len, n_units)
        starts[lo:hi] = np.concatenate([[0], np.cumsum(lengths[lo : hi - 1])])
    writer.write_units(
        pl.DataFrame(
            {
                "unit": np.arange(n_units),
                "doc": np.arange(n_units) // doc_len,
                "pos": np.arange(n_units) % doc_len,
                "text": texts,
                "char_start": starts,
                "char_end": starts + lengths - 1,
            }
        )
    )
    n_docs = (n_units + doc_len - 1) // doc_len
    writer.write_docs(
        pl.DataFrame(
            {
                "doc": np.arange(n_docs),
                "text": [" ".join(texts[d * doc_len : (d + 1) * doc_len]) for d in range(n_docs)],
            }
        )
    )
    sides = {}
    for side in ("a", "b"):
        # features fire with Zipf-like popularity, as real SAE features do
        popularity = 1.0 / np.arange(1, n_features + 1) ** 0.7
        popularity /= popularity.sum()
        # one vectorised draw of 2k candidates per unit, then each unit's first k distinct ones
        # (a draw per unit over 65K probabilities would take minutes)
        candidates = rng.choice(n_features, size=(n_units, 2 * k), p=popularity)
        idx = np.empty((n_units, k), np.int64)
        for row in range(n_units):
            distinct, first = np.unique(candidates[row], return_index=True)
            picked = distinct[np.argsort(first)][:k]
            if picked.size < k:  # rare: top up with features not drawn yet
                rest = np.setdiff1d(rng.choice(n_features, 4 * k, replace=False), picked)[: k - picked.size]
                picked = np.concatenate([picked, rest])
            idx[row] = picked
        codes = SparseCodes.from_topk(idx, rng.gamma(2.0, 1.0, (n_units, k)).astype(np.float32), n_features)
        writer.write_codes(side, codes)
        writer.write_decoder(side, rng.standard_normal((n_features, d_in)).astype(np.float32))
        count = np.bincount(idx.ravel(), minlength=n_features)
        writer.write_features(
            side,
            pl.DataFrame(
                {
                    "feature": np.arange(n_features),
                    "freq": count / n_units,
                    "mean": np.ones(n_features),
                    "std": np.ones(n_features),
                    "max": np.ones(n_features),
                    "is_dead": count == 0,
                    "is_dense": np.zeros(n_features, bool),
                    "top_tokens": [list(words[rng.integers(0, words.size, 5)]) for _ in range(n_features)],
                    "is_nonconcept": np.zeros(n_features, bool),
                }
            ),
        )
        sides[side] = {
            "label": f"synthetic {side}",
            "d_in": d_in,
            "d_sae": n_features,
            "architecture": "topk",
            "hook": "x",
        }
    writer.finalize({"sides": sides, "n_units": n_units, "corpus": {"kind": "synthetic"}})
    fa = rng.permutation(n_features)
    corr = rng.beta(2, 5, n_features)
    assignment = pl.DataFrame(
        {
            "feature_a": fa,
            "feature_b": np.arange(n_features),
            "method": ["greedy"] * n_features,
            "corr": corr,
            "kept": corr > 0.1,
            "reason": [None if c > 0.1 else "corr_below_threshold" for c in corr],
            "cos": rng.uniform(-0.2, 0.9, n_features),
        }
    )
    matches = pl.concat(
        [
            assignment.select(
                "feature_a",
                "feature_b",
                pl.lit(direction).alias("direction"),
                pl.lit(1, pl.Int32).alias("rank"),
                "corr",
                "cos",
                pl.lit(False).alias("is_mutual"),
            )
            for direction in ("a->b", "b->a")
        ]
    )
    umap = {
        f"umap_{side}.parquet": pl.DataFrame(
            {
                "feature": np.arange(n_features, dtype=np.int32),
                "x": rng.standard_normal(n_features).astype(np.float32),
                "y": rng.standard_normal(n_features).astype(np.float32),
            }
        )
        for side in ("a", "b")
    }
    add_parts(out, frames={"assignment.parquet": assignment, "matches.parquet": matches, **umap})
    build_dashboards(out, DashboardSettings(threads=1))
    return out
