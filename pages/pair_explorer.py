"""Pair explorer: the two SAEs' UMAPs side by side, linked through the pairing; search, selection and named lists."""

from __future__ import annotations

from collections.abc import Mapping

import polars as pl
import streamlit as st

from components import figures
from components.cache import (
    bundle_mtime,
    load_maps_payload,
    load_pairs,
    load_pairs_table,
    load_search_hits,
    load_stale,
)
from components.data import ORPHAN_DEFINITION, selection_rows
from components.exports import named_list_frame
from components.linked_maps import (
    apply_selection,
    compute_view,
    render_linked_maps,
    ringed_hits,
    selection_from_event,
)
from components.state import bind, get_state, took, widget_value
from components.widgets import (
    evidence_column_config,
    open_pair,
    render_hit_links,
    render_pair_panel,
    render_pick_table,
    render_stale_banner,
    render_table_downloads,
    require_bundle,
    require_parts,
)
from core.bundle.lists import delete_named_list, load_named_lists, rename_named_list, save_named_list
from core.errors import UserError

HITS_PER_PAGE = 20
# more hits than this get rings only for the page of hits listed (thousands of rings hide the map, and
# draw slowly)
MAX_RINGED_HITS = 500
MAPS_KEY = "pe-maps"


def _take_map_selection() -> None:
    """The maps reported a click, box or lasso: move the state by its rule before the page reruns, so this
    run draws the new selection (only a new, non-empty selection changes it)."""
    event = widget_value(MAPS_KEY)
    chosen = selection_from_event(event.get("selection") if isinstance(event, Mapping) else None)
    if chosen is not None:
        apply_selection(get_state(), chosen, source=MAPS_KEY)


state = get_state()
st.title("Pair explorer")
bundle = require_bundle(state)
if not require_parts(bundle, "umap", what="The pair explorer"):
    st.stop()
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
render_stale_banner(load_stale(path, mtime), sections=("umap",))
pairs = load_pairs(path, mtime)
if pairs.height == 0:
    st.info("No assignment in this bundle, so selections are not linked across the maps yet.")
    require_parts(bundle, "assignment", what="Linking the maps")
map_filter = state.pair_filter if state.pair_filter.apply_to_maps else None

c1, c2 = st.columns([3, 1])
bind(state, "pe-search", state.search)
query = took(
    state, "pe-search", c1.text_input("Search a token or a feature id (a12, b7, or 12 for both sides)", key="pe-search")
)
if query != state.search:
    state.search, state.search_page = query, 0
bind(state, "pe-dropped", state.include_dropped)
state.include_dropped = took(
    state,
    "pe-dropped",
    c2.toggle("Link dropped pairs too", key="pe-dropped", help="Also follow pairs the filters dropped"),
)
hits = pl.DataFrame(schema={"side": pl.String, "feature": pl.Int32})
if query.strip():
    try:
        hits = load_search_hits(path, mtime, query)
    except UserError as exc:  # e.g. a query that is only sub-word markers
        st.warning(str(exc))
if query.strip() and hits.height == 0:
    st.warning(f"Nothing matches {query.strip()!r} (no such feature id, and no feature fires on that token).")

# the maps' selection reached the state in _take_map_selection, before this run began
selected = {side: list(state.selection.get(side, ())) for side in ("a", "b")}
link = pairs if state.include_dropped else pairs.filter(pl.col("kept"))
partners = {
    "a": figures.compute_linked_partners(selected["b"], link, "b"),
    "b": figures.compute_linked_partners(selected["a"], link, "a"),
}

ringed = ringed_hits(hits, state.search_page, HITS_PER_PAGE, MAX_RINGED_HITS)
# the payload (points, categories and r under the map filter, the partner table) is built once per bundle and
# filter; each run sends only the view, and the browser rings the selection's partners and hovered points itself
maps_json, maps_key = load_maps_payload(path, mtime, map_filter)
render_linked_maps(
    maps_json,
    maps_key,
    compute_view(selected, ringed, state.include_dropped),
    key=MAPS_KEY,
    on_select=_take_map_selection,
)
cols = st.columns(2)
for col, side in zip(cols, ("a", "b"), strict=True):
    n_ringed = ringed.filter(pl.col("side") == side).height if "side" in ringed.columns else 0
    n_hits = hits.filter(pl.col("side") == side).height if "side" in hits.columns else 0
    col.caption(
        f"{side.upper()}: {len(selected[side])} selected here · {len(partners[side])} partners of the other map's "
        f"selection · {n_hits:,} search hits"
        + (f" ({n_ringed} ringed: the page listed below)" if hits.height > MAX_RINGED_HITS else "")
    )
