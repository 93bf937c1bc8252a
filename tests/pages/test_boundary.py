"""The app's error boundary: a corrupt or incomplete bundle is one sentence with the repairing command, never a traceback.

The pages run through ``components.boundary.run_page`` as app.py runs them; here a page is run
through the boundary by a two-line entry script, and app.py's own routing through ``run_page`` is
checked separately.
"""

from __future__ import annotations

import ast
import shutil
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from components.boundary import UNEXPECTED
from components.state import AppState
from tests.pages.conftest import APP, OVERVIEW_TAB, TIMEOUT, no_exception, texts

PAGES = Path(APP).parent / "pages"


def _entry(pages: str, page: str) -> None:  # runs inside AppTest: only its own imports are available
    import runpy

    import streamlit as st

    from components.boundary import run_page

    # links need app.py's navigation, which this entry lacks; the patch is undone after the run, so it
    # does not leak into later AppTests of the same process
    original = st.page_link
    st.page_link = lambda *args, **kwargs: None

    class Page:  # what st.navigation returns, for one page file
        url_path = page

        def run(self) -> None:
            runpy.run_path(f"{pages}/{page}.py", run_name="__main__")

    try:
        run_page(Page())
    finally:
        st.page_link = original


# Overview runs only its open tab: the matching parts are read on its Matching tab
MATCHING_TAB = {OVERVIEW_TAB: "Matching"}


def open_app(page: str, widgets: dict[str, Any] | None = None, **state: Any) -> AppTest:
    """Run ``pages/<page>.py`` inside the app's boundary with an injected AppState (and keyed widget values)."""
    at = AppTest.from_function(_entry, args=(str(PAGES), page), default_timeout=TIMEOUT)
    at.session_state["featurebridge_state"] = AppState(**state)
    for key, value in (widgets or {}).items():
        at.session_state[key] = value
    at.run()
    return at


def test_app_runs_every_page_through_the_boundary() -> None:
    calls = [
        node.func.id
        for node in ast.walk(ast.parse(Path(APP).read_text()))
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
    ]
    assert "run_page" in calls
    assert ".run()" not in Path(APP).read_text(), "no page is run outside run_page"


def _copy(bundle: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(bundle, tmp_path / "bundle"))


def _scramble_data(path: Path) -> None:
    """Damage a parquet file's data pages and keep its footer, so only a full read finds it."""
    data = bytearray(path.read_bytes())
    for i in range(8, min(len(data) // 2, 400)):
        data[i] ^= 0x5A
    path.write_bytes(bytes(data))


def _errors(at) -> list[str]:  # type: ignore[no-untyped-def]
    assert not at.exception, at.exception[0].value
    return texts(at, "error")


def test_damage_inside_a_stage_part_is_one_sentence_with_its_command(app_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(app_bundle, tmp_path)
    _scramble_data(bundle / "matches.parquet")
    at = open_app("overview", widgets=MATCHING_TAB, bundle_path=str(bundle))
    errors = _errors(at)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"Bundle {bundle} is damaged: matches.parquet does not read")
    assert errors[0].endswith(f"rebuild it with `python -m core match {bundle}`.")
    assert "Traceback" not in errors[0] and not errors[0].startswith(UNEXPECTED)


def test_a_lost_stage_part_is_said_as_damaged_with_its_command(app_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(app_bundle, tmp_path)
    (bundle / "assignment.parquet").unlink()
    at = open_app("overview", widgets=MATCHING_TAB, bundle_path=str(bundle))
    no_exception(at)
    assert any("**assignment**" in e and "assignment.parquet is missing" in e for e in texts(at, "error"))
    assert f"python -m core match {bundle}" in [c.value for c in at.code]


def test_a_lost_harvest_part_is_one_sentence_with_the_harvest_command(app_bundle: Path, tmp_path: Path) -> None:
    bundle = _copy(app_bundle, tmp_path)
    (bundle / "codes_b.safetensors").write_bytes(b"\x00" * 16)
    at = open_app("overview", bundle_path=str(bundle))
    errors = _errors(at)
    assert len(errors) == 1 and "codes_b.safetensors is damaged" in errors[0]
    assert "python -m core compare" in errors[0] and f"--out {bundle} --overwrite" in errors[0]


def test_a_bug_in_a_page_is_one_sentence_and_a_log_file(
    app_bundle: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import components.data

    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path / "cache"))

    def broken(*args: object, **kwargs: object) -> object:
        raise ZeroDivisionError("a bug deep inside")

    monkeypatch.setattr(components.data, "best_corr_frame", broken)
    at = open_app("overview", widgets=MATCHING_TAB, bundle_path=str(_copy(app_bundle, tmp_path)))
    errors = _errors(at)
    bug = [e for e in errors if e.startswith(UNEXPECTED)]
    assert len(bug) == 1 and "ZeroDivisionError: a bug deep inside" in bug[0]
    logs = list((tmp_path / "cache" / "logs").glob("error-*.log"))
    assert len(logs) == 1 and str(logs[0]) in bug[0] and "Traceback" in logs[0].read_text()
