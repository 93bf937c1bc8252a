"""``render_*`` functions: Streamlit rendering of bundle content (no torch here)."""

from __future__ import annotations

import html
import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from components import builds, figures
from components.cache import cached_bundle
from components.data import PART_HINTS, TextIndex, n_features, window_segments
from components.exports import EXPORT_FORMATS, MIME, ExportError, export_html, export_static, table_bytes
from components.state import AppState, PairFilter, take_event
from core.bundle.reader import Bundle
from core.errors import UserError

HOME = "pages/home.py"
FEATURE_PAGE = "pages/feature.py"
PAPER_INCHES = {"single": 3.5, "double": 7.2}


def require_bundle(state: AppState) -> Bundle:
    """The open bundle, or a pointer to Home and a stop (every page's guard).

    While a background build is writing the open bundle and its harvest has not landed yet, the
    page says so, shows the build's progress, and reruns by itself once the bundle opens.
    """
    if not state.bundle_path:
        st.info("No bundle is open yet: open the demo or a bundle folder on the Home page.")
        st.page_link(HOME, label="Go to Home", icon=":material/home:")
        st.stop()
    path = Path(state.bundle_path)
    build = builds.running_build_for(path)
    if build is not None and not builds.bundle_opens(path):
        st.info(
            f"{build.job.title} is being built in the background; this page opens by itself once its harvest "
            "has landed (Home shows every stage)."
        )
        _follow_build(str(path), ())
        st.stop()
    try:
        return cached_bundle(state.bundle_path)
    except UserError as exc:
        st.error(str(exc))
        st.page_link(HOME, label="Open another bundle on Home", icon=":material/home:")
        st.stop()
    raise AssertionError("unreachable")  # st.stop() raises


def require_parts(bundle: Bundle, *parts: str, what: str = "This page") -> bool:
    """Show what is missing for each absent part; True when all are present.

    A part that a background build is computing right now is announced as such (with the build's
    progress), and the page reruns by itself when it lands; otherwise the page says how to add it,
    with the error of a build that failed on the way.
    """
    missing = [p for p in parts if not bundle.has(p)]
    if not missing:
        return True
    build = builds.running_build_for(bundle.path)
    if build is not None:
        current = build.current()
        now = f" (now: {current.name})" if current is not None else ""
        st.info(
            f"{what} needs the **{', '.join(missing)}** part, which the background build is computing{now}; "
            "this page refreshes by itself when it lands."
        )
        _follow_build(str(bundle.path), tuple(missing))
        return False
    failed = next((b for b in builds.builds_for(bundle.path) if b.state == "failed"), None)
    if failed is not None and failed.error:
        st.error(f"The background build stopped before this part: {failed.error}")
    for part in missing:
        if part in bundle.broken:
            # listed in the manifest but unreadable: say so, with the command that rebuilds it
            st.error(f"{what} needs the **{part}** part, which is damaged ({bundle.broken[part]}). Rebuild it with:")
            st.code(bundle.repair_hint(part), language="bash")
            continue
        hint = PART_HINTS.get(part, "python -m core --help").replace("BUNDLE", str(bundle.path))
        st.warning(f"{what} needs the **{part}** part, which is not computed yet for this bundle. Add it with:")
        st.code(hint, language="bash")
    return False


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = max(int(round(seconds)), 0)
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


def render_build_progress(status: builds.BuildStatus) -> None:
    """One row per phase of a background build: done/total of its current step, time spent, time left."""
    for phase in status.phases:
        if phase.state == "done":
            st.progress(1.0, text=f"✓ {phase.name} ({_duration(phase.seconds)})")
        elif phase.state == "pending":
            about = f" (about {_duration(phase.left)})" if phase.left else ""
            st.progress(0.0, text=f"{phase.name}: waiting{about}")
        else:
            count = f" {phase.done:,} / {phase.total:,}" if phase.total else ""
            left = f" · about {_duration(phase.left)} left" if phase.left is not None else ""
            mark = "✗ " if phase.state == "failed" else ""
            st.progress(phase.fraction, text=f"{mark}{phase.name} · {phase.step}{count}{left}")
    if status.running:
        total = f"about {_duration(status.left)} left" if status.left is not None else "time left unknown"
        st.caption(f"Running for {_duration(time.time() - status.started)}, {total}.")
    elif status.state == "failed":
        st.error(status.error or "The build failed.")


@st.fragment(run_every=2.0)
def _follow_build(path: str, parts: tuple[str, ...]) -> None:
    """The build's progress, redrawn every 2 s; reruns the page once the awaited parts have landed."""
    status = builds.running_build_for(path)
    landed = builds.bundle_opens(Path(path)) and (not parts or all(cached_bundle(path).has(p) for p in parts))
    if landed or status is None:
        st.rerun()
    render_build_progress(status)


def render_side_summary(bundle: Bundle, side: str) -> None:
    """One side's model, SAE and hook, with the hook-sanity table."""
    s = bundle.side(side)
    st.subheader(f"Side {side.upper()}: {s.get('label') or side.upper()}")
    cols = st.columns(4)
    cols[0].metric("d_in", s.get("d_in", "?"))
    cols[1].metric("features", f"{s.get('d_sae', 0):,}")
    cols[2].metric("alive", f"{s.get('alive_features', 0):,}")
    cols[3].metric("architecture", s.get("architecture", "?"))
    model = s.get("model", {})
    sae = s.get("sae", {}).get("spec", {})
    st.caption(
        f"Model `{model.get('source', '?')}` ({model.get('kind', '?')}), SAE `{sae.get('source', '?')}`, hook `{s.get('hook')}`"
    )
    render_hook_sanity(s.get("hook_sanity", []), s.get("hook_sanity_verdict", {}))


