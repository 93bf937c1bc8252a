"""The only ``st.cache_*`` wrappers: loaders keyed by plain values.

Every loader is keyed by the bundle path and its manifest's modification time, so a stage that
adds a part (which rewrites the manifest last) invalidates what was cached for that bundle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl
import streamlit as st

from components import data
from core.bundle.reader import Bundle, open_bundle


@st.cache_resource(show_spinner=False, max_entries=4)
def load_bundle(path: str, manifest_mtime: float) -> Bundle:
    """Open a bundle once per (path, manifest modification time)."""
    return open_bundle(path)


def bundle_mtime(path: str) -> float:
    """The manifest's modification time (0 when absent): the cache key's version part."""
    manifest = Path(path) / "manifest.json"
    return manifest.stat().st_mtime if manifest.is_file() else 0.0


def cached_bundle(path: str) -> Bundle:
    """Open a bundle through the cache, reopening when its manifest changed."""
    return load_bundle(path, bundle_mtime(path))


@st.cache_data(show_spinner="Reading the UMAP points…", max_entries=16)
def load_umap_points(path: str, mtime: float, side: str, pair_filter: Any = None) -> pl.DataFrame:
    """One side's UMAP points with their pair's r, category (paired / unpaired / orphan / dead) and hover labels.

    Args:
        path: the bundle folder.
        mtime: the manifest's modification time (cache key).
        side: ``"a"`` or ``"b"``.
        pair_filter: a ``components.state.PairFilter`` whose pairs count as paired (None: the kept pairs).
    """
    bundle = load_bundle(path, mtime)
    pairing = None
    if pair_filter is not None:
        pairing = data.filter_pairs(load_pairs_table(path, mtime), pair_filter)
    return data.umap_points(bundle, side, pairing)


@st.cache_data(show_spinner="Reading every pair…", max_entries=4)
def load_pairs_table(path: str, mtime: float) -> pl.DataFrame:
    """Every pair the bundle knows (components.data.pairs_table)."""
    return data.pairs_table(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_filtered_pairs(path: str, mtime: float, pair_filter: Any) -> pl.DataFrame:
    """The pairs table's rows that pass a filter."""
    return data.filter_pairs(load_pairs_table(path, mtime), pair_filter)


