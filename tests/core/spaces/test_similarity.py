"""Similarity metrics and nulls against straightforward dense numpy references."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.spatial
import torch
from scipy import stats

from core.errors import SimilarityError, SpecError, UserError
from core.spaces.compute import compute_similarity
from core.spaces.metrics import (
    check_pair_indices,
    compute_linear_cka,
    compute_metric,
    compute_procrustes,
    compute_rsa,
    compute_svcca,
    count_components,
)
from core.spaces.nulls import _gram_metrics_batch, permuted_triangle_dot, prepare_pairs
from core.spaces.settings import METRICS, SimilaritySettings
from core.spaces.stats import adjust_bh, adjust_bonferroni, permutation_p_value

# ----------------------------------------------------------------------------- references


def ref_svcca(x: np.ndarray, y: np.ndarray, rule: str, variance: float = 0.99) -> tuple[float, int, int]:
    """SVCCA the way the reference code path does it: neurons x datapoints, PCA scores, CCA via covariances."""
    acts1, acts2 = x.T, y.T  # (dims, pairs): dimensions are "neurons", pairs are "datapoints"
    c1 = acts1 - acts1.mean(axis=1, keepdims=True)
    c2 = acts2 - acts2.mean(axis=1, keepdims=True)
    _, s1, v1 = np.linalg.svd(c1, full_matrices=False)
    _, s2, v2 = np.linalg.svd(c2, full_matrices=False)

    def k_of(s: np.ndarray) -> int:
        total = np.sum(s**2)
        cum = np.cumsum(s**2 / total)
        if rule == "paper":
            hits = cum >= variance * total
            return int(np.argmax(hits)) + 1
        return int(next(i for i, c in enumerate(cum) if c >= variance)) + 1

    k1, k2 = k_of(s1), k_of(s2)
    sv1 = np.diag(s1[:k1]) @ v1[:k1]
    sv2 = np.diag(s2[:k2]) @ v2[:k2]
    cov = np.cov(sv1, sv2)
    sxx, sxy, syy = cov[:k1, :k1], cov[:k1, k1:], cov[k1:, k1:]

    def inv_sqrt(m: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(m)
        return v @ np.diag(1 / np.sqrt(w)) @ v.T

    rho = np.linalg.svd(inv_sqrt(sxx) @ sxy @ inv_sqrt(syy), compute_uv=False)
    return float(np.mean(np.abs(rho))), k1, k2


def ref_rsa(x: np.ndarray, y: np.ndarray) -> float:
    iu = np.triu_indices(x.shape[0], 1)
    return float(stats.spearmanr(np.corrcoef(x)[iu], np.corrcoef(y)[iu]).statistic)


def ref_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Gram-matrix form (HSIC with a centring matrix), independent of the feature-space formula."""
    n = x.shape[0]
    h = np.eye(n) - 1.0 / n
    k, m = h @ x @ x.T @ h, h @ y @ y.T @ h
    return float(np.sum(k * m) / np.sqrt(np.sum(k * k) * np.sum(m * m)))


def ref_procrustes_disparity(x: np.ndarray, y: np.ndarray) -> float:
    """Brute rotation: optimal R from the SVD of Xn^T Yn, then the residual."""
    xn = x - x.mean(0)
    yn = y - y.mean(0)
    xn, yn = xn / np.linalg.norm(xn), yn / np.linalg.norm(yn)
    w = max(xn.shape[1], yn.shape[1])
    xn = np.pad(xn, ((0, 0), (0, w - xn.shape[1])))
    yn = np.pad(yn, ((0, 0), (0, w - yn.shape[1])))
    u, _, vt = np.linalg.svd(xn.T @ yn)
    return float(np.linalg.norm(xn @ (u @ vt) - yn) ** 2)


def unit_rows(rng: np.random.Generator, n: int, d: int) -> np.ndarray:
    """Decoder-like rows: random directions of unit norm."""
    w = rng.standard_normal((n, d))
    return w / np.linalg.norm(w, axis=1, keepdims=True)


def related_pair(rng: np.random.Generator, n: int = 120, d_a: int = 24, d_b: int = 32, noise: float = 0.05):
    """B = A mapped by an orthogonal embedding into a wider space, plus a little noise."""
    x = unit_rows(rng, n, d_a)
    q, _ = np.linalg.qr(rng.standard_normal((d_b, d_a)))  # d_b x d_a with orthonormal columns
    y = x @ q.T + noise * rng.standard_normal((n, d_b))
    return x, y


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


