"""What the app's own plotly components share: plotly.js from the installed package, and published JSON files.

Streamlit serves a declared (v1) component's folder at ``/component/<module>.<name>/...``, with a
content type from the file name and browser caching; the components here declare two folders
only for that route: plotly's ``package_data`` (so plotly.js loads offline) and a cache folder of
published JSON files (large payloads a browser fetches once per content key instead of receiving
them with every script run). That route sends no validator, so the browser would download both
again on every page load; the shared loader keeps them in its Cache Storage instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import plotly

PLOTLY_DIR = Path(plotly.__file__).resolve().parent / "package_data"
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

function loadPlotly(url) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  if (!window.__fbPlotlyPromise) {
    window.__fbPlotlyPromise = cachedFetch(url, "featurebridge-plotly", 1)
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
  return window.__fbPlotlyPromise;
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
    """Where the browser fetches plotly.js: the installed plotly package's copy, its URL naming the version
    (the browser keeps one copy per URL, so a new plotly gets a new URL)."""
    return file_route("plotlyjs", PLOTLY_DIR, "plotly.min.js") + f"?v={plotly.__version__}"


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