st.caption(
    "Colour: the r of the feature's kept pair"
    + (" (pairs passing the All pairs filter)" if map_filter else "")
    + ". Grey dots: no kept pair. Crosses: orphans ("
    + ORPHAN_DEFINITION
    + "). Hover a point: it and its partners in the other map get black rings, drawn in the browser (no rerun). "
    "Click, box or lasso in one map: the selection goes to the page, and it and its partners get orange rings "
    "in both maps; it stays until a new selection or **Clear selection**. Search hits: pink dashed rings. "
    + ("UMAPs aligned through the pairing." if bundle.manifest.get("umap", {}).get("aligned") else "")
)

if query.strip() and hits.height:
    with st.expander("Search hits: each opens its pair dashboard", expanded=True):
        render_hit_links(state, hits, HITS_PER_PAGE, key="pe-hits")

lists = {}
try:
    lists = load_named_lists(path)
except UserError as exc:
    st.error(str(exc))

st.subheader("Selected pairs")
if not (selected["a"] or selected["b"]):
    st.info(
        "Select points in either map (click, or drag a box or lasso) to list their pairs here, or open a named list below."
    )
else:
    table = load_pairs_table(path, mtime)
    if state.active_list and state.active_list in lists:
        shown = named_list_frame(lists[state.active_list].pairs, table)
        st.caption(f"The named list **{state.active_list}** ({shown.height} pairs).")
    else:
        shown = selection_rows(table, state.selection, include_dropped=True)
    if sum(len(v) for v in selected.values()) == 1 and state.feature is not None:
        render_pair_panel(state, bundle, state.side, state.feature, table)
    c1, c2 = st.columns([4, 1])
    c1.caption(
        "Click a row's box to open that pair's dashboard. Each pair with its evidence: k co-firings against mu "
        "expected, -log10 p and q of the significance test, top-token overlap and the combined score "
        "(0.4 x overlap + 0.6 x r); click a header to sort."
    )
    if c2.button("Clear selection", key="pe-clear"):
        state.clear_selection()
        st.rerun()
    row = render_pick_table(
        state,
        shown,
        "pe-pairs",
        height=min(420, 38 + 35 * max(shown.height, 1)),
        column_config=evidence_column_config(),
    )
    if row is not None:
        if row.get("feature_a") is not None:
            open_pair(state, "a", row["feature_a"], row.get("feature_b"))
        else:
            open_pair(state, "b", row["feature_b"], None)
    render_table_downloads(shown, "selected-pairs", key="pe-dl")
    c1, c2 = st.columns([2, 1])
    name = c1.text_input(
        "Save these pairs as a named list (kept beside the bundle)", key="pe-list-name", placeholder="e.g. numbers"
    )
    if c2.button("Save list", key="pe-save"):
        pairs_to_save = list(zip(shown["feature_a"].to_list(), shown["feature_b"].to_list(), strict=True))
        try:
            saved = save_named_list(path, name, pairs_to_save)
        except UserError as exc:
            st.error(str(exc))
        else:
            state.active_list = saved.name
            lists = load_named_lists(path)
            st.success(
                f"Saved {len(saved.pairs)} pairs as {saved.name!r} (open it here later, export it on the Export page)."
            )

with st.expander(
    f"Named lists ({len(lists)} saved beside the bundle)", expanded=bool(lists) and not (selected["a"] or selected["b"])
):
    if not lists:
        st.caption("Select pairs, then save them as a named list: it is kept in lists.json in the bundle folder.")
    else:
        names = list(lists)
        current = state.active_list if state.active_list in names else names[0]
        chosen = st.selectbox(
            "List",
            names,
            index=names.index(current),
            key="pe-list-pick",
            format_func=lambda n: f"{n} ({len(lists[n].pairs)} pairs)",
        )
        c1, c2, c3 = st.columns([1, 2, 1])
        if c1.button("Open", key="pe-list-open", help="Make the list the selection (rings in both maps)"):
            state.open_list(chosen, lists[chosen].pairs)
            st.rerun()
        new_name = c2.text_input("Rename to", key="pe-list-rename", placeholder=chosen)
        if c2.button("Rename", key="pe-list-rename-go"):
            try:
                renamed = rename_named_list(path, chosen, new_name)
            except UserError as exc:
                st.error(str(exc))
            else:
                if state.active_list == chosen:
                    state.active_list = renamed.name
                st.rerun()
        if c3.button("Delete", key="pe-list-delete"):
            delete_named_list(path, chosen)
            if state.active_list == chosen:
                state.active_list = None
            st.rerun()
        frame = named_list_frame(lists[chosen].pairs, load_pairs_table(path, mtime))
        render_table_downloads(frame, f"list-{chosen}", key="pe-list-dl")
