"""Export: what you see as files. The current view and selection as figures laid out for paper sizes (or as
interactive HTML that works offline), every table with every column, the named lists, and a methods JSON."""

from __future__ import annotations

from collections.abc import Callable

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from components import figures
from components.cache import (
    bundle_mtime,
    load_assignment,
    load_best_corr,
    load_correlation_block,
    load_feature_card,
    load_filtered_pairs,
    load_map_figure_json,
    load_maps_payload,
    load_orphans,
    load_pairs,
    load_pairs_table,
    load_similarity,
    load_split_groups,
    load_stale,
    load_umap_points,
    load_unit_pair,
)
from components.data import concepts_frame, methods_record, n_features, selection_rows, similarity_frame
from components.exports import named_list_frame, paper_figure
from components.linked_maps import build_linked_maps_html, compute_view
from components.plot import figure_json, render_plot
from components.state import get_state
from components.widgets import (
    render_figure_export,
    render_json_download,
    render_stale_banner,
    render_table_downloads,
    require_bundle,
)
from core.bundle.lists import load_named_lists
from core.errors import UserError

MAX_BLOCK = 60

state = get_state()
st.title("Export")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))
render_stale_banner(load_stale(path, mtime))
pairs = load_pairs(path, mtime)
kept = pairs.filter(pl.col("kept")).sort("corr", descending=True)
selected = {side: list(state.selection.get(side, ())) for side in ("a", "b")}
has_selection = bool(selected["a"] or selected["b"])


def _screen(fig: go.Figure, size: str | None) -> go.Figure:
    """A figure with no print layout of its own: the paper style at ``size`` (None: as on screen)."""
    return fig if size is None else paper_figure(fig, size)


def _block(feats_a: list[int], feats_b: list[int]) -> pl.DataFrame:
    return figures.order_block(load_correlation_block(path, mtime, tuple(feats_a), tuple(feats_b)), kept)


def _block_figure(cells: pl.DataFrame, title: str, size: str | None) -> go.Figure:
    if size is None:
        return figures.build_cell_heatmap_figure(cells, "feature_a", "feature_b", "corr", title, "A", "B", -1.0, 1.0)
    return figures.build_heatmap_export_figure(
        cells, "feature_a", "feature_b", "corr", title, "A", "B", size, -1.0, 1.0, row_label="A", col_label="B"
    )


# figure name -> builder of that figure for a paper size (None: the screen), so only the chosen one is built
available: dict[str, Callable[[str | None], go.Figure]] = {}
# figure name -> its preview's JSON for a paper size, cached, where building the figure on every load is slow
previews: dict[str, Callable[[str | None], str]] = {}
if bundle.has("umap"):
    map_filter = state.pair_filter if state.pair_filter.apply_to_maps else None
    link = pairs if state.include_dropped else kept
    partners = {
        "a": figures.compute_linked_partners(selected["b"], link, "b"),
        "b": figures.compute_linked_partners(selected["a"], link, "a"),
    }
    rings = {side: sorted(set(selected[side]) | set(partners[side])) for side in ("a", "b")}
    titles = {side: f"{side.upper()}: {bundle.side(side).get('label') or side.upper()}" for side in ("a", "b")}

    ring_key = (tuple(rings["a"]), tuple(rings["b"]))
    title_key = (titles["a"], titles["b"])

    def _map_view(sides: tuple[str, ...]) -> tuple[Callable[[str | None], go.Figure], Callable[[str | None], str]]:
        """The figure of these sides' maps for a paper size, and its preview's JSON (cached per view)."""

        def build(size: str | None) -> go.Figure:
            points = {side: load_umap_points(path, mtime, side, map_filter) for side in sides}
            return figures.build_map_view_figure(points, rings, titles, size)

        return build, lambda size: load_map_figure_json(path, mtime, map_filter, sides, ring_key, title_key, size)

    suffix = "-selection" if has_selection else ""
    for name, sides in (
        ("maps (the Pair explorer's view" + (", with the selection)" if has_selection else ")"), ("a", "b")),
        (f"umap-a{suffix}", ("a",)),
        (f"umap-b{suffix}", ("b",)),
    ):
        available[name], previews[name] = _map_view(sides)
