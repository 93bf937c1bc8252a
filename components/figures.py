"""Pure plotly builders: ``build_*_figure(frame, ...) -> go.Figure``, one paper style.

No Streamlit and no torch here: every builder takes a polars frame (or plain values) and
returns a figure, so the same figure renders on a page and exports to PNG/SVG/PDF. Every
point that stands for a feature (or a pair, or a unit) carries its id in ``customdata``:
selection events count points within each trace, so the id is how a page knows what was
clicked.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import polars as pl

# one palette for the whole app and every export: side A, side B, both, muted, highlight
COLOR_A = "#2f6db5"
COLOR_B = "#c8433c"
COLOR_BOTH = "#6a4c93"
COLOR_MUTED = "#b8b8b8"
COLOR_HIGHLIGHT = "#f29e1f"
SIDE_COLORS = {"a": COLOR_A, "b": COLOR_B}
CORR_SCALE = "Viridis"
FONT_FAMILY = "Arial, Helvetica, DejaVu Sans, sans-serif"
# plotly draws with WebGL above this many points: below it SVG draws faster (two 2,048-point maps 1.5x, 1,024
# 2.1x; WebGL wins from 4,096 on; benchmarks/webgl_threshold.py in headless Chromium), and browsers cap WebGL
# contexts per page
WEBGL_THRESHOLD = 3000
# paper figures keep points as vector marks up to this many per map; above it a map's points are one
# WebGL layer (pixels at the export's resolution, axes and text still vector): tens of thousands of SVG
# marks take Chromium tens of seconds to draw and make files of many megabytes
VECTOR_POINTS_MAX = 5000

# paper sizes in CSS pixels (96 per inch): a single column is 3.5 in wide, a double one 7.2 in
PX_PER_INCH = 96
PAPER_SIZES: dict[str, tuple[int, int]] = {
    "single": (int(3.5 * PX_PER_INCH), int(2.6 * PX_PER_INCH)),
    "double": (int(7.2 * PX_PER_INCH), int(3.2 * PX_PER_INCH)),
}
EXPORT_FORMATS = ("png", "svg", "pdf")
PNG_DPI = 300


PAPER_TEMPLATE = "featurebridge"
BASE_FONT_SIZE = 10


@cache
def _paper_template(font_size: int) -> go.layout.Template:
    """simple_white with the paper's font, margins and thin axes (built once per font size)."""
    template = go.layout.Template(pio.templates["simple_white"])
    template.layout.update(
        font={"family": FONT_FAMILY, "size": font_size, "color": "#222222"},
        margin={"l": 50, "r": 20, "t": 40, "b": 45},
        legend={"font": {"size": font_size - 1}},
        title={"font": {"size": font_size + 1}},
    )
    for axis in (template.layout.xaxis, template.layout.yaxis):
        axis.update(showgrid=False, ticks="outside", linewidth=0.8)
    return template


# every figure starts in the paper style: plotly applies its default template when a figure is made, without
# the validation (a deep copy of the whole template, about 40 ms) that assigning one afterwards costs
pio.templates[PAPER_TEMPLATE] = _paper_template(BASE_FONT_SIZE)
pio.templates.default = PAPER_TEMPLATE


def apply_paper_style(fig: go.Figure, size: str | None = None, font_size: int = BASE_FONT_SIZE) -> go.Figure:
    """Give a figure the app's single paper style (font, white background, thin axes).

    Figures made after this module is imported start in it (it is plotly's default template); this
    puts it on any other figure, at another font size, or at a fixed paper size.

    Args:
        fig: the figure (modified in place and returned).
        size: ``"single"`` or ``"double"`` to fix the paper size; ``None`` leaves it responsive.
        font_size: base font size in points.

    Returns:
        The same figure.
    """
    if size is not None and size not in PAPER_SIZES:
        raise ValueError(f"size must be one of {sorted(PAPER_SIZES)}, got {size!r}")
    template = fig.layout.template
    if font_size != BASE_FONT_SIZE or template.layout.font.family != FONT_FAMILY:
        fig.update_layout(template=_paper_template(font_size))
    if size is not None:
        width, height = PAPER_SIZES[size]
        fig.update_layout(width=width, height=height, margin={"l": 45, "r": 10, "t": 30, "b": 40})
    return fig


def _scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > WEBGL_THRESHOLD else go.Scatter


def _ids(frame: pl.DataFrame, *columns: str) -> np.ndarray:
    """customdata: one row per point holding the ids named by ``columns``."""
    return np.stack([frame[c].to_numpy() for c in columns], axis=1) if frame.height else np.zeros((0, len(columns)))


# ---------------------------------------------------------------- linked UMAPs


