"""The linked-maps component's Python side: the data it sends and the selection it returns."""

from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from components import figures, linked_maps, plotly_assets
from components.state import AppState


def _points(n: int, seed: int, orphan_every: int = 3) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    # rows deliberately out of feature order: the payload must sort them
    order = rng.permutation(n)
    return pl.DataFrame(
        {
            "feature": order.astype(np.int32),
            "x": rng.standard_normal(n).astype(np.float32),
            "y": rng.standard_normal(n).astype(np.float32),
            "corr": [None if f % 5 == 0 else float(f) / n for f in order],
            "is_orphan": [bool(f % orphan_every == 0) for f in order],
            "label": [f"tok{f} · other" for f in order],
        },
        schema_overrides={"corr": pl.Float64},
    )


def _pairs() -> pl.DataFrame:
    return pl.DataFrame(
        {
            "feature_a": [1, 2, 4, 4],
            "feature_b": [7, 3, 0, 5],
            "corr": [0.9, 0.05, 0.6, 0.4],
            "kept": [True, False, True, True],
        },
        schema={"feature_a": pl.Int32, "feature_b": pl.Int32, "corr": pl.Float64, "kept": pl.Boolean},
    )


def _payload(n_a: int = 12, n_b: int = 9) -> dict:
    return linked_maps.compute_maps_payload(
        {"a": _points(n_a, 0), "b": _points(n_b, 1)}, _pairs(), {"a": "A: left", "b": "B: right"}
    )


def test_payload_carries_every_point_sorted_by_feature_with_its_values() -> None:
    points = _points(12, 0)
    payload = linked_maps.compute_maps_payload({"a": points, "b": _points(9, 1)}, _pairs(), {"a": "A", "b": "B"})
    side = linked_maps.decode_side(payload, "a")
    want = points.sort("feature")
    assert side["feature"].tolist() == list(range(12))
    np.testing.assert_array_equal(side["x"], want["x"].to_numpy())
    np.testing.assert_array_equal(side["y"], want["y"].to_numpy())
    np.testing.assert_array_equal(side["orphan"], want["is_orphan"].to_numpy())
    assert side["labels"] == want["label"].to_list()
    # a feature without a best partner has no correlation: NaN, not 0
    corr = side["corr"]
    assert np.isnan(corr[0]) and np.isnan(corr[5])
    np.testing.assert_allclose(corr[1], 1 / 12, rtol=1e-6)
    assert linked_maps.decode_side(payload, "b")["feature"].tolist() == list(range(9))


def test_payload_carries_the_whole_partner_table_dropped_pairs_included() -> None:
    pairs = linked_maps.decode_pairs(_payload())
    assert pairs["feature_a"].to_list() == [1, 2, 4, 4]
    assert pairs["feature_b"].to_list() == [7, 3, 0, 5]
    assert pairs["kept"].to_list() == [True, False, True, True]
    np.testing.assert_allclose(pairs["corr"].to_numpy(), [0.9, 0.05, 0.6, 0.4], rtol=1e-6)


def test_payload_traces_follow_the_paper_figure_and_switch_to_webgl_for_large_maps() -> None:
    small = _payload()["sides"]["a"]
    # the static map's three point traces (grey crosses, grey dots, coloured pairs); the rings are drawn in SVG
    assert [t["name"] for t in small["traces"]] == ["orphans", "unpaired", "matched"]
    assert all(t["type"] == "scatter" for t in small["traces"])
    matched = small["traces"][2]
    assert matched["marker"]["colorscale"] and "color" not in matched["marker"]
    assert not any(k in t for t in small["traces"] for k in ("x", "y", "customdata", "text"))
    assert small["layout"]["title"]["text"] == "A: left"
    assert small["layout"]["template"]["layout"]["font"]["family"] == figures.FONT_FAMILY
    big = linked_maps.compute_maps_payload(
        {"a": _points(figures.WEBGL_THRESHOLD + 1, 0), "b": _points(5, 1)}, _pairs(), {}
    )
    assert {t["type"] for t in big["sides"]["a"]["traces"]} == {"scattergl"}
    assert {t["type"] for t in big["sides"]["b"]["traces"]} == {"scatter"}


def test_payload_key_names_the_content() -> None:
    assert _payload()["key"] == _payload()["key"]
    assert _payload(12, 9)["key"] != _payload(12, 8)["key"]
    encoded = linked_maps.encode_maps_payload(_payload())
    assert json.loads(encoded) == _payload()


def test_empty_maps_and_pairs_encode() -> None:
    empty = _points(4, 0).clear()
    payload = linked_maps.compute_maps_payload({"a": empty, "b": empty}, _pairs().clear(), {})
    assert linked_maps.decode_side(payload, "a")["labels"] == []
    assert payload["pairs"]["n"] == 0


