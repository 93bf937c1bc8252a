"""The app's plot component (Python side): the data it sends, the click it returns."""

from __future__ import annotations

import json

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from components import figures, plot, plotly_assets


def _fig(n: int) -> go.Figure:
    frame = pl.DataFrame(
        {
            "feature_a": np.arange(n),
            "feature_b": np.arange(n)[::-1],
            "corr": np.linspace(0, 1, n),
            "cos": np.linspace(-1, 1, n),
            "kept": np.arange(n) % 2 == 0,
        }
    )
    return figures.build_corr_cos_figure(frame)


def test_a_small_figure_travels_inline_and_a_large_one_as_a_published_file(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path))
    monkeypatch.setattr(plotly_assets, "file_route", lambda name, folder, filename: f"/{name}/{filename}")
    small = plot.figure_json(_fig(10))
    data = plot.plot_data(small, height=300)
    assert data["figure"] == small and data["figure_url"] is None and data["height"] == 300
    assert plot.figure_of(data) == json.loads(small)
    large = plot.figure_json(_fig(30_000))
    assert len(large) > plot.INLINE_LIMIT
    data = plot.plot_data(large)
    assert data["figure"] is None and data["figure_url"] == f"/app-figures/{plot.figure_key(large)}.json"
    # the file holds the figure the builder made: the page draws what the export writes
    fig = plot.figure_of(data)
    assert [t["name"] for t in fig["data"]] == ["kept", "dropped"]
    assert plot.figure_key(large) == plot.figure_key(plot.figure_json(_fig(30_000)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (
            {"trace": "kept", "curve": 0, "point": 3, "customdata": [6, 3], "at": 1},
            plot.PointClick("kept", 0, 3, (6, 3)),
        ),
        (
            {"trace": None, "curve": "1", "point": 0, "customdata": {"1": 9, "0": 4}},
            plot.PointClick(None, 1, 0, (4, 9)),
        ),
        ({"curve": 0, "point": 2, "customdata": 7}, plot.PointClick(None, 0, 2, (7,))),
        ({"curve": 0, "point": 2}, plot.PointClick(None, 0, 2, ())),
        ({"curve": "x", "point": 2}, None),
        (None, None),
        ("click", None),
    ],
)
def test_click_from_event(value: object, expected: plot.PointClick | None) -> None:
    assert plot.click_from_event(value) == expected


def test_the_modules_define_every_helper_their_hosts_call() -> None:
    import re
    import shutil
    import subprocess

    from components import linked_maps

    for js in (plot.component_js(), linked_maps.component_js()):
        defined = set(re.findall(r"function (\w+)\(", js)) | set(re.findall(r"class (\w+) ", js))
        for name in ("loadPlotly", "fetchJson"):
            assert name in defined
        assert "mountLinkedMaps" in defined or "mountLinkedMaps" not in js
        if shutil.which("node"):
            # a syntax error would only show in the browser otherwise
            out = subprocess.run(["node", "--input-type=module", "--check"], input=js, capture_output=True, text=True)
            assert out.returncode == 0, out.stderr
