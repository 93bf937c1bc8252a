"""What both browser test modules need to drive the app: its page states as JavaScript, waiting for a page to
settle, and the kept pair whose map points stand apart (so a pointer at it hits nothing else)."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import polars as pl
from scipy.spatial import cKDTree

from core.bundle.reader import open_bundle
from tests.e2e.browser import Browser

IDLE = (
    "!!(document.querySelector(\"[data-testid='stApp'][data-test-script-state='notRunning']\")"
    " && document.querySelector('h1'))"
)
RUNNING = "!!document.querySelector(\"[data-testid='stApp'][data-test-script-state='running']\")"
EXCEPTIONS = "document.querySelectorAll(\"[data-testid='stException']\").length"
PLOTS = "document.querySelectorAll('.js-plotly-plot').length"
MAPS_READY = "!!(window.featureBridgeMaps && window.featureBridgeMaps.ready())"


def settle(b: Browser, quiet: float = 1.5, timeout: float = 60.0) -> None:
    """Wait until the app stays idle for ``quiet`` seconds in a row (no rerun loop).

    Args:
        b: the browser tab.
        quiet: seconds of idle in a row that count as settled.
        timeout: seconds before giving up.
    """
    deadline = time.monotonic() + timeout
    calm_since = None
    while time.monotonic() < deadline:
        if b.evaluate(IDLE) and not b.evaluate(RUNNING):
            calm_since = calm_since or time.monotonic()
            if time.monotonic() - calm_since >= quiet:
                return
        else:
            calm_since = None
        time.sleep(0.2)
    raise TimeoutError(f"the app did not settle within {timeout} s (it keeps rerunning)")


def open_page(b: Browser, url: str, n_plots: int = 0) -> None:
    """Navigate and wait until the script has finished, ``n_plots`` charts are drawn and the app has settled.

    Args:
        b: the browser tab.
        url: the page's address.
        n_plots: plotly charts to wait for.
    """
    b.navigate(url)
    time.sleep(0.5)
    b.wait_for(IDLE, 120)
    if n_plots:
        b.wait_for(f"{PLOTS} >= {n_plots}", 60)
    settle(b)


def isolated_kept_pair(bundle: Path) -> tuple[int, int]:
    """The kept pair whose two points lie farthest from any other point of their maps.

    Args:
        bundle: the bundle folder.

    Returns:
        (feature A, feature B) of that pair.
    """
    opened = open_bundle(bundle)
    kept = opened.assignment().filter(pl.col("kept")).collect()
    gaps = {}
    for side in ("a", "b"):
        umap = opened.umap(side).sort("feature").collect()
        xy = np.stack([umap["x"].to_numpy(), umap["y"].to_numpy()], axis=1).astype(np.float64)
        xy /= np.maximum(xy.max(axis=0) - xy.min(axis=0), 1e-9)  # each axis spans the plot: compare in its units
        # each point's distance to its nearest other point (a k-d tree: a dense matrix of 16K maps is 2 GB)
        gaps[side] = cKDTree(xy).query(xy, k=2)[0][:, 1]
    best = max(
        range(kept.height),
        key=lambda i: min(gaps["a"][int(kept["feature_a"][i])], gaps["b"][int(kept["feature_b"][i])]),
    )
    return int(kept["feature_a"][best]), int(kept["feature_b"][best])
