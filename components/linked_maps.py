"""The linked pair of UMAPs: a custom Streamlit component that links the two maps in the browser.

Hovering a point of one map rings it and its partners in the other map (and the reverse) with no
Python round trip: the partner table (the assignment's pairs, kept or dropped, with their
correlation) travels with the points, and ``linked_maps.js`` draws the rings in an SVG layer over
each plotly map. Click, box and lasso still come back to Python, as a trigger value that
:func:`selection_from_event` reads. The same script, inlined after plotly.js, makes the interactive
HTML export (:func:`build_linked_maps_html`), so a shared figure keeps the hover.

What is sent splits in two: the maps (points, hover labels, partner table, the paper style's
trace and layout specs), built once per bundle by :func:`compute_maps_payload`, written once to
a JSON file named by its content key (:func:`publish_maps_payload`) and fetched by the browser
from Streamlit's component file route; and the view (selection, search hits, whether dropped
pairs link), a few ids in the component's data that change on every run (:func:`compute_view`).
So a rerun after a click or a search carries a few hundred bytes, not the maps (11 MB for two
65K maps), and the browser redraws rings, not 2 x 16K WebGL points; it fetches the maps again
only when their key changes.

plotly.js is the app's own build of the installed plotly package's version, or that package's full
bundle (``components.plotly_assets``), served by the same file route, so the maps work offline.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from components import figures, plotly_assets
from components.data import MAP_CATEGORIES
from core.sides import SIDES

COMPONENT_NAME = "featurebridge.linked_maps"
MAPS_KIND = "app-maps"
JS_PATH = Path(__file__).with_name("linked_maps.js")
MAP_HEIGHT = 520
# hover labels are cut here: 16K of them travel with every map
LABEL_CHARS = 60
CSS = """
.fb-maps-row { display: flex; gap: 12px; width: 100%; }
.fb-map-cell { flex: 1 1 0; min-width: 0; }
.fb-maps-status { font-size: 0.85rem; color: #555; min-height: 1.4em; margin-top: 4px; }
"""
# the Streamlit host: an ES module whose default export Streamlit calls on every script run
_ST_WRAPPER = """
export default function (component) {
  const { data, parentElement, setTriggerValue } = component;
  let root = parentElement.__fbRoot;
  if (!root || !root.isConnected) {
    root = document.createElement("div");
    root.className = "fb-linked-maps";
    parentElement.appendChild(root);
    parentElement.__fbRoot = root;
  }
  const onSelect = (sel) => setTriggerValue("selection", { ...sel, at: Date.now() });
  const existing = root.__fbLinkedMaps;
  if (existing && existing.key === data.key && existing.root.isConnected) {
    // only the view changed: move the rings, nothing is fetched or redrawn
    mountLinkedMaps(root, { key: data.key }, data.view, window.Plotly, onSelect);
    return;
  }
  // the maps and plotly.js load side by side; both are files the browser caches
  const plotlyJs = loadPlotly(plotlyUrl(data.plotly, ["scatter", "scattergl"]));
  Promise.all([plotlyJs, fetchJson(data.maps_url)]).then(([Plotly, payload]) => {
    mountLinkedMaps(root, payload, data.view, Plotly, onSelect);
  }).catch((err) => {
    root.textContent = String(err);
  });
}
"""


@dataclass(frozen=True)
class MapSelection:
    """A selection made in one map (a click, a box, a lasso, or clearing it).

    Attributes:
        side: the map it was made in (``"a"`` or ``"b"``).
        features: the selected feature ids, sorted (empty when cleared).
        mode: ``"click"``, ``"box"``, ``"lasso"`` or ``"clear"``.
        at: the gesture's time stamp in the browser (ms), None if it carried none. Not part of equality:
            it only tells two gestures with the same features apart (a second click on the same point).
    """

    side: str
    features: tuple[int, ...]
    mode: str
    at: float | None = field(default=None, compare=False)


def _b64(values: np.ndarray, dtype: str) -> str:
    return base64.b64encode(np.ascontiguousarray(values, dtype=np.dtype(dtype).newbyteorder("<")).tobytes()).decode()


def _side_spec(points: pl.DataFrame, side: str, title: str) -> dict[str, Any]:
    """One map: its points (base64 typed arrays), hover labels and the paper style's trace/layout specs."""
    if "label" not in points.columns:
        points = points.with_columns(pl.lit("").alias("label"))
    if "category" not in points.columns:
        # a frame with only is_orphan (older callers): orphans, the rest paired, as the static figure reads it
        points = points.with_columns(
            pl.when(pl.col("is_orphan").fill_null(True))
            .then(pl.lit("orphan"))
            .otherwise(pl.lit("paired"))
            .alias("category")
        )
    points = points.sort("feature")
    unknown = set(points["category"].unique().to_list()) - set(MAP_CATEGORIES)
    if unknown:
        raise ValueError(f"unknown map categories {sorted(unknown)}; expected {MAP_CATEGORIES}")
    # the look (traces, colour scale, axes, fonts) comes from the same builder the static export uses
    empty = points.clear()
    fig = figures.build_umap_figure(empty, side, title=title, webgl=points.height > figures.WEBGL_THRESHOLD)
    spec = fig.to_plotly_json()
    trace_specs = []
    for trace in spec["data"]:
        if trace.get("name") not in figures.MAP_TRACE_CATEGORIES:
            continue
        trace = {k: v for k, v in trace.items() if k not in ("x", "y", "text", "customdata")}
        if trace["name"] == "matched":
            # the browser fills in each point's colour (its pair's r)
            trace["marker"] = {k: v for k, v in trace.get("marker", {}).items() if k != "color"}
        trace_specs.append(trace)
    codes = points["category"].replace_strict({c: i for i, c in enumerate(MAP_CATEGORIES)}, return_dtype=pl.UInt8)
    layout = spec["layout"]
    layout.pop("height", None)
    labels = [str(t or "")[:LABEL_CHARS].replace("\n", " ") for t in points["label"].to_list()]
    return {
        "x": _b64(points["x"].cast(pl.Float32).to_numpy(), "float32"),
        "y": _b64(points["y"].cast(pl.Float32).to_numpy(), "float32"),
        "feature": _b64(points["feature"].cast(pl.Int32).to_numpy(), "int32"),
        "corr": _b64(points["corr"].cast(pl.Float32).fill_null(float("nan")).to_numpy(), "float32"),
        "orphan": _b64((points["category"] == "orphan").cast(pl.UInt8).to_numpy(), "uint8"),
        "category": _b64(codes.to_numpy(), "uint8"),
        "labels": "\n".join(labels),
        "traces": trace_specs,
        "layout": layout,
        "n": points.height,
    }


def compute_maps_payload(
    points: Mapping[str, pl.DataFrame], pairs: pl.DataFrame, titles: Mapping[str, str], height: int = MAP_HEIGHT
) -> dict[str, Any]:
    """What the browser needs to draw and link both maps (built once per bundle, then cached).

    Args:
        points: side -> ``feature``, ``x``, ``y``, ``corr`` (the r of the feature's pair on the map, null if
            unpaired), ``category`` (one of ``components.data.MAP_CATEGORIES``; without it, ``is_orphan``
            alone marks orphans and the rest count as paired) and optionally ``label`` (hover text), as
            ``components.data.umap_points`` returns (pairs filtered there when the All pairs filter applies
            to the maps, so the payload carries what the maps show).
        pairs: the assignment: ``feature_a``, ``feature_b``, ``corr``, ``kept`` (every pair, dropped ones too,
            so "link dropped pairs too" works in the browser).
        titles: side -> map title.
        height: each map's height in pixels.

    Returns:
        A JSON-able dict: ``key`` (a content hash), ``height``, ``sides`` (per side: base64 little-endian
        ``x``, ``y``, ``corr`` float32, ``feature`` int32, ``orphan`` uint8, ``category`` uint8 (an index into
        ``categories``); ``labels`` joined by newlines; the ``traces`` (``orphans``, ``unpaired``, ``matched``)
        and ``layout`` specs; ``n``), ``pairs`` (base64 ``a``, ``b`` int32, ``kept`` uint8, ``corr`` float32,
        ``n``), ``categories`` (:data:`components.data.MAP_CATEGORIES`) and ``trace_categories`` (trace name
        -> the categories it draws).
    """
    sides = {side: _side_spec(points[side], side, titles.get(side, side.upper())) for side in SIDES}
    pairs = pairs.filter(pl.col("feature_a").is_not_null() & pl.col("feature_b").is_not_null())
    pair_spec = {
        "a": _b64(pairs["feature_a"].cast(pl.Int32).to_numpy(), "int32"),
        "b": _b64(pairs["feature_b"].cast(pl.Int32).to_numpy(), "int32"),
        "kept": _b64(pairs["kept"].fill_null(False).cast(pl.UInt8).to_numpy(), "uint8"),
        "corr": _b64(pairs["corr"].cast(pl.Float32).fill_null(float("nan")).to_numpy(), "float32"),
        "n": pairs.height,
    }
    body = {
        "height": height,
        "sides": sides,
        "pairs": pair_spec,
        "categories": list(MAP_CATEGORIES),
        # trace name -> the categories it draws: the browser groups the points by this, as the static figure does
        "trace_categories": {name: list(cats) for name, cats in figures.MAP_TRACE_CATEGORIES.items()},
    }
    key = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:16]
    return {"key": key, **body}


