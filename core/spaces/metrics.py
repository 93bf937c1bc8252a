"""Similarity metrics on paired rows: SVCCA (99% rule or the paper's), RSA, linear CKA, Procrustes."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import scipy.linalg
from scipy import stats

from core.errors import SimilarityError
from core.spaces.settings import METRICS, SVCCA_RULES


def check_paired_rows(x: np.ndarray, y: np.ndarray, need_row_variance: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Check paired decoder rows and return them as float64.

    Args:
        x: [n, d_in_a] A rows, row ``i`` paired with row ``i`` of ``y``.
        y: [n, d_in_b] B rows.
        need_row_variance: refuse rows that are constant (RSA's correlation is undefined).

    Returns:
        ``(x, y)`` as float64 arrays.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 2 or y.ndim != 2:
        raise SimilarityError(
            f"Paired decoder rows must be 2-D [pairs, d_in] but have shapes {x.shape} and {y.shape}; pass W_dec rows."
        )
    if x.shape[0] != y.shape[0]:
        raise SimilarityError(
            f"Side A has {x.shape[0]} paired rows but side B has {y.shape[0]}; "
            "pass exactly one B feature per A feature."
        )
    if x.shape[0] < 3:
        raise SimilarityError(
            f"Only {x.shape[0]} feature pairs are left, but similarity needs at least 3; "
            "loosen the matching filters or use a larger corpus."
        )
    for side, rows in (("A", x), ("B", y)):
        bad = ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise SimilarityError(
                f"Side {side} has {int(bad.sum())} decoder rows with NaN or infinite values (first at pair "
                f"{int(np.flatnonzero(bad)[0])}); reload or retrain that SAE."
            )
        if need_row_variance:
            flat = np.ptp(rows, axis=1) == 0
            if flat.any():
                raise SimilarityError(
                    f"Side {side} has {int(flat.sum())} constant decoder rows "
                    f"(first at pair {int(np.flatnonzero(flat)[0])}), "
                    "whose correlations are undefined; drop dead features from the pairing."
                )
        if np.ptp(rows, axis=0).max() == 0:
            raise SimilarityError(
                f"All paired decoder rows of side {side} are identical; they carry no variance to compare."
            )
    return x, y


def check_pair_indices(
    idx_a: Sequence[int] | np.ndarray, idx_b: Sequence[int] | np.ndarray, d_sae_a: int, d_sae_b: int
) -> tuple[np.ndarray, np.ndarray]:
    """Check a pair list against the dictionary sizes.

    Args:
        idx_a: A feature of each pair.
        idx_b: B feature of each pair.
        d_sae_a: number of A features.
        d_sae_b: number of B features.

    Returns:
        ``(idx_a, idx_b)`` as int64 arrays.
    """
    ia = np.asarray(idx_a, dtype=np.int64).ravel()
    ib = np.asarray(idx_b, dtype=np.int64).ravel()
    if ia.shape != ib.shape:
        raise SimilarityError(
            f"The pair lists differ in length ({ia.size} A features, {ib.size} B features); "
            "pass one B feature per A feature."
        )
    for side, idx, size in (("A", ia, d_sae_a), ("B", ib, d_sae_b)):
        if idx.size and (idx.min() < 0 or idx.max() >= size):
            raise SimilarityError(
                f"A pair names {side} feature {int(idx.max() if idx.max() >= size else idx.min())}, "
                f"outside [0, {size}); "
                "the pairing does not belong to these decoders."
            )
    return ia, ib


def _center(x: np.ndarray) -> np.ndarray:
    return x - x.mean(axis=0, keepdims=True)


def count_components(singular_values: np.ndarray, variance: float = 0.99, rule: str = "variance") -> int:
    """How many leading singular directions SVCCA keeps.

    Args:
        singular_values: singular values of the centred rows, descending.
        variance: the variance fraction (0.99).
        rule: ``"variance"``: the fewest components whose share of the total variance reaches
            ``variance``. ``"paper"``: the reference implementation's rule, which compares the
            normalised cumulative share with ``variance`` times the UN-normalised total
            variance ``sum(s**2)``; when that total exceeds ``1 / variance`` no component
            qualifies and numpy's ``argmax`` of an all-False array returns 0, so it keeps 1.

    Returns:
        The number of components kept (at least 1).
    """
    s2 = np.asarray(singular_values, dtype=np.float64) ** 2
    total = s2.sum()
    if not total > 0:
        raise SimilarityError("The paired decoder rows have zero variance; SVCCA needs rows that differ.")
    cumulative = np.cumsum(s2 / total)
    if rule == "paper":
        return int(np.argmax(cumulative >= variance * total)) + 1
    if rule != "variance":
        raise ValueError(f"unknown SVCCA rule {rule!r}; choose from {SVCCA_RULES}")
    # a cumulative share that rounds to just under 1.0 must still reach variance=1.0
    reached = cumulative >= variance - 1e-12
    return int(np.argmax(reached)) + 1 if reached.any() else int(s2.size)


def svcca_forced_correlations(n: int, k_a: int, k_b: int) -> int:
    """How many of SVCCA's canonical correlations equal 1 by dimension counting alone.

    Centred rows of ``n`` pairs span at most ``n - 1`` dimensions. The kept directions of the two
    sides are subspaces of dimensions ``k_a`` and ``k_b`` in that space, so they share at least
    ``k_a + k_b - (n - 1)`` dimensions, each a canonical correlation of exactly 1 whatever the
    pairing. A value with any such correlation measures the counting, not the spaces: it is not
    testable (its permutation null has the same ones, so p is near 1 and says nothing).

    Args:
        n: paired rows.
        k_a: directions kept on side A.
        k_b: directions kept on side B.

    Returns:
        The number of forced ones (0 when the value is testable).
    """
    return max(0, int(k_a) + int(k_b) - (int(n) - 1))


def svcca_untestable_reason(n: int, k_a: int, k_b: int) -> str | None:
    """Why an SVCCA value is not testable (None when it is): see :func:`svcca_forced_correlations`."""
    forced = svcca_forced_correlations(n, k_a, k_b)
    if not forced:
        return None
    return (
        f"not testable: {k_a} + {k_b} kept directions exceed the {n - 1} dimensions that {n} pairs span, "
        f"so {min(forced, k_a, k_b)} of {min(k_a, k_b)} canonical correlations are 1 by construction"
    )


@dataclass(frozen=True, eq=False)
class SVCCAResult:
    """SVCCA of paired rows.

    Attributes:
        value: mean canonical correlation.
        k_a: singular directions kept on side A.
        k_b: singular directions kept on side B.
        correlations: the ``min(k_a, k_b)`` canonical correlations, descending.
        rule: component rule (``variance`` or ``paper``).
        variance: the variance fraction the rule used.
    """

    value: float
    k_a: int
    k_b: int
    correlations: np.ndarray
    rule: str
    variance: float


def compute_svcca(x: np.ndarray, y: np.ndarray, variance: float = 0.99, rule: str = "variance") -> SVCCAResult:
    """SVCCA between paired rows (rows are samples, columns are dimensions).

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.
        variance: variance fraction kept on each side.
        rule: component rule, ``"variance"`` (correct) or ``"paper"`` (see :func:`count_components`).

    Returns:
        The value, ``k_a``, ``k_b`` and the canonical correlations.
    """
    x, y = check_paired_rows(x, y, need_row_variance=False)
    u_a, s_a, _ = np.linalg.svd(_center(x), full_matrices=False)
    u_b, s_b, _ = np.linalg.svd(_center(y), full_matrices=False)
    k_a = count_components(s_a, variance, rule)
    k_b = count_components(s_b, variance, rule)
    # the kept score columns are orthogonal, so whitening them is just taking U: canonical
    # correlations are the singular values of U_a^T U_b on the kept directions
    rho = np.clip(np.linalg.svd(u_a[:, :k_a].T @ u_b[:, :k_b], compute_uv=False), 0.0, 1.0)
    return SVCCAResult(float(rho.mean()), k_a, k_b, rho, rule, float(variance))


def _row_correlation_matrix(x: np.ndarray) -> np.ndarray:
    z = x - x.mean(axis=1, keepdims=True)
    z /= np.linalg.norm(z, axis=1, keepdims=True)
    return z @ z.T


def _centered_triangle_ranks(x: np.ndarray) -> np.ndarray:
    # Spearman is Pearson on (average) ranks; centring makes the permuted inner product the covariance
    rsm = _row_correlation_matrix(x)
    iu = np.triu_indices(x.shape[0], 1)
    # rounding far below float32 input precision makes mathematically equal correlations
    # (duplicated rows from many-to-1 pairings) exact ties whatever the summation order
    ranks = stats.rankdata(np.round(rsm[iu], 12))
    return ranks - ranks.mean()


def compute_rsa(x: np.ndarray, y: np.ndarray) -> float:
    """RSA: Spearman correlation between the two RSMs (Pearson correlation between rows).

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.

    Returns:
        Spearman's rho over the ``n (n - 1) / 2`` upper-triangle entries.
    """
    x, y = check_paired_rows(x, y)
    ra = _centered_triangle_ranks(x)
    rb = _centered_triangle_ranks(y)
    return float(ra @ rb / np.sqrt((ra @ ra) * (rb @ rb)))


def compute_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Linear CKA (Kornblith et al. 2019) between paired rows.

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.

    Returns:
        ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)`` in [0, 1].
    """
    x, y = check_paired_rows(x, y, need_row_variance=False)
    xc, yc = _center(x), _center(y)
    num = np.linalg.norm(yc.T @ xc) ** 2
    return float(num / (np.linalg.norm(xc.T @ xc) * np.linalg.norm(yc.T @ yc)))