def compute_linked_partners(
    selected: Iterable[int], pairs: pl.DataFrame, from_side: str, min_corr: float | None = None
) -> list[int]:
    """The features on the other side paired with the ``selected`` features of ``from_side``.

    Args:
        selected: feature ids of ``from_side``.
        pairs: a frame with ``feature_a``, ``feature_b`` (and ``corr`` when ``min_corr`` is set).
        from_side: ``"a"`` or ``"b"``.
        min_corr: keep only pairs at least this correlated.

    Returns:
        Sorted unique partner ids on the other side.
    """
    if from_side not in ("a", "b"):
        raise ValueError(f"from_side must be 'a' or 'b', got {from_side!r}")
    chosen = sorted({int(f) for f in selected})
    if not chosen or pairs.height == 0:
        return []
    mine, theirs = ("feature_a", "feature_b") if from_side == "a" else ("feature_b", "feature_a")
    rows = pairs.filter(pl.col(mine).is_in(chosen))
    if min_corr is not None and "corr" in rows.columns:
        rows = rows.filter(pl.col("corr") >= min_corr)
    return sorted({int(f) for f in rows[theirs].to_list() if f is not None})


def _map_categories(frame: pl.DataFrame) -> pl.DataFrame:
    """A ``category`` column for map points (``components.data.MAP_CATEGORIES``), derived from ``is_orphan`` if absent."""
    if "category" in frame.columns:
        return frame
    return frame.with_columns(
        pl.when(pl.col("is_orphan").fill_null(True))
        .then(pl.lit("orphan"))
        .otherwise(pl.lit("paired"))
        .alias("category")
    )


# which map categories (components.data.MAP_CATEGORIES) each point trace draws; the linked maps group their
# points by the same table, so the browser's maps and the static ones agree
MAP_TRACE_CATEGORIES: dict[str, tuple[str, ...]] = {
    "orphans": ("orphan",),
    "unpaired": ("unpaired", "dead"),
    "matched": ("paired",),
}


def _map_traces(
    frame: pl.DataFrame,
    side: str,
    highlight: Sequence[int],
    scale: float,
    colorbar: bool,
    vector: bool = False,
    webgl: bool | None = None,
) -> list[go.Scatter | go.Scattergl]:
    """A map's traces: ``orphans`` (crosses), ``unpaired`` (grey dots), ``matched`` (by pair r), ``highlight`` (rings).

    ``vector`` keeps every trace SVG (for print: a WebGL layer would be pasted into an SVG or PDF as pixels);
    ``webgl`` forces WebGL on or off (None: above ``WEBGL_THRESHOLD`` points).
    """
    if "label" not in frame.columns:
        frame = frame.with_columns(pl.lit("").alias("label"))
    frame = _map_categories(frame)
    hover = "feature %{customdata[0]}<br>%{text}<extra>" + side.upper() + "</extra>"
    if vector or webgl is False:
        trace: type[go.Scatter] | type[go.Scattergl] = go.Scatter
    else:
        trace = go.Scattergl if webgl else _scatter(frame.height)
    out: list[go.Scatter | go.Scattergl] = []
    # grey first, so the coloured paired points are drawn on top
    for name, cats, marker in (
        (
            "orphans",
            MAP_TRACE_CATEGORIES["orphans"],
            {
                "size": 5 * scale,
                "opacity": 0.6,
                "color": COLOR_MUTED,
                "symbol": "x-thin",
                "line": {"width": 1, "color": COLOR_MUTED},
            },
        ),
        (
            "unpaired",
            MAP_TRACE_CATEGORIES["unpaired"],
            {"size": 4 * scale, "opacity": 0.45, "color": COLOR_MUTED, "line": {"width": 0}},
        ),
    ):
        rows = frame.filter(pl.col("category").is_in(list(cats)))
        out.append(
            trace(
                name=name,
                x=rows["x"].to_numpy(),
                y=rows["y"].to_numpy(),
                mode="markers",
                customdata=_ids(rows, "feature"),
                text=rows["label"].to_list(),
                hovertemplate=hover,
                marker=marker,
            )
        )
    matched = frame.filter(pl.col("category").is_in(list(MAP_TRACE_CATEGORIES["matched"])))
    marker: dict[str, Any] = {
        "size": 6 * scale,
        "color": matched["corr"].fill_null(0.0).to_numpy(),
        "colorscale": CORR_SCALE,
        "cmin": 0.0,
        "cmax": 1.0,
        "line": {"width": 0},
    }
    if colorbar:
        marker["colorbar"] = {"title": {"text": "pair r"}, "thickness": 10}
    out.append(
        trace(
            name="matched",
            x=matched["x"].to_numpy(),
            y=matched["y"].to_numpy(),
            mode="markers",
            customdata=_ids(matched, "feature"),
            text=matched["label"].to_list(),
            hovertemplate=hover,
            marker=marker,
        )
    )
    lit = frame.filter(pl.col("feature").is_in([int(f) for f in highlight]))
    out.append(
        go.Scatter(
            name="highlight",
            x=lit["x"].to_numpy(),
            y=lit["y"].to_numpy(),
            mode="markers",
            customdata=_ids(lit, "feature"),
            text=lit["label"].to_list(),
            hovertemplate=hover,
            # an open symbol is drawn in marker.color (marker.line.color is ignored for it)
            marker={
                "size": 14 * scale,
                "color": COLOR_HIGHLIGHT,
                "symbol": "circle-open",
                "line": {"width": 2.5 * scale},
            },
        )
    )
    return out