def encode_maps_payload(payload: Mapping[str, Any]) -> str:
    """The payload as the JSON string the component carries (what the cache keeps)."""
    return json.dumps(payload, separators=(",", ":"))


def decode_side(payload: Mapping[str, Any], side: str) -> dict[str, np.ndarray | list[str]]:
    """One side's arrays back out of a payload (what the browser decodes; for tests and checks).

    Args:
        payload: a :func:`compute_maps_payload` result (or its JSON decoded).
        side: ``"a"`` or ``"b"``.

    Returns:
        ``x``, ``y``, ``corr`` (float32), ``feature`` (int32), ``orphan`` (bool), ``category`` (list of
        category names), ``labels`` (list of str).
    """
    spec = payload["sides"][side]

    def arr(name: str, dtype: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(spec[name]), dtype=np.dtype(dtype).newbyteorder("<"))

    labels = spec["labels"].split("\n") if spec["n"] else []
    return {
        "x": arr("x", "float32"),
        "y": arr("y", "float32"),
        "corr": arr("corr", "float32"),
        "feature": arr("feature", "int32"),
        "orphan": arr("orphan", "uint8").astype(bool),
        "category": [payload["categories"][int(c)] for c in arr("category", "uint8")],
        "labels": labels,
    }


def decode_pairs(payload: Mapping[str, Any]) -> pl.DataFrame:
    """The partner table back out of a payload: ``feature_a``, ``feature_b``, ``kept``, ``corr``."""
    spec = payload["pairs"]

    def arr(name: str, dtype: str) -> np.ndarray:
        return np.frombuffer(base64.b64decode(spec[name]), dtype=np.dtype(dtype).newbyteorder("<"))

    return pl.DataFrame(
        {
            "feature_a": arr("a", "int32"),
            "feature_b": arr("b", "int32"),
            "kept": arr("kept", "uint8").astype(bool),
            "corr": arr("corr", "float32"),
        }
    )


