"""Exports of what the user sees: every column in every table format, heatmaps readable at both paper sizes,
offline HTML, one reused browser for static export, and errors that say what failed."""

from __future__ import annotations

import io
import json
import re
import shutil
import struct

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from components import exports, figures

needs_chromium = pytest.mark.skipif(
    shutil.which("chromium") is None, reason="static export needs Debian chromium for kaleido"
)

ASSIGNMENT = pl.DataFrame(
    {
        "feature_a": [3, 1],
        "feature_b": [2, 7],
        "method": ["greedy", "greedy"],
        "corr": [0.9, 0.05],
        "kept": [True, False],
        "reason": [None, "below_threshold"],
        "n_coactive": [40, 2],
        "jaccard": [0.8, 0.01],
        "cos": [0.5, None],
        "mu": [3.0, 0.1],
        "neglog10_p": [50.0, 0.1],
        "q": [1e-40, 0.9],
        "significant": [True, False],
        "reasons": [[], ["below_threshold", "nonconcept_a"]],
        "tokens_a": ["the · a", "cat"],
    },
    schema_overrides={"reason": pl.String, "cos": pl.Float64},
)


def test_every_table_format_keeps_every_column() -> None:
    parquet = pl.read_parquet(io.BytesIO(exports.table_bytes(ASSIGNMENT, "parquet")))
    assert parquet.columns == ASSIGNMENT.columns and parquet.schema["reasons"] == pl.List(pl.String)
    assert parquet["reasons"].to_list() == [[], ["below_threshold", "nonconcept_a"]]
    csv = pl.read_csv(io.BytesIO(exports.table_bytes(ASSIGNMENT, "csv")))
    assert csv.columns == ASSIGNMENT.columns
    assert csv["reasons"].to_list()[1] == "below_threshold | nonconcept_a"
    rows = json.loads(exports.table_bytes(ASSIGNMENT, "json"))
    assert rows[1]["reasons"] == ["below_threshold", "nonconcept_a"] and set(rows[0]) == set(ASSIGNMENT.columns)
    nested = pl.DataFrame({"s": [{"k": 1}], "ll": [[[1, 2]]]})
    assert pl.read_csv(io.BytesIO(exports.table_bytes(nested, "csv")))["s"][0] == '{"k": 1}'
    with pytest.raises(ValueError):
        exports.table_bytes(ASSIGNMENT, "xlsx")


def test_the_exported_assignment_has_every_column_of_the_bundles(tmp_path) -> None:
    from components.data import assignment_frame
    from tests.core._tiny_bundle import planted_comet, write_bundle

    texts, a, b = planted_comet()
    bundle = __import__("core.bundle.reader", fromlist=["open_bundle"]).open_bundle(
        write_bundle(tmp_path / "b", texts, a, b, assignment=ASSIGNMENT.drop("tokens_a"))
    )
    frame = assignment_frame(bundle)
    stored = bundle.assignment().collect_schema().names()
    assert len(stored) == 14 and frame.columns[: len(stored)] == stored
    for fmt in ("csv", "parquet", "json"):
        payload = exports.table_bytes(frame, fmt)
        names = (
            pl.read_parquet(io.BytesIO(payload)).columns
            if fmt == "parquet"
            else pl.read_csv(io.BytesIO(payload)).columns
            if fmt == "csv"
            else list(json.loads(payload)[0])
        )
        assert set(stored) | {"tokens_a", "tokens_b"} <= set(names), fmt


def test_named_list_frame_keeps_the_list_order_and_adds_what_is_known() -> None:
    table = ASSIGNMENT.select("feature_a", "feature_b", "corr").cast({"feature_a": pl.Int32, "feature_b": pl.Int32})
    frame = exports.named_list_frame([(1, 7), (9, None), (3, 2)], table)
    assert frame.select("feature_a", "feature_b").rows() == [(1, 7), (9, None), (3, 2)]
    assert frame["corr"].to_list() == [0.05, None, 0.9]


def test_html_export_embeds_plotly_js_and_loads_nothing_from_a_cdn() -> None:
    html = exports.export_html(go.Figure(go.Scatter(x=[1, 2], y=[3, 4]))).decode()
    assert not re.search(r'<script[^>]*src="https?:', html)  # no script from the network
    assert len(html) > 1_000_000 and "Plotly.newPlot" in html  # plotly.js itself is in the file


