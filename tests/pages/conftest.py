"""AppTest set-up: one small REAL bundle per session, and a helper that opens the app on a page."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from streamlit.testing.v1 import AppTest

from components.boundary import UNEXPECTED
from components.state import AppState
from tests.pages.app_bundle import build_app_bundle, build_crosscoder_app_bundle, build_spine_bundle

APP = str(Path(__file__).resolve().parents[2] / "app.py")
TIMEOUT = 60


@pytest.fixture(scope="session")
def app_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny BERT + tiny TopK SAEs + jsonl corpus, with matching, similarity, dashboards and UMAP."""
    return build_app_bundle(tmp_path_factory.getbasetemp() / "app-bundle")


@pytest.fixture(scope="session")
def spine_bundle(app_bundle: Path) -> Path:
    """The same bundle with only its required parts (every optional part absent)."""
    return build_spine_bundle(app_bundle.parent)


@pytest.fixture(scope="session")
def crosscoder_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny crosscoder bundle with analyses, every stage and the causal check."""
    return build_crosscoder_app_bundle(tmp_path_factory.getbasetemp() / "app-crosscoder")


def open_app(page: str | None = None, widgets: dict[str, Any] | None = None, **state: Any) -> AppTest:
    """Run the app with an injected AppState, then switch to ``pages/<page>.py`` (None: stay on Home).

    ``widgets``: keyed widget values to set before the page's first run (e.g. the open tab of a page
    that runs only its open tab: ``{OVERVIEW_TAB: "Matching"}``).
    """
    at = AppTest.from_file(APP, default_timeout=TIMEOUT)
    at.session_state["featurebridge_state"] = AppState(**state)
    at.run()
    for key, value in (widgets or {}).items():
        at.session_state[key] = value
    if page is not None:
        at.switch_page(f"pages/{page}.py")
        at.run()
    return at


def no_exception(at: AppTest) -> None:
    """Fail with the first exception's message when the page raised (or its boundary caught a bug)."""
    assert not at.exception, at.exception[0].value
    bugs = [str(e.value) for e in at.error if str(e.value).startswith(UNEXPECTED)]
    assert not bugs, bugs[0]


# the key of Overview's tabs (pages/overview.py's OVERVIEW_TAB; a page module is not importable, it runs)
OVERVIEW_TAB = "ov-tab"


def show_tab(at: AppTest, key: str, label: str) -> AppTest:
    """Choose the tab ``label`` of the keyed ``st.tabs`` (a page that runs only its open tab) and rerun."""
    at.session_state[key] = label
    at.run()
    no_exception(at)
    return at


def charts(at: AppTest) -> list[dict[str, Any]]:
    """The plotly figures on the page, as JSON specs."""
    return [json.loads(c.proto.spec) for c in at.get("plotly_chart")]


def linked_maps(at: AppTest) -> list[dict[str, Any]]:
    """The data of every linked-maps component on the page (``key``, ``view``, ``maps_url``, ``plotly``),
    with ``maps``: the payload file the browser fetches, decoded."""
    from components.linked_maps import COMPONENT_NAME, payload_dir

    found = []
    for element in at.get("bidi_component"):
        if element.proto.component_name != COMPONENT_NAME:
            continue
        data = json.loads(element.proto.json)
        assert data["maps_url"].endswith(f"/{data['key']}.json")
        found.append({**data, "maps": json.loads((payload_dir() / f"{data['key']}.json").read_text())})
    return found


def plots(at: AppTest) -> list[dict[str, Any]]:
    """The figures drawn by the app's own plot component (components/plot.py), as plotly JSON specs."""
    from components.plot import COMPONENT_NAME, figure_of

    return [
        figure_of(json.loads(e.proto.json))
        for e in at.get("bidi_component")
        if e.proto.component_name == COMPONENT_NAME
    ]


def texts(at: AppTest, kind: str) -> list[str]:
    """The text of every element of one kind (``warning``, ``error``, ``info``, ``success``, ``caption``)."""
    return [str(e.value) for e in getattr(at, kind)]


def values(field: Any) -> list:
    """A trace field as a plain list, decoding plotly's typed-array form ``{dtype, bdata, shape}``."""
    import base64

    import numpy as np

    if isinstance(field, dict) and "bdata" in field:
        data = np.frombuffer(base64.b64decode(field["bdata"]), dtype=np.dtype(field["dtype"]))
        if "shape" in field:
            data = data.reshape([int(s) for s in str(field["shape"]).split(",")])
        return data.tolist()
    return list(field or [])
