"""Overview page: sides, matching summary, similarity beside nulls; clear messages for absent parts."""

from __future__ import annotations

from pathlib import Path

from tests.pages.conftest import charts, no_exception, open_app, texts


def test_overview_shows_sides_matching_and_similarity(app_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(app_bundle))
    no_exception(at)
    assert at.title[0].value == "Overview"
    labels = [m.label for m in at.metric]
    assert "shared units" in labels and "alive A" in labels and "kept after filters" in labels
    names = {t.get("name") for fig in charts(at) for t in fig["data"]}
    assert {"observed", "null mean ± 2 sd"} <= names  # similarity beside its null
    assert any("best" in (t.get("name") or "") for fig in charts(at) for t in fig["data"])  # correlation histogram
    assert any("svcca_paper" in c for c in texts(at, "caption"))
    assert len(at.dataframe) >= 4  # hook sanity x2, methods, reasons, similarity


def test_overview_degrades_without_optional_parts(spine_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(spine_bundle))
    no_exception(at)
    warnings = texts(at, "warning")
    assert any("**matches**" in w and "not computed yet" in w for w in warnings)
    assert any("**similarity**" in w for w in warnings)
    assert any("python -m core match" in c.value for c in at.code)


def test_overview_without_a_bundle_points_home() -> None:
    at = open_app("overview")
    no_exception(at)
    assert any("Home page" in i for i in texts(at, "info"))


def test_overview_with_a_vanished_bundle_is_a_clear_error(tmp_path: Path) -> None:
    at = open_app("overview", bundle_path=str(tmp_path / "gone"))
    no_exception(at)
    assert any("does not exist" in e for e in texts(at, "error"))


def test_alignment_figures_show_for_span_bundles() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        from components.widgets import render_alignment

        render_alignment(
            {
                "pooling": "max",
                "n_units": 1234,
                "share_tokens_used_a": 1.0,
                "share_tokens_used_b": 0.9996,
                "share_one_to_one": 0.885,
            }
        )
        render_alignment(None)

    at = AppTest.from_function(page).run(timeout=60)
    assert not at.exception
    values = {m.label: m.value for m in at.metric}
    assert values == {
        "aligned units": "1,234",
        "A tokens used": "100.0%",
        "B tokens used": "100.0%",
        "1:1 units": "88.5%",
    }
