"""End to end in a real browser: `streamlit run` on 127.0.0.1, headless Debian Chromium over CDP.

Every page is opened by a deep link (page path + ``bundle``/``side``/``feature`` query) and must
finish its run without an exception element and with its key charts drawn. In the Pair explorer the
real mouse pointer over a point of map A must ring its partners in map B, and the reverse, with no
script run; a search term must ring its hits in both maps; a real click on a point of map A must
ring its partner in map B and reach Python (the pair panel). Screenshots are kept in
``$FEATUREBRIDGE_ARTIFACTS`` (default: the session's temp folder) as test artifacts.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import polars as pl
import pytest

from core.bundle.reader import open_bundle
from tests.e2e.app_driver import EXCEPTIONS, IDLE, MAPS_READY, PLOTS, isolated_kept_pair, open_page
from tests.e2e.browser import Browser, find_chromium, serve_app
from tests.pages.app_bundle import build_app_bundle

pytestmark = pytest.mark.skipif(
    find_chromium() is None, reason="Debian chromium is not installed (apt-get install chromium)"
)

ROOT = Path(__file__).resolve().parents[2]
# page url path -> plotly charts it must draw on the test bundle
# (Home is the default page: it lives at "/", not at "/home")
PAGES = {
    "": 0,
    "overview": 0,  # its charts sit in tabs after the first, which run only when chosen (the next test)
    "pairs": 2,
    "all-pairs": 0,
    "correlation": 2,
    "heatmaps": 1,
    "feature": 0,  # its small charts are inline HTML (components/widgets.py), not plotly
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
    with serve_app(ROOT, bundle.parent / "streamlit.log") as url:
        yield url


def _kept_pair(bundle: Path) -> tuple[int, int]:
    kept = open_bundle(bundle).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    return int(kept["feature_a"][0]), int(kept["feature_b"][0])


def _ringed(side: str, kind: str) -> str:
    """JS: the features one kind of ring marks on a map (``selection`` includes the partner rings)."""
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


def test_overview_runs_and_draws_a_tab_only_when_it_is_chosen(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    open_page(browser, f"{server}/overview?bundle={quote(str(bundle))}")
    assert browser.evaluate(PLOTS) == 0
    # textContent counts hidden elements too: a closed tab's content was not sent at all
    assert not browser.evaluate("document.body.textContent.includes('Orphans:')"), "the Matching tab was sent"
    tab = browser.evaluate(
        "(() => { const t = Array.from(document.querySelectorAll('[data-testid=stTab]'))"
        ".find(t => t.innerText.includes('Similarity')); if (!t) return null;"
        " const r = t.getBoundingClientRect(); return [r.left + r.width / 2, r.top + r.height / 2]; })()"
    )
    assert tab, "no Similarity tab"
    browser.click(*tab)
    browser.wait_for(f"{PLOTS} >= 1", 60)
    browser.wait_for("Array.from(document.querySelectorAll('.js-plotly-plot')).every(p => p._fullLayout)", 60)
    time.sleep(0.5)
    browser.wait_for(IDLE, 90)
    browser.screenshot(artifacts / "overview-similarity-tab.png")
    assert browser.evaluate(EXCEPTIONS) == 0
    # the similarity figure (observed beside its null) and nothing of the Matching tab
    names = browser.evaluate(
        "Array.from(document.querySelectorAll('.js-plotly-plot')).flatMap(p => p._fullData.map(t => t.name))"
    )
    assert "observed" in names and not any("best" in (n or "") for n in names), names


def test_hovering_a_point_rings_its_partners_in_the_other_map_both_ways(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = isolated_kept_pair(bundle)
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
    browser.move(5, 5)


def test_the_maps_and_plots_are_drawn_by_the_apps_own_plotly_build(browser: Browser, server: str, bundle: Path) -> None:
    from components.plotly_assets import APP_TRACES

    fa, fb = _kept_pair(bundle)
    # the Correlation page draws two figures with the plot component; the Pair explorer the maps
    for page, n_plots in (("correlation", 2), ("pairs", 2)):
        open_page(browser, f"{server}/{page}?bundle={quote(str(bundle))}&feature={fa}&partner={fb}", n_plots)
        loaded = browser.evaluate("Object.keys(window.__fbPlotly || {})")
        assert len(loaded) == 1 and "/plotly-app.min.js?v=" in loaded[0], loaded
        # the build registers exactly the trace types the app draws (plotly's core adds scatter)
        traces = browser.evaluate("Object.keys(window.Plotly.PlotSchema.get().traces).sort()")
        assert traces == sorted(APP_TRACES)
        assert browser.evaluate(EXCEPTIONS) == 0


def test_a_search_term_rings_its_hits_in_both_maps(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    browser.wait_for(MAPS_READY, 60)
    browser.evaluate(
        "(() => { const el = document.querySelector('.st-key-pe-search input');"
        " el.scrollIntoView({block: 'center'}); el.focus(); el.select(); return true; })()"
    )
    browser.type_text("3")  # and Enter: the search runs
    browser.wait_for(f"{_ringed('a', 'search')}.includes(3) && {_ringed('b', 'search')}.includes(3)", 60)
    browser.screenshot(artifacts / "pairs-search.png")
    assert browser.evaluate(EXCEPTIONS) == 0


def test_clicking_a_point_in_umap_a_lights_up_its_partner_in_umap_b(
    browser: Browser, server: str, bundle: Path, artifacts: Path
) -> None:
    fa, fb = isolated_kept_pair(bundle)
    open_page(browser, f"{server}/pairs?bundle={quote(str(bundle))}", 2)
    browser.wait_for(MAPS_READY, 60)
    browser.click(*_point(browser, "a", fa))
    # the partner is ringed in the browser at once, and the selection reaches Python: the pair panel shows it
    browser.wait_for(f"{_ringed('b', 'selection')}.includes({fb})", 10, interval=0.05)
    browser.wait_for(f"document.body.innerText.includes('A{fa} ↔ B{fb}')", 60)
    browser.wait_for(IDLE, 60)
    browser.screenshot(artifacts / "pairs-linked-selection.png")
    assert browser.evaluate(EXCEPTIONS) == 0
    # after the rerun the view Python sent keeps both rings (the click hit only the one point)
    assert browser.evaluate(_ringed("a", "selection")) == [fa]
    assert fb in browser.evaluate(_ringed("b", "selection"))
    assert browser.evaluate("document.body.innerText.includes('Open the pair dashboard')")


def test_the_html_export_keeps_the_hover_linking_offline(
    browser: Browser, bundle: Path, artifacts: Path, tmp_path: Path
) -> None:
    from components import data
    from components.linked_maps import build_linked_maps_html, compute_maps_payload, compute_view, encode_maps_payload

    fa, fb = isolated_kept_pair(bundle)
    opened = open_bundle(bundle)
    points = {side: data.umap_points(opened, side) for side in ("a", "b")}
    payload = compute_maps_payload(points, data.pair_frame(opened), {"a": "A", "b": "B"})
    page = tmp_path / "linked-maps.html"
    page.write_text(build_linked_maps_html(encode_maps_payload(payload), compute_view({}, None), "maps"))
    browser.navigate(page.as_uri())
    browser.wait_for(MAPS_READY, 60)
    # the three point traces of the static map, every point drawn once
    counts = browser.evaluate(
        "Array.from(document.querySelectorAll('.fb-map')).map(gd => gd._fullData.map(t => [t.name, t.x.length]))"
    )
    for side, traces in zip(("a", "b"), counts, strict=True):
        assert [name for name, _ in traces] == ["orphans", "unpaired", "matched"]
        assert sum(n for _, n in traces) == points[side].height
    browser.move(*_point(browser, "a", fa))
    browser.wait_for(f"{_ringed('b', 'hover')}.includes({fb})", 10, interval=0.05)
    browser.screenshot(artifacts / "export-linked-maps.png")
    browser.move(5, 5)


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
    for page, n_plots in (("feature", 0), ("correlation", 2)):
        open_page(browser, f"{server}/{page}?{query}", n_plots)
        browser.screenshot(artifacts / f"evidence-{page}.png")
        assert browser.evaluate(EXCEPTIONS) == 0
        for label in ("k (co-firing)", "expected mu", "k / mu", "-log10 p", "combined score", "Shared top tokens"):
            # the evidence block may still be arriving when the script reports idle on a busy machine
            browser.wait_for(f"document.body.innerText.includes({json.dumps(label)})", 30)
        text = browser.evaluate("document.body.innerText")
        assert f"{row['note']} match" in text and f"{row['combined_score']:.3f}" in text, page
    open_page(browser, f"{server}/feature?{query}", 0)
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
