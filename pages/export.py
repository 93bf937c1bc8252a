"""Export: every figure as PNG/SVG/PDF at paper sizes, every table as CSV/Parquet, and a methods JSON."""

from __future__ import annotations

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from components import figures
from components.cache import (
    bundle_mtime,
    load_best_corr,
    load_correlation_block,
    load_feature_card,
    load_maps_payload,
    load_pairs,
    load_similarity,
    load_umap_points,
    load_unit_pair,
)
from components.data import methods_record, n_features, similarity_frame
from components.linked_maps import build_linked_maps_html, compute_view
from components.state import get_state
from components.widgets import render_figure_export, render_json_download, render_table_downloads, require_bundle

state = get_state()
st.title("Export")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
pairs = load_pairs(path, mtime)
kept = pairs.filter(pl.col("kept")).sort("corr", descending=True)

# figure name -> builder (a thunk, so only the chosen figure is built); the light figures come first, so
# the preview a visit opens on is quick to draw (the maps' WebGL preview waits until it is chosen)
available: dict[str, object] = {}
if bundle.has("similarity"):
    available["similarity-vs-null"] = lambda: figures.build_null_figure(similarity_frame(load_similarity(path, mtime)))
if bundle.has("matches"):
    threshold = bundle.manifest.get("matching", {}).get("settings", {}).get("min_corr")
    available["best-correlation-histogram"] = lambda: figures.build_corr_histogram_figure(
        load_best_corr(path, mtime), threshold
    )
if bundle.has("umap"):
    for side in ("a", "b"):
        available[f"umap-{side}"] = lambda side=side: figures.build_umap_figure(
            load_umap_points(path, mtime, side), side
        )
if bundle.has("dashboards") and state.feature is not None and 0 <= state.feature < n_features(bundle, state.side):
    side, feature = state.side, state.feature

    def _card_figure(kind: str, side: str = side, feature: int = feature) -> go.Figure:
        d = load_feature_card(path, mtime, side, feature).dashboard
        if kind == "hist":
            return figures.build_activation_histogram_figure(
                d["hist_counts"] or [], d["hist_width"] or 1.0, side, feature
            )
        return figures.build_token_bar_figure(
            d["top_tokens_by_count"] or [], d["top_tokens_by_count_n"] or [], f"{side.upper()}{feature}: top tokens"
        )

    available[f"activations-{side.upper()}{feature}"] = lambda: _card_figure("hist")
    available[f"top-tokens-{side.upper()}{feature}"] = lambda: _card_figure("tokens")
if bundle.has("assignment") and not pairs["cos"].is_null().all():
    available["correlation-vs-cosine"] = lambda: figures.build_corr_cos_figure(pairs.drop_nulls(["corr", "cos"]))
fa, fb = state.pair()
if fa is None and kept.height:
    fa, fb = int(kept["feature_a"][0]), int(kept["feature_b"][0])
if fa is not None and fb is not None:
    available[f"units-A{fa}-B{fb}"] = lambda: figures.build_unit_scatter_figure(
        load_unit_pair(path, mtime, fa, fb), fa, fb
    )
if kept.height >= 2:
    top = kept.head(20)
    available["correlation-block"] = lambda: figures.build_cell_heatmap_figure(
        figures.order_block(
            load_correlation_block(path, mtime, tuple(top["feature_a"].to_list()), tuple(top["feature_b"].to_list())),
            kept,
        ),
        "feature_a",
        "feature_b",
        "corr",
        "Activation correlation",
        "A",
        "B",
        -1.0,
        1.0,
    )

st.subheader("Figures")
if not available:
    st.info("This bundle has no parts to draw yet (matching, similarity, umap); see Overview for how to add them.")
else:
    name = st.selectbox("Figure", list(available), key="ex-figure")
    fig = available[name]()
    # previewed at the double-column paper size (not stretched), as the export will be
    st.plotly_chart(figures.apply_paper_style(go.Figure(fig), size="double"), key="ex-preview", width="content")
    render_figure_export(fig, name, key="ex-fig")

if bundle.has("umap"):
    st.subheader("Linked maps")
    st.caption(
        "Both UMAPs in one HTML file that keeps the hover linking (a point rings its partners in the other map), "
        "the selection and search rings of the Pair explorer, and plotly.js itself: it opens offline."
    )
    maps_json, _ = load_maps_payload(path, mtime)
    view = compute_view(state.selection, None, include_dropped=False)
    st.download_button(
        "linked-maps.html (interactive)",
        lambda: build_linked_maps_html(maps_json, view, f"Feature Bridge: {bundle.path.name}").encode(),
        file_name="linked-maps.html",
        mime="text/html",
        key="ex-linked-maps",
    )

st.subheader("Tables")
tables: dict[str, pl.DataFrame] = {}
if pairs.height:
    tables["assignment"] = pairs
if bundle.has("similarity"):
    tables["similarity"] = similarity_frame(load_similarity(path, mtime))
for list_name, rows in state.named_lists.items():
    tables[f"list-{list_name}"] = pl.DataFrame(
        {"feature_a": [r[0] for r in rows], "feature_b": [r[1] for r in rows]},
        schema={"feature_a": pl.Int64, "feature_b": pl.Int64},
    )
tables["features-a"] = bundle.features("a").select(pl.exclude("top_tokens")).collect()
tables["features-b"] = bundle.features("b").select(pl.exclude("top_tokens")).collect()
table_name = st.selectbox("Table", list(tables), key="ex-table")
st.dataframe(tables[table_name].head(200), hide_index=True, width="stretch")
render_table_downloads(tables[table_name], table_name, key="ex-tab")

st.subheader("Methods")
record = methods_record(bundle)
st.caption("What was compared, with which settings, seeds and versions: for the paper's appendix.")
render_json_download(record, "methods", key="ex-methods")
with st.expander("Preview"):
    st.json(record, expanded=False)
