"""Deep links: the URL's bundle, side and feature open the same view; the state is written back to the URL."""

from __future__ import annotations

from pathlib import Path

from streamlit.testing.v1 import AppTest

from tests.pages.conftest import APP, TIMEOUT, no_exception


def test_query_params_open_the_bundle_and_feature(app_bundle: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"bundle": str(app_bundle), "side": "b", "feature": "4"})
    at.run()
    no_exception(at)
    state = at.session_state["featurebridge_state"]
    assert state.bundle_path == str(app_bundle) and (state.side, state.feature) == ("b", 4)
    at.switch_page("pages/feature.py")
    at.run()
    no_exception(at)
    assert at.number_input(key="fp-feature").value == 4 and at.radio(key="fp-side").value == "b"


def test_selected_feature_follows_across_pages(app_bundle: Path) -> None:
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"bundle": str(app_bundle)})
    at.run()
    at.switch_page("pages/feature.py")
    at.run()
    at.number_input(key="fp-feature").set_value(6).run()
    at.switch_page("pages/correlation.py")
    at.run()
    no_exception(at)
    assert at.number_input(key="corr-a").value == 6
    # (AppTest does not reflect the app's own query-param writes; tests/e2e checks the URL in a browser)


def test_a_feature_id_out_of_range_in_a_deep_link_is_a_sentence_on_every_page(app_bundle: Path) -> None:
    pages = ("overview", "pair_explorer", "correlation", "heatmaps", "feature", "discover", "export")
    for feature in ("99999", "-3"):
        for page in pages:
            at = AppTest.from_file(APP, default_timeout=TIMEOUT)
            at.query_params.update({"bundle": str(app_bundle), "side": "a", "feature": feature, "partner": "99999"})
            at.run()
            at.switch_page(f"pages/{page}.py")
            at.run()
            no_exception(at)
            if page in ("feature", "correlation"):
                assert any("does not exist" in str(e.value) for e in at.error), (page, feature)
