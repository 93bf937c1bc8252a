"""Model diffing data readers and figure builders, on a tiny crosscoder bundle and planted frames."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from components import diffing_figures
from components.data import selection_pair_table
from components.diffing_data import (
    analyses_frame,
    analysis_settings,
    card_counts,
    causal_pair,
    causal_table,
    latent_table,
    pair_link,
    retag,
    shared_cosines,
    with_causal,
)
from core.bundle.reader import open_bundle
from core.crosscoder.settings import AnalysisSettings
from tests.pages.app_bundle import build_crosscoder_app_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    return open_bundle(build_crosscoder_app_bundle(tmp_path_factory.getbasetemp() / "app-crosscoder"))


def _planted() -> pl.DataFrame:
    # n_A, n_B -> Delta: (1, 1) 0.5 shared, (1, 0.02) 0.01 A-only, (0.02, 1) 0.99 B-only, (1, 0.5) 0.25, dead
    return pl.DataFrame(
        {
            "latent": [0, 1, 2, 3, 4],
            "delta_norm_b_only_1": [0.5, 0.01, 0.99, 0.25, 0.5],
            "is_dead": [False, False, False, False, True],
            "dec_cos": [0.8, 0.1, -0.2, 0.3, float("nan")],
            "relative_norm": [0.5, 0.02, 0.98, 1 / 3, float("nan")],
            "norm_a": [1.0, 1.0, 0.02, 1.0, 1.0],
            "norm_b": [1.0, 0.02, 1.0, 0.5, 1.0],
            "enc_cos": [0.5] * 5,
            "fire": [10, 10, 10, 10, 0],
            "nu_recon": [0.9, float("nan"), 0.1, 0.5, float("nan")],
            "nu_error": [0.95, float("nan"), 0.2, 0.4, float("nan")],
        }
    )


def test_retag_and_card_counts_use_the_stage_logic() -> None:
    frame = _planted()
    tagged = retag(frame, "threshold", AnalysisSettings())
    assert tagged["tag"].to_list() == ["shared", "a_only", "b_only", "unclassified", "dead"]
    assert card_counts(tagged) == {"shared": 1, "dead": 1, "unclassified": 1, "base_only": 1, "chat_only": 1}
    top = retag(frame, "top_n", AnalysisSettings(top_n=2))
    # B-only: 2 (0.99) and 0 (0.5); A-only: 1 (0.01) and 3 (0.25); the dead latent stays dead
    assert top["tag"].to_list() == ["b_only", "a_only", "b_only", "a_only", "dead"]
    assert shared_cosines(tagged).tolist() == [0.8]


def test_latent_table_links_each_latent_to_its_pair_dashboard() -> None:
    tagged = retag(_planted(), "threshold", AnalysisSettings())
    table = latent_table(tagged, "b_only", "/tmp/my bundle")
    assert table["latent"].to_list() == [2]
    assert table["link"][0] == pair_link("/tmp/my bundle", 2, 2)
    assert table["link"][0] == "/feature?bundle=%2Ftmp%2Fmy+bundle&side=a&feature=2&partner=2"


def test_bundle_readers(bundle) -> None:
    frame = analyses_frame(bundle)
    assert frame.height == 48 and frame["tag_threshold"].dtype == pl.String
    assert analysis_settings(bundle).top_n == 5
    causal = causal_table(bundle)
    assert "shift_a" not in causal.columns and {"equivalence", "status", "cos"} <= set(causal.columns)
    row = causal_pair(bundle, int(causal["feature_a"][0]), int(causal["feature_b"][0]))
    assert row is not None and len(row["shift_a"]) == len(row["shift_b"]) == bundle.manifest["causal"]["n_probes"]
    assert causal_pair(bundle, 10_000, 10_000) is None


def test_pair_explorer_table_carries_causal_equivalence(bundle) -> None:
    causal = causal_table(bundle).filter(pl.col("status") == "ok")
    latent = int(causal["feature_a"][0])
    table = selection_pair_table(bundle, "a", [latent])
    assert table["causal_equivalence"][0] == pytest.approx(causal["equivalence"][0])
    untouched = with_causal(bundle, pl.DataFrame(schema={"feature_a": pl.Int32, "feature_b": pl.Int32}))
    assert untouched.columns == ["feature_a", "feature_b"]


def test_figures_draw_the_planted_values() -> None:
    tagged = retag(_planted(), "threshold", AnalysisSettings())
    fig = diffing_figures.build_delta_norm_histogram_figure(tagged)
    assert int(np.nansum(fig.data[0].y)) == 4  # live latents only
    assert len(fig.layout.shapes) == 3  # A-only, shared and B-only bands
    assert "B-only → 1" in fig.layout.xaxis.title.text
    cos = diffing_figures.build_shared_cosine_histogram_figure(np.array([0.8, 0.9, -0.5]))
    assert cos.layout.yaxis.type == "log" and tuple(cos.layout.xaxis.range) == (-1, 1)
    scatter = diffing_figures.build_cosine_vs_delta_figure(tagged)
    names = {t.name.split(" ")[0] for t in scatter.data}
    assert names == {"shared", "A-only", "B-only", "unclassified"}
    ls = diffing_figures.build_latent_scaling_figure(tagged)
    assert sum(len(t.x) for t in ls.data) == 3 and tuple(ls.layout.xaxis.range) == (-0.1, 1.1)
    causal = pl.DataFrame(
        {
            "feature_a": [0, 2, 3],
            "feature_b": [0, 2, 3],
            "cos": [0.8, -0.2, 0.3],
            "equivalence": [0.9, None, 0.5],
            "status": ["ok", "no_shift_b", "ok"],
            "tag": ["shared", "b_only", "unclassified"],
        }
    )
    fig = diffing_figures.build_causal_vs_cosine_figure(causal)
    assert sum(len(t.x) for t in fig.data) == 2
    assert "median 0.700" in fig.layout.title.text and "1 without an equivalence" in fig.layout.title.text
    shifts = diffing_figures.build_shift_scatter_figure(
        [0.1, 0.0, 0.3], [0.2, 0.0, 0.1], [True, False, True], "kl", "hidden_shift"
    )
    assert [len(t.x) for t in shifts.data] == [2, 1]
    assert not math.isnan(shifts.data[0].x[0])
