"""DecoderUMAP: 2-D layouts of two decoders' directions, aligned through the matched pairs (umap-learn's AlignedUMAP)."""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np

from core.progress import ProgressFn, no_progress


def _unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit norm; zero rows stay zero (cosine distance is undefined for them)."""
    x = np.asarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norms, out=np.zeros_like(x), where=norms > 0)


def _fallback_layout(x: np.ndarray, seed: int) -> np.ndarray:
    """A 2-D PCA layout for sets too small for UMAP's neighbour graph (a handful of rows)."""
    if x.shape[0] == 0:
        return np.zeros((0, 2), np.float32)
    centered = x - x.mean(axis=0, keepdims=True)
    if x.shape[0] < 2 or not np.any(centered):
        rng = np.random.default_rng(seed)
        return rng.standard_normal((x.shape[0], 2)).astype(np.float32)
    _, _, vt = np.linalg.svd(centered, full_matrices=False)
    out = centered @ vt[:2].T
    if out.shape[1] < 2:
        out = np.pad(out, ((0, 0), (0, 2 - out.shape[1])))
    return out.astype(np.float32)


@contextmanager
def _report_epochs(progress: ProgressFn, n_passes: int) -> Iterator[None]:
    """Report umap-learn's layout epochs as ``layout i/n`` steps while fitting.

    umap-learn tells its epochs only to the tqdm it imports in ``umap.layouts``; its layout loops
    (one per map, then the aligned one) call that name, so it is swapped for a reporter for the
    duration of a fit and put back after.
    """
    import umap.layouts as layouts

    passes = iter(range(1, 10**6))

    def reporter(iterable: Iterable[int], **_: Any) -> Iterator[int]:
        items = list(iterable)
        number = next(passes)
        if number == 1:
            progress("neighbour graphs", 1, 1)
        label = f"layout {number}/{n_passes}"
        for i, item in enumerate(items):
            progress(label, i, len(items))
            yield item
        progress(label, len(items), len(items))

    original = layouts.tqdm
    layouts.tqdm = reporter
    try:
        yield
    finally:
        layouts.tqdm = original


# below this many rows UMAP's spectral initialisation and kNN graph are not meaningful
_MIN_UMAP_ROWS = 5