def build_umap_figure(
    frame: pl.DataFrame,
    side: str,
    highlight: Sequence[int] = (),
    title: str | None = None,
    size: str | None = None,
    webgl: bool | None = None,
) -> go.Figure:
    """One SAE's UMAP of decoder directions, coloured by the kept pair's correlation, orphans marked.

    Args:
        frame: ``feature``, ``x``, ``y``, ``corr`` (the feature's kept pair's correlation, null
            if none), ``category`` (``paired`` / ``unpaired`` / ``orphan`` / ``dead``; or a bool
            ``is_orphan`` instead) and optionally ``label`` (hover text, e.g. top tokens).
        side: ``"a"`` or ``"b"`` (names the axis title and the trace).
        highlight: feature ids to ring (a selection, its partners, search hits).
        title: figure title.
        size: ``"single"`` / ``"double"``: lay the figure out for that paper size (markers and
            fonts scaled for print); None: for the screen.
        webgl: draw the points with WebGL (``Scattergl``); None: above ``WEBGL_THRESHOLD`` points. A
            paper ``size`` with few points stays vector whatever this says.

    Returns:
        Traces in this order: ``orphans`` (grey crosses), ``unpaired`` (grey dots: no kept pair,
        not an orphan), ``matched`` (coloured by pair r), ``highlight`` (rings, drawn on top; it
        repeats ids, so selecting it is harmless). Every trace's customdata is ``[[feature], ...]``.
    """
    scale = 1.0 if size is None else (0.5 if size == "single" else 0.7)
    vector = size is not None and frame.height <= VECTOR_POINTS_MAX
    fig = go.Figure(_map_traces(frame, side, highlight, scale, colorbar=True, vector=vector, webgl=webgl))
    # no dragmode here: Streamlit then picks "pan" with click-to-select; in lasso or box mode it turns
    # click selection off, and one click is the gesture that links the two maps
    fig.update_layout(
        title=title or f"SAE {side.upper()}: decoder directions (UMAP, cosine)",
        legend={"orientation": "h", "y": -0.12},
    )
    fig.update_xaxes(title_text="UMAP 1", showticklabels=False)
    fig.update_yaxes(title_text="UMAP 2", showticklabels=False)
    if size is None:
        return apply_paper_style(fig)
    fig = apply_paper_style(fig, size=size, font_size=8)
    fig.update_layout(legend={"orientation": "h", "y": -0.08, "font": {"size": 7}})
    return fig


def build_map_pair_figure(
    points: dict[str, pl.DataFrame],
    highlight: dict[str, Sequence[int]],
    titles: dict[str, str],
    size: str = "double",
) -> go.Figure:
    """Both maps side by side, with their rings: the Pair explorer's view as one paper figure.

    Args:
        points: side -> :func:`build_umap_figure`'s frame.
        highlight: side -> feature ids to ring.
        titles: side -> panel title.
        size: paper size (``"double"`` by default: two panels need the width).

    Returns:
        One figure, panel A left and panel B right, one shared colour scale.
    """
    from plotly.subplots import make_subplots

    scale = 0.5 if size == "single" else 0.7
    fig = make_subplots(
        rows=1, cols=2, subplot_titles=[titles.get("a", "A"), titles.get("b", "B")], horizontal_spacing=0.06
    )
    for col, side in enumerate(("a", "b"), start=1):
        vector = points[side].height <= VECTOR_POINTS_MAX
        traces = _map_traces(points[side], side, highlight.get(side, ()), scale, colorbar=(side == "b"), vector=vector)
        for trace in traces:
            trace.showlegend = side == "a"
            fig.add_trace(trace, row=1, col=col)
    fig = apply_paper_style(fig, size=size, font_size=8)
    # UMAP axes carry no units: no ticks, no titles, so the legend has the bottom to itself
    fig.update_xaxes(showticklabels=False, ticks="")
    fig.update_yaxes(showticklabels=False, ticks="")
    fig.update_layout(
        legend={"orientation": "h", "y": -0.02, "yanchor": "top", "x": 0.5, "xanchor": "center", "font": {"size": 7}},
        margin={"l": 10, "r": 10, "t": 35, "b": 30},
    )
    fig.update_annotations(font_size=9)
    return fig


