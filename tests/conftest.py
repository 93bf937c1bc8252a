"""Shared test set-up: offline, quiet, small."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests import _delete_guard

# before any test module is imported: no test may delete a system folder, a home or an ancestor
_delete_guard.install()

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


E2E = Path(__file__).resolve().parent / "e2e"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark every test under tests/e2e as ``e2e`` (the fast lane leaves the browser out)."""
    for item in items:
        if E2E in Path(item.fspath).resolve().parents:
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(autouse=True)
def _app_routes_every_session(monkeypatch: pytest.MonkeyPatch) -> None:
    """AppTest as the app is served: every run through app.py's ``st.navigation`` (components/launch.py).

    AppTest resets Streamlit's multipage switch before each run, and with a ``pages/`` folder beside
    app.py the reset would select the old folder navigation (page files run without app.py); the
    launcher fixes the switch before the server starts, so the tests fix it after each reset.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:  # a test environment without streamlit has no AppTest either
        return
    init = PagesManager.__init__

    def routed(self: PagesManager, *args: object, **kwargs: object) -> None:
        init(self, *args, **kwargs)  # type: ignore[arg-type]
        PagesManager.uses_pages_directory = False

    monkeypatch.setattr(PagesManager, "__init__", routed)
