"""End to end in a real browser: `streamlit run` on 127.0.0.1, headless Debian Chromium over CDP.

Every page is opened by a deep link (page path + ``bundle``/``side``/``feature`` query) and must
finish its run without an exception element and with its key charts drawn. In the Pair explorer the
real mouse pointer over a point of map A must ring its partners in map B, and the reverse; a search
term must ring its hits in both maps; a click must select (rings at once, then the page's pair table);
and the exported HTML of the linked maps must keep the hover linking, offline. Screenshots are kept in
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
    "correlation": 2,
    "heatmaps": 1,
    "feature": 0,  # its small charts are inline HTML
    "discover": 0,
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
            "-m",
            "streamlit",
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
        # the first session after start-up runs before st.navigation has registered the pages
        # (Streamlit then shows "Page not found" once): open Home first so deep links resolve
        open_page(b, f"{server}/")
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
    """The kept pair whose points lie farthest from any other point of their maps (so the pointer hits only them)."""
    opened = open_bundle(bundle)
    kept = opened.assignment().filter(pl.col("kept")).collect()
    gaps = {}
    for side in ("a", "b"):
        umap = opened.umap(side).sort("feature").collect()
        xy = np.stack([umap["x"].to_numpy(), umap["y"].to_numpy()], axis=1).astype(np.float64)
        xy /= np.maximum(xy.max(axis=0) - xy.min(axis=0), 1e-9)  # each axis spans the plot: compare in its units
        dist = np.linalg.norm(xy[:, None, :] - xy[None, :, :], axis=2)
        np.fill_diagonal(dist, np.inf)
        gaps[side] = dist.min(axis=1)
    best = max(
        range(kept.height),
        key=lambda i: min(gaps["a"][int(kept["feature_a"][i])], gaps["b"][int(kept["feature_b"][i])]),
    )
    return int(kept["feature_a"][best]), int(kept["feature_b"][best])


MAPS_READY = "!!(window.featureBridgeMaps && window.featureBridgeMaps.ready())"


def _ringed(side: str, kind: str) -> str:
    return f"window.featureBridgeMaps.ringed('{side}', '{kind}')"


def _point(b: Browser, side: str, feature: int) -> list[float]:
    position = b.evaluate(f"window.featureBridgeMaps.pointPosition('{side}', {feature}, true)")
    assert position, f"feature {side.upper()}{feature} is not on map {side.upper()}"
    return position


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


def test_hovering_a_point_rings_its_partners_in_the_other_map_both_ways(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = _isolated_kept_pair(bundle)
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    browser.wait_for(MAPS_READY, 60)
    browser.move(*_point(browser, "a", fa))
    browser.wait_for(f"{_ringed('b', 'hover')}.includes({fb})", 10, interval=0.05)
    assert fa in browser.evaluate(_ringed("a", "hover"))
    browser.screenshot(artifacts / "pairs-hover-a.png")
    # the pointer leaves: the rings go
    browser.move(5, 5)
    browser.wait_for(f"{_ringed('b', 'hover')}.length === 0", 10, interval=0.05)
    # and the reverse: a point of B rings its partner in A
    browser.move(*_point(browser, "b", fb))
    browser.wait_for(f"{_ringed('a', 'hover')}.includes({fa})", 10, interval=0.05)
    browser.screenshot(artifacts / "pairs-hover-b.png")
    assert browser.evaluate(EXCEPTIONS) == 0
    # hover feedback happened in the page, with no script run in between
    assert (
        browser.evaluate("document.querySelector(\"[data-testid='stApp']\").getAttribute('data-test-script-state')")
        == "notRunning"
    )


def test_a_search_term_rings_its_hits_in_both_maps(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    browser.wait_for(MAPS_READY, 60)
    browser.evaluate(
        "(() => { const el = Array.from(document.querySelectorAll('input')).find(i => "
        "(i.getAttribute('aria-label') || '').startsWith('Search')); el.focus(); return true; })()"
    )
    browser.type_text("3")
    browser.wait_for(f"{_ringed('a', 'search')}.includes(3) && {_ringed('b', 'search')}.includes(3)", 60)
    browser.screenshot(artifacts / "pairs-search.png")
    assert browser.evaluate(EXCEPTIONS) == 0


def test_clicking_a_point_selects_it_and_the_page_follows(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = _isolated_kept_pair(bundle)
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    browser.wait_for(MAPS_READY, 60)
    browser.click(*_point(browser, "a", fa))
    # the partner is ringed in the browser at once, and the selection reaches Python: the pair table lists it
    browser.wait_for(f"{_ringed('b', 'selection')}.includes({fb})", 10, interval=0.05)
    browser.wait_for(f"document.body.innerText.includes('Open feature A{fa}')", 60)
    browser.wait_for(IDLE, 60)
    browser.screenshot(artifacts / "pairs-linked-selection.png")
    assert fa in browser.evaluate(_ringed("a", "selection"))
    assert browser.evaluate(EXCEPTIONS) == 0


def test_the_html_export_keeps_the_hover_linking_offline(
    browser: Browser, bundle: Path, artifacts: Path, tmp_path: Path
) -> None:
    from components import data
    from components.linked_maps import build_linked_maps_html, compute_maps_payload, compute_view, encode_maps_payload

    fa, fb = _isolated_kept_pair(bundle)
    opened = open_bundle(bundle)
    points = {side: data.umap_points(opened, side) for side in ("a", "b")}
    payload = compute_maps_payload(points, data.pair_frame(opened), {"a": "A", "b": "B"})
    page = tmp_path / "linked-maps.html"
    page.write_text(build_linked_maps_html(encode_maps_payload(payload), compute_view({}, None), "maps"))
    browser.navigate(page.as_uri())
    browser.wait_for(MAPS_READY, 60)
    browser.move(*_point(browser, "a", fa))
    browser.wait_for(f"{_ringed('b', 'hover')}.includes({fb})", 10, interval=0.05)
    browser.screenshot(artifacts / "export-linked-maps.png")


def test_clicking_a_pair_in_the_global_scatter_opens_it(browser: Browser, server: str, bundle: Path) -> None:
    open_page(browser, f"{server}/correlation?bundle={quote(str(bundle))}", 2)
    browser.wait_for("document.querySelectorAll('[data-fb-plot-ready]').length >= 2", 60)
    # the kept trace's first point, where it sits on the page
    target = browser.evaluate(
        """(() => {
        const gd = Array.from(document.querySelectorAll('.fb-plot')).find(g => g._fullData &&
            g._fullData.some(t => t.name === 'kept'));
        gd.scrollIntoView({block: 'center'});
        const t = gd._fullData.find(t => t.name === 'kept');
        const xa = gd._fullLayout.xaxis, ya = gd._fullLayout.yaxis, r = gd.getBoundingClientRect();
        const c = Array.from(t.customdata[0]).map(Number);
        return [r.left + xa._offset + xa.c2p(t.x[0]), r.top + ya._offset + ya.c2p(t.y[0]), c[0], c[1]];
    })()"""
    )
    x, y, fa, fb = target
    browser.move(x, y)
    time.sleep(0.3)
    browser.click(x, y)
    browser.wait_for(f"document.body.innerText.includes('A{fa} vs B{fb}: activation per unit')", 60)
    browser.wait_for(IDLE, 60)
    assert browser.evaluate(EXCEPTIONS) == 0