def _block(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    ids_a, ids_b = rng.choice(16384, n, replace=False), rng.choice(16384, n, replace=False)
    return pl.DataFrame(
        {
            "feature_a": np.repeat(ids_a, n).astype(np.int32),
            "feature_b": np.tile(ids_b, n).astype(np.int32),
            "corr": rng.uniform(-1, 1, n * n),
        }
    )


def test_heatmap_export_layout_is_computed_for_the_paper_size() -> None:
    frame = _block(60)
    for size, inches in (("single", 3.5), ("double", 7.2)):
        fig = figures.build_heatmap_export_figure(frame, "feature_a", "feature_b", "corr", "block", "A", "B", size)
        assert fig.layout.width == int(inches * figures.PX_PER_INCH)
        plot_w = fig.layout.width - fig.layout.margin.l - fig.layout.margin.r
        plot_h = fig.layout.height - fig.layout.margin.t - fig.layout.margin.b
        assert plot_w / 60 == pytest.approx(plot_h / 60, rel=0.03)  # square cells
        assert len(fig.layout.yaxis.tickvals) == 60 and fig.data[0].type == "heatmap"
    small = figures.build_heatmap_export_figure(_block(3), "feature_a", "feature_b", "corr", "b", "A", "B", "single")
    assert small.layout.yaxis.tickfont.size == 8  # few rows: the normal font


@needs_chromium
@pytest.mark.parametrize("size", ["single", "double"])
def test_the_exported_heatmap_labels_every_row_at_both_paper_sizes(size: str) -> None:
    frame = _block(60)
    fig = figures.build_heatmap_export_figure(
        frame, "feature_a", "feature_b", "corr", "block", "A", "B", size, row_label="A", col_label="B"
    )
    svg = exports.export_static(fig, "svg", size).decode()
    ticks = re.findall(r'<g class="ytick">.*?>([^<>]+)</text>', svg)
    wanted = [f"A{v}" for v in frame["feature_a"].unique(maintain_order=True).to_list()]
    assert ticks == wanted
    columns = re.findall(r'<g class="xtick">.*?>([^<>]+)</text>', svg)
    assert len(columns) == 60
    width = float(re.search(r'<svg[^>]* width="([\d.]+)"', svg).group(1))
    assert width == pytest.approx(figures.PAPER_SIZES[size][0])


@needs_chromium
def test_static_export_reuses_one_browser_and_writes_valid_files() -> None:
    fig = figures.build_umap_figure(
        pl.DataFrame(
            {
                "feature": [0, 1, 2],
                "x": [0.0, 1.0, 2.0],
                "y": [1.0, 0.0, 1.0],
                "corr": [0.5, None, 0.9],
                "is_orphan": [False, True, False],
            }
        ),
        "a",
        highlight=[1],
        size="single",
    )
    png = exports.export_static(fig, "png", "single")
    width, _ = struct.unpack(">II", png[16:24])
    assert png[:4] == b"\x89PNG" and abs(width - 3.5 * figures.PNG_DPI) < 5
    assert exports._server_running()  # the browser stays up for the next figure
    assert exports.export_static(fig, "pdf", "double")[:4] == b"%PDF"


def test_a_failed_render_says_what_failed_and_a_missing_browser_says_so(monkeypatch) -> None:
    import kaleido
    from kaleido.errors import ChromeNotFoundError

    monkeypatch.setattr(exports, "_start_server", lambda: None)
    monkeypatch.setattr(exports, "_stop_server", lambda: None)
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise TimeoutError("render timed out")

    monkeypatch.setattr(kaleido, "calc_fig_sync", broken)
    with pytest.raises(exports.ExportError) as failed:
        exports.export_static(go.Figure(), "png", "single")
    assert len(calls) == 2  # tried once more with a fresh browser
    assert "failed while rendering" in str(failed.value) and "TimeoutError" in str(failed.value)
    assert "install" not in str(failed.value).lower()

    def missing(*args, **kwargs):
        raise ChromeNotFoundError("no chrome")

    monkeypatch.setattr(kaleido, "calc_fig_sync", missing)
    with pytest.raises(exports.ExportError, match="found no Chromium"):
        exports.export_static(go.Figure(), "svg", "single")
