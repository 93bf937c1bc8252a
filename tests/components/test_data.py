"""Page data read from a bundle: dense references for columns, correlations and pair statistics."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from components import data
from core.bundle.reader import open_bundle
from core.bundle.writer import add_parts
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


def test_umap_points_mark_orphans_from_the_kept_assignment(bundle) -> None:
    points = data.umap_points(bundle, "a")
    assert points.filter(~pl.col("is_orphan"))["feature"].to_list() == [0, 3]
    points_b = data.umap_points(bundle, "b")
    assert points_b.filter(~pl.col("is_orphan"))["feature"].to_list() == [1, 2]


def test_selection_table_lists_every_pair_of_the_selection(bundle) -> None:
    table = data.selection_pair_table(bundle, "a", [3, 5])
    assert set(zip(table["feature_a"], table["feature_b"], strict=True)) == {(3, 2), (3, 4), (5, None)}


def test_search_hits_by_id_and_bad_ids(bundle) -> None:
    assert data.search_hits(bundle, "a3").rows() == [("a", 3, "id")]
    assert data.search_hits(bundle, "4").select("side", "feature").rows() == [("a", 4), ("b", 4)]
    assert data.search_hits(bundle, "b99").height == 0
    assert data.search_hits(bundle, "   ").height == 0


def test_methods_record_is_json_ready(bundle, tmp_path: Path) -> None:
    import json

    record = data.methods_record(open_bundle(bundle.path))
    assert set(record["sides"]) == {"a", "b"}
    json.dumps(record, default=str)


def test_search_hits_carry_their_strongest_example_in_context(bundle, tmp_path: Path) -> None:
    import shutil

    from core.dashboards.settings import DashboardSettings
    from core.dashboards.stage import build_dashboards

    copy = shutil.copytree(bundle.path, tmp_path / "with-examples")
    with_examples = build_dashboards(copy, DashboardSettings(threads=1))
    hits = data.search_hits(with_examples, "a3")
    found = data.hit_contexts(with_examples, hits, data.load_text_index(with_examples))
    assert found.columns == ["side", "feature", "why", "context"]
    # a3 fires on the planted 'comet' units: its top example is one, bracketed in its own text
    assert "[comet]" in found["context"][0]
    no_hits = data.hit_contexts(with_examples, hits.clear(), data.load_text_index(with_examples))
    assert no_hits.height == 0 and "context" in no_hits.columns
