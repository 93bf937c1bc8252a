"""A plotly chart drawn by the app's own component: one plot per figure, clicks come back to Python.

``st.plotly_chart`` re-renders a figure through React several times per page load and, with
selections on, builds plotly's selection layers too: on the Correlation page of a 65K x 65K bundle
(a 65K-point WebGL scatter of every pair) that was about 15 s of browser time on 2 busy cores. This
component draws the figure once with the same plotly.js the linked maps use (the app's own build of
the installed plotly.js, or the full bundle for a trace type that build lacks; kept in the browser's
Cache Storage), so a page that draws all its figures here starts
one plotly, not two; a figure in a tab or expander that is not open is drawn when first shown. It keeps it drawn while only the page around it reruns, and reports
a click on a point as a trigger value (:func:`click_from_event`). A large figure's JSON is
published as a file named by its content and fetched once (``plotly_assets.publish``), so a rerun
does not re-send it.

The figures come from ``components.figures`` unchanged, so a page shows what the Export page writes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import plotly.graph_objects as go

from components import plotly_assets

COMPONENT_NAME = "featurebridge.plot"
FIGURES_KIND = "app-figures"
# figure JSON up to this many characters travels inline with the script run; larger goes as a file
INLINE_LIMIT = 200_000
_ST_HOST = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let gd = parentElement.__fbPlot;
  if (!gd || !gd.isConnected) {
    gd = document.createElement("div");
    gd.className = "fb-plot";
    parentElement.appendChild(gd);
    parentElement.__fbPlot = gd;
  }
  gd.__fbData = data;
  gd.__fbSetTrigger = setTriggerValue;
  if (gd.__fbKey === data.key) return;  // the same figure: nothing to redraw
  if (parentElement.offsetWidth === 0 && window.ResizeObserver) {
    // a plot in a tab or expander that is not open: drawn (and plotly.js loaded) when it is first shown, so a
    // page whose first tab has no figure starts no plotly, and the figure gets its real width
    if (!gd.__fbObserver) {
      gd.__fbObserver = new ResizeObserver(() => {
        if (parentElement.offsetWidth === 0) return;
        gd.__fbObserver.disconnect();
        gd.__fbObserver = null;
        drawPlot(gd, gd.__fbData);
      });
      gd.__fbObserver.observe(parentElement);
    }
    return;
  }
  drawPlot(gd, data);
}

function drawPlot(gd, data) {
  if (gd.__fbKey === data.key) return;
  const figure = data.figure ? Promise.resolve(JSON.parse(data.figure)) : fetchJson(data.figure_url);
  const source = data.plotly;
  // the app's plotly.js build starts loading at once (it draws every figure the app makes); a figure with a
  // trace type it lacks waits for the full bundle as well
  Promise.all([loadPlotly(source.app || source.full), figure]).then(([, fig]) => {
    const types = (fig.data || []).map((t) => t.type);
    return Promise.all([loadPlotly(plotlyUrl(source, types)), fig]);
  }).then(([Plotly, fig]) => {
    const layout = { ...(fig.layout || {}), autosize: true };
    if (data.height) layout.height = data.height;
    if (gd.__fbPlotly && gd.__fbPlotly !== Plotly) {
      // drawn before by the other plotly.js build: that one lets go of the div, this one draws it afresh
      gd.__fbPlotly.purge(gd);
      gd.__fbKey = null;
    }
    gd.__fbPlotly = Plotly;
    const first = !gd.__fbKey;
    gd.__fbKey = data.key;
    return Plotly.react(gd, fig.data || [], layout, { responsive: true, displaylogo: false }).then(() => {
      if (!first) return;
      gd.on("plotly_click", (ev) => {
        const p = ev && ev.points && ev.points[0];
        if (!p) return;
        let custom = p.customdata;
        if (custom !== undefined && custom !== null && typeof custom === "object") custom = Array.from(custom);
        gd.__fbSetTrigger("click", {
          trace: p.data && p.data.name !== undefined ? p.data.name : null,
          curve: p.curveNumber,
          point: p.pointNumber,
          customdata: custom === undefined ? null : custom,
          at: Date.now(),
        });
      });
      gd.setAttribute("data-fb-plot-ready", "1");
    });
  }).catch((err) => {
    gd.textContent = String(err);
  });
}
"""