class DecoderUMAP:
    """UMAP of SAE decoder directions (cosine metric), one map per SAE, optionally aligned.

    Args:
        n_neighbors: neighbourhood size (clipped to n - 1 per side).
        min_dist: minimum distance between embedded points.
        n_epochs: optimisation epochs (``None``: umap-learn's default).
        aligned: when :meth:`fit` gets a relation, fit AlignedUMAP so related points sit together.
        alignment_regularisation: AlignedUMAP's alignment strength.
        random_state: seed.
        method: ``umap``, or ``pca`` (each side's top two principal directions; with a relation,
            the later maps are rotated onto the first through the related rows by orthogonal
            Procrustes, so partners sit near each other).

    Attributes:
        embeddings_: one float32 [n_i, 2] array per fitted decoder.
        aligned_: whether AlignedUMAP was used.
        n_features_in_: the input dimension of each decoder.
    """

    def __init__(
        self,
        n_neighbors: int = 15,
        min_dist: float = 0.1,
        n_epochs: int | None = None,
        aligned: bool = True,
        alignment_regularisation: float = 0.01,
        random_state: int = 0,
        method: str = "umap",
    ) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs
        self.aligned = aligned
        self.alignment_regularisation = alignment_regularisation
        self.random_state = random_state
        self.method = method

    def _kwargs(self, n_rows: int) -> dict[str, Any]:
        return {
            "n_neighbors": max(2, min(self.n_neighbors, n_rows - 1)),
            "min_dist": self.min_dist,
            "metric": "cosine",
            "n_epochs": self.n_epochs,
            "random_state": self.random_state,
            # spectral init needs a connected, reasonably sized graph; tiny inputs use random
            "init": "spectral" if n_rows > 4 * self.n_neighbors else "random",
        }

    def fit(
        self,
        decoders: Sequence[np.ndarray],
        relations: Sequence[dict[int, int]] | None = None,
        progress: ProgressFn = no_progress,
    ) -> DecoderUMAP:
        """Embed each decoder's rows in 2-D.

        Args:
            decoders: ``W_dec`` arrays [d_sae_i, d_in_i] (d_in may differ between them).
            relations: for AlignedUMAP, ``len(decoders) - 1`` dicts mapping a row of decoder i
                to its related row of decoder i + 1 (umap-learn's ``relations``).
            progress: reports ``neighbour graphs`` (0/1 until the first layout starts: the first UMAP in
                a process spends most of that compiling) and each layout loop's epochs (``layout i/n``).

        Returns:
            self, with ``embeddings_`` set.
        """
        xs = [_unit_rows(d) for d in decoders]
        if not xs:
            raise ValueError("DecoderUMAP.fit needs at least one decoder")
        self.n_features_in_ = [int(x.shape[1]) for x in xs]
        if self.method == "pca":
            return self._fit_pca(xs, relations)
        small = any(x.shape[0] < _MIN_UMAP_ROWS for x in xs)
        use_aligned = bool(
            self.aligned and relations is not None and len(xs) > 1 and not small and any(len(r) for r in relations)
        )
        large = not all(x.shape[0] < _MIN_UMAP_ROWS for x in xs)
        if large:
            # deferred, and skipped when every input is tiny: importing umap-learn compiles for seconds
            import umap

            n_umaps = sum(x.shape[0] >= _MIN_UMAP_ROWS for x in xs) if not use_aligned else len(xs)
            progress("neighbour graphs", 0, 1)
        reporting = _report_epochs(progress, n_umaps + int(use_aligned)) if large else nullcontext()
        with warnings.catch_warnings(), reporting:
            # umap warns that a fixed random_state disables parallelism: that is the point here
            warnings.filterwarnings("ignore", message=".*n_jobs.*")
            warnings.filterwarnings("ignore", category=UserWarning, module="umap")
            if use_aligned:
                assert relations is not None
                kwargs = self._kwargs(min(x.shape[0] for x in xs))
                kwargs.pop("init")
                model = umap.AlignedUMAP(alignment_regularisation=self.alignment_regularisation, **kwargs)
                model.fit(xs, relations=[dict(r) for r in relations])
                embeddings = [np.asarray(e, dtype=np.float32) for e in model.embeddings_]
            else:
                embeddings = []
                for x in xs:
                    if x.shape[0] < _MIN_UMAP_ROWS:
                        embeddings.append(_fallback_layout(x, self.random_state))
                    else:
                        emb = umap.UMAP(**self._kwargs(x.shape[0])).fit_transform(x)
                        embeddings.append(np.asarray(emb, dtype=np.float32))
        self.embeddings_ = embeddings
        self.aligned_ = use_aligned
        return self

    def _fit_pca(self, xs: list[np.ndarray], relations: Sequence[dict[int, int]] | None) -> DecoderUMAP:
        from scipy.linalg import orthogonal_procrustes

        embeddings = [_fallback_layout(x, self.random_state) for x in xs]
        rotated = False
        for i, relation in enumerate(relations or []):
            pairs = np.array(sorted(relation.items()), dtype=np.int64).reshape(-1, 2)
            if not self.aligned or len(pairs) < 2:
                continue
            # rotate map i + 1 so its related rows land on their partners in map i
            prev, nxt = embeddings[i][pairs[:, 0]], embeddings[i + 1][pairs[:, 1]]
            rotation, _ = orthogonal_procrustes(nxt - nxt.mean(0), prev - prev.mean(0))
            embeddings[i + 1] = ((embeddings[i + 1] - nxt.mean(0)) @ rotation + prev.mean(0)).astype(np.float32)
            rotated = True
        self.embeddings_ = embeddings
        self.aligned_ = rotated
        return self

    def fit_transform(
        self,
        decoders: Sequence[np.ndarray],
        relations: Sequence[dict[int, int]] | None = None,
        progress: ProgressFn = no_progress,
    ) -> list[np.ndarray]:
        """Fit and return ``embeddings_``."""
        return self.fit(decoders, relations, progress).embeddings_
