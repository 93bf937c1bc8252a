"""Per-feature moments of sparse codes (count, sum, sum of squares), whole or chunked."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from core.bundle.codes import SparseCodes
from core.matching.kernels import moments_numba

# a feature whose spread is below this fraction of its mean is constant to float32 precision
_CONSTANT_RTOL = 1e-6


@dataclass(frozen=True, eq=False)
class FeatureMoments:
    """Per-feature sufficient statistics of one SAE over a set of units.

    Attributes:
        n_units: number of units (rows) summarised.
        mean: float64 [F], mean activation over all units (zeros included).
        m2: float64 [F], centred sum of squares ``sum_u (x(u) - mean)^2``.
        n_fire: int64 [F], number of units where the feature is non-zero.
    """

    n_units: int
    mean: np.ndarray
    m2: np.ndarray
    n_fire: np.ndarray

    @property
    def n_features(self) -> int:
        """Number of features summarised."""
        return int(self.mean.shape[0])

    @property
    def sum(self) -> np.ndarray:
        """float64 [F]: total activation."""
        return self.mean * self.n_units

    @property
    def std(self) -> np.ndarray:
        """float64 [F]: population standard deviation."""
        return np.sqrt(self.m2 / max(self.n_units, 1))

    @property
    def freq(self) -> np.ndarray:
        """float64 [F]: share of units where the feature fires."""
        return self.n_fire / max(self.n_units, 1)

    @property
    def is_dead(self) -> np.ndarray:
        """bool [F]: zero variance (never fires, or constant): no correlation is defined."""
        return (self.n_fire == 0) | (self.std <= _CONSTANT_RTOL * np.abs(self.mean))

    def merge(self, other: FeatureMoments) -> FeatureMoments:
        """Combine the statistics of two disjoint unit sets (Chan et al.; associative).

        Args:
            other: moments of the same features over other units.

        Returns:
            The moments over both unit sets.
        """
        if other.n_features != self.n_features:
            raise ValueError("cannot merge moments of different feature counts")
        n1, n2 = self.n_units, other.n_units
        n = n1 + n2
        if n1 == 0 or n2 == 0:
            return other if n1 == 0 else self
        delta = other.mean - self.mean
        mean = self.mean + delta * (n2 / n)
        m2 = self.m2 + other.m2 + delta * delta * (n1 * n2 / n)
        return FeatureMoments(n, mean, m2, self.n_fire + other.n_fire)


# unit ranges the moments are summed over in parallel (see compute_moments)
MOMENT_PARTS = 16


def compute_moments(codes: SparseCodes) -> FeatureMoments:
    """Per-feature mean, centred sum of squares and firing count of one block of codes.

    Args:
        codes: CSR codes (one chunk, or a whole corpus).

    Returns:
        The :class:`FeatureMoments` of those units.
    """
    n, f = codes.n_rows, codes.n_features
    # a fixed number of unit ranges, whatever the thread count: the parts' merge order fixes the
    # float rounding, so the moments (and every correlation) are the same bits on 1 thread or 64,
    # in this process or on an engine's worker
    n_fire, mean, m2 = moments_numba(codes.indptr.astype(np.int64), codes.indices, codes.values, f, MOMENT_PARTS)
    return FeatureMoments(n, mean, m2, n_fire)


def compute_moments_chunked(codes: SparseCodes, chunk_units: int) -> FeatureMoments:
    """Moments of all units, computed chunk by chunk and merged (the engine's reference loop).

    Args:
        codes: CSR codes.
        chunk_units: units per chunk.

    Returns:
        The merged :class:`FeatureMoments`.
    """
    total: FeatureMoments | None = None
    for lo, hi in unit_chunks(codes.n_rows, chunk_units):
        part = compute_moments(codes.row_slice(lo, hi))
        total = part if total is None else total.merge(part)
    assert total is not None
    return total


def unit_chunks(n_units: int, chunk_units: int) -> Iterator[tuple[int, int]]:
    """Yield ``(lo, hi)`` unit ranges of at most ``chunk_units`` rows covering ``n_units``."""
    step = max(1, int(chunk_units))
    for lo in range(0, max(n_units, 1), step):
        yield lo, min(lo + step, n_units)
