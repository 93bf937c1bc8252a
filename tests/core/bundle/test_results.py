"""A bundle's typed results: ``pair``, ``partners``, ``pairs``, ``similarity`` against the parts and dense references."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

import core
from core.errors import DashboardError, SideError, SpecError
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from core.spaces.settings import SimilaritySettings
from core.spaces.stage import build_similarity
from tests.core.planted import build_planted_config, dense_pearson, make_planted, write_bundle


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    planted = make_planted(build_planted_config())
    path = write_bundle(
        tmp_path_factory.mktemp("results") / "bundle",
        planted.codes_a,
        planted.codes_b,
        planted.docs,
        planted.w_dec_a,
        planted.w_dec_b,
    )
    build_matching(path, MatchSettings(top_k=3), device="cpu")
    settings = SimilaritySettings(n_null=50, n_boot=20, n_null_concepts=10, seed=1)
    build_similarity(path, settings, device="cpu")
    return planted, core.open_bundle(path)


def _dense_cos(u: np.ndarray, v: np.ndarray) -> float:
    u, v = u.astype(np.float64), v.astype(np.float64)
    return float(u @ v / (np.linalg.norm(u) * np.linalg.norm(v)))


def test_pair_in_the_matches_reads_the_parts_and_agrees_with_dense_references(built) -> None:
    planted, bundle = built
    fa, fb = (int(x) for x in planted.pairs[0])
    stats = bundle.pair(fa, fb)
    assert isinstance(stats, core.PairStats) and stats.source == "matches"
    row = bundle.matches().filter((pl.col("feature_a") == fa) & (pl.col("feature_b") == fb)).collect()
    ab = row.filter(pl.col("direction") == "a->b").to_dicts()[0]
    assert stats.corr == ab["corr"] and stats.rank_a_to_b == ab["rank"]
    dense_a, dense_b = planted.codes_a.to_dense()[:, fa], planted.codes_b.to_dense()[:, fb]
    assert stats.corr == pytest.approx(dense_pearson(planted.codes_a, planted.codes_b)[fa, fb], abs=1e-6)
    assert stats.n_coactive == int(((dense_a != 0) & (dense_b != 0)).sum())
    assert stats.n_a == int((dense_a != 0).sum()) and stats.n_b == int((dense_b != 0).sum())
    assert stats.jaccard == pytest.approx(stats.n_coactive / (stats.n_a + stats.n_b - stats.n_coactive))
    assert stats.cos == pytest.approx(_dense_cos(planted.w_dec_a[fa], planted.w_dec_b[fb]), abs=1e-6)
    chosen = bundle.assignment().filter((pl.col("feature_a") == fa) & (pl.col("feature_b") == fb)).collect()
    assert (
        stats.method == MatchSettings().method
        and stats.kept == chosen["kept"][0]
        and stats.reason == chosen["reason"][0]
    )
    assert stats.q == chosen["q"][0] and stats.neglog10_p == chosen["neglog10_p"][0]


def test_pair_in_no_list_is_computed_from_the_codes(built) -> None:
    planted, bundle = built
    listed = set(bundle.matches().select("feature_a", "feature_b").collect().iter_rows())
    fa, fb = next(
        (a, b)
        for a in range(planted.codes_a.n_features)
        for b in range(planted.codes_b.n_features)
        if (a, b) not in listed and planted.codes_a.to_dense()[:, a].any() and planted.codes_b.to_dense()[:, b].any()
    )
    stats = bundle.pair(fa, fb)
    assert stats.source == "codes" and stats.rank_a_to_b is None and stats.rank_b_to_a is None
    assert stats.corr == pytest.approx(dense_pearson(planted.codes_a, planted.codes_b)[fa, fb], abs=1e-9)
    assert stats.cos == pytest.approx(_dense_cos(planted.w_dec_a[fa], planted.w_dec_b[fb]), abs=1e-6)
    assert stats.kept is None and stats.method is None


def test_partners_are_the_feature_rows_in_rank_order_with_the_assignment(built) -> None:
    planted, bundle = built
    fb = int(planted.pairs[1, 1])
    frame = bundle.partners("b", fb)
    assert frame["rank"].to_list() == sorted(frame["rank"].to_list()) and frame.height == 3
    assert set(frame["direction"]) == {"b->a"} and set(frame["feature_b"]) == {fb}
    assert frame["feature_a"][0] == int(planted.pairs[1, 0])
    assert frame["in_assignment"][0] and frame["kept"][0]
    outside = frame.filter(~pl.col("in_assignment"))
    assert outside["kept"].null_count() == outside.height


def test_pairs_are_the_kept_assignment_best_first(built) -> None:
    _, bundle = built
    kept = bundle.pairs()
    assert kept["kept"].all() and kept["corr"].to_list() == sorted(kept["corr"].to_list(), reverse=True)
    assert bundle.pairs(kept_only=False).height >= kept.height


def test_similarity_is_typed_and_equals_the_json(built) -> None:
    _, bundle = built
    raw = bundle.similarity_json()
    report = bundle.similarity()
    assert isinstance(report, core.SimilarityReport) and report.n_pairs == raw["n_pairs"]
    assert set(report.metrics["metric"]) == set(raw["metrics"])
    svcca = report.metric("svcca")
    body = raw["metrics"]["svcca"]
    assert (svcca.value, svcca.null_mean, svcca.p_value, svcca.n_null) == (
        body["value"],
        body["null_mean"],
        body["p_value"],
        body["n_null"],
    )
    # p = (b + 1) / (n + 1): a multiple of 1 / 51 with 50 null samples
    assert math.isclose(svcca.p_value * 51, round(svcca.p_value * 51))
    assert svcca.details["k_a"] == body["details"]["k_a"]
    assert report.concepts is None or "concept" in report.concepts.columns
    with pytest.raises(SpecError, match="No similarity metric"):
        report.metric("nope")


@pytest.mark.parametrize(("side", "feature", "error"), [("c", 0, SideError), ("a", 10**6, DashboardError)])
def test_bad_side_or_feature_is_a_user_error(built, side: str, feature: int, error: type) -> None:
    _, bundle = built
    with pytest.raises(error):
        bundle.partners(side, feature)


def test_bundle_repr_names_its_folder_not_its_manifest(built) -> None:
    _, bundle = built
    text = repr(bundle)
    assert str(bundle.path) in text and "versions" not in text and len(text) < 400
