"""Export page: figures, tables and the methods JSON are offered; files have the right format."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.pages.conftest import no_exception, open_app, plots, values


def _downloads(at) -> list:
    return at.get("download_button")


def test_export_offers_figures_tables_and_methods(app_bundle: Path) -> None:
    at = open_app("export", bundle_path=str(app_bundle))
    no_exception(at)
    options = at.selectbox(key="ex-figure").options
    assert {"umap-a", "umap-b", "similarity-vs-null", "best-correlation-histogram", "correlation-block"} <= set(options)
    assert any(o.startswith("maps") for o in options)
    tables = set(at.selectbox(key="ex-table").options)
    assert {"assignment", "similarity", "features-a", "orphans", "split-groups", "concepts"} <= tables
    labels = [d.proto.label for d in _downloads(at)]
    assert {"methods.json", "assignment.csv", "assignment.parquet", "assignment.json"} <= set(labels)
    assert any("works offline" in label for label in labels)


def test_the_current_selection_is_offered_as_figures_and_its_table(app_bundle: Path) -> None:
    import polars as pl

    from core.bundle.reader import open_bundle

    kept = open_bundle(app_bundle).assignment().filter(pl.col("kept")).collect()
    fa = int(kept["feature_a"][0])
    at = open_app("export", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    no_exception(at)
    options = at.selectbox(key="ex-figure").options
    assert {"umap-a-selection", "selection-heatmap"} <= set(options)
    at.selectbox(key="ex-figure").set_value("selection-heatmap").run()
    no_exception(at)
    assert "selected-pairs" in at.selectbox(key="ex-table").options


def _ringed(fig: dict, axis: str) -> set[int]:
    """Feature ids of the ``highlight`` trace drawn on one subplot's x axis (``x``: panel A, ``x2``: panel B)."""
    for trace in fig["data"]:
        if trace.get("name") == "highlight" and trace.get("xaxis", "x") == axis:
            return {int(row[0]) for row in values(trace.get("customdata"))}
    raise AssertionError(f"no highlight trace on {axis}")


def test_the_maps_preview_rings_the_selection_and_follows_it(app_bundle: Path) -> None:
    """The maps preview (cached per view) rings the selected feature in A and its partner in B, and a new
    selection draws new rings rather than the cached figure of the old one."""
    import polars as pl

    from core.bundle.reader import open_bundle

    kept = open_bundle(app_bundle).assignment().filter(pl.col("kept")).collect().sort("feature_a")
    (fa, fb), (ga, gb) = [(int(r["feature_a"]), int(r["feature_b"])) for r in kept.head(2).iter_rows(named=True)]
    for chosen, partner in ((fa, fb), (ga, gb)):
        at = open_app("export", bundle_path=str(app_bundle), selection={"a": (chosen,), "b": ()})
        no_exception(at)
        assert at.selectbox(key="ex-figure").value.startswith("maps")
        (fig,) = plots(at)
        assert chosen in _ringed(fig, "x") and partner in _ringed(fig, "x2")
        other = (ga, gb) if chosen == fa else (fa, fb)
        assert other[0] not in _ringed(fig, "x") and other[1] not in _ringed(fig, "x2")


def test_saved_lists_are_on_the_export_page(app_bundle: Path, tmp_path: Path) -> None:
    from core.bundle.lists import save_named_list

    copy = Path(shutil.copytree(app_bundle, tmp_path / "bundle"))
    save_named_list(copy, "numbers", [(1, 2), (3, None)])
    at = open_app("export", bundle_path=str(copy))
    no_exception(at)
    assert any("**numbers** · 2 pairs" in m.value for m in at.markdown)
    labels = [d.proto.label for d in _downloads(at)]
    assert {"list-numbers.csv", "list-numbers.parquet", "list-numbers.json"} <= set(labels)


def test_methods_record_names_sides_settings_and_versions(app_bundle: Path) -> None:
    from components.data import methods_record
    from core.bundle.reader import open_bundle

    record = methods_record(open_bundle(app_bundle))
    assert set(record["sides"]) == {"a", "b"} and record["versions"]["torch"]
    assert "settings" in record["matching"] and "svcca" in record["similarity_results"]
    json.dumps(record, default=str)


def test_export_of_a_spine_bundle_still_offers_tables(spine_bundle: Path) -> None:
    at = open_app("export", bundle_path=str(spine_bundle))
    no_exception(at)
    assert "features-a" in at.selectbox(key="ex-table").options


@pytest.mark.skipif(shutil.which("chromium") is None, reason="static export needs Debian chromium for kaleido")
def test_prepare_file_offers_the_static_export(app_bundle: Path) -> None:
    at = open_app("export", bundle_path=str(app_bundle))
    at.selectbox(key="ex-figure").set_value("umap-a").run()
    at.selectbox(key="ex-fig-fmt").set_value("svg").run()
    at.button(key="ex-fig-prepare").click().run()
    no_exception(at)
    labels = [d.proto.label for d in _downloads(at)]
    assert "Download umap-a-single.svg" in labels, labels


def test_export_offers_the_linked_maps_as_one_offline_html(app_bundle: Path) -> None:
    at = open_app("export", bundle_path=str(app_bundle), side="a", feature=2, selection={"a": (2,), "b": ()})
    no_exception(at)
    # the selected feature's activation histogram and top tokens, as paper figures
    assert {"activations-A2", "top-tokens-A2"} <= set(at.selectbox(key="ex-figure").options)
    at.selectbox(key="ex-figure").set_value("activations-A2").run()
    no_exception(at)
    labels = [d.proto.label for d in _downloads(at)]
    assert "linked-maps.html (interactive)" in labels
    # every figure's interactive HTML is offered too (built when downloaded, with plotly.js inlined)
    assert any(".html (interactive" in label and "linked" not in label for label in labels)


def test_export_without_umap_offers_no_linked_maps(spine_bundle: Path) -> None:
    at = open_app("export", bundle_path=str(spine_bundle))
    no_exception(at)
    assert "linked-maps.html (interactive)" not in [d.proto.label for d in _downloads(at)]