@st.cache_data(show_spinner=False, max_entries=8)
def load_assignment(path: str, mtime: float) -> pl.DataFrame:
    """assignment.parquet with every column, and both features' top tokens."""
    return data.assignment_frame(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_orphans(path: str, mtime: float) -> pl.DataFrame:
    """Both sides' orphans under the app's one definition (components.data.ORPHAN_DEFINITION)."""
    return data.orphan_frame(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_split_groups(path: str, mtime: float) -> pl.DataFrame:
    """1 -> k split groups of both sides."""
    return data.split_groups(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=64)
def load_partner_lists(path: str, mtime: float, side: str, feature: int) -> pl.DataFrame:
    """One feature's partners by activation correlation and by decoder cosine, side by side."""
    return data.partner_lists(load_bundle(path, mtime), side, feature)


@st.cache_data(show_spinner=False, max_entries=8)
def load_stale(path: str, mtime: float) -> list[Any]:
    """The bundle's derived parts whose inputs changed since they were built (core.bundle.provenance)."""
    from core.bundle.provenance import stale_parts

    return stale_parts(load_bundle(path, mtime))


@st.cache_resource(show_spinner="Preparing the maps…", max_entries=4)
def load_maps_payload(path: str, mtime: float, pair_filter: Any = None) -> tuple[str, str]:
    """Both UMAPs and the partner table as the linked-maps component's JSON, and its key (built once per bundle
    and map filter).

    A resource, not data: the JSON string is immutable and large, so every session shares one copy (the
    page publishes it as a file the browser fetches, ``components.linked_maps.publish_maps_payload``).

    Args:
        path: the bundle folder.
        mtime: the manifest's modification time (cache key).
        pair_filter: a ``components.state.PairFilter`` whose pairs the maps colour as paired (the All pairs
            filter applied to the maps); None: the kept pairs. The payload carries each point's category and
            r under it, so the browser draws what the filter says; the partner table (what links the maps)
            is the whole assignment either way.

    Returns:
        ``(json, key)``: :func:`components.linked_maps.encode_maps_payload` of the payload, and its content key.
    """
    from components.linked_maps import compute_maps_payload, encode_maps_payload

    bundle = load_bundle(path, mtime)
    points = {side: load_umap_points(path, mtime, side, pair_filter) for side in ("a", "b")}
    titles = {side: f"{side.upper()}: {bundle.side(side).get('label') or side.upper()}" for side in ("a", "b")}
    payload = compute_maps_payload(points, data.pair_frame(bundle), titles)
    return encode_maps_payload(payload), payload["key"]


@st.cache_data(show_spinner=False, max_entries=8)
def load_pairs(path: str, mtime: float, kept_only: bool = False) -> pl.DataFrame:
    """The assignment's pairs (``feature_a``, ``feature_b``, ``corr``, ``cos``, ``kept``, ``reason``)."""
    return data.pair_frame(load_bundle(path, mtime), kept_only)


@st.cache_data(show_spinner=False, max_entries=8)
def load_best_corr(path: str, mtime: float) -> pl.DataFrame:
    """Best partner correlation per feature, both directions."""
    return data.best_corr_frame(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_similarity(path: str, mtime: float) -> dict[str, Any]:
    """similarity.json as a dict."""
    return load_bundle(path, mtime).similarity_json()


@st.cache_data(show_spinner=False, max_entries=32)
def load_selection_table(path: str, mtime: float, side: str, features: tuple[int, ...]) -> pl.DataFrame:
    """The pairs touching a selection of one side's features."""
    return data.selection_pair_table(load_bundle(path, mtime), side, list(features))


@st.cache_resource(show_spinner=False, max_entries=2)
def load_text_index(path: str, mtime: float) -> data.TextIndex:
    """The units' character offsets and the documents' text (read once per bundle, shared by every session)."""
    return data.load_text_index(load_bundle(path, mtime))


@st.cache_data(show_spinner="Reading both features' activations…", max_entries=32)
def load_unit_pair(path: str, mtime: float, feature_a: int, feature_b: int) -> pl.DataFrame:
    """Per-unit activations of a pair (units where either fires), with the original text around each."""
    return data.unit_pair_frame(load_bundle(path, mtime), feature_a, feature_b, text_index=load_text_index(path, mtime))


@st.cache_resource(show_spinner=False, max_entries=4)
def load_corr_cos_json(path: str, mtime: float) -> str:
    """The every-pair correlation vs decoder cosine figure as JSON (built once per bundle: 65K points)."""
    from components import figures
    from components.plot import figure_json

    pairs = data.pair_frame(load_bundle(path, mtime)).drop_nulls(["corr", "cos"])
    return figure_json(figures.build_corr_cos_figure(pairs))


@st.cache_resource(show_spinner=False, max_entries=16)
def load_unit_scatter_json(path: str, mtime: float, feature_a: int, feature_b: int) -> str:
    """One pair's unit-by-unit scatter as JSON (up to 20K units with their contexts)."""
    from components import figures
    from components.plot import figure_json

    return figure_json(
        figures.build_unit_scatter_figure(load_unit_pair(path, mtime, feature_a, feature_b), feature_a, feature_b)
    )


@st.cache_resource(show_spinner="Drawing the maps…", max_entries=8)
def load_map_figure_json(
    path: str,
    mtime: float,
    pair_filter: Any,
    sides: tuple[str, ...],
    rings: tuple[tuple[int, ...], tuple[int, ...]],
    titles: tuple[str, str],
    size: str | None,
) -> str:
    """The Export page's map figure as JSON: both maps side by side (``sides`` ``("a", "b")``) or one map.

    Built once per view: on a 65K x 65K bundle building and serialising the two-map figure took 0.9 s of
    server CPU, on every load of the page that previews it.

    Args:
        path: the bundle folder.
        mtime: the manifest's modification time (cache key).
        pair_filter: the pairs that count as paired (None: the kept pairs), as :func:`load_umap_points`.
        sides: ``("a", "b")`` for the pair figure, or one side.
        rings: (side A's, side B's) ringed feature ids.
        titles: (side A's, side B's) panel titles.
        size: a paper size of ``figures.PAPER_SIZES`` (None: as on screen; the pair figure then uses "double").

    Returns:
        The figure's JSON (``components.plot.figure_json`` of ``figures.build_map_view_figure``, which the
        static and HTML exports draw too).
    """
    from components import figures
    from components.plot import figure_json

    points = {side: load_umap_points(path, mtime, side, pair_filter) for side in sides}
    ring = dict(zip(("a", "b"), rings, strict=True))
    title = dict(zip(("a", "b"), titles, strict=True))
    return figure_json(figures.build_map_view_figure(points, ring, title, size))


@st.cache_data(show_spinner="Correlating the selected features…", max_entries=32)
def load_correlation_block(
    path: str, mtime: float, features_a: tuple[int, ...], features_b: tuple[int, ...]
) -> pl.DataFrame:
    """Exact Pearson for every (A, B) pair of two small feature sets."""
    return data.correlation_block(load_bundle(path, mtime), list(features_a), list(features_b))


@st.cache_data(show_spinner="Reading the feature's dashboard…", max_entries=64)
def load_feature_card(path: str, mtime: float, side: str, feature: int) -> Any:
    """A feature's dashboard card (core.explore.search.FeatureCard)."""
    from core.explore.search import search_feature

    return search_feature(load_bundle(path, mtime), side, feature)


@st.cache_data(show_spinner="Searching…", max_entries=32)
def load_search_hits(path: str, mtime: float, query: str) -> pl.DataFrame:
    """Every feature matching a search text (feature id or token), with its partner and strongest example in context."""
    bundle = load_bundle(path, mtime)
    return data.hit_contexts(bundle, data.search_hits(bundle, query), load_text_index(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_feature_labels(path: str, mtime: float, side: str) -> pl.DataFrame:
    """``feature``, ``label`` (top tokens) for one side."""
    return data.feature_labels(load_bundle(path, mtime), side)


@st.cache_resource(show_spinner=False, max_entries=1)
def load_discovery_sides(path: str, mtime: float) -> Any:
    """Both sides' models and SAEs, as the bundle was built from them (loaded once: seconds to minutes)."""
    from core.explore.prompts import load_sides  # torch: imported on first use only, never by components at import

    return load_sides(load_bundle(path, mtime), "cpu")


@st.cache_data(show_spinner="Reading the feature's partners…", max_entries=64)
def load_partner_table(path: str, mtime: float, side: str, feature: int) -> pl.DataFrame:
    """A feature's top-k partners with their evidence and assignment status."""
    return data.partner_table(load_bundle(path, mtime), side, feature)


@st.cache_resource(show_spinner="Reading the top tokens…", max_entries=4)
def load_feature_tokens(path: str, mtime: float, side: str) -> Any:
    """A side's top tokens per feature (core.matching.evidence.FeatureTokens), or None without the part."""
    return data.feature_tokens(load_bundle(path, mtime), side)


@st.cache_data(show_spinner=False, max_entries=64)
def load_split_group(
    path: str, mtime: float, side: str, feature: int, min_score: float
) -> tuple[pl.DataFrame, int | None]:
    """A feature's split group (partners above a combined score, their distinct tokens) and its badge count."""
    other = "b" if side == "a" else "a"
    return data.split_group_frame(
        load_bundle(path, mtime), side, feature, min_score, load_feature_tokens(path, mtime, other)
    )


@st.cache_data(show_spinner="Computing the pair's evidence…", max_entries=64)
def load_pair_evidence(path: str, mtime: float, feature_a: int, feature_b: int) -> dict[str, Any]:
    """Every piece of evidence on one pair (core.matching.explain.explain_pair, as a dict)."""
    from core.matching.explain import explain_pair

    return explain_pair(load_bundle(path, mtime), feature_a, feature_b).to_dict()


@st.cache_data(show_spinner="Reading the crosscoder analyses…", max_entries=8)
def load_analyses(path: str, mtime: float) -> pl.DataFrame:
    """A crosscoder bundle's analyses.parquet (tags as strings)."""
    from components import diffing_data

    return diffing_data.analyses_frame(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=8)
def load_causal_table(path: str, mtime: float) -> pl.DataFrame:
    """The causal check's rows without the per-probe vectors (empty without the causal part)."""
    from components import diffing_data

    return diffing_data.causal_table(load_bundle(path, mtime))


@st.cache_data(show_spinner=False, max_entries=64)
def load_causal_pair(path: str, mtime: float, feature_a: int, feature_b: int) -> dict[str, Any] | None:
    """One checked pair's causal row with its per-probe shifts, or None."""
    from components import diffing_data

    return diffing_data.causal_pair(load_bundle(path, mtime), feature_a, feature_b)


@st.cache_data(show_spinner="Running both models and SAEs over the text…", max_entries=16)
def load_discovery(path: str, mtime: float, text: str, score: str, top_x: int, coverage: float) -> Any:
    """Discovery on a text (core.explore.prompts.run_discovery), cached so a rerun (a click on a result) is free."""
    from core.explore.discover import DiscoverSettings
    from core.explore.prompts import run_discovery  # torch: imported on first use only

    return run_discovery(
        load_bundle(path, mtime),
        load_discovery_sides(path, mtime),
        text,
        DiscoverSettings(score_mode=score, return_top_x=top_x, min_coverage_pct=coverage),
    )
