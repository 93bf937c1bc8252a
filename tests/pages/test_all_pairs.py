"""All pairs page: every pair in one filterable table, the orphans under one definition, the split groups."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from components.data import ORPHAN_DEFINITION, pairs_table
from core.bundle.reader import open_bundle
from tests.pages.conftest import no_exception, open_app, texts


def test_the_table_lists_every_pair_and_follows_the_filter(app_bundle: Path) -> None:
    at = open_app("all_pairs", bundle_path=str(app_bundle))
    no_exception(at)
    table = pairs_table(open_bundle(app_bundle))
    assigned = table.filter(pl.col("status") != "candidate")
    shown = at.dataframe[0].value
    assert len(shown) == assigned.height and {"q", "n_coactive", "jaccard", "cos", "split_a", "reason"} <= set(
        shown.columns
    )
    at.selectbox(key="ap-kept").set_value("kept").run()
    no_exception(at)
    assert len(at.dataframe[0].value) == table.filter(pl.col("status") == "kept").height
    state = at.session_state["featurebridge_state"]
    assert state.pair_filter.kept == "kept"
    at.selectbox(key="ap-kept").set_value("all").run()
    assert len(at.dataframe[0].value) == table.height
    at.checkbox(key="ap-maps").check().run()
    assert at.session_state["featurebridge_state"].pair_filter.apply_to_maps
    # the Pair explorer then colours the filtered pairs only
    at.switch_page("pages/pair_explorer.py")
    at.run()
    no_exception(at)
    assert any("All pairs filter" in c for c in texts(at, "caption"))


def test_orphans_use_the_one_definition_and_match_the_summary(app_bundle: Path) -> None:
    at = open_app("all_pairs", bundle_path=str(app_bundle))
    no_exception(at)
    assert any(ORPHAN_DEFINITION in c for c in texts(at, "caption"))
    summary = open_bundle(app_bundle).manifest["matching"]["summary"]
    heads = [m.value for m in at.markdown if "orphans**" in m.value]
    assert heads == [
        f"**Side A: {summary['n_orphans_a']:,} orphans**",
        f"**Side B: {summary['n_orphans_b']:,} orphans**",
    ]


def test_without_matching_the_page_says_how_to_add_it(spine_bundle: Path) -> None:
    at = open_app("all_pairs", bundle_path=str(spine_bundle))
    no_exception(at)
    assert any("**matches**" in w for w in texts(at, "warning"))