def build_map_view_figure(
    points: dict[str, pl.DataFrame],
    highlight: dict[str, Sequence[int]],
    titles: dict[str, str],
    size: str | None,
) -> go.Figure:
    """The Export page's map figure: both maps side by side when ``points`` holds both sides, else the one map.

    Args:
        points: side -> :func:`build_umap_figure`'s frame (one side or both).
        highlight: side -> feature ids to ring.
        titles: side -> panel title.
        size: paper size (None: as on screen; the two-map figure is then laid out "double").

    Returns:
        :func:`build_map_pair_figure`'s figure, or :func:`build_umap_figure`'s.
    """
    if len(points) == 2:
        return build_map_pair_figure(points, highlight, titles, size or "double")
    ((side, frame),) = points.items()
    return build_umap_figure(frame, side, highlight.get(side, ()), titles.get(side), size)


# ---------------------------------------------------------------- correlation


def build_unit_scatter_figure(frame: pl.DataFrame, feature_a: int, feature_b: int) -> go.Figure:
    """Activation in A vs in B, one point per unit where either fires, coloured by who fires.

    Args:
        frame: ``unit``, ``act_a``, ``act_b``, ``context`` (hover text).
        feature_a: the A feature (axis title).
        feature_b: the B feature (axis title).

    Returns:
        Up to three traces, ``A only``, ``B only``, ``both``; customdata ``[[unit], ...]``.
    """
    groups = (
        ("A only", (pl.col("act_a") > 0) & (pl.col("act_b") <= 0), COLOR_A),
        ("B only", (pl.col("act_a") <= 0) & (pl.col("act_b") > 0), COLOR_B),
        ("both", (pl.col("act_a") > 0) & (pl.col("act_b") > 0), COLOR_BOTH),
    )
    fig = go.Figure()
    for name, cond, color in groups:
        rows = frame.filter(cond)
        fig.add_trace(
            _scatter(rows.height)(
                name=f"{name} ({rows.height})",
                x=rows["act_a"].to_numpy(),
                y=rows["act_b"].to_numpy(),
                mode="markers",
                customdata=_ids(rows, "unit"),
                text=rows["context"].to_list(),
                hovertemplate="unit %{customdata[0]}<br>%{text}<br>A %{x:.3f} · B %{y:.3f}<extra></extra>",
                marker={"size": 6, "color": color, "opacity": 0.75, "line": {"width": 0}},
            )
        )
    fig.update_layout(
        title=f"A{feature_a} vs B{feature_b}: activation per unit", legend={"orientation": "h", "y": -0.2}
    )
    fig.update_xaxes(title_text=f"activation of A{feature_a}")
    fig.update_yaxes(title_text=f"activation of B{feature_b}")
    return apply_paper_style(fig)


def build_corr_cos_figure(frame: pl.DataFrame) -> go.Figure:
    """Best activation correlation vs decoder cosine, one point per pair.

    Args:
        frame: ``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``.

    Returns:
        Two traces (``kept``, ``dropped``); customdata ``[[feature_a, feature_b], ...]``.
    """
    fig = go.Figure()
    for name, cond, color in (("kept", pl.col("kept"), COLOR_BOTH), ("dropped", ~pl.col("kept"), COLOR_MUTED)):
        rows = frame.filter(cond.fill_null(False))
        fig.add_trace(
            _scatter(rows.height)(
                name=name,
                x=rows["corr"].to_numpy(),
                y=rows["cos"].to_numpy(),
                mode="markers",
                customdata=_ids(rows, "feature_a", "feature_b"),
                hovertemplate="A%{customdata[0]} ↔ B%{customdata[1]}<br>corr %{x:.3f} · cos %{y:.3f}<extra></extra>",
                marker={"size": 5, "color": color, "opacity": 0.7, "line": {"width": 0}},
            )
        )
    fig.update_layout(title="Activation correlation vs decoder cosine")
    fig.update_xaxes(title_text="activation correlation (Pearson)")
    fig.update_yaxes(title_text="decoder cosine")
    return apply_paper_style(fig)


