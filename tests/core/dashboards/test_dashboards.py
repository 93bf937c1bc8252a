"""Dashboard data: planted features and dense numpy references on small codes."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.dashboards.compute import UnitIndex, compute_side_dashboards, lookup_codes
from core.dashboards.logits import Unembedding, compute_logit_effect
from core.dashboards.read import load_dashboards, tau_from_quantiles
from core.dashboards.settings import (
    DASHBOARD_COLUMNS,
    EXAMPLE_COLUMNS,
    LOGIT_COLUMNS,
    QUANTILE_PROBS,
    DashboardSettings,
)
from core.dashboards.stage import build_dashboards
from core.errors import BundleError, DashboardError, SpecError, UserError
from tests.core._tiny_bundle import WORDS, random_codes, units_frame, write_bundle

N_UNITS = 1200
DOC_LEN = 40


@pytest.fixture(scope="module")
def texts() -> list[str]:
    rng = np.random.default_rng(1)
    return list(rng.choice(WORDS, N_UNITS))


@pytest.fixture(scope="module")
def dense() -> np.ndarray:
    return random_codes(N_UNITS, 24, 0.15, seed=2).to_dense()


@pytest.fixture(scope="module")
def side(dense, texts):
    # chunks of 97 units: many merges, chunk edges inside documents
    settings = DashboardSettings(chunk_units=97, sample_size=400)
    units = UnitIndex.from_frame(units_frame(texts, DOC_LEN))
    return compute_side_dashboards(SparseCodes.from_dense(dense), units, settings), settings


def test_columns(side):
    result, _ = side
    assert result.examples.columns == list(EXAMPLE_COLUMNS)
    assert result.features.columns == list(DASHBOARD_COLUMNS)


def test_top_examples_match_dense_reference(side, dense):
    result, settings = side
    for f in range(dense.shape[1]):
        col = dense[:, f]
        active = np.flatnonzero(col)
        # reference order: activation descending, then unit ascending
        ref = active[np.lexsort((active, -col[active]))][: settings.n_top]
        got = result.examples.filter((pl.col("feature") == f) & (pl.col("kind") == "top")).sort("rank")
        assert got["unit"].to_list() == ref.tolist()
        np.testing.assert_array_equal(got["act"].to_numpy(), col[ref])


def test_windows_hold_the_feature_activations_within_the_document(side, dense, texts):
    result, settings = side
    w = settings.window
    for row in result.examples.sample(60, seed=0).iter_rows(named=True):
        unit, f = row["unit"], row["feature"]
        doc_lo, doc_hi = (unit // DOC_LEN) * DOC_LEN, (unit // DOC_LEN + 1) * DOC_LEN
        lo, hi = max(unit - w, doc_lo), min(unit + w + 1, doc_hi)
        assert row["window_start"] == lo
        assert row["center"] == unit - lo
        assert row["window_text"] == texts[lo:hi]
        np.testing.assert_array_equal(np.asarray(row["window_acts"], np.float32), dense[lo:hi, f])
        assert row["window_acts"][row["center"]] == row["act"]
        assert row["doc"] == unit // DOC_LEN and row["pos"] == unit % DOC_LEN


def test_statistics_and_histograms_match_numpy(side, dense):
    result, settings = side
    feats = result.features.sort("feature")
    for f, row in enumerate(feats.iter_rows(named=True)):
        vals = dense[:, f][dense[:, f] != 0]
        assert row["count"] == vals.size
        assert row["freq"] == pytest.approx(vals.size / N_UNITS)
        assert row["mean_active"] == pytest.approx(vals.mean(dtype=np.float64), rel=1e-9)
        assert row["std_active"] == pytest.approx(vals.std(dtype=np.float64), rel=1e-6)
        assert row["mean_all"] == pytest.approx(dense[:, f].sum(dtype=np.float64) / N_UNITS, rel=1e-9)
        assert row["max"] == vals.max()
        width, counts = row["hist_width"], np.asarray(row["hist_counts"])
        # the width is a power of two and at least half the bins are in use
        assert np.log2(width) == int(np.log2(width))
        assert settings.hist_bins // 2 <= counts.size <= settings.hist_bins
        ref, _ = np.histogram(vals, bins=width * np.arange(counts.size + 1))
        np.testing.assert_array_equal(counts, ref)
        # the sample holds every activation here, so the quantiles are exact
        np.testing.assert_allclose(row["quantiles"], np.quantile(vals, QUANTILE_PROBS), rtol=1e-6)


def test_histogram_stays_exact_when_the_range_grows_many_times():
    # tiny values first, then ever larger ones: the bins double (merge) many times
    vals = np.concatenate([np.full(5, 1e-3), np.geomspace(1e-3, 1e4, 40), [0.5, 7.0, 7.0]]).astype(np.float32)
    codes = SparseCodes.from_dense(vals[:, None])
    units = UnitIndex.from_frame(units_frame(["x"] * vals.size, 10))
    result = compute_side_dashboards(
        codes, units, DashboardSettings(chunk_units=3, hist_bins=8, sample_size=20, n_per_quantile=4)
    )
    row = result.features.row(0, named=True)
    counts = np.asarray(row["hist_counts"])
    ref, _ = np.histogram(vals, bins=row["hist_width"] * np.arange(counts.size + 1))
    np.testing.assert_array_equal(counts, ref)
    assert counts.sum() == vals.size


def test_quantile_examples_lie_in_their_quantile(side, dense):
    result, settings = side
    quant = result.examples.filter(pl.col("kind").str.starts_with("quantile_"))
    for f in range(dense.shape[1]):
        vals = dense[:, f][dense[:, f] != 0]
        edges = np.quantile(vals, np.linspace(0, 1, settings.n_quantiles + 1))
        rows = quant.filter(pl.col("feature") == f)
        assert rows.height > 0
        for row in rows.iter_rows(named=True):
            q = int(row["kind"].split("_")[1])
            assert dense[row["unit"], f] == row["act"]
            assert edges[q] <= row["act"]
            assert row["act"] < edges[q + 1] or (q == settings.n_quantiles - 1 and row["act"] == edges[-1])
        sizes = rows.group_by("kind").len()["len"].to_numpy()
        assert sizes.max() <= settings.n_per_quantile


def test_sampled_quantiles_are_close_when_the_sample_is_smaller():
    rng = np.random.default_rng(5)
    vals = rng.uniform(0.5, 1.5, 4000).astype(np.float32)
    codes = SparseCodes.from_dense(vals[:, None])
    units = UnitIndex.from_frame(units_frame(["x"] * vals.size, 100))
    settings = DashboardSettings(chunk_units=500, sample_size=256)
    result = compute_side_dashboards(codes, units, settings)
    est = np.asarray(result.features["quantiles"][0])
    # rank error of a 256-sample quantile is about sqrt(p(1-p)/256) < 0.032; width 1 => value error
    np.testing.assert_allclose(est[1:-1], np.quantile(vals, QUANTILE_PROBS)[1:-1], atol=0.1)
    quant = result.examples.filter(pl.col("kind").str.starts_with("quantile_"))
    groups = quant.group_by("kind").agg(pl.col("act").min().alias("lo"), pl.col("act").max().alias("hi")).sort("kind")
    # groups are ordered: every example of quantile k is below every example of quantile k+1
    assert (groups["hi"].to_numpy()[:-1] <= groups["lo"].to_numpy()[1:]).all()
    assert quant.height == settings.n_quantiles * settings.n_per_quantile


def test_results_do_not_depend_on_chunking(dense, texts):
    units = UnitIndex.from_frame(units_frame(texts, DOC_LEN))
    codes = SparseCodes.from_dense(dense)
    small = compute_side_dashboards(codes, units, DashboardSettings(chunk_units=50, sample_size=64))
    whole = compute_side_dashboards(codes, units, DashboardSettings(chunk_units=N_UNITS, sample_size=64))
    assert small.examples.equals(whole.examples)
    assert small.features.drop("mean_active", "std_active", "mean_all").equals(
        whole.features.drop("mean_active", "std_active", "mean_all")
    )


def test_planted_token_feature():
    """Feature 2 fires only on 'comet', at known units with known strengths."""
    rng = np.random.default_rng(3)
    n = 600
    texts = list(rng.choice(WORDS, n))
    comet_units = [7, 95, 133, 331, 332, 450, 599]
    for u in comet_units:
        texts[u] = "comet"
    dense = np.zeros((n, 4), np.float32)
    dense[:, 0] = rng.random(n) * (rng.random(n) < 0.3)  # background features
    dense[:, 1] = rng.random(n) * (rng.random(n) < 0.3)
    strengths = np.array([3.0, 1.0, 2.5, 4.0, 0.5, 2.0, 1.5], np.float32)
    dense[comet_units, 2] = strengths
    units = UnitIndex.from_frame(units_frame(texts, 100))
    result = compute_side_dashboards(SparseCodes.from_dense(dense), units, DashboardSettings(chunk_units=64))
    top = result.examples.filter((pl.col("feature") == 2) & (pl.col("kind") == "top")).sort("rank")
    order = np.argsort(-strengths, kind="stable")
    assert top["unit"].to_list() == [comet_units[i] for i in order]
    assert top["act"].to_list() == strengths[order].tolist()
    # units 331 and 332 are neighbours: each one's window shows the other's activation
    row = top.filter(pl.col("unit") == 331).row(0, named=True)
    assert row["window_start"] == 331 - 12 and row["center"] == 12
    assert row["window_acts"][12] == 4.0 and row["window_acts"][13] == 0.5
    assert sum(1 for a in row["window_acts"] if a) == 2
    # unit 599 ends its document (docs of 100 units): the window stops there
    row = top.filter(pl.col("unit") == 599).row(0, named=True)
    assert row["window_start"] == 599 - 12 and len(row["window_text"]) == 13 and row["window_text"][-1] == "comet"
    # unit 7 starts near its document's start
    row = top.filter(pl.col("unit") == 7).row(0, named=True)
    assert row["window_start"] == 0 and row["center"] == 7
    feat = result.features.filter(pl.col("feature") == 2).row(0, named=True)
    assert feat["top_tokens_by_count"] == ["comet"] and feat["top_tokens_by_count_n"] == [7]
    assert feat["top_tokens_by_mean"] == ["comet"]
    assert feat["top_tokens_by_mean_act"][0] == pytest.approx(strengths.mean())
    assert feat["token_stats"] == [{"token": "comet", "count": 7, "mean_act": pytest.approx(strengths.mean())}]
    dead = result.features.filter(pl.col("feature") == 3).row(0, named=True)
    assert dead["count"] == 0 and dead["quantiles"] is None and dead["hist_counts"] == []
    assert result.examples.filter(pl.col("feature") == 3).height == 0


def test_top_tokens_match_a_dense_count(side, dense, texts):
    result, settings = side
    tokens = np.asarray(texts)
    for f in (0, 5, 11):
        active = dense[:, f] != 0
        words, counts = np.unique(tokens[active], return_counts=True)
        sums = np.array([dense[active & (tokens == w), f].sum(dtype=np.float64) for w in words])
        ref_count = [words[i] for i in np.lexsort((words, -sums, -counts))][: settings.n_top_tokens]
        means = sums / counts
        ok = counts >= settings.min_token_count
        ref_mean = [words[i] for i in np.lexsort((words, -counts, -means)) if ok[i]][: settings.n_top_tokens]
        row = result.features.filter(pl.col("feature") == f).row(0, named=True)
        assert row["top_tokens_by_count"] == ref_count
        assert row["top_tokens_by_mean"] == ref_mean


def test_lookup_codes_matches_dense(dense):
    codes = SparseCodes.from_dense(dense)
    rng = np.random.default_rng(0)
    rows = rng.integers(0, dense.shape[0], 5000)
    feats = rng.integers(0, dense.shape[1], 5000)
    np.testing.assert_array_equal(lookup_codes(codes, rows, feats), dense[rows, feats])


@pytest.mark.parametrize("transpose", [False, True])
def test_logit_effect_matches_dense_numpy(transpose):
    rng = np.random.default_rng(4)
    w_dec = rng.standard_normal((30, 16)).astype(np.float32)
    w_u = rng.standard_normal((50, 16)).astype(np.float32)  # [d_vocab, d_in] like lm_head.weight
    vocab = [f"tok{i}" for i in range(50)]
    unembedding = Unembedding(w_u.T if transpose else w_u, tuple(vocab))
    effect = compute_logit_effect(w_dec, unembedding, k=10, chunk_features=7)
    assert effect.columns == ["feature", *LOGIT_COLUMNS]
    logits = w_dec.astype(np.float64) @ w_u.T.astype(np.float64)
    for f in range(30):
        order = np.argsort(-logits[f])
        row = effect.row(f, named=True)
        assert row["promoted_tokens"] == [vocab[i] for i in order[:10]]
        assert row["suppressed_tokens"] == [vocab[i] for i in order[::-1][:10]]
        np.testing.assert_allclose(row["promoted_logits"], logits[f, order[:10]], rtol=1e-5, atol=1e-5)


def test_build_dashboards_writes_the_bundle(tmp_path, texts, dense):
    codes_a = SparseCodes.from_dense(dense)
    codes_b = random_codes(N_UNITS, 10, 0.2, seed=9)
    path = write_bundle(tmp_path / "bundle", texts, codes_a, codes_b, doc_len=DOC_LEN)
    bundle = open_bundle(path)
    with pytest.raises(BundleError, match="no dashboards"):
        load_dashboards(bundle, "a")
    reports = []
    vocab = tuple(f"v{i}" for i in range(20))
    unembedding = Unembedding(np.random.default_rng(0).standard_normal((20, 8)).astype(np.float32), vocab)
    bundle = build_dashboards(
        path, DashboardSettings(chunk_units=500), progress=lambda *a: reports.append(a), unembedding_b=unembedding
    )
    assert bundle.has("examples")
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["dashboards"]["logit_effect"] == {"a": False, "b": True}
    assert manifest["dashboards"]["settings"]["chunk_units"] == 500
    assert ("dashboards a", N_UNITS, N_UNITS) in reports and ("dashboards b", N_UNITS, N_UNITS) in reports
    feats_a = load_dashboards(bundle, "a").collect()
    feats_b = load_dashboards(bundle, "b").collect()
    assert feats_a.height == 24 and feats_b.height == 10
    assert "promoted_tokens" not in feats_a.columns and "promoted_tokens" in feats_b.columns
    examples = bundle.examples("b").collect()
    assert set(examples["feature"].unique().to_list()) == set(range(10))


def test_bad_inputs_raise_user_errors(texts):
    with pytest.raises(SpecError, match="hist_bins"):
        DashboardSettings(hist_bins=7)
    with pytest.raises(SpecError, match="n_top"):
        DashboardSettings(n_top=0)
    with pytest.raises(SpecError, match="sample_size"):
        DashboardSettings(sample_size=3)
    units = UnitIndex.from_frame(units_frame(texts[:10], 5))
    negative = SparseCodes.from_dense(-np.ones((10, 2), np.float32))
    with pytest.raises(DashboardError, match="negative"):
        compute_side_dashboards(negative, units, DashboardSettings())
    with pytest.raises(BundleError, match="rows"):
        compute_side_dashboards(SparseCodes.empty(11, 2), units, DashboardSettings())
    with pytest.raises(DashboardError, match="token list"):
        Unembedding(np.zeros((5, 4), np.float32), ("a", "b"))
    with pytest.raises(DashboardError, match="width"):
        compute_logit_effect(np.zeros((3, 6), np.float32), Unembedding(np.zeros((5, 4), np.float32), tuple("abcde")))
    with pytest.raises(UserError):
        tau_from_quantiles([[0.0] * len(QUANTILE_PROBS)], 1.5)


def test_tau_interpolates_the_stored_quantiles():
    row = list(np.linspace(0, 1, len(QUANTILE_PROBS)) * 0 + np.asarray(QUANTILE_PROBS) * 10)
    tau = tau_from_quantiles([row, None], 0.95)
    assert tau[0] == pytest.approx(9.5) and np.isinf(tau[1])
    assert tau_from_quantiles([row], 0.97)[0] == pytest.approx(9.7)
