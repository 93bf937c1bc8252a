"""Static export speed: one kaleido browser reused (components.exports) vs a fresh one per figure (plotly's to_image).

Renders the figures a user exports after a session (both maps of a 2,048-feature demo-sized bundle
with a selection, a 60 x 60 correlation block, and the two maps again) as PNG at 300 dpi, first
through ``plotly.io.to_image`` (which starts and stops a browser for every figure, and loads
MathJax from a CDN it cannot reach offline), then through ``components.exports.export_static``
(one browser, started on the first figure, reused). Prints seconds per figure and the ratio.

    python benchmarks/export.py [--points 2048] [--repeats 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

from components import exports, figures  # noqa: E402


def build_figures(n: int, seed: int = 0) -> list:
    """Maps with rings (single and double column) and a 60 x 60 heatmap, each laid out for print."""
    rng = np.random.default_rng(seed)
    points = {
        side: pl.DataFrame(
            {
                "feature": np.arange(n, dtype=np.int32),
                "x": rng.standard_normal(n),
                "y": rng.standard_normal(n),
                "corr": rng.random(n),
                "category": rng.choice(["paired", "unpaired", "orphan"], n, p=[0.4, 0.5, 0.1]),
                "label": ["tok"] * n,
            }
        )
        for side in ("a", "b")
    }
    rings = {"a": [1, 2, 3], "b": [4, 5]}
    ids = rng.choice(16384, 60, replace=False)
    block = pl.DataFrame(
        {"feature_a": np.repeat(ids, 60), "feature_b": np.tile(ids, 60), "corr": rng.uniform(-1, 1, 3600)}
    )
    return [
        ("maps-double", figures.build_map_pair_figure(points, rings, {"a": "A", "b": "B"}, "double"), "double"),
        ("umap-a-single", figures.build_umap_figure(points["a"], "a", rings["a"], "A", "single"), "single"),
        (
            "block-single",
            figures.build_heatmap_export_figure(block, "feature_a", "feature_b", "corr", "r", "A", "B", "single"),
            "single",
        ),
    ]


def main() -> None:
    """Print seconds per figure for both routes and their ratio."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    figs = build_figures(args.points)
    print(f"load average {os.getloadavg()[0]:.1f}; {len(figs)} figures x {args.repeats} rounds, PNG at 300 dpi")
    fresh, reused, failed = [], [], 0
    for _ in range(args.repeats):
        for _name, fig, size in figs:
            styled = exports.paper_figure(fig, size)
            t0 = time.perf_counter()
            try:
                styled.to_image(format="png", width=styled.layout.width, height=styled.layout.height, scale=300 / 96)
            except Exception as exc:  # noqa: BLE001  (the baseline's failures are part of what is measured)
                failed += 1
                print(f"  plotly to_image failed after {time.perf_counter() - t0:.1f} s: {type(exc).__name__}")
            fresh.append(time.perf_counter() - t0)
    for _ in range(args.repeats):
        for _name, fig, size in figs:
            t0 = time.perf_counter()
            exports.export_static(fig, "png", size)
            reused.append(time.perf_counter() - t0)
    a, b = statistics.median(fresh), statistics.median(reused)
    print(f"{'route':<36}{'median s':>10}{'first s':>10}")
    print(f"{'plotly to_image (fresh browser)':<36}{a:>10.2f}{fresh[0]:>10.2f}")
    print(f"{'export_static (one browser reused)':<36}{b:>10.2f}{reused[0]:>10.2f}")
    print(f"ratio fresh / reused (median): {a / max(b, 1e-9):.1f}; fresh-browser failures: {failed} of {len(fresh)}")


if __name__ == "__main__":
    main()
