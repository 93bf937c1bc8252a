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
