"""Compiled (numba) loop of the RSA permutation null: a permuted upper-triangle inner product.

Like every kernel in core (matching/kernels.py, dashboards/kernels.py) it is decorated at module
level with ``njit(cache=True)`` and compiled on its first call. A loop, because the torch
route (index the [n, n] rank matrix by each permutation) copies n^2 floats per sample.
"""

from __future__ import annotations

import numpy as np
from numba import njit, prange


@njit(parallel=True, cache=True, nogil=True)
def permuted_triangle_dot(ra: np.ndarray, rb: np.ndarray, perms: np.ndarray) -> np.ndarray:  # pragma: no cover
    """``sum_{i<j} ra[i, j] * rb[p_i, p_j]`` for each row ``p`` of ``perms`` (float64 [n_perm])."""
    n_perm, n = perms.shape
    out = np.zeros(n_perm)
    for b in prange(n_perm):
        p = perms[b]
        acc = 0.0
        for i in range(n - 1):
            row_a = ra[i]
            row_b = rb[p[i]]
            s = 0.0
            for j in range(i + 1, n):
                s += row_a[j] * row_b[p[j]]
            acc += s
        out[b] = acc
    return out
