"""How similar are two SAE feature spaces? Metrics on paired decoder rows, with honest nulls.

Given ``n`` matched pairs, ``X`` [n, d_in_a] holds the A decoder rows and ``Y`` [n, d_in_b]
the B rows of the same pairs (row ``i`` of both is pair ``i``). Rows are the samples:

- SVCCA: centre the columns, keep the top singular directions of each side that explain
  ``variance`` (99%) of its variance (``k_a``, ``k_b``), then the mean canonical correlation
  between the two kept subspaces. ``svcca_paper`` keeps what the reference implementation of
  Lan et al. keeps (its rule compares the normalised cumulative variance with 0.99 times the
  UN-normalised total, so on decoder rows it keeps one component).
- RSA: Spearman correlation between the two representational similarity matrices (each the
  Pearson correlation between rows), over the upper triangle.
- linear CKA: ``||Yc^T Xc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F)``.
- Procrustes: the sum of singular values of ``Xn^T Yn`` with ``Xn``, ``Yn`` centred and scaled
  to unit Frobenius norm (zero-padded to a common width): ``1 - d^2 / 2`` where ``d`` is the
  orthogonal Procrustes distance (scipy's ``orthogonal_procrustes``).

Nulls shuffle the B side (permutation), draw random feature subsets, or (for concept
subspaces) draw random same-size subsets of the matched pairs. What a permutation cannot
change is computed once: the SVD of each side (the null of SVCCA, CKA and Procrustes is then
one matrix product ``U_a^T P U_b`` and a small SVD per sample) and the rank matrices of both
RSMs (the null of RSA is then a permuted inner product, a compiled loop on the CPU and a
gather on the GPU).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import scipy.linalg
import torch
from scipy import stats

from core.bundle.reader import Bundle, add_parts, open_bundle
from core.device import resolve_device
from core.errors import BundleError, SimilarityError, SpecError
from core.progress import ProgressFn, no_progress
from core.spaces.concepts import CONCEPT_MATCH, DEFAULT_CONCEPTS_PATH, load_concept_groups, select_concept_pairs
from core.spaces.stats import (
    adjust_bh,
    adjust_bonferroni,
    bootstrap_pair_correlations,
    compute_document_sums,
    compute_pair_correlations,
    percentile_interval,
    permutation_p_value,
)

METRICS = ("svcca", "svcca_paper", "rsa", "cka", "procrustes")
# matched_corr needs the pairing's activation correlations, so only the bundle stage has it
BUNDLE_METRICS = (*METRICS, "matched_corr")
NULL_KINDS = ("permutation", "random_subset")
CORRECTIONS = ("bh", "bonferroni")
NULL_DTYPES = ("float32", "float64")
SVCCA_RULES = ("variance", "paper")
SIMILARITY_SCHEMA = 1

_GRAM_METRICS = ("svcca", "svcca_paper", "cka", "procrustes")


# ----------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class SimilaritySettings:
    """What the similarity stage computes, and how hard it tries.

    Attributes:
        metrics: subset of ``svcca``, ``svcca_paper``, ``rsa``, ``cka``, ``procrustes``,
            ``matched_corr`` (the last only in the bundle stage).
        n_null: permutation null samples per metric (0 skips the null).
        seed: seed of every random draw (permutations, subsets, bootstrap).
        variance: variance fraction SVCCA keeps on each side, in (0, 1].
        nulls: null kinds, ``permutation`` (always first) and optionally ``random_subset``
            (random features of the whole dictionaries; recomputes everything per sample).
        n_null_subset: samples of the random-subset null.
        n_boot: document bootstrap draws for the matched correlation's interval (0: none).
        n_boot_metrics: document bootstrap draws for the decoder metrics' intervals (0: none;
            each draw recomputes the metrics on the pairs still above ``boot_min_corr``).
        boot_min_corr: a pair stays in a metrics bootstrap draw while its resampled
            activation correlation exceeds this.
        ci_level: coverage of bootstrap intervals.
        rsa_max_pairs: RSA (an n x n matrix per side) uses a seeded random subset of at most
            this many pairs.
        concepts: compute concept subspaces in the bundle stage.
        concepts_path: keyword-group JSON; ``None`` uses ``assets/concepts.json``.
        concept_match: ``either``, ``both``, ``a`` or ``b``: whose top tokens must hit a keyword.
        concept_top_n: top tokens looked at per feature.
        min_concept_pairs: concepts with fewer pairs are reported but not tested.
        n_null_concepts: null samples per concept (permutation and subspace nulls).
        correction: multiplicity correction behind ``significant`` (``bh`` or ``bonferroni``;
            both adjusted p-values are always reported).
        alpha: significance level for ``significant``.
        null_dtype: float precision of null samples (observed values are always float64).
        chunk: permutations computed per batched product (memory vs speed).
    """

    metrics: tuple[str, ...] = BUNDLE_METRICS
    n_null: int = 1000
    seed: int = 0
    variance: float = 0.99
    nulls: tuple[str, ...] = ("permutation",)
    n_null_subset: int = 100
    n_boot: int = 1000
    n_boot_metrics: int = 0
    boot_min_corr: float = 0.1
    ci_level: float = 0.95
    rsa_max_pairs: int = 6000
    concepts: bool = True
    concepts_path: str | None = None
    concept_match: str = "either"
    concept_top_n: int = 5
    min_concept_pairs: int = 5
    n_null_concepts: int = 200
    correction: str = "bh"
    alpha: float = 0.05
    null_dtype: str = "float32"
    chunk: int = 8

    def __post_init__(self) -> None:
        for name in ("metrics", "nulls"):
            value = getattr(self, name)
            if isinstance(value, str):
                value = (value,)
            object.__setattr__(self, name, tuple(value))
        bad = [m for m in self.metrics if m not in BUNDLE_METRICS]
        if bad or not self.metrics:
            raise SpecError(
                f"Unknown similarity metric {bad[0] if bad else '(none)'!r}; choose from {', '.join(BUNDLE_METRICS)}."
            )
        bad = [k for k in self.nulls if k not in NULL_KINDS]
        if bad or "permutation" not in self.nulls:
            raise SpecError(
                f"Null kinds {list(self.nulls)} are not allowed; choose from {', '.join(NULL_KINDS)} "
                "and include 'permutation'."
            )
        for name in ("n_null", "n_null_subset", "n_boot", "n_boot_metrics", "n_null_concepts"):
            if int(getattr(self, name)) < 0:
                raise SpecError(f"{name} must be 0 or more, got {getattr(self, name)}; pass a non-negative count.")
        if not 0.0 < self.variance <= 1.0:
            raise SpecError(f"variance must lie in (0, 1], got {self.variance}; 0.99 is the usual choice.")
        if not 0.0 < self.ci_level < 1.0:
            raise SpecError(f"ci_level must lie in (0, 1), got {self.ci_level}; 0.95 is the usual choice.")
        if not 0.0 < self.alpha < 1.0:
            raise SpecError(f"alpha must lie in (0, 1), got {self.alpha}; 0.05 is the usual choice.")
        if self.rsa_max_pairs < 3:
            raise SpecError(f"rsa_max_pairs must be at least 3, got {self.rsa_max_pairs}.")
        if self.concept_match not in CONCEPT_MATCH:
            raise SpecError(
                f"concept_match {self.concept_match!r} is unknown; choose one of {', '.join(CONCEPT_MATCH)}."
            )
        if self.concept_top_n < 1 or self.min_concept_pairs < 3:
            raise SpecError("concept_top_n must be at least 1 and min_concept_pairs at least 3; raise them.")
        if self.correction not in CORRECTIONS:
            raise SpecError(f"correction {self.correction!r} is unknown; choose one of {', '.join(CORRECTIONS)}.")
        if self.null_dtype not in NULL_DTYPES:
            raise SpecError(f"null_dtype {self.null_dtype!r} is unknown; choose one of {', '.join(NULL_DTYPES)}.")
        if self.chunk < 1:
            raise SpecError(f"chunk must be at least 1, got {self.chunk}.")

    @property
    def decoder_metrics(self) -> tuple[str, ...]:
        """The requested metrics that are computed on decoder rows (all but ``matched_corr``)."""
        return tuple(m for m in self.metrics if m in METRICS)


# ----------------------------------------------------------------------------- input checks


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


# ----------------------------------------------------------------------------- metrics (float64, direct)


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


# ----------------------------------------------------------------------------- prepared nulls


@dataclass(frozen=True, eq=False)
class PreparedPairs:
    """What a permutation of the B side leaves unchanged, computed once.

    Attributes:
        n: number of pairs.
        u_a: [n, r_a] left singular vectors of the centred A rows (device, null dtype).
        s_a: [r_a] singular values of the centred A rows.
        u_b: [n, r_b] likewise for B.
        s_b: [r_b].
        k_a, k_b: SVCCA components kept by the variance rule.
        kp_a, kp_b: SVCCA components kept by the paper's rule.
        rank_a, rank_b: [n_rsa, n_rsa] centred ranks of the RSM upper triangles, mirrored,
            zero diagonal (float32; numpy on the CPU, a tensor on the GPU), or None.
        rank_scale: ``sqrt(sum_{i<j} ra^2 * sum_{i<j} rb^2)``, the Spearman denominator.
        rsa_rows: the pair positions RSA uses (all, or a seeded subset).
        rsa_value: the observed RSA on those rows (float64).
        device: where the null samples are computed.
    """

    n: int
    u_a: torch.Tensor | None
    s_a: torch.Tensor | None
    u_b: torch.Tensor | None
    s_b: torch.Tensor | None
    k_a: int
    k_b: int
    kp_a: int
    kp_b: int
    rank_a: Any
    rank_b: Any
    rank_scale: float
    rsa_rows: np.ndarray | None
    rsa_value: float
    device: torch.device


def _dtype(name: str) -> torch.dtype:
    return torch.float32 if name == "float32" else torch.float64


def _rank_matrix(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = x.shape[0]
    tri = _centered_triangle_ranks(x)
    full = np.zeros((n, n), dtype=np.float32)
    iu = np.triu_indices(n, 1)
    full[iu] = tri
    full.T[iu] = tri
    return full, tri


def prepare_pairs(
    x: np.ndarray,
    y: np.ndarray,
    metrics: Sequence[str] = METRICS,
    variance: float = 0.99,
    device: torch.device | str = "cpu",
    null_dtype: str = "float32",
    rsa_max_pairs: int = 6000,
    seed: int = 0,
) -> PreparedPairs:
    """Compute once what every permutation null sample reuses.

    Args:
        x: [n, d_a] A rows.
        y: [n, d_b] B rows, paired with ``x`` by row.
        metrics: the metrics whose nulls will be drawn.
        variance: SVCCA's variance fraction.
        device: torch device (or ``"auto"``/``"cpu"``/``"cuda"``).
        null_dtype: ``"float32"`` or ``"float64"`` for the null samples.
        rsa_max_pairs: RSA uses a seeded random subset of at most this many pairs.
        seed: seed of that subset.

    Returns:
        The prepared pairs.
    """
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    n = x.shape[0]
    dtype = _dtype(null_dtype)
    u_a = s_a = u_b = s_b = None
    k_a = k_b = kp_a = kp_b = 0
    if any(m in metrics for m in _GRAM_METRICS):
        ua, sa, _ = torch.linalg.svd(torch.from_numpy(_center(x)).to(device), full_matrices=False)
        ub, sb, _ = torch.linalg.svd(torch.from_numpy(_center(y)).to(device), full_matrices=False)
        sa_np, sb_np = sa.cpu().numpy(), sb.cpu().numpy()
        k_a, k_b = count_components(sa_np, variance), count_components(sb_np, variance)
        kp_a, kp_b = count_components(sa_np, variance, "paper"), count_components(sb_np, variance, "paper")
        u_a, s_a, u_b, s_b = ua.to(dtype), sa.to(dtype), ub.to(dtype), sb.to(dtype)
    rank_a = rank_b = rsa_rows = None
    rank_scale = rsa_value = float("nan")
    if "rsa" in metrics:
        rsa_rows = np.arange(n)
        if n > rsa_max_pairs:
            rsa_rows = np.sort(np.random.default_rng([seed, 3]).choice(n, rsa_max_pairs, replace=False))
        rank_a, tri_a = _rank_matrix(x[rsa_rows])
        rank_b, tri_b = _rank_matrix(y[rsa_rows])
        rank_scale = float(np.sqrt((tri_a @ tri_a) * (tri_b @ tri_b)))
        rsa_value = float(tri_a @ tri_b / rank_scale)
        if device.type != "cpu":
            rank_a = torch.from_numpy(rank_a).to(device)
            rank_b = torch.from_numpy(rank_b).to(device)
    return PreparedPairs(
        n, u_a, s_a, u_b, s_b, k_a, k_b, kp_a, kp_b, rank_a, rank_b, rank_scale, rsa_rows, rsa_value, device
    )


_NUMBA_KERNEL: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray] | None = None


def _permuted_triangle_dot_numba() -> Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    # numba comes with umap-learn; compiled lazily so importing core stays fast
    global _NUMBA_KERNEL
    if _NUMBA_KERNEL is None:
        import numba

        @numba.njit(parallel=True, cache=True)
        def kernel(ra: np.ndarray, rb: np.ndarray, perms: np.ndarray) -> np.ndarray:  # pragma: no cover - compiled
            n_perm, n = perms.shape
            out = np.zeros(n_perm)
            for b in numba.prange(n_perm):
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

        _NUMBA_KERNEL = kernel
    return _NUMBA_KERNEL


def permuted_triangle_dot(rank_a: Any, rank_b: Any, perms: np.ndarray) -> np.ndarray:
    """``sum_{i<j} A[i, j] * B[p_i, p_j]`` for each permutation ``p`` (symmetric A, B).

    Args:
        rank_a: [n, n] symmetric float32 matrix (numpy for the CPU kernel, or a tensor).
        rank_b: [n, n] symmetric float32 matrix, same kind as ``rank_a``.
        perms: int64 [n_perm, n] permutations.

    Returns:
        float64 [n_perm].
    """
    if isinstance(rank_a, torch.Tensor):
        out = np.empty(len(perms))
        for i, perm in enumerate(perms):
            p = torch.from_numpy(perm).to(rank_b.device)
            permuted = rank_b.index_select(0, p).index_select(1, p)
            # full sum counts each off-diagonal pair twice; the diagonals are zero
            out[i] = 0.5 * float(torch.sum(rank_a * permuted, dtype=torch.float64))
        return out
    return _permuted_triangle_dot_numba()(rank_a, rank_b, np.ascontiguousarray(perms, dtype=np.int64))


def _singular_values(g: torch.Tensor) -> torch.Tensor:
    """Singular values of a batch [c, p, q] via the eigenvalues of the smaller Gram matrix.

    Two to three times faster than ``svdvals`` on the CPU. In float32 the mean singular value
    moves by about 1e-7 against float64 (3000 pairs, 384 vs 576), far below any null's spread.
    """
    gram = g @ g.mT if g.shape[-2] <= g.shape[-1] else g.mT @ g
    return torch.linalg.eigvalsh(gram).clamp(min=0).sqrt()


def _gather_rows(u: torch.Tensor, perms: np.ndarray) -> torch.Tensor:
    # [c, n, r]; numpy's take is several times faster than torch fancy indexing on the CPU
    if u.device.type == "cpu":
        return torch.from_numpy(np.take(u.contiguous().numpy(), perms, axis=0))
    return u[torch.from_numpy(perms).to(u.device)]


def _gram_metrics_batch(prep: PreparedPairs, metrics: Sequence[str], perms: np.ndarray) -> dict[str, torch.Tensor]:
    # columns of U each metric needs: SVCCA only its kept directions, CKA/Procrustes all
    need_full = any(m in metrics for m in ("cka", "procrustes"))
    ra = (
        prep.u_a.shape[1]
        if need_full
        else max(prep.k_a if "svcca" in metrics else 0, prep.kp_a if "svcca_paper" in metrics else 0)
    )
    rb = (
        prep.u_b.shape[1]
        if need_full
        else max(prep.k_b if "svcca" in metrics else 0, prep.kp_b if "svcca_paper" in metrics else 0)
    )
    # G = U_a^T P U_b. Shuffling B by p equals shuffling A by p's inverse, so gather the
    # narrower side: the gather is memory-bound and costs as much as a third of the product
    if ra <= rb:
        inverse = np.argsort(perms, axis=1)
        g = torch.matmul(_gather_rows(prep.u_a[:, :ra], inverse).mT, prep.u_b[:, :rb])  # [c, ra, rb]
    else:
        g = torch.matmul(prep.u_a[:, :ra].T, _gather_rows(prep.u_b[:, :rb], perms))
    out: dict[str, torch.Tensor] = {}
    if "svcca" in metrics:
        out["svcca"] = _singular_values(g[:, : prep.k_a, : prep.k_b]).clamp(0, 1).mean(-1)
    if "svcca_paper" in metrics:
        out["svcca_paper"] = _singular_values(g[:, : prep.kp_a, : prep.kp_b]).clamp(0, 1).mean(-1)
    if need_full:
        sa, sb = prep.s_a, prep.s_b
        if "procrustes" in metrics:
            w = (
                (sa / torch.linalg.vector_norm(sa))[None, :, None]
                * g
                * (sb / torch.linalg.vector_norm(sb))[None, None, :]
            )
            out["procrustes"] = _singular_values(w).sum(-1)
        if "cka" in metrics:
            w = sa[None, :, None] * g * sb[None, None, :]
            denom = torch.sqrt(torch.sum(sa**4)) * torch.sqrt(torch.sum(sb**4))
            out["cka"] = (w * w).sum((-2, -1)) / denom
    return out


def compute_permutation_nulls(
    prep: PreparedPairs,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    chunk: int = 8,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Null distributions from shuffling the B side of the pairing.

    Permutations come from numpy generators seeded with ``[seed, 1]`` (SVCCA, CKA,
    Procrustes) and ``[seed, 2]`` (RSA), so a seed gives the same nulls on any device.

    Args:
        prep: from :func:`prepare_pairs` (with the same metrics).
        metrics: which nulls to draw (subset of :data:`METRICS`).
        n_null: samples per metric.
        seed: seed of the permutations.
        chunk: permutations per batched matrix product.
        progress: optional progress callback (``"null"``, done, total).

    Returns:
        metric -> float64 [n_null] null samples.
    """
    progress = progress or no_progress
    gram = [m for m in metrics if m in _GRAM_METRICS]
    out = {m: np.empty(n_null) for m in metrics}
    rng = np.random.default_rng([seed, 1])
    total = n_null * (bool(gram) + ("rsa" in metrics))
    done = 0
    if gram:
        for start in range(0, n_null, chunk):
            c = min(chunk, n_null - start)
            perms = rng.permuted(np.tile(np.arange(prep.n), (c, 1)), axis=1)
            with torch.no_grad():
                batch = _gram_metrics_batch(prep, gram, perms)
            for m, v in batch.items():
                out[m][start : start + c] = v.double().cpu().numpy()
            done += c
            progress("null", done, total)
    if "rsa" in metrics:
        rng_rsa = np.random.default_rng([seed, 2])
        n_rsa = len(prep.rsa_rows)
        step = max(chunk, 32)
        for start in range(0, n_null, step):
            c = min(step, n_null - start)
            perms = rng_rsa.permuted(np.tile(np.arange(n_rsa), (c, 1)), axis=1)
            out["rsa"][start : start + c] = permuted_triangle_dot(prep.rank_a, prep.rank_b, perms) / prep.rank_scale
            done += c
            progress("null", done, total)
    return out


