"""The row-block reduce equals compute_correlation to the bit, whatever the number of blocks.

coact_block is the unit an engine schedules; merge_blocks joins blocks finished in any order.
The reference is compute_correlation (itself checked against dense numpy Pearson in
test_correlate.py), on codes with dead, constant and always-on features and exact ties.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle.codes import SparseCodes
from core.bundle.stream import CodesFile
from core.errors import MatchingError
from core.matching.blocks import (
    coact_block,
    compute_correlation_blocked,
    correlation_moments,
    merge_blocks,
    split_rows,
)
from core.matching.correlate import CorrelationResult, compute_correlation
from tests.core.planted import dense_pearson, random_codes

K = 4


@pytest.fixture(scope="module")
def pair() -> tuple[SparseCodes, SparseCodes]:
    a, b = random_codes(500, 31, 0.1, seed=5), random_codes(500, 26, 0.12, seed=6)
    # duplicated features make exact ties in both directions (tie order must match too)
    dense_a, dense_b = a.to_dense(), b.to_dense()
    dense_a[:, 10] = dense_a[:, 9]
    dense_a[:, 20] = dense_a[:, 9]
    dense_b[:, 7] = dense_b[:, 6]
    return SparseCodes.from_dense(dense_a), SparseCodes.from_dense(dense_b)


def _assert_identical(got: CorrelationResult, want: CorrelationResult) -> None:
    for g, w in ((got.ab, want.ab), (got.ba, want.ba)):
        np.testing.assert_array_equal(g.index, w.index)
        np.testing.assert_array_equal(g.count, w.count)
        np.testing.assert_array_equal(g.score, w.score)
    np.testing.assert_array_equal(got.moments_a.m2, want.moments_a.m2)
    np.testing.assert_array_equal(got.moments_b.mean, want.moments_b.mean)
    if want.dense is not None:
        np.testing.assert_array_equal(got.dense, want.dense)


@pytest.mark.parametrize("n_blocks", [1, 2, 3, 5, 8, 31])
def test_blocks_equal_compute_correlation_bit_for_bit(pair, tmp_path, n_blocks: int) -> None:
    codes_a, codes_b = pair
    want = compute_correlation(codes_a, codes_b, top_k=K, chunk_units=97, keep_dense=True, backend="numba")
    got = compute_correlation_blocked(codes_a, codes_b, K, n_blocks, chunk_units=97, keep_dense=True, backend="numba")
    assert got.n_blocks == n_blocks
    _assert_identical(got, want)
    # the same from the codes files, read a chunk at a time
    codes_a.save(tmp_path / "a.safetensors")
    codes_b.save(tmp_path / "b.safetensors")
    files = (CodesFile(tmp_path / "a.safetensors"), CodesFile(tmp_path / "b.safetensors"))
    _assert_identical(compute_correlation_blocked(*files, K, n_blocks, chunk_units=97, keep_dense=True), want)


def test_ties_keep_the_lower_feature_first(pair) -> None:
    codes_a, codes_b = pair
    result = compute_correlation_blocked(codes_a, codes_b, K, n_blocks=4, chunk_units=97)
    # A features 9, 10 and 20 are one feature thrice: every B feature that ranks them lists 9, 10, 20
    for row_i, row_s in zip(result.ba.index, result.ba.score, strict=True):
        hits = [i for i in row_i if i in (9, 10, 20)]
        if hits:
            assert hits == sorted(hits)
            assert len({row_s[list(row_i).index(i)] for i in hits}) == 1


def test_blocks_merged_in_any_order_and_against_dense_numpy(pair) -> None:
    codes_a, codes_b = pair
    mom_a, mom_b = correlation_moments(codes_a, 97), correlation_moments(codes_b, 97)
    rows = split_rows(codes_a.n_features, codes_b.n_features, 6, 1024)
    blocks = [coact_block(codes_a, codes_b, mom_a, mom_b, lo, hi, K, 97) for lo, hi in rows]
    rng = np.random.default_rng(0)
    shuffled = merge_blocks([blocks[i] for i in rng.permutation(len(blocks))], mom_a, mom_b, K)
    _assert_identical(shuffled, merge_blocks(blocks, mom_a, mom_b, K))
    r = dense_pearson(codes_a, codes_b)
    best = -np.sort(-np.where(np.isnan(r), -np.inf, r), axis=1)[:, :K]
    live = np.isfinite(best[:, 0])
    np.testing.assert_allclose(shuffled.ab.score[live], best[live], atol=1e-6)
    with pytest.raises(ValueError, match="do not cover"):
        merge_blocks(blocks[1:], mom_a, mom_b, K)


def test_torch_backend_blocks_match_to_rounding(pair) -> None:
    codes_a, codes_b = pair
    want = compute_correlation(codes_a, codes_b, top_k=K, chunk_units=97, backend="torch")
    got = compute_correlation_blocked(codes_a, codes_b, K, n_blocks=3, chunk_units=97, backend="torch")
    for g, w in ((got.ab, want.ab), (got.ba, want.ba)):
        np.testing.assert_allclose(g.score, w.score, atol=1e-12)


def test_split_rows_respects_memory_and_covers_every_feature() -> None:
    assert split_rows(10, 5, 3, 1024) == [(0, 4), (4, 8), (8, 10)]
    # 0.001 MiB holds 0.75 * 1048 bytes / (12 bytes x 100 columns) = 0 rows -> one row per block
    tight = split_rows(7, 100, 2, 0.001)
    assert tight == [(i, i + 1) for i in range(7)]


def test_all_dead_side_is_one_sentence() -> None:
    dead = SparseCodes.from_dense(np.zeros((20, 4), np.float32))
    live = random_codes(20, 5, 0.3, seed=1)
    with pytest.raises(MatchingError, match="dead or constant"):
        compute_correlation_blocked(dead, live, 2, 2)
