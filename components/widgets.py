"""``render_*`` functions: Streamlit rendering of bundle content (no torch here)."""

from __future__ import annotations

import html
import io
import json
import time
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl
import streamlit as st

from components import builds, figures
from components.cache import cached_bundle
from components.data import PART_HINTS, TextIndex, n_features, window_segments
from components.state import AppState
from core.bundle.reader import Bundle
from core.errors import UserError

HOME = "pages/home.py"


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


def render_matching_summary(bundle: Bundle) -> None:
    """How many features were alive, matched and kept, and why pairs were dropped."""
    matching = bundle.manifest.get("matching", {})
    summary = matching.get("summary", {})
    method = matching.get("settings", {}).get("method", "greedy")
    chosen = summary.get("methods", {}).get(method, {})
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
    st.plotly_chart(figures.build_null_figure(frame), key="similarity-null", width="stretch")
    st.dataframe(frame, hide_index=True, width="stretch")
    metrics = similarity.get("metrics", {})
    if "svcca" in metrics and "svcca_paper" in metrics:
        st.caption(
            f"SVCCA with the 99% variance rule: {metrics['svcca']['value']:.3f}; with the paper's component rule "
            f"(svcca_paper, comparable to Lan et al.): {metrics['svcca_paper']['value']:.3f}. "
            f"p-values: {similarity.get('p_value_rule', '')}."
        )


def render_feature_picker(state: AppState, bundle: Bundle, key: str) -> tuple[str, int]:
    """Side and feature inputs bound to the state's selected feature; returns the chosen (side, feature)."""
    cols = st.columns([1, 2])
    side = cols[0].radio(
        "Side",
        ("a", "b"),
        index=("a", "b").index(state.side),
        horizontal=True,
        key=f"{key}-side",
        format_func=str.upper,
    )
    n = n_features(bundle, side)
    current = state.feature if state.feature is not None and side == state.side else 0
    current = min(max(int(current), 0), n - 1)
    feature = int(
        cols[1].number_input(
            f"Feature (0..{n - 1})", min_value=0, max_value=n - 1, value=current, step=1, key=f"{key}-feature"
        )
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


def render_table_downloads(frame: pl.DataFrame, name: str, key: str) -> None:
    """CSV and Parquet download buttons for a table."""
    c1, c2 = st.columns(2)
    c1.download_button(
        f"{name}.csv", frame.write_csv().encode(), file_name=f"{name}.csv", mime="text/csv", key=f"{key}-csv"
    )
    buf = io.BytesIO()
    frame.write_parquet(buf)
    c2.download_button(
        f"{name}.parquet",
        buf.getvalue(),
        file_name=f"{name}.parquet",
        mime="application/octet-stream",
        key=f"{key}-parquet",
    )


def render_figure_export(fig: go.Figure, name: str, key: str) -> None:
    """PNG / SVG / PDF export of a figure at a paper column size, plus always-working HTML."""
    c1, c2, c3 = st.columns([1, 1, 2])
    fmt = c1.selectbox("Format", figures.EXPORT_FORMATS, key=f"{key}-fmt")
    size = c2.selectbox("Size", tuple(figures.PAPER_SIZES), key=f"{key}-size", format_func=lambda s: f"{s} column")
    if c3.button("Prepare file", key=f"{key}-prepare"):
        try:
            with st.spinner("Rendering with kaleido (first figure takes a few seconds)"):
                payload = figures.export_figure(fig, fmt, size)
        except RuntimeError as exc:
            st.error(str(exc))
        else:
            mime = {"png": "image/png", "svg": "image/svg+xml", "pdf": "application/pdf"}[fmt]
            st.download_button(
                f"Download {name}-{size}.{fmt}", payload, file_name=f"{name}-{size}.{fmt}", mime=mime, key=f"{key}-dl"
            )
    # plotly.js inlined (from the installed package), so the file opens offline; built only when downloaded
    st.download_button(
        f"{name}.html (interactive)",
        lambda: fig.to_html(include_plotlyjs=True).encode(),
        file_name=f"{name}.html",
        mime="text/html",
        key=f"{key}-html",
    )


def render_json_download(obj: Any, name: str, key: str) -> None:
    """A JSON download button."""
    st.download_button(
        f"{name}.json",
        json.dumps(obj, indent=2, sort_keys=True, default=str).encode(),
        file_name=f"{name}.json",
        mime="application/json",
        key=key,
    )


BUILD_STAGES = ("matching", "similarity", "dashboards", "umap")


def render_build_form() -> dict[str, Any] | None:
    """The new-comparison form (the same inputs as ``python -m core compare``); returns the raw values on submit."""
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
        c1, c2, c3, c4 = st.columns(4)
        values["corpus"] = c1.text_input("Corpus", value="fortunes", help="fortunes, kjv, file:PATH or hf:NAME")
        values["max_tokens"] = int(c2.number_input("Max tokens", min_value=1, value=250_000, step=10_000))
        values["max_len"] = int(c3.number_input("Tokens per window", min_value=1, value=128, step=8))
        values["device"] = c4.selectbox("Device", ("auto", "cpu", "cuda"))
        values["out"] = st.text_input("Output folder", placeholder="/path/to/new/bundle")
        values["overwrite"] = st.checkbox("Replace what the output folder holds")
        values["stages"] = st.multiselect(
            "Stages after the harvest",
            BUILD_STAGES,
            default=list(BUILD_STAGES),
            help="matching (correlations + assignment), similarity (SVCCA, RSA, ... with nulls), "
            "dashboards (examples, histograms), umap (maps of decoder directions)",
        )
        submitted = st.form_submit_button("Build comparison", type="primary")
    if not submitted:
        return None
    missing = [name for name in ("model_a", "sae_a", "model_b", "sae_b", "out") if not str(values[name]).strip()]
    if missing:
        st.error(
            f"Fill in {', '.join(m.replace('_', ' ').upper() if len(m) == 1 else m.replace('_', ' ') for m in missing)} first."
        )
        return None
    if "similarity" in values["stages"] and "matching" not in values["stages"]:
        st.error("The similarity stage compares matched pairs: add the matching stage, or drop similarity.")
        return None
    return values


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