if has_selection and kept.height:
    feats_a = sorted(set(selected["a"]) | set(figures.compute_linked_partners(selected["b"], kept, "b")))[:MAX_BLOCK]
    feats_b = sorted(set(selected["b"]) | set(figures.compute_linked_partners(selected["a"], kept, "a")))[:MAX_BLOCK]
    if feats_a and feats_b:
        available["selection-heatmap"] = lambda size: _block_figure(
            _block(feats_a, feats_b), "Activation correlation of the selection", size
        )
if kept.height >= 2:
    top = kept.head(20)
    available["correlation-block"] = lambda size: _block_figure(
        _block(top["feature_a"].to_list(), top["feature_b"].to_list()), "Activation correlation (strongest pairs)", size
    )
if bundle.has("matches"):
    threshold = bundle.manifest.get("matching", {}).get("settings", {}).get("min_corr")
    available["best-correlation-histogram"] = lambda size: _screen(
        figures.build_corr_histogram_figure(load_best_corr(path, mtime), threshold), size
    )
if bundle.has("similarity"):
    available["similarity-vs-null"] = lambda size: _screen(
        figures.build_null_figure(similarity_frame(load_similarity(path, mtime))), size
    )
if bundle.has("dashboards") and state.feature is not None and 0 <= state.feature < n_features(bundle, state.side):
    card_side, card_feature = state.side, state.feature

    def _card_figure(kind: str, size: str | None, side: str = card_side, feature: int = card_feature) -> go.Figure:
        d = load_feature_card(path, mtime, side, feature).dashboard
        if kind == "hist":
            fig = figures.build_activation_histogram_figure(
                d["hist_counts"] or [], d["hist_width"] or 1.0, side, feature
            )
        else:
            fig = figures.build_token_bar_figure(
                d["top_tokens_by_count"] or [], d["top_tokens_by_count_n"] or [], f"{side.upper()}{feature}: top tokens"
            )
        return _screen(fig, size)

    available[f"activations-{card_side.upper()}{card_feature}"] = lambda size: _card_figure("hist", size)
    available[f"top-tokens-{card_side.upper()}{card_feature}"] = lambda size: _card_figure("tokens", size)
if bundle.has("assignment") and not pairs["cos"].is_null().all():
    available["correlation-vs-cosine"] = lambda size: _screen(
        figures.build_corr_cos_figure(pairs.drop_nulls(["corr", "cos"])), size
    )
if bundle.has("analyses"):
    from components import diffing_figures
    from components.cache import load_analyses
    from components.diffing_data import analysis_settings, retag, shared_cosines

    diffing = analysis_settings(bundle)
    tagged = retag(load_analyses(path, mtime), diffing.mode, diffing)
    available["delta-norm-histogram"] = lambda size: _screen(
        diffing_figures.build_delta_norm_histogram_figure(
            tagged, diffing.a_only_below, diffing.b_only_above, diffing.shared_band
        ),
        size,
    )
    available["shared-cosine-histogram"] = lambda size: _screen(
        diffing_figures.build_shared_cosine_histogram_figure(shared_cosines(tagged)), size
    )
    available["cosine-vs-delta-norm"] = lambda size: _screen(diffing_figures.build_cosine_vs_delta_figure(tagged), size)
    available["latent-scaling"] = lambda size: _screen(
        diffing_figures.build_latent_scaling_figure(
            tagged.filter(tagged["tag"] == "b_only"), diffing.nu_near_one, diffing.nu_near_zero
        ),
        size,
    )
if bundle.has("causal"):
    from components import diffing_figures
    from components.cache import load_causal_table

    causal = load_causal_table(path, mtime)
    has_cos = causal["cos"].drop_nulls().drop_nans().len() > 0
    available["causal-vs-cosine"] = lambda size: _screen(
        diffing_figures.build_causal_vs_cosine_figure(
            causal, *(("cos", "decoder cosine") if has_cos else ("corr", "activation correlation"))
        ),
        size,
    )
fa, fb = state.pair()
if fa is None and kept.height:
    fa, fb = int(kept["feature_a"][0]), int(kept["feature_b"][0])
if fa is not None and fb is not None:
    available[f"units-A{fa}-B{fb}"] = lambda size: _screen(
        figures.build_unit_scatter_figure(load_unit_pair(path, mtime, fa, fb), fa, fb), size
    )

st.subheader("Figures")
if not available:
    st.info("This bundle has no parts to draw yet (matching, similarity, umap); see Overview for how to add them.")
