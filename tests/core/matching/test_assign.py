"""Pairings, summaries, splits and orphans, and the bundle stage end to end."""

from __future__ import annotations

import itertools
import json

import numpy as np
import polars as pl
import pytest
from scipy.optimize import linear_sum_assignment

from core.bundle.reader import open_bundle
from core.errors import MatchingError, SpecError
from core.matching.assign import (
    assign_hungarian,
    assign_many_to_one,
    assign_mutual,
    assign_sparse,
    compute_assignment,
    compute_orphans,
    compute_splits,
    greedy_one_to_one,
    summarize_pairs,
)
from core.matching.correlate import TopK, compute_correlation
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from tests.core.planted import build_planted_config, make_planted, write_bundle


def _topk_from_dense(r: np.ndarray, k: int) -> tuple[TopK, TopK]:
    def one(m: np.ndarray) -> TopK:
        filled = np.where(np.isnan(m), -np.inf, m)
        idx = np.argsort(-filled, axis=1, kind="stable")[:, :k]
        score = np.take_along_axis(filled, idx, 1)
        absent = ~np.isfinite(score)
        return TopK(np.where(absent, -1, idx), np.where(absent, np.nan, score), np.zeros_like(idx))

    return one(r), one(r.T)


@pytest.fixture(scope="module")
def planted():
    return make_planted(build_planted_config())


@pytest.fixture(scope="module")
def planted_result(planted):
    return compute_correlation(planted.codes_a, planted.codes_b, top_k=5, keep_dense=True)


def test_greedy_matches_the_hand_worked_example():
    # B -> best A: b0->a1 (0.5), b1->a0 (0.9), b2->a1 (0.8), b3->a2 (0.05, below threshold), b4->a0 (0.3).
    # Walk B by id: b0 takes a1, b1 takes a0, b2 finds a1 taken (even though 0.8 > 0.5: the walk is
    # by id, as published), b3 was already dropped and takes nothing, b4 finds a0 taken.
    pairs = pl.DataFrame(
        {
            "feature_a": [0, 1, 2, 1, 0],
            "feature_b": [4, 2, 3, 0, 1],
            "corr": [0.3, 0.8, 0.05, 0.5, 0.9],
            "kept": [True, True, False, True, True],
            "reason": [None, None, "below_threshold", None, None],
            "reasons": [[], [], ["below_threshold"], [], []],
        }
    )
    out = greedy_one_to_one(pairs)
    assert out["feature_b"].to_list() == [0, 1, 2, 3, 4]
    assert out["kept"].to_list() == [True, True, False, False, False]
    assert out["reason"].to_list() == [None, None, "duplicate_a", "below_threshold", "duplicate_a"]
    # without filter columns every row starts kept
    bare = greedy_one_to_one(pairs.select("feature_a", "feature_b", "corr"))
    assert bare["kept"].to_list() == [True, True, False, True, False]


def test_hungarian_agrees_with_scipy():
    rng = np.random.default_rng(0)
    r = rng.uniform(-0.2, 1.0, (9, 12))
    r[3] = np.nan  # dead A feature
    r[:, 7] = np.nan  # dead B feature
    out = assign_hungarian(r)
    live_a = [i for i in range(9) if i != 3]
    live_b = [j for j in range(12) if j != 7]
    rows, cols = linear_sum_assignment(r[np.ix_(live_a, live_b)], maximize=True)
    want = {(live_a[i], live_b[j]) for i, j in zip(rows, cols, strict=True)}
    assert set(zip(out["feature_a"], out["feature_b"], strict=True)) == want
    assert out["corr"].sum() == pytest.approx(r[np.ix_(live_a, live_b)][rows, cols].sum())