@pytest.fixture(autouse=True, scope="module")
def one_blas_thread():
    """Tiny matrices on a shared 2-core box: spinning BLAS/OpenMP threads cost 10-100x, one thread is fastest."""
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


# ----------------------------------------------------------------------------- metrics vs references


@pytest.mark.parametrize("rule", ["variance", "paper"])
def test_svcca_matches_reference(rng, rule):
    x, y = related_pair(rng, n=90, d_a=12, d_b=20, noise=0.5)
    got = compute_svcca(x, y, 0.99, rule)
    want, k1, k2 = ref_svcca(x, y, rule)
    assert (got.k_a, got.k_b) == (k1, k2)
    assert got.value == pytest.approx(want, abs=1e-8)


def test_svcca_paper_rule_small_scale_rows_keep_more(rng):
    # with a total variance just below 1/0.99 the paper rule is a real threshold again (at 0.99 x total)
    x, y = related_pair(rng, n=60, d_a=8, d_b=10, noise=0.3)
    x = x * np.sqrt(0.95 / np.sum((x - x.mean(0)) ** 2))
    y = y * np.sqrt(0.97 / np.sum((y - y.mean(0)) ** 2))
    got = compute_svcca(x, y, 0.99, "paper")
    want, k1, k2 = ref_svcca(x, y, "paper")
    assert (got.k_a, got.k_b) == (k1, k2)
    assert k1 > 1
    assert got.value == pytest.approx(want, abs=1e-8)


def test_component_rules_hand_worked():
    # s = [3, 1]: variances 9 and 1, total 10, shares 0.9 and 1.0.
    # variance rule: 0.9 < 0.99 <= 1.0 -> k = 2. paper rule: is a share >= 0.99 * 10 = 9.9? never -> argmax 0 -> k = 1.
    assert count_components(np.array([3.0, 1.0]), 0.99, "variance") == 2
    assert count_components(np.array([3.0, 1.0]), 0.99, "paper") == 1
    # s = [0.6, 0.5, 0.3]: variances 0.36, 0.25, 0.09, total 0.70; shares 0.514, 0.871, 1.0.
    # variance rule: first share >= 0.99 is the third -> 3. paper: threshold 0.99 * 0.70 = 0.693, reached by
    # the second share (0.871) -> 2.
    assert count_components(np.array([0.6, 0.5, 0.3]), 0.99, "variance") == 3
    assert count_components(np.array([0.6, 0.5, 0.3]), 0.99, "paper") == 2
    assert count_components(np.array([1.0, 1.0]), 1.0, "variance") == 2


def test_paper_mode_keeps_one_component_on_decoder_rows(rng):
    x, y = unit_rows(rng, 200, 32), unit_rows(rng, 200, 48)
    res = compute_svcca(x, y, 0.99, "paper")
    assert (res.k_a, res.k_b) == (1, 1)
    # one component each: SVCCA is |corr| of the first principal-component scores
    pc_a = np.linalg.svd(x - x.mean(0), full_matrices=False)[0][:, 0]
    pc_b = np.linalg.svd(y - y.mean(0), full_matrices=False)[0][:, 0]
    assert res.value == pytest.approx(abs(np.corrcoef(pc_a, pc_b)[0, 1]), abs=1e-10)
    corrected = compute_svcca(x, y, 0.99, "variance")
    assert corrected.k_a > 20 and corrected.k_b > 30


def test_rsa_cka_procrustes_match_references(rng):
    x, y = related_pair(rng, n=70, d_a=10, d_b=14, noise=0.4)
    assert compute_rsa(x, y) == pytest.approx(ref_rsa(x, y), abs=1e-10)
    assert compute_linear_cka(x, y) == pytest.approx(ref_cka(x, y), abs=1e-10)
    proc = compute_procrustes(x, y)
    assert proc.disparity == pytest.approx(ref_procrustes_disparity(x, y), abs=1e-10)
    assert proc.value == pytest.approx(1 - proc.disparity / 2, abs=1e-10)
    # equal widths: scipy.spatial.procrustes (which also fits a scale) reports 1 - value^2
    x2, y2 = x, y[:, :10]
    _, _, disparity = scipy.spatial.procrustes(x2, y2)
    assert compute_procrustes(x2, y2).value == pytest.approx(np.sqrt(1 - disparity), abs=1e-10)


