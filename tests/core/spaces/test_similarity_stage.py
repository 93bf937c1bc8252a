"""The similarity bundle stage, concept subspaces, the layer sweep and the document bootstrap."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.bundle.writer import BundleWriter, add_parts
from core.errors import BundleError, SimilarityError, SpecError
from core.spaces.compute import compute_concept_similarity
from core.spaces.concepts import load_concept_groups, select_concept_pairs
from core.spaces.settings import SimilaritySettings
from core.spaces.stage import build_similarity
from core.spaces.stats import (
    bootstrap_pair_correlations,
    compute_document_sums,
    compute_pair_correlations,
    draw_document_weights,
    percentile_interval,
)
from core.spaces.sweep import compute_layer_sweep
from core.tokens import normalize_token

N_UNITS, N_DOCS = 400, 20
D_SAE_A, D_SAE_B, D_IN_A, D_IN_B = 40, 50, 8, 10
N_PAIRS = 30


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny matrices on a shared 2-core box: spinning BLAS/OpenMP threads cost far more than they give."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl comes with scikit-learn (umap-learn)
        yield
    else:
        with threadpool_limits(limits=1):
            yield
    torch.set_num_threads(before)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    w = rng.standard_normal((n, d))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def planted_codes(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Dense activations where B feature i follows A feature i (i < N_PAIRS), sparse and non-negative."""
    a = np.where(rng.random((N_UNITS, D_SAE_A)) < 0.2, rng.exponential(1.0, (N_UNITS, D_SAE_A)), 0.0)
    b = np.where(rng.random((N_UNITS, D_SAE_B)) < 0.2, rng.exponential(1.0, (N_UNITS, D_SAE_B)), 0.0)
    b[:, :N_PAIRS] = np.where(a[:, :N_PAIRS] > 0, a[:, :N_PAIRS] + 0.3 * rng.random((N_UNITS, N_PAIRS)), 0.0)
    return a.astype(np.float32), b.astype(np.float32)


def features_frame(n: int, tokens: dict[int, list[str]]) -> pl.DataFrame:
    return pl.DataFrame(
        {
            "feature": np.arange(n),
            "freq": np.full(n, 0.2),
            "mean": np.full(n, 0.2),
            "std": np.full(n, 0.5),
            "max": np.full(n, 3.0),
            "is_dead": np.zeros(n, bool),
            "is_dense": np.zeros(n, bool),
            "top_tokens": [tokens.get(i, ["the", "of", "and"]) for i in range(n)],
            "is_nonconcept": np.zeros(n, bool),
        },
        schema_overrides={"top_tokens": pl.List(pl.Utf8)},
    )