def render_hook_sanity(rows: list[dict[str, Any]], verdict: dict[str, Any]) -> None:
    """The SAE's reconstruction at its hook and the neighbouring hooks."""
    if not rows:
        st.info("This bundle records no hook sanity check.")
        return
    frame = pl.DataFrame(rows)
    keep = [
        c
        for c in ("hook", "hidden_states_index", "explained_variance", "mse", "configured", "n_tokens")
        if c in frame.columns
    ]
    (st.success if verdict.get("ok", True) else st.warning)(verdict.get("message", ""))
    st.dataframe(frame.select(keep), hide_index=True, width="stretch")


PRESET_NOTES = {
    "featurebridge": "Exact correlations; non-concept, dead and always-on filters; every kept pair significant "
    "(q <= 0.05, document-stratified test); exact 1-1 pairing.",
    "paper": "The published 1-1 pipeline of Lan et al., step by step (best A per B, the paper's labels and junk "
    "list, greedy by B id, then r > 0.1; no significance filter).",
    "custom": "Settings of your own (see the manifest's matching.settings).",
}


def render_matching_summary(bundle: Bundle) -> None:
    """How many features were alive, matched and kept, and why pairs were dropped."""
    matching = bundle.manifest.get("matching", {})
    summary = matching.get("summary", {})
    settings = matching.get("settings", {})
    method = settings.get("method", "greedy")
    chosen = summary.get("methods", {}).get(method, {})
    preset = matching.get("preset", settings.get("preset"))
    st.markdown(
        f"Matching preset: **{preset or 'not recorded (built before presets)'}**. " + PRESET_NOTES.get(preset, "")
    )
    cols = st.columns(5)
    for i, side in enumerate(("a", "b")):
        total = summary.get(f"n_features_{side}", bundle.side(side).get("d_sae", 0))
        cols[i].metric(f"alive {side.upper()}", f"{total - summary.get(f'n_dead_{side}', 0):,} / {total:,}")
    cols[2].metric(f"pairs ({method})", f"{chosen.get('n_pairs', 0):,}")
    cols[3].metric("kept after filters", f"{chosen.get('n_kept', 0):,}")
    cols[4].metric("mean kept corr", f"{chosen.get('mean_corr', float('nan')):.3f}")
    rows = [
        {"method": name, **{k: v for k, v in body.items() if k in ("n_pairs", "n_kept", "mean_corr", "median_corr")}}
        for name, body in summary.get("methods", {}).items()
    ]
    if rows:
        st.caption(
            f"Every pairing method, computed on the same correlations (the bundle's assignment uses **{method}**)."
        )
        st.dataframe(pl.DataFrame(rows), hide_index=True, width="stretch")
    if bundle.has("assignment"):
        reasons = (
            bundle.assignment().select(pl.col("reason").fill_null("kept")).collect()["reason"].value_counts(sort=True)
        )
        st.caption("Why pairs of the assignment were dropped (a pair can fail several filters; the first is shown).")
        st.dataframe(reasons, hide_index=True)


def render_similarity(similarity: dict[str, Any]) -> None:
    """Each metric beside its permutation null, with p-values; the paper-compatible SVCCA beside the corrected one."""
    from components.data import similarity_frame

    frame = similarity_frame(similarity)
    if frame.height == 0:
        st.info("similarity.json holds no metrics.")
        return
    from components.plot import figure_json, render_plot

    render_plot(figure_json(figures.build_null_figure(frame)), key="similarity-null")
    st.dataframe(frame, hide_index=True, width="stretch")
    from components.data import p_floor_note

    note = p_floor_note(similarity)
    if note:
        st.info(note)
    for row in frame.filter(~pl.col("status").is_in(["tested", "no null"])).iter_rows(named=True):
        st.warning(f"**{row['metric']}** is {row['status']}.")
    metrics = similarity.get("metrics", {})
    if "svcca" in metrics and "svcca_paper" in metrics:
        st.caption(
            f"SVCCA with the 99% variance rule: {metrics['svcca']['value']:.3f}; with the paper's component rule "
            f"(svcca_paper, comparable to Lan et al.): {metrics['svcca_paper']['value']:.3f}. "
            f"p-values: {similarity.get('p_value_rule', '')}."
        )


def render_feature_picker(state: AppState, bundle: Bundle, key: str) -> tuple[str, int]:
    """Side and feature inputs bound to the state's selected feature; returns the chosen (side, feature).

    The inputs follow the state (a link, a click on another page) unless the user just changed them.
    """
    from components.state import bind, took

    cols = st.columns([1, 2])
    bind(state, f"{key}-side", state.side)
    side = took(
        state,
        f"{key}-side",
        cols[0].radio("Side", ("a", "b"), horizontal=True, key=f"{key}-side", format_func=str.upper),
    )
    n = n_features(bundle, side)
    current = state.feature if state.feature is not None and side == state.side else 0
    current = min(max(int(current), 0), n - 1)
    bind(state, f"{key}-feature", current)
    feature = took(
        state,
        f"{key}-feature",
        int(cols[1].number_input(f"Feature (0..{n - 1})", min_value=0, max_value=n - 1, step=1, key=f"{key}-feature")),
    )
    if (side, feature) != (state.side, state.feature):
        state.select(side, feature)
    return side, feature


