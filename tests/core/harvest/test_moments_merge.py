"""Shard moments merge in any order and grouping, and k shards give the single-pass moments.

The engine seam relies on this: shards finish in any order on any worker, and the driver
merges their summaries. Counts and maxima are exact in any order; float64 sums agree to
rounding (relative 1e-12), and engines merge in shard order so that they agree to the bit.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle.codes import SparseCodes, concat_codes
from core.harvest.run import feature_moments, merge_moments
from core.matching.moments import compute_moments

hypothesis = pytest.importorskip("hypothesis")
st = hypothesis.strategies

N_FEATURES = 23


def _shards(seed: int, sizes: list[int]) -> list[SparseCodes]:
    rng = np.random.default_rng(seed)
    out = []
    for n in sizes:
        dense = np.where(rng.random((n, N_FEATURES)) < 0.2, rng.exponential(2.0, (n, N_FEATURES)), 0.0)
        out.append(SparseCodes.from_dense(dense.astype(np.float32)))
    return out


def _groupings(draw: st.DrawFn, items: list[int]) -> list[list[int]]:
    """A random partition of ``items`` into consecutive non-empty groups."""
    cuts = sorted(draw(st.sets(st.integers(1, max(1, len(items) - 1)), max_size=len(items) - 1)))
    edges = [0, *cuts, len(items)]
    return [items[a:b] for a, b in zip(edges[:-1], edges[1:], strict=True) if b > a]


@st.composite
def _case(draw: st.DrawFn) -> tuple[int, list[int], list[int], list[list[int]]]:
    sizes = draw(st.lists(st.integers(0, 40), min_size=1, max_size=9))
    seed = draw(st.integers(0, 10_000))
    order = draw(st.permutations(list(range(len(sizes)))))
    return seed, sizes, order, _groupings(draw, order)


def _assert_moments_equal(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    np.testing.assert_array_equal(got["count"], want["count"])
    np.testing.assert_array_equal(got["max"], want["max"])
    for key in ("sum", "sumsq"):
        np.testing.assert_allclose(got[key], want[key], rtol=1e-12, atol=0)


@hypothesis.settings(max_examples=150, deadline=None)
@hypothesis.given(_case())
def test_merge_is_order_free_and_associative_and_equals_one_pass(case) -> None:
    seed, sizes, order, groups = case
    shards = _shards(seed, sizes)
    parts = [feature_moments(s) for s in shards]
    single_pass = feature_moments(concat_codes(shards))
    in_order = merge_moments(parts)
    _assert_moments_equal(in_order, single_pass)
    _assert_moments_equal(merge_moments([parts[i] for i in order]), in_order)
    # merge each group first (a tree reduce), then the group results
    grouped = merge_moments([merge_moments([parts[i] for i in group]) for group in groups])
    _assert_moments_equal(grouped, in_order)
    # the dense reference: numpy over the whole matrix
    dense = concat_codes(shards).to_dense().astype(np.float64)
    np.testing.assert_array_equal(in_order["count"], (dense != 0).sum(0))
    np.testing.assert_allclose(in_order["sum"], dense.sum(0), rtol=1e-12)
    np.testing.assert_allclose(in_order["sumsq"], (dense**2).sum(0), rtol=1e-12)


@hypothesis.settings(max_examples=100, deadline=None)
@hypothesis.given(_case())
def test_centred_moments_merge_is_associative_and_equals_one_pass(case) -> None:
    seed, sizes, order, groups = case
    shards = [s for s in _shards(seed, sizes) if s.n_rows]
    hypothesis.assume(shards)
    whole = compute_moments(concat_codes(shards))
    parts = [compute_moments(s) for s in shards]

    def fold(items):
        total = items[0]
        for item in items[1:]:
            total = total.merge(item)
        return total

    for merged in (fold(parts), fold([fold(parts[i : i + 2]) for i in range(0, len(parts), 2)])):
        assert merged.n_units == whole.n_units
        np.testing.assert_array_equal(merged.n_fire, whole.n_fire)
        np.testing.assert_allclose(merged.mean, whole.mean, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(merged.m2, whole.m2, rtol=1e-9, atol=1e-9)
