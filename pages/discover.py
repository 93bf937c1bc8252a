"""Discover: type a text, see the top features of both sides with scores, spans and partners; each row opens its pair."""

from __future__ import annotations

import importlib
import importlib.util

import polars as pl
import streamlit as st

from components.cache import bundle_mtime, load_discovery, load_search_hits
from components.state import get_state
from components.widgets import open_pair, render_pick_table, render_table_downloads, require_bundle, require_parts
from core.errors import UserError
from core.explore.discover import DISCOVERY_COLUMNS


def find_runner() -> object | None:
    """core.explore.prompts.run_discovery (the model-running glue) when this install has it, else None."""
    if importlib.util.find_spec("core.explore.prompts") is None:
        return None
    return getattr(importlib.import_module("core.explore.prompts"), "run_discovery", None)


state = get_state()
st.title("Discover")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
if not require_parts(bundle, "dashboards", "examples", what="Discovery (thresholds and examples)"):
    st.stop()
text = st.text_area("Text", placeholder="Type a sentence to see which features of each SAE it uses", key="disc-text")
c1, c2, c3 = st.columns(3)
top_x = int(c1.number_input("Features per side (return_top_x)", 1, 100, 10, key="disc-top"))
score = c2.selectbox("Score mode", ("mean_x_coverage", "mean", "max", "selectivity"), key="disc-score")
coverage = float(
    c3.number_input(
        "min_coverage_pct",
        0.0,
        100.0,
        0.5,
        0.5,
        key="disc-coverage",
        help="percent of the analysed tokens a feature must exceed its corpus threshold on (the spec's 0.5)",
    )
)
request = (text, score, top_x, coverage)
if st.button("Discover", type="primary", key="disc-go"):
    if not text.strip():
        st.error("The text is empty; type a sentence first.")
        st.stop()
    state.discover_request = request
# the results stay up after the button's run (a click on a row reruns the page) while the inputs are unchanged
if state.discover_request != request:
    st.stop()

runner = find_runner()
if runner is not None:
    try:
        with st.spinner("Loading both models and SAEs (once), then running them over the text"):
            result = load_discovery(path, mtime, text, score, top_x, coverage)
    except UserError as exc:
        st.error(str(exc))
        st.stop()
    table = result.table
    st.caption("Click a row's box to open that feature beside its partner.")
    for side in ("a", "b"):
        st.subheader(f"Side {side.upper()}: {bundle.side(side).get('label') or ''}")
        rows = table.filter(pl.col("side") == side).select(
            "rank",
            "feature_id",
            "layer",
            "proto_label",
            "score",
            "mean",
            "coverage",
            "max",
            "top_span_text",
            "partner",
            "partner_corr",
            "rank_drift",
        )
        picked = render_pick_table(state, rows, f"disc-rows-{side}")
        if picked is not None:
            open_pair(state, side, picked["feature_id"], picked.get("partner"))
    if result.drift.height:
        st.subheader("Partners by rank drift")
        st.dataframe(result.drift, hide_index=True, width="stretch")
    render_table_downloads(table.select(DISCOVERY_COLUMNS), "discovery", "disc-dl")
    st.stop()

st.warning(
    "Running the models on new text needs core.explore.prompts (the discovery runner), which this install lacks. Showing the corpus approximation instead: features that fire on each word of "
    "your text somewhere in the corpus."
)
words = [w for w in dict.fromkeys(text.replace(",", " ").replace(".", " ").split()) if w.strip()]
frames = []
for word in words[:30]:
    try:
        hits = load_search_hits(path, mtime, word)
    except UserError:
        continue
    if hits.height:
        frames.append(hits.with_columns(pl.lit(word).alias("word")))
if not frames:
    st.info("No word of the text appears among the features' top tokens or examples.")
    st.stop()
found = pl.concat(frames)
for side in ("a", "b"):
    st.subheader(f"Side {side.upper()}")
    rows = (
        found.filter(pl.col("side") == side)
        .group_by("feature")
        .agg(
            pl.col("word").unique().sort().str.join(", ").alias("words"),
            pl.len().alias("n_words"),
            pl.col("partner").first(),
        )
        .sort(["n_words", "feature"], descending=[True, False])
        .head(top_x)
    )
    picked = render_pick_table(state, rows, f"disc-approx-{side}")
    if picked is not None:
        open_pair(state, side, picked["feature"], picked.get("partner"))