def render_snippet(
    tokens: list[str],
    acts: list[float],
    center: int,
    max_act: float,
    segments: list[tuple[str, int | None]] | None = None,
) -> str:
    """HTML for one example window: each unit shaded by its activation, the centre underlined.

    Args:
        tokens: the units' own texts (the raw tokens; shown on hover).
        acts: each unit's activation.
        center: the example's unit within the window.
        max_act: the activation that gets full colour.
        segments: the window's original text (``components.data.window_segments``): each unit's
            characters and the text between units. Without it the units' texts are joined by spaces.

    Returns:
        The HTML (every text escaped).
    """
    scale = max(max_act, 1e-9)
    if segments is None:
        segments = [(str(tok), i) for i, tok in enumerate(tokens)]
        sep = " "
    else:
        sep = ""
    parts = []
    for text, i in segments:
        if i is None:
            parts.append(html.escape(text))
            continue
        act = float(acts[i] or 0.0) if i < len(acts) else 0.0
        alpha = min(max(act / scale, 0.0), 1.0)
        style = f"background-color: rgba(242,158,31,{alpha:.2f}); padding: 0 1px; border-radius: 2px;"
        if i == center:
            style += " text-decoration: underline; font-weight: 600;"
        raw = tokens[i] if i < len(tokens) else text
        title = f"token {raw!r} · {act:.3f}" if act else f"token {raw!r} · 0"
        parts.append(f'<span style="{style}" title="{html.escape(title)}">{html.escape(text)}</span>')
    return sep.join(parts)


def render_examples(
    examples: pl.DataFrame, kind_prefix: str, limit: int, max_act: float, text_index: TextIndex | None = None
) -> None:
    """Example windows of one kind (``top`` or ``quantile``), highlighted, strongest first.

    With the bundle's text index the windows show the original text (the units' characters, as
    the document has them); hovering a unit shows its raw token and activation.
    """
    rows = examples.filter(pl.col("kind").str.starts_with(kind_prefix)).head(limit)
    if rows.height == 0:
        st.caption("no examples")
        return
    lines = []
    for r in rows.iter_rows(named=True):
        segments = None
        if text_index is not None:
            segments = window_segments(text_index, int(r["window_start"]), len(r["window_text"]))
        snippet = render_snippet(r["window_text"], r["window_acts"], r["center"], max_act, segments)
        lines.append(f'<div style="margin: 2px 0; font-size: 0.9em;"><code>{r["act"]:.2f}</code> {snippet}</div>')
    st.html("".join(lines))


def render_feature_card(card: Any, key: str, text_index: TextIndex | None = None) -> None:
    """One feature's dashboard: stats, top and quantile examples, histogram, top tokens, logit effect.

    Args:
        card: the feature's ``core.explore.search.FeatureCard``.
        key: widget key prefix.
        text_index: the bundle's units-to-text index, so examples show the original text.
    """
    d = card.dashboard
    cols = st.columns(4)
    cols[0].metric("fires on", f"{d.get('count', 0):,} units")
    cols[1].metric("frequency", f"{(d.get('freq') or 0):.4f}")
    cols[2].metric("mean (active)", f"{(d.get('mean_active') or 0):.3f}")
    cols[3].metric("max", f"{(d.get('max') or 0):.3f}")
    if not d.get("count"):
        st.warning("This feature never fires on the corpus (dead).")
        return
    max_act = float(d.get("max") or 1.0)
    st.markdown("**Top activations**")
    render_examples(card.examples, "top", 10, max_act, text_index)
    with st.expander("Quantile samples (one group per activation quantile)"):
        for kind in sorted(k for k in card.examples["kind"].unique().to_list() if k.startswith("quantile")):
            st.caption(kind.replace("_", " "))
            render_examples(card.examples, kind, 4, max_act, text_index)
    # small charts as inline HTML, not plotly: a plotly mount per chart was most of this page's browser time
    color = figures.SIDE_COLORS.get(card.side, figures.COLOR_BOTH)
    charts = []
    if d.get("hist_counts"):
        charts.append(
            figures.build_histogram_svg(
                d["hist_counts"], d["hist_width"], color, f"{card.side.upper()}{card.feature}: non-zero activations"
            )
        )
    if d.get("top_tokens_by_count"):
        charts.append(
            figures.build_token_bars_html(
                d["top_tokens_by_count"], d["top_tokens_by_count_n"], "Top tokens (count)", color
            )
        )
    if d.get("promoted_tokens"):
        charts.append(
            '<div style="display:flex;gap:16px"><div style="flex:1">'
            + figures.build_token_bars_html(d["promoted_tokens"], d["promoted_logits"], "Promoted logits", "#2a9d8f")
            + '</div><div style="flex:1">'
            + figures.build_token_bars_html(
                d["suppressed_tokens"], d["suppressed_logits"], "Suppressed logits", "#8d99ae"
            )
            + "</div></div>"
        )
    if charts:
        st.html("".join(charts))
    if not d.get("promoted_tokens"):
        st.caption("Logit effects: not available (the side's model is not a causal LM with an unembedding).")