def compute_view(
    selection: Mapping[str, Sequence[int]], hits: pl.DataFrame | None = None, include_dropped: bool = False
) -> dict[str, Any]:
    """The view part of the component's data: what is selected and searched, and how pairs link.

    Args:
        selection: side -> selected feature ids of that map.
        hits: search hits (``side``, ``feature``), or None.
        include_dropped: whether pairs the filters dropped link the maps too.

    Returns:
        ``{"selection": {"a": [...], "b": [...]}, "search": {"a": [...], "b": [...]}, "include_dropped": bool}``,
        ids sorted and unique.
    """
    search: dict[str, list[int]] = {side: [] for side in SIDES}
    if hits is not None and hits.height:
        for side in SIDES:
            search[side] = sorted({int(f) for f in hits.filter(pl.col("side") == side)["feature"].to_list()})
    return {
        "selection": {side: sorted({int(f) for f in selection.get(side, ())}) for side in SIDES},
        "search": search,
        "include_dropped": bool(include_dropped),
    }


def ringed_hits(hits: pl.DataFrame, page: int, per_page: int, max_ringed: int) -> pl.DataFrame:
    """The search hits the maps ring: all of them, or only the listed page when there are more than ``max_ringed``
    (thousands of rings hide the map and draw slowly).

    Args:
        hits: every search hit (``side``, ``feature``, ...), in the order the hit list pages through them.
        page: the hit list's page (0 = first).
        per_page: hits per page of the list.
        max_ringed: the most hits ringed at once.

    Returns:
        The rows of ``hits`` to ring.
    """
    if hits.height <= max_ringed:
        return hits
    return hits.slice(max(page, 0) * per_page, per_page)


def selection_from_event(value: Any) -> MapSelection | None:
    """The selection a map reported (the component's ``selection`` trigger value), or None.

    Args:
        value: the trigger value: ``{"side": "a", "features": [3, 5], "mode": "box", ...}``; None when
            this run was not started by a selection (a re-mount reports none, so it cannot clear one).

    Returns:
        The selection, or None for no event or a malformed one.
    """
    if not isinstance(value, Mapping):
        return None
    side, features, mode = value.get("side"), value.get("features"), value.get("mode", "click")
    if side not in SIDES or not isinstance(features, list | tuple):
        return None
    try:
        ids = tuple(sorted({int(f) for f in features}))
    except (TypeError, ValueError):
        return None
    if mode not in ("click", "box", "lasso", "clear"):
        mode = "click"
    at = value.get("at")
    stamp = float(at) if isinstance(at, int | float) and not isinstance(at, bool) else None
    return MapSelection(side=str(side), features=ids, mode=str(mode), at=stamp)


