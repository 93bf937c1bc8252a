"""What the app's own plotly components share: plotly.js, and published JSON files.

plotly.js comes in two builds, both offline: the installed plotly package's full bundle, and the app's
own build of the same plotly.js version with only the trace types the app draws
(``assets/plotly/plotly-app.min.js``, :data:`APP_TRACES`, rebuilt by ``scripts/build_plotly_bundle.sh``).
The full bundle is 4.8 MB of script that the browser parses and runs on every page with a figure (0.55 to
0.65 s on 2 cores, whether downloaded or cached); the app's build is a third of it and starts in about a
fifth of the time (docs/app.md). A page uses the app's build when it was built from the installed
plotly.js version and carries every trace type the figure draws, else the full bundle.

Streamlit serves a declared (v1) component's folder at ``/component/<module>.<name>/...``, with a
content type from the file name and browser caching; the components here declare two folders
only for that route: plotly's ``package_data`` (so plotly.js loads offline) and a cache folder of
published JSON files (large payloads a browser fetches once per content key instead of receiving
them with every script run). That route sends no validator, so the browser would download both
again on every page load; the shared loader keeps them in its Cache Storage instead.
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

import plotly

from core.paths import ASSETS

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
APP_BUNDLE_DIR = ASSETS / "plotly"
APP_BUNDLE = "plotly-app.min.js"
# its manifest: the plotly.js version it was built from, its trace types and its sha256
APP_MANIFEST = "plotly-app.json"
# every trace type a figure of the app draws (components.figures, components.diffing_figures, the linked
# maps); tests/components/test_plotly_assets.py checks the figure code draws no other
APP_TRACES = ("bar", "heatmap", "histogram", "scatter", "scattergl")
# published files kept per folder (the oldest go first)
KEEP_PUBLISHED = 16
# an ES-module snippet both components' hosts start with: plotly.js loaded once per page, and fetches of files
# that never change under their URL (plotly.js of one version, JSON named by its content) answered from the
# browser's Cache Storage. Streamlit serves component files with "Cache-Control: public" and no validator
# (no ETag, no Last-Modified), so without this the browser downloads plotly.js (1.5 MB gzipped, gzipped again
# by the server each time) and every map payload again on every page load. Where Cache Storage is missing
# (a page served over plain http from another host is not a secure context) the files are fetched as before.
LOAD_PLOTLY_JS = """
function cachedFetch(url, cacheName, keep) {
  const direct = () => fetch(url).then((r) => {
    if (!r.ok) throw new Error("could not load " + url);
    return r;
  });
  if (!window.caches) return direct();
  return caches.open(cacheName).then((cache) => cache.match(url).then((hit) => {
    if (hit) return hit;
    return direct().then((r) => {
      const copy = r.clone();
      cache.put(url, copy).then(() => cache.keys()).then((keys) => {
        // the oldest entries go first (keys come back in insertion order)
        keys.slice(0, Math.max(0, keys.length - keep)).forEach((k) => cache.delete(k));
      }).catch(() => {});
      return r;
    });
  })).catch((err) => {
    if (String(err).includes("could not load")) throw err;
    return direct();
  });
}

// one promise per plotly.js URL: a page that needs the full bundle after the app's build gets both, and
// each figure keeps the instance that drew it (each script sets window.Plotly, read as it finishes)
function loadPlotly(url) {
  window.__fbPlotly = window.__fbPlotly || {};
  if (!window.__fbPlotly[url]) {
    window.__fbPlotly[url] = cachedFetch(url, "featurebridge-plotly", 2)
      .then((r) => r.blob())
      .then((blob) => URL.createObjectURL(new Blob([blob], { type: "text/javascript" })))
      .catch(() => url)
      .then((src) => new Promise((resolve, reject) => {
        const script = document.createElement("script");
        script.src = src;
        script.async = true;
        script.onload = () => resolve(window.Plotly);
        script.onerror = () => reject(new Error("could not load plotly.js from " + url));
        document.head.appendChild(script);
      }));
  }
  return window.__fbPlotly[url];
}

