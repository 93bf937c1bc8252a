"""Model diffing page: taxonomy, the four diffing figures, the causal check, tag lists linking to the pair dashboard."""

from __future__ import annotations

import json
from pathlib import Path

from tests.pages.conftest import charts, no_exception, open_app, plots, texts


def _titles(at) -> list[str]:
    assert not charts(at), "every figure is drawn by the app's plot component (one plotly.js per page)"
    return [(fig.get("layout", {}).get("title") or {}).get("text", "") for fig in plots(at)]


def test_model_diffing_shows_taxonomy_figures_causal_and_lists(crosscoder_bundle: Path) -> None:
    at = open_app("model_diffing", bundle_path=str(crosscoder_bundle))
    no_exception(at)
    assert at.title[0].value == "Model diffing"
    labels = [m.label for m in at.metric]
    assert {"EV model A", "EV model B", "shared", "A-only (base_only)", "B-only (chat_only)", "dead"} <= set(labels)
    assert "median equivalence" in labels
    titles = _titles(at)
    for prefix in (
        "Δ-norm of",
        "Decoder cosine of",
        "Decoder cosine vs Δ-norm",
        "Latent Scaling",
        "Causal equivalence vs",
    ):
        assert any(t.startswith(prefix) for t in titles), (prefix, titles)
    analyses = json.loads((crosscoder_bundle / "analyses.json").read_text())
    value = {m.label: m.value for m in at.metric}
    assert value["A-only (base_only)"] == f"{analyses['taxonomy']['base_only']:,}"
    lists = [d for d in at.dataframe if "link" in d.value.columns]
    assert lists and all(str(link).startswith("/feature?") for link in lists[0].value["link"])


def test_top_n_mode_retags_by_rank(crosscoder_bundle: Path) -> None:
    at = open_app("model_diffing", bundle_path=str(crosscoder_bundle))
    at.radio(key="md-mode").set_value("top_n").run()
    at.number_input(key="md-n").set_value(3).run()
    no_exception(at)
    value = {m.label: m.value for m in at.metric}
    assert value["A-only (base_only)"] == "3" and value["B-only (chat_only)"] == "3"


def test_sae_bundle_explains_and_offers_the_causal_check(app_bundle: Path) -> None:
    at = open_app("model_diffing", bundle_path=str(app_bundle))
    no_exception(at)
    assert any("two SAEs" in i for i in texts(at, "info"))
    assert any("python -m core causal" in c.value for c in at.code)


def test_pair_dashboard_shows_the_pairs_causal_equivalence(crosscoder_bundle: Path) -> None:
    import polars as pl

    causal = pl.read_parquet(crosscoder_bundle / "causal.parquet")
    latent = int(causal.filter(pl.col("status") == "ok")["feature_a"][0])
    at = open_app("feature", bundle_path=str(crosscoder_bundle), side="a", feature=latent)
    no_exception(at)
    assert any(s.value == "Causal equivalence" for s in at.subheader)
    assert "equivalence" in [m.label for m in at.metric]
    assert any(t == "Output shift per probe" for t in _titles(at))
