"""Page render times of the app on a bundle: first render (cold caches) vs later renders (warm).

Every page is run headless with ``streamlit.testing.v1.AppTest`` on the bundle, with a
feature and its partner selected (the state a user carries between pages). "cold" clears the
Streamlit caches first, so it includes reading the bundle's parquet files; "warm" is the
median of ``--repeats`` later renders in the same process, which is what a user feels when
moving between pages. Prints seconds per page and the ratio cold / warm. The issue's target
is a warm render under 1 s per page on a 16K x 16K bundle.

    python benchmarks/app_pages.py [BUNDLE] [--repeats 3]

BUNDLE defaults to the demo bundle (``core.demo.demo_bundle_path()``).
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
from core.bundle import open_bundle  # noqa: E402

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
    args = parser.parse_args()
    if args.bundle is None:
        from core.demo import demo_bundle_path

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
