"""Pure figure builders: trace types, feature ids in customdata, linked highlighting, paper export."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import plotly.graph_objects as go
import polars as pl
import pytest

from components import figures


def _points(n: int) -> pl.DataFrame:
    rng = np.random.default_rng(0)
    return pl.DataFrame(
        {
            "feature": np.arange(n, dtype=np.int32),
            "x": rng.standard_normal(n),
            "y": rng.standard_normal(n),
            "corr": [None if i % 5 == 0 else 0.1 * (i % 10) for i in range(n)],
            "is_orphan": [i % 5 == 0 for i in range(n)],
            "label": [f"tok{i}" for i in range(n)],
        }
    )


PAIRS = pl.DataFrame({"feature_a": [0, 1, 1, 4], "feature_b": [10, 11, 12, 14], "corr": [0.9, 0.5, 0.2, 0.05]})


def test_linked_partners_follow_pairs_both_ways() -> None:
    assert figures.compute_linked_partners([1], PAIRS, "a") == [11, 12]
    assert figures.compute_linked_partners([1, 0, 1], PAIRS, "a") == [10, 11, 12]
    assert figures.compute_linked_partners([12, 14], PAIRS, "b") == [1, 4]
    assert figures.compute_linked_partners([1], PAIRS, "a", min_corr=0.3) == [11]
    assert figures.compute_linked_partners([], PAIRS, "a") == []
    assert figures.compute_linked_partners([99], PAIRS, "a") == []
    with pytest.raises(ValueError):
        figures.compute_linked_partners([1], PAIRS, "c")


def test_umap_figure_traces_customdata_and_highlight() -> None:
    frame = _points(20)
    fig = figures.build_umap_figure(frame, "a", highlight=[3, 5, 999])
    names = [t.name for t in fig.data]
    assert names == ["orphans", "unpaired", "matched", "highlight"]
    orphans, unpaired, matched, lit = fig.data
    assert len(unpaired.customdata) == 0  # a frame with only is_orphan: every other point is paired
    assert isinstance(matched, go.Scatter)  # small sets stay SVG
    ids = sorted(int(c[0]) for t in (matched, orphans) for c in t.customdata)
    assert ids == list(range(20))
    assert sorted(int(c[0]) for c in orphans.customdata) == [0, 5, 10, 15]
    assert sorted(int(c[0]) for c in lit.customdata) == [3, 5]  # 999 is not a feature: ignored
    # the highlight ring sits exactly on the feature's point
    x_of = dict(zip(frame["feature"].to_list(), frame["x"].to_list(), strict=True))
    assert [x_of[int(c[0])] for c in lit.customdata] == pytest.approx(list(lit.x))


def test_map_categories_each_get_their_trace_and_paper_sizes_shrink_markers() -> None:
    frame = _points(12).with_columns(
        pl.Series("category", ["paired", "unpaired", "orphan", "dead"] * 3), pl.col("corr").fill_null(0.4)
    )
    fig = figures.build_umap_figure(frame, "a")
    ids = {t.name: sorted(int(c[0]) for c in t.customdata) for t in fig.data}
    assert ids["matched"] == [0, 4, 8] and ids["orphans"] == [2, 6, 10] and ids["unpaired"] == [1, 3, 5, 7, 9, 11]
    paper = figures.build_umap_figure(frame, "a", size="single")
    assert paper.layout.width == figures.PAPER_SIZES["single"][0]
    assert paper.data[2].marker.size < fig.data[2].marker.size
    both = figures.build_map_pair_figure({"a": frame, "b": frame}, {"a": [0], "b": [4]}, {"a": "A", "b": "B"})
    assert both.layout.width == figures.PAPER_SIZES["double"][0]
    assert [t.name for t in both.data].count("highlight") == 2


def test_large_maps_use_webgl() -> None:
    fig = figures.build_umap_figure(_points(figures.WEBGL_THRESHOLD + 1), "b")
    assert isinstance(fig.data[0], go.Scattergl) and isinstance(fig.data[2], go.Scattergl)


def test_unit_scatter_splits_who_fires() -> None:
    frame = pl.DataFrame(
        {"unit": [0, 1, 2, 3], "act_a": [1.0, 0.0, 2.0, 0.5], "act_b": [0.0, 1.0, 1.0, 0.2], "context": list("abcd")}
    )
    fig = figures.build_unit_scatter_figure(frame, 1, 2)
    by_name = {t.name.split(" (")[0]: sorted(int(c[0]) for c in t.customdata) for t in fig.data}
    assert by_name == {"A only": [0], "B only": [1], "both": [2, 3]}


def test_corr_cos_and_histogram_and_null_figures() -> None:
    pairs = PAIRS.with_columns(pl.Series("cos", [0.8, 0.1, 0.0, -0.1]), pl.Series("kept", [True, True, False, False]))
    fig = figures.build_corr_cos_figure(pairs)
    assert [t.name for t in fig.data] == ["kept", "dropped"]
    assert [list(c) for c in fig.data[0].customdata] == [[0, 10], [1, 11]]
    best = pl.DataFrame({"direction": ["a->b", "a->b", "b->a"], "corr": [0.2, 0.4, 0.3]})
    hist = figures.build_corr_histogram_figure(best, threshold=0.1)
    assert all(isinstance(t, go.Histogram) for t in hist.data) and len(hist.data) == 2
    sim = pl.DataFrame(
        {
            "metric": ["svcca", "rsa"],
            "value": [0.4, 0.1],
            "null_mean": [0.02, 0.0],
            "null_std": [0.01, 0.01],
            "p_value": [0.001, None],
        }
    )
    null = figures.build_null_figure(sim)
    assert [t.name for t in null.data] == ["null mean ± 2 sd", "observed"]
    assert list(null.data[1].text) == ["p = 0.001", "no null"]


def test_block_ordering_puts_matches_on_the_diagonal() -> None:
    block = pl.DataFrame({"feature_a": [5, 5, 7, 7], "feature_b": [1, 2, 1, 2], "corr": [0.1, 0.9, 0.8, 0.0]})
    pairs = pl.DataFrame({"feature_a": [7, 5], "feature_b": [1, 2]})
    ordered = figures.order_block(block, pairs)
    fig = figures.build_cell_heatmap_figure(ordered, "feature_a", "feature_b", "corr", "t", "A", "B")
    rows, cols = list(fig.layout.yaxis.categoryarray), list(fig.layout.xaxis.categoryarray)
    assert rows == ["5", "7"] and cols == ["2", "1"]  # A5 <-> B2 and A7 <-> B1 on the diagonal
    assert fig.data[0].marker.symbol == "square"  # selectable (heatmap traces are not)
    assert [list(c) for c in fig.data[0].customdata] == [[5, 2], [5, 1], [7, 2], [7, 1]]


def test_feature_figures() -> None:
    hist = figures.build_activation_histogram_figure([3, 2, 1], 0.5, "a", 4)
    assert list(hist.data[0].x) == [0.25, 0.75, 1.25] and hist.data[0].marker.color == figures.COLOR_A
    bars = figures.build_token_bar_figure(["the", " cat"], [5, 3], "Top tokens")
    assert list(bars.data[0].y) == ["the", " cat"]


def test_paper_style_sizes() -> None:
    fig = figures.apply_paper_style(go.Figure(), size="double")
    assert (fig.layout.width, fig.layout.height) == figures.PAPER_SIZES["double"]
    assert "Arial" in fig.layout.template.layout.font.family
    with pytest.raises(ValueError):
        figures.apply_paper_style(go.Figure(), size="poster")


def test_the_screen_heatmap_tiles_its_cells_exactly() -> None:
    frame = pl.DataFrame({"r": [1, 1, 2, 2, 3, 3], "c": [7, 8, 7, 8, 7, 8], "v": [0.1, 0.2, 0.3, 0.4, 0.5, 0.6]})
    fig = figures.build_cell_heatmap_figure(frame, "r", "c", "v", "t", "A", "B")
    cell = fig.data[0].marker.size
    m = fig.layout.margin
    assert fig.layout.width - m.l - m.r == 2 * cell and fig.layout.height - m.t - m.b == 3 * cell
    assert list(fig.layout.yaxis.range) == [2.5, -0.5] and fig.layout.yaxis.autorange is False


def test_every_figure_starts_in_the_paper_style_and_export_sizes_change_the_font() -> None:
    fig = figures.build_token_bar_figure(["a", "b"], [1.0, 2.0], "t")
    assert fig.layout.template.layout.font.family == figures.FONT_FAMILY
    assert fig.layout.template.layout.xaxis.ticks == "outside"
    small = figures.apply_paper_style(go.Figure(fig), size="single", font_size=8)
    assert small.layout.template.layout.font.size == 8
    assert fig.layout.template.layout.font.size == figures.BASE_FONT_SIZE


@pytest.mark.skipif(shutil.which("chromium") is None, reason="static export needs Debian chromium for kaleido")
@pytest.mark.parametrize(("fmt", "magic"), [("png", b"\x89PNG"), ("svg", b"<svg"), ("pdf", b"%PDF")])
def test_export_writes_valid_files(fmt: str, magic: bytes) -> None:
    fig = figures.build_umap_figure(_points(30), "a", highlight=[1])
    payload = figures.export_figure(fig, fmt, "single")
    assert magic in payload[:200]
    if fmt == "png":
        import struct

        width, height = struct.unpack(">II", payload[16:24])
        # 3.5 in at 300 dpi
        assert abs(width - 3.5 * figures.PNG_DPI) < 5 and height > 0


def test_components_never_import_torch() -> None:
    code = (
        "import sys; import components.figures, components.data, components.state, components.cache, "
        "components.widgets, components.exports; bad = [m for m in ('torch',) if m in sys.modules]; print(bad); sys.exit(1 if bad else 0)"
    )
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr


def test_inline_histogram_has_one_bar_per_bin_scaled_to_the_largest() -> None:
    svg = figures.build_histogram_svg([4, 2, 0, 1], 0.5, "#123456", "A3: <acts>")
    assert svg.count("<rect") == 4
    assert 'height="140.0"' in svg and 'height="70.0"' in svg and 'height="0.0"' in svg
    assert "[0.5, 1): 2 units" in svg and "&lt;acts&gt;" in svg
    # the axis ends at the last bin's upper edge
    assert "<span>2</span>" in svg


def test_inline_token_bars_escape_tokens_and_scale_to_the_largest_magnitude() -> None:
    html = figures.build_token_bars_html(["<b>", " the", "\\n"], [10.0, -5.0, 2.5], "Top & bottom")
    assert "&lt;b&gt;" in html and "<b>" not in html and "Top &amp; bottom" in html
    assert "width:100.0%" in html and "width:50.0%" in html and "width:25.0%" in html
    assert "<code" in html and "\\\\n" in html  # a newline token is shown as \\n, not as a line break
