"""Pure plotly builders of the Model diffing figures (no Streamlit, no torch), in the app's one paper style.

Every axis that shows a Delta-norm names its orientation (B-only -> 1, Minder et al. 2025).
Points that stand for a latent carry its index in ``customdata``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl

from components.figures import COLOR_A, COLOR_B, COLOR_BOTH, COLOR_MUTED, WEBGL_THRESHOLD, apply_paper_style

TAG_COLORS = {
    "shared": COLOR_BOTH,
    "a_only": COLOR_A,
    "b_only": COLOR_B,
    "unclassified": "#8d99ae",
    "dead": COLOR_MUTED,
}
TAG_LABELS = {
    "shared": "shared",
    "a_only": "A-only",
    "b_only": "B-only",
    "unclassified": "unclassified",
    "dead": "dead",
}
DELTA_AXIS = "Δ-norm (B-only → 1; Minder et al. 2025)"


def _scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > WEBGL_THRESHOLD else go.Scatter


def build_delta_norm_histogram_figure(
    frame: pl.DataFrame, a_only_below: float = 0.1, b_only_above: float = 0.9, shared_band: float = 0.1, bins: int = 200
) -> go.Figure:
    """Histogram of live latents' Delta-norm on [0, 1], the A-only, shared and B-only bands shaded.

    Args:
        frame: ``delta_norm_b_only_1`` and ``is_dead`` per latent.
        a_only_below: the A-only cut.
        b_only_above: the B-only cut.
        shared_band: half-width of the shared band around 0.5.
        bins: number of bins (200, as the papers draw it).

    Returns:
        The figure.
    """
    live = frame.filter(~pl.col("is_dead"))["delta_norm_b_only_1"].fill_null(float("nan")).to_numpy()
    live = live[np.isfinite(live)]
    counts, edges = np.histogram(live, bins=bins, range=(0.0, 1.0))
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=counts,
            width=np.diff(edges),
            marker={"color": "#444444", "line": {"width": 0}},
            name="latents",
            hovertemplate="Δ-norm %{x:.3f}<br>%{y} latents<extra></extra>",
        )
    )
    bands = (
        (0.0, a_only_below, COLOR_A, "A-only"),
        (0.5 - shared_band, 0.5 + shared_band, COLOR_BOTH, "shared"),
        (b_only_above, 1.0, COLOR_B, "B-only"),
    )
    for lo, hi, color, label in bands:
        fig.add_vrect(x0=lo, x1=hi, fillcolor=color, opacity=0.15, line_width=0, annotation_text=label)
    fig.update_layout(title=f"Δ-norm of {live.size:,} live latents", bargap=0, showlegend=False)
    fig.update_xaxes(title=DELTA_AXIS, range=[0, 1])
    fig.update_yaxes(title="latents")
    return apply_paper_style(fig)


def build_shared_cosine_histogram_figure(cosines: Sequence[float] | np.ndarray, bins: int = 100) -> go.Figure:
    """Histogram of the shared latents' decoder cosine on [-1, 1], log y.

    Args:
        cosines: the shared latents' finite decoder cosines.
        bins: number of bins.

    Returns:
        The figure.
    """
    values = np.asarray(cosines, dtype=np.float64)
    counts, edges = np.histogram(values, bins=bins, range=(-1.0, 1.0))
    fig = go.Figure(
        go.Bar(
            x=(edges[:-1] + edges[1:]) / 2,
            y=np.where(counts > 0, counts, np.nan),
            width=np.diff(edges),
            marker={"color": COLOR_BOTH, "line": {"width": 0}},
            hovertemplate="cos %{x:.2f}<br>%{y} latents<extra></extra>",
        )
    )
    median = float(np.median(values)) if values.size else float("nan")
    title = f"Decoder cosine of {values.size:,} shared latents" + (f" (median {median:.3f})" if values.size else "")
    fig.update_layout(title=title, bargap=0, showlegend=False)
    fig.update_xaxes(title="cos(d_A, d_B)", range=[-1, 1])
    fig.update_yaxes(title="latents (log)", type="log")
    return apply_paper_style(fig)


def _by_tag(fig: go.Figure, frame: pl.DataFrame, x: str, y: str, hover: str) -> None:
    for tag, color in TAG_COLORS.items():
        part = frame.filter(pl.col("tag") == tag)
        if part.height == 0:
            continue
        fig.add_trace(
            _scatter(part.height)(
                x=part[x].to_numpy(),
                y=part[y].to_numpy(),
                mode="markers",
                name=f"{TAG_LABELS[tag]} ({part.height:,})",
                marker={"color": color, "size": 5, "opacity": 0.7},
                customdata=part["latent"].to_numpy()[:, None],
                hovertemplate=hover,
            )
        )


def build_cosine_vs_delta_figure(frame: pl.DataFrame) -> go.Figure:
    """Decoder cosine against Delta-norm, one point per live latent with both norms, coloured by tag.

    Args:
        frame: ``latent``, ``delta_norm_b_only_1``, ``dec_cos``, ``tag``.

    Returns:
        The figure.
    """
    rows = frame.filter(pl.col("dec_cos").is_not_null() & pl.col("dec_cos").is_not_nan() & (pl.col("tag") != "dead"))
    fig = go.Figure()
    _by_tag(
        fig,
        rows,
        "delta_norm_b_only_1",
        "dec_cos",
        "latent %{customdata[0]}<br>Δ %{x:.3f}<br>cos %{y:.3f}<extra></extra>",
    )
    fig.update_layout(title="Decoder cosine vs Δ-norm")
    fig.update_xaxes(title=DELTA_AXIS, range=[0, 1])
    fig.update_yaxes(title="cos(d_A, d_B)", range=[-1, 1])
    return apply_paper_style(fig)


def build_latent_scaling_figure(frame: pl.DataFrame, near_one: float = 0.7, near_zero: float = 0.3) -> go.Figure:
    """nu^epsilon against nu^r (Minder et al. 2025), one point per latent with both ratios, coloured by tag.

    Args:
        frame: ``latent``, ``nu_recon``, ``nu_error``, ``tag``.
        near_one: the "near 1" cut drawn as dashed lines.
        near_zero: the "near 0" cut drawn as dotted lines.

    Returns:
        The figure (axes on [-0.1, 1.1], as the paper draws them; points outside are clipped from view).
    """
    rows = frame.filter(
        pl.col("nu_recon").is_not_null()
        & pl.col("nu_error").is_not_null()
        & pl.col("nu_recon").is_not_nan()
        & pl.col("nu_error").is_not_nan()
    )
    fig = go.Figure()
    _by_tag(fig, rows, "nu_recon", "nu_error", "latent %{customdata[0]}<br>ν^r %{x:.3f}<br>ν^ε %{y:.3f}<extra></extra>")
    for value, dash in ((near_one, "dash"), (near_zero, "dot")):
        fig.add_hline(y=value, line_dash=dash, line_width=0.8, line_color="#777777")
        fig.add_vline(x=value, line_dash=dash, line_width=0.8, line_color="#777777")
    fig.update_layout(title=f"Latent Scaling: ν^ε vs ν^r ({rows.height:,} latents)")
    fig.update_xaxes(title="ν^r = β^r_A / β^r_B (near 1: Latent Decoupling)", range=[-0.1, 1.1])
    fig.update_yaxes(title="ν^ε = β^ε_A / β^ε_B (near 1: Complete Shrinkage)", range=[-0.1, 1.1])
    return apply_paper_style(fig)


def build_causal_vs_cosine_figure(frame: pl.DataFrame, x: str = "cos", x_title: str = "decoder cosine") -> go.Figure:
    """Causal equivalence against decoder cosine (the model card's cosine_vs_causal), one point per checked latent or pair.

    Args:
        frame: ``feature_a``, ``feature_b``, ``equivalence``, ``status`` and the ``x`` column
            (``tag`` colours crosscoder latents).
        x: the x column (``cos``; ``corr`` for SAE pairs of different widths).
        x_title: its axis title.

    Returns:
        The figure (pairs without an equivalence are left out; the title counts them).
    """
    ok = frame.filter(pl.col("equivalence").is_not_null() & pl.col(x).is_not_null() & pl.col(x).is_not_nan())
    fig = go.Figure()
    hover = "A%{customdata[0]} · B%{customdata[1]}<br>" + x_title + " %{x:.3f}<br>equivalence %{y:.3f}<extra></extra>"
    groups = (
        [(t, ok.filter(pl.col("tag") == t)) for t in TAG_COLORS]
        if "tag" in ok.columns and ok["tag"].null_count() < ok.height
        else [(None, ok)]
    )
    for tag, part in groups:
        if part.height == 0:
            continue
        fig.add_trace(
            _scatter(part.height)(
                x=part[x].to_numpy(),
                y=part["equivalence"].to_numpy(),
                mode="markers",
                name=f"{TAG_LABELS[tag]} ({part.height})" if tag else f"pairs ({part.height})",
                marker={"color": TAG_COLORS[tag] if tag else COLOR_BOTH, "size": 6, "opacity": 0.8},
                customdata=np.stack([part["feature_a"].to_numpy(), part["feature_b"].to_numpy()], axis=1),
                hovertemplate=hover,
            )
        )
    median = float(ok["equivalence"].median()) if ok.height else float("nan")
    left_out = frame.height - ok.height
    title = f"Causal equivalence vs {x_title} (median {median:.3f}, {ok.height} pairs"
    fig.update_layout(title=title + (f"; {left_out} without an equivalence)" if left_out else ")"))
    fig.update_xaxes(title=x_title, range=[-1.05, 1.05] if x == "cos" else None)
    fig.update_yaxes(title="causal equivalence (Pearson of the two shifts)", range=[-1.05, 1.05])
    return apply_paper_style(fig)


def build_shift_scatter_figure(
    shift_a: Sequence[float], shift_b: Sequence[float], active: Sequence[bool], measure_a: str, measure_b: str
) -> go.Figure:
    """One checked pair: each probe's output shift in model A against model B's (active probes coloured).

    Args:
        shift_a: per probe, model A's shift.
        shift_b: per probe, model B's shift.
        active: per probe, whether either side's latent fires there.
        measure_a: ``kl`` or ``hidden_shift``.
        measure_b: the same for B.

    Returns:
        The figure.
    """
    a, b, on = np.asarray(shift_a), np.asarray(shift_b), np.asarray(active, bool)
    names = {"kl": "KL of next-token distributions", "hidden_shift": "relative shift of the last hidden state"}
    fig = go.Figure()
    for mask, color, label in ((on, COLOR_BOTH, "latent fires"), (~on, COLOR_MUTED, "does not fire")):
        if mask.any():
            fig.add_trace(
                go.Scatter(
                    x=a[mask],
                    y=b[mask],
                    mode="markers",
                    name=f"{label} ({int(mask.sum())})",
                    marker={"color": color, "size": 6},
                    customdata=np.flatnonzero(mask)[:, None],
                    hovertemplate="probe %{customdata[0]}<br>A %{x:.4g}<br>B %{y:.4g}<extra></extra>",
                )
            )
    fig.update_layout(title="Output shift per probe")
    fig.update_xaxes(title=f"A: {names.get(measure_a, measure_a)}")
    fig.update_yaxes(title=f"B: {names.get(measure_b, measure_b)}")
    return apply_paper_style(fig)