def build_corr_histogram_figure(frame: pl.DataFrame, threshold: float | None = None) -> go.Figure:
    """Distribution of each feature's best partner correlation, both directions overlaid.

    Args:
        frame: ``direction`` (``"a->b"`` / ``"b->a"``) and ``corr``: one row per feature.
        threshold: a kept-pair threshold to draw as a vertical line.

    Returns:
        One histogram trace per direction.
    """
    fig = go.Figure()
    for direction, color in (("a->b", COLOR_A), ("b->a", COLOR_B)):
        values = frame.filter(pl.col("direction") == direction)["corr"].drop_nulls().to_numpy()
        fig.add_trace(
            go.Histogram(
                x=values,
                name=f"best {direction.replace('->', ' → ')}",
                marker={"color": color},
                opacity=0.6,
                xbins={"start": -0.05, "end": 1.0, "size": 0.025},
            )
        )
    if threshold is not None:
        fig.add_vline(x=threshold, line_dash="dash", line_color="#555555", annotation_text=f"{threshold:g}")
    fig.update_layout(barmode="overlay", title="Best partner correlation per feature")
    fig.update_xaxes(title_text="correlation")
    fig.update_yaxes(title_text="features")
    return apply_paper_style(fig)


def build_null_figure(frame: pl.DataFrame) -> go.Figure:
    """Each similarity metric beside its null: null mean ± 2 std as a bar, the value as a dot.

    Args:
        frame: ``metric``, ``value``, ``null_mean``, ``null_std``, ``p_value``.

    Returns:
        Two traces: ``null`` (error bars) and ``observed``; customdata ``[[metric], ...]``.
    """
    labels = frame["metric"].to_list()
    fig = go.Figure()
    fig.add_trace(
        go.Scatter(
            name="null mean ± 2 sd",
            x=frame["null_mean"].to_numpy(),
            y=labels,
            mode="markers",
            error_x={"type": "data", "array": (2 * frame["null_std"].fill_null(0.0)).to_numpy(), "color": COLOR_MUTED},
            marker={"color": COLOR_MUTED, "size": 9, "symbol": "line-ns-open"},
            customdata=_ids(frame, "metric"),
            hovertemplate="%{y}: null %{x:.3f}<extra></extra>",
        )
    )
    fig.add_trace(
        go.Scatter(
            name="observed",
            x=frame["value"].to_numpy(),
            y=labels,
            mode="markers",
            marker={"color": COLOR_BOTH, "size": 10},
            customdata=_ids(frame, "metric"),
            text=[f"p = {p:.3g}" if p is not None else "no null" for p in frame["p_value"].to_list()],
            hovertemplate="%{y}: %{x:.3f} (%{text})<extra></extra>",
        )
    )
    fig.update_layout(title="Similarity of paired decoders vs permutation null", legend={"orientation": "h", "y": -0.2})
    fig.update_xaxes(title_text="value")
    fig.update_yaxes(autorange="reversed")
    return apply_paper_style(fig)


# ---------------------------------------------------------------- heatmaps (clickable)


def build_cell_heatmap_figure(
    frame: pl.DataFrame,
    row: str,
    col: str,
    value: str,
    title: str,
    row_title: str,
    col_title: str,
    zmin: float | None = None,
    zmax: float | None = None,
) -> go.Figure:
    """A heatmap drawn as square markers, so a click selects a cell (heatmap traces cannot be selected).

    The figure has a fixed size (show it with ``width="content"``): markers have a size in
    pixels, so the cells tile without stripes only when the plot area is exactly as many
    cells wide and tall as there are columns and rows. For paper sizes use
    :func:`build_heatmap_export_figure`.

    Args:
        frame: one row per cell, with ``row``, ``col`` and ``value`` columns (rows and columns are
            categories, drawn in order of first appearance).
        row: the column holding the row id.
        col: the column holding the column id.
        value: the column holding the cell value.
        title: figure title.
        row_title: y axis title.
        col_title: x axis title.
        zmin: colour scale minimum (default: data minimum).
        zmax: colour scale maximum.

    Returns:
        One scatter trace named ``cells``; customdata ``[[row id, col id], ...]``.
    """
    rows = [str(v) for v in frame[row].unique(maintain_order=True).to_list()]
    cols = [str(v) for v in frame[col].unique(maintain_order=True).to_list()]
    n = max(len(rows), len(cols), 1)
    cell = max(10, min(40, int(640 / n)))
    values = frame[value].to_numpy().astype(np.float64)
    longest = max((len(r) for r in rows), default=1)
    margin = {"l": 40 + 7 * longest, "r": 90, "t": 50, "b": 50 + 7 * max((len(c) for c in cols), default=1)}
    fig = go.Figure(
        go.Scatter(
            name="cells",
            x=[str(v) for v in frame[col].to_list()],
            y=[str(v) for v in frame[row].to_list()],
            mode="markers",
            customdata=_ids(frame, row, col),
            marker={
                "symbol": "square",
                "size": cell,
                "color": values,
                "colorscale": "RdBu_r",
                "cmin": zmin if zmin is not None else float(np.nanmin(values)) if values.size else 0.0,
                "cmax": zmax if zmax is not None else float(np.nanmax(values)) if values.size else 1.0,
                "colorbar": {"title": {"text": value}, "thickness": 10},
                "line": {"width": 0},
            },
            hovertemplate=f"{row_title} %{{y}} · {col_title} %{{x}}<br>{value} %{{marker.color:.3f}}<extra></extra>",
        )
    )
    fig.update_layout(title=title, clickmode="event+select")
    fig.update_xaxes(
        title_text=col_title,
        type="category",
        categoryorder="array",
        categoryarray=cols,
        tickangle=-90 if len(cols) > 12 else 0,
    )
    fig.update_yaxes(
        title_text=row_title, type="category", categoryorder="array", categoryarray=rows, autorange="reversed"
    )
    fig = apply_paper_style(fig)
    # after the paper style (which sets margins): the plot area is exactly cells x cell pixels
    fig.update_layout(
        width=margin["l"] + margin["r"] + cell * max(len(cols), 1),
        height=margin["t"] + margin["b"] + cell * max(len(rows), 1),
        margin=margin,
    )
    fig.update_xaxes(automargin=False, autorange=False, range=[-0.5, len(cols) - 0.5])
    fig.update_yaxes(automargin=False, autorange=False, range=[len(rows) - 0.5, -0.5])
    return fig


