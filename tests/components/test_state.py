"""The app state's rules, without Streamlit: events, bound widgets, deep links, lists."""

from __future__ import annotations

import pytest

from components.state import (
    _MISSING,
    AppState,
    PairFilter,
    apply_map_selection,
    apply_params,
    reconcile,
    state_params,
    take_event,
)


def test_a_remounted_chart_reports_nothing_new() -> None:
    state = AppState()
    assert take_event(state, "umap-a", [406]) == (406,)
    assert take_event(state, "umap-a", [406]) is None  # the same report on every later run
    # the figure changed (a search, a toggle, a download): Streamlit re-mounts the chart empty
    assert take_event(state, "umap-a", None) is None
    assert take_event(state, "umap-a", []) is None
    # the same point clicked again after the re-mount is a new event
    assert take_event(state, "umap-a", [406]) == (406,)
    # sources are independent
    assert take_event(state, "umap-b", [406]) == (406,)


def test_map_selection_survives_remounts_and_changes_only_on_a_new_selection() -> None:
    state = AppState()
    assert apply_map_selection(state, "umap-a", "a", [406])
    assert state.selection == {"a": (406,), "b": ()} and (state.side, state.feature) == ("a", 406)
    # select, then search: both maps re-mount and report empty selections, which change nothing
    for _ in range(3):
        assert not apply_map_selection(state, "umap-a", "a", [])
        assert not apply_map_selection(state, "umap-b", "b", None)
    assert state.selection == {"a": (406,), "b": ()}
    # a box in B replaces the selection (B's members, A rings their partners)
    assert apply_map_selection(state, "umap-b", "b", [7, 3, 7])
    assert state.selection == {"a": (), "b": (3, 7)}
    assert (state.side, state.feature) == ("a", 406)  # several features: the selected feature stays
    state.open_list("mine", [(1, 2), (4, None), (1, 5)])
    assert state.selection == {"a": (1, 4), "b": (2, 5)} and state.active_list == "mine"
    assert apply_map_selection(state, "umap-a", "a", [9])
    assert state.active_list is None  # a new selection is not the list any more
    with pytest.raises(ValueError):
        apply_map_selection(state, "umap-c", "c", [1])


def test_a_bound_widget_follows_the_state_unless_the_user_just_moved_it() -> None:
    # not mounted yet: show the state's value
    assert reconcile(5) == (5, True)
    # mounted, untouched since the last agreement, state moved (a click elsewhere): push the state's value
    assert reconcile(9, widget_value=5, last_synced=5) == (9, True)
    # the user typed 7 on this run: the widget wins, nothing is pushed
    assert reconcile(5, widget_value=7, last_synced=5) == (7, False)
    # agreement: nothing to do
    assert reconcile(5, widget_value=5, last_synced=5) == (5, False)
    assert reconcile(5, widget_value=5, last_synced=_MISSING) == (5, False)


def test_the_corr_cos_click_settles_instead_of_alternating() -> None:
    """The loop of issue 11: inputs held the old pair, the scatter kept its point; replayed over five runs."""
    state = AppState(side="a", feature=1, partner=2)
    synced: dict[str, int] = {"corr-a": 1, "corr-b": 2}
    widgets = {"corr-a": 1, "corr-b": 2}
    scatter = [(8, 9)]  # the user clicked pair (8, 9); the scatter reports it on every later run
    history = []
    for _ in range(5):
        picked = take_event(state, "corr-cos", scatter)
        if picked:
            state.select_pair(*picked[0])
        fa, fb = state.pair()
        for key, value in (("corr-a", fa), ("corr-b", fb)):
            shown, push = reconcile(value, widgets[key], synced[key])
            if push:
                widgets[key] = shown
            synced[key] = widgets[key]
        state.select_pair(widgets["corr-a"], widgets["corr-b"])
        history.append(state.pair())
    assert history == [(8, 9)] * 5


def test_deep_links_round_trip_every_part_of_the_view() -> None:
    state = AppState(bundle_path="/b", side="b", feature=12, partner=40, search="cat", active_list="numbers")
    params = state_params(state)
    assert params == {"bundle": "/b", "side": "b", "feature": "12", "partner": "40", "search": "cat", "list": "numbers"}
    fresh = AppState()
    apply_params(fresh, params, lists={"numbers": [(1, 2), (3, 4)]})
    assert (fresh.bundle_path, fresh.side, fresh.feature, fresh.partner) == ("/b", "b", 12, 40)
    assert fresh.search == "cat" and fresh.active_list == "numbers"
    assert fresh.selection == {"a": (1, 3), "b": (2, 4)}
    assert state_params(fresh) == params
    # absent keys (a plain page switch drops the query) leave the state alone
    apply_params(fresh, {})
    assert state_params(fresh) == params
    # an unknown list or a bad number is ignored, not an error
    apply_params(fresh, {"list": "gone", "feature": "x", "side": "a"})
    assert fresh.active_list == "numbers" and fresh.feature == 12
    # another bundle clears what pointed into the old one
    apply_params(fresh, {"bundle": "/other"})
    assert fresh.selection == {"a": (), "b": ()} and fresh.search == "" and fresh.feature is None


def test_pair_filter_validates_and_knows_its_default() -> None:
    assert PairFilter().is_default and PairFilter(apply_to_maps=True).is_default
    assert not PairFilter(min_corr=0.5).is_default
    with pytest.raises(ValueError):
        PairFilter(kept="maybe")


def test_a_callback_move_is_not_undone_by_the_url_it_replaces() -> None:
    from streamlit.testing.v1 import AppTest

    def page() -> None:
        import streamlit as st

        from components.state import get_state, sync_url, write_url

        state = sync_url()

        def move() -> None:
            # what a chart's click callback does: it runs before the script, so before sync_url
            get_state().select_pair(7, 9)

        st.button("move", key="move", on_click=move)
        write_url(state)

    at = AppTest.from_function(page)
    at.query_params.update({"side": "a", "feature": "1", "partner": "2"})
    at.run(timeout=60)
    assert at.session_state["featurebridge_state"].pair() == (1, 2)
    at.button(key="move").click().run(timeout=60)
    assert not at.exception
    assert at.session_state["featurebridge_state"].pair() == (7, 9)
    assert at.query_params["feature"] in ("7", ["7"]) and at.query_params["partner"] in ("9", ["9"])
