"""Exact correlation top-k against dense numpy references, both backends, CPU and CUDA."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.bundle.codes import SparseCodes
from core.errors import MatchingError, UserError
from core.matching.correlate import compute_correlation, compute_pair_stats, jaccard
from core.matching.moments import compute_moments, compute_moments_chunked
from core.matching.weights import compute_cosine_topk, compute_pair_cosine, compute_weight_matches
from tests.core.planted import build_planted_config, dense_pearson, make_planted, random_codes

K = 4


@pytest.fixture(scope="module")
def random_pair() -> tuple[SparseCodes, SparseCodes]:
    return random_codes(600, 37, 0.08, seed=1), random_codes(600, 29, 0.12, seed=2)


@pytest.fixture(scope="module")
def reference(random_pair):
    codes_a, codes_b = random_pair
    r = dense_pearson(codes_a, codes_b)
    bin_a = (codes_a.to_dense() != 0).astype(np.int64)
    bin_b = (codes_b.to_dense() != 0).astype(np.int64)
    return r, bin_a.T @ bin_b, bin_a.sum(0), bin_b.sum(0)


def _sorted_ref(r: np.ndarray, k: int) -> np.ndarray:
    filled = np.where(np.isnan(r), -np.inf, r)
    return -np.sort(-filled, axis=1)[:, :k]


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_dense_matrix_matches_numpy_pearson(random_pair, reference, backend):
    codes_a, codes_b = random_pair
    r_ref = reference[0]
    # a tiny memory setting forces several A blocks and the chunk size several unit chunks
    result = compute_correlation(
        codes_a, codes_b, top_k=K, memory_mb=0.005, chunk_units=97, keep_dense=True, backend=backend
    )
    assert result.n_blocks > 1
    assert np.array_equal(np.isnan(result.dense), np.isnan(r_ref))
    np.testing.assert_allclose(result.dense[~np.isnan(r_ref)], r_ref[~np.isnan(r_ref)], atol=1e-5)


@pytest.mark.parametrize("backend", ["numba", "torch"])
def test_topk_both_directions_with_counts_and_jaccard(random_pair, reference, backend):
    codes_a, codes_b = random_pair
    r_ref, coact, n_a, n_b = reference
    result = compute_correlation(codes_a, codes_b, top_k=K, memory_mb=0.005, chunk_units=211, backend=backend)
    for topk, r, co in ((result.ab, r_ref, coact), (result.ba, r_ref.T, coact.T)):
        want = _sorted_ref(r, K)
        live_rows = np.isfinite(want[:, 0])
        np.testing.assert_allclose(topk.score[live_rows], want[live_rows], atol=1e-5)
        assert np.all(topk.index[~live_rows] == -1) and np.all(np.isnan(topk.score[~live_rows]))
        rows = np.repeat(np.arange(r.shape[0]), K)
        idx = topk.index.reshape(-1)
        ok = idx >= 0
        # each listed partner really has the listed correlation and co-firing count
        np.testing.assert_allclose(r[rows[ok], idx[ok]], topk.score.reshape(-1)[ok], atol=1e-5)
        assert np.array_equal(co[rows[ok], idx[ok]], topk.count.reshape(-1)[ok])
    fa = np.repeat(np.arange(codes_a.n_features), K)[result.ab.index.reshape(-1) >= 0]
    fb = result.ab.index.reshape(-1)[result.ab.index.reshape(-1) >= 0]
    count = result.ab.count.reshape(-1)[result.ab.index.reshape(-1) >= 0]
    want_j = coact[fa, fb] / (n_a[fa] + n_b[fb] - coact[fa, fb])
    np.testing.assert_allclose(jaccard(count, result.moments_a.n_fire[fa], result.moments_b.n_fire[fb]), want_j)


def test_dead_and_constant_features_are_left_out(random_pair):
    codes_a, codes_b = random_pair
    result = compute_correlation(codes_a, codes_b, top_k=K)
    # feature 0 never fires, feature 2 is constant: neither has partners nor is anyone's partner
    for dead in (0, 2):
        assert result.moments_a.is_dead[dead] and result.moments_b.is_dead[dead]
        assert np.all(result.ab.index[dead] == -1) and np.all(result.ba.index[dead] == -1)
        assert not np.any(result.ab.index == dead) and not np.any(result.ba.index == dead)
    assert not result.moments_a.is_dead[1]  # always on but varying: a real feature
    assert not np.any(np.isnan(result.ab.score[~result.moments_a.is_dead]))


def test_backends_agree(random_pair):
    codes_a, codes_b = random_pair
    a = compute_correlation(codes_a, codes_b, top_k=K, backend="numba")
    b = compute_correlation(codes_a, codes_b, top_k=K, backend="torch", memory_mb=0.003)
    np.testing.assert_allclose(a.ab.score, b.ab.score, atol=1e-10)
    np.testing.assert_allclose(a.ba.score, b.ba.score, atol=1e-10)
    assert np.array_equal(a.ab.index, b.ab.index) and np.array_equal(a.ba.count, b.ba.count)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(random_pair):
    codes_a, codes_b = random_pair
    cpu = compute_correlation(codes_a, codes_b, top_k=K, device="cpu", keep_dense=True)
    gpu = compute_correlation(codes_a, codes_b, top_k=K, device="cuda", memory_mb=0.005, keep_dense=True)
    assert gpu.backend == "torch"
    np.testing.assert_allclose(gpu.dense, cpu.dense, atol=1e-5, equal_nan=True)
    np.testing.assert_allclose(gpu.ab.score, cpu.ab.score, atol=1e-5)
    np.testing.assert_allclose(gpu.ba.score, cpu.ba.score, atol=1e-5)
    assert np.array_equal(gpu.ab.index, cpu.ab.index) and np.array_equal(gpu.ba.count, cpu.ba.count)


def test_moments_merge_is_chunk_invariant(random_pair):
    codes_a, _ = random_pair
    whole = compute_moments(codes_a)
    merged = compute_moments_chunked(codes_a, 37)
    dense = codes_a.to_dense().astype(np.float64)
    np.testing.assert_allclose(merged.mean, dense.mean(0), rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(merged.m2, ((dense - dense.mean(0)) ** 2).sum(0), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-12)
    assert np.array_equal(merged.n_fire, (dense != 0).sum(0))


def test_pair_stats_are_exact_for_any_pair(random_pair, reference):
    codes_a, codes_b = random_pair
    r_ref, coact, _, _ = reference
    mom_a, mom_b = compute_moments(codes_a), compute_moments(codes_b)
    rng = np.random.default_rng(0)
    pa, pb = rng.integers(0, codes_a.n_features, 200), rng.integers(0, codes_b.n_features, 200)
    corr, count = compute_pair_stats(codes_a, codes_b, mom_a, mom_b, pa, pb)
    np.testing.assert_allclose(corr, r_ref[pa, pb], atol=1e-10, equal_nan=True)
    assert np.array_equal(count, coact[pa, pb])


def test_planted_permutation_is_recovered_exactly():
    planted = make_planted(build_planted_config())
    result = compute_correlation(planted.codes_a, planted.codes_b, top_k=3)
    for a, b in planted.pairs:
        assert result.ab.index[a, 0] == b and result.ba.index[b, 0] == a
        assert result.ab.score[a, 0] > 0.8


def test_always_on_features_are_exact_despite_large_means():
    # mean 1000, spread 1e-2: the naive sum-of-squares formula loses this variance in float32
    rng = np.random.default_rng(3)
    base = rng.standard_normal(500)
    a = np.stack([1000.0 + 1e-2 * base, np.where(rng.random(500) < 0.1, 1.0, 0.0)], 1)
    b = np.stack([2000.0 + 1e-2 * (base + 0.3 * rng.standard_normal(500)), rng.random(500)], 1)
    codes_a, codes_b = SparseCodes.from_dense(a), SparseCodes.from_dense(b)
    result = compute_correlation(codes_a, codes_b, top_k=1, keep_dense=True)
    ref = dense_pearson(codes_a, codes_b)
    np.testing.assert_allclose(result.dense, ref, atol=1e-4)


def test_cosine_topk_matches_numpy():
    rng = np.random.default_rng(4)
    w_a, w_b = rng.standard_normal((23, 8)), rng.standard_normal((31, 8))
    w_a[5] = 0.0  # no direction
    ab, ba = compute_cosine_topk(w_a, w_b, top_k=3, memory_mb=0.001)
    ua = w_a / np.maximum(np.linalg.norm(w_a, axis=1, keepdims=True), 1e-300)
    ub = w_b / np.linalg.norm(w_b, axis=1, keepdims=True)
    cos = ua @ ub.T
    cos[5] = np.nan
    np.testing.assert_allclose(ab.score[np.arange(23) != 5], _sorted_ref(cos, 3)[np.arange(23) != 5], atol=1e-12)
    assert np.all(ab.index[5] == -1)
    np.testing.assert_allclose(ba.score, _sorted_ref(cos.T, 3), atol=1e-12)
    np.testing.assert_allclose(compute_pair_cosine(w_a, w_b, [0, 1], [2, 3]), cos[[0, 1], [2, 3]], atol=1e-12)
    frame = compute_weight_matches(w_a, w_b, top_k=2, w_enc_a=w_a.T, w_enc_b=w_b.T)
    assert set(frame["basis"].unique()) == {"decoder", "encoder"}
    assert set(frame["direction"].unique()) == {"a->b", "b->a"}


def test_planted_decoders_match_by_cosine():
    planted = make_planted(build_planted_config())
    ab, _ = compute_cosine_topk(planted.w_dec_a, planted.w_dec_b, top_k=1)
    assert all(ab.index[a, 0] == b for a, b in planted.pairs)


def _codes(dense: list[list[float]]) -> SparseCodes:
    return SparseCodes.from_dense(np.asarray(dense, dtype=np.float32))


@pytest.mark.parametrize(
    ("codes_a", "codes_b", "top_k", "fragment"),
    [
        (_codes([[1, 0], [0, 1]]), _codes([[1, 0], [0, 1], [1, 1]]), 1, "not aligned"),
        (SparseCodes.empty(0, 3), SparseCodes.empty(0, 3), 1, "empty"),
        (
            SparseCodes(np.array([0, 1, 2]), np.array([0, 1]), np.array([np.nan, 1.0]), 2),
            _codes([[1, 0], [0, 1]]),
            1,
            "NaN or inf",
        ),
        (
            SparseCodes(np.array([0, 1, 2]), np.array([0, 1]), np.array([np.inf, 1.0]), 2),
            _codes([[1, 0], [0, 1]]),
            1,
            "NaN or inf",
        ),
        (SparseCodes(np.zeros(3, np.int64), np.zeros(0), np.zeros(0), -4), _codes([[1], [0]]), 1, "negative"),
        (_codes([[0, 0], [0, 0], [0, 0]]), _codes([[1, 0], [0, 1], [1, 1]]), 1, "dead"),
        (_codes([[1, 0], [0, 1], [1, 1]]), _codes([[2, 2], [2, 2], [2, 2]]), 1, "dead"),
        (_codes([[1, 0], [0, 1], [1, 1]]), _codes([[1, 0], [0, 1], [1, 1]]), 3, "top_k"),
        (_codes([[1, 0], [0, 1], [1, 1]]), _codes([[1, 0], [0, 1], [1, 1]]), 0, "top_k"),
    ],
)
def test_bad_inputs_raise_one_sentence_user_errors(codes_a, codes_b, top_k, fragment):
    with pytest.raises(MatchingError) as info:
        compute_correlation(codes_a, codes_b, top_k=top_k)
    message = str(info.value)
    assert isinstance(info.value, UserError) and fragment in message
    assert message.count(". ") == 0 and message.endswith(".")


def test_cosine_needs_equal_widths():
    with pytest.raises(MatchingError, match="d_in"):
        compute_cosine_topk(np.ones((3, 4)), np.ones((3, 5)), top_k=1)


@pytest.mark.parametrize("n_parts", [1, 2, 5])
def test_fused_finalize_equals_the_two_pass_kernels_bit_for_bit_ties_included(n_parts):
    from core.matching.kernels import column_topk_numba, finalize_numba, finalize_topk_numba

    rng = np.random.default_rng(n_parts)
    height, n_b, n_a, k, lo = 37, 29, 50, 4, 6
    # few distinct values, so many ties, plus dead features on both sides
    sums = rng.integers(0, 4, (height, n_b)).astype(np.float64)
    counts = rng.integers(0, 9, (height, n_b)).astype(np.int32)
    mean_a, mean_b = rng.random(n_a), rng.random(n_b)
    inv_a, inv_b = np.full(n_a, 0.5), np.full(n_b, 0.25)
    live_a, live_b = rng.random(n_a) > 0.1, rng.random(n_b) > 0.1
    # running column lists from an earlier block (lower A ids), so the merge order matters
    start_v = np.sort(rng.integers(-2, 2, (n_b, k)).astype(np.float64), axis=1)[:, ::-1].copy()
    start_i = rng.integers(0, lo, (n_b, k)).astype(np.int64)
    start_c = rng.integers(0, 5, (n_b, k)).astype(np.int64)
    outs = []
    for fused in (False, True):
        s, c = sums.copy(), counts.copy()
        rv, ri, rc = np.zeros((n_a, k)), np.zeros((n_a, k), np.int64), np.zeros((n_a, k), np.int64)
        cv, ci, cc = start_v.copy(), start_i.copy(), start_c.copy()
        args = (s, c, lo, 10.0, mean_a, mean_b, inv_a, inv_b, live_a, live_b, rv, ri, rc)
        if fused:
            finalize_topk_numba(*args, cv, ci, cc, n_parts)
        else:
            finalize_numba(*args)
            column_topk_numba(s, c, lo, 7, cv, ci, cc)
        outs.append((s, rv, ri, rc, cv, ci, cc))
    for x, y in zip(*outs, strict=True):
        np.testing.assert_array_equal(x, y)


def test_the_correlation_is_the_same_bits_whatever_the_thread_count() -> None:
    # an engine's worker may run with other thread counts than the driver; the bundle must not change
    import numba

    rng = np.random.default_rng(3)
    dense_a = np.where(rng.random((20_000, 120)) < 0.1, rng.exponential(1.0, (20_000, 120)), 0.0)
    dense_b = np.where(rng.random((20_000, 90)) < 0.1, rng.exponential(1.0, (20_000, 90)), 0.0)
    a = SparseCodes.from_dense(dense_a.astype(np.float32))
    b = SparseCodes.from_dense(dense_b.astype(np.float32))
    before = numba.get_num_threads()
    try:
        results = []
        for threads in sorted({1, min(2, numba.config.NUMBA_NUM_THREADS)}):
            numba.set_num_threads(threads)
            results.append(compute_correlation(a, b, top_k=5, device="cpu"))
    finally:
        numba.set_num_threads(before)
    first = results[0]
    for other in results[1:]:
        assert np.array_equal(first.moments_a.m2, other.moments_a.m2)
        assert np.array_equal(first.ab.score, other.ab.score) and np.array_equal(first.ba.score, other.ba.score)