def render_table_downloads(
    frame: pl.DataFrame, name: str, key: str, formats: tuple[str, ...] = ("csv", "parquet", "json")
) -> None:
    """Download buttons for a table in each format, every column kept (see components.exports.table_bytes).

    The file is written only when its button is clicked (deferred data), and the click does not rerun
    the page, so a large table costs nothing until it is asked for and a download never disturbs the view.
    """
    cols = st.columns(len(formats))
    for col, fmt in zip(cols, formats, strict=True):
        col.download_button(
            f"{name}.{fmt}",
            data=lambda fmt=fmt: table_bytes(frame, fmt),
            file_name=f"{name}.{fmt}",
            mime=MIME[fmt],
            key=f"{key}-{fmt}",
            on_click="ignore",
        )


def render_figure_export(build: Callable[[str | None], go.Figure], name: str, key: str) -> None:
    """PNG / SVG / PDF of a figure laid out for a paper column size, plus a self-contained interactive HTML.

    Args:
        build: the figure for a size: ``build("single")`` / ``build("double")`` lay it out for
            print, ``build(None)`` for the screen (the HTML file).
        name: the file name's stem.
        key: widget key prefix.
    """
    c1, c2, c3 = st.columns([1, 1, 2])
    fmt = c1.selectbox("Format", EXPORT_FORMATS, key=f"{key}-fmt")
    size = c2.selectbox(
        "Size",
        tuple(figures.PAPER_SIZES),
        key=f"{key}-size",
        format_func=lambda s: f"{s} column ({PAPER_INCHES[s]} in)",
    )
    if c3.button("Prepare file", key=f"{key}-prepare"):
        try:
            with st.spinner("Rendering (the first figure starts a browser: a few seconds; later ones reuse it)"):
                payload = export_static(build(size), fmt, size)
        except ExportError as exc:
            st.error(str(exc))
        else:
            st.download_button(
                f"Download {name}-{size}.{fmt}",
                payload,
                file_name=f"{name}-{size}.{fmt}",
                mime=MIME[fmt],
                key=f"{key}-dl",
                on_click="ignore",
            )
    # plotly.js inlined (from the installed package), so the file opens offline; built only when downloaded
    st.download_button(
        f"{name}.html (interactive, works offline)",
        data=lambda: export_html(build(None)),
        file_name=f"{name}.html",
        mime=MIME["html"],
        key=f"{key}-html",
        on_click="ignore",
    )


def render_json_download(obj: Any, name: str, key: str) -> None:
    """A JSON download button."""
    st.download_button(
        f"{name}.json",
        json.dumps(obj, indent=2, sort_keys=True, default=str).encode(),
        file_name=f"{name}.json",
        mime="application/json",
        key=key,
        on_click="ignore",
    )


# the device choices; the default is HarvestSettings.device
DEVICES = ("auto", "cpu", "cuda")
# the matching presets the form offers (the default first)
MATCH_PRESETS = ("featurebridge", "paper")


def render_build_form() -> dict[str, Any] | None:
    """The new-comparison form (the same inputs as ``python -m core compare``); returns the raw values on submit.

    Every default shown is read from the settings dataclasses (``HarvestSettings``, the stages),
    so the form, the CLI and ``core.compare`` agree; the values are validated once, when
    Home builds the ``core.ComparisonConfig`` from them.
    """
    from core.harvest.specs import DEFAULT_CORPUS, HarvestSettings
    from core.pipeline.stages import STAGES

    defaults = HarvestSettings()
    with st.form("build-form"):
        cols = st.columns(2)
        values: dict[str, Any] = {}
        for col, side in zip(cols, ("a", "b"), strict=True):
            with col:
                st.subheader(f"Side {side.upper()}")
                values[f"model_{side}"] = st.text_input(
                    "Model",
                    key=f"model-{side}",
                    placeholder="hub id or folder, gguf:FILE, onnx-bert:FILE, hf-package:DIST",
                )
                values[f"tokenizer_{side}"] = st.text_input("Tokenizer (ONNX models only)", key=f"tok-{side}")
                values[f"sae_{side}"] = st.text_input(
                    "SAE", key=f"sae-{side}", placeholder="folder, local:DIR, sparsify:DIR or release:REL/ID"
                )
                values[f"hook_{side}"] = st.text_input(
                    "Hook (empty: the SAE's own)", key=f"hook-{side}", placeholder="blocks.3.hook_resid_post"
                )
                values[f"label_{side}"] = st.text_input("Label", key=f"label-{side}")
        with st.expander("Crosscoder instead of two SAEs"):
            values["crosscoder"] = st.text_input(
                "Crosscoder checkpoint",
                key="crosscoder",
                placeholder=".safetensors / .pt file or its folder (dictionary_learning or ckkissane layout)",
                help="Index 0 reads model A, index 1 model B; leave both SAE fields empty",
            )
            values["crosscoder_format"] = st.selectbox(
                "Layout", ("auto", "dictionary_learning", "ckkissane"), key="crosscoder-format"
            )
        c1, c2, c3, c4 = st.columns(4)
        values["corpus"] = c1.text_input("Corpus", value=DEFAULT_CORPUS, help="fortunes, kjv, file:PATH or hf:NAME")
        values["max_tokens"] = int(c2.number_input("Max tokens", min_value=1, value=defaults.max_tokens, step=10_000))
        values["max_len"] = int(c3.number_input("Tokens per window", min_value=1, value=defaults.max_len, step=8))
        values["device"] = c4.selectbox("Device", DEVICES, index=DEVICES.index(defaults.device))
        values["out"] = st.text_input("Output folder", placeholder="/path/to/new/bundle")
        values["overwrite"] = st.checkbox(
            "Replace a bundle this tool wrote there",
            help="Only a comparison bundle this tool wrote is replaced, and only once the new one is finished; "
            "a folder holding anything else is refused.",
        )
        values["stages"] = st.multiselect(
            "Stages after the harvest",
            STAGES,
            default=list(STAGES),
            help="matching (correlations + assignment; a crosscoder's analyses instead), similarity (SVCCA, RSA, "
            "... with nulls), dashboards (examples, histograms), umap (maps of decoder directions)",
        )
        values["causal"] = st.checkbox(
            "Also run the causal check (loads both models again; minutes on a CPU)",
            help="Ablate the top 200 kept pairs (or shared crosscoder latents) in both models on 256 probes",
        )
        values["preset"] = st.selectbox(
            "Matching preset",
            MATCH_PRESETS,
            key="build-preset",
            help=" ".join(f"{name}: {note}" for name, note in PRESET_NOTES.items() if name in MATCH_PRESETS),
        )
        submitted = st.form_submit_button("Build comparison", type="primary")
    if not submitted:
        return None
    return check_build_values(values)


