"""Feature: one feature's dashboard next to its partner on the other side (the pair dashboard).

Below the two dashboards: the pair's evidence (the numbers ``python -m core explain`` prints),
every top-k partner with its evidence, the partners by activation correlation beside those by
decoder cosine (weight-space matches), and the split groups (by correlation, and by combined
score with its "decomposed into k" badge). Every partner row opens that pair.
"""

from __future__ import annotations

import polars as pl
import streamlit as st

from components.cache import (
    bundle_mtime,
    load_feature_card,
    load_orphans,
    load_pair_evidence,
    load_partner_lists,
    load_partner_table,
    load_split_group,
    load_split_groups,
    load_text_index,
)
from components.data import ORPHAN_DEFINITION, n_features, other_side
from components.diffing_widgets import render_causal_pair
from components.state import bind, get_state, took
from components.widgets import (
    evidence_column_config,
    open_pair,
    render_feature_card,
    render_feature_picker,
    render_pair_evidence,
    render_pick_table,
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
text_index = load_text_index(path, mtime)
left, right = st.columns(2)
with left:
    st.subheader(f"{side.upper()}{feature}")
    render_feature_card(card, key=f"card-{side}", text_index=text_index)
with right:
    partners = card.partners
    options = [int(p) for p in partners["partner"].to_list()] if partners.height else []
    labels = {
        int(r["partner"]): f"{other.upper()}{r['partner']} · r {r['corr']:.3f}"
        + ("" if r["kept"] else f" · dropped ({r['reason']})")
        for r in partners.iter_rows(named=True)
    }
    # a link may name a partner outside the assignment (a top-k candidate, a decoder match, a split member)
    if state.partner is not None and state.partner not in options and 0 <= state.partner < n_features(bundle, other):
        options.append(int(state.partner))
        labels[int(state.partner)] = f"{other.upper()}{state.partner} · not in the assignment"
    if not options:
        st.subheader("Partners")
        if bundle.has("assignment"):
            orphans = load_orphans(path, mtime)
            is_orphan = orphans.filter((pl.col("side") == side) & (pl.col("feature") == feature)).height > 0
            st.info(
                f"{side.upper()}{feature} has no pair in the assignment"
                + (f"; it is an orphan ({ORPHAN_DEFINITION})." if is_orphan else ".")
            )
        else:
            require_parts(bundle, "assignment", what="Partners")
    else:
        wanted = state.partner if state.partner in options else options[0]
        bind(state, "fp-partner", wanted)
        partner = took(
            state,
            "fp-partner",
            st.selectbox(
                "Partner", options, format_func=lambda p: labels.get(p, f"{other.upper()}{p}"), key="fp-partner"
            ),
        )
        if state.partner != partner:
            state.partner = int(partner)
        st.subheader(f"{other.upper()}{partner}")
        render_feature_card(
            load_feature_card(path, mtime, other, int(partner)), key=f"card-{other}", text_index=text_index
        )
        with st.expander("All partners in the assignment"):
            st.dataframe(partners.with_columns(pl.col("corr").round(4)), hide_index=True, width="stretch")
        st.page_link(
            "pages/correlation.py",
            label="Unit-by-unit scatter of this pair",
            icon=":material/show_chart:",
            query_params={"bundle": path, "side": side, "feature": str(feature), "partner": str(partner)},
        )
        pair = (feature, int(partner)) if side == "a" else (int(partner), feature)
        render_causal_pair(bundle, pair[0], pair[1], key="fp-causal")

if options:
    fa, fb = pair
    st.subheader(f"Evidence: A{fa} ↔ B{fb}")
    if bundle.has("codes"):
        render_pair_evidence(load_pair_evidence(path, mtime, fa, fb), key="fp-evidence")
    else:
        require_parts(bundle, "codes", what="The pair's evidence")

# the top-k partners with their evidence (matches.parquet)
table = load_partner_table(path, mtime, side, feature) if bundle.has("matches") else None
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

st.subheader("Partners by activation and by decoder direction")
if not (bundle.has("matches") or bundle.has("weight_matches")):
    require_parts(bundle, "matches", what="The partner lists")
else:
    lists = load_partner_lists(path, mtime, side, feature)
    st.caption(
        f"{side.upper()}{feature}'s top partners by activation correlation (matches.parquet) beside its top "
        "partners by decoder cosine (weight_matches.parquet, weight-space matching"
        + ("" if bundle.has("weight_matches") else ": not in this bundle, the SAEs read spaces of different width")
        + "); in_both marks a decoder partner that is also an activation partner. Click a row's box to open "
        "the activation partner."
    )
    row = render_pick_table(state, lists, "fp-lists", height=min(420, 38 + 35 * max(lists.height, 1)))
    if row is not None:
        target = row.get("by_activation") if row.get("by_activation") is not None else row.get("by_decoder")
        open_pair(state, side, feature, target)

groups = load_split_groups(path, mtime)
mine = groups.filter((pl.col("side") == side) & (pl.col("feature") == feature))
member = groups.filter((pl.col("side") == other) & pl.col("partners").list.contains(feature))
if mine.height or member.height:
    st.subheader("Split groups")
    if mine.height:
        g = mine.row(0, named=True)
        st.markdown(
            f"**{side.upper()}{feature} → {g['k']} {other.upper()} features**: "
            + ", ".join(
                f"{other.upper()}{p} (r {c:.2f})" for p, c in zip(g["partners"], g["partner_corr"], strict=True)
            )
        )
    shown = 5
    for g in member.head(shown).iter_rows(named=True):
        st.markdown(
            f"{side.upper()}{feature} is one of the {g['k']} features {other.upper()}{g['feature']} splits into: "
            + ", ".join(f"{side.upper()}{p}" for p in g["partners"])
        )
    if member.height > shown:
        st.caption(
            f"… and {member.height - shown} more {other.upper()} hubs (the All pairs page lists every split group)."
        )

if table is not None and table.height:
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