@pytest.fixture
def tiny_bundle(tmp_path):
    rng = np.random.default_rng(5)
    dense_a, dense_b = planted_codes(rng)
    dec_a = unit_rows(rng, D_SAE_A, D_IN_A)
    q, _ = np.linalg.qr(rng.standard_normal((D_IN_B, D_IN_A)))
    dec_b = unit_rows(rng, D_SAE_B, D_IN_B)
    dec_b[:N_PAIRS] = dec_a[:N_PAIRS] @ q.T + 0.05 * rng.standard_normal((N_PAIRS, D_IN_B))
    writer = BundleWriter(tmp_path / "bundle")
    docs = np.repeat(np.arange(N_DOCS), N_UNITS // N_DOCS)
    writer.write_units(
        pl.DataFrame(
            {
                "unit": np.arange(N_UNITS),
                "doc": docs,
                "pos": np.tile(np.arange(N_UNITS // N_DOCS), N_DOCS),
                "text": ["w"] * N_UNITS,
                "char_start": np.zeros(N_UNITS, np.int64),
                "char_end": np.ones(N_UNITS, np.int64),
            }
        )
    )
    writer.write_docs(pl.DataFrame({"doc": np.arange(N_DOCS), "text": ["w " * 20] * N_DOCS}))
    writer.write_codes("a", SparseCodes.from_dense(dense_a))
    writer.write_codes("b", SparseCodes.from_dense(dense_b))
    writer.write_decoder("a", dec_a)
    writer.write_decoder("b", dec_b)
    days = ["Monday", " Tuesday", "Ġfriday", "▁june", "##week", "year", "tomorrow"]
    writer.write_features("a", features_frame(D_SAE_A, {i: [days[i], "x"] for i in range(7)}))
    writer.write_features("b", features_frame(D_SAE_B, {i: ["y", days[(i + 1) % 7]] for i in range(7)}))
    writer.finalize({"sides": {"a": {"d_sae": D_SAE_A}, "b": {"d_sae": D_SAE_B}}, "n_units": N_UNITS})
    corr = np.array([np.corrcoef(dense_a[:, i], dense_b[:, i])[0, 1] for i in range(N_PAIRS)])
    kept = np.arange(N_PAIRS) < N_PAIRS - 2
    assignment = pl.DataFrame(
        {
            "feature_a": np.arange(N_PAIRS),
            "feature_b": np.arange(N_PAIRS),
            "method": ["mutual"] * N_PAIRS,
            "corr": corr,
            "kept": kept,
            "reason": [None if k else "nonconcept" for k in kept],
        },
        schema_overrides={"reason": pl.Utf8},
    )
    add_parts(writer.path, frames={"assignment.parquet": assignment})
    return writer.path, dense_a, dense_b, corr


def test_build_similarity_writes_the_contracted_json(tiny_bundle):
    path, _, _, corr = tiny_bundle
    settings = SimilaritySettings(n_null=60, n_boot=40, n_boot_metrics=8, n_null_concepts=20, seed=3)
    events = []
    bundle = build_similarity(path, settings, device="cpu", progress=lambda s, d, t: events.append(s))
    assert bundle.has("similarity")
    body = bundle.similarity_json()
    assert body["n_pairs"] == N_PAIRS - 2
    assert body["pairing"]["methods"] == ["mutual"]
    assert set(body["metrics"]) == {"svcca", "svcca_paper", "rsa", "cka", "procrustes", "matched_corr"}
    for m in ("svcca", "svcca_paper", "rsa", "cka", "procrustes"):
        r = body["metrics"][m]
        for key in ("value", "null_mean", "null_std", "n_null", "p_value", "null_kind", "seed", "details"):
            assert key in r, (m, key)
        assert r["n_null"] == 60 and r["seed"] == 3 and r["null_kind"] == "permutation"
        assert 1 / 61 <= r["p_value"] <= 1
        assert r["ci_kind"] == "document bootstrap" and r["n_boot"] == 8
    svcca = body["metrics"]["svcca"]
    assert svcca["details"]["k_a"] >= 1 and "99%" in svcca["details"]["variance_rule"]
    assert body["metrics"]["svcca_paper"]["details"]["k_a"] == 1
    assert svcca["p_value"] < 0.05  # the decoders were planted as a rotation
    mc = body["metrics"]["matched_corr"]
    assert mc["value"] == pytest.approx(corr[: N_PAIRS - 2].mean())
    assert mc["ci_low"] <= mc["value"] <= mc["ci_high"]
    assert mc["details"]["recomputed_mean"] == pytest.approx(mc["value"], abs=1e-5)
    concepts = body["concepts"]
    assert "time and calendar" in concepts["groups"]
    assert sorted(concepts["pairs"]["time and calendar"]) == list(range(7))
    rows = [r for r in concepts["results"] if r["concept"] == "time and calendar"]
    assert {r["metric"] for r in rows} >= {"svcca", "rsa", "matched_corr"}
    # 7 pairs of 8- and 10-dim rows: SVCCA's canonical correlations are 1 by construction there
    assert all(r["tested"] for r in rows if not r["metric"].startswith("svcca"))
    svcca_row = next(r for r in rows if r["metric"] == "svcca")
    assert not svcca_row["tested"] and "by construction" in svcca_row["not_testable"]
    assert svcca_row["p_value"] is None
    assert "null" in events and "concepts" in events
    # the file is plain JSON (no NaN), and the manifest records the stage
    json.loads((path / "similarity.json").read_text())
    assert open_bundle(path).manifest["similarity"]["n_pairs"] == N_PAIRS - 2


def test_build_similarity_needs_an_assignment(tmp_path, tiny_bundle):
    path = tiny_bundle[0]
    (path / "assignment.parquet").unlink()
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["parts"]["assignment"] = False
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match="matching stage"):
        build_similarity(path, SimilaritySettings(n_null=5), device="cpu")


def test_build_similarity_refuses_too_few_kept_pairs(tiny_bundle):
    path = tiny_bundle[0]
    frame = open_bundle(path).assignment().collect().with_columns(kept=pl.col("feature_a") < 2)
    add_parts(path, frames={"assignment.parquet": frame})
    with pytest.raises(SimilarityError, match="at least 3"):
        build_similarity(path, SimilaritySettings(n_null=5), device="cpu")


# ----------------------------------------------------------------------------- document bootstrap


def test_document_sums_reproduce_pearson_and_weights(tiny_bundle):
    _, dense_a, dense_b, _ = tiny_bundle
    docs = np.repeat(np.arange(N_DOCS), N_UNITS // N_DOCS)
    ia, ib = np.array([0, 1, 5, 33]), np.array([0, 1, 5, 40])
    sums = compute_document_sums(SparseCodes.from_dense(dense_a), SparseCodes.from_dense(dense_b), docs, ia, ib)
    want = [np.corrcoef(dense_a[:, i], dense_b[:, j])[0, 1] for i, j in zip(ia, ib, strict=True)]
    np.testing.assert_allclose(compute_pair_correlations(sums), want, atol=1e-6)
    # weight 2 on document 0 and 0 on document 1 = the corpus with doc 0 twice and doc 1 gone
    w = np.ones((1, N_DOCS))
    w[0, 0], w[0, 1] = 2, 0
    rows = np.concatenate([np.flatnonzero(docs == 0), np.flatnonzero(docs != 1)])
    want = [np.corrcoef(dense_a[rows, i], dense_b[rows, j])[0, 1] for i, j in zip(ia, ib, strict=True)]
    np.testing.assert_allclose(compute_pair_correlations(sums, w)[0], want, atol=1e-6)
    draws = draw_document_weights(N_DOCS, 5, seed=1)
    assert draws.shape == (5, N_DOCS) and np.all(draws.sum(1) == N_DOCS)
    np.testing.assert_array_equal(draws, draw_document_weights(N_DOCS, 5, seed=1))
    boot = bootstrap_pair_correlations(sums, 50, seed=2, chunk=7)
    low, high = percentile_interval(boot[:, 0], 0.95)
    assert low <= compute_pair_correlations(sums)[0] <= high


# ----------------------------------------------------------------------------- concepts


def test_concept_groups_and_selection(tmp_path):
    groups = load_concept_groups()
    assert set(groups) == {"time and calendar", "numbers", "emotions", "geography", "food", "people and family"}
    assert normalize_token("ĠMonday") == "monday" and normalize_token("##day") == "day"
    assert normalize_token("▁June ") == "june"
    tokens_a = [["Monday", "x"], ["x", "y"], ["bread"], None]
    tokens_b = [["x"], ["tomorrow"], ["cheese"], ["june"]]
    sel = select_concept_pairs(tokens_a, tokens_b, groups, "either")
    assert sel["time and calendar"].tolist() == [0, 1, 3]
    assert sel["food"].tolist() == [2]
    assert select_concept_pairs(tokens_a, tokens_b, groups, "both")["food"].tolist() == [2]
    assert select_concept_pairs(tokens_a, tokens_b, groups, "a")["time and calendar"].tolist() == [0]
    # top_n looks only at the first tokens
    assert select_concept_pairs([["x", "monday"]], [["y"]], groups, "a", top_n=1)["time and calendar"].size == 0
    custom = tmp_path / "c.json"
    custom.write_text(json.dumps({"groups": {"colours": ["Red", " blue", "red"]}}))
    assert load_concept_groups(custom) == {"colours": ("red", "blue")}
    custom.write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        load_concept_groups(custom)
    with pytest.raises(SpecError, match="either, both, a, b"):
        select_concept_pairs([], [], groups, "neither")


def test_concept_against_its_own_nulls():
    rng = np.random.default_rng(11)
    n = 80
    x = unit_rows(rng, n, 12)
    y = unit_rows(rng, n, 16)
    q, _ = np.linalg.qr(rng.standard_normal((16, 12)))
    concept = np.arange(20)
    y[concept] = x[concept] @ q.T + 0.02 * rng.standard_normal((20, 16))
    rows = {"planted": concept, "random": np.arange(40, 60), "tiny": np.arange(60, 63)}
    corr = rng.random(n)
    settings = SimilaritySettings(metrics=("svcca", "cka", "matched_corr"), n_null_concepts=60, min_concept_pairs=5)
    frame = compute_concept_similarity(x, y, rows, settings, "cpu", pair_corr=corr)
    assert set(frame.columns) >= {"p_value", "p_bh", "p_bonferroni", "subspace_p_value", "subspace_p_bh", "significant"}
    planted = frame.filter((pl.col("concept") == "planted") & (pl.col("metric") == "cka")).row(0, named=True)
    assert planted["p_value"] == pytest.approx(1 / 61)
    assert planted["subspace_p_value"] < 0.05 and planted["significant"]
    random = frame.filter((pl.col("concept") == "random") & (pl.col("metric") == "cka")).row(0, named=True)
    assert random["p_value"] > 0.05
    tiny = frame.filter(pl.col("concept") == "tiny")
    assert not tiny["tested"].any() and tiny["p_value"].is_nan().all()
    # two tested concepts: Bonferroni doubles the raw p-value (capped at 1)
    tested = frame.filter((pl.col("metric") == "cka") & pl.col("tested"))
    np.testing.assert_allclose(tested["p_bonferroni"], np.minimum(1, 2 * tested["p_value"].to_numpy()))
    mc = frame.filter((pl.col("concept") == "planted") & (pl.col("metric") == "matched_corr")).row(0, named=True)
    assert mc["value"] == pytest.approx(corr[:20].mean()) and np.isfinite(mc["subspace_p_value"])


def test_svcca_on_fewer_pairs_than_dimensions_is_not_testable():
    # 12 pairs of 32-dim rows: the 99% rule keeps about 11 directions a side, and two 11-dim
    # subspaces of the 11 dimensions the centred pairs span coincide, so every canonical
    # correlation is 1 whatever the pairing: that value cannot be tested
    from core.spaces.metrics import compute_svcca, svcca_forced_correlations

    rng = np.random.default_rng(5)
    x, y = unit_rows(rng, 100, 32), unit_rows(rng, 100, 32)
    small = compute_svcca(x[:12], y[:12])
    forced = svcca_forced_correlations(12, small.k_a, small.k_b)
    assert forced >= 1
    # dense reference: at least `forced` canonical correlations are 1 (independent random rows)
    assert int(np.sum(small.correlations > 1 - 1e-8)) >= min(forced, small.correlations.size)
    big = compute_svcca(x, y)
    assert svcca_forced_correlations(100, big.k_a, big.k_b) == 0 or big.k_a + big.k_b > 99
    # hand-worked: 10 pairs span 9 dimensions; 5 + 6 directions share at least 2
    assert svcca_forced_correlations(10, 5, 6) == 2 and svcca_forced_correlations(10, 4, 5) == 0

    settings = SimilaritySettings(metrics=("svcca", "cka"), n_null_concepts=20, min_concept_pairs=5)
    frame = compute_concept_similarity(x, y, {"small": np.arange(12), "tiny": np.arange(3)}, settings, "cpu")
    svcca = frame.filter((pl.col("concept") == "small") & (pl.col("metric") == "svcca")).row(0, named=True)
    assert (
        not svcca["tested"] and "not testable" in svcca["not_testable"] and "by construction" in svcca["not_testable"]
    )
    assert np.isnan(svcca["p_value"]) and np.isnan(svcca["subspace_p_value"]) and svcca["significant"] is None
    cka = frame.filter((pl.col("concept") == "small") & (pl.col("metric") == "cka")).row(0, named=True)
    assert cka["tested"] and cka["not_testable"] is None and np.isfinite(cka["p_value"])
    tiny = frame.filter(pl.col("concept") == "tiny")
    assert tiny["not_testable"].str.contains("fewer than 5").all()
    # the bundle-level metric says so too
    from core.spaces.compute import compute_similarity

    results = compute_similarity(x[:12], y[:12], SimilaritySettings(metrics=("svcca", "cka"), n_null=10), "cpu")
    assert results["svcca"].details["testable"] is False and results["svcca"].details["forced_correlations"] >= 1


# ----------------------------------------------------------------------------- layer sweep


def test_layer_sweep_frame_for_a_heatmap():
    rng = np.random.default_rng(21)
    base = [unit_rows(rng, 60, 10) for _ in range(2)]
    q, _ = np.linalg.qr(rng.standard_normal((14, 10)))
    # B layer j copies A layer j (rotated) on its first 50 rows; other cells are unrelated
    decoders_b = [
        np.vstack([b[:50] @ q.T + 0.02 * rng.standard_normal((50, 14)), unit_rows(rng, 10, 14)]) for b in base
    ]
    decoders_b.append(unit_rows(rng, 60, 14))

    def pairing(i: int, j: int):
        if j == 2:
            return np.array([0, 1]), np.array([0, 1])  # too few pairs: the cell reports why
        return pl.DataFrame({"feature_a": np.arange(50), "feature_b": np.arange(50), "kept": np.arange(50) < 45})

    settings = SimilaritySettings(metrics=("svcca", "rsa"), n_null=40)
    frame = compute_layer_sweep(base, decoders_b, pairing, settings, "cpu", labels_a=["L0", "L1"])
    assert frame.height == 2 * 3 * 2
    assert frame.columns[:5] == ["layer_a", "layer_b", "label_a", "label_b", "metric"]
    for col in ("value", "null_mean", "p_value", "p_adjusted", "n_pairs", "significant", "error"):
        assert col in frame.columns
    diag = frame.filter((pl.col("layer_a") == pl.col("layer_b")) & (pl.col("metric") == "svcca"))
    assert diag["n_pairs"].to_list() == [45, 45]
    assert (diag["p_value"] < 0.05).all() and diag["significant"].all()
    off = frame.filter(
        (pl.col("layer_a") != pl.col("layer_b")) & (pl.col("layer_b") < 2) & (pl.col("metric") == "svcca")
    )
    assert (off["p_value"] > 0.05).all()
    bad = frame.filter(pl.col("layer_b") == 2)
    assert bad["error"].str.contains("at least 3").all() and bad["value"].is_nan().all()
    # adjusted within a metric across the 4 tested cells
    svcca = frame.filter((pl.col("metric") == "svcca") & pl.col("error").is_null())
    np.testing.assert_allclose(svcca["p_bonferroni"], np.minimum(1, 4 * svcca["p_value"].to_numpy()))
    assert frame["label_a"].unique().sort().to_list() == ["L0", "L1"]
