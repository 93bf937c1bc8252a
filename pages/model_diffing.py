"""Model diffing: a crosscoder's latents classified (taxonomy, Delta-norm, cosines, Latent Scaling) and checked causally."""

from __future__ import annotations

import dataclasses

import streamlit as st

from components import diffing_figures
from components.cache import bundle_mtime, load_analyses
from components.diffing_data import analysis_settings, card_counts, is_crosscoder, latent_table, retag, shared_cosines
from components.diffing_widgets import render_causal_section, render_crosscoder_header
from components.plot import figure_json, render_plot
from components.state import get_state
from components.widgets import (
    render_figure_export,
    render_json_download,
    render_table_downloads,
    require_bundle,
    require_parts,
)
from core.crosscoder.settings import TAGS

state = get_state()
st.title("Model diffing")
bundle = require_bundle(state)
path, mtime = str(bundle.path), bundle_mtime(str(bundle.path))

if not is_crosscoder(bundle):
    st.info(
        "This bundle compares two SAEs; the latent taxonomy needs one crosscoder over both models. Build one with "
        "`python -m core compare --crosscoder PATH --model-a ... --model-b ...` or the crosscoder demo on Home. "
        "The causal check runs on an SAE bundle's kept pairs too:"
    )
    render_causal_section(bundle, key="md-causal")
    st.stop()

render_crosscoder_header(bundle)
if not require_parts(bundle, "analyses", what="The latent taxonomy"):
    st.stop()
base = analysis_settings(bundle)
frame = load_analyses(path, mtime)

c1, c2 = st.columns([2, 1])
mode = c1.radio(
    "Tag latents by",
    ("threshold", "top_n"),
    index=("threshold", "top_n").index(base.mode),
    horizontal=True,
    format_func=lambda m: {
        "threshold": f"threshold (Δ-norm > {base.b_only_above} B-only, < {base.a_only_below} A-only)",
        "top_n": "top-N by Δ-norm rank",
    }[m],
    key="md-mode",
)
top_n = int(
    c2.number_input(
        "N (top-N mode)", min_value=1, max_value=max(1, frame.height), value=min(base.top_n, frame.height), key="md-n"
    )
)
settings = dataclasses.replace(base, top_n=top_n)
tagged = retag(frame, mode, settings)
counts = card_counts(tagged)

st.subheader("Taxonomy")
cols = st.columns(5)
for col, (name, label) in zip(
    cols,
    (
        ("shared", "shared"),
        ("base_only", "A-only (base_only)"),
        ("chat_only", "B-only (chat_only)"),
        ("unclassified", "unclassified"),
        ("dead", "dead"),
    ),
    strict=True,
):
    col.metric(label, f"{counts[name]:,}")
st.caption(
    "Dead latents (no activation on the corpus, or both decoder norms below eps) are tagged first. Keys as the "
    "model card writes them: base_only = A (index 0), chat_only = B (index 1). Shared: |Δ-norm − 0.5| < "
    f"{settings.shared_band}."
)
st.json(counts, expanded=False)
render_json_download(
    {"mode": mode, "top_n": top_n if mode == "top_n" else None, "taxonomy": counts}, "taxonomy", key="md-tax"
)

st.subheader("Δ-norm")
fig = diffing_figures.build_delta_norm_histogram_figure(
    frame, settings.a_only_below, settings.b_only_above, settings.shared_band
)
render_plot(figure_json(fig), key="md-delta")
st.caption(
    "Δ-norm = ½((n_B − n_A) / max(n_A, n_B) + 1), B-only → 1 (published tables store 1 − Δ, B-only → 0); n = decoder row norms."
)
render_figure_export(fig, "delta-norm-histogram", key="md-delta-ex")

st.subheader("Decoder cosine")
left, right = st.columns(2)
with left:
    fig = diffing_figures.build_shared_cosine_histogram_figure(shared_cosines(tagged))
    render_plot(figure_json(fig), key="md-cos")
    render_figure_export(fig, "shared-cosine-histogram", key="md-cos-ex")
with right:
    fig = diffing_figures.build_cosine_vs_delta_figure(tagged)
    render_plot(figure_json(fig), key="md-cos-delta")
    render_figure_export(fig, "cosine-vs-delta-norm", key="md-cos-delta-ex")

st.subheader("Latent Scaling")
shown = st.multiselect(
    "Tags shown", TAGS[1:], default=["b_only"], key="md-ls-tags", help="Minder et al. study the B-only latents"
)
fig = diffing_figures.build_latent_scaling_figure(
    tagged.filter(tagged["tag"].is_in(shown)), settings.nu_near_one, settings.nu_near_zero
)
render_plot(figure_json(fig), key="md-ls")
st.caption(
    "β per latent, closed form over the tokens where it fires, projected on its B decoder direction; ν near 1 "
    f"(≥ {settings.nu_near_one}, dashed) suggests Complete Shrinkage (ν^ε) or Latent Decoupling (ν^r); both below "
    f"{settings.nu_near_zero} (dotted) a genuinely B-specific latent. No published cut: both are settings."
)
render_figure_export(fig, "latent-scaling", key="md-ls-ex")

st.subheader("Causal check")
render_causal_section(bundle, key="md-causal")

st.subheader("Latents by tag")
tag = st.selectbox("Tag", TAGS, index=TAGS.index("b_only"), key="md-list-tag")
table = latent_table(tagged, tag, path)
st.dataframe(
    table,
    hide_index=True,
    width="stretch",
    column_config={"link": st.column_config.LinkColumn("pair dashboard", display_text="open")},
)
st.caption(
    f"{table.height:,} latents shown (at most 500). 'open' shows the latent on both sides of the pair dashboard."
)
render_table_downloads(table.drop("link"), f"latents-{tag}", key="md-list-dl")
