"""Page render times of the app on a bundle: first render (cold caches) vs later renders (warm).

Every page is run headless with ``streamlit.testing.v1.AppTest`` on the bundle, with a
feature and its partner selected (the state a user carries between pages). "cold" clears the
Streamlit caches first, so it includes reading the bundle's parquet files; "warm" is the
median of ``--repeats`` later renders in the same process, which is what a user feels when
moving between pages. Prints seconds per page and the ratio cold / warm. The issue's target
is a warm render under 1 s per page on a 16K x 16K bundle.

    python benchmarks/app_pages.py [BUNDLE] [--repeats 3]
    python benchmarks/app_pages.py --synthetic 16384 [--units 20000]

BUNDLE defaults to the demo bundle (``core.demo.demo_bundle_path()``). ``--synthetic N`` first
writes a bundle with N random TopK features per side (random decoders, assignment, matches
and UMAP coordinates; real dashboards from ``build_dashboards``) to measure the pages at scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import polars as pl  # noqa: E402
import streamlit as st  # noqa: E402
from streamlit.testing.v1 import AppTest  # noqa: E402

from components.state import AppState  # noqa: E402
from core.bundle.reader import open_bundle  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "app.py")
# Discover is left out: its cost is running two models on a text, not rendering
PAGES = ("overview", "pair_explorer", "correlation", "heatmaps", "feature", "export")


def _state(bundle: Path) -> AppState:
    opened = open_bundle(bundle)
    fa, fb = 0, 0
    if opened.has("assignment"):
        kept = opened.assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
        if kept.height:
            fa, fb = int(kept["feature_a"][0]), int(kept["feature_b"][0])
    return AppState(bundle_path=str(bundle), side="a", feature=fa, partner=fb, selection={"a": (fa,), "b": ()})


def build_synthetic(out: Path, n_features: int, n_units: int, k: int = 32, d_in: int = 256, seed: int = 0) -> Path:
    """A bundle of random TopK codes with every part the pages read (matching parts are random too)."""
    import numpy as np

    from core.bundle.codes import SparseCodes
    from core.bundle.writer import BundleWriter, add_parts, prepare_output_dir
    from core.dashboards.settings import DashboardSettings
    from core.dashboards.stage import build_dashboards

    rng = np.random.default_rng(seed)
    prepare_output_dir(out, overwrite=True)
    writer = BundleWriter(out)
    words = np.array("the cat sat on a mat while seven dogs barked loudly at night and time flies".split())
    doc_len = 100
    texts = words[rng.integers(0, words.size, n_units)]
    writer.write_units(
        pl.DataFrame(
            {
                "unit": np.arange(n_units),
                "doc": np.arange(n_units) // doc_len,
                "pos": np.arange(n_units) % doc_len,
                "text": texts,
                "char_start": np.zeros(n_units, np.int64),
                "char_end": np.zeros(n_units, np.int64),
            }
        )
    )
    writer.write_docs(
        pl.DataFrame({"doc": np.arange(n_units // doc_len + 1), "text": ["..."] * (n_units // doc_len + 1)})
    )
    sides = {}
    for side in ("a", "b"):
        # features fire with Zipf-like popularity, as real SAE features do
        popularity = 1.0 / np.arange(1, n_features + 1) ** 0.7
        popularity /= popularity.sum()
        idx = np.stack([rng.choice(n_features, k, replace=False, p=popularity) for _ in range(n_units)])
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
                "x": rng.standard_normal(n_features),
                "y": rng.standard_normal(n_features),
            }
        )
        for side in ("a", "b")
    }
    add_parts(out, frames={"assignment.parquet": assignment, "matches.parquet": matches, **umap})
    build_dashboards(out, DashboardSettings(threads=1))
    return out


def render(bundle: Path, page: str) -> float:
    """Seconds to run one page (the Home run that routes there is not counted)."""
    at = AppTest.from_file(APP, default_timeout=600)
    at.session_state["featurebridge_state"] = _state(bundle)
    at.run()
    at.switch_page(f"pages/{page}.py")
    t0 = time.perf_counter()
    at.run()
    seconds = time.perf_counter() - t0
    if at.exception:
        raise RuntimeError(f"{page}: {at.exception[0].value}")
    return seconds


def main() -> None:
    """Print cold and warm render seconds per page."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", nargs="?", default=None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--synthetic", type=int, default=0, help="first write a synthetic bundle with this many features"
    )
    parser.add_argument("--units", type=int, default=20_000, help="units of the synthetic bundle")
    args = parser.parse_args()
    if args.synthetic:
        import tempfile

        t0 = time.perf_counter()
        out = Path(args.bundle or tempfile.mkdtemp(prefix="fb-synthetic-")) / "bundle"
        args.bundle = str(build_synthetic(out, args.synthetic, args.units))
        print(
            f"synthetic bundle {args.synthetic} x {args.synthetic} features written in {time.perf_counter() - t0:.1f} s"
        )
    if args.bundle is None:
        from core.demo.spine import demo_bundle_path

        args.bundle = str(demo_bundle_path())
    bundle = Path(args.bundle)
    parts = open_bundle(bundle).parts
    print(f"bundle {bundle}  parts: {', '.join(p for p, ok in parts.items() if ok)}")
    print(f"{'page':<14}{'cold s':>9}{'warm s':>9}{'cold/warm':>11}")
    for page in PAGES:
        st.cache_data.clear()
        st.cache_resource.clear()
        cold = render(bundle, page)
        warm = statistics.median(render(bundle, page) for _ in range(args.repeats))
        print(f"{page:<14}{cold:>9.3f}{warm:>9.3f}{cold / max(warm, 1e-9):>11.1f}")


if __name__ == "__main__":
    main()