def apply_selection(state: Any, selection: MapSelection, source: str = "linked-maps") -> bool:
    """Move the typed app state to a map's selection, by the state's own rule (``components.state``).

    Only a new, non-empty selection changes the state (:func:`components.state.apply_map_selection`): it
    replaces the whole selection, ends the open named list, and a single feature becomes the selected
    feature. A ``clear`` (or any empty report) changes nothing, as an empty report of the plotly maps
    never did; the page's "Clear selection" button is the one way to empty it. Each gesture counts once
    (its time stamp names it), so clicking the same point again after clearing selects it again.

    Args:
        state: the ``components.state.AppState``.
        selection: what the map reported.
        source: the reporting widget's key (the state remembers the last gesture per source).

    Returns:
        Whether the state changed.
    """
    from components.state import apply_map_selection

    return apply_map_selection(state, source, selection.side, selection.features, event_id=selection.at)


@cache
def _js() -> str:
    return JS_PATH.read_text()


def payload_dir() -> Path:
    """The folder of published map payloads (under the Feature Bridge cache)."""
    return plotly_assets.published_dir(MAPS_KIND)


def publish_maps_payload(maps_json: str, maps_key: str) -> str:
    """Publish a payload once as ``<key>.json`` (the newest few are kept); returns the URL the browser fetches."""
    return plotly_assets.publish(MAPS_KIND, maps_json, maps_key)


@cache
def _component() -> Callable[..., Any]:
    import streamlit as st

    return st.components.v2.component(COMPONENT_NAME, css=CSS, js=component_js(), isolate_styles=False)


def component_js() -> str:
    """The component's ES module: the shared plotly loader, the linking script, the Streamlit host."""
    return plotly_assets.LOAD_PLOTLY_JS + _js() + "\n" + _ST_WRAPPER


def render_linked_maps(
    maps_json: str, maps_key: str, view: Mapping[str, Any], key: str, on_select: Callable[[], None] | None = None
) -> MapSelection | None:
    """Draw the linked maps; returns the selection this run was started by, if any.

    Args:
        maps_json: :func:`encode_maps_payload` of the bundle's payload (cached by the caller); published
            as a file when it is not one yet (a stat per run otherwise), which the browser fetches.
        maps_key: the payload's ``key`` (the browser fetches and redraws the points only when it changes).
        view: :func:`compute_view`'s result.
        key: the widget key.
        on_select: called before the script reruns after a selection (read it with :func:`selection_from_event`
            of the widget's ``selection`` value), so the page can move the state before it draws.

    Returns:
        The selection trigger of this run, or None.
    """
    url = publish_maps_payload(maps_json, maps_key)
    result = _component()(
        key=key,
        data={"maps_url": url, "key": maps_key, "view": dict(view), "plotly": plotly_assets.plotly_source()},
        on_selection_change=on_select or (lambda: None),
        height="content",
    )
    return selection_from_event(getattr(result, "selection", None))


def build_linked_maps_html(maps_json: str, view: Mapping[str, Any], title: str) -> str:
    """A standalone HTML page with the same linked pair of maps (plotly.js embedded: works offline).

    Args:
        maps_json: :func:`encode_maps_payload` of the payload.
        view: :func:`compute_view`'s result (what is ringed when the file opens).
        title: the page title.

    Returns:
        The HTML text.
    """
    import html

    plotly_js = (plotly_assets.PLOTLY_DIR / "plotly.min.js").read_text()
    # "</" inside a script element would end it early
    data = json.dumps({"maps": json.loads(maps_json), "view": dict(view)}).replace("</", "<\\/")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:Arial,Helvetica,sans-serif;margin:16px}}"
        f"{CSS}</style></head><body><h3>{html.escape(title)}</h3><div id='fb-maps' class='fb-linked-maps'></div>\n"
        f"<script>{plotly_js}</script>\n<script>{_js()}\n"
        f"const FB_DATA = {data};\n"
        "mountLinkedMaps(document.getElementById('fb-maps'), FB_DATA.maps, FB_DATA.view, window.Plotly, null);\n"
        "</script></body></html>\n"
    )