else:
    st.caption(
        "The current view: the maps with the Pair explorer's selection and rings, the selection's correlation "
        "block, the pair the Correlation page shows. PNG (300 dpi), SVG and PDF are laid out for the paper size "
        "(markers, fonts and every heatmap label computed for it); HTML embeds plotly.js, so it opens offline."
    )
    name = st.selectbox("Figure", list(available), key="ex-figure")
    c1, _ = st.columns([1, 3])
    preview_size = c1.selectbox("Preview at", tuple(figures.PAPER_SIZES), index=1, key="ex-preview-size")
    preview = previews[name](preview_size) if name in previews else figure_json(available[name](preview_size))
    render_plot(preview, key="ex-preview")
    stem = name.split(" ")[0]
    render_figure_export(available[name], stem, key="ex-fig")

if bundle.has("umap"):
    st.subheader("Linked maps")
    st.caption(
        "Both UMAPs in one HTML file that keeps the hover linking (a point rings its partners in the other map), "
        "the selection and search rings of the Pair explorer, and plotly.js itself: it opens offline."
    )
    maps_json, _ = load_maps_payload(path, mtime)
    view = compute_view(state.selection, None, include_dropped=False)
    st.download_button(
        "linked-maps.html (interactive)",
        lambda: build_linked_maps_html(maps_json, view, f"Feature Bridge: {bundle.path.name}").encode(),
        file_name="linked-maps.html",
        mime="text/html",
        key="ex-linked-maps",
    )

st.subheader("Tables")
st.caption("Every column: lists stay lists in Parquet and JSON, and are joined with ' | ' in CSV.")
tables: dict[str, Callable[[], pl.DataFrame]] = {}
if pairs.height:
    tables["assignment"] = lambda: load_assignment(path, mtime)
    tables["pairs (the All pairs filter)"] = lambda: load_filtered_pairs(path, mtime, state.pair_filter)
    tables["pairs (every pair)"] = lambda: load_pairs_table(path, mtime)
if has_selection and bundle.has("assignment"):
    tables["selected-pairs"] = lambda: selection_rows(load_pairs_table(path, mtime), state.selection)
if bundle.has("matches"):
    tables["orphans"] = lambda: load_orphans(path, mtime)
    tables["split-groups"] = lambda: load_split_groups(path, mtime)
if bundle.has("similarity"):
    tables["similarity"] = lambda: similarity_frame(load_similarity(path, mtime))
    concepts = concepts_frame(load_similarity(path, mtime))
    if concepts is not None:
        tables["concepts"] = lambda: concepts
if bundle.has("analyses"):
    from components.cache import load_analyses

    tables["crosscoder-latents"] = lambda: load_analyses(path, mtime)
if bundle.has("causal"):
    from components.cache import load_causal_table

    tables["causal-equivalence"] = lambda: load_causal_table(path, mtime)
tables["features-a"] = lambda: bundle.features("a").collect()
tables["features-b"] = lambda: bundle.features("b").collect()
table_name = st.selectbox("Table", list(tables), key="ex-table")
frame = tables[table_name]()
st.caption(f"{frame.height:,} rows · {frame.width} columns: {', '.join(frame.columns)}")
st.dataframe(frame.head(200), hide_index=True, width="stretch")
render_table_downloads(frame, table_name.split(" ")[0], key="ex-tab")

st.subheader("Named lists")
try:
    lists = load_named_lists(path)
except UserError as exc:
    st.error(str(exc))
    lists = {}
if not lists:
    st.caption(
        "No named lists yet: save a selection in the Pair explorer (they are kept beside the bundle, in lists.json)."
    )
else:
    for i, (list_name, saved) in enumerate(lists.items()):
        st.markdown(f"**{list_name}** · {len(saved.pairs)} pairs · saved {saved.updated_at}")
        render_table_downloads(
            named_list_frame(saved.pairs, load_pairs_table(path, mtime) if bundle.has("assignment") else None),
            f"list-{list_name}",
            key=f"ex-list-{i}",
        )

st.subheader("Methods")
record = methods_record(bundle)
st.caption("What was compared, with which settings, seeds and versions: for the paper's appendix.")
render_json_download(record, "methods", key="ex-methods")
with st.expander("Preview"):
    st.json(record, expanded=False)
