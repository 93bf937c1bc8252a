"""Correlation: one pair's activations unit by unit, and correlation vs decoder cosine for every pair."""

from __future__ import annotations

import math
from collections.abc import Mapping

import polars as pl
import streamlit as st

from components.cache import (
    bundle_mtime,
    load_corr_cos_json,
    load_pair_evidence,
    load_pairs,
    load_unit_pair,
    load_unit_scatter_json,
)
from components.data import n_features, pair_stats
from components.plot import click_from_event, render_plot
from components.state import bind, get_state, took, widget_value
from components.widgets import render_pair_evidence, render_pair_link, require_bundle, require_parts


def _take_scatter_click() -> None:
    """A click in the corr-vs-cos scatter (drawn below) moves the pair before the page reruns, so the inputs
    show the clicked pair. The scatter reports a click once, as a trigger, never a standing selection: nothing
    re-selects an old pair on the next run (that alternation looped the page forever)."""
    event = widget_value("corr-cos")
    click = click_from_event(event.get("click") if isinstance(event, Mapping) else None)
    if click is not None and len(click.customdata) >= 2:
        get_state().select_pair(int(click.customdata[0]), int(click.customdata[1]))


state = get_state()
st.title("Correlation")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
pairs = load_pairs(path, mtime)
kept = pairs.filter(pl.col("kept")).sort("corr", descending=True)


# the pair: the selected feature and its chosen partner, else its best kept partner, else the strongest pair
fa, fb = state.pair()
if fa is None or fb is None:
    known = fa if fa is not None else fb
    column = "feature_a" if fa is not None else "feature_b"
    rows = pairs.filter(pl.col(column) == known).sort("corr", descending=True) if known is not None else kept
    if rows.height:
        fa, fb = int(rows["feature_a"][0]), int(rows["feature_b"][0])
n_a, n_b = n_features(bundle, "a"), n_features(bundle, "b")
# a deep link may name a feature the bundle does not have: say so, and show the nearest one instead
for name, value, n in (("A", fa, n_a), ("B", fb, n_b)):
    if value is not None and not 0 <= value < n:
        st.error(
            f"Feature {name}{value} does not exist in this bundle (side {name} has {n:,} features); showing the nearest one."
        )
fa, fb = min(max(fa or 0, 0), n_a - 1), min(max(fb or 0, 0), n_b - 1)
c1, c2 = st.columns(2)
# the inputs follow the state (a click, a link, another page) unless the user just typed in them
bind(state, "corr-a", fa)
fa = took(state, "corr-a", int(c1.number_input(f"Feature A (0..{n_a - 1})", 0, n_a - 1, key="corr-a")))
bind(state, "corr-b", fb)
fb = took(state, "corr-b", int(c2.number_input(f"Feature B (0..{n_b - 1})", 0, n_b - 1, key="corr-b")))
if state.pair() != (fa, fb):
    state.select_pair(fa, fb)

frame = load_unit_pair(path, mtime, fa, fb)
stats = pair_stats(frame, bundle.n_units)
cols = st.columns(5)
cols[0].metric("Pearson (all units)", "n/a" if math.isnan(stats["pearson"]) else f"{stats['pearson']:.3f}")
cols[1].metric("co-activation Jaccard", "n/a" if math.isnan(stats["jaccard"]) else f"{stats['jaccard']:.3f}")
cols[2].metric("A fires", f"{stats['n_a']:,}")
cols[3].metric("B fires", f"{stats['n_b']:,}")
cols[4].metric("both", f"{stats['n_both']:,}")
st.caption(f"Evidence on A{fa} ↔ B{fb} (the same numbers `python -m core explain BUNDLE a{fa} b{fb}` prints)")
render_pair_evidence(load_pair_evidence(path, mtime, fa, fb), key="corr-evidence")
if frame.height == 0:
    st.info(f"Neither A{fa} nor B{fb} fires on any unit of this corpus.")
else:
    render_plot(load_unit_scatter_json(path, mtime, fa, fb), key="corr-units")
    st.caption("One point per unit where either feature fires; hover shows the token [in brackets] in its context.")
render_pair_link(state, "a", fa, fb, f"Pair dashboard of A{fa} ↔ B{fb}")

st.subheader("Best correlation vs decoder cosine, every pair")
if require_parts(bundle, "assignment", what="The global scatter"):
    if pairs["cos"].is_null().all():
        st.info("The two SAEs read spaces of different width (d_in differ), so decoder cosines are not defined.")
    else:
        # drawn by the app's plot component, with the same plotly.js as the unit scatter above: a page that also
        # drew it with st.plotly_chart would load and start a second copy of plotly (about 0.7 s of browser time)
        render_plot(load_corr_cos_json(path, mtime), key="corr-cos", on_click=_take_scatter_click)
        st.caption("Click a pair to show it above.")
