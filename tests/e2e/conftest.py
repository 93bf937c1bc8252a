"""The browser both e2e modules drive: one headless Chromium per module, started after the module's ``server``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.e2e.browser import Browser, find_chromium


@pytest.fixture(scope="module")
def browser(server: str) -> Iterator[Browser]:
    chromium = find_chromium()
    assert chromium is not None
    b = Browser(chromium)
    try:
        yield b
    finally:
        b.close()