def compute_random_subset_null(
    decoder_a: np.ndarray,
    decoder_b: np.ndarray,
    n_pairs: int,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    variance: float = 0.99,
    progress: ProgressFn | None = None,
) -> dict[str, np.ndarray]:
    """Null of random feature subsets: ``n_pairs`` random A rows paired with random B rows.

    Each sample recomputes every metric from scratch (nothing is shared between subsets),
    so keep ``n_null`` modest. Rows that are non-finite or constant are never drawn.

    Args:
        decoder_a: full ``W_dec`` of side A [d_sae_a, d_in_a].
        decoder_b: full ``W_dec`` of side B [d_sae_b, d_in_b].
        n_pairs: pairs per sample (the size of the real pairing).
        metrics: which metrics.
        n_null: samples.
        seed: seed (generator ``[seed, 4]``).
        variance: SVCCA's variance fraction.
        progress: optional progress callback.

    Returns:
        metric -> float64 [n_null].
    """
    progress = progress or no_progress
    valid_a = np.flatnonzero(np.isfinite(decoder_a).all(1) & (np.ptp(decoder_a, axis=1) > 0))
    valid_b = np.flatnonzero(np.isfinite(decoder_b).all(1) & (np.ptp(decoder_b, axis=1) > 0))
    if min(valid_a.size, valid_b.size) < n_pairs:
        raise SimilarityError(
            f"A random-subset null needs {n_pairs} usable features per side but there are {valid_a.size} and "
            f"{valid_b.size}; drop 'random_subset' from the nulls."
        )
    rng = np.random.default_rng([seed, 4])
    out = {m: np.empty(n_null) for m in metrics}
    for i in range(n_null):
        xa = decoder_a[rng.choice(valid_a, n_pairs, replace=False)]
        yb = decoder_b[rng.choice(valid_b, n_pairs, replace=False)]
        for m in metrics:
            out[m][i] = compute_metric(m, xa, yb, variance)
        progress("random-subset null", i + 1, n_null)
    return out


