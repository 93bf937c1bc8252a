"""Heatmaps: a feature x feature correlation block (matches on the diagonal) and the layer sweep."""

from __future__ import annotations

import polars as pl
import streamlit as st

from components import builds, figures
from components.cache import bundle_mtime, load_correlation_block, load_pairs, load_split_group
from components.data import n_features, sweep_cells, sweep_frame
from components.plot import figure_json, render_plot
from components.state import get_state, set_widget, widget_value
from components.widgets import open_pair, require_bundle

MAX_BLOCK = 60
# the session key of the sweep cell last clicked
SWEEP_CELL = "hm-sweep-cell"

state = get_state()
st.title("Heatmaps")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
pairs = load_pairs(path, mtime)
kept = pairs.filter(pl.col("kept")).sort("corr", descending=True)

st.subheader("Feature x feature correlation")
sources = ["strongest kept pairs", "feature ids"]
if state.selection.get("a") or state.selection.get("b"):
    sources.insert(0, "Pair explorer selection")
SPLIT = "this feature's split group"
if state.feature is not None and bundle.has("matches"):
    sources.insert(0, SPLIT)
source = st.radio("Features", sources, horizontal=True, key="hm-source")
if source == SPLIT:
    side, hub = state.side, int(state.feature)
    other = "b" if side == "a" else "a"
    threshold = st.slider("Partners above this combined score", 0.0, 1.0, 0.1, 0.05, key="hm-split-min")
    group, decomposed = load_split_group(path, mtime, side, hub, threshold)
    parts = group["partner"].to_list()
    if decomposed:
        st.badge(f"{side.upper()}{hub} decomposed into {decomposed}", icon=":material/call_split:", color="orange")
    if not parts:
        st.info(
            f"No partner of {side.upper()}{hub} is above {threshold:.2f}; lower the threshold or pick another feature."
        )
    # the hub beside its parts, and the features on the hub's side the parts match best (do they map back?)
    back = kept.filter(pl.col(f"feature_{other}").is_in(parts))[f"feature_{side}"].to_list()
    hub_side = [hub, *[f for f in back if f != hub]]
    feats_a, feats_b = (hub_side, parts) if side == "a" else (parts, hub_side)
elif source == "strongest kept pairs":
    n = st.slider("Pairs", 2, MAX_BLOCK, min(20, max(2, kept.height)), key="hm-n")
    feats_a, feats_b = kept["feature_a"].head(n).to_list(), kept["feature_b"].head(n).to_list()
    if not feats_a:
        st.info("No kept pairs in this bundle (is the matching part computed?); choose feature ids instead.")
elif source == "feature ids":
    c1, c2 = st.columns(2)
    text_a = c1.text_input("A features (comma separated)", "0, 1, 2, 3", key="hm-a")
    text_b = c2.text_input("B features (comma separated)", "0, 1, 2, 3", key="hm-b")
    try:
        feats_a = [int(t) for t in text_a.replace(" ", "").split(",") if t]
        feats_b = [int(t) for t in text_b.replace(" ", "").split(",") if t]
    except ValueError:
        st.error("Feature ids are whole numbers separated by commas, e.g. 3, 17, 42.")
        st.stop()
    bad = [f"A{f}" for f in feats_a if not 0 <= f < n_features(bundle, "a")]
    bad += [f"B{f}" for f in feats_b if not 0 <= f < n_features(bundle, "b")]
    if bad:
        st.error(f"Feature {bad[0]} does not exist in this bundle; use ids below the SAE's width.")
        st.stop()
else:
    sel_a, sel_b = list(state.selection.get("a", ())), list(state.selection.get("b", ()))
    linked_b = figures.compute_linked_partners(sel_a, kept, "a")
    linked_a = figures.compute_linked_partners(sel_b, kept, "b")
    feats_a = sorted(set(sel_a) | set(linked_a))[:MAX_BLOCK]
    feats_b = sorted(set(sel_b) | set(linked_b))[:MAX_BLOCK]
feats_a, feats_b = list(dict.fromkeys(feats_a))[:MAX_BLOCK], list(dict.fromkeys(feats_b))[:MAX_BLOCK]
if feats_a and feats_b:
    block = figures.order_block(load_correlation_block(path, mtime, tuple(feats_a), tuple(feats_b)), kept)
    fig = figures.build_cell_heatmap_figure(
        block, "feature_a", "feature_b", "corr", "Activation correlation (matches on the diagonal)", "A", "B", -1.0, 1.0
    )
    # drawn by the app's plot component (its own small plotly.js build, not st.plotly_chart's); one click on a
    # cell opens that pair's dashboard: the plot reports a click once, as a trigger, so a rerun opens nothing
    click = render_plot(figure_json(fig), key="hm-block")
    if click is not None and len(click.customdata) >= 2:
        open_pair(state, "a", int(click.customdata[0]), int(click.customdata[1]))
    st.caption("Click a cell to open that pair's dashboard. The Export page draws this block at paper sizes.")

st.subheader("Layer x layer sweep")
sweep = sweep_frame(bundle)
if sweep is None:
    building = builds.running_build_for(bundle.path)
    if building is not None and building.job.name == "sweep":
        st.info("The layer x layer sweep is being built in the background; Home shows its progress.")
    else:
        st.info(
            "This bundle carries no layer x layer sweep (it compares one layer pair). Add one with "
            "`python -m core sweep ... --bundle BUNDLE`; for the demo, `python -m core demo --sweep` or the "
            "sweep button on Home adds a 3 x 3 one."
        )
else:
    metrics = sweep["metric"].unique().sort().to_list()
    metric = st.selectbox("Metric", metrics, index=metrics.index("svcca") if "svcca" in metrics else 0, key="hm-metric")
    # the layers shown by their labels (hook names) when the sweep carries them
    cells, row, col = sweep_cells(sweep, metric)
    sweep_fig = figures.build_cell_heatmap_figure(
        cells, row, col, "value", f"{metric} per layer pair", "layer A", "layer B"
    )
    click = render_plot(figure_json(sweep_fig), key="hm-sweep")
    # the clicked cell stays shown until another cell is clicked (a click is reported once)
    if click is not None and len(click.customdata) >= 2:
        set_widget(SWEEP_CELL, tuple(click.customdata[:2]))
    cell = widget_value(SWEEP_CELL)
    if cell:
        la, lb = cell
        st.dataframe(cells.filter((pl.col(row) == la) & (pl.col(col) == lb)), hide_index=True)
    st.caption("Click a cell to show its row.")
