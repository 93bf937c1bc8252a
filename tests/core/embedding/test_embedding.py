"""core.embedding: the DecoderUMAP estimator contract, tiny-input fallback, alignment, and the bundle stage."""

from __future__ import annotations

import numpy as np
import pytest

from core.embedding.layout import DecoderUMAP, _fallback_layout, _unit_rows
from core.embedding.settings import UMAPSettings
from core.errors import SpecError


def test_init_only_stores_and_settings_validate() -> None:
    model = DecoderUMAP(n_neighbors=7, min_dist=0.2, random_state=3)
    assert vars(model) == {
        "n_neighbors": 7,
        "min_dist": 0.2,
        "n_epochs": None,
        "aligned": True,
        "alignment_regularisation": 0.01,
        "random_state": 3,
        "method": "umap",
    }
    assert not hasattr(model, "embeddings_")
    with pytest.raises(SpecError, match="relation"):
        UMAPSettings(relation="nearest")
    with pytest.raises(SpecError, match="n_neighbors"):
        UMAPSettings(n_neighbors=1)
    with pytest.raises(SpecError, match="layout method 'tsne'"):
        UMAPSettings(method="tsne")


def test_rows_are_unit_norm_and_zero_rows_stay_zero() -> None:
    x = np.array([[3.0, 4.0], [0.0, 0.0]], np.float32)
    np.testing.assert_allclose(_unit_rows(x), [[0.6, 0.8], [0.0, 0.0]])


def test_tiny_inputs_fall_back_to_pca_without_umap() -> None:
    x = np.eye(3, 5, dtype=np.float32)
    model = DecoderUMAP().fit([x, x[:2]], relations=[{0: 0, 1: 1}])
    assert [e.shape for e in model.embeddings_] == [(3, 2), (2, 2)]
    assert model.aligned_ is False and model.n_features_in_ == [5, 5]
    assert _fallback_layout(np.zeros((0, 4)), 0).shape == (0, 2)


@pytest.mark.slow
def test_aligned_umap_places_related_points_together() -> None:
    """Side B is side A's rows with noise, permuted: through the relation, partners land closer than strangers."""
    rng = np.random.default_rng(0)
    centers = rng.standard_normal((6, 16))
    a = np.repeat(centers, 10, axis=0) + 0.05 * rng.standard_normal((60, 16))
    perm = rng.permutation(60)
    b = a[perm] + 0.05 * rng.standard_normal((60, 16))
    relation = {int(perm[j]): j for j in range(60)}  # A row perm[j] is B row j
    emb_a, emb_b = DecoderUMAP(n_neighbors=8, n_epochs=60).fit_transform([a, b], [relation])
    partner = np.array([relation[i] for i in range(60)])
    d_partner = np.linalg.norm(emb_a - emb_b[partner], axis=1).mean()
    d_random = np.linalg.norm(emb_a - emb_b[rng.permutation(60)], axis=1).mean()
    assert d_partner < 0.5 * d_random


def test_pca_layout_projects_on_the_top_principal_directions_and_rotates_partners_together() -> None:
    rng = np.random.default_rng(1)
    a = rng.standard_normal((80, 12)) * np.linspace(3, 0.2, 12)
    perm = rng.permutation(80)
    # B is A's directions permuted, in another basis (a random orthogonal map), plus a little noise
    q, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    b = a[perm] @ q + 0.01 * rng.standard_normal((80, 12))
    relation = {int(perm[j]): j for j in range(80)}
    model = DecoderUMAP(method="pca").fit([a, b], [relation])
    emb_a, emb_b = model.embeddings_
    # map A is the dense reference: unit rows, centred, projected on the top two right singular vectors
    unit = a / np.linalg.norm(a, axis=1, keepdims=True)
    centered = unit - unit.mean(0)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    np.testing.assert_allclose(np.abs(emb_a), np.abs(centered @ vt[:2].T), atol=1e-5)
    assert model.aligned_ is True
    partner = np.array([relation[i] for i in range(80)])
    d_partner = np.linalg.norm(emb_a - emb_b[partner], axis=1).mean()
    d_random = np.linalg.norm(emb_a - emb_b[rng.permutation(80)], axis=1).mean()
    assert d_partner < 0.2 * d_random
    unaligned = DecoderUMAP(method="pca", aligned=False).fit([a, b], [relation])
    assert unaligned.aligned_ is False
