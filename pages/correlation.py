"""Correlation: one pair's activations unit by unit, and correlation vs decoder cosine for every pair."""

from __future__ import annotations

import math

import polars as pl
import streamlit as st

from components.cache import bundle_mtime, load_corr_cos_json, load_pairs, load_unit_pair, load_unit_scatter_json
from components.data import n_features, pair_stats
from components.plot import click_from_event, render_plot
from components.state import get_state, set_widget, widget_value
from components.widgets import require_bundle, require_parts


def _open_clicked_pair() -> None:
    """A click on a pair of the global scatter opens it above (runs before the page reruns)."""
    event = widget_value("corr-cos")
    click = click_from_event(event.get("click") if isinstance(event, dict) else None)
    if click is None or len(click.customdata) < 2:
        return
    pa, pb = (int(v) for v in click.customdata[:2])
    get_state().select("a", pa, partner=pb)
    set_widget("corr-a", pa)
    set_widget("corr-b", pb)


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
    column, other = ("feature_a", "feature_b") if fa is not None else ("feature_b", "feature_a")
    rows = pairs.filter(pl.col(column) == known).sort("corr", descending=True) if known is not None else kept
    if rows.height:
        fa, fb = int(rows["feature_a"][0]), int(rows["feature_b"][0])
fa, fb = fa or 0, fb or 0
n_a, n_b = n_features(bundle, "a"), n_features(bundle, "b")
# a deep link may name a feature the bundle does not have: say so, and show the first one instead
if not 0 <= fa < n_a:
    st.error(f"Feature A{fa} does not exist in this bundle (side A has {n_a:,} features); showing A0 instead.")
    fa = 0
if not 0 <= fb < n_b:
    st.error(f"Feature B{fb} does not exist in this bundle (side B has {n_b:,} features); showing B0 instead.")
    fb = 0
c1, c2 = st.columns(2)
fa = int(c1.number_input(f"Feature A (0..{n_a - 1})", 0, n_a - 1, fa, key="corr-a"))
fb = int(c2.number_input(f"Feature B (0..{n_b - 1})", 0, n_b - 1, fb, key="corr-b"))
if state.pair() != (fa, fb):
    state.select("a", fa, partner=fb)

frame = load_unit_pair(path, mtime, fa, fb)
stats = pair_stats(frame, bundle.n_units)
cols = st.columns(5)
cols[0].metric("Pearson (all units)", "n/a" if math.isnan(stats["pearson"]) else f"{stats['pearson']:.3f}")
cols[1].metric("co-activation Jaccard", "n/a" if math.isnan(stats["jaccard"]) else f"{stats['jaccard']:.3f}")
cols[2].metric("A fires", f"{stats['n_a']:,}")
cols[3].metric("B fires", f"{stats['n_b']:,}")
cols[4].metric("both", f"{stats['n_both']:,}")
if frame.height == 0:
    st.info(f"Neither A{fa} nor B{fb} fires on any unit of this corpus.")
else:
    render_plot(load_unit_scatter_json(path, mtime, fa, fb), key="corr-units")
    st.caption("One point per unit where either feature fires; hover shows the token [in brackets] in its context.")
st.page_link("pages/feature.py", label=f"Dashboard of A{fa}", icon=":material/feature_search:")

st.subheader("Best correlation vs decoder cosine, every pair")
if require_parts(bundle, "assignment", what="The global scatter"):
    if pairs["cos"].is_null().all():
        st.info("The two SAEs read spaces of different width (d_in differ), so decoder cosines are not defined.")
    else:
        render_plot(load_corr_cos_json(path, mtime), key="corr-cos", on_click=_open_clicked_pair)
        st.caption("Click a pair to show it above.")