def build_heatmap_export_figure(
    frame: pl.DataFrame,
    row: str,
    col: str,
    value: str,
    title: str,
    row_title: str,
    col_title: str,
    size: str = "single",
    zmin: float | None = None,
    zmax: float | None = None,
    row_label: str = "",
    col_label: str = "",
) -> go.Figure:
    """A heatmap laid out for a paper size: square cells, every row and column labelled.

    A real heatmap trace (cells always tile, at any size). The width is the paper column's;
    the cell is what that width leaves for the columns (smaller if the rows would make the
    figure taller than 9 in), and the labels' font is sized to the cell, so no label is
    dropped however many rows there are.

    Args:
        frame: one row per cell (``row``, ``col``, ``value`` columns; ids in order of first appearance).
        row: the column holding the row id.
        col: the column holding the column id.
        value: the column holding the cell value.
        title: figure title.
        row_title: y axis title.
        col_title: x axis title.
        size: ``"single"`` (3.5 in) or ``"double"`` (7.2 in).
        zmin: colour scale minimum (default: data minimum).
        zmax: colour scale maximum.
        row_label: prefix of each row's tick label (``"A"`` gives ``A12``).
        col_label: prefix of each column's tick label.

    Returns:
        One ``heatmap`` trace; the figure's width and height are set.
    """
    if size not in PAPER_SIZES:
        raise ValueError(f"size must be one of {sorted(PAPER_SIZES)}, got {size!r}")
    rows = frame[row].unique(maintain_order=True).to_list()
    cols = frame[col].unique(maintain_order=True).to_list()
    ri = {v: i for i, v in enumerate(rows)}
    ci = {v: i for i, v in enumerate(cols)}
    z = np.full((len(rows), len(cols)), np.nan)
    for r, c, v in zip(frame[row].to_list(), frame[col].to_list(), frame[value].to_list(), strict=True):
        z[ri[r], ci[c]] = np.nan if v is None else float(v)
    row_text = [f"{row_label}{v}" for v in rows]
    col_text = [f"{col_label}{v}" for v in cols]
    width = PAPER_SIZES[size][0]
    max_height = 9 * PX_PER_INCH
    top, right = 30, 55
    # a first guess of the label widths at 7 px per character, refined once the cell is known
    cell = 12.0
    for _ in range(2):
        font = max(3.0, min(8.0, 0.8 * cell))
        left = 18 + 0.62 * font * max((len(t) for t in row_text), default=1)
        bottom = 30 + 0.62 * font * max((len(t) for t in col_text), default=1)
        cell = (width - left - right) / max(len(cols), 1)
        cell = min(cell, (max_height - top - bottom) / max(len(rows), 1), 40.0)
    height = int(top + bottom + cell * max(len(rows), 1))
    zmin = float(np.nanmin(z)) if zmin is None and np.isfinite(z).any() else zmin
    zmax = float(np.nanmax(z)) if zmax is None and np.isfinite(z).any() else zmax
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=col_text,
            y=row_text,
            colorscale="RdBu_r",
            zmin=zmin,
            zmax=zmax,
            colorbar={"title": {"text": value, "font": {"size": 7}}, "thickness": 8, "tickfont": {"size": 7}},
            xgap=0,
            ygap=0,
            hovertemplate=f"{row_title} %{{y}} · {col_title} %{{x}}<br>{value} %{{z:.3f}}<extra></extra>",
        )
    )
    fig = apply_paper_style(fig, size=size, font_size=8)
    fig.update_layout(
        title={"text": title, "font": {"size": 9}},
        width=width,
        height=height,
        margin={"l": int(left), "r": right, "t": top, "b": int(bottom)},
    )
    # every label, in order, even when the cells are small (plotly would thin out an automatic axis)
    fig.update_xaxes(
        title_text=col_title,
        type="category",
        tickmode="array",
        tickvals=col_text,
        ticktext=col_text,
        tickangle=-90,
        tickfont={"size": font},
        ticks="",
        automargin=False,
        title_font={"size": 8},
    )
    fig.update_yaxes(
        title_text=row_title,
        type="category",
        tickmode="array",
        tickvals=row_text,
        ticktext=row_text,
        autorange="reversed",
        tickfont={"size": font},
        ticks="",
        automargin=False,
        title_font={"size": 8},
    )
    return fig