// the plotly.js a figure of these trace types needs: the app's build when it carries them all
function plotlyUrl(source, types) {
  const covered = source.app && types.every((t) => source.traces.includes(t || "scatter"));
  return covered ? source.app : source.full;
}

function fetchJson(url) {
  return cachedFetch(url, "featurebridge-published", 16).then((r) => r.json());
}
"""


def file_route(name: str, folder: Path, filename: str) -> str:
    """The URL at which Streamlit serves ``folder/filename`` (``folder`` declared as a component named ``name``).

    Args:
        name: the route's name (one per folder).
        folder: the folder to serve.
        filename: a file in it.

    Returns:
        The URL path, with the server's base URL path in front.
    """
    import streamlit as st
    from streamlit.components.v1 import declare_component

    declare_component(name, path=str(folder))
    base = (st.get_option("server.baseUrlPath") or "").strip("/")
    prefix = f"/{base}" if base else ""
    return f"{prefix}/component/{__name__}.{name}/{filename}"


def plotly_js_url() -> str:
    """Where the browser fetches the full plotly.js: the installed plotly package's copy, its URL naming the
    version (the browser keeps one copy per URL, so a new plotly gets a new URL)."""
    return file_route("plotlyjs", PLOTLY_DIR, "plotly.min.js") + f"?v={plotly.__version__}"


@cache
def app_bundle_manifest() -> dict[str, Any] | None:
    """The app's plotly.js build's manifest when that build can stand in for the installed plotly.js, else None.

    It can when its file is there and whole (its sha256 matches) and it was built from the plotly.js
    version the installed plotly package carries (figures are written by that package's schema).

    Returns:
        ``plotly_js`` (version), ``traces`` and ``sha256``, or None.
    """
    from plotly.offline import get_plotlyjs_version

    try:
        manifest = json.loads((APP_BUNDLE_DIR / APP_MANIFEST).read_text())
        js = (APP_BUNDLE_DIR / APP_BUNDLE).read_bytes()
    except (OSError, ValueError):
        return None
    if manifest.get("plotly_js") != get_plotlyjs_version():
        return None
    if manifest.get("sha256") != hashlib.sha256(js).hexdigest():
        return None
    return manifest


def plotly_source() -> dict[str, Any]:
    """What a component needs to load plotly.js: the full bundle's URL, and the app's build's URL and traces.

    Returns:
        ``full`` (URL), ``app`` (URL, or None when the app's build cannot stand in) and ``traces`` (the trace
        types the app's build carries; empty without it). The browser picks with ``plotlyUrl``.
    """
    manifest = app_bundle_manifest()
    if manifest is None:
        return {"full": plotly_js_url(), "app": None, "traces": []}
    app = file_route("plotlyapp", APP_BUNDLE_DIR, APP_BUNDLE) + f"?v={manifest['sha256'][:12]}"
    return {"full": plotly_js_url(), "app": app, "traces": list(manifest["traces"])}


def published_dir(kind: str) -> Path:
    """The cache folder of one kind of published files (``app-maps``, ``app-figures``)."""
    from core.paths import cache_dir

    return cache_dir(kind)


def publish(kind: str, text: str, key: str) -> str:
    """Write ``text`` once as ``<key>.json`` in the kind's folder (atomically, keeping the newest); returns its URL.

    Args:
        kind: the folder (``app-maps``, ``app-figures``).
        text: the JSON text.
        key: its content key (a file of that name is never rewritten).

    Returns:
        The URL the browser fetches it from.
    """
    folder = published_dir(kind)
    path = folder / f"{key}.json"
    if not path.is_file():
        tmp = folder / f".{key}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, path)
        published = sorted(folder.glob("*.json"), key=lambda p: p.stat().st_mtime, reverse=True)
        for old in published[KEEP_PUBLISHED:]:
            old.unlink(missing_ok=True)
    return file_route(kind, folder, f"{key}.json")
