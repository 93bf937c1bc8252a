"""Feature: one feature's dashboard next to its partner(s) on the other side."""

from __future__ import annotations

import polars as pl
import streamlit as st

from components.cache import bundle_mtime, load_feature_card, load_text_index
from components.data import n_features, other_side
from components.state import get_state
from components.widgets import render_feature_card, render_feature_picker, require_bundle, require_parts

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
card = load_feature_card(path, mtime, side, feature)
text_index = load_text_index(path, mtime)
left, right = st.columns(2)
with left:
    st.subheader(f"{side.upper()}{feature}")
    render_feature_card(card, key=f"card-{side}", text_index=text_index)
with right:
    partners = card.partners
    if partners.height == 0:
        st.subheader("Partners")
        if bundle.has("assignment"):
            st.info(f"{side.upper()}{feature} has no partner in the assignment (an orphan).")
        else:
            require_parts(bundle, "assignment", what="Partners")
    else:
        labels = [
            f"{other_side(side).upper()}{r['partner']} · corr {r['corr']:.3f}"
            + ("" if r["kept"] else f" · dropped ({r['reason']})")
            for r in partners.iter_rows(named=True)
        ]
        chosen = st.selectbox("Partner", range(len(labels)), format_func=labels.__getitem__, key="fp-partner")
        partner = int(partners["partner"][chosen])
        if state.partner != partner:
            state.partner = partner
        st.subheader(f"{other_side(side).upper()}{partner}")
        render_feature_card(
            load_feature_card(path, mtime, other_side(side), partner),
            key=f"card-{other_side(side)}",
            text_index=text_index,
        )
        with st.expander("All partners"):
            st.dataframe(partners.with_columns(pl.col("corr").round(4)), hide_index=True, width="stretch")
        st.page_link("pages/correlation.py", label="Unit-by-unit scatter of this pair", icon=":material/show_chart:")