def test_view_sorts_and_splits_by_side() -> None:
    hits = pl.DataFrame({"side": ["b", "a", "b", "b"], "feature": [5, 2, 1, 5], "why": ["x"] * 4})
    view = linked_maps.compute_view({"a": (4, 1, 4), "b": ()}, hits, include_dropped=True)
    assert view == {
        "selection": {"a": [1, 4], "b": []},
        "search": {"a": [2], "b": [1, 5]},
        "include_dropped": True,
    }
    assert linked_maps.compute_view({}, None)["search"] == {"a": [], "b": []}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"side": "a", "features": [5, 3, 5], "mode": "box", "at": 1}, linked_maps.MapSelection("a", (3, 5), "box")),
        ({"side": "b", "features": [], "mode": "clear"}, linked_maps.MapSelection("b", (), "clear")),
        ({"side": "b", "features": [2.0], "mode": "weird"}, linked_maps.MapSelection("b", (2,), "click")),
        (None, None),
        ({"side": "c", "features": [1]}, None),
        ({"side": "a", "features": "12"}, None),
        ({"side": "a", "features": ["x"]}, None),
        ([1, 2], None),
    ],
)
def test_selection_from_event(value: object, expected: linked_maps.MapSelection | None) -> None:
    assert linked_maps.selection_from_event(value) == expected


def test_a_selection_moves_the_state() -> None:
    state = AppState(bundle_path="/b", side="b", feature=9, partner=4, selection={"a": (), "b": (9,)})
    state.active_list = "mine"
    assert linked_maps.apply_selection(state, linked_maps.MapSelection("a", (3, 8), "lasso", at=1.0))
    # a new selection in one map replaces the whole selection, and is not the named list any more
    assert state.selection == {"a": (3, 8), "b": ()} and state.active_list is None
    # several points: the selected feature stays where it was
    assert (state.side, state.feature) == ("b", 9)
    assert linked_maps.apply_selection(state, linked_maps.MapSelection("a", (3,), "click", at=2.0))
    assert (state.side, state.feature, state.partner) == ("a", 3, None)
    # the typed state's rule: an empty report (a deselect, an empty box) never changes the selection
    assert not linked_maps.apply_selection(state, linked_maps.MapSelection("a", (), "clear", at=3.0))
    assert not linked_maps.apply_selection(state, linked_maps.MapSelection("b", (), "box", at=4.0))
    assert state.selection == {"a": (3,), "b": ()} and state.feature == 3


def test_each_gesture_counts_once_and_the_same_point_clicked_again_counts_again() -> None:
    state = AppState(bundle_path="/b")
    click = linked_maps.selection_from_event({"side": "a", "features": [5], "mode": "click", "at": 10})
    assert click is not None and click.at == 10.0
    assert linked_maps.apply_selection(state, click)
    # the same trigger read again (a second look at one gesture) is not a new selection
    state.clear_selection()
    assert not linked_maps.apply_selection(state, click)
    assert state.selection == {"a": (), "b": ()}
    # a new click on the same point, after "Clear selection", selects it again
    again = linked_maps.selection_from_event({"side": "a", "features": [5], "mode": "click", "at": 11})
    assert again is not None and linked_maps.apply_selection(state, again)
    assert state.selection == {"a": (5,), "b": ()}
    # one widget draws both maps: the same ids selected in the other map are a new selection there
    other = linked_maps.MapSelection("b", (5,), "click")
    assert linked_maps.apply_selection(state, other)
    assert state.selection == {"a": (), "b": (5,)} and (state.side, state.feature) == ("b", 5)


def _categorised(n: int, seed: int) -> pl.DataFrame:
    cats = ["paired", "unpaired", "orphan", "dead"]
    return (
        _points(n, seed)
        .drop("is_orphan")
        .with_columns(pl.Series("category", [cats[int(f) % 4] for f in _points(n, seed)["feature"]]))
        .with_columns(
            pl.when(pl.col("category") == "paired").then(pl.col("corr")).otherwise(None).alias("corr"),
            (pl.col("category") == "orphan").alias("is_orphan"),
        )
    )


def test_payload_carries_each_points_category_for_its_trace() -> None:
    points = _categorised(12, 0)
    payload = linked_maps.compute_maps_payload({"a": points, "b": _categorised(5, 1)}, _pairs(), {})
    side = linked_maps.decode_side(payload, "a")
    want = points.sort("feature")
    assert side["category"] == want["category"].to_list()
    assert side["orphan"].tolist() == [c == "orphan" for c in want["category"]]
    # unpaired, orphan and dead points carry no r: they are grey, not the colour scale's 0
    assert all(np.isnan(r) for r, c in zip(side["corr"], side["category"], strict=True) if c != "paired")
    # the browser groups points into traces by the same table the static figure uses
    assert payload["categories"] == ["paired", "unpaired", "orphan", "dead"]
    assert payload["trace_categories"] == {k: list(v) for k, v in figures.MAP_TRACE_CATEGORIES.items()}
    drawn = {c for cats in payload["trace_categories"].values() for c in cats}
    assert drawn == set(payload["categories"])
    # without a category column, is_orphan alone splits orphans from the rest (older frames)
    legacy = linked_maps.decode_side(_payload(), "a")
    assert set(legacy["category"]) == {"orphan", "paired"}
    assert [c == "orphan" for c in legacy["category"]] == legacy["orphan"].tolist()


