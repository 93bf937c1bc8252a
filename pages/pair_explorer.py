"""Pair explorer: the two SAEs' UMAPs side by side, linked through the pairing."""

from __future__ import annotations

import polars as pl
import streamlit as st

from components import figures
from components.cache import bundle_mtime, load_maps_payload, load_pairs, load_search_hits, load_selection_table
from components.linked_maps import apply_selection, compute_view, render_linked_maps, selection_from_event
from components.state import get_state, widget_value
from components.widgets import render_table_downloads, require_bundle, require_parts
from core.errors import UserError

MAPS_KEY = "pe-maps"


def _apply_selection() -> None:
    """Move the state to the selection a map reported (runs before the page reruns, so it draws the new one)."""
    event = widget_value(MAPS_KEY)
    chosen = selection_from_event(event.get("selection") if isinstance(event, dict) else None)
    if chosen is not None:
        apply_selection(get_state(), chosen)


state = get_state()
st.title("Pair explorer")
bundle = require_bundle(state)
if not require_parts(bundle, "umap", what="The pair explorer"):
    st.stop()
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
pairs = load_pairs(path, mtime)
if pairs.height == 0:
    st.info("No assignment in this bundle, so selections are not linked across the maps yet.")
    require_parts(bundle, "assignment", what="Linking the maps")

c1, c2 = st.columns([3, 1])
query = c1.text_input(
    "Search a token or a feature id (a12, b7, or 12 for both sides)", value=state.search, key="pe-search"
)
include_dropped = c2.toggle("Link dropped pairs too", value=False, help="Also follow pairs the filters dropped")
state.search = query
hits = pl.DataFrame(schema={"side": pl.String, "feature": pl.Int32, "why": pl.String})
if query.strip():
    try:
        hits = load_search_hits(path, mtime, query)
    except UserError as exc:  # e.g. a query that is only sub-word markers
        st.warning(str(exc))
if query.strip() and hits.height == 0:
    st.warning(f"Nothing matches {query.strip()!r} (no such feature id, and no feature fires on that token).")

selected = {side: list(state.selection.get(side, ())) for side in ("a", "b")}
link = pairs if include_dropped else pairs.filter(pl.col("kept"))
partners = {
    "a": figures.compute_linked_partners(selected["b"], link, "b"),
    "b": figures.compute_linked_partners(selected["a"], link, "a"),
}
maps_json, maps_key = load_maps_payload(path, mtime)
render_linked_maps(
    maps_json, maps_key, compute_view(selected, hits, include_dropped), key=MAPS_KEY, on_select=_apply_selection
)
cols = st.columns(2)
for col, side in zip(cols, ("a", "b"), strict=True):
    n_hits = hits.filter(pl.col("side") == side).height
    col.caption(
        f"{side.upper()}: {len(selected[side])} selected · {len(partners[side])} partners of the other map's "
        f"selection · {n_hits} search hits"
    )
st.caption(
    "Colour: the feature's best partner correlation. Crosses: orphans (no kept partner). Hover a point: it and "
    "its partners in the other map get black rings. Click, box or lasso: the selection and its partners get "
    "orange rings (double-click clears). Search hits: pink dashed rings. "
    + ("UMAPs aligned through the pairing." if bundle.manifest.get("umap", {}).get("aligned") else "")
)

if hits.height:
    with st.expander(f"Search hits ({hits.height})", expanded=True):
        st.dataframe(hits, hide_index=True, width="stretch")

st.subheader("Selected pairs")
tables = [load_selection_table(path, mtime, side, tuple(selected[side])) for side in ("a", "b") if selected[side]]
if not tables:
    st.info("Select points in either map (click, or drag a box or lasso) to list their pairs here.")
    st.stop()
table = pl.concat(tables).unique(["feature_a", "feature_b"], maintain_order=True)
st.dataframe(table, hide_index=True, width="stretch")
if state.feature is not None:
    st.page_link(
        "pages/feature.py", label=f"Open feature {state.side.upper()}{state.feature}", icon=":material/feature_search:"
    )
    st.page_link("pages/correlation.py", label="Open its correlation scatter", icon=":material/show_chart:")
c1, c2 = st.columns([2, 1])
name = c1.text_input("Save the selection as a named list", key="pe-list-name", placeholder="e.g. numbers")
if c2.button("Save list", key="pe-save"):
    if not name.strip():
        st.error("Give the list a name first.")
    else:
        state.named_lists[name.strip()] = tuple(
            zip(table["feature_a"].to_list(), table["feature_b"].to_list(), strict=True)
        )
        st.success(f"Saved {table.height} pairs as {name.strip()!r} (export it on the Export page).")
render_table_downloads(table, "selected-pairs", key="pe-dl")