def test_rsa_handles_ties_like_scipy(rng):
    # duplicated A rows (many-to-1 pairings) put exact ties in the RSM
    x = unit_rows(rng, 40, 8)
    x[10] = x[3]
    x[11] = x[3]
    y = unit_rows(rng, 40, 9)
    # np.corrcoef's rounding splits some mathematically equal correlations, so compare the ties rounded
    iu = np.triu_indices(40, 1)
    want = stats.spearmanr(np.round(np.corrcoef(x)[iu], 12), np.round(np.corrcoef(y)[iu], 12)).statistic
    assert compute_rsa(x, y) == pytest.approx(want, abs=1e-10)
    assert compute_rsa(x, y) == pytest.approx(ref_rsa(x, y), abs=1e-6)


# ----------------------------------------------------------------------------- prepared nulls vs direct


def test_prepared_null_samples_equal_direct_recompute(rng):
    x, y = related_pair(rng, n=50, d_a=8, d_b=11, noise=0.6)
    perms = np.stack([rng.permutation(50) for _ in range(4)])
    # (x, y) gathers the narrower A side, (y, x) the B side: both must equal the direct recompute
    for xx, yy in ((x, y), (y, x)):
        prep = prepare_pairs(xx, yy, METRICS, device="cpu", null_dtype="float64")
        with torch.no_grad():
            batch = _gram_metrics_batch(prep, [m for m in METRICS if m != "rsa"], perms)
        rsa_numba = permuted_triangle_dot(prep.rank_a, prep.rank_b, perms) / prep.rank_scale
        ranks = torch.from_numpy(prep.rank_a), torch.from_numpy(prep.rank_b)
        rsa_torch = permuted_triangle_dot(*ranks, perms) / prep.rank_scale
        for i, p in enumerate(perms):
            for m, v in batch.items():
                assert float(v[i]) == pytest.approx(compute_metric(m, xx, yy[p]), abs=1e-9), m
            assert rsa_numba[i] == pytest.approx(ref_rsa(xx, yy[p]), abs=1e-6)
            assert rsa_torch[i] == pytest.approx(rsa_numba[i], abs=1e-9)


def test_rotated_copy_is_similar_and_significant(rng):
    x, y = related_pair(rng, n=100, d_a=16, d_b=24, noise=0.02)
    res = compute_similarity(x, y, SimilaritySettings(n_null=199, metrics=METRICS), "cpu")
    for m in ("svcca", "cka", "procrustes"):
        assert res[m].value > 0.98, m
    assert res["rsa"].value > 0.9
    for m in ("svcca", "rsa", "cka", "procrustes"):
        assert res[m].primary.p_value == pytest.approx(1 / 200), m
        assert res[m].primary.p_value < 0.01
        assert res[m].primary.mean < res[m].value - 0.1


def test_independent_rows_are_not_significant(rng):
    x, y = unit_rows(rng, 100, 16), unit_rows(rng, 100, 24)
    res = compute_similarity(x, y, SimilaritySettings(n_null=199, metrics=METRICS), "cpu")
    for m in ("svcca", "rsa", "cka", "procrustes"):
        r = res[m]
        assert r.primary.p_value > 0.05, m
        assert abs(r.value - r.primary.mean) < 4 * r.primary.std, m
        assert r.primary.p_value > 0


def test_corrected_svcca_of_random_pairs_is_far_above_the_papers_null(rng):
    # the published fact is about 0.45 for 3000 random unit rows in 512 vs 768 dims; a quarter of
    # every size keeps the ratios k/n that set the value
    x, y = unit_rows(rng, 750, 128), unit_rows(rng, 750, 192)
    res = compute_svcca(x, y, 0.99, "variance")
    assert res.value == pytest.approx(0.45, abs=0.03)
    assert compute_svcca(x, y, 0.99, "paper").value < 0.15


# ----------------------------------------------------------------------------- p-values, seeds, multiplicity


def test_p_value_is_never_zero():
    assert permutation_p_value(10.0, np.zeros(100)) == pytest.approx(1 / 101)
    assert permutation_p_value(-10.0, np.zeros(100)) == pytest.approx(1.0)
    # ties count against the observed value
    assert permutation_p_value(0.5, np.array([0.5, 0.1, 0.2])) == pytest.approx(2 / 4)


