"""Overview page: sides, matching summary, similarity beside nulls; clear messages for absent parts."""

from __future__ import annotations

from pathlib import Path

from core.bundle.reader import open_bundle
from tests.pages.conftest import OVERVIEW_TAB, charts, no_exception, open_app, plots, show_tab, texts


def test_overview_shows_sides_matching_and_similarity(app_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(app_bundle))
    no_exception(at)
    assert at.title[0].value == "Overview"
    # only the open tab runs: the first, the sides, with no figure
    labels = [m.label for m in at.metric]
    assert {"shared units", "d_in", "alive"} <= set(labels) and "kept after filters" not in labels
    assert not plots(at) and not charts(at)
    assert len(at.dataframe) == 2  # hook sanity x2
    show_tab(at, OVERVIEW_TAB, "Matching")
    labels = [m.label for m in at.metric]
    assert {"alive A", "kept after filters"} <= set(labels) and "d_in" not in labels
    # every figure is drawn by the plot component, none by st.plotly_chart
    assert any("best" in (t.get("name") or "") for fig in plots(at) for t in fig["data"])  # correlation histogram
    assert not charts(at)
    assert len(at.dataframe) >= 2  # methods, reasons
    show_tab(at, OVERVIEW_TAB, "Similarity")
    names = {t.get("name") for fig in plots(at) for t in fig["data"]}
    assert {"observed", "null mean ± 2 sd"} <= names  # similarity beside its null
    assert not any("best" in (t.get("name") or "") for fig in plots(at) for t in fig["data"])
    assert any("svcca_paper" in c for c in texts(at, "caption"))
    assert not charts(at)


def test_overview_degrades_without_optional_parts(spine_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(spine_bundle))
    no_exception(at)
    show_tab(at, OVERVIEW_TAB, "Matching")
    assert any("**matches**" in w and "not computed yet" in w for w in texts(at, "warning"))
    assert any("python -m core match" in c.value for c in at.code)
    for tab in ("Similarity", "Concept subspaces"):
        show_tab(at, OVERVIEW_TAB, tab)
        assert any("**similarity**" in w for w in texts(at, "warning")), tab


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


def test_overview_shows_concepts_the_p_floor_and_the_rematch_form(app_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(app_bundle))
    no_exception(at)
    show_tab(at, OVERVIEW_TAB, "Concept subspaces")
    assert any("concepts (" in c for c in texts(at, "caption"))
    show_tab(at, OVERVIEW_TAB, "Matching")
    # the form opens on the method the bundle was matched with
    assert at.selectbox(key="rm-method").value == open_bundle(app_bundle).manifest["matching"]["settings"]["method"]
    assert any("Orphans:" in c for c in texts(at, "caption"))


def test_a_rerun_of_matching_elsewhere_marks_similarity_and_umap_stale(app_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from core.matching.settings import MatchSettings
    from core.matching.stage import build_matching

    copy = Path(shutil.copytree(app_bundle, tmp_path / "bundle"))
    build_matching(copy, MatchSettings(method="mutual"), device="cpu")
    at = open_app("overview", bundle_path=str(copy))
    no_exception(at)
    warnings = texts(at, "warning")
    assert any("**Stale similarity**" in w for w in warnings) and any("**Stale umap**" in w for w in warnings)
    assert any(c.value == f"python -m core similarity {copy}" for c in at.code)
    at.switch_page("pages/pair_explorer.py")
    at.run()
    assert any("**Stale umap**" in w for w in texts(at, "warning"))
