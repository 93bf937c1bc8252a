"""Pair explorer: two linked UMAPs (the linked-maps component), search rings, the pair table and named lists."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from components.linked_maps import decode_pairs, decode_side
from components.state import PairFilter
from core.bundle.reader import open_bundle
from tests.pages.conftest import linked_maps, no_exception, open_app, texts


def _kept_pair(bundle_path: Path) -> tuple[int, int]:
    kept = open_bundle(bundle_path).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    return int(kept["feature_a"][0]), int(kept["feature_b"][0])


def _maps(at) -> dict:
    found = linked_maps(at)
    assert len(found) == 1, f"{len(found)} linked-maps components on the page"
    assert not at.get("plotly_chart"), "the maps are the linked-maps component, not plotly charts"
    return found[0]


def test_the_linked_maps_carry_every_feature_and_the_whole_partner_table(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    no_exception(at)
    maps = _maps(at)
    bundle = open_bundle(app_bundle)
    for side in ("a", "b"):
        assert decode_side(maps["maps"], side)["feature"].tolist() == list(range(bundle.side(side)["d_sae"]))
    # the partner table travels whole (dropped pairs too), so "link dropped pairs too" works in the browser
    table = decode_pairs(maps["maps"])
    assignment = bundle.assignment().collect()
    assert table.height == assignment.height
    assert sorted(zip(table["feature_a"], table["feature_b"], table["kept"], strict=True)) == sorted(
        zip(assignment["feature_a"], assignment["feature_b"], assignment["kept"], strict=True)
    )
    assert maps["view"] == {"selection": {"a": [], "b": []}, "search": {"a": [], "b": []}, "include_dropped": False}
    # plotly.js travels as both builds' URLs (the app's own, when it can stand in, and the full bundle)
    assert maps["plotly"]["full"].split("?")[0].endswith("/plotly.min.js")
    assert maps["plotly"]["app"].split("?")[0].endswith("/plotly-app.min.js")
    assert any("Select points" in i for i in texts(at, "info"))
    assert any("Hover a point" in c and "no rerun" in c for c in texts(at, "caption"))


def test_the_maps_colour_by_the_kept_pairs_r_with_grey_unpaired_and_orphan_crosses(app_bundle: Path) -> None:
    from components import data

    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    no_exception(at)
    maps = _maps(at)
    bundle = open_bundle(app_bundle)
    kept = bundle.assignment().filter(pl.col("kept")).collect()
    for side in ("a", "b"):
        drawn = decode_side(maps["maps"], side)
        want = data.umap_points(bundle, side).sort("feature")
        assert drawn["category"] == want["category"].to_list()
        paired = {f for f, c in zip(drawn["feature"].tolist(), drawn["category"], strict=True) if c == "paired"}
        assert paired == {int(f) for f in kept[f"feature_{side}"]}
    names = [t["name"] for t in maps["maps"]["sides"]["a"]["traces"]]
    assert names == ["orphans", "unpaired", "matched"]


def test_the_all_pairs_filter_applies_to_the_maps_payload(app_bundle: Path) -> None:
    fa, fb = _kept_pair(app_bundle)
    plain = _maps(open_app("pair_explorer", bundle_path=str(app_bundle)))
    # only the strongest kept pair passes: the rest of the features are drawn unpaired
    top = float(decode_pairs(plain["maps"]).filter(pl.col("kept"))["corr"].max())
    at = open_app(
        "pair_explorer",
        bundle_path=str(app_bundle),
        pair_filter=PairFilter(kept="kept", min_corr=top - 1e-6, apply_to_maps=True),
    )
    no_exception(at)
    maps = _maps(at)
    assert maps["key"] != plain["key"]
    for side, feature in (("a", fa), ("b", fb)):
        drawn = decode_side(maps["maps"], side)
        paired = [f for f, c in zip(drawn["feature"].tolist(), drawn["category"], strict=True) if c == "paired"]
        assert paired == [feature]
    # the filter recolours; the partner table still links through the whole assignment
    assert decode_pairs(maps["maps"]).height == decode_pairs(plain["maps"]).height
    assert any("pairs passing the All pairs filter" in c for c in texts(at, "caption"))


def test_a_selection_in_a_lists_its_pair_and_travels_to_the_maps(app_bundle: Path) -> None:
    fa, fb = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    no_exception(at)
    maps = _maps(at)
    assert maps["view"]["selection"] == {"a": [fa], "b": []}
    # the browser rings B's partners from the table it carries: fa links to fb through a kept pair
    table = decode_pairs(maps["maps"])
    assert table.filter((pl.col("feature_a") == fa) & pl.col("kept"))["feature_b"].to_list() == [fb]
    assert any("1 partners" in c for c in texts(at, "caption"))
    table = at.dataframe[-1].value
    assert (fa, fb) in set(zip(table["feature_a"], table["feature_b"], strict=True))


def test_the_selection_survives_a_search_and_a_toggle(app_bundle: Path) -> None:
    fa, _ = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    at.text_input(key="pe-search").set_value("3").run()
    at.toggle(key="pe-dropped").set_value(True).run()
    no_exception(at)
    view = _maps(at)["view"]
    assert view["selection"] == {"a": [fa], "b": []}
    assert view["include_dropped"] is True and at.session_state["featurebridge_state"].include_dropped


def test_one_clicked_feature_gets_its_pair_panel(app_bundle: Path) -> None:
    fa, fb = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()}, side="a", feature=fa)
    no_exception(at)
    assert any(f"A{fa} ↔ B{fb}" in m.value for m in at.markdown), [m.value for m in at.markdown][:10]


def test_clear_selection_empties_the_maps_view(app_bundle: Path) -> None:
    fa, _ = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    at.button(key="pe-clear").click().run()
    no_exception(at)
    assert _maps(at)["view"]["selection"] == {"a": [], "b": []}


def test_link_dropped_pairs_travels_to_the_maps(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.toggle(key="pe-dropped").set_value(True).run()
    no_exception(at)
    assert _maps(at)["view"]["include_dropped"] is True


def test_search_by_feature_id_rings_both_maps(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("3").run()
    no_exception(at)
    assert _maps(at)["view"]["search"] == {"a": [3], "b": [3]}


def test_the_maps_payload_is_sent_unchanged_between_runs(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    first = _maps(at)
    at.text_input(key="pe-search").set_value("a2").run()
    second = _maps(at)
    # same key: the browser keeps its drawn maps and only moves the rings; the run's data is a few ids
    assert first["key"] == second["key"] and first["maps"] == second["maps"]
    element = next(e for e in at.get("bidi_component"))
    assert len(element.proto.json) < 2000
    assert second["view"]["search"] == {"a": [2], "b": []}


def test_search_with_no_hit_says_so(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("zzzunknowntoken").run()
    no_exception(at)
    assert any("Nothing matches" in w for w in texts(at, "warning"))


def test_selection_saves_as_a_named_list_beside_the_bundle_and_reopens(app_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from core.bundle.lists import load_named_lists

    copy = Path(shutil.copytree(app_bundle, tmp_path / "bundle"))
    fa, fb = _kept_pair(copy)
    at = open_app("pair_explorer", bundle_path=str(copy), selection={"a": (fa,), "b": ()})
    at.text_input(key="pe-list-name").set_value("mine")
    at.button(key="pe-save").click().run()
    no_exception(at)
    saved = load_named_lists(copy)
    assert (fa, fb) in saved["mine"].pairs
    assert at.session_state["featurebridge_state"].active_list == "mine"
    # a new session opens it from the list manager: the list becomes the selection (rings in both maps)
    fresh = open_app("pair_explorer", bundle_path=str(copy))
    fresh.button(key="pe-list-open").click().run()
    no_exception(fresh)
    state = fresh.session_state["featurebridge_state"]
    assert state.active_list == "mine" and fa in state.selection["a"] and fb in state.selection["b"]
    assert _maps(fresh)["view"]["selection"] == {"a": list(state.selection["a"]), "b": list(state.selection["b"])}
    assert fa in _maps(fresh)["view"]["selection"]["a"] and fb in _maps(fresh)["view"]["selection"]["b"]
    # rename, then delete
    fresh.text_input(key="pe-list-rename").set_value("renamed")
    fresh.button(key="pe-list-rename-go").click().run()
    no_exception(fresh)
    assert list(load_named_lists(copy)) == ["renamed"]
    assert fresh.session_state["featurebridge_state"].active_list == "renamed"
    fresh.button(key="pe-list-delete").click().run()
    assert load_named_lists(copy) == {}


def test_a_deep_link_opens_the_search_and_the_named_list(app_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from streamlit.testing.v1 import AppTest

    from core.bundle.lists import save_named_list
    from tests.pages.conftest import APP, TIMEOUT

    copy = Path(shutil.copytree(app_bundle, tmp_path / "bundle"))
    fa, fb = _kept_pair(copy)
    save_named_list(copy, "numbers", [(fa, fb)])
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.query_params.update({"bundle": str(copy), "search": "3", "list": "numbers"})
    at.run()
    at.switch_page("pages/pair_explorer.py")
    at.run()
    no_exception(at)
    state = at.session_state["featurebridge_state"]
    assert state.search == "3" and state.active_list == "numbers"
    assert at.text_input(key="pe-search").value == "3"
    view = _maps(at)["view"]
    assert view["search"] == {"a": [3], "b": [3]}
    assert fa in view["selection"]["a"] and fb in view["selection"]["b"]


def test_search_counts_its_hits_and_pages_through_them(app_bundle: Path) -> None:
    from core.bundle.reader import open_bundle as _open

    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    token = _open(app_bundle).features("a").collect()["top_tokens"][0][0]
    at.text_input(key="pe-search").set_value(token).run()
    no_exception(at)
    counts = [m.value for m in at.markdown if " hit" in m.value]
    assert counts and counts[0].startswith("**")
    n_hits = int(counts[0].strip("*").split(" ")[0].replace(",", ""))
    links = [p for p in at.get("page_link") if p.proto.page == "feature"]
    assert len(links) == min(n_hits, 20) and all("feature=" in p.proto.query_string for p in links)
    if n_hits > 20:
        at.button(key="pe-hits-next").click().run()
        assert at.session_state["featurebridge_state"].search_page == 1


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