def test_seeds_reproduce_nulls(rng):
    x, y = unit_rows(rng, 40, 8), unit_rows(rng, 40, 10)
    s = SimilaritySettings(n_null=30, seed=7, metrics=METRICS)
    a = compute_similarity(x, y, s, "cpu")
    b = compute_similarity(x, y, s, "cpu")
    c = compute_similarity(x, y, SimilaritySettings(n_null=30, seed=8, metrics=METRICS), "cpu")
    for m in METRICS:
        np.testing.assert_array_equal(a[m].primary.samples, b[m].primary.samples)
        assert not np.array_equal(a[m].primary.samples, c[m].primary.samples)
        assert a[m].primary.seed == 7


def test_multiplicity_hand_worked():
    p = [0.01, 0.04, 0.03, 0.005]
    # Bonferroni: m = 4, min(1, 4p)
    np.testing.assert_allclose(adjust_bonferroni(p), [0.04, 0.16, 0.12, 0.02])
    # BH: sorted 0.005, 0.01, 0.03, 0.04 -> p * 4 / rank = 0.02, 0.02, 0.04, 0.04; running min from the top
    # keeps them; back in input order:
    np.testing.assert_allclose(adjust_bh(p), [0.02, 0.04, 0.04, 0.02])
    # a non-monotone case: 0.01, 0.02, 0.5 -> 0.03, 0.03, 0.5 (0.02 * 3 / 2 = 0.03)
    np.testing.assert_allclose(adjust_bh([0.5, 0.02, 0.01]), [0.5, 0.03, 0.03])
    # NaN (an untested entry) is kept and not counted
    np.testing.assert_allclose(adjust_bonferroni([0.01, np.nan, 0.2]), [0.02, np.nan, 0.4])


# ----------------------------------------------------------------------------- bad input


def test_bad_inputs_raise_one_sentence_user_errors(rng):
    x, y = unit_rows(rng, 10, 4), unit_rows(rng, 10, 5)
    cases = [
        (x[:2], y[:2], "at least 3"),
        (x, y[:9], "one B feature per A feature"),
        (np.where(np.arange(10)[:, None] == 4, np.nan, x), y, "NaN"),
        (x, np.vstack([y[:9], np.ones((1, 5))]), "constant"),
    ]
    for a, b, text in cases:
        with pytest.raises(SimilarityError, match=text) as info:
            compute_similarity(a, b, SimilaritySettings(n_null=5), "cpu")
        assert isinstance(info.value, UserError)
        assert str(info.value).count(". ") == 0 and str(info.value).endswith(".")
    with pytest.raises(SimilarityError, match="outside"):
        check_pair_indices([0, 1, 12], [0, 1, 2], 10, 10)
    with pytest.raises(SimilarityError, match="differ in length"):
        check_pair_indices([0, 1, 2], [0, 1], 10, 10)


def test_settings_validate_and_name_allowed_values():
    with pytest.raises(SpecError, match="svcca"):
        SimilaritySettings(metrics=("svcca", "bogus"))
    with pytest.raises(SpecError, match="bh, bonferroni"):
        SimilaritySettings(correction="holm")
    with pytest.raises(SpecError, match="permutation"):
        SimilaritySettings(nulls=("random_subset",))
    with pytest.raises(SpecError, match="variance"):
        SimilaritySettings(variance=1.5)
    s = SimilaritySettings(metrics=["svcca", "rsa"])  # lists become tuples, so settings stay hashable
    assert hash(s) == hash(SimilaritySettings(metrics=("svcca", "rsa")))


def test_random_subset_null_runs_on_full_decoders(rng):
    dec_a, dec_b = unit_rows(rng, 200, 12), unit_rows(rng, 220, 14)
    ia, ib = np.arange(40), np.arange(40)
    s = SimilaritySettings(n_null=20, nulls=("permutation", "random_subset"), n_null_subset=5, metrics=("svcca", "cka"))
    res = compute_similarity(dec_a[ia], dec_b[ib], s, "cpu", decoder_a=dec_a, decoder_b=dec_b)
    kinds = [nr.kind for nr in res["svcca"].nulls]
    assert kinds == ["permutation", "random_subset"]
    assert res["svcca"].nulls[1].n == 5
