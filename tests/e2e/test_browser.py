"""End to end in a real browser: `streamlit run` on 127.0.0.1, headless Debian Chromium over CDP.

Every page is opened by a deep link (page path + ``bundle``/``side``/``feature`` query) and must
finish its run without an exception element and with its key charts drawn; in the Pair explorer a
real mouse click on a point of UMAP A must light up its partner in UMAP B. Screenshots are kept in
``$FEATUREBRIDGE_ARTIFACTS`` (default: the session's temp folder) as test artifacts.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import numpy as np
import polars as pl
import pytest

from core.bundle.reader import open_bundle
from tests.e2e.browser import Browser, find_chromium, free_port, wait_for_http
from tests.pages.app_bundle import build_app_bundle

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="Debian chromium is not installed (apt-get install chromium)"
)

ROOT = Path(__file__).resolve().parents[2]
IDLE = (
    "!!(document.querySelector(\"[data-testid='stApp'][data-test-script-state='notRunning']\")"
    " && document.querySelector('h1'))"
)
EXCEPTIONS = "document.querySelectorAll(\"[data-testid='stException']\").length"
PLOTS = "document.querySelectorAll('.js-plotly-plot').length"
# page url path -> plotly charts it must draw on the test bundle
# (Home is the default page: it lives at "/", not at "/home")
PAGES = {
    "": 0,
    "overview": 0,  # its charts sit in tabs after the first; checked separately below
    "pairs": 2,
    "all-pairs": 0,
    "correlation": 2,
    "heatmaps": 1,
    "feature": 2,
    "discover": 0,
    "diffing": 0,  # an SAE bundle: the page explains what it needs and offers the causal check
    "export": 1,
}


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_app_bundle(tmp_path_factory.getbasetemp() / "app-bundle")


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = Path(os.environ.get("FEATUREBRIDGE_ARTIFACTS") or tmp_path_factory.mktemp("e2e-artifacts"))
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@pytest.fixture(scope="module")
def server(bundle: Path) -> Iterator[str]:
    port = free_port()
    log = open(bundle.parent / "streamlit.log", "w")  # noqa: SIM115  (closed below, after the server)
    process = subprocess.Popen(
        [
            sys.executable,
            "components/launch.py",  # every session, the first included, through app.py's router
            "run",
            "app.py",
            "--server.address",
            "127.0.0.1",
            "--server.port",
            str(port),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
        ],
        cwd=ROOT,
        stdout=log,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"},
    )
    try:
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", 90, "ok")
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
        log.close()


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    chromium = find_chromium()
    assert chromium is not None
    b = Browser(chromium)
    try:
        yield b
    finally:
        b.close()


def open_page(b: Browser, url: str, n_plots: int = 0) -> None:
    """Navigate and wait until the script has finished and ``n_plots`` charts are drawn."""
    b.navigate(url)
    time.sleep(0.5)
    b.wait_for(IDLE, 90)
    if n_plots:
        b.wait_for(f"{PLOTS} >= {n_plots}", 60)
    time.sleep(0.5)
    b.wait_for(IDLE, 90)


def _kept_pair(bundle: Path) -> tuple[int, int]:
    kept = open_bundle(bundle).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    return int(kept["feature_a"][0]), int(kept["feature_b"][0])


def _isolated_kept_pair(bundle: Path) -> tuple[int, int]:
    """The kept pair whose A point lies farthest from any other point of UMAP A (so a click hits only it)."""
    opened = open_bundle(bundle)
    kept = opened.assignment().filter(pl.col("kept")).collect()
    umap = opened.umap("a").sort("feature").collect()
    xy = np.stack([umap["x"].to_numpy(), umap["y"].to_numpy()], axis=1).astype(np.float64)
    dist = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2)
    np.fill_diagonal(dist, np.inf)
    gap = dist.min(axis=1)
    best = max(range(kept.height), key=lambda i: gap[int(kept["feature_a"][i])])
    return int(kept["feature_a"][best]), int(kept["feature_b"][best])


def test_every_page_opens_by_deep_link_without_exceptions(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = _kept_pair(bundle)
    query = f"bundle={quote(str(bundle))}&side=a&feature={fa}&partner={fb}"
    for page, n_plots in PAGES.items():
        open_page(browser, f"{server}/{page}?{query}", n_plots)
        browser.screenshot(artifacts / f"page-{page or 'home'}.png")
        name = page or "home"
        assert browser.evaluate(EXCEPTIONS) == 0, f"{name} shows an exception"
        assert browser.evaluate(PLOTS) >= n_plots, f"{name} lacks its charts"
        assert browser.evaluate("document.querySelector('[role=dialog]') === null"), f"{name}: unexpected dialog"
        # the URL keeps naming the view after the run (the deep link survives)
        href = browser.evaluate("location.href")
        assert f"/{page}" in href and f"feature={fa}" in href, href


def test_clicking_a_point_in_umap_a_lights_up_its_partner_in_umap_b(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = _isolated_kept_pair(bundle)
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    position = browser.evaluate(
        f"""(() => {{
        const gd = document.querySelectorAll('.js-plotly-plot')[0];
        gd.scrollIntoView({{block: 'center'}});
        const t = gd._fullData.findIndex(tr => tr.name === 'matched');
        const idx = Array.from(gd._fullData[t].customdata).findIndex(c => Number(c[0]) === {fa});
        const pt = gd.calcdata[t][idx];
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        return [r.left + xa._offset + xa.c2p(pt.x), r.top + ya._offset + ya.c2p(pt.y)];
    }})()"""
    )
    assert position, f"feature A{fa} is not among UMAP A's matched points"
    browser.click(*position)
    highlighted = (
        "(() => { const gd = document.querySelectorAll('.js-plotly-plot')[1]; if (!gd || !gd._fullData) return [];"
        " const tr = gd._fullData.find(t => t.name === 'highlight');"
        " return tr && tr.customdata ? Array.from(tr.customdata).map(c => Number(c[0])) : []; })()"
    )
    browser.wait_for(f"{highlighted}.includes({fb})", 60)
    browser.wait_for(IDLE, 60)
    browser.screenshot(artifacts / "pairs-linked-selection.png")
    assert browser.evaluate(EXCEPTIONS) == 0
    # the pair table lists the clicked feature, and nothing else was hit by the click
    selected = (
        "(() => { const gd = document.querySelectorAll('.js-plotly-plot')[0];"
        " const tr = gd._fullData.find(t => t.name === 'highlight');"
        " return tr && tr.customdata ? Array.from(tr.customdata).map(c => Number(c[0])) : []; })()"
    )
    assert fa in browser.evaluate(selected)
    # the one clicked feature gets its pair panel under the maps, with the link to the pair dashboard
    assert browser.evaluate(f"document.body.innerText.includes('A{fa} ↔ B{fb}')")
    assert browser.evaluate("document.body.innerText.includes('Open the pair dashboard')")


def test_the_pair_evidence_is_on_the_feature_and_correlation_pages(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = _kept_pair(bundle)
    row = (
        open_bundle(bundle)
        .assignment()
        .filter((pl.col("feature_a") == fa) & (pl.col("feature_b") == fb))
        .collect()
        .row(0, named=True)
    )
    query = f"bundle={quote(str(bundle))}&side=a&feature={fa}&partner={fb}"
    for page, n_plots in (("feature", 2), ("correlation", 2)):
        open_page(browser, f"{server}/{page}?{query}", n_plots)
        browser.screenshot(artifacts / f"evidence-{page}.png")
        assert browser.evaluate(EXCEPTIONS) == 0
        text = browser.evaluate("document.body.innerText")
        for label in ("k (co-firing)", "expected mu", "k / mu", "-log10 p", "combined score", "Shared top tokens"):
            assert label in text, (page, label)
        assert f"{row['note']} match" in text and f"{row['combined_score']:.3f}" in text, page
    open_page(browser, f"{server}/feature?{query}", 2)
    assert "Split group" in browser.evaluate("document.body.innerText")


def test_model_diffing_page_draws_every_figure_for_a_crosscoder(
    browser: Browser, server: str, tmp_path_factory: pytest.TempPathFactory, artifacts: Path
) -> None:
    from tests.pages.app_bundle import build_crosscoder_app_bundle

    bundle = build_crosscoder_app_bundle(tmp_path_factory.getbasetemp() / "app-crosscoder")
    # Delta-norm histogram, shared cosine histogram, cosine vs Delta-norm, Latent Scaling, causal vs cosine
    open_page(browser, f"{server}/diffing?bundle={quote(str(bundle))}", 5)
    browser.screenshot(artifacts / "page-diffing-crosscoder.png")
    assert browser.evaluate(EXCEPTIONS) == 0, "the Model diffing page shows an exception"
    assert browser.evaluate(PLOTS) >= 5