def check_build_values(values: dict[str, Any]) -> dict[str, Any] | None:
    """Validate the build form's raw values (an error shown and ``None`` when incomplete); map stages for a crosscoder."""
    crosscoder = bool(str(values.get("crosscoder", "")).strip())
    needed = ("model_a", "model_b", "out") if crosscoder else ("model_a", "sae_a", "model_b", "sae_b", "out")
    missing = [name for name in needed if not str(values[name]).strip()]
    if missing:
        st.error(
            f"Fill in {', '.join(m.replace('_', ' ').upper() if len(m) == 1 else m.replace('_', ' ') for m in missing)} first."
        )
        return None
    stages = list(values["stages"])
    if crosscoder:
        if str(values["sae_a"]).strip() or str(values["sae_b"]).strip():
            st.error("Leave SAE A and SAE B empty when you give a crosscoder: one crosscoder replaces the two SAEs.")
            return None
        # a crosscoder is paired by construction; its analyses stage takes matching's place
        stages = ["analyses" if name == "matching" else name for name in stages]
    elif "similarity" in stages and "matching" not in stages:
        st.error("The similarity stage compares matched pairs: add the matching stage, or drop similarity.")
        return None
    if values.get("causal"):
        stages.append("causal")
    return {**values, "stages": stages}


def make_progress() -> Any:
    """A progress callback drawing one bar per stage (stage label, done, total; total 0 = unknown)."""
    bars: dict[str, Any] = {}

    def progress(stage: str, done: int, total: int) -> None:
        key = stage.split(" ")[0] if stage.startswith(("shard", "harvest")) else stage
        fraction = min(done / total, 1.0) if total else 0.0
        label = f"{stage}: {done:,} / {total:,}" if total else f"{stage} …"
        if key not in bars:
            bars[key] = st.progress(fraction, text=label)
        else:
            bars[key].progress(fraction, text=label)

    return progress


def render_alignment(alignment: dict[str, Any] | None) -> None:
    """How two tokenizers were aligned: units, each side's share of tokens used, share of 1:1 units.

    Same-tokenizer bundles (units are tokens) show nothing.
    """
    if not alignment:
        return
    st.subheader("Tokenizer alignment")
    st.caption(
        "The two models tokenize differently, so units are the character spans between cuts that are token "
        f"boundaries on both sides; each side's codes are pooled per unit with `{alignment.get('pooling', 'max')}`."
    )
    cols = st.columns(4)
    cols[0].metric("aligned units", f"{alignment.get('n_units', 0):,}")
    cols[1].metric("A tokens used", f"{alignment.get('share_tokens_used_a', 0):.1%}")
    cols[2].metric("B tokens used", f"{alignment.get('share_tokens_used_b', 0):.1%}")
    cols[3].metric("1:1 units", f"{alignment.get('share_one_to_one', 0):.1%}")


def evidence_column_config() -> dict[str, Any]:
    """How the evidence columns read in a table: each with its meaning in the header's help (sortable as numbers)."""
    cc = st.column_config
    return {
        "corr": cc.NumberColumn("r", format="%.3f", help="Pearson correlation over all units"),
        "n_coactive": cc.NumberColumn("k", help="units where both features fire"),
        "mu": cc.NumberColumn(
            "mu", format="%.3g", help="expected co-firings if B's firings were shuffled within documents"
        ),
        "k_over_mu": cc.NumberColumn("k/mu", format="%.3g", help="observed over expected co-firings"),
        "neglog10_p": cc.NumberColumn("-log10 p", format="%.1f", help="the pair's own co-firing p-value"),
        "q": cc.NumberColumn(
            "q",
            format="%.2g",
            help="false-discovery-rate q of the pair's family (the assignment; in a partner list each feature's "
            "most significant candidate); empty where the pair was not tested in one",
        ),
        "flags": cc.ListColumn(
            "flags", help="k <= 2: indistinguishable from chance; document-filling: test uninformative"
        ),
        "token_overlap": cc.NumberColumn("token overlap", format="%.2f", help="Jaccard of the two top-token sets"),
        "combined_score": cc.NumberColumn(
            "combined", format="%.3f", help="0.4 x token overlap + 0.6 x r (SplatNLP's score; a negative r counts)"
        ),
        "note": cc.TextColumn("note", help="Strong > 0.5, Good > 0.3, Moderate > 0.1, else Weak"),
        "cos": cc.NumberColumn("decoder cos", format="%.3f", help="cosine of the two decoder directions"),
    }