def test_a_category_the_maps_cannot_draw_is_an_error() -> None:
    bad = _categorised(4, 0).with_columns(pl.lit("weird").alias("category"))
    with pytest.raises(ValueError, match="weird"):
        linked_maps.compute_maps_payload({"a": bad, "b": bad}, _pairs(), {})


def test_a_map_filter_changes_the_payload_and_its_key() -> None:
    points = _categorised(12, 0)
    # the All pairs filter applied to the maps: fewer features count as paired, so the payload differs
    filtered = points.with_columns(
        pl.when(pl.col("feature") < 6).then(pl.col("category")).otherwise(pl.lit("unpaired")).alias("category")
    ).with_columns(pl.when(pl.col("category") == "paired").then(pl.col("corr")).alias("corr"))
    plain = linked_maps.compute_maps_payload({"a": points, "b": points}, _pairs(), {})
    narrow = linked_maps.compute_maps_payload({"a": filtered, "b": points}, _pairs(), {})
    assert plain["key"] != narrow["key"]
    cats = linked_maps.decode_side(narrow, "a")["category"]
    assert all(c != "paired" for c in cats[6:]) and "paired" in cats[:6]


def test_html_export_embeds_plotly_the_script_and_the_data() -> None:
    payload = _payload()
    payload["sides"]["a"]["labels"] = payload["sides"]["a"]["labels"].replace("tok0", "</script><b>x")
    view = linked_maps.compute_view({"a": (1,)}, None)
    html = linked_maps.build_linked_maps_html(linked_maps.encode_maps_payload(payload), view, "maps & <pairs>")
    # plotly.js inlined, nothing fetched: the file works offline
    assert (plotly_assets.PLOTLY_DIR / "plotly.min.js").read_text() in html
    assert re.search(r"<script[^>]*\bsrc=", html) is None
    assert "function mountLinkedMaps" in html and "mountLinkedMaps(document.getElementById('fb-maps')" in html
    assert "<title>maps &amp; &lt;pairs&gt;</title>" in html
    # a label cannot close the data's script element early
    assert "</script><b>x" not in html
    data = re.search(r"const FB_DATA = (.*);\n", html)
    assert data is not None
    decoded = json.loads(data.group(1).replace("<\\/", "</"))
    assert decoded["view"] == view and decoded["maps"]["key"] == payload["key"]


def test_plotly_js_comes_from_the_installed_package() -> None:
    assert (plotly_assets.PLOTLY_DIR / "plotly.min.js").is_file()


def test_a_payload_is_published_once_as_a_file_named_by_its_key(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path))
    from components import plotly_assets

    monkeypatch.setattr(plotly_assets, "KEEP_PUBLISHED", 2)
    monkeypatch.setattr(plotly_assets, "file_route", lambda name, folder, filename: f"/{name}/{filename}")
    payloads = [_payload(12, n) for n in (5, 6, 7)]
    paths = []
    for payload in payloads:
        url = linked_maps.publish_maps_payload(linked_maps.encode_maps_payload(payload), payload["key"])
        assert url == f"/app-maps/{payload['key']}.json"
        paths.append(linked_maps.payload_dir() / f"{payload['key']}.json")
    assert paths[-1].name == f"{payloads[-1]['key']}.json"
    assert json.loads(paths[-1].read_text()) == payloads[-1]
    # the oldest beyond KEEP_PAYLOADS go; publishing again is a no-op
    assert sorted(p.name for p in linked_maps.payload_dir().glob("*.json")) == sorted(p.name for p in paths[1:])
    stamp = paths[-1].stat().st_mtime_ns
    linked_maps.publish_maps_payload("{}", payloads[-1]["key"])
    assert paths[-1].stat().st_mtime_ns == stamp


def test_more_hits_than_the_ring_limit_ring_only_the_listed_page() -> None:
    hits = pl.DataFrame({"side": ["a", "b"] * 30, "feature": list(range(60))})
    assert linked_maps.ringed_hits(hits, 2, 10, 60).height == 60  # within the limit: every hit
    page = linked_maps.ringed_hits(hits, 2, 10, 59)
    assert page["feature"].to_list() == list(range(20, 30))
    view = linked_maps.compute_view({}, page)
    assert view["search"] == {"a": [20, 22, 24, 26, 28], "b": [21, 23, 25, 27, 29]}
    assert linked_maps.ringed_hits(hits.clear(), 0, 10, 0).height == 0