def order_block(frame: pl.DataFrame, pairs: pl.DataFrame) -> pl.DataFrame:
    """Order a feature x feature block so matched pairs sit on the diagonal.

    Args:
        frame: ``feature_a``, ``feature_b``, ``corr``: the block's cells.
        pairs: ``feature_a``, ``feature_b``: the pairing (first partner wins for repeated ids).

    Returns:
        ``frame`` sorted by (row order, column order): A features in pair order then the rest,
        B features in the order of their A partners then the rest.
    """
    a_ids = frame["feature_a"].unique(maintain_order=True).to_list()
    b_ids = frame["feature_b"].unique(maintain_order=True).to_list()
    partner = {}
    for fa, fb in zip(pairs["feature_a"].to_list(), pairs["feature_b"].to_list(), strict=True):
        partner.setdefault(fa, fb)
    a_order = sorted(a_ids, key=lambda f: (f not in partner, f))
    b_order = []
    for fa in a_order:
        fb = partner.get(fa)
        if fb in b_ids and fb not in b_order:
            b_order.append(fb)
    b_order += sorted(f for f in b_ids if f not in b_order)
    rank_a = pl.DataFrame(
        {"feature_a": a_order, "_ra": range(len(a_order))}, schema_overrides={"feature_a": frame.schema["feature_a"]}
    )
    rank_b = pl.DataFrame(
        {"feature_b": b_order, "_rb": range(len(b_order))}, schema_overrides={"feature_b": frame.schema["feature_b"]}
    )
    return frame.join(rank_a, on="feature_a").join(rank_b, on="feature_b").sort("_ra", "_rb").drop("_ra", "_rb")


# ---------------------------------------------------------------- one feature


def build_activation_histogram_figure(counts: Sequence[int], width: float, side: str, feature: int) -> go.Figure:
    """A feature's histogram of non-zero activations (bins ``[i w, (i + 1) w)``).

    Args:
        counts: count per bin.
        width: bin width.
        side: ``"a"`` or ``"b"`` (colour).
        feature: the feature id (title).

    Returns:
        One bar trace.
    """
    counts = np.asarray(list(counts), dtype=np.int64)
    centers = (np.arange(counts.size) + 0.5) * width
    fig = go.Figure(
        go.Bar(x=centers, y=counts, width=width, marker={"color": SIDE_COLORS.get(side, COLOR_BOTH)}, name="units")
    )
    fig.update_layout(title=f"{side.upper()}{feature}: non-zero activations", bargap=0.02)
    fig.update_xaxes(title_text="activation")
    fig.update_yaxes(title_text="units")
    return apply_paper_style(fig)


def build_token_bar_figure(
    tokens: Sequence[str], values: Sequence[float], title: str, color: str = COLOR_BOTH
) -> go.Figure:
    """Horizontal bars: tokens (top tokens, logit effects) with a value each, largest on top.

    Args:
        tokens: token texts.
        values: one value per token.
        title: figure title.
        color: bar colour.

    Returns:
        One bar trace.
    """
    fig = go.Figure(go.Bar(x=list(values), y=[repr(t)[1:-1] for t in tokens], orientation="h", marker={"color": color}))
    fig.update_layout(title=title, height=max(180, 22 * len(tokens) + 60))
    fig.update_yaxes(autorange="reversed", type="category")
    return apply_paper_style(fig)


