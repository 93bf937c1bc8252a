"""Feature: one feature's dashboard next to its partner(s) on the other side, with the evidence on each pair."""

from __future__ import annotations

import polars as pl
import streamlit as st

from components.cache import bundle_mtime, load_feature_card, load_pair_evidence, load_partner_table, load_split_group
from components.data import n_features, other_side
from components.diffing_widgets import render_causal_pair
from components.state import get_state
from components.widgets import (
    evidence_column_config,
    render_feature_card,
    render_feature_picker,
    render_pair_evidence,
    require_bundle,
    require_parts,
)

state = get_state()
st.title("Feature")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
if state.feature is not None and not 0 <= state.feature < n_features(bundle, state.side):
    st.error(
        f"Feature {state.feature} does not exist on side {state.side.upper()} "
        f"(it has {n_features(bundle, state.side)} features); showing feature 0 instead."
    )
    state.select(state.side, 0)
if not require_parts(bundle, "dashboards", "examples", what="The feature dashboard"):
    st.stop()
side, feature = render_feature_picker(state, bundle, key="fp")
other = other_side(side)
card = load_feature_card(path, mtime, side, feature)
# the top-k partners with their evidence when the bundle has matches; else the assignment's rows
table = load_partner_table(path, mtime, side, feature) if bundle.has("matches") else None
left, right = st.columns(2)
with left:
    st.subheader(f"{side.upper()}{feature}")
    render_feature_card(card, key=f"card-{side}")
with right:
    partners = card.partners
    if table is not None and table.height:
        rows = table.sort(["assigned", "rank"], descending=[True, False]).to_dicts()
    else:
        rows = partners.to_dicts()
    if not rows:
        st.subheader("Partners")
        if bundle.has("assignment"):
            st.info(f"{side.upper()}{feature} has no partner in the assignment (an orphan).")
        else:
            require_parts(bundle, "assignment", what="Partners")
    else:

        def label(r: dict) -> str:
            q = r.get("q")
            text = f"{other.upper()}{r['partner']} · r {r['corr']:.3f}"
            if r.get("note"):
                text += f" · {r['note']}"
            if q is not None:
                text += f" · q {q:.2g}"
            if r.get("assigned") is False:
                return text + " · not assigned"
            return text + ("" if r.get("kept", True) else f" · dropped ({r.get('reason')})")

        chosen = st.selectbox("Partner", range(len(rows)), format_func=lambda i: label(rows[i]), key="fp-partner")
        partner = int(rows[chosen]["partner"])
        if state.partner != partner:
            state.partner = partner
        st.subheader(f"{other.upper()}{partner}")
        render_feature_card(load_feature_card(path, mtime, other, partner), key=f"card-{other}")
        st.page_link("pages/correlation.py", label="Unit-by-unit scatter of this pair", icon=":material/show_chart:")
        pair = (feature, partner) if side == "a" else (partner, feature)
        render_causal_pair(bundle, pair[0], pair[1], key="fp-causal")

if rows:
    fa, fb = (feature, partner) if side == "a" else (partner, feature)
    st.subheader(f"Evidence: A{fa} ↔ B{fb}")
    if bundle.has("codes"):
        render_pair_evidence(load_pair_evidence(path, mtime, fa, fb), key="fp-evidence")
    else:
        require_parts(bundle, "codes", what="The pair's evidence")

if table is not None and table.height:
    st.subheader(f"Partners of {side.upper()}{feature} (top {table.height}, with evidence)")
    st.caption("Click a column header to sort. q is set on the partner the significance test chose for this feature.")
    st.dataframe(
        table.with_columns(pl.col("partner").alias(f"{other.upper()} feature")).drop("partner"),
        hide_index=True,
        width="stretch",
        column_config=evidence_column_config(),
        key="fp-partners",
    )
    st.subheader("Split group")
    threshold = st.slider(
        "Partners above this combined score", 0.0, 1.0, 0.1, 0.05, key="fp-split-min", help="0.4 x overlap + 0.6 x r"
    )
    group, decomposed = load_split_group(path, mtime, side, feature, threshold)
    if decomposed:
        st.badge(f"decomposed into {decomposed}", icon=":material/call_split:", color="orange")
    if group.height:
        st.caption(
            f"{group.height} partner(s) of {side.upper()}{feature} above {threshold:.2f}; each with the top tokens "
            "no other member of the group has."
        )
        st.dataframe(
            group.select(
                pl.col("partner").alias(f"{other.upper()} feature"),
                "combined_score",
                "corr",
                "token_overlap",
                "note",
                "distinct_tokens",
            ),
            hide_index=True,
            width="stretch",
            column_config=evidence_column_config(),
            key="fp-split",
        )
        st.page_link(
            "pages/heatmaps.py", label="This feature's split group as a correlation block", icon=":material/grid_on:"
        )
    else:
        st.info(f"No partner of {side.upper()}{feature} is above a combined score of {threshold:.2f}.")
