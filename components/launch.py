"""Serve the app with Streamlit's command line, every session routed by ``app.py``'s ``st.navigation``.

Run it as ``python components/launch.py run app.py [streamlit flags]`` (what ``make app``,
``featurebridge app`` and the browser tests do). It is ``streamlit run`` with one difference:
Streamlit decides once per server, when the first session starts, whether a ``pages/`` folder
beside the main script means its old folder navigation, and in that mode it runs the first
session's page file by its file name without ``app.py`` (no deep link read, "Page not found" for
``/pairs``); ``st.navigation`` switches the mode off only from the second session on. The brief
fixes the folder's name, so this sets Streamlit's own switch (``PagesManager.uses_pages_directory``,
left alone once set) to the value ``st.navigation`` sets, before the server starts. A hand-run
``streamlit run app.py`` works too, but its very first session may show "Page not found" for a
deep link; reloading fixes it.
"""

from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    """Run Streamlit's command line with the multipage mode fixed to ``st.navigation``'s.

    Args:
        argv: the arguments after the program name (``run app.py ...``); None reads ``sys.argv``.

    Returns:
        Streamlit's exit status.
    """
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web.cli import main as streamlit_main

    PagesManager.uses_pages_directory = False
    args = sys.argv[1:] if argv is None else argv
    sys.argv = ["streamlit", *args]
    try:
        streamlit_main()
    except SystemExit as done:
        return done.code if isinstance(done.code, int) else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
