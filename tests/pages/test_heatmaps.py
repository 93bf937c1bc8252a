"""Heatmaps page: a clickable correlation block with matches on the diagonal; the sweep message."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.bundle.reader import open_bundle
from tests.pages.conftest import OVERVIEW_TAB, charts, no_exception, open_app, plots, texts, values


def test_block_of_strongest_pairs_puts_matches_on_the_diagonal(app_bundle: Path) -> None:
    at = open_app("heatmaps", bundle_path=str(app_bundle))
    no_exception(at)
    # drawn by the app's plot component (the app's own plotly.js build), never st.plotly_chart
    assert not charts(at)
    fig = plots(at)[0]
    trace = fig["data"][0]
    assert trace["type"] in ("scatter", "scattergl") and trace["marker"]["symbol"] == "square"
    kept = open_bundle(app_bundle).assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    rows = fig["layout"]["yaxis"]["categoryarray"]
    cols = fig["layout"]["xaxis"]["categoryarray"]
    pairs = set(zip(kept["feature_a"].cast(str), kept["feature_b"].cast(str), strict=True))
    n = min(len(rows), len(cols))
    assert all((rows[i], cols[i]) in pairs for i in range(n))
    # a bundle without a sweep says so and how to add one, and does not claim it has one
    info = [i for i in texts(at, "info") if "sweep" in i]
    assert info and all("carries no layer x layer sweep" in i for i in info)


def test_feature_ids_input_and_bad_ids(app_bundle: Path) -> None:
    at = open_app("heatmaps", bundle_path=str(app_bundle))
    at.radio(key="hm-source").set_value("feature ids").run()
    at.text_input(key="hm-a").set_value("1, 2, 3").run()
    no_exception(at)
    assert len(values(plots(at)[0]["data"][0]["customdata"])) == 3 * 4
    at.text_input(key="hm-b").set_value("1, 99999").run()
    no_exception(at)
    assert any("does not exist" in e for e in texts(at, "error"))
    at.text_input(key="hm-b").set_value("x, y").run()
    assert any("whole numbers" in e for e in texts(at, "error"))


def test_a_sweep_in_similarity_json_draws_a_clickable_layer_heatmap(app_bundle: Path, tmp_path: Path) -> None:
    import shutil

    from core.bundle.writer import add_parts

    copy = tmp_path / "with-sweep"
    shutil.copytree(app_bundle, copy)
    body = open_bundle(copy).similarity_json()
    body["sweep"] = [
        {"layer_a": i, "layer_b": j, "label_a": f"blocks.{i}", "label_b": f"blocks.{j}", "metric": m,
         "value": (None if (i, j) == (2, 2) else 0.1 * (i + j)), "error": None}
        for i in range(3) for j in range(3) for m in ("svcca", "rsa")
    ]  # fmt: skip
    add_parts(copy, json_files={"similarity.json": body})
    at = open_app("heatmaps", bundle_path=str(copy))
    no_exception(at)
    sweep = plots(at)[-1]
    assert sweep["layout"]["title"]["text"] == "svcca per layer pair"
    assert sweep["layout"]["yaxis"]["categoryarray"] == ["blocks.0", "blocks.1", "blocks.2"]
    # a clicked cell (kept in the session, since a click is reported once) shows its row, and stays shown
    cell = tuple(values(sweep["data"][0]["customdata"])[5][:2])
    at.session_state["hm-sweep-cell"] = cell
    at.run()
    shown = at.dataframe[-1].value
    assert shown.shape[0] == 1 and (shown["label_a"][0], shown["label_b"][0]) == cell
    at.selectbox(key="hm-metric").set_value("rsa").run()
    shown = at.dataframe[-1].value
    assert (shown["metric"][0], shown["label_a"][0], shown["label_b"][0]) == ("rsa", *cell)
    at.session_state[OVERVIEW_TAB] = "Similarity"  # Overview runs only its open tab
    at.switch_page("pages/overview.py")
    at.run()
    no_exception(at)
    assert any(f["layout"]["title"]["text"] == "Layer sweep: svcca" for f in plots(at))