def test_sparse_one_to_one_is_the_best_matching_on_the_candidate_graph():
    rng = np.random.default_rng(1)
    t = 0.2
    for trial in range(5):
        r = rng.uniform(-0.3, 1.0, (5, 4))
        ab, ba = _topk_from_dense(r, 2)
        out = assign_sparse(ab, ba, unmatched_value=t)
        edges = {(a, int(ab.index[a, j])) for a in range(5) for j in range(2) if ab.score[a, j] > t} | {
            (int(ba.index[b, j]), b) for b in range(4) for j in range(2) if ba.score[b, j] > t
        }
        # brute force over every matching inside the candidate graph, unmatched allowed
        best = 0.0
        for size in range(1, 5):
            for subset in itertools.combinations(sorted(edges), size):
                a_s, b_s = [e[0] for e in subset], [e[1] for e in subset]
                if len(set(a_s)) == size and len(set(b_s)) == size:
                    best = max(best, sum(r[a, b] - t for a, b in subset))
        got = sum(r[a, b] - t for a, b in zip(out["feature_a"], out["feature_b"], strict=True))
        assert got == pytest.approx(best), trial
        assert out["feature_a"].n_unique() == out.height and out["feature_b"].n_unique() == out.height


def test_sparse_agrees_with_hungarian_when_the_graph_is_complete():
    rng = np.random.default_rng(2)
    r = rng.uniform(0.3, 1.0, (6, 6))
    ab, ba = _topk_from_dense(r, 6)
    sparse = assign_sparse(ab, ba, unmatched_value=0.0)
    dense = assign_hungarian(r)
    assert sparse["corr"].sum() == pytest.approx(dense["corr"].sum())


def test_many_to_one_and_mutual():
    r = np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.3], [0.1, 0.7, 0.6]])
    ab, ba = _topk_from_dense(r, 2)
    assert assign_many_to_one(ab, "a->b")["feature_b"].to_list() == [0, 0, 1]
    assert assign_many_to_one(ba, "b->a")["feature_a"].to_list() == [0, 2, 2]
    mutual = assign_mutual(ab, ba)
    assert list(zip(mutual["feature_a"], mutual["feature_b"], strict=True)) == [(0, 0), (2, 1)]


def test_planted_answers(planted, planted_result):
    truth = {(int(a), int(b)) for a, b in planted.pairs}
    for method in ("mutual", "hungarian", "sparse"):
        pairs = compute_assignment(method, planted_result.ab, planted_result.ba, planted_result.dense)
        got = set(zip(pairs["feature_a"], pairs["feature_b"], strict=True))
        assert truth <= got, method
    splits = compute_splits(planted_result.ab, planted_result.ba, min_corr=0.3)
    hubs = splits.filter(pl.col("side") == "a")
    for hub, parts in planted.splits.items():
        group = hubs.filter(pl.col("feature") == hub)
        assert set(group["partner"].to_list()) == set(parts)
        assert group["reciprocal"].all()
    assert set(hubs["feature"].unique().to_list()) == set(planted.splits)
    orphans = compute_orphans(
        planted_result.ab,
        planted_result.ba,
        planted_result.moments_a.is_dead,
        planted_result.moments_b.is_dead,
        min_corr=0.1,
    )
    assert set(planted.orphans_a) <= set(orphans.filter(pl.col("side") == "a")["feature"].to_list())
    assert set(planted.orphans_b) <= set(orphans.filter(pl.col("side") == "b")["feature"].to_list())
    matched_a = {a for a, _ in truth} | set(planted.splits)
    assert not matched_a & set(orphans.filter(pl.col("side") == "a")["feature"].to_list())
    assert not set(planted.dead_a) & set(orphans["feature"].filter(orphans["side"] == "a").to_list())


def test_summary_statistics():
    pairs = pl.DataFrame({"corr": [0.05, 0.2, 0.4, 0.9], "kept": [False, True, True, True]})
    s = summarize_pairs(pairs, "x", threshold=0.1, bins=4)
    assert s.n_pairs == 4 and s.n_kept == 3
    assert s.mean_corr == pytest.approx(0.5) and s.median_corr == pytest.approx(0.4)
    assert s.share_above == pytest.approx(0.75)
    assert s.hist_counts == (0, 0, 2, 1)
    assert json.dumps(s.to_dict())


