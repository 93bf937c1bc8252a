"""Discover page: a text ranks both sides' features through the bundle's own models and SAEs."""

from __future__ import annotations

from pathlib import Path

from tests.pages.conftest import no_exception, open_app, texts


def test_discover_ranks_features_of_both_sides(app_bundle: Path) -> None:
    at = open_app("discover", bundle_path=str(app_bundle))
    at.text_area(key="disc-text").set_value("the cat sat on a mat while seven dogs barked")
    at.number_input(key="disc-coverage").set_value(0.0)
    at.button(key="disc-go").click().run()
    no_exception(at)
    headers = [s.value for s in at.subheader]
    assert any(h.startswith("Side A") for h in headers) and any(h.startswith("Side B") for h in headers)
    assert len(at.dataframe[0].value) > 0


def test_empty_text_is_a_clear_message(app_bundle: Path) -> None:
    at = open_app("discover", bundle_path=str(app_bundle))
    at.button(key="disc-go").click().run()
    no_exception(at)
    assert any("empty" in e for e in texts(at, "error"))


def test_without_dashboards_discover_says_how_to_add_them(spine_bundle: Path) -> None:
    at = open_app("discover", bundle_path=str(spine_bundle))
    no_exception(at)
    assert any("**dashboards**" in w for w in texts(at, "warning"))
