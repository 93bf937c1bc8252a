"""The one typed app state: the only code that touches ``st.session_state`` (and the URL's query).

The selected feature follows the user across pages because every page reads it from here;
deep links work because :func:`sync_url` copies the URL's ``bundle``, ``side``, ``feature`` and
``partner`` into the state on arrival, and writes the state back into the URL on every run, so
the address bar always names the view (``/feature?bundle=...&side=b&feature=12``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import streamlit as st

from core.sides import SIDES

_KEY = "featurebridge_state"


@dataclass
class AppState:
    """What the user has chosen so far.

    Attributes:
        bundle_path: the open comparison bundle folder, if any.
        recent: recently opened bundle folders, newest first.
        side: the side of the selected feature (``"a"`` or ``"b"``).
        feature: the selected feature of ``side``, if any.
        partner: a chosen partner on the other side (the pair the Correlation page shows).
        selection: side -> features selected in the Pair explorer.
        search: the Pair explorer's last search text.
        named_lists: name -> saved pairs ``(feature_a, feature_b)``.
        seen_events: side -> the last selection its UMAP chart reported (to tell a new event from a re-mount).
    """

    bundle_path: str | None = None
    recent: tuple[str, ...] = ()
    side: str = "a"
    feature: int | None = None
    partner: int | None = None
    selection: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"a": (), "b": ()})
    search: str = ""
    named_lists: dict[str, tuple[tuple[int | None, int | None], ...]] = field(default_factory=dict)
    seen_events: dict[str, tuple[int, ...]] = field(default_factory=dict)

    def open(self, path: str) -> None:
        """Make ``path`` the open bundle and remember it; a new bundle clears the selection."""
        if path != self.bundle_path:
            self.feature, self.partner, self.side = None, None, "a"
            self.selection = {"a": (), "b": ()}
            self.search = ""
        self.bundle_path = path
        self.recent = (path, *[p for p in self.recent if p != path])[:8]

    def select(self, side: str, feature: int | None, partner: int | None = None) -> None:
        """Make ``feature`` of ``side`` the selected feature (the one every page starts from)."""
        if side not in SIDES:
            raise ValueError(f"side must be 'a' or 'b', got {side!r}")
        if (side, feature) != (self.side, self.feature):
            self.partner = None
        self.side, self.feature = side, feature
        if partner is not None:
            self.partner = partner

    def pair(self) -> tuple[int | None, int | None]:
        """The selected (feature_a, feature_b), from the selected feature and its chosen partner."""
        if self.side == "a":
            return self.feature, self.partner
        return self.partner, self.feature


def get_state() -> AppState:
    """The session's state, created on first use."""
    if _KEY not in st.session_state:
        state = AppState()
        # `make app` names the demo bundle here, so a new session opens on it
        start = os.environ.get("FEATUREBRIDGE_BUNDLE")
        if start:
            state.open(start)
        st.session_state[_KEY] = state
    return st.session_state[_KEY]


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except ValueError:
        return None


def read_url(state: AppState) -> None:
    """Apply the URL's ``bundle``, ``side``, ``feature`` and ``partner`` to the state (a deep link)."""
    params = st.query_params
    bundle = params.get("bundle")
    if bundle and bundle != state.bundle_path:
        state.open(bundle)
    side = params.get("side")
    feature = _int(params.get("feature"))
    if side in SIDES and feature is not None:
        state.select(side, feature, _int(params.get("partner")))


def write_url(state: AppState) -> None:
    """Write the state's view into the URL, so copying the address shares this view."""
    wanted: dict[str, str] = {}
    if state.bundle_path:
        wanted["bundle"] = state.bundle_path
    if state.feature is not None:
        wanted["side"] = state.side
        wanted["feature"] = str(state.feature)
        if state.partner is not None:
            wanted["partner"] = str(state.partner)
    current = {k: st.query_params.get(k) for k in ("bundle", "side", "feature", "partner")}
    if {k: v for k, v in current.items() if v is not None} != wanted:
        st.query_params.clear()
        st.query_params.update(wanted)


def sync_url() -> AppState:
    """Read a deep link into the state, then write the state back into the URL; returns the state."""
    state = get_state()
    read_url(state)
    write_url(state)
    return state


def set_widget(key: str, value: object) -> None:
    """Set a keyed widget's value (from a callback, before the widget is drawn again), so it shows the state."""
    st.session_state[key] = value


def widget_value(key: str) -> object:
    """The current value of a keyed widget (a chart's selection event) before the widget is drawn again."""
    return st.session_state.get(key)