@dataclass(frozen=True)
class PointClick:
    """A click on a point of a plot.

    Attributes:
        trace: the clicked trace's name (None when it has none).
        curve: the trace's index.
        point: the point's index within the trace.
        customdata: the point's customdata row, as a tuple (empty when the trace carries none).
    """

    trace: str | None
    curve: int
    point: int
    customdata: tuple[Any, ...]


def figure_json(fig: go.Figure) -> str:
    """A figure as the JSON the component draws (numpy arrays as plotly's base64 typed arrays)."""
    return fig.to_json()


def figure_key(text: str) -> str:
    """A short content key of a figure's JSON."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def plot_data(text: str, height: int | None = None) -> dict[str, Any]:
    """The component's data for a figure: inline when small, else the URL of its published file.

    Args:
        text: the figure's JSON (:func:`figure_json`).
        height: a fixed height in pixels (None: the figure's own).

    Returns:
        ``key``, ``figure`` (the JSON, or None), ``figure_url`` (or None), ``plotly``
        (:func:`plotly_assets.plotly_source`), ``height``.
    """
    key = figure_key(text)
    inline = len(text) <= INLINE_LIMIT
    return {
        "key": key,
        "figure": text if inline else None,
        "figure_url": None if inline else plotly_assets.publish(FIGURES_KIND, text, key),
        "plotly": plotly_assets.plotly_source(),
        "height": height,
    }


def click_from_event(value: Any) -> PointClick | None:
    """The click a plot reported (its ``click`` trigger value), or None for no click or a malformed one."""
    if not isinstance(value, Mapping):
        return None
    try:
        curve, point = int(value.get("curve")), int(value.get("point"))
    except (TypeError, ValueError):
        return None
    custom = value.get("customdata")
    if custom is None:
        row: tuple[Any, ...] = ()
    elif isinstance(custom, list | tuple):
        row = tuple(custom)
    elif isinstance(custom, Mapping):  # a typed array arrives as {"0": ..., "1": ...}
        row = tuple(custom[k] for k in sorted(custom, key=lambda k: int(k) if str(k).isdigit() else 0))
    else:
        row = (custom,)
    trace = value.get("trace")
    return PointClick(trace=None if trace is None else str(trace), curve=curve, point=point, customdata=row)


@cache
def _component() -> Callable[..., Any]:
    import streamlit as st

    return st.components.v2.component(
        COMPONENT_NAME, js=component_js(), css=".fb-plot { width: 100%; }", isolate_styles=False
    )


def component_js() -> str:
    """The component's ES module: the shared plotly loader and the Streamlit host."""
    return plotly_assets.LOAD_PLOTLY_JS + _ST_HOST


def render_plot(
    text: str, key: str, on_click: Callable[[], None] | None = None, height: int | None = None
) -> PointClick | None:
    """Draw a figure; returns the click this run was started by, if any.

    Args:
        text: the figure's JSON (:func:`figure_json`; cache it for a large figure).
        key: the widget key.
        on_click: called before the script reruns after a click (read it with :func:`click_from_event`
            of the widget's ``click`` value), so the page can move the state before it draws.
        height: a fixed height in pixels.

    Returns:
        The click trigger of this run, or None.
    """
    result = _component()(
        key=key, data=plot_data(text, height), on_click_change=on_click or (lambda: None), height="content"
    )
    return click_from_event(getattr(result, "click", None))


def figure_of(data: Mapping[str, Any]) -> dict[str, Any]:
    """The figure a component's data carries (inline, or from its published file): for tests and checks."""
    if data.get("figure"):
        return json.loads(data["figure"])
    return json.loads((plotly_assets.published_dir(FIGURES_KIND) / f"{data['key']}.json").read_text())
