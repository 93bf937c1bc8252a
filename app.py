"""Feature Bridge: the Streamlit app (router only).

Start it with ``make app`` or ``featurebridge app``, which serve it through
``components/launch.py``; a plain ``streamlit run app.py`` works too. Each page lives in pages/
and is listed explicitly. Streamlit reads a ``pages/`` folder beside the main script as its old
folder navigation for the first session of a server (that session would run the page file by
its file name, without this script: no deep link read, "Page not found" for /pairs); the
launcher sets Streamlit's own switch to the value ``st.navigation`` sets, so every session runs
this router. The URL carries the page (its path) and the view (``bundle``, ``side``,
``feature``, ``partner`` query parameters), so a copied address reopens the same view.
"""

from __future__ import annotations

import os

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# (file, title, icon, url path)
PAGES = [
    ("pages/home.py", "Home", ":material/home:", "home"),
    ("pages/overview.py", "Overview", ":material/dashboard:", "overview"),
    ("pages/pair_explorer.py", "Pair explorer", ":material/scatter_plot:", "pairs"),
    ("pages/all_pairs.py", "All pairs", ":material/table_rows:", "all-pairs"),
    ("pages/correlation.py", "Correlation", ":material/show_chart:", "correlation"),
    ("pages/heatmaps.py", "Heatmaps", ":material/grid_on:", "heatmaps"),
    ("pages/feature.py", "Feature", ":material/feature_search:", "feature"),
    ("pages/discover.py", "Discover", ":material/travel_explore:", "discover"),
    ("pages/model_diffing.py", "Model diffing", ":material/difference:", "diffing"),
    ("pages/export.py", "Export", ":material/download:", "export"),
]


def start_demo_if_asked() -> None:
    """``FEATUREBRIDGE_BUNDLE=demo`` (what ``make app`` sets): open the demo, building it in the background if needed.

    The first run in the server process names the demo bundle's folder for every session and starts
    its background build when the bundle is not complete; the app answers meanwhile, and Home shows
    the build's stages.
    """
    if os.environ.get("FEATUREBRIDGE_BUNDLE") != "demo":
        return
    from components.builds import autostart_demo
    from core.demo.settings import demo_bundle_path

    os.environ["FEATUREBRIDGE_BUNDLE"] = str(demo_bundle_path())
    autostart_demo()


def run() -> None:
    """Configure the page, apply a deep link, and route to the chosen page."""
    from components.boundary import run_page
    from components.state import get_state, sync_url, write_url

    start_demo_if_asked()

    st.set_page_config(page_title="Feature Bridge", page_icon=":material/compare_arrows:", layout="wide")
    pages = [
        st.Page(path, title=title, icon=icon, url_path=url, default=(i == 0))
        for i, (path, title, icon, url) in enumerate(PAGES)
    ]
    page = st.navigation(pages)
    sync_url()
    try:
        # a failing page shows one sentence (and the command that repairs a damaged bundle), never a traceback
        run_page(page)
    finally:
        # the page may have moved the selection (or stopped early with st.stop): keep the URL naming the view
        write_url(get_state())


if __name__ == "__main__":
    run()
