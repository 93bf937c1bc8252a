"""All pairs: every pair the bundle knows in one sortable, filterable table; the orphans; the split groups.

The filter lives in the app state, so the Pair explorer can draw the same pairs on its maps
("Apply to the maps"); a click on a row's box opens that pair's dashboard.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from components.cache import bundle_mtime, load_filtered_pairs, load_orphans, load_pairs_table, load_split_groups
from components.data import ORPHAN_DEFINITION, PAIR_COLUMNS
from components.state import get_state
from components.widgets import (
    open_pair,
    render_pair_filter,
    render_pick_table,
    render_split_groups,
    render_table_downloads,
    require_bundle,
    require_parts,
)

MAX_ROWS = 2_000
SORTABLE = ("corr", "q", "n_coactive", "jaccard", "cos", "n_a", "n_b", "rank_ab", "rank_ba", "feature_a", "feature_b")

state = get_state()
st.title("All pairs")
bundle = require_bundle(state)
if not require_parts(bundle, "matches", "assignment", what="The pairs table"):
    st.stop()
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
table = load_pairs_table(path, mtime)
method = bundle.manifest.get("matching", {}).get("settings", {}).get("method", "?")
tabs = st.tabs(["Pairs", "Orphans", "Split groups"])

with tabs[0]:
    st.caption(
        f"Every pair the bundle knows: the assignment's ({method}; kept, or dropped with the reason) and every "
        "other top-k candidate of either direction. r: activation correlation; q: the significance test's "
        "q-value; n_coactive: units where both fire (n_a, n_b: where each fires); jaccard: n_coactive over "
        "the union; cos: decoder cosine; rank_ab: B's rank among A's partners (rank_ba the other way); "
        "split_a / split_b: inside A's / B's 1 -> k split group."
    )
    reasons = sorted(r for r in table["reason"].drop_nulls().unique().to_list())
    state.pair_filter = render_pair_filter(state.pair_filter, reasons, key="ap")
    c1, c2 = st.columns([2, 1])
    sort_by = c1.selectbox("Sort by", SORTABLE, key="ap-sort")
    descending = c2.toggle("Largest first", value=sort_by not in ("q", "rank_ab", "rank_ba"), key="ap-desc")
    shown = load_filtered_pairs(path, mtime, state.pair_filter).sort(sort_by, descending=descending, nulls_last=True)
    counts = shown["status"].value_counts().sort("status")
    summary = ", ".join(f"{r['count']:,} {r['status']}" for r in counts.iter_rows(named=True))
    st.markdown(
        f"**{shown.height:,} of {table.height:,} pairs** pass the filter ({summary or 'none'})"
        + (f"; the first {MAX_ROWS:,} are listed, every one is in the downloads" if shown.height > MAX_ROWS else "")
        + (". The Pair explorer's maps colour these pairs." if state.pair_filter.apply_to_maps else ".")
    )
    extra = [c for c in shown.columns if c not in PAIR_COLUMNS]
    if extra:
        st.caption("Further evidence columns in this bundle: " + ", ".join(extra) + ".")
    row = render_pick_table(state, shown.head(MAX_ROWS), "ap-table", height=480)
    if row is not None:
        open_pair(state, "a", row["feature_a"], row["feature_b"])
    render_table_downloads(shown, "pairs", key="ap-dl")

with tabs[1]:
    orphans = load_orphans(path, mtime)
    st.caption(f"One definition everywhere (the maps' crosses, the matching summary's counts): {ORPHAN_DEFINITION}.")
    cols = st.columns(2)
    for col, side in zip(cols, ("a", "b"), strict=True):
        rows = orphans.filter(pl.col("side") == side).sort("freq", descending=True).drop("side")
        with col:
            st.markdown(f"**Side {side.upper()}: {rows.height:,} orphans**")
            picked = render_pick_table(state, rows, f"ap-orphans-{side}", height=420)
            if picked is not None:
                open_pair(state, side, picked["feature"], picked.get("best_partner"))
            render_table_downloads(rows, f"orphans-{side}", key=f"ap-orphans-dl-{side}")

with tabs[2]:
    groups = load_split_groups(path, mtime)
    render_split_groups(state, groups, key="ap-split-groups")
    if groups.height:
        render_table_downloads(groups, "split-groups", key="ap-split-groups-dl")