def render_pair_evidence(evidence: dict[str, Any], key: str) -> None:
    """One pair's evidence (core.matching.explain.PairEvidence as a dict): the numbers, the flags, the tokens."""

    def show(value: Any, fmt: str) -> str:
        return "n/a" if value is None else format(value, fmt)

    cols = st.columns(6)
    cols[0].metric("k (co-firing)", f"{evidence['n_coactive']:,}", help="units where both fire")
    cols[1].metric("expected mu", show(evidence["mu"], ".3g"), help="under the document-stratified null")
    cols[2].metric("k / mu", show(evidence["k_over_mu"], ".3g"))
    cols[3].metric("-log10 p", show(evidence["neglog10_p"], ".1f"))
    q_help = f"from {evidence['q_source']}" if evidence.get("q_source") else "not tested in a family"
    cols[4].metric("q", show(evidence["q"], ".2g"), help=q_help)
    cols[5].metric(
        "combined score",
        show(evidence["combined_score"], ".3f"),
        help="0.4 x token overlap + 0.6 x r; Strong > 0.5, Good > 0.3, Moderate > 0.1, else Weak",
    )
    status = "not in the assignment"
    if evidence.get("assignment"):
        a = evidence["assignment"]
        status = f"{a['method']}: " + ("kept" if a["kept"] else f"dropped ({a['reason']})")
    st.markdown(
        f"**{evidence['note']} match** · token overlap {show(evidence['token_overlap'], '.2f')} · "
        f"decoder cosine {show(evidence['cos'], '.3f')} · assignment: {status}"
    )
    for flag in evidence.get("flags") or []:
        st.warning(flag)
    cols = st.columns(3)
    for col, name, label in (
        (cols[0], "shared_tokens", "Shared top tokens"),
        (cols[1], "a_only_tokens", "A only"),
        (cols[2], "b_only_tokens", "B only"),
    ):
        tokens = evidence.get(name) or []
        col.caption(f"{label} ({len(tokens)})")
        col.text(", ".join(repr(t) for t in tokens[:30]) or "–")


# ---------------------------------------------------------------- links: every result opens its pair


def format_q(q: float | None) -> str:
    """A q-value for a label: ``q 3e-05``; a q of exactly 0 (the p-value underflowed) as ``q < 1e-300``."""
    if q is None:
        return ""
    return "q < 1e-300" if q == 0 else f"q {q:.2g}"


def pair_query(state: AppState, side: str, feature: int, partner: int | None = None) -> dict[str, str]:
    """The URL query of a feature's dashboard (with its partner): what a link to it carries."""
    query = {"side": side, "feature": str(int(feature))}
    if state.bundle_path:
        query["bundle"] = state.bundle_path
    if partner is not None:
        query["partner"] = str(int(partner))
    return query


def render_pair_link(state: AppState, side: str, feature: int, partner: int | None, label: str) -> None:
    """A link that opens the pair dashboard (the Feature page) of ``feature`` and ``partner`` in one click."""
    st.page_link(
        FEATURE_PAGE, label=label, icon=":material/open_in_new:", query_params=pair_query(state, side, feature, partner)
    )


def open_pair(state: AppState, side: str, feature: int, partner: int | None = None) -> None:
    """Go to the pair dashboard of ``feature`` (and ``partner``) now (after a click in a table or a heatmap)."""
    state.select(side, int(feature))
    state.partner = None if partner is None else int(partner)
    st.switch_page(FEATURE_PAGE, query_params=pair_query(state, side, feature, partner))


def render_pick_table(state: AppState, frame: pl.DataFrame, key: str, **kwargs: Any) -> dict[str, Any] | None:
    """A table whose rows are links: one click on a row's box returns that row (once: a re-mount is no click).

    Args:
        state: the app state (remembers which click was seen).
        frame: the rows to show.
        key: the table's widget key.
        **kwargs: passed to ``st.dataframe`` (``column_config``, ``height``, ...).

    Returns:
        The clicked row as a dict, on the run right after the click; else None.
    """
    event = st.dataframe(
        frame, key=key, on_select="rerun", selection_mode="single-row", hide_index=True, width="stretch", **kwargs
    )
    rows = list(getattr(getattr(event, "selection", None), "rows", None) or event.get("selection", {}).get("rows", []))
    picked = take_event(state, key, rows)
    if picked is None or not 0 <= int(picked[0]) < frame.height:
        return None
    return frame.row(int(picked[0]), named=True)


