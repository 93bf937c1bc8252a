"""Overview: what was compared, how many features matched and were kept, and how similar the SAEs are."""

from __future__ import annotations

import polars as pl
import streamlit as st

from components import figures
from components.cache import bundle_mtime, load_best_corr, load_similarity
from components.data import sweep_frame
from components.state import get_state
from components.widgets import (
    render_alignment,
    render_matching_summary,
    render_side_summary,
    render_similarity,
    require_bundle,
    require_parts,
)

state = get_state()
st.title("Overview")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))

m = bundle.manifest
st.caption(f"Bundle `{bundle.path}` · schema {m['schema_version']} · created {m.get('created_at', '?')}")
cols = st.columns(3)
cols[0].metric("shared units", f"{m.get('n_units', 0):,}")
cols[1].metric("documents", f"{m.get('corpus', {}).get('n_docs_used', 0):,}")
cols[2].metric("corpus", m.get("corpus", {}).get("kind", "?"))
render_alignment(m.get("alignment"))
tabs = st.tabs(["Sides and hooks", "Matching", "Similarity"])
with tabs[0]:
    for side in ("a", "b"):
        render_side_summary(bundle, side)
with tabs[1]:
    if require_parts(bundle, "matches", "assignment", what="The matching summary"):
        render_matching_summary(bundle)
        threshold = m.get("matching", {}).get("settings", {}).get("min_corr")
        st.plotly_chart(
            figures.build_corr_histogram_figure(load_best_corr(path, mtime), threshold),
            key="overview-corr-hist",
            width="stretch",
        )
with tabs[2]:
    if require_parts(bundle, "similarity", what="The similarity section"):
        render_similarity(load_similarity(path, mtime))
        sweep = sweep_frame(bundle)
        if sweep is None:
            st.caption("No layer x layer sweep in this bundle (see the Heatmaps page).")
        else:
            metric = "svcca" if "svcca" in sweep["metric"].to_list() else sweep["metric"][0]
            cells = sweep.filter(pl.col("metric") == metric).sort("layer_a", "layer_b")
            row, col = (
                ("label_a", "label_b") if {"label_a", "label_b"} <= set(cells.columns) else ("layer_a", "layer_b")
            )
            st.plotly_chart(
                figures.build_cell_heatmap_figure(cells, row, col, "value", f"Layer sweep: {metric}", "A", "B"),
                key="overview-sweep",
                width="stretch",
            )
            st.page_link("app_pages/heatmaps.py", label="Every metric, clickable, on the Heatmaps page")

with st.expander("Manifest"):
    st.json(m, expanded=False)
