"""Feature page: one feature's dashboard next to its partner; bad ids and absent dashboards."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.bundle.reader import open_bundle
from tests.pages.conftest import charts, no_exception, open_app, texts


def test_dashboard_and_partner_side_by_side(app_bundle: Path) -> None:
    kept = open_bundle(app_bundle).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    fa, fb = int(kept["feature_a"][0]), int(kept["feature_b"][0])
    at = open_app("feature", bundle_path=str(app_bundle), side="a", feature=fa)
    no_exception(at)
    headers = [s.value for s in at.subheader]
    assert f"A{fa}" in headers and f"B{fb}" in headers
    # the small charts are inline HTML (no plotly mount per chart)
    html = " ".join(str(h.proto.body) for h in at.get("html"))
    assert f"A{fa}: non-zero activations" in html and f"B{fb}: non-zero activations" in html
    assert "Top tokens (count)" in html and "<rect" in html
    assert not charts(at)
    assert at.session_state["featurebridge_state"].partner == fb


def test_picking_another_feature_moves_the_selection(app_bundle: Path) -> None:
    at = open_app("feature", bundle_path=str(app_bundle), side="a", feature=0)
    at.radio(key="fp-side").set_value("b").run()
    at.number_input(key="fp-feature").set_value(4).run()
    no_exception(at)
    state = at.session_state["featurebridge_state"]
    assert (state.side, state.feature) == ("b", 4)


def test_unknown_feature_id_is_a_clear_message(app_bundle: Path) -> None:
    at = open_app("feature", bundle_path=str(app_bundle), side="a", feature=10_000)
    no_exception(at)
    assert any("does not exist" in e for e in texts(at, "error"))


def test_without_dashboards_the_page_says_how_to_add_them(spine_bundle: Path) -> None:
    at = open_app("feature", bundle_path=str(spine_bundle), side="a", feature=1)
    no_exception(at)
    assert any("**dashboards**" in w for w in texts(at, "warning"))
