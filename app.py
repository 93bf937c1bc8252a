"""Feature Bridge: the Streamlit app (router only).

Start it with ``streamlit run app.py``. Each page lives in app_pages/ and is listed explicitly. The
folder must not be called ``pages/``: Streamlit decides per server, before the first script run,
whether a ``pages/`` folder beside the main script means the old folder-based navigation, and then
runs the FIRST session's page file by its file name, without app.py (no deep link read, "Page not
found" for /pairs); ``st.navigation`` turns that mode off only from the second session on. The URL carries the
page (its path) and the view (``bundle``, ``side``, ``feature``, ``partner`` query parameters),
so a copied address reopens the same view.
"""

from __future__ import annotations

import os

import streamlit as st

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

# (file, title, icon, url path)
PAGES = [
    ("app_pages/home.py", "Home", ":material/home:", "home"),
    ("app_pages/overview.py", "Overview", ":material/dashboard:", "overview"),
    ("app_pages/pair_explorer.py", "Pair explorer", ":material/scatter_plot:", "pairs"),
    ("app_pages/all_pairs.py", "All pairs", ":material/table_rows:", "all-pairs"),
    ("app_pages/correlation.py", "Correlation", ":material/show_chart:", "correlation"),
    ("app_pages/heatmaps.py", "Heatmaps", ":material/grid_on:", "heatmaps"),
    ("app_pages/feature.py", "Feature", ":material/feature_search:", "feature"),
    ("app_pages/discover.py", "Discover", ":material/travel_explore:", "discover"),
    ("app_pages/export.py", "Export", ":material/download:", "export"),
]


def run() -> None:
    """Configure the page, apply a deep link, and route to the chosen page."""
    from components.boundary import run_page
    from components.state import get_state, sync_url, write_url

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
