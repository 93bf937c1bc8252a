"""``render_*`` functions of the Model diffing page and the causal sections (no torch here)."""

from __future__ import annotations

import math
from typing import Any

import polars as pl
import streamlit as st

from components import diffing_figures
from components.cache import bundle_mtime, load_causal_pair, load_causal_table
from components.diffing_data import crosscoder_summary
from components.plot import figure_json, render_plot
from components.widgets import render_figure_export, render_table_downloads
from core.bundle.reader import Bundle

CAUSAL_HINT = "python -m core causal BUNDLE  (the top 200 shared latents or kept pairs, 256 probes)"
MEASURES = {
    "kl": "KL divergence of the next-token distributions (mean over positions)",
    "hidden_shift": "relative change of the last hidden state, mean over positions of ||h' - h|| / ||h||",
}


def _fmt(value: Any, spec: str = ".3f") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "n/a"
    return format(value, spec)


def render_crosscoder_header(bundle: Bundle) -> None:
    """Per-model explained variance, L0, dead fraction and what the checkpoint is; warnings for flagged checkpoints."""
    s = crosscoder_summary(bundle)
    cols = st.columns(5)
    cols[0].metric("EV model A", _fmt(s["ev_a"]))
    cols[1].metric("EV model B", _fmt(s["ev_b"]))
    cols[2].metric("L0 (latents per token)", _fmt(s["l0"], ".1f"))
    cols[3].metric("dead latents", _fmt(s["dead_fraction"], ".1%"))
    cols[4].metric("latents", f"{s['n_latents'] or 0:,}")
    scaling = ", ".join(
        f"{side.upper()} × {_fmt(row.get('scale'), '.4g')} ({row.get('source')})" for side, row in s["scaling"].items()
    )
    st.caption(
        f"`{s['path']}`: {s['format']} layout, {s['architecture']}, code normaliser {s['code_normalization']}; "
        f"input scaling {scaling}. Explained variance over every harvested token, in the crosscoder's input space."
    )
    if s["threshold_uncalibrated"]:
        st.warning(
            "This checkpoint's BatchTopK threshold is -1 (never calibrated): at inference every positive "
            "pre-activation fires, so codes are far denser than in training (see the L0 above)."
        )
    if s["unknown_keys"]:
        st.info(f"The checkpoint holds keys neither layout defines (ignored): {', '.join(s['unknown_keys'])}.")


def render_causal_section(bundle: Bundle, key: str) -> None:
    """The causal check's results: median, equivalence vs decoder cosine (or corr), the table, exports."""
    if not bundle.has("causal"):
        st.info("The causal check has not run on this bundle yet. Add it with:")
        st.code(CAUSAL_HINT.replace("BUNDLE", str(bundle.path)), language="bash")
        return
    path = str(bundle.path)
    table = load_causal_table(path, bundle_mtime(path))
    record = bundle.manifest.get("causal", {})
    measure = record.get("measure", {})
    cols = st.columns(4)
    cols[0].metric("median equivalence", _fmt(record.get("median_equivalence")))
    if "median_equivalence_shared" in record:
        cols[1].metric("median, shared latents", _fmt(record.get("median_equivalence_shared")))
    cols[2].metric("checked", f"{record.get('n_ok', 0)} / {record.get('n_checked', 0)}")
    cols[3].metric("probes", f"{record.get('n_probes', 0)}")
    st.caption(
        f"For each {'latent' if 'crosscoder' in bundle.manifest else 'pair'}: remove its contribution at the hook "
        "in both models on the same probes, measure each output shift (A: "
        f"{MEASURES.get(measure.get('a'), measure.get('a'))}; B: {MEASURES.get(measure.get('b'), measure.get('b'))}), "
        f"and correlate the two shift vectors over the {record.get('settings', {}).get('probes', 'active')} probes "
        "(Pearson; permutation p = (b + 1) / (n + 1)). Statuses other than ok have no equivalence: "
        + ", ".join(f"{k} {v}" for k, v in sorted(record.get("statuses", {}).items()))
        + "."
    )
    use_cos = "cos" in table.columns and table["cos"].drop_nulls().drop_nans().len() > 0
    x, title = ("cos", "decoder cosine") if use_cos else ("corr", "activation correlation")
    fig = diffing_figures.build_causal_vs_cosine_figure(table, x=x, x_title=title)
    render_plot(figure_json(fig), key=f"{key}-fig")
    render_figure_export(fig, "causal-vs-cosine", key=f"{key}-fig-ex")
    st.dataframe(table, hide_index=True, width="stretch")
    render_table_downloads(table, "causal-equivalence", key=f"{key}-tab")


def render_causal_pair(bundle: Bundle, feature_a: int, feature_b: int, key: str) -> None:
    """The pair dashboard's causal section: the pair's equivalence, p-value and per-probe shifts."""
    if not bundle.has("causal"):
        return
    path = str(bundle.path)
    row = load_causal_pair(path, bundle_mtime(path), int(feature_a), int(feature_b))
    st.subheader("Causal equivalence")
    if row is None:
        st.caption(f"A{feature_a} · B{feature_b} is not among the checked pairs (see the Model diffing page).")
        return
    cols = st.columns(4)
    cols[0].metric("equivalence", _fmt(row["equivalence"]))
    cols[1].metric("p-value", _fmt(row["p_value"], ".3g"))
    cols[2].metric("active probes", f"{row['n_active']}")
    cols[3].metric("status", row["status"])
    if row["status"] != "ok":
        reasons = {
            "no_shift_b": "removing it leaves model B's output unchanged on every probe (no B shift)",
            "no_shift_a": "removing it leaves model A's output unchanged on every probe (no A shift)",
            "no_shift": "removing it changes neither model's output",
            "inactive": "it fires on none of the probes",
            "few_probes": "it fires on too few probes for a correlation",
            "constant": "one model's shift is the same on every probe",
        }
        st.caption(f"No equivalence: {reasons.get(row['status'], row['status'])}.")
    measure = bundle.manifest.get("causal", {}).get("measure", {})
    fig = diffing_figures.build_shift_scatter_figure(
        row["shift_a"], row["shift_b"], row["active"], measure.get("a", ""), measure.get("b", "")
    )
    render_plot(figure_json(fig), key=f"{key}-shifts")
    shifts = pl.DataFrame(
        {
            "probe": list(range(len(row["shift_a"]))),
            "shift_a": row["shift_a"],
            "shift_b": row["shift_b"],
            "active": row["active"],
        }
    )
    render_table_downloads(shifts, f"shifts-A{feature_a}-B{feature_b}", key=f"{key}-dl")
