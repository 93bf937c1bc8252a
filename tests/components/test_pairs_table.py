"""The pairs table, orphans, split groups, partner lists and search partners on a planted bundle, against dense references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from components import data
from components.state import PairFilter
from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from tests.core.planted import build_planted_config, dense_pearson, make_planted, write_bundle


@pytest.fixture(scope="module")
def planted(tmp_path_factory: pytest.TempPathFactory):
    p = make_planted(build_planted_config())
    path = write_bundle(tmp_path_factory.mktemp("pairs") / "b", p.codes_a, p.codes_b, p.docs, p.w_dec_a, p.w_dec_b)
    bundle = build_matching(path, MatchSettings(top_k=5), device="cpu")
    umap = {
        f"umap_{s}.parquet": pl.DataFrame(
            {"feature": np.arange(n, dtype=np.int32), "x": np.arange(n, dtype=np.float32), "y": np.zeros(n, np.float32)}
        )
        for s, n in (("a", p.codes_a.n_features), ("b", p.codes_b.n_features))
    }
    return p, add_parts(bundle.path, frames=umap)


def test_every_assignment_pair_and_every_candidate_is_one_row(planted) -> None:
    p, bundle = planted
    table = data.pairs_table(bundle)
    assert table.columns[: len(data.PAIR_COLUMNS)] == list(data.PAIR_COLUMNS)
    assert table.select("feature_a", "feature_b").is_duplicated().sum() == 0
    asg = bundle.assignment().collect()
    assigned = table.filter(pl.col("status") != "candidate")
    assert assigned.height == asg.height
    assert assigned.filter(pl.col("status") == "kept").height == int(asg["kept"].sum())
    joined = asg.join(table, on=["feature_a", "feature_b"], suffix="_t")
    np.testing.assert_allclose(joined["corr"], joined["corr_t"])
    assert joined.filter(~pl.col("kept"))["reason"].to_list() == joined.filter(~pl.col("kept"))["reason_t"].to_list()
    matches = bundle.matches().select("feature_a", "feature_b").unique().collect()
    assert matches.join(table, on=["feature_a", "feature_b"], how="anti").height == 0
    # dense references: co-firing counts, firing counts, Jaccard and Pearson of every row
    da, db = p.codes_a.to_dense() > 0, p.codes_b.to_dense() > 0
    r = dense_pearson(p.codes_a, p.codes_b)
    rows = table.drop_nulls("n_coactive")
    fa, fb = rows["feature_a"].to_numpy(), rows["feature_b"].to_numpy()
    both = (da[:, fa] & db[:, fb]).sum(axis=0)
    np.testing.assert_array_equal(rows["n_coactive"].to_numpy(), both)
    np.testing.assert_array_equal(rows["n_a"].to_numpy(), da[:, fa].sum(axis=0))
    np.testing.assert_array_equal(rows["n_b"].to_numpy(), db[:, fb].sum(axis=0))
    union = da[:, fa].sum(axis=0) + db[:, fb].sum(axis=0) - both
    np.testing.assert_allclose(rows["jaccard"].to_numpy(), both / union, rtol=1e-6)
    np.testing.assert_allclose(rows["corr"].to_numpy(), r[fa, fb], atol=1e-5)
    # ranks are the positions in each side's top-k
    ab = bundle.matches().filter(pl.col("direction") == "a->b").select("feature_a", "feature_b", "rank").collect()
    ranked = ab.join(table, on=["feature_a", "feature_b"])
    assert (ranked["rank"] == ranked["rank_ab"]).all()
    # the planted 1-1 pairs are kept
    kept = set(
        zip(*table.filter(pl.col("status") == "kept").select("feature_a", "feature_b").to_numpy().T, strict=True)
    )
    assert {(int(a), int(b)) for a, b in p.pairs} <= {(int(a), int(b)) for a, b in kept}


def test_filters_apply_to_the_table_and_the_maps(planted) -> None:
    _, bundle = planted
    table = data.pairs_table(bundle)
    kept = data.filter_pairs(table, PairFilter(kept="kept"))
    assert kept["status"].unique().to_list() == ["kept"]
    strong = data.filter_pairs(table, PairFilter(kept="all", min_corr=0.8))
    assert strong.height and (strong["corr"] >= 0.8).all()
    assert data.filter_pairs(table, PairFilter(kept="all")).height == table.height
    assert data.filter_pairs(table, PairFilter(kept="assigned")).height == bundle.assignment().collect().height
    splits = data.filter_pairs(table, PairFilter(kept="all", splits_only=True))
    assert (splits["split_a"] | splits["split_b"]).all()
    word = table["tokens_a"].drop_nulls()[0].split(" · ")[0]
    texty = data.filter_pairs(table, PairFilter(kept="all", text=word.upper()))
    assert texty.height and texty["tokens_a"].str.to_lowercase().str.contains(word.lower(), literal=True).any()
    # the maps colour exactly the filtered pairs' features, by the pair's r
    points = data.umap_points(bundle, "a", strong)
    assert set(points.filter(pl.col("category") == "paired")["feature"].to_list()) == set(strong["feature_a"].to_list())
    # default colour: the kept pair's r, not the best partner's
    default = data.umap_points(bundle, "a").join(kept.select(feature="feature_a", kept_r="corr"), on="feature")
    np.testing.assert_allclose(default["corr"], default["kept_r"])


def test_one_orphan_definition_matches_the_matching_summary_and_a_dense_reference(planted) -> None:
    p, bundle = planted
    orphans = data.orphan_frame(bundle)
    summary = bundle.manifest["matching"]["summary"]
    assert orphans.filter(pl.col("side") == "a").height == summary["n_orphans_a"]
    assert orphans.filter(pl.col("side") == "b").height == summary["n_orphans_b"]
    # dense reference: live features whose best correlation with any other-side feature is <= min_corr
    r = np.nan_to_num(dense_pearson(p.codes_a, p.codes_b), nan=-np.inf)
    live_a = (p.codes_a.to_dense() > 0).any(axis=0)
    expected_a = set(np.flatnonzero(live_a & ~(r.max(axis=1) > 0.1)).tolist())
    assert set(orphans.filter(pl.col("side") == "a")["feature"].to_list()) == expected_a
    assert set(p.orphans_a.tolist()) <= expected_a
    for side in ("a", "b"):
        points = data.umap_points(bundle, side)
        assert points.filter(pl.col("category") == "orphan").height == orphans.filter(pl.col("side") == side).height
        dead = set((p.dead_a if side == "a" else p.dead_b).tolist())
        assert set(points.filter(pl.col("category") == "dead")["feature"].to_list()) == dead


def test_split_groups_show_the_planted_hubs_one_to_k(planted) -> None:
    p, bundle = planted
    groups = data.split_groups(bundle).filter(pl.col("side") == "a")
    for hub, parts in p.splits.items():
        row = groups.filter(pl.col("feature") == hub)
        assert row.height == 1, hub
        assert set(parts) <= set(row["partners"][0].to_list()) and row["k"][0] >= len(parts)
        corrs = row["partner_corr"][0].to_list()
        assert corrs == sorted(corrs, reverse=True)


def test_partner_lists_put_activation_beside_decoder_matches(planted) -> None:
    p, bundle = planted
    a, b = (int(x) for x in p.pairs[0])
    lists = data.partner_lists(bundle, "a", a, n=5)
    assert lists["by_activation"][0] == b
    wm = (
        bundle.scan("weight_matches.parquet")
        .filter((pl.col("direction") == "a->b") & (pl.col("feature_a") == a))
        .sort("rank")
        .collect()
    )
    assert lists["by_decoder"].to_list() == wm["feature_b"].head(5).to_list()
    # dense reference of the decoder cosine ranking
    wa = p.w_dec_a[a] / np.linalg.norm(p.w_dec_a[a])
    wb = p.w_dec_b / np.linalg.norm(p.w_dec_b, axis=1, keepdims=True)
    assert lists["by_decoder"][0] == int(np.argmax(wb @ wa))
    assert lists["in_both"][0] == (lists["by_decoder"][0] in lists["by_activation"].to_list())


def test_search_hits_carry_their_partner_r_and_q(planted) -> None:
    p, bundle = planted
    a, b = (int(x) for x in p.pairs[0])
    hit = data.search_hits(bundle, f"a{a}").row(0, named=True)
    assert (hit["side"], hit["feature"], hit["partner"], hit["partner_status"]) == ("a", a, b, "kept")
    row = (
        bundle.assignment().filter((pl.col("feature_a") == a) & (pl.col("feature_b") == b)).collect().row(0, named=True)
    )
    assert hit["partner_corr"] == pytest.approx(row["corr"]) and hit["partner_q"] == pytest.approx(row["q"])
    both = data.search_hits(bundle, "3")
    assert both["side"].to_list() == ["a", "b"]


def test_selection_rows_list_the_pairs_of_the_selection_and_unpaired_features(planted) -> None:
    p, bundle = planted
    table = data.pairs_table(bundle)
    a, b = (int(x) for x in p.pairs[0])
    dead = int(p.dead_a[0])
    rows = data.selection_rows(table, {"a": (a, dead), "b": ()})
    assert (a, b) in set(zip(rows["feature_a"].to_list(), rows["feature_b"].to_list(), strict=True))
    assert rows.filter(pl.col("feature_a") == dead)["status"].to_list() == ["no pair"]


def _bundle_path(bundle: Bundle) -> Path:
    return Path(bundle.path)


def test_a_bundle_without_matches_still_has_a_table_and_no_orphans(tmp_path: Path) -> None:
    from tests.core._tiny_bundle import ASSIGNMENT, planted_comet
    from tests.core._tiny_bundle import write_bundle as write_tiny

    texts, a, b = planted_comet()
    bundle = open_bundle(write_tiny(tmp_path / "t", texts, a, b, assignment=ASSIGNMENT))
    table = data.pairs_table(bundle)
    assert table.height == 3 and set(table["status"]) == {"kept", "dropped"}
    assert data.orphan_frame(bundle).height == 0