def render_hit_links(state: AppState, hits: pl.DataFrame, per_page: int, key: str) -> None:
    """One page of search hits (``state.search_page``), each a link to its pair dashboard, with the count and a pager.

    Args:
        state: the app state (links carry its bundle; the pager moves ``search_page``).
        hits: ``components.data.search_hits``'s frame, best first.
        per_page: hits per page.
        key: widget key prefix (the container is ``key``: class ``st-key-<key>``).
    """
    n = hits.height
    pages = max(1, -(-n // per_page))
    page = state.search_page = min(max(int(state.search_page), 0), pages - 1)
    lo, hi = page * per_page, min(n, (page + 1) * per_page)
    st.markdown(f"**{n:,} hit{'s' if n != 1 else ''}**" + (f" · showing {lo + 1:,}-{hi:,}" if n > per_page else ""))
    with st.container(key=key):
        for row in hits.slice(lo, hi - lo).iter_rows(named=True):
            side, other = row["side"], "b" if row["side"] == "a" else "a"
            partner = row.get("partner")
            text = f"{side.upper()}{row['feature']} · {row['tokens'] or '–'}"
            if partner is not None:
                q = row.get("partner_q")
                q_text = "" if q is None else f", {format_q(q)}"
                text += f"  →  {other.upper()}{partner} (r {row['partner_corr']:.2f}{q_text}, {row['partner_status']})"
            else:
                text += "  →  no partner"
            text += f"  ·  {row['why']}"
            render_pair_link(state, side, row["feature"], partner, text)
    if pages > 1:
        c1, c2, c3 = st.columns([1, 2, 1])
        if c1.button("Previous", key=f"{key}-prev", disabled=page == 0):
            state.search_page = page - 1
            st.rerun()
        c2.caption(f"page {page + 1} of {pages}")
        if c3.button("Next", key=f"{key}-next", disabled=page >= pages - 1):
            state.search_page = page + 1
            st.rerun()


# ---------------------------------------------------------------- stale parts, re-running matching


def render_stale_banner(stale: Sequence[Any], sections: Sequence[str] | None = None) -> None:
    """Warn about derived parts built from another assignment than the bundle holds now, with the rebuild command."""
    for part in stale:
        if sections is not None and part.section not in sections:
            continue
        st.warning(f"**Stale {part.section}**: {part.reason}; its numbers describe the old pairing. Rebuild it with:")
        st.code(part.command, language="bash")


def render_rematch_form(bundle: Bundle) -> dict[str, Any] | None:
    """The form to re-run matching with another method, threshold or filter list; returns the settings on submit."""
    from core.matching.settings import ASSIGN_METHODS, MatchSettings

    current = bundle.manifest.get("matching", {}).get("settings", {})
    known = set(MatchSettings.__dataclass_fields__)
    base = {k: v for k, v in current.items() if k in known}
    with st.form("rematch-form"):
        c1, c2, c3 = st.columns(3)
        method = c1.selectbox(
            "Pairing method", ASSIGN_METHODS, index=ASSIGN_METHODS.index(base.get("method", "greedy")), key="rm-method"
        )
        threshold = c2.number_input(
            "Keep pairs with r above", -1.0, 0.99, float(base.get("min_corr", 0.1)), 0.05, key="rm-min-corr"
        )
        max_freq = c3.number_input(
            "Always-on from frequency", 0.01, 1.0, float(base.get("max_freq", 0.5)), 0.05, key="rm-max-freq"
        )
        nonconcept = st.text_input(
            "Non-concept token list (a text file, one token a line; empty: the shipped list)",
            value=base.get("nonconcept_file") or "",
            key="rm-nonconcept",
        )
        c4, c5 = st.columns(2)
        shared = c4.checkbox(
            "Drop pairs with no shared top token", bool(base.get("require_shared_token", False)), key="rm-shared"
        )
        significant = c5.checkbox(
            "Drop pairs whose q-value is above alpha", bool(base.get("require_significant", False)), key="rm-sig"
        )
        rebuild = st.multiselect(
            "Then rebuild what depends on the pairing",
            ("similarity", "umap"),
            default=[p for p in ("similarity", "umap") if bundle.has(p)],
            key="rm-rebuild",
            help="similarity (SVCCA, RSA, ... with nulls: minutes) and umap (the maps; the first fit "
            "in a process pays about a minute of compilation). Left out, they are marked stale.",
        )
        submitted = st.form_submit_button("Re-run matching", type="primary")
    if not submitted:
        return None
    settings = {
        **base,
        "method": method,
        "min_corr": float(threshold),
        "max_freq": float(max_freq),
        "nonconcept_file": nonconcept.strip() or None,
        "require_shared_token": bool(shared),
        "require_significant": bool(significant),
    }
    try:
        MatchSettings(**settings)
    except UserError as exc:
        st.error(str(exc))
        return None
    return {"settings": settings, "rebuild": list(rebuild)}


# ---------------------------------------------------------------- what the core computes


def render_concepts(similarity: dict[str, Any]) -> None:
    """Concept subspaces: each concept's pairs against their own nulls; untestable cases marked as such."""
    from components.data import concepts_frame

    frame = concepts_frame(similarity)
    if frame is None:
        st.info("This bundle's similarity part has no concept subspaces (SimilaritySettings.concepts was off).")
        return
    concepts = similarity.get("concepts") or {}
    n_concepts = frame["concept"].n_unique()
    n_untested = frame.filter(pl.col("status") != "tested").height
    st.caption(
        f"{n_concepts} concepts ({concepts.get('source', 'assets/concepts.json')}; a pair belongs to a concept when "
        f"{concepts.get('match', 'either')} feature's top {concepts.get('top_n', 5)} tokens hold a keyword). "
        "Each value is tested against its own nulls: a permutation within the concept and random same-size "
        f"subsets of all pairs ({concepts.get('n_null', '?')} draws each), adjusted across concepts "
        f"({concepts.get('correction', 'bh')}). {n_untested} of {frame.height} rows are not testable and carry no p-value."
    )
    st.dataframe(frame, hide_index=True, width="stretch")


def render_split_groups(state: AppState, groups: pl.DataFrame, key: str) -> None:
    """Split groups as 1 -> k rows; a click on a row opens the hub with its strongest partner."""
    if groups.height == 0:
        st.info("No split groups: no feature has two or more partners above the split threshold.")
        return
    shown = groups.with_columns(
        pl.concat_str(
            [
                pl.col("side").str.to_uppercase(),
                pl.col("feature").cast(pl.String),
                pl.lit(" -> "),
                pl.col("k").cast(pl.String),
            ]
        ).alias("group")
    ).select("group", "side", "feature", "k", "partners", "partner_corr", "kept_partner", "tokens")
    st.caption(
        f"{groups.filter(pl.col('side') == 'a').height:,} A features and {groups.filter(pl.col('side') == 'b').height:,} "
        "B features split into several features of the other side (two or more partners above the split "
        "threshold, strongest first). Click a row's box to open the hub beside its strongest partner."
    )
    row = render_pick_table(state, shown, key, height=360)
    if row is not None:
        partners = row["partners"] or []
        open_pair(state, row["side"], row["feature"], partners[0] if partners else None)


def render_pair_filter(current: PairFilter, reasons: Sequence[str], key: str) -> PairFilter:
    """The pairs table's filter controls; returns the filter they now describe."""
    labels = {
        "assigned": "assignment (kept + dropped)",
        "kept": "kept",
        "dropped": "dropped",
        "all": "every candidate (top-k both ways)",
    }
    from components.state import KEPT_CHOICES

    c1, c2, c3, c4 = st.columns([2, 1, 1, 2])
    kept = c1.selectbox(
        "Pairs", KEPT_CHOICES, index=KEPT_CHOICES.index(current.kept), format_func=labels.__getitem__, key=f"{key}-kept"
    )
    min_corr = c2.number_input(
        "r at least",
        -1.0,
        1.0,
        value=current.min_corr if current.min_corr is not None else -1.0,
        step=0.05,
        key=f"{key}-r",
    )
    max_q = c3.number_input(
        "q at most", 0.0, 1.0, value=current.max_q if current.max_q is not None else 1.0, step=0.01, key=f"{key}-q"
    )
    options = ["any", *reasons]
    reason = c4.selectbox(
        "Drop reason",
        options,
        index=options.index(current.reason) if current.reason in options else 0,
        key=f"{key}-reason",
    )
    c5, c6, c7 = st.columns([2, 1, 1])
    text = c5.text_input("Top tokens contain", value=current.text, key=f"{key}-text")
    splits = c6.checkbox("Split groups only", value=current.splits_only, key=f"{key}-splits")
    maps = c7.checkbox(
        "Apply to the maps",
        value=current.apply_to_maps,
        key=f"{key}-maps",
        help="The Pair explorer then colours only the features of the pairs shown here.",
    )
    return PairFilter(
        kept=kept,
        min_corr=None if min_corr <= -1.0 else float(min_corr),
        max_q=None if max_q >= 1.0 else float(max_q),
        reason=None if reason == "any" else reason,
        splits_only=bool(splits),
        text=text.strip(),
        apply_to_maps=bool(maps),
    )


def pair_of(table: pl.DataFrame, side: str, feature: int) -> dict[str, Any] | None:
    """The pair to show for a feature: its kept pair, else its strongest assigned pair, else its strongest candidate."""
    rows = table.filter(pl.col(f"feature_{side}") == int(feature))
    if rows.height == 0:
        return None
    order = {"kept": 0, "dropped": 1, "candidate": 2}
    rows = rows.with_columns(pl.col("status").replace_strict(order, default=3).alias("_o")).sort(
        ["_o", "corr"], descending=[False, True], nulls_last=True
    )
    return rows.drop("_o").row(0, named=True)


def render_pair_panel(state: AppState, bundle: Bundle, side: str, feature: int, table: pl.DataFrame) -> None:
    """A compact pair dashboard under the maps for the one clicked feature: its pair's evidence and top examples."""
    from components.cache import bundle_mtime, load_feature_card

    other = "b" if side == "a" else "a"
    row = pair_of(table, side, feature)
    partner = None if row is None else row[f"feature_{other}"]
    with st.container(border=True, key="pe-pair-panel"):
        if row is None:
            st.markdown(
                f"**{side.upper()}{feature}** has no pair in this bundle (see the orphans on the All pairs page)."
            )
        else:
            q = row.get("q")
            bits = [f"r {row['corr']:.3f}" if row.get("corr") is not None else "r n/a"]
            if q is not None:
                bits.append(format_q(q))
            if row.get("cos") is not None:
                bits.append(f"decoder cos {row['cos']:.3f}")
            if row.get("n_coactive") is not None:
                bits.append(f"co-fire {row['n_coactive']:,}")
            status = row["status"] + (f" ({row['reason']})" if row.get("reason") else "")
            st.markdown(f"**{side.upper()}{feature} ↔ {other.upper()}{partner}** · {' · '.join(bits)} · {status}")
        c1, c2 = st.columns(2)
        with c1:
            render_pair_link(state, side, feature, partner, "Open the pair dashboard")
        with c2:
            if partner is not None:
                st.page_link(
                    "pages/correlation.py",
                    label="Unit-by-unit scatter of this pair",
                    icon=":material/show_chart:",
                    query_params=pair_query(state, side, feature, partner),
                )
        if not (bundle.has("dashboards") and bundle.has("examples")):
            return
        path = str(bundle.path)
        mtime = bundle_mtime(path)
        cols = st.columns(2)
        for col, (s, f) in zip(cols, ((side, feature), (other, partner)), strict=True):
            if f is None:
                continue
            with col:
                card = load_feature_card(path, mtime, s, int(f))
                st.caption(f"{s.upper()}{f}: top activations")
                render_examples(card.examples, "top", 4, float(card.dashboard.get("max") or 1.0))