@dataclass(frozen=True)
class ProcrustesResult:
    """Orthogonal Procrustes comparison of centred, unit-Frobenius rows.

    Attributes:
        value: the similarity, ``sum of singular values of Xn^T Yn`` = ``1 - disparity / 2``.
        disparity: ``min_R ||Xn R - Yn||_F^2`` over orthogonal ``R`` (0 identical, 2 at worst).
    """

    value: float
    disparity: float


def compute_procrustes(x: np.ndarray, y: np.ndarray) -> ProcrustesResult:
    """Orthogonal Procrustes similarity between paired rows (scipy's ``orthogonal_procrustes``).

    Both sides are centred and scaled to unit Frobenius norm; the narrower side is zero-padded
    to the wider one's width (padding changes no distance), so ``d_in`` may differ.

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.

    Returns:
        The similarity in [0, 1] and the Procrustes disparity.
    """
    x, y = check_paired_rows(x, y, need_row_variance=False)
    xn, yn = _center(x), _center(y)
    xn /= np.linalg.norm(xn)
    yn /= np.linalg.norm(yn)
    width = max(xn.shape[1], yn.shape[1])
    xn = np.pad(xn, ((0, 0), (0, width - xn.shape[1])))
    yn = np.pad(yn, ((0, 0), (0, width - yn.shape[1])))
    rotation, scale = scipy.linalg.orthogonal_procrustes(xn, yn)
    disparity = float(np.linalg.norm(xn @ rotation - yn) ** 2)
    return ProcrustesResult(float(scale), disparity)


def compute_metric(metric: str, x: np.ndarray, y: np.ndarray, variance: float = 0.99) -> float:
    """One decoder metric by name, computed directly in float64.

    Args:
        metric: one of :data:`METRICS`.
        x: [n, d_a] A rows.
        y: [n, d_b] B rows.
        variance: SVCCA's variance fraction.

    Returns:
        The metric's value.
    """
    if metric == "svcca":
        return compute_svcca(x, y, variance, "variance").value
    if metric == "svcca_paper":
        return compute_svcca(x, y, variance, "paper").value
    if metric == "rsa":
        return compute_rsa(x, y)
    if metric == "cka":
        return compute_linear_cka(x, y)
    if metric == "procrustes":
        return compute_procrustes(x, y).value
    raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")


PairIndices = tuple[np.ndarray, np.ndarray]
