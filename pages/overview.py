"""Overview: what was compared, how many features matched and were kept, and how similar the SAEs are.

Only the open tab runs (the first on opening): its figures sit in the tabs after the first, so opening the
page starts no plotly.js; the app's plot component draws each figure."""

from __future__ import annotations

from collections.abc import Callable

import polars as pl
import streamlit as st

from components import figures
from components.cache import bundle_mtime, cached_bundle, load_best_corr, load_orphans, load_similarity, load_stale
from components.data import ORPHAN_DEFINITION, recorded_settings, sweep_cells, sweep_frame
from components.plot import figure_json, render_plot
from components.state import get_state
from components.widgets import (
    make_progress,
    render_alignment,
    render_concepts,
    render_matching_summary,
    render_rematch_form,
    render_side_summary,
    render_similarity,
    render_stale_banner,
    require_bundle,
    require_parts,
)
from core.bundle.reader import Bundle

# the open tab's widget key (its value is the tab's label)
OVERVIEW_TAB = "ov-tab"


def rebuild_stages(path: str, sections: list[str]) -> None:
    """Rebuild stale parts with the settings they were built with, with a progress bar per step, then rerun."""
    from core.errors import UserError
    from core.pipeline.stages import run_stage

    progress = make_progress()
    bundle = cached_bundle(path)
    try:
        for section in sections:
            run_stage(section, path, recorded_settings(bundle, section), progress=progress)
    except UserError as exc:
        st.error(str(exc))
        return
    get_state().notice = f"Done: {', '.join(sections)} rebuilt from the current assignment."
    st.rerun()


def rerun_matching(path: str, settings: dict, rebuild: list[str]) -> None:
    """Re-run matching with new settings (and rebuild the chosen dependants), with progress, then rerun the page."""
    from core.errors import UserError
    from core.matching.settings import MatchSettings
    from core.pipeline.stages import run_stage

    progress = make_progress()
    done = []
    try:
        bundle = run_stage("matching", path, MatchSettings(**settings), progress=progress)
        summary = bundle.manifest.get("matching", {}).get("summary", {}).get("methods", {}).get(settings["method"], {})
        done.append(
            f"matching re-run ({settings['method']}, r above {settings['min_corr']:g}: {summary.get('n_kept', '?'):,} kept pairs)"
        )
        for section in [s for s in ("similarity", "umap") if s in rebuild]:
            run_stage(section, path, recorded_settings(bundle, section), progress=progress)
            done.append(f"{section} rebuilt")
    except UserError as exc:
        st.error(str(exc))
        return
    get_state().notice = "Done: " + "; ".join(done) + "."
    st.rerun()


def _sides(bundle: Bundle, path: str, mtime: float) -> None:
    for side in ("a", "b"):
        render_side_summary(bundle, side)


def _matching(bundle: Bundle, path: str, mtime: float) -> None:
    if not require_parts(bundle, "matches", "assignment", what="The matching summary"):
        return
    render_matching_summary(bundle)
    orphans = load_orphans(path, mtime)
    st.caption(
        f"Orphans: {orphans.filter(pl.col('side') == 'a').height:,} A and "
        f"{orphans.filter(pl.col('side') == 'b').height:,} B ({ORPHAN_DEFINITION}); the list is on the All pairs page."
    )
    with st.expander("Re-run matching with another method, threshold or filter list"):
        request = render_rematch_form(bundle)
        if request:
            rerun_matching(path, request["settings"], request["rebuild"])
    threshold = bundle.manifest.get("matching", {}).get("settings", {}).get("min_corr")
    render_plot(
        figure_json(figures.build_corr_histogram_figure(load_best_corr(path, mtime), threshold)),
        key="overview-corr-hist",
    )


def _similarity(bundle: Bundle, path: str, mtime: float) -> None:
    if not require_parts(bundle, "similarity", what="The similarity section"):
        return
    render_similarity(load_similarity(path, mtime))
    sweep = sweep_frame(bundle)
    if sweep is None:
        st.caption("No layer x layer sweep in this bundle (see the Heatmaps page).")
        return
    metric = "svcca" if "svcca" in sweep["metric"].to_list() else sweep["metric"][0]
    cells, row, col = sweep_cells(sweep, metric)
    render_plot(
        figure_json(figures.build_cell_heatmap_figure(cells, row, col, "value", f"Layer sweep: {metric}", "A", "B")),
        key="overview-sweep",
    )
    st.page_link("pages/heatmaps.py", label="Every metric, clickable, on the Heatmaps page")


def _concepts(bundle: Bundle, path: str, mtime: float) -> None:
    if require_parts(bundle, "similarity", what="The concept subspaces"):
        render_concepts(load_similarity(path, mtime))


# the tabs in order, with what each draws
SECTIONS: dict[str, Callable[[Bundle, str, float], None]] = {
    "Sides and hooks": _sides,
    "Matching": _matching,
    "Similarity": _similarity,
    "Concept subspaces": _concepts,
}


state = get_state()
st.title("Overview")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))

m = bundle.manifest
st.caption(f"Bundle `{bundle.path}` · schema {m['schema_version']} · created {m.get('created_at', '?')}")
cols = st.columns(3)
cols[0].metric("shared units", f"{m.get('n_units', 0):,}")
cols[1].metric("documents", f"{m.get('corpus', {}).get('n_docs_used', 0):,}")
cols[2].metric("corpus", m.get("corpus", {}).get("kind", "?"))
render_alignment(m.get("alignment"))
if state.notice:
    st.success(state.notice)
    state.notice = None
stale = load_stale(path, mtime)
render_stale_banner(stale)
if stale and st.button("Rebuild what is stale", type="primary", key="ov-rebuild"):
    rebuild_stages(path, [p.section for p in stale])
# only the open tab runs and is sent (choosing a tab reruns the page): before, every load sent and the
# browser mounted all four tabs' tables, form widgets and figures
tabs = st.tabs(list(SECTIONS), key=OVERVIEW_TAB, on_change="rerun")
for tab, section in zip(tabs, SECTIONS.values(), strict=True):
    if tab.open:
        with tab:
            section(bundle, path, mtime)

with st.expander("Manifest"):
    st.json(m, expanded=False)
