"""Every pair listing shows the evidence (q, k, mu, the token overlap, the combined score and note); the preset is shown."""

from __future__ import annotations

from pathlib import Path

import polars as pl

from core.bundle.reader import open_bundle
from tests.pages.conftest import OVERVIEW_TAB, charts, no_exception, open_app, plots, show_tab, texts

EVIDENCE = ("q", "n_coactive", "mu", "k_over_mu", "neglog10_p", "token_overlap", "combined_score", "note")


def _best_pair(app_bundle: Path) -> tuple[int, int, dict]:
    matches = open_bundle(app_bundle).matches().collect()
    row = matches.filter(pl.col("direction") == "a->b").sort("corr", descending=True).row(0, named=True)
    return int(row["feature_a"]), int(row["feature_b"]), row


def _frames(at) -> list:
    return [d.value for d in at.dataframe]


def test_feature_page_lists_partners_with_evidence_and_the_split_group(app_bundle: Path) -> None:
    fa, fb, row = _best_pair(app_bundle)
    at = open_app("feature", bundle_path=str(app_bundle), side="a", feature=fa)
    no_exception(at)
    partners = next(f for f in _frames(at) if "B feature" in f.columns and "rank" in f.columns)
    for col in EVIDENCE:
        assert col in partners.columns, col
    top = partners.sort_values("rank").iloc[0]
    assert int(top["B feature"]) == fb
    assert abs(float(top["combined_score"]) - row["combined_score"]) < 1e-9
    assert top["note"] == row["note"]
    assert any(s.value == "Split group" for s in at.subheader)
    # the evidence block names the pair and the numbers explain prints
    labels = [m.label for m in at.metric]
    assert {"q", "k / mu", "combined score", "-log10 p"} <= set(labels)
    at.slider(key="fp-split-min").set_value(0.0).run()
    no_exception(at)


def test_correlation_page_shows_the_pair_evidence(app_bundle: Path) -> None:
    fa, fb, row = _best_pair(app_bundle)
    at = open_app("correlation", bundle_path=str(app_bundle), side="a", feature=fa, partner=fb)
    no_exception(at)
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["k (co-firing)"] == f"{row['n_coactive']:,}"
    assert metrics["combined score"] == f"{row['combined_score']:.3f}"
    assert {"q", "expected mu", "k / mu", "-log10 p"} <= set(metrics)
    assert any("A only" in c for c in texts(at, "caption"))


def test_pair_explorer_table_carries_the_evidence(app_bundle: Path) -> None:
    fa, _, _ = _best_pair(app_bundle)
    at = open_app("pair_explorer", bundle_path=str(app_bundle), selection={"a": (fa,), "b": ()})
    no_exception(at)
    table = next(f for f in _frames(at) if "feature_a" in f.columns and "tokens_a" in f.columns)
    for col in EVIDENCE:
        assert col in table.columns, col
    assert table["q"].notna().any()


def test_heatmaps_offer_the_feature_split_group(app_bundle: Path) -> None:
    fa, _, _ = _best_pair(app_bundle)
    at = open_app("heatmaps", bundle_path=str(app_bundle), side="a", feature=fa)
    no_exception(at)
    radio = at.radio(key="hm-source")
    assert "this feature's split group" in radio.options
    radio.set_value("this feature's split group").run()
    no_exception(at)
    at.slider(key="hm-split-min").set_value(0.0).run()
    no_exception(at)
    # the split group's heatmap is drawn by the app's plot component, not st.plotly_chart
    assert not charts(at)
    cells = [t for fig in plots(at) for t in fig["data"] if t.get("name") == "cells"]
    assert cells, "the split group is drawn as a clickable cell heatmap"


def test_overview_names_the_preset_and_the_build_form_offers_both(app_bundle: Path) -> None:
    at = open_app("overview", bundle_path=str(app_bundle))
    no_exception(at)
    show_tab(at, OVERVIEW_TAB, "Matching")
    assert any("Matching preset: **featurebridge**" in m.value for m in at.markdown)
    home = open_app()
    assert list(home.selectbox(key="build-preset").options) == ["featurebridge", "paper"]
