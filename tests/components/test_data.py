"""Page data read from a bundle: dense references for columns, correlations and pair statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from components import data
from core.bundle.reader import open_bundle
from core.bundle.writer import add_parts
from core.matching.settings import MatchSettings
from tests.core._tiny_bundle import ASSIGNMENT, planted_comet, write_bundle


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory):
    texts, a, b = planted_comet()
    assignment = ASSIGNMENT.with_columns(pl.Series("kept", [True, False, True]), pl.Series("reason", [None, "x", None]))
    path = write_bundle(tmp_path_factory.mktemp("data") / "b", texts, a, b, doc_len=100, assignment=assignment)
    umap = {
        f"umap_{s}.parquet": pl.DataFrame(
            {"feature": np.arange(n, dtype=np.int32), "x": np.arange(n, dtype=np.float32), "y": np.zeros(n, np.float32)}
        )
        for s, n in (("a", 6), ("b", 5))
    }
    return add_parts(path, frames=umap)


def test_columns_and_block_match_dense_references(bundle) -> None:
    dense_a, dense_b = bundle.codes("a").to_dense(), bundle.codes("b").to_dense()
    np.testing.assert_allclose(data._columns(bundle, "a", [3, 0, 3]), dense_a[:, [3, 0, 3]])
    block = data.correlation_block(bundle, [3, 0], [2, 4])
    expected = [np.corrcoef(dense_a[:, i], dense_b[:, j])[0, 1] for i in (3, 0) for j in (2, 4)]
    np.testing.assert_allclose(block["corr"].to_numpy(), expected, atol=1e-9)
    assert block.select("feature_a", "feature_b").rows() == [(3, 2), (3, 4), (0, 2), (0, 4)]


def test_unit_pair_frame_and_stats(bundle) -> None:
    frame = data.unit_pair_frame(bundle, 3, 4, window=1)
    # by construction a3 and b4 fire on exactly the six 'comet' units
    assert frame["unit"].to_list() == [10, 60, 200, 420, 421, 700]
    assert all("[comet]" in c for c in frame["context"])
    stats = data.pair_stats(frame, bundle.n_units)
    assert stats["jaccard"] == 1.0 and stats["n_both"] == 6
    assert stats["pearson"] == pytest.approx(1.0)


def test_umap_points_colour_the_kept_pairs(bundle) -> None:
    points = data.umap_points(bundle, "a")
    assert points.filter(pl.col("category") == "paired")["feature"].to_list() == [0, 3]
    points_b = data.umap_points(bundle, "b")
    assert points_b.filter(pl.col("category") == "paired")["feature"].to_list() == [1, 2]
    # this bundle has no matches: nothing can be called an orphan (see test_pairs_table for the definition)
    assert not points["is_orphan"].any()


def test_selection_table_lists_every_pair_of_the_selection(bundle) -> None:
    table = data.selection_pair_table(bundle, "a", [3, 5])
    assert set(zip(table["feature_a"], table["feature_b"], strict=True)) == {(3, 2), (3, 4), (5, None)}


def test_search_hits_by_id_and_bad_ids(bundle) -> None:
    # a3's strongest assigned pair is B2 (kept, r 0.9)
    assert data.search_hits(bundle, "a3").rows() == [("a", 3, "id", "", 2, 0.9, None, "kept")]
    assert data.search_hits(bundle, "4").select("side", "feature").rows() == [("a", 4), ("b", 4)]
    assert data.search_hits(bundle, "b99").height == 0
    assert data.search_hits(bundle, "   ").height == 0


def test_methods_record_is_json_ready(bundle, tmp_path: Path) -> None:
    import json

    record = data.methods_record(open_bundle(bundle.path))
    assert set(record["sides"]) == {"a", "b"}
    json.dumps(record, default=str)


def test_the_p_floor_note_appears_only_when_every_p_is_at_its_floor() -> None:
    at_floor = {"metrics": {m: {"p_value": 1 / 1001, "n_null": 1000} for m in ("svcca", "rsa")}}
    note = data.p_floor_note(at_floor)
    assert note and "p <= 0.001" in note and "1,000" in note
    one_above = {"metrics": {"svcca": {"p_value": 1 / 1001, "n_null": 1000}, "rsa": {"p_value": 0.02, "n_null": 1000}}}
    assert data.p_floor_note(one_above) is None
    assert data.p_floor_note({"metrics": {"matched_corr": {"p_value": None, "n_null": 0}}}) is None


def test_concept_rows_say_why_they_are_not_tested() -> None:
    rows = [
        # written by the core after the fix: the reason is in the row
        {"concept": "a", "metric": "svcca", "n_pairs": 12, "tested": False, "not_testable": "not testable: x",
         "value": 1.0, "p_value": None},
        # an older bundle: SVCCA exactly 1 on fewer pairs than dimensions, still marked tested
        {"concept": "b", "metric": "svcca", "n_pairs": 20, "tested": True, "value": 1.0, "p_value": 1.0},
        {"concept": "b", "metric": "cka", "n_pairs": 20, "tested": True, "value": 0.4, "p_value": 0.01},
    ]  # fmt: skip
    frame = data.concepts_frame({"d_in_a": 384, "d_in_b": 384, "concepts": {"results": rows}})
    status = dict(zip(zip(frame["concept"], frame["metric"], strict=True), frame["status"], strict=True))
    assert status[("a", "svcca")] == "not testable: x"
    assert status[("b", "svcca")].startswith("not testable: 20 pairs in 384-dim spaces")
    assert status[("b", "cka")] == "tested"
    assert frame.filter(pl.col("status") != "tested")["p_value"].is_null().all()
    assert data.concepts_frame({"concepts": None}) is None


def test_recorded_settings_rebuild_the_stage_settings(bundle) -> None:
    from core.spaces.settings import SimilaritySettings

    fake = type(bundle)(
        bundle.path, {**bundle.manifest, "similarity": {"settings": {"n_null": 17, "metrics": ["cka"]}}}
    )
    settings = data.recorded_settings(fake, "similarity")
    assert isinstance(settings, SimilaritySettings) and settings.n_null == 17 and settings.metrics == ("cka",)
    assert data.recorded_settings(bundle, "matching").method == MatchSettings().method  # unrecorded: the defaults


def test_search_hits_carry_their_strongest_example_in_context(bundle, tmp_path: Path) -> None:
    import shutil

    from core.dashboards.settings import DashboardSettings
    from core.dashboards.stage import build_dashboards

    copy = shutil.copytree(bundle.path, tmp_path / "with-examples")
    with_examples = build_dashboards(copy, DashboardSettings(threads=1))
    hits = data.search_hits(with_examples, "a3")
    found = data.hit_contexts(with_examples, hits, data.load_text_index(with_examples))
    assert found.columns == [*hits.columns, "context"]
    # a3 fires on the planted 'comet' units: its top example is one, bracketed in its own text
    assert "[comet]" in found["context"][0]
    no_hits = data.hit_contexts(with_examples, hits.clear(), data.load_text_index(with_examples))
    assert no_hits.height == 0 and "context" in no_hits.columns


def test_sweep_cells_keep_one_metric_in_layer_order_named_by_labels_when_present() -> None:
    rows = [
        {"metric": m, "layer_a": la, "layer_b": lb, "value": 10 * la + lb + (0.5 if m == "rsa" else 0.0)}
        for m in ("svcca", "rsa")
        for la in (1, 0)
        for lb in (1, 0)
    ]
    cells, row, col = data.sweep_cells(pl.DataFrame(rows), "rsa")
    assert (row, col) == ("layer_a", "layer_b")
    assert cells["metric"].unique().to_list() == ["rsa"]
    assert list(zip(cells["layer_a"], cells["layer_b"], strict=True)) == [(0, 0), (0, 1), (1, 0), (1, 1)]
    assert cells["value"].to_list() == [0.5, 1.5, 10.5, 11.5]
    labelled = pl.DataFrame([{**r, "label_a": f"a{r['layer_a']}", "label_b": f"b{r['layer_b']}"} for r in rows])
    assert data.sweep_cells(labelled, "svcca")[1:] == ("label_a", "label_b")
