"""The app's error boundary: a page that fails shows one sentence, never a traceback.

``app.py`` runs every page through :func:`run_page`. A user error (a bundle of another schema,
a missing part) shows its own sentence; a library error met while reading a damaged bundle is
traced to the damaged part and shown with the command that rebuilds it
(``core.bundle.check.explain_bundle_failure``); anything else is a bug: one sentence and the
log file holding the traceback (``core.boundary.user_message``). Streamlit's own control flow
(``st.stop``, ``st.rerun``) derives from ``BaseException`` and passes through untouched.
"""

from __future__ import annotations

from typing import Any

import streamlit as st
from streamlit.errors import StreamlitAPIException

from core.boundary import user_message
from core.errors import UserError

# the start of the sentence for a bug (page tests fail on it: tests/pages/conftest.py)
UNEXPECTED = "Unexpected failure"


def failure_message(exc: BaseException, bundle_path: str | None, context: str = "") -> str:
    """The one sentence a page shows for ``exc``.

    Args:
        exc: what the page raised.
        bundle_path: the open bundle, if any (damage in it explains library errors).
        context: what was running, recorded in the log of a bug.

    Returns:
        One sentence.
    """
    if isinstance(exc, UserError):
        return " ".join(str(exc).split())
    if bundle_path:
        from core.bundle.check import explain_bundle_failure

        try:
            explained = explain_bundle_failure(bundle_path, exc)
        except Exception:  # the diagnosis itself must never replace the page's failure
            explained = None
        if explained is not None:
            return " ".join(explained.split())
    return user_message(exc, context)


def render_failure(exc: BaseException, bundle_path: str | None, context: str = "") -> None:
    """Show the sentence for ``exc`` as an error, with a way back to Home."""
    from components.widgets import HOME

    st.error(failure_message(exc, bundle_path, context))
    try:
        st.page_link(HOME, label="Open another bundle on Home", icon=":material/home:")
    except StreamlitAPIException:
        pass  # no navigation to link into (a page run on its own): the sentence stands alone


def run_page(page: Any) -> None:
    """Run one ``st.navigation`` page inside the boundary.

    Args:
        page: the ``StreamlitPage`` to run.
    """
    try:
        page.run()
    except Exception as exc:
        from components.state import get_state

        try:
            bundle_path = get_state().bundle_path
        except Exception:
            bundle_path = None
        render_failure(exc, bundle_path, context=f"app page {getattr(page, 'url_path', '?')}")
