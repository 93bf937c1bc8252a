"""Files of what the user sees: figures (static at paper sizes, or interactive HTML) and tables.

Static export renders through kaleido, which drives a headless Chromium. Starting that browser
is what made every export take seconds to tens of seconds, so one kaleido server (one browser)
is started on the first export and reused by every later one in the process, behind a lock
(kaleido's server answers one call at a time). Its page loads plotly.js from the plotly package
and no MathJax, so nothing is fetched from the network (the default MathJax comes from a CDN,
which offline only times out). A render that fails restarts the server and is tried once more;
the error then says what failed, and a missing browser is reported as exactly that.

Tables keep every column: Parquet keeps list columns as lists, CSV joins a list's items with
``" | "`` (and writes other nested values as JSON), JSON writes one object per row.
"""

from __future__ import annotations

import io
import json
import threading
from typing import Any

import plotly.graph_objects as go
import polars as pl

from components.figures import PAPER_SIZES, PNG_DPI, PX_PER_INCH, apply_paper_style
from core.errors import UserError

EXPORT_FORMATS = ("png", "svg", "pdf")
TABLE_FORMATS = ("csv", "parquet", "json")
LIST_SEPARATOR = " | "
RENDER_TIMEOUT_S = 60.0
MIME = {
    "png": "image/png",
    "svg": "image/svg+xml",
    "pdf": "application/pdf",
    "html": "text/html",
    "csv": "text/csv",
    "parquet": "application/octet-stream",
    "json": "application/json",
}

_LOCK = threading.Lock()


class ExportError(UserError):
    """A figure or table could not be written (no browser for kaleido, a failed render)."""


def _server_running() -> bool:
    import kaleido

    return bool(kaleido._global_server.is_running())  # noqa: SLF001  (kaleido exposes no public check)


def _start_server() -> None:
    import kaleido

    if not _server_running():
        kaleido.start_sync_server(mathjax=False, timeout=RENDER_TIMEOUT_S, silence_warnings=True)


def _stop_server() -> None:
    import kaleido

    if _server_running():
        kaleido.stop_sync_server(silence_warnings=True)


def paper_figure(fig: go.Figure, size: str) -> go.Figure:
    """A copy of ``fig`` at a paper size: its own layout when it set one for print, else the paper style's."""
    if size not in PAPER_SIZES:
        raise ValueError(f"size must be one of {sorted(PAPER_SIZES)}, got {size!r}")
    styled = go.Figure(fig)
    if styled.layout.width is None or styled.layout.height is None:
        styled = apply_paper_style(styled, size=size, font_size=8)
    return styled


def export_static(fig: go.Figure, fmt: str, size: str = "single") -> bytes:
    """A figure as PNG (300 dpi), SVG or PDF at a paper column size.

    Args:
        fig: the figure (not modified). A figure built for a paper size (with its width and
            height set) keeps its layout; any other gets the paper style at ``size``.
        fmt: ``"png"``, ``"svg"`` or ``"pdf"``.
        size: ``"single"`` (3.5 in) or ``"double"`` (7.2 in) column.

    Returns:
        The file's bytes.
    """
    if fmt not in EXPORT_FORMATS:
        raise ValueError(f"fmt must be one of {EXPORT_FORMATS}, got {fmt!r}")
    styled = paper_figure(fig, size)
    width, height = int(styled.layout.width), int(styled.layout.height)
    opts = {"format": fmt, "width": width, "height": height, "scale": PNG_DPI / PX_PER_INCH if fmt == "png" else 1.0}
    spec = styled.to_dict()
    # hover text and ids are for the screen: a static image does not need them shipped to the browser
    for trace in spec.get("data", []):
        for key in ("text", "customdata", "hovertemplate"):
            if trace.get("mode") == "markers" or trace.get("type") in ("scatter", "scattergl"):
                trace.pop(key, None)
    try:
        import kaleido
        from kaleido.errors import ChromeNotFoundError
    except ImportError as exc:
        raise ExportError(
            "Static export needs the kaleido package (pip install kaleido); the HTML export works without it."
        ) from exc
    last: Exception | None = None
    with _LOCK:
        for attempt in range(2):
            try:
                _start_server()
                return bytes(kaleido.calc_fig_sync(spec, opts=opts))
            except ChromeNotFoundError as exc:
                _stop_server()
                raise ExportError(
                    "Static export found no Chromium for kaleido (on Debian: apt-get install chromium); "
                    "the HTML export works without it."
                ) from exc
            except Exception as exc:  # noqa: BLE001  (kaleido raises many types; the browser may have died)
                last = exc
                _stop_server()
                if attempt == 0:
                    continue
    raise ExportError(
        f"Static export failed while rendering the figure ({type(last).__name__}: {str(last)[:200]}); "
        "try again, or use the HTML export."
    ) from last


def export_html(fig: go.Figure) -> bytes:
    """A self-contained interactive HTML file: plotly.js is embedded, so it opens offline."""
    return fig.to_html(include_plotlyjs=True, full_html=True).encode()


def _csv_ready(frame: pl.DataFrame) -> pl.DataFrame:
    """Lists of plain values joined with ``LIST_SEPARATOR``; any other nested value as JSON text."""
    out = []
    for name, dtype in frame.schema.items():
        col = pl.col(name)
        if isinstance(dtype, pl.List | pl.Array) and not dtype.inner.is_nested():
            inner = col.cast(pl.List(dtype.inner)) if isinstance(dtype, pl.Array) else col
            out.append(
                inner.list.eval(pl.element().cast(pl.String).fill_null("")).list.join(LIST_SEPARATOR).alias(name)
            )
        elif dtype.is_nested():
            values = [None if v is None else json.dumps(v, default=str) for v in frame[name].to_list()]
            out.append(pl.Series(name, values, dtype=pl.String))
        else:
            out.append(col)
    return frame.select(out)


def table_bytes(frame: pl.DataFrame, fmt: str) -> bytes:
    """A table as CSV, Parquet or JSON, every column kept.

    Args:
        frame: the table.
        fmt: ``"csv"`` (lists joined with ``" | "``), ``"parquet"`` (lists stay lists) or
            ``"json"`` (an array of row objects).

    Returns:
        The file's bytes.
    """
    if fmt == "csv":
        return _csv_ready(frame).write_csv().encode()
    if fmt == "parquet":
        buf = io.BytesIO()
        frame.write_parquet(buf)
        return buf.getvalue()
    if fmt == "json":
        return json.dumps(frame.to_dicts(), indent=1, default=_json_default).encode()
    raise ValueError(f"fmt must be one of {TABLE_FORMATS}, got {fmt!r}")


def _json_default(value: Any) -> Any:
    if isinstance(value, float | int | str | bool) or value is None:
        return value
    return str(value)


def named_list_frame(pairs: Any, table: pl.DataFrame | None = None) -> pl.DataFrame:
    """A named list's pairs as a table, with what the pairs table knows about each pair when given.

    Args:
        pairs: ``(feature_a, feature_b)`` pairs (a side may be None).
        table: the bundle's pairs table (``components.data.pairs_table``), to add every column of each pair.

    Returns:
        ``feature_a``, ``feature_b`` in list order, then the table's other columns (null where the
        bundle knows nothing about a pair).
    """
    base = pl.DataFrame(
        {"feature_a": [p[0] for p in pairs], "feature_b": [p[1] for p in pairs]},
        schema={"feature_a": pl.Int32, "feature_b": pl.Int32},
    ).with_row_index("_order")
    if table is not None and table.height:
        base = base.join(table, on=["feature_a", "feature_b"], how="left")
    return base.sort("_order").drop("_order")
