"""Discovery scoring against hand computations, rank drift, and the whole query on a tiny bundle."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.dashboards.read import load_dashboards
from core.dashboards.settings import DashboardSettings
from core.dashboards.stage import build_dashboards
from core.errors import BundleError, DashboardError, SpecError
from core.explore.discover import (
    DISCOVERY_COLUMNS,
    DRIFT_COLUMNS,
    RANKED_COLUMNS,
    DiscoverSettings,
    DiscoveryCache,
    LayerCodes,
    TextCodes,
    background_mean,
    compute_rank_drift,
    discover_from_codes,
    discovery_cache_key,
    load_codes_window,
    score_features,
    select_tokens,
)
from tests.core._tiny_bundle import ASSIGNMENT, write_bundle
from tests.core._tiny_bundle import planted_comet as _planted

# 4 tokens x 4 features; feature 3 never fires
DENSE = np.array(
    [
        [1.0, 2.0, 0.0, 0.0],
        [0.0, 2.0, 0.0, 0.0],
        [3.0, 2.0, 0.0, 0.0],
        [0.0, 2.0, 8.0, 0.0],
    ],
    np.float32,
)
TAU = np.array([2.0, 1.0, 8.0, 1.0])
BACKGROUND = np.array([0.5, 1.9, 0.0, 0.0])


def _rank(mode: str, **kwargs) -> pl.DataFrame:
    return score_features(
        SparseCodes.from_dense(DENSE),
        TAU,
        DiscoverSettings(score_mode=mode, **{"min_coverage_pct": 0.0, **kwargs}),
        background=BACKGROUND,
    )


def test_every_score_mode_matches_a_hand_computation():
    # by hand: mean f0 = 4/4 = 1, f1 = 8/4 = 2, f2 = 8/4 = 2; max 3, 2, 8;
    # coverage (act > tau): f0 1/4 (3 > 2), f1 4/4, f2 0/4 (8 is not > 8);
    # mean_x_coverage 0.25, 2, 0; selectivity 1 - 0.5, 2 - 1.9, 2 - 0 = 0.5, 0.1, 2
    frame = _rank("mean")
    assert frame.columns == list(RANKED_COLUMNS)
    assert frame["feature"].to_list() == [1, 2, 0]  # f1 and f2 tie at 2: lower id first
    np.testing.assert_allclose(frame["score"], [2.0, 2.0, 1.0])
    np.testing.assert_allclose(frame["coverage"], [1.0, 0.0, 0.25])
    np.testing.assert_allclose(frame["max"], [2.0, 8.0, 3.0])
    np.testing.assert_allclose(frame["selectivity"], [0.1, 2.0, 0.5])
    assert frame["rank"].to_list() == [1, 2, 3]
    assert frame["top_token"].to_list() == [0, 3, 2]  # f1 is 2.0 everywhere: the first token
    assert _rank("max")["feature"].to_list() == [2, 0, 1]
    mxc = _rank("mean_x_coverage")
    assert mxc["feature"].to_list() == [1, 0, 2]
    np.testing.assert_allclose(mxc["score"], [2.0, 0.25, 0.0])
    sel = _rank("selectivity")
    assert sel["feature"].to_list() == [2, 0, 1]
    np.testing.assert_allclose(sel["score"], [2.0, 0.5, 0.1])


def test_gates_restriction_and_token_selection():
    # min_coverage_pct is a percent: f1 covers 100%, f0 25%, f2 0%
    assert _rank("mean_x_coverage", min_coverage_pct=50.0)["feature"].to_list() == [1]
    assert _rank("mean_x_coverage", min_coverage_pct=25.0)["feature"].to_list() == [1, 0]
    # the spec's default 0.5% drops only the feature never above tau here
    assert _rank("mean_x_coverage", min_coverage_pct=0.5)["feature"].to_list() == [1, 0]
    assert score_features(
        SparseCodes.from_dense(DENSE), TAU, DiscoverSettings(score_mode="max", min_coverage_pct=0.0), restrict=(0, 2)
    )["feature"].to_list() == [2, 0]
    # code-row norms^2: 5, 4, 13, 68 -> the top token is row 3, the top two rows 2 and 3
    codes = SparseCodes.from_dense(DENSE)
    assert select_tokens(codes, 1).tolist() == [3]
    assert select_tokens(codes, 2).tolist() == [2, 3]
    assert select_tokens(codes, None).tolist() == [0, 1, 2, 3]
    one = score_features(codes, TAU, DiscoverSettings(score_mode="mean", topk_tokens_per_seq=2, min_coverage_pct=0))
    # over rows 2 and 3: mean f0 = 3/2, f1 = 2, f2 = 4; top tokens keep their positions in the text
    assert one["feature"].to_list() == [2, 1, 0]
    np.testing.assert_allclose(one["mean"], [4.0, 2.0, 1.5])
    assert one["top_token"].to_list() == [3, 2, 2]
    assert one["selectivity"].null_count() == 3  # no background given
    # with a causal LM's next-token entropy the informative tokens are the least predictable ones
    entropy = np.array([2.0, 0.1, 0.5, 3.0])
    assert select_tokens(codes, 2, entropy).tolist() == [0, 3]
    by_entropy = score_features(
        codes, TAU, DiscoverSettings(score_mode="mean", topk_tokens_per_seq=2, min_coverage_pct=0), entropy=entropy
    )
    # rows 0 and 3: mean f0 = 1/2, f1 = 2, f2 = 4
    np.testing.assert_allclose(by_entropy.sort("feature")["mean"], [0.5, 2.0, 4.0])
    norm = DiscoverSettings(score_mode="mean", topk_tokens_per_seq=2, min_coverage_pct=0, token_filter="norm")
    assert score_features(codes, TAU, norm, entropy=entropy)["top_token"].to_list() == [3, 2, 2]
    with pytest.raises(DashboardError, match="token_filter 'entropy'"):
        score_features(codes, TAU, DiscoverSettings(topk_tokens_per_seq=2, token_filter="entropy"))


def test_rank_drift_by_hand():
    ranked_a = pl.DataFrame({"feature": [5, 1, 7], "rank": [1, 2, 3], "score": [3.0, 2.0, 1.0]})
    ranked_b = pl.DataFrame({"feature": [2, 9, 4, 3], "rank": [1, 2, 3, 4], "score": [4.0, 3.0, 2.0, 1.0]})
    assignment = pl.DataFrame(
        {
            "feature_a": [5, 1, 7, 0, 6],
            "feature_b": [4, 2, 8, 9, 3],
            "corr": [0.5, 0.6, 0.7, 0.8, 0.9],
            "kept": [True, True, True, True, False],
        }
    )
    drift = compute_rank_drift(ranked_a, ranked_b, assignment, top_x=2)
    assert drift.columns == list(DRIFT_COLUMNS)
    # (5,4): log2(3/1); (0,9): a0 did not fire -> rank 4: log2(2/4) = -1; (1,2): log2(1/2) = -1;
    # (7,8): neither in the top 2; (6,3): not kept
    assert list(zip(drift["feature_a"], drift["feature_b"], strict=True)) == [(5, 4), (0, 9), (1, 2)]
    np.testing.assert_allclose(drift["drift"], [np.log2(3.0), -1.0, -1.0])
    assert drift["rank_a"].to_list() == [1, None, 2]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    texts, a, b = _planted()
    path = write_bundle(tmp_path_factory.mktemp("discover") / "b", texts, a, b, doc_len=100, assignment=ASSIGNMENT)
    return build_dashboards(path, DashboardSettings(chunk_units=128))


def _text_codes(n_a: int = 6, n_b: int = 5) -> dict[str, TextCodes]:
    """'the comet sat on a comet': a3 fires on both comets at 3.0, b2 on the first at 5.0."""
    text = "the comet sat on a comet"
    tokens = text.split(" ")
    starts = np.cumsum([0] + [len(t) + 1 for t in tokens[:-1]])
    offsets = np.stack([starts, starts + np.array([len(t) for t in tokens])], axis=1)
    a = np.zeros((6, n_a), np.float32)
    b = np.zeros((6, n_b), np.float32)
    a[[1, 5], 3] = 3.0
    a[:, 0] = 0.1
    b[1, 2] = 5.0
    b[:, 4] = 0.5
    return {
        "a": TextCodes(SparseCodes.from_dense(a), tuple(tokens), text, offsets),
        "b": TextCodes(SparseCodes.from_dense(b), tuple(tokens), text, offsets),
    }


def test_discover_ranks_both_sides_with_partners_spans_and_examples(bundle, tmp_path):
    settings = DiscoverSettings(score_mode="max", span_tokens=1, return_top_x=2, min_coverage_pct=0)
    result = discover_from_codes(bundle, _text_codes(), settings)
    table = result.table
    assert table.columns[: len(DISCOVERY_COLUMNS)] == list(DISCOVERY_COLUMNS)
    assert list(zip(table["side"], table["feature_id"], strict=True)) == [("a", 3), ("a", 0), ("b", 2), ("b", 4)]
    first = table.row(0, named=True)
    assert first["max"] == 3.0 and first["partner"] == 2 and first["partner_corr"] == pytest.approx(0.9)
    assert first["top_span_text"] == "the comet sat" and first["top_token_text"] == "comet"
    assert first["hook"] == "blocks.1.hook_resid_post.a"
    # a3's corpus threshold is its 95th percentile (every corpus activation is 2.0): both comets pass
    assert first["tau"] == pytest.approx(2.0) and first["coverage"] == pytest.approx(2 / 6)
    # selectivity: background mean of a3 over the (whole, 800-unit) corpus is 6 x 2.0 / 800
    assert first["selectivity"] == pytest.approx(6 / 6 - 12 / 800)
    ex = result.examples.filter((pl.col("side") == "a") & (pl.col("feature") == 3))
    assert ex.height == 3 and ex["act"].to_list() == [2.0, 2.0, 2.0]
    # drift: a3 -> b2 (rank 1 and 1), a3 -> b4 (1 and 2), a0 -> b1 (not kept)
    assert result.drift.select("feature_a", "feature_b").rows() == [(3, 4), (3, 2)]
    # the strongest token of a3 in the text: both comets at 3.0, the earlier first, as spans with positions
    assert first["top_spans"] == [
        {"text": "the comet sat", "position": [0, 13], "act": 3.0},
        {"text": "a comet", "position": [17, 24], "act": 3.0},
    ]
    assert first["layer"] == 1 and first["stream"] == "resid_post" and first["rank"] == 1
    # a3 has two kept partners; its rank_drift is the larger one: b4 ranks 2nd, log2(2 / 1)
    assert first["rank_drift"] == pytest.approx(1.0)
    out = json.loads(result.write(tmp_path / "r.json").read_text())
    assert [g["side"] for g in out["sides"]] == ["a", "b"]
    side_a = out["sides"][0]
    assert set(side_a) == {"side", "model_id", "sae_id", "analyzed", "features"}
    assert side_a["analyzed"] == {"mode": "max", "tokens": 6, "layers": [1]}
    feature = side_a["features"][0]
    spec_keys = {"feature_id", "layer", "stream", "score", "scores", "proto_label", "top_spans"}
    assert spec_keys <= set(feature)
    assert set(feature["scores"]) == {"mean", "coverage", "max", "selectivity"}
    assert set(feature["top_spans"][0]) == {"text", "position", "act"}
    assert feature["examples"][0]["act"] == 2.0 and out["settings"]["score_mode"] == "max"
    assert {"side", "partner", "partner_corr", "rank_drift"} <= set(feature)
    csv = pl.read_csv(result.write(tmp_path / "r.csv"))
    assert csv.columns == list(DISCOVERY_COLUMNS) and csv.height == 4
    assert csv.columns[:10] == [
        "feature_id",
        "layer",
        "stream",
        "score",
        "mean",
        "coverage",
        "max",
        "selectivity",
        "proto_label",
        "top_span_text",
    ]
    with pytest.raises(DashboardError, match=".json or .csv"):
        result.write(tmp_path / "r.txt")


def test_default_mode_and_one_sided_query(bundle):
    result = discover_from_codes(bundle, {"b": _text_codes()["b"]})
    assert set(result.table["side"]) == {"b"} and result.drift.height == 0
    # mean_x_coverage: b2 passes its tau (3.0 in the corpus) on one token of six
    row = result.table.filter(pl.col("feature_id") == 2).row(0, named=True)
    assert row["score"] == pytest.approx((5.0 / 6) * (1 / 6))


def test_cache_key_and_cache(bundle):
    settings = DiscoverSettings()
    key = discovery_cache_key("some text", settings, bundle)
    assert key == discovery_cache_key("some text", DiscoverSettings(), bundle)
    assert key != discovery_cache_key("other text", settings, bundle)
    assert key != discovery_cache_key("some text", DiscoverSettings(score_mode="max"), bundle)
    assert key != discovery_cache_key("some text", settings, bundle, extra={"gen_tokens": 8})
    cache = DiscoveryCache(max_items=2)
    result = discover_from_codes(bundle, _text_codes())
    assert result.key == discovery_cache_key(result.text, result.settings, bundle)
    cache.put("k1", result)
    cache.put("k2", result)
    assert cache.get("k1") is result  # k1 is now the most recent
    cache.put("k3", result)
    assert cache.get("k2") is None and len(cache) == 2


def test_background_reads_only_a_window(bundle):
    codes = bundle.codes("a")
    window = load_codes_window(bundle, "a", 100, 250)
    np.testing.assert_array_equal(window.to_dense(), codes.to_dense()[100:250])
    whole = background_mean(bundle, "a", 10_000, seed=0)
    np.testing.assert_allclose(whole, codes.to_dense().mean(axis=0, dtype=np.float64), rtol=1e-6)
    assert load_dashboards(bundle, "a").collect().height == 6


def test_bad_inputs(bundle, tmp_path):
    with pytest.raises(SpecError, match="Score mode 'best' is unknown"):
        DiscoverSettings(score_mode="best")
    with pytest.raises(SpecError, match="min_coverage_pct is a percent"):
        DiscoverSettings(min_coverage_pct=200.0)
    with pytest.raises(SpecError, match="Label catalog"):
        DiscoverSettings(label_catalog=str(tmp_path / "nope.csv"))
    with pytest.raises(DashboardError, match="restrict_features names feature 9"):
        discover_from_codes(bundle, _text_codes(), DiscoverSettings(restrict_features=(1, 9)))
    with pytest.raises(DashboardError, match="restrict_features_a names feature 6"):
        discover_from_codes(bundle, _text_codes(), DiscoverSettings(restrict_features_a=(1, 6)))
    empty = TextCodes(SparseCodes.empty(0, 6), ())
    with pytest.raises(DashboardError, match="no tokens"):
        discover_from_codes(bundle, {"a": empty})
    with pytest.raises(DashboardError, match="7 features"):
        discover_from_codes(bundle, {"a": _text_codes(n_a=7)["a"]})
    texts, a, b = _planted()
    bare = open_bundle(write_bundle(tmp_path / "bare", texts, a, b))
    with pytest.raises(BundleError, match="no dashboards"):
        discover_from_codes(bare, _text_codes())


def _layer(n: int = 4) -> LayerCodes:
    base = _text_codes()["a"]
    dense = np.zeros((6, n), np.float32)
    dense[1, 0] = 9.0  # stronger than anything of the bundle's SAE: first when merged
    dense[[2, 3], 2] = 1.0
    codes = TextCodes(SparseCodes.from_dense(dense), base.tokens, base.text, base.offsets)
    return LayerCodes(
        side="a",
        sae_id="local:/saes/layer2",
        hook="blocks.2.hook_resid_post",
        codes=codes,
        tau=np.full(n, 0.5),
        background=np.zeros(n),
        top_tokens=(("comet", "comets", "Comet"), (), ("sat", "on"), ()),
    )


def test_several_saes_of_one_model_rank_apart_or_merged(bundle, tmp_path):
    settings = DiscoverSettings(score_mode="max", min_coverage_pct=0.0, return_top_x=3)
    apart = discover_from_codes(bundle, _text_codes(), settings, layers=[_layer()])
    out = apart.to_json_dict()
    assert [(g["side"], g["analyzed"]["layers"]) for g in out["sides"]] == [("a", [1]), ("b", [1]), ("a", [2])]
    layer2 = out["sides"][2]
    assert layer2["sae_id"] == "local:/saes/layer2"
    assert [f["feature_id"] for f in layer2["features"]] == [0, 2]
    assert layer2["features"][0]["proto_label"] == "comet / comets / Comet"
    assert layer2["features"][0]["partner"] is None and layer2["features"][0]["examples"] == []
    merged = discover_from_codes(
        bundle,
        _text_codes(),
        DiscoverSettings(score_mode="max", min_coverage_pct=0, return_top_x=3, merge_across_layers=True),
        layers=[_layer()],
    )
    groups = merged.to_json_dict()["sides"]
    assert [(g["side"], g["analyzed"]["layers"]) for g in groups] == [("a", [1, 2]), ("b", [1])]
    ranked = [(f["layer"], f["feature_id"], f["rank"]) for f in groups[0]["features"]]
    # max scores: layer 2 f0 9.0, layer 1 f3 3.0, then layer 1 f0 0.1 and layer 2 f2 1.0 -> 1.0 first
    assert ranked == [(2, 0, 1), (1, 3, 2), (2, 2, 3)]
    assert "layer2" in groups[0]["sae_id"] and ", " in groups[0]["sae_id"]


def test_a_label_catalog_wins_over_proto_labels(bundle, tmp_path):
    catalog = tmp_path / "labels.csv"
    pl.DataFrame({"feature_id": [3, 3], "side": ["a", "b"], "label": ["comet detector", "not this side"]}).write_csv(
        catalog
    )
    settings = DiscoverSettings(score_mode="max", min_coverage_pct=0.0, label_catalog=str(catalog))
    table = discover_from_codes(bundle, _text_codes(), settings, layers=[_layer()]).table
    a3 = table.filter((pl.col("side") == "a") & (pl.col("feature_id") == 3) & (pl.col("layer") == 1)).row(0, named=True)
    assert a3["proto_label"] == "comet detector"
    layer = table.filter(pl.col("layer") == 2).sort("feature_id")
    assert layer["proto_label"].to_list() == ["comet / comets / Comet", "sat / on"]
    off = discover_from_codes(bundle, _text_codes(), DiscoverSettings(attach_examples=False, min_coverage_pct=0))
    assert off.examples.height == 0 and all(not s for s in off.table["top_spans"].to_list())
