"""The one typed app state: the only code that touches ``st.session_state`` (and the URL's query).

What the user chose (bundle, selected feature and partner, the maps' selection, search text,
the pairs table's filter, the open named list) lives in one :class:`AppState` per session,
so it follows the user across pages and survives every rerun. Three rules keep it from being
lost or fought over, each a pure function tested without Streamlit:

- **Only a new user event changes a selection** (:func:`take_event`). A chart whose figure
  changed is re-mounted by Streamlit with an empty selection, and a chart on a page just
  opened reports none: neither is an event. Any chart or table that reports a selection (the
  linked maps' component, a table's row boxes) feeds its ids through :func:`take_event` /
  :func:`apply_map_selection`, keyed by the widget's key; the plot component reports a click
  once, as a trigger value, so it needs neither.
- **Bound widgets follow the state unless the user just moved them** (:func:`reconcile`):
  a widget that shows a state value (the Correlation page's feature inputs, the search box)
  gets the state's value pushed into it, except on the run where the user changed it.
  Pages call :func:`bind` before drawing such a widget and :func:`took` after.
- **The URL names the view** (:func:`state_params` / :func:`apply_params`): ``bundle``,
  ``side``, ``feature``, ``partner``, ``search`` and ``list`` are written on every run and
  read on arrival, so a copied address reopens the same view and a link with those
  parameters (``st.page_link(..., query_params=...)``) opens it in one click.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import streamlit as st

from core.sides import SIDES

_KEY = "featurebridge_state"
URL_KEYS = ("bundle", "side", "feature", "partner", "search", "list")
KEPT_CHOICES = ("assigned", "kept", "dropped", "all")
_MISSING = object()


@dataclass(frozen=True)
class PairFilter:
    """The All pairs table's filter, also applied to the maps when ``apply_to_maps``.

    Attributes:
        kept: ``"assigned"`` (the assignment's pairs, kept or dropped), ``"kept"``, ``"dropped"``, or
            ``"all"`` (also every top-k candidate the assignment did not choose).
        min_corr: lowest activation correlation shown (None: no bound).
        max_q: highest q-value shown (None: no bound; pairs without a q are hidden by a bound).
        reason: only pairs dropped for this reason (None: any).
        splits_only: only pairs inside a 1 -> k split group.
        text: only pairs where either feature's top tokens contain this text (case-insensitive).
        apply_to_maps: draw only the filtered pairs' features as paired on the Pair explorer's maps.
    """

    kept: str = "assigned"
    min_corr: float | None = None
    max_q: float | None = None
    reason: str | None = None
    splits_only: bool = False
    text: str = ""
    apply_to_maps: bool = False

    def __post_init__(self) -> None:
        if self.kept not in KEPT_CHOICES:
            raise ValueError(f"kept must be one of {KEPT_CHOICES}, got {self.kept!r}")

    @property
    def is_default(self) -> bool:
        """True when the filter lets every pair through."""
        return replace(self, apply_to_maps=False) == PairFilter()


@dataclass
class AppState:
    """What the user has chosen so far.

    Attributes:
        bundle_path: the open comparison bundle folder, if any.
        recent: recently opened bundle folders, newest first.
        side: the side of the selected feature (``"a"`` or ``"b"``).
        feature: the selected feature of ``side``, if any.
        partner: a chosen partner on the other side (the pair the Correlation page shows).
        selection: side -> features selected in the Pair explorer's maps (or from a named list).
        search: the Pair explorer's search text.
        search_page: which page of search hits is shown (0 = first).
        include_dropped: also follow dropped pairs when linking the maps.
        active_list: the named list the selection came from (None once the user selects anew).
        pair_filter: the All pairs table's filter.
        discover_request: the Discover page's last (text, score, features per side, minimum coverage), so its
            results stay up.
        notice: a sentence to show once on the next run (what a finished background action did).
        seen_events: event source (a widget key) -> the last non-empty selection it reported.
        synced: bound widget key -> the value the state and the widget last agreed on.
        url_synced: the URL query the state and the address bar last agreed on (None: never). While the
            URL still says this, the state leads: a widget callback may have moved it before the run.
    """

    bundle_path: str | None = None
    recent: tuple[str, ...] = ()
    side: str = "a"
    feature: int | None = None
    partner: int | None = None
    selection: dict[str, tuple[int, ...]] = field(default_factory=lambda: {"a": (), "b": ()})
    search: str = ""
    search_page: int = 0
    include_dropped: bool = False
    active_list: str | None = None
    pair_filter: PairFilter = field(default_factory=PairFilter)
    discover_request: tuple[str, str, int, float] | None = None
    notice: str | None = None
    seen_events: dict[str, tuple[Any, ...]] = field(default_factory=dict)
    synced: dict[str, Any] = field(default_factory=dict)
    url_synced: dict[str, str] | None = None

    def open(self, path: str) -> None:
        """Make ``path`` the open bundle and remember it; a new bundle clears what pointed into the old one."""
        if path != self.bundle_path:
            self.feature, self.partner, self.side = None, None, "a"
            self.clear_selection()
            self.search, self.search_page = "", 0
            self.pair_filter = PairFilter()
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

    def select_pair(self, feature_a: int | None, feature_b: int | None) -> None:
        """Make (A ``feature_a``, B ``feature_b``) the selected pair; a missing side keeps the other as the feature."""
        if feature_a is None and feature_b is not None:
            self.select("b", int(feature_b))
        elif feature_a is not None:
            self.select("a", int(feature_a), None if feature_b is None else int(feature_b))
            if feature_b is None:
                self.partner = None

    def pair(self) -> tuple[int | None, int | None]:
        """The selected (feature_a, feature_b), from the selected feature and its chosen partner."""
        if self.side == "a":
            return self.feature, self.partner
        return self.partner, self.feature

    def clear_selection(self) -> None:
        """Forget the maps' selection (and the list it came from)."""
        self.selection = {"a": (), "b": ()}
        self.active_list = None

    def open_list(self, name: str, pairs: Sequence[tuple[int | None, int | None]]) -> None:
        """Make a named list's pairs the selection (both sides' members) and remember which list it is."""
        self.selection = {
            "a": tuple(dict.fromkeys(int(a) for a, _ in pairs if a is not None)),
            "b": tuple(dict.fromkeys(int(b) for _, b in pairs if b is not None)),
        }
        self.active_list = name


# ---------------------------------------------------------------- pure rules (tested without Streamlit)


def take_event(state: AppState, source: str, value: Sequence[Any] | None) -> tuple[Any, ...] | None:
    """Tell a user's new selection from a re-mount: returns the selection when it is new, else None.

    A chart or table reports its current selection on every run. An empty (or absent) report
    is never an event: it is what a freshly mounted or re-mounted widget says, so it only
    resets what was seen (the next non-empty report counts again). A non-empty report counts
    once, when it differs from the last one seen from the same source.

    Args:
        state: the app state (its ``seen_events`` is updated).
        source: the reporting widget's key.
        value: the ids (or rows) the widget reports as selected; None when it reports nothing.

    Returns:
        The selection as a tuple when it is a new event, otherwise None.
    """
    chosen = tuple(value) if value else ()
    if not chosen:
        state.seen_events[source] = ()
        return None
    if chosen == state.seen_events.get(source):
        return None
    state.seen_events[source] = chosen
    return chosen


def apply_map_selection(
    state: AppState, source: str, side: str, features: Sequence[int] | None, event_id: Any = None
) -> bool:
    """Feed one map's reported selection into the state; True when it was a new selection.

    A new selection in one map replaces the whole selection (the other map then rings its
    partners) and ends the open named list; a single feature also becomes the selected feature.

    Args:
        state: the app state.
        source: the map widget's key.
        side: the map's side.
        features: feature ids the map reports as selected (None or empty: no event).
        event_id: names the gesture when the widget reports each gesture once (the linked maps'
            trigger carries its time stamp): the same features from a new gesture count again.
            None: a widget that reports its current selection on every run (plotly's), where
            only a different selection is new.

    Returns:
        Whether the state changed.
    """
    if side not in SIDES:
        raise ValueError(f"side must be 'a' or 'b', got {side!r}")
    ids = sorted({int(f) for f in features}) if features else []
    # the side leads the seen tuple (one widget may draw both maps), then the gesture's id when there is one,
    # so take_event's "new" means a new gesture there, not only different ids
    report = ([side, event_id, *ids] if event_id is not None else [side, *ids]) if ids else None
    seen = take_event(state, source, report)
    if seen is None:
        return False
    chosen = ids
    state.selection = {s: (tuple(chosen) if s == side else ()) for s in SIDES}
    state.active_list = None
    if len(chosen) == 1:
        state.select(side, int(chosen[0]))
    return True


def reconcile(state_value: Any, widget_value: Any = _MISSING, last_synced: Any = _MISSING) -> tuple[Any, bool]:
    """Which value a bound widget shows this run, and whether the state's value must be pushed into it.

    Args:
        state_value: what the state holds.
        widget_value: what the widget holds now (``_MISSING`` when it is not mounted yet).
        last_synced: the value state and widget last agreed on (``_MISSING`` if never).

    Returns:
        ``(value, push)``: the widget's value this run; ``push`` is True when the state's value
        must be written into the widget before it is drawn (the user did not just change it).
    """
    if widget_value is _MISSING:
        return state_value, True
    if last_synced is not _MISSING and widget_value != last_synced:
        return widget_value, False  # the user moved the widget on this run: it wins
    return state_value, widget_value != state_value


def state_params(state: AppState) -> dict[str, str]:
    """The URL query that names the state's view."""
    wanted: dict[str, str] = {}
    if state.bundle_path:
        wanted["bundle"] = state.bundle_path
    if state.feature is not None:
        wanted["side"] = state.side
        wanted["feature"] = str(state.feature)
        if state.partner is not None:
            wanted["partner"] = str(state.partner)
    if state.search.strip():
        wanted["search"] = state.search.strip()
    if state.active_list:
        wanted["list"] = state.active_list
    return wanted


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None and value != "" else None
    except ValueError:
        return None


def apply_params(
    state: AppState,
    params: Mapping[str, str],
    lists: Mapping[str, Sequence[tuple[int | None, int | None]]] | None = None,
) -> None:
    """Apply a URL query (a deep link, or a link clicked in the app) to the state.

    Absent keys leave the state as it is: Streamlit drops the query on a plain page switch,
    and the state then writes it back.

    Args:
        state: the app state.
        params: the query (``bundle``, ``side``, ``feature``, ``partner``, ``search``, ``list``).
        lists: the bundle's named lists (name -> pairs), to open ``list``; None skips it.
    """
    bundle = params.get("bundle")
    if bundle and bundle != state.bundle_path:
        state.open(bundle)
    side = params.get("side")
    feature = _int(params.get("feature"))
    if side in SIDES and feature is not None:
        partner = _int(params.get("partner"))
        if (side, feature, partner) != (state.side, state.feature, state.partner):
            state.select(side, feature)
            state.partner = partner
    search = params.get("search")
    if search is not None and search != state.search.strip():
        state.search, state.search_page = search, 0
    name = params.get("list")
    if name and name != state.active_list and lists is not None and name in lists:
        state.open_list(name, lists[name])


# ---------------------------------------------------------------- Streamlit glue


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


def _saved_lists(state: AppState, params: Mapping[str, str]) -> dict[str, tuple[tuple[int | None, int | None], ...]]:
    bundle = params.get("bundle") or state.bundle_path
    if not params.get("list") or not bundle:
        return {}
    from core.bundle.lists import load_named_lists
    from core.errors import UserError

    try:
        return {name: lst.pairs for name, lst in load_named_lists(bundle).items()}
    except UserError:
        return {}


def read_url(state: AppState) -> None:
    """Apply the URL's query to the state (a deep link, an in-app link, a page switch), unless it is the
    query the state last wrote: then the state leads, so a widget callback's move (a click in a chart, which
    runs before this) is not undone by the old URL."""
    params = {k: st.query_params.get(k) for k in URL_KEYS if st.query_params.get(k) is not None}
    if params != state.url_synced:
        apply_params(state, params, _saved_lists(state, params))


def write_url(state: AppState) -> None:
    """Write the state's view into the URL, so copying the address shares this view."""
    wanted = state_params(state)
    current = {k: st.query_params.get(k) for k in URL_KEYS}
    if {k: v for k, v in current.items() if v is not None} != wanted:
        st.query_params.clear()
        st.query_params.update(wanted)
    state.url_synced = wanted


def sync_url() -> AppState:
    """Read the URL into the state, then write the state back into the URL; returns the state."""
    state = get_state()
    read_url(state)
    write_url(state)
    return state


def widget_value(key: str) -> Any:
    """The current value of a keyed widget (a chart's selection event) before the widget is drawn again."""
    return st.session_state.get(key)


def bind(state: AppState, key: str, state_value: Any) -> None:
    """Before drawing the keyed widget ``key``: push the state's value into it unless the user just moved it.

    Draw the widget without a ``value=`` argument (its value comes from here), then call
    :func:`took` with what it returned.
    """
    _, push = reconcile(state_value, st.session_state.get(key, _MISSING), state.synced.get(key, _MISSING))
    if push:
        st.session_state[key] = state_value


def took(state: AppState, key: str, value: Any) -> Any:
    """After drawing a bound widget: remember the value state and widget now agree on; returns it."""
    state.synced[key] = value
    return value


def set_widget(key: str, value: Any) -> None:
    """Set a keyed widget's value before it is drawn (for example, to empty a text box after a save)."""
    st.session_state[key] = value
