"""Pair explorer: two linked UMAPs, search highlighting, the pair table and named lists."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from components.linked_maps import decode_pairs, decode_side
from core.bundle.reader import open_bundle
from tests.pages.conftest import linked_maps, no_exception, open_app, texts


def _kept_pair(bundle_path: Path) -> tuple[int, int]:
    kept = open_bundle(bundle_path).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    return int(kept["feature_a"][0]), int(kept["feature_b"][0])


def test_the_linked_maps_carry_every_feature_and_the_whole_partner_table(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    no_exception(at)
    (maps,) = linked_maps(at)
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
    assert maps["plotly_url"].endswith("/plotly.min.js")
    assert any("Select points" in i for i in texts(at, "info"))


def test_a_selection_in_a_lists_its_pair_and_travels_to_the_maps(app_bundle: Path) -> None:
    fa, fb = _kept_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    no_exception(at)
    (maps,) = linked_maps(at)
    assert maps["view"]["selection"] == {"a": [fa], "b": []}
    # the browser rings B's partners from the table it carries: fa links to fb through a kept pair
    table = decode_pairs(maps["maps"])
    assert table.filter((pl.col("feature_a") == fa) & pl.col("kept"))["feature_b"].to_list() == [fb]
    assert any("1 partners" in c for c in texts(at, "caption"))
    table = at.dataframe[-1].value
    assert (fa, fb) in set(zip(table["feature_a"], table["feature_b"], strict=True))


def test_link_dropped_pairs_travels_to_the_maps(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.toggle[0].set_value(True).run()
    no_exception(at)
    assert linked_maps(at)[0]["view"]["include_dropped"] is True


def test_search_by_feature_id_rings_both_maps(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("3").run()
    no_exception(at)
    (maps,) = linked_maps(at)
    assert maps["view"]["search"] == {"a": [3], "b": [3]}


def test_the_maps_payload_is_sent_unchanged_between_runs(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    first = linked_maps(at)[0]
    at.text_input(key="pe-search").set_value("a2").run()
    second = linked_maps(at)[0]
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
    assert any("build_umap" in c.value for c in at.code)


def test_a_search_of_only_subword_markers_is_a_message(app_bundle: Path) -> None:
    at = open_app("pair_explorer", bundle_path=str(app_bundle))
    at.text_input(key="pe-search").set_value("##").run()
    no_exception(at)
    assert texts(at, "warning")


def test_maps_without_an_assignment_say_linking_is_missing_and_how_to_add_it(app_bundle: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = Path(shutil.copytree(app_bundle, tmp_path / "no-assignment"))
    for name in ("assignment.parquet", "matches.parquet", "weight_matches.parquet"):
        (copy / name).unlink(missing_ok=True)
    manifest = json.loads((copy / "manifest.json").read_text())
    manifest["parts"].update({"assignment": False, "matches": False, "weight_matches": False})
    (copy / "manifest.json").write_text(json.dumps(manifest))
    at = open_app("pair_explorer", bundle_path=str(copy))
    no_exception(at)
    (maps,) = linked_maps(at)
    assert decode_pairs(maps["maps"]).height == 0
    assert any("not linked" in i for i in texts(at, "info"))
    assert any("**assignment**" in w for w in texts(at, "warning"))
    assert any("python -m core match" in c.value for c in at.code)