def compute_subspace_null(
    x: np.ndarray,
    y: np.ndarray,
    size: int,
    metrics: Sequence[str],
    n_null: int,
    seed: int = 0,
    variance: float = 0.99,
    extra: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Null of random subspaces: random ``size``-subsets of the matched pairs, partners kept.

    Args:
        x: [n, d_a] A rows of all matched pairs.
        y: [n, d_b] B rows of the same pairs.
        size: pairs per sample (the concept's size).
        metrics: decoder metrics to compute per sample.
        n_null: samples.
        seed: seed (generator ``[seed, 5, size]``).
        variance: SVCCA's variance fraction.
        extra: optional [n] per-pair values (the matched correlation) whose subset mean is
            reported as metric ``matched_corr``.

    Returns:
        metric -> float64 [n_null].
    """
    rng = np.random.default_rng([seed, 5, size])
    names = list(metrics) + (["matched_corr"] if extra is not None else [])
    out = {m: np.empty(n_null) for m in names}
    for i in range(n_null):
        rows = rng.choice(x.shape[0], size, replace=False)
        for m in metrics:
            out[m][i] = compute_metric(m, x[rows], y[rows], variance)
        if extra is not None:
            out["matched_corr"][i] = float(np.mean(extra[rows]))
    return out


# ----------------------------------------------------------------------------- results


@dataclass(frozen=True, eq=False)
class NullResult:
    """A null distribution summarised against the observed value.

    Attributes:
        kind: ``permutation``, ``random_subset`` or ``subspace``.
        n: number of samples.
        seed: seed of the draws.
        mean: null mean.
        std: null standard deviation (ddof 1).
        p_value: ``(b + 1) / (n + 1)``.
        samples: the samples (kept in memory, not written to JSON).
    """

    kind: str
    n: int
    seed: int
    mean: float
    std: float
    p_value: float
    samples: np.ndarray = field(repr=False)

    @classmethod
    def from_samples(cls, kind: str, samples: np.ndarray, value: float, seed: int) -> NullResult:
        """Summarise null samples against an observed value."""
        s = np.asarray(samples, dtype=np.float64)
        return cls(
            kind,
            int(s.size),
            int(seed),
            float(s.mean()) if s.size else float("nan"),
            float(s.std(ddof=1)) if s.size > 1 else float("nan"),
            permutation_p_value(value, s) if s.size else float("nan"),
            s,
        )

    def to_json(self) -> dict[str, Any]:
        """The JSON form (no samples)."""
        return {
            "null_kind": self.kind,
            "n_null": self.n,
            "seed": self.seed,
            "null_mean": _f(self.mean),
            "null_std": _f(self.std),
            "p_value": _f(self.p_value),
        }


@dataclass(frozen=True, eq=False)
class MetricResult:
    """One metric with its nulls and interval.

    Attributes:
        metric: the metric's name.
        value: observed value (float64).
        n_pairs: pairs it was computed on.
        details: method details (``k_a``/``k_b``/``variance_rule`` for SVCCA, ...).
        nulls: null results, the primary (permutation) first; may be empty.
        ci_low: lower bootstrap bound, or NaN.
        ci_high: upper bootstrap bound, or NaN.
        ci_kind: how the interval was made (``document bootstrap``), or ``None``.
        n_boot: bootstrap draws behind the interval.
    """

    metric: str
    value: float
    n_pairs: int
    details: dict[str, Any]
    nulls: tuple[NullResult, ...] = ()
    ci_low: float = float("nan")
    ci_high: float = float("nan")
    ci_kind: str | None = None
    n_boot: int = 0

    @property
    def primary(self) -> NullResult | None:
        """The primary null (the permutation null), if one was drawn."""
        return self.nulls[0] if self.nulls else None

    def to_json(self, ci_level: float) -> dict[str, Any]:
        """The JSON form written into similarity.json."""
        primary = self.primary
        body: dict[str, Any] = {
            "value": _f(self.value),
            "n_pairs": self.n_pairs,
            "null_kind": primary.kind if primary else None,
            "null_mean": _f(primary.mean) if primary else None,
            "null_std": _f(primary.std) if primary else None,
            "n_null": primary.n if primary else 0,
            "p_value": _f(primary.p_value) if primary else None,
            "seed": primary.seed if primary else None,
            "details": self.details,
            "other_nulls": [nr.to_json() for nr in self.nulls[1:]],
            "ci_low": _f(self.ci_low),
            "ci_high": _f(self.ci_high),
            "ci_level": ci_level if self.ci_kind else None,
            "ci_kind": self.ci_kind,
            "n_boot": self.n_boot,
        }
        return body


def _f(v: float) -> float | None:
    # JSON has no NaN; a missing number is null
    return None if v is None or not np.isfinite(v) else float(v)


def _svcca_details(k_a: int, k_b: int, variance: float, rule: str, n: int) -> dict[str, Any]:
    if rule == "paper":
        text = (
            f"paper rule: keep components while cumulative share < {variance} x total variance "
            "(un-normalised; keeps 1 when total variance > 1/variance), as the reference implementation does"
        )
    else:
        text = f"keep the fewest components explaining {variance:.0%} of each side's variance"
    return {
        "k_a": k_a,
        "k_b": k_b,
        "variance": variance,
        "variance_rule": text,
        "rule": rule,
        "n_correlations": min(k_a, k_b),
        "n": n,
    }


def compute_similarity(
    x: np.ndarray,
    y: np.ndarray,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
    decoder_a: np.ndarray | None = None,
    decoder_b: np.ndarray | None = None,
) -> dict[str, MetricResult]:
    """Every requested decoder metric on paired rows, each with its nulls.

    Args:
        x: [n, d_a] A decoder rows of the matched pairs.
        y: [n, d_b] B decoder rows, paired with ``x`` by row.
        settings: what to compute (``matched_corr`` is ignored here).
        device: torch device or ``"auto"``/``"cpu"``/``"cuda"``.
        progress: optional progress callback.
        decoder_a: full A decoder, needed only for the ``random_subset`` null.
        decoder_b: full B decoder, likewise.

    Returns:
        metric -> :class:`MetricResult`, in :data:`METRICS` order.
    """
    settings = settings or SimilaritySettings()
    metrics = settings.decoder_metrics
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    n = x.shape[0]
    prep = prepare_pairs(
        x, y, metrics, settings.variance, device, settings.null_dtype, settings.rsa_max_pairs, settings.seed
    )
    nulls: dict[str, list[NullResult]] = {m: [] for m in metrics}
    values: dict[str, float] = {}
    details: dict[str, dict[str, Any]] = {}
    for m in metrics:
        if m in ("svcca", "svcca_paper"):
            rule = "variance" if m == "svcca" else "paper"
            res = compute_svcca(x, y, settings.variance, rule)
            values[m] = res.value
            details[m] = _svcca_details(res.k_a, res.k_b, settings.variance, rule, n)
        elif m == "rsa":
            values[m] = prep.rsa_value
            n_rsa = len(prep.rsa_rows)
            details[m] = {
                "inner": "pearson correlation between rows",
                "outer": "spearman over the upper triangle",
                "n_rsa_pairs": n_rsa,
                "subsampled": bool(n_rsa < n),
            }
        elif m == "cka":
            values[m] = compute_linear_cka(x, y)
            details[m] = {"kind": "linear", "centered": True}
        elif m == "procrustes":
            res_p = compute_procrustes(x, y)
            values[m] = res_p.value
            details[m] = {
                "disparity": res_p.disparity,
                "normalisation": "centred, unit Frobenius norm",
                "padding": "zero-pad the narrower side",
                "similarity": "1 - disparity / 2",
            }
    if settings.n_null:
        samples = compute_permutation_nulls(prep, metrics, settings.n_null, settings.seed, settings.chunk, progress)
        for m in metrics:
            nulls[m].append(NullResult.from_samples("permutation", samples[m], values[m], settings.seed))
    if "random_subset" in settings.nulls and settings.n_null_subset:
        if decoder_a is None or decoder_b is None:
            raise SimilarityError("The random-subset null needs the full decoders; pass decoder_a and decoder_b.")
        samples = compute_random_subset_null(
            decoder_a, decoder_b, n, metrics, settings.n_null_subset, settings.seed, settings.variance, progress
        )
        for m in metrics:
            nulls[m].append(NullResult.from_samples("random_subset", samples[m], values[m], settings.seed))
    return {
        m: MetricResult(m, values[m], len(prep.rsa_rows) if m == "rsa" else n, details[m], tuple(nulls[m]))
        for m in metrics
    }


# ----------------------------------------------------------------------------- concepts


def compute_concept_similarity(
    x: np.ndarray,
    y: np.ndarray,
    concept_rows: Mapping[str, np.ndarray],
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    pair_corr: np.ndarray | None = None,
    progress: ProgressFn | None = None,
) -> pl.DataFrame:
    """Metrics per concept subspace, each against its own nulls, adjusted across concepts.

    For each concept with at least ``min_concept_pairs`` pairs: every decoder metric on the
    concept's pairs, with (1) a permutation null that shuffles the B side within the concept
    and (2) a subspace null of random same-size subsets of all matched pairs (partners kept).
    Bonferroni and Benjamini-Hochberg adjust each metric's p-values across the tested concepts.

    Args:
        x: [n, d_a] A rows of all matched pairs.
        y: [n, d_b] B rows of the same pairs.
        concept_rows: concept -> pair positions (from :func:`core.concepts.select_concept_pairs`).
        settings: metrics, ``n_null_concepts``, seed, thresholds.
        device: torch device or name.
        pair_corr: optional [n] matched activation correlation per pair (adds ``matched_corr``,
            tested with the subspace null only).
        progress: optional progress callback.

    Returns:
        One row per (concept, metric): ``concept``, ``metric``, ``n_pairs``, ``tested``,
        ``value``, ``null_mean``, ``null_std``, ``p_value`` (permutation), ``p_bonferroni``,
        ``p_bh``, ``subspace_null_mean``, ``subspace_null_std``, ``subspace_p_value``,
        ``subspace_p_bonferroni``, ``subspace_p_bh``, ``n_null``, ``seed``, ``significant``.
    """
    settings = settings or SimilaritySettings()
    progress = progress or no_progress
    metrics = list(settings.decoder_metrics)
    device = resolve_device(device) if isinstance(device, str) else device
    x, y = check_paired_rows(x, y, need_row_variance="rsa" in metrics)
    rows: list[dict[str, Any]] = []
    names = list(concept_rows)
    for ci, name in enumerate(names):
        idx = np.asarray(concept_rows[name], dtype=np.int64)
        m_pairs = int(idx.size)
        tested = m_pairs >= settings.min_concept_pairs
        results: dict[str, MetricResult] = {}
        sub: dict[str, np.ndarray] = {}
        if tested:
            concept_settings = SimilaritySettings(
                metrics=tuple(metrics),
                n_null=settings.n_null_concepts,
                seed=settings.seed,
                variance=settings.variance,
                rsa_max_pairs=settings.rsa_max_pairs,
                null_dtype=settings.null_dtype,
                chunk=settings.chunk,
                concepts=False,
                n_boot=0,
            )
            results = compute_similarity(x[idx], y[idx], concept_settings, device)
            if settings.n_null_concepts and m_pairs < x.shape[0]:
                sub = compute_subspace_null(
                    x, y, m_pairs, metrics, settings.n_null_concepts, settings.seed, settings.variance, pair_corr
                )
        for m in metrics + (["matched_corr"] if pair_corr is not None else []):
            row: dict[str, Any] = {"concept": name, "metric": m, "n_pairs": m_pairs, "tested": tested}
            if m == "matched_corr":
                value = float(np.mean(pair_corr[idx])) if m_pairs else float("nan")
                prim = None
            else:
                value = results[m].value if m in results else float("nan")
                prim = results[m].primary if m in results else None
            row.update(
                value=value,
                null_mean=prim.mean if prim else float("nan"),
                null_std=prim.std if prim else float("nan"),
                p_value=prim.p_value if prim else float("nan"),
            )
            if m in sub:
                sn = NullResult.from_samples("subspace", sub[m], value, settings.seed)
                row.update(subspace_null_mean=sn.mean, subspace_null_std=sn.std, subspace_p_value=sn.p_value)
            else:
                row.update(
                    subspace_null_mean=float("nan"), subspace_null_std=float("nan"), subspace_p_value=float("nan")
                )
            row.update(n_null=settings.n_null_concepts if tested else 0, seed=settings.seed)
            rows.append(row)
        progress("concepts", ci + 1, len(names))
    schema = {
        "concept": pl.Utf8,
        "metric": pl.Utf8,
        "n_pairs": pl.Int64,
        "tested": pl.Boolean,
        "value": pl.Float64,
        "null_mean": pl.Float64,
        "null_std": pl.Float64,
        "p_value": pl.Float64,
        "subspace_null_mean": pl.Float64,
        "subspace_null_std": pl.Float64,
        "subspace_p_value": pl.Float64,
        "n_null": pl.Int64,
        "seed": pl.Int64,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row") if rows else pl.DataFrame(schema=schema)
    return _adjust_by_metric(frame, settings, [("p_value", ""), ("subspace_p_value", "subspace_")])


def _adjust_by_metric(
    frame: pl.DataFrame, settings: SimilaritySettings, columns: list[tuple[str, str]]
) -> pl.DataFrame:
    # tests done together = one metric's p-values across concepts (or layer pairs)
    parts = []
    for metric in frame["metric"].unique(maintain_order=True).to_list() if frame.height else []:
        part = frame.filter(pl.col("metric") == metric)
        for col, prefix in columns:
            p = part[col].fill_null(float("nan")).to_numpy()
            part = part.with_columns(
                pl.Series(f"{prefix}p_bonferroni", adjust_bonferroni(p)),
                pl.Series(f"{prefix}p_bh", adjust_bh(p)),
            )
        parts.append(part)
    if not parts:
        extra = {f"{prefix}{k}": pl.Float64 for _, prefix in columns for k in ("p_bonferroni", "p_bh")}
        return frame.with_columns([pl.lit(None, dtype=t).alias(c) for c, t in extra.items()]).with_columns(
            pl.lit(None, dtype=pl.Boolean).alias("significant")
        )
    out = pl.concat(parts)
    key = "p_bh" if settings.correction == "bh" else "p_bonferroni"
    return out.with_columns(
        pl.when(pl.col(key).is_nan()).then(None).otherwise(pl.col(key) < settings.alpha).alias("significant")
    )


# ----------------------------------------------------------------------------- layer sweep

PairIndices = tuple[np.ndarray, np.ndarray]
PairingSource = Callable[[int, int], Any] | Sequence[Sequence[Any]]


def _as_pair_indices(pairing: Any) -> PairIndices:
    if isinstance(pairing, pl.LazyFrame):
        pairing = pairing.collect()
    if isinstance(pairing, pl.DataFrame):
        if "kept" in pairing.columns:
            pairing = pairing.filter(pl.col("kept"))
        return pairing["feature_a"].to_numpy(), pairing["feature_b"].to_numpy()
    if isinstance(pairing, tuple) and len(pairing) == 2:
        return np.asarray(pairing[0]), np.asarray(pairing[1])
    raise SimilarityError(
        "A sweep pairing must be (feature_a array, feature_b array) or a frame with feature_a and feature_b columns; "
        f"got {type(pairing).__name__}."
    )


def compute_layer_sweep(
    decoders_a: Sequence[np.ndarray],
    decoders_b: Sequence[np.ndarray],
    pairing: PairingSource,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
    labels_a: Sequence[str] | None = None,
    labels_b: Sequence[str] | None = None,
) -> pl.DataFrame:
    """Metrics plus permutation nulls for every (layer of A, layer of B), ready for a heatmap.

    Args:
        decoders_a: one ``W_dec`` [d_sae, d_in] per A layer.
        decoders_b: one ``W_dec`` per B layer.
        pairing: either a function ``(i, j) -> pairs`` or a nested list ``pairing[i][j]``;
            pairs are ``(feature_a array, feature_b array)`` or a polars frame with
            ``feature_a``, ``feature_b`` (and ``kept``, honoured when present).
        settings: metrics (``matched_corr`` is ignored), ``n_null``, seed, correction.
        device: torch device or name.
        progress: optional progress callback (``"sweep"``, cells done, cells).
        labels_a: display names of the A layers (default ``"0"``, ``"1"``, ...).
        labels_b: display names of the B layers.

    Returns:
        One row per (layer_a, layer_b, metric): ``layer_a``, ``layer_b``, ``label_a``,
        ``label_b``, ``metric``, ``value``, ``null_mean``, ``null_std``, ``p_value``,
        ``p_bonferroni``, ``p_bh``, ``p_adjusted`` (by ``settings.correction``),
        ``significant``, ``n_pairs``, ``k_a``, ``k_b`` (SVCCA only), ``n_null``, ``seed``,
        ``error`` (why a cell has no value, else null). Adjustment is per metric across cells.
    """
    settings = settings or SimilaritySettings(metrics=("svcca", "rsa"))
    progress = progress or no_progress
    device = resolve_device(device) if isinstance(device, str) else device
    labels_a = list(labels_a) if labels_a is not None else [str(i) for i in range(len(decoders_a))]
    labels_b = list(labels_b) if labels_b is not None else [str(j) for j in range(len(decoders_b))]
    if len(labels_a) != len(decoders_a) or len(labels_b) != len(decoders_b):
        raise SimilarityError("The sweep needs one label per decoder on each side; pass matching label lists.")
    rows: list[dict[str, Any]] = []
    total = len(decoders_a) * len(decoders_b)
    for i, dec_a in enumerate(decoders_a):
        for j, dec_b in enumerate(decoders_b):
            source = pairing(i, j) if callable(pairing) else pairing[i][j]
            base = {"layer_a": i, "layer_b": j, "label_a": labels_a[i], "label_b": labels_b[j]}
            try:
                ia, ib = check_pair_indices(*_as_pair_indices(source), dec_a.shape[0], dec_b.shape[0])
                results = compute_similarity(dec_a[ia], dec_b[ib], settings, device)
                for m, r in results.items():
                    prim = r.primary
                    rows.append(
                        {
                            **base,
                            "metric": m,
                            "value": r.value,
                            "null_mean": prim.mean if prim else float("nan"),
                            "null_std": prim.std if prim else float("nan"),
                            "p_value": prim.p_value if prim else float("nan"),
                            "n_pairs": int(ia.size),
                            "k_a": r.details.get("k_a"),
                            "k_b": r.details.get("k_b"),
                            "n_null": prim.n if prim else 0,
                            "seed": settings.seed,
                            "error": None,
                        }
                    )
            except SimilarityError as exc:
                n_pairs = 0
                try:
                    n_pairs = int(len(_as_pair_indices(source)[0]))
                except SimilarityError:
                    pass
                for m in settings.decoder_metrics:
                    rows.append(
                        {
                            **base,
                            "metric": m,
                            "value": float("nan"),
                            "null_mean": float("nan"),
                            "null_std": float("nan"),
                            "p_value": float("nan"),
                            "n_pairs": n_pairs,
                            "k_a": None,
                            "k_b": None,
                            "n_null": 0,
                            "seed": settings.seed,
                            "error": str(exc),
                        }
                    )
            progress("sweep", i * len(decoders_b) + j + 1, total)
    schema = {
        "layer_a": pl.Int64,
        "layer_b": pl.Int64,
        "label_a": pl.Utf8,
        "label_b": pl.Utf8,
        "metric": pl.Utf8,
        "value": pl.Float64,
        "null_mean": pl.Float64,
        "null_std": pl.Float64,
        "p_value": pl.Float64,
        "n_pairs": pl.Int64,
        "k_a": pl.Int64,
        "k_b": pl.Int64,
        "n_null": pl.Int64,
        "seed": pl.Int64,
        "error": pl.Utf8,
    }
    frame = pl.DataFrame(rows, schema=schema, orient="row")
    frame = _adjust_by_metric(frame, settings, [("p_value", "")])
    key = "p_bh" if settings.correction == "bh" else "p_bonferroni"
    return frame.with_columns(pl.col(key).alias("p_adjusted")).select(
        "layer_a",
        "layer_b",
        "label_a",
        "label_b",
        "metric",
        "value",
        "null_mean",
        "null_std",
        "p_value",
        "p_bonferroni",
        "p_bh",
        "p_adjusted",
        "significant",
        "n_pairs",
        "k_a",
        "k_b",
        "n_null",
        "seed",
        "error",
    )


# ----------------------------------------------------------------------------- bundle stage

ASSIGNMENT_COLUMNS = ("feature_a", "feature_b", "method", "corr", "kept", "reason")


def load_kept_pairs(bundle: Bundle) -> pl.DataFrame:
    """The kept rows of the bundle's assignment (``kept == True``), in file order.

    Args:
        bundle: an opened bundle with an assignment part.

    Returns:
        Frame with ``feature_a``, ``feature_b``, ``method``, ``corr``.
    """
    if not bundle.has("assignment"):
        raise BundleError(f"Bundle {bundle.path} has no assignment yet; run the matching stage before similarity.")
    frame = bundle.assignment().collect()
    missing = [c for c in ASSIGNMENT_COLUMNS if c not in frame.columns]
    if missing:
        raise BundleError(f"assignment.parquet in {bundle.path} lacks columns {missing}; rebuild the matching stage.")
    return frame.filter(pl.col("kept").fill_null(False)).select("feature_a", "feature_b", "method", "corr")


def _top_tokens(bundle: Bundle, side: str, features: np.ndarray) -> list[list[str] | None]:
    table = bundle.features(side).select("feature", "top_tokens").collect()
    lookup = dict(zip(table["feature"].to_list(), table["top_tokens"].to_list(), strict=True))
    return [lookup.get(int(f)) for f in features]


def _unit_docs(bundle: Bundle) -> np.ndarray:
    units = bundle.units().select("unit", "doc").collect().sort("unit")
    return units["doc"].to_numpy()


def build_similarity(
    bundle_path: str | Path,
    settings: SimilaritySettings | None = None,
    device: torch.device | str = "auto",
    progress: ProgressFn | None = None,
) -> Bundle:
    """The similarity stage: metrics, nulls, intervals and concepts into ``similarity.json``.

    Reads the kept rows of ``assignment.parquet`` and both decoders, computes every requested
    metric with its permutation null (and optional random-subset null), the matched
    correlation with a document bootstrap interval, optional document-bootstrap intervals for
    the decoder metrics, and concept subspaces against their own nulls, then writes
    ``similarity.json`` with :func:`core.bundle.add_parts`.

    Args:
        bundle_path: the bundle folder (needs the assignment part).
        settings: what to compute; defaults to :class:`SimilaritySettings`.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, or a torch device.
        progress: optional progress callback.

    Returns:
        The bundle, reopened, with the similarity part present.
    """
    settings = settings or SimilaritySettings()
    progress = progress or no_progress
    device = resolve_device(device) if isinstance(device, str) else device
    bundle = open_bundle(bundle_path)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    pairs = load_kept_pairs(bundle)
    dec_a, dec_b = bundle.decoder("a"), bundle.decoder("b")
    ia, ib = check_pair_indices(
        pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy(), dec_a.shape[0], dec_b.shape[0]
    )
    x, y = check_paired_rows(dec_a[ia], dec_b[ib], need_row_variance="rsa" in settings.metrics)
    corr = pairs["corr"].cast(pl.Float64).to_numpy()
    n = int(ia.size)

    results = compute_similarity(x, y, settings, device, progress, dec_a, dec_b)
    timings["metrics_and_nulls_s"] = time.perf_counter() - t0

    boot_corr: np.ndarray | None = None
    if (
        bundle.has("codes")
        and bundle.has("units")
        and (("matched_corr" in settings.metrics and settings.n_boot) or settings.n_boot_metrics)
    ):
        t1 = time.perf_counter()
        progress("bootstrap", 0, 1)
        sums = compute_document_sums(bundle.codes("a"), bundle.codes("b"), _unit_docs(bundle), ia, ib)
        recomputed = compute_pair_correlations(sums)
        n_draws = max(settings.n_boot, settings.n_boot_metrics)
        boot_corr = bootstrap_pair_correlations(sums, n_draws, settings.seed)
        timings["bootstrap_s"] = time.perf_counter() - t1
    if "matched_corr" in settings.metrics:
        ci = (float("nan"), float("nan"))
        details: dict[str, Any] = {"source": "assignment.parquet corr of kept pairs", "null": "none (see docs)"}
        if boot_corr is not None and settings.n_boot:
            ci = percentile_interval(np.nanmean(boot_corr[: settings.n_boot], axis=1), settings.ci_level)
            details["recomputed_mean"] = _f(float(np.nanmean(recomputed)))
            details["n_docs"] = int(len(sums.count))
        results["matched_corr"] = MetricResult(
            "matched_corr",
            float(np.mean(corr)),
            n,
            details,
            (),
            ci[0],
            ci[1],
            "document bootstrap" if np.isfinite(ci[0]) else None,
            settings.n_boot if np.isfinite(ci[0]) else 0,
        )
    if boot_corr is not None and settings.n_boot_metrics:
        t1 = time.perf_counter()
        results = _bootstrap_metric_intervals(x, y, boot_corr[: settings.n_boot_metrics], results, settings, progress)
        timings["metric_bootstrap_s"] = time.perf_counter() - t1

    concepts_json: dict[str, Any] | None = None
    if settings.concepts and bundle.has("features"):
        t1 = time.perf_counter()
        groups = load_concept_groups(settings.concepts_path)
        concept_rows = select_concept_pairs(
            _top_tokens(bundle, "a", ia),
            _top_tokens(bundle, "b", ib),
            groups,
            settings.concept_match,
            settings.concept_top_n,
        )
        frame = compute_concept_similarity(
            x, y, concept_rows, settings, device, corr if "matched_corr" in settings.metrics else None, progress
        )
        concepts_json = {
            "source": str(settings.concepts_path or DEFAULT_CONCEPTS_PATH.name),
            "groups": {k: list(v) for k, v in groups.items()},
            "match": settings.concept_match,
            "top_n": settings.concept_top_n,
            "min_pairs": settings.min_concept_pairs,
            "n_null": settings.n_null_concepts,
            "null_kinds": ["permutation", "subspace"],
            "correction": settings.correction,
            "pairs": {k: [int(i) for i in v] for k, v in concept_rows.items()},
            "results": [
                {k: (_f(v) if isinstance(v, float) else v) for k, v in row.items()} for row in frame.to_dicts()
            ],
        }
        timings["concepts_s"] = time.perf_counter() - t1

    order = [m for m in BUNDLE_METRICS if m in results]
    body = {
        "schema_version": SIMILARITY_SCHEMA,
        "n_pairs": n,
        "d_in_a": int(dec_a.shape[1]),
        "d_in_b": int(dec_b.shape[1]),
        "pairing": {
            "source": "assignment.parquet (kept == True)",
            "methods": sorted(set(pairs["method"].cast(pl.Utf8).to_list())),
            "n_unique_a": int(np.unique(ia).size),
            "n_unique_b": int(np.unique(ib).size),
        },
        "p_value_rule": "(b + 1) / (n + 1), b = null samples >= value, one-sided",
        "device": str(device),
        "settings": _settings_json(settings),
        "metrics": {m: results[m].to_json(settings.ci_level) for m in order},
        "concepts": concepts_json,
        "timings": timings,
    }
    timings["total_s"] = time.perf_counter() - t0
    return add_parts(
        bundle.path,
        json_files={"similarity.json": body},
        manifest_updates={"similarity": {"settings": _settings_json(settings), "n_pairs": n}},
    )


def _settings_json(settings: SimilaritySettings) -> dict[str, Any]:
    body = asdict(settings)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}


def _bootstrap_metric_intervals(
    x: np.ndarray,
    y: np.ndarray,
    boot_corr: np.ndarray,
    results: dict[str, MetricResult],
    settings: SimilaritySettings,
    progress: ProgressFn,
) -> dict[str, MetricResult]:
    # each draw keeps the pairs whose resampled correlation still passes the threshold, so the
    # interval reflects which pairs the corpus supports; the pairing itself is not re-derived
    metrics = [m for m in settings.decoder_metrics if m in results]
    draws = {m: [] for m in metrics}
    for b, row in enumerate(boot_corr):
        keep = np.flatnonzero(np.nan_to_num(row, nan=-np.inf) > settings.boot_min_corr)
        if keep.size >= 3:
            sx, sy = x[keep], y[keep]
            if "rsa" in metrics and keep.size > settings.rsa_max_pairs:
                sub = np.sort(
                    np.random.default_rng([settings.seed, 6, b]).choice(
                        keep.size, settings.rsa_max_pairs, replace=False
                    )
                )
            else:
                sub = slice(None)
            for m in metrics:
                try:
                    draws[m].append(
                        compute_metric(
                            m, sx[sub] if m == "rsa" else sx, sy[sub] if m == "rsa" else sy, settings.variance
                        )
                    )
                except SimilarityError:
                    draws[m].append(float("nan"))
        progress("metric bootstrap", b + 1, len(boot_corr))
    out = dict(results)
    for m in metrics:
        low, high = percentile_interval(np.asarray(draws[m]), settings.ci_level)
        r = results[m]
        details = {**r.details, "ci_pairs_rule": f"pairs with resampled corr > {settings.boot_min_corr}"}
        out[m] = MetricResult(m, r.value, r.n_pairs, details, r.nulls, low, high, "document bootstrap", len(boot_corr))
    return out