# ---------------------------------------------------------------- small inline charts (HTML, no plotly)
# A feature card draws two to four small charts; as plotly figures each costs the browser a plotly
# chart mount (most of the Feature page's load), as inline SVG/HTML a few DOM nodes. The plotly
# builders above stay the ones the Export page writes to files.


def build_histogram_svg(counts: Sequence[int], width: float, color: str, title: str, height: int = 140) -> str:
    """A histogram of non-zero activations as inline SVG (bins ``[i w, (i + 1) w)``), with its axis range.

    Args:
        counts: count per bin.
        width: bin width.
        color: bar colour.
        title: the caption above the bars.
        height: the plot's height in pixels.

    Returns:
        ``<figure>`` HTML: a caption, an SVG whose ``<rect>`` per bin carries its range and count as a
        tooltip, and the axis ends (0 and the last bin's upper edge).
    """
    import html as _html

    values = [int(c) for c in counts]
    n = max(len(values), 1)
    top = max(values + [1])
    bars = []
    for i, c in enumerate(values):
        h = height * c / top
        tip = f"[{i * width:.3g}, {(i + 1) * width:.3g}): {c:,} units"
        bars.append(
            f'<rect x="{i / n * 100:.3f}%" y="{height - h:.1f}" width="{100 / n * 0.94:.3f}%" height="{h:.1f}" '
            f'fill="{color}"><title>{_html.escape(tip)}</title></rect>'
        )
    return (
        f'<figure class="fb-hist" style="margin:4px 0 8px 0"><figcaption style="font-size:0.8rem;color:#444">'
        f"{_html.escape(title)}</figcaption>"
        f'<svg width="100%" height="{height}" preserveAspectRatio="none" style="display:block;'
        f'border-bottom:1px solid #888">{"".join(bars)}</svg>'
        f'<div style="display:flex;justify-content:space-between;font-size:0.75rem;color:#666">'
        f"<span>0</span><span>activation</span><span>{len(values) * width:.3g}</span></div></figure>"
    )


def build_token_bars_html(tokens: Sequence[str], values: Sequence[float], title: str, color: str = COLOR_BOTH) -> str:
    """Horizontal bars (top tokens, logit effects) as HTML, largest first, each token shown as written.

    Args:
        tokens: token texts.
        values: one value per token (bars are scaled to the largest magnitude).
        title: the caption above the bars.
        color: bar colour.

    Returns:
        A ``<figure>`` with one row per token: the token (escaped, whitespace made visible), a bar, the value.
    """
    import html as _html

    vals = [float(v) for v in values]
    scale = max([abs(v) for v in vals] + [1e-12])
    rows = []
    for tok, v in zip(tokens, vals, strict=False):
        shown = _html.escape(repr(str(tok))[1:-1])
        rows.append(
            '<div style="display:flex;align-items:center;gap:6px;font-size:0.8rem;line-height:1.35">'
            f'<code style="flex:0 0 9em;overflow:hidden;text-overflow:ellipsis;white-space:nowrap">{shown}</code>'
            f'<div style="flex:1 1 auto"><div style="width:{abs(v) / scale * 100:.1f}%;height:0.8em;'
            f'background:{color}"></div></div><span style="flex:0 0 4.5em;text-align:right">{v:,.3g}</span></div>'
        )
    return (
        f'<figure class="fb-bars" style="margin:4px 0 8px 0"><figcaption style="font-size:0.8rem;color:#444">'
        f"{_html.escape(title)}</figcaption>{''.join(rows)}</figure>"
    )


# ---------------------------------------------------------------- export


def export_figure(fig: go.Figure, fmt: str, size: str = "single") -> bytes:
    """A figure as PNG (300 dpi), SVG or PDF at a paper column size, in the paper style.

    Needs kaleido and a Chromium it can find (Debian ``chromium``); raises RuntimeError with
    what to install otherwise.

    Args:
        fig: the figure (copied, not modified).
        fmt: ``"png"``, ``"svg"`` or ``"pdf"``.
        size: ``"single"`` or ``"double"`` column.

    Returns:
        The file's bytes.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
    styled = apply_paper_style(go.Figure(fig), size=size, font_size=8)
    width, height = PAPER_SIZES[size]
    scale = PNG_DPI / PX_PER_INCH if fmt == "png" else 1.0
    try:
        return styled.to_image(format=fmt, width=width, height=height, scale=scale)
    except Exception as exc:  # kaleido raises several types when no browser is found
        raise RuntimeError(
            f"Static export needs kaleido with a Chromium browser (apt-get install chromium): {exc}"
        ) from exc
