"""Pair explorer: two linked UMAPs, search highlighting, the pair table and named lists."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.bundle.reader import open_bundle
from tests.pages.conftest import charts, no_exception, open_app, texts, values


def _kept_pair(bundle_path: Path) -> tuple[int, int]:
    kept = open_bundle(bundle_path).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    return int(kept["feature_a"][0]), int(kept["feature_b"][0])


def _highlight(fig: dict) -> list[int]:
    trace = next(t for t in fig["data"] if t.get("name") == "highlight")
    return sorted(int(c[0]) for c in values(trace.get("customdata")))


def test_two_umaps_with_feature_ids_in_customdata(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    no_exception(at)
    figs = charts(at)
    assert len(figs) == 2
    n_a = sum(len(values(t.get("customdata"))) for t in figs[0]["data"] if t["name"] in ("matched", "orphans"))
    assert n_a == open_bundle(app_bundle).side("a")["d_sae"]
    assert any("Select points" in i for i in texts(at, "info"))


def test_a_selection_in_a_lights_up_its_partner_in_b(app_bundle: Path) -> None:
    fa, fb = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    no_exception(at)
    fig_a, fig_b = charts(at)
    assert fa in _highlight(fig_a)
    assert fb in _highlight(fig_b)
    table = at.dataframe[-1].value
    assert (fa, fb) in set(zip(table["feature_a"], table["feature_b"], strict=True))


def test_search_by_feature_id_highlights_both_maps(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("3").run()
    no_exception(at)
    fig_a, fig_b = charts(at)
    assert 3 in _highlight(fig_a) and 3 in _highlight(fig_b)


def test_search_with_no_hit_says_so(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("zzzunknowntoken").run()
    no_exception(at)
    assert any("Nothing matches" in w for w in texts(at, "warning"))


def test_selection_saves_as_a_named_list(app_bundle: Path) -> None:
    fa, _ = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    at.text_input(key="pe-list-name").set_value("mine")
    at.button(key="pe-save").click().run()
    no_exception(at)
    assert "mine" in at.session_state["featurebridge_state"].named_lists


def test_without_umap_the_page_says_how_to_add_it(spine_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(spine_bundle))
    no_exception(at)
    assert any("**umap**" in w for w in texts(at, "warning"))
    # the hint names the CLI command and the Python API call that add the part
    assert any("python -m core umap" in c.value and 'core.run_stage("umap"' in c.value for c in at.code)


def test_a_search_of_only_subword_markers_is_a_message(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("##").run()
    no_exception(at)
    assert texts(at, "warning")
