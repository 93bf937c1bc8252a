"""Correlation page: the chosen pair's unit scatter with Pearson and Jaccard, and corr vs cosine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from core.bundle.reader import open_bundle
from tests.pages.conftest import charts, no_exception, open_app, plots, texts


def test_pair_scatter_follows_the_selected_feature_and_partner(app_bundle: Path) -> None:
    bundle = open_bundle(app_bundle)
    kept = bundle.assignment().filter(pl.col("kept")).sort("corr", descending=True).collect()
    fa, fb = int(kept["feature_a"][0]), int(kept["feature_b"][0])
    at = open_app("correlation", bundle_path=str(app_bundle), side="a", feature=fa, partner=fb)
    no_exception(at)
    assert at.number_input(key="corr-a").value == fa and at.number_input(key="corr-b").value == fb
    figs = plots(at)
    names = {t["name"].split(" (")[0] for t in figs[0]["data"]}
    assert names == {"A only", "B only", "both"}
    # Pearson on the page equals a dense reference over all units
    dense_a = bundle.codes("a").to_dense()[:, fa].astype(np.float64)
    dense_b = bundle.codes("b").to_dense()[:, fb].astype(np.float64)
    pearson = next(m.value for m in at.metric if m.label.startswith("Pearson"))
    assert abs(float(pearson) - np.corrcoef(dense_a, dense_b)[0, 1]) < 1e-3
    # the global corr vs cosine scatter, drawn by the same plot component (one plotly.js on the page: no
    # st.plotly_chart beside it); its clicks move the pair through the typed state
    assert not charts(at)
    assert any(t.get("name") == "kept" for t in figs[1]["data"])


def test_changing_the_pair_updates_the_state(app_bundle: Path) -> None:
    at = open_app("correlation", bundle_path=str(app_bundle))
    at.number_input(key="corr-a").set_value(5).run()
    at.number_input(key="corr-b").set_value(7).run()
    no_exception(at)
    state = at.session_state["featurebridge_state"]
    assert state.pair() == (5, 7)
    assert "A5 vs B7" in plots(at)[0]["layout"]["title"]["text"]


def test_correlation_without_assignment_still_shows_the_pair(spine_bundle: Path) -> None:
    at = open_app("correlation", bundle_path=str(spine_bundle))
    no_exception(at)
    assert any("**assignment**" in w for w in texts(at, "warning"))
