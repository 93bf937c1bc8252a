"""Pair evidence: top tokens against a plain Python reference, the combined score by hand, split groups."""

from __future__ import annotations

from collections import Counter

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.matching.evidence import (
    FeatureTokens,
    combined_score,
    compute_feature_tokens,
    compute_pair_evidence,
    match_note,
    pair_token_lists,
    split_group,
    unit_token_ids,
)
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from core.tokens import normalize_token
from tests.core.planted import build_planted_config, make_planted, write_bundle


def _reference_tokens(dense: np.ndarray, texts: list[str], f: int) -> list[tuple[str, int]]:
    """SplatNLP's rule written out: top 10% of the firings (at least 1), counted, 50 most frequent."""
    fired = np.flatnonzero(dense[:, f] > 0)
    if fired.size == 0:
        return []
    order = fired[np.lexsort((fired, -dense[fired, f]))][: max(1, fired.size // 10)]
    counts = Counter(normalize_token(texts[u]) for u in order)
    counts.pop("", None)
    return sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:50]


def test_unit_token_ids_normalise_and_skip_empty_texts():
    ids, vocab = unit_token_ids(pl.Series(["Cat", " cat", "##cat", "Dog", "  ", "", "ĠDog"]))
    assert vocab == ("cat", "dog")
    assert ids.tolist() == [0, 0, 0, 1, -1, -1, 1]
    ids, vocab = unit_token_ids(pl.Series(["Cat", "cat"]), fold_case=False)
    assert vocab == ("Cat", "cat") and ids.tolist() == [0, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_feature_tokens_equal_the_plain_reference(seed):
    rng = np.random.default_rng(seed)
    n, f = 3000, 25
    words = ["alpha", "Beta", "beta", "gamma", " ", "delta", "eps"] + [f"w{i}" for i in range(80)]
    texts = [str(w) for w in rng.choice(words, n)]
    dense = np.where(rng.random((n, f)) < rng.uniform(0.001, 0.3, f), rng.exponential(1.0, (n, f)), 0.0)
    dense[:, 3] = 0.0  # never fires
    dense[:, 4] = 0.0
    dense[:40, 4] = 1.0  # ties everywhere: the earlier units win
    codes = SparseCodes.from_dense(dense.astype(np.float32))
    ids, vocab = unit_token_ids(pl.Series(texts))
    tokens = compute_feature_tokens(codes, ids, vocab)
    dense32 = codes.to_dense()
    for j in range(f):
        expected = _reference_tokens(dense32, texts, j)
        assert list(zip(tokens.tokens(j), tokens.counts(j), strict=True)) == expected, j
    assert tokens.n_top[3] == 0 and tokens.n_top[4] == 4
    # the frame round trip keeps every list
    back = FeatureTokens.from_frame(tokens.to_frame())
    assert all(back.tokens(j) == tokens.tokens(j) and back.counts(j) == tokens.counts(j) for j in range(f))


def test_pair_evidence_equals_set_arithmetic():
    rng = np.random.default_rng(3)
    n = 2000
    texts = [f"t{i}" for i in rng.integers(0, 30, n)]
    ids, vocab = unit_token_ids(pl.Series(texts))
    a = SparseCodes.from_dense(np.where(rng.random((n, 12)) < 0.2, rng.random((n, 12)), 0).astype(np.float32))
    b = SparseCodes.from_dense(np.where(rng.random((n, 9)) < 0.2, rng.random((n, 9)), 0).astype(np.float32))
    ta, tb = compute_feature_tokens(a, ids, vocab), compute_feature_tokens(b, ids, vocab)
    pa, pb = np.repeat(np.arange(12), 9), np.tile(np.arange(9), 12)
    corr = rng.uniform(-0.5, 1.0, pa.size)
    ev = compute_pair_evidence(ta, tb, pa, pb, corr)
    for i, (x, y) in enumerate(zip(pa, pb, strict=True)):
        sa, sb = set(ta.tokens(int(x))), set(tb.tokens(int(y)))
        jac = len(sa & sb) / len(sa | sb) if sa | sb else 0.0
        assert ev["token_overlap"][i] == pytest.approx(jac)
        assert ev["n_shared_tokens"][i] == len(sa & sb)
        assert ev["combined_score"][i] == pytest.approx(0.4 * jac + 0.6 * corr[i])
        shared, only_a, only_b = pair_token_lists(ta, tb, int(x), int(y))
        assert set(shared) == sa & sb and set(only_a) == sa - sb and set(only_b) == sb - sa


def test_combined_score_and_note_by_hand_with_splatnlp_defects_fixed():
    # 0.4 * 0.5 + 0.6 * 0.5 = 0.5: not above 0.5, so Good (boundaries are strict, as SplatNLP's)
    assert combined_score(0.5, 0.5) == pytest.approx(0.5)
    assert match_note([0.5, 0.51, 0.3, 0.31, 0.1, 0.11, -0.2]) == [
        "Good",
        "Strong",
        "Moderate",
        "Good",
        "Weak",
        "Moderate",
        "Weak",
    ]
    # SplatNLP scores r <= 0 by the overlap alone: overlap 1 and r = -0.6 would read Strong (1.0);
    # here the negative r counts: 0.4 - 0.36 = 0.04, Weak
    assert combined_score(1.0, -0.6) == pytest.approx(0.04)
    assert match_note(combined_score(1.0, -0.6)) == ["Weak"]
    overlap = np.linspace(0, 1, 11)
    assert (combined_score(overlap, -1e-9) <= 0.4).all()


def test_split_group_badge_and_distinct_tokens():
    vocab = ("five", "four", "one", "three", "two")
    # partner features 0..4 of the other side; tokens by id into vocab
    ptr = np.array([0, 2, 3, 4, 5, 6])
    token = np.array([2, 4, 4, 3, 1, 0])  # p0: one, two; p1: two; p2: three; p3: four; p4: five
    tokens = FeatureTokens(ptr, token, np.ones(6, np.int64), np.ones(5, np.int64), vocab)
    partners = pl.DataFrame({"partner": [0, 1, 2, 3, 4], "combined_score": [0.6, 0.4, 0.3, 0.2, 0.05]})
    group, k = split_group(partners, tokens, min_score=0.1)
    assert group["partner"].to_list() == [0, 1, 2, 3]
    assert k == 4  # more than 3 partners pass 0.1: "decomposed into 4"
    assert group["distinct_tokens"].to_list() == [["one"], [], ["three"], ["four"]]
    group, k = split_group(partners.head(3), tokens, min_score=0.35)
    assert group["partner"].to_list() == [0, 1] and k is None


def test_the_stage_writes_evidence_for_every_listed_pair(tmp_path):
    planted = make_planted(build_planted_config(n_units=3000))
    rng = np.random.default_rng(0)
    texts = [str(w) for w in rng.choice(["red", "green", "blue", "cyan", "Red"], planted.codes_a.n_rows)]
    path = write_bundle(
        tmp_path / "b", planted.codes_a, planted.codes_b, planted.docs, planted.w_dec_a, planted.w_dec_b, texts=texts
    )
    bundle = build_matching(path, MatchSettings(), device="cpu")
    assert bundle.has("feature_tokens")
    ta = FeatureTokens.from_frame(bundle.feature_tokens("a").collect())
    tb = FeatureTokens.from_frame(bundle.feature_tokens("b").collect())
    for frame in (bundle.matches().collect(), bundle.assignment().collect()):
        for col in ("mu", "k_over_mu", "neglog10_p", "q", "flags", "token_overlap", "combined_score", "note"):
            assert col in frame.columns, col
        again = compute_pair_evidence(
            ta, tb, frame["feature_a"].to_numpy(), frame["feature_b"].to_numpy(), frame["corr"].to_numpy()
        )
        assert np.allclose(again["combined_score"].to_numpy(), frame["combined_score"].to_numpy())
    matches = bundle.matches().collect()
    assert matches["mu"].null_count() == 0 and matches["neglog10_p"].null_count() == 0
    # each feature's chosen partner carries q, in both directions
    for direction in ("a->b", "b->a"):
        rows = matches.filter((pl.col("direction") == direction) & pl.col("q").is_not_null())
        own = "feature_a" if direction == "a->b" else "feature_b"
        assert rows[own].n_unique() == rows.height > 0
    assert open_bundle(path).manifest["matching"]["timings"]["evidence_s"] >= 0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_top_units_equal_a_sort_for_any_take_ties_and_dynamic_range(seed):
    from core.matching.labels import compute_top_units

    rng = np.random.default_rng(seed)
    n, f = 1500, 30
    dense = np.where(rng.random((n, f)) < rng.uniform(0.01, 0.6, f), np.exp(rng.normal(0, 12, (n, f))), 0.0)
    dense[:, 0] = np.where(rng.random(n) < 0.5, 2.0, 0.0)  # one value throughout: ties decide everything
    dense[:, 1] = np.where(rng.random(n) < 0.3, rng.choice([1.0, 1.0 + 2**-20, 3.0], n), 0.0)  # a bin shared
    dense[5, 2] = 1e30  # the rest of feature 2 sits far below its maximum (the last, clamped bin)
    codes = SparseCodes.from_dense(dense.astype(np.float32))
    d32 = codes.to_dense()
    take = rng.integers(0, 400, f)
    ptr, units = compute_top_units(codes, take)
    for j in range(f):
        fired = np.flatnonzero(d32[:, j] > 0)
        expected = fired[np.lexsort((fired, -d32[fired, j]))][: take[j]]
        assert units[ptr[j] : ptr[j + 1]].tolist() == expected.tolist(), j
    # non-positive values take the regrouping route, with the same answer
    signed = SparseCodes.from_dense(-dense.astype(np.float32))
    ptr2, units2 = compute_top_units(signed, take)
    for j in range(f):
        fired = np.flatnonzero(-d32[:, j] < 0)
        expected = fired[np.lexsort((fired, d32[fired, j]))][: take[j]]
        assert units2[ptr2[j] : ptr2[j + 1]].tolist() == expected.tolist(), j