def test_hungarian_without_a_dense_matrix_is_a_user_error(planted_result):
    with pytest.raises(MatchingError, match="sparse"):
        compute_assignment("hungarian", planted_result.ab, planted_result.ba, None)


@pytest.mark.parametrize(
    "overrides",
    [{"top_k": 0}, {"min_corr": 1.5}, {"method": "best"}, {"memory_mb": 0}, {"alpha": 0.0}, {"max_freq": 0.0}],
)
def test_settings_validate(overrides):
    with pytest.raises(SpecError, match="Matching setting"):
        MatchSettings(**overrides)


def test_build_matching_writes_the_contract(tmp_path, planted):
    tokens_a = [[f"w{i}"] for i in range(planted.codes_a.n_features)]
    tokens_a[int(planted.pairs[0, 0])] = ["<bos>", "x"]  # this pair must be dropped as non-concept
    path = write_bundle(
        tmp_path / "bundle",
        planted.codes_a,
        planted.codes_b,
        planted.docs,
        planted.w_dec_a,
        planted.w_dec_b,
        top_tokens_a=tokens_a,
    )
    seen: list[str] = []
    bundle = build_matching(path, MatchSettings(top_k=3), device="cpu", progress=lambda s, d, t: seen.append(s))
    assert {"correlate", "significance", "assign"} <= set(seen)
    assert bundle.has("matches") and bundle.has("assignment")
    matches = bundle.matches().collect()
    for col in ("feature_a", "feature_b", "direction", "rank", "corr", "cos", "jaccard", "n_coactive", "is_mutual"):
        assert col in matches.columns
    assert set(matches["direction"].unique()) == {"a->b", "b->a"}
    assert matches["cos"].null_count() == 0
    assignment = bundle.assignment().collect()
    assert assignment.columns[:6] == ["feature_a", "feature_b", "method", "corr", "kept", "reason"]
    assert set(assignment["method"].unique()) == {"sparse"}  # the featurebridge preset's pairing
    kept = assignment.filter("kept")
    assert kept["feature_a"].n_unique() == kept.height == kept["feature_b"].n_unique()  # 1-1
    truth = {(int(a), int(b)) for a, b in planted.pairs[1:]}
    assert truth <= set(zip(kept["feature_a"], kept["feature_b"], strict=True))
    dropped = assignment.filter(pl.col("feature_a") == int(planted.pairs[0, 0]))
    assert dropped["reason"].to_list() == ["nonconcept_a"]
    assert assignment.filter(~pl.col("kept"))["reason"].null_count() == 0
    record = open_bundle(path).manifest["matching"]
    assert record["settings"]["top_k"] == 3 and record["settings"]["method"] == "sparse"
    assert record["preset"] == "custom"  # top_k 3 is not the featurebridge preset's 10
    assert record["summary"]["n_split_groups_a"] == len(planted.splits)
    assert "hungarian" in record["summary"]["methods"]
    # recompute with another method: the parts are replaced
    again = build_matching(path, MatchSettings(top_k=3, method="greedy", require_significant=False), device="cpu")
    assert set(again.assignment().collect()["method"].unique()) == {"greedy"}


def test_build_matching_with_different_widths_leaves_cos_null(tmp_path, planted):
    w_b = np.random.default_rng(0).standard_normal((planted.codes_b.n_features, 7)).astype(np.float32)
    path = write_bundle(tmp_path / "b2", planted.codes_a, planted.codes_b, planted.docs, planted.w_dec_a, w_b)
    bundle = build_matching(path, MatchSettings(top_k=2, method="mutual"), device="cpu")
    assert bundle.matches().collect()["cos"].null_count() == bundle.matches().collect().height
    assert bundle.assignment().collect()["cos"].null_count() > 0
