"""2-D maps of decoder directions: UMAP (cosine), optionally aligned across the two SAEs.

:class:`DecoderUMAP` follows the scikit-learn / umap-learn estimator style: ``__init__`` only
stores its arguments, :meth:`DecoderUMAP.fit` computes, and fitted attributes end in ``_``.
With ``aligned=True`` and a relation between the two sides (which A feature corresponds to
which B feature, taken from the assignment or the mutual matches), it fits umap-learn's
``AlignedUMAP`` so matched features land near each other in the two maps; otherwise each side
gets its own UMAP.

:func:`build_umap` is the bundle stage: it writes ``umap_a.parquet`` and ``umap_b.parquet``
(``feature``, ``x``, ``y``) with :func:`core.bundle.add_parts`. UMAP is computed when a bundle
is built, never when a page renders: the first fit in a process pays 60-80 s of numba JIT.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.errors import SpecError
from core.progress import ProgressFn, no_progress

RELATION_SOURCES = ("assignment", "mutual", "none")
UMAP_COLUMNS = ("feature", "x", "y")


@dataclass(frozen=True)
class UMAPSettings:
    """How the decoder maps are computed (hashable; validated on creation).

    Attributes:
        n_neighbors: UMAP neighbourhood size (clipped to the number of features - 1).
        min_dist: UMAP minimum distance between embedded points.
        n_epochs: optimisation epochs (``None``: umap-learn's default for the size).
        aligned: fit AlignedUMAP through the relation (when one exists), else two UMAPs.
        relation: where A<->B correspondences come from: ``assignment`` (kept pairs of
            assignment.parquet), ``mutual`` (mutual best matches of matches.parquet) or ``none``.
        alignment_regularisation: AlignedUMAP's pull between related points.
        seed: random state (a fixed seed also makes umap-learn single-threaded, hence reproducible).
    """

    n_neighbors: int = 15
    min_dist: float = 0.1
    n_epochs: int | None = None
    aligned: bool = True
    relation: str = "assignment"
    alignment_regularisation: float = 0.01
    seed: int = 0

    def __post_init__(self) -> None:
        if not isinstance(self.n_neighbors, int) or self.n_neighbors < 2:
            raise SpecError(f"UMAP n_neighbors must be an integer >= 2, got {self.n_neighbors!r}.")
        if not 0.0 <= self.min_dist <= 1.0:
            raise SpecError(f"UMAP min_dist must lie in [0, 1], got {self.min_dist!r}.")
        if self.n_epochs is not None and (not isinstance(self.n_epochs, int) or self.n_epochs < 1):
            raise SpecError(f"UMAP n_epochs must be None or a positive integer, got {self.n_epochs!r}.")
        if self.relation not in RELATION_SOURCES:
            raise SpecError(f"UMAP relation {self.relation!r} is unknown; choose one of {', '.join(RELATION_SOURCES)}.")
        if self.alignment_regularisation < 0:
            raise SpecError("UMAP alignment_regularisation must be >= 0.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict (what the manifest records)."""
        return asdict(self)


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
    ) -> None:
        self.n_neighbors = n_neighbors
        self.min_dist = min_dist
        self.n_epochs = n_epochs
        self.aligned = aligned
        self.alignment_regularisation = alignment_regularisation
        self.random_state = random_state

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

    def fit(self, decoders: Sequence[np.ndarray], relations: Sequence[dict[int, int]] | None = None) -> DecoderUMAP:
        """Embed each decoder's rows in 2-D.

        Args:
            decoders: ``W_dec`` arrays [d_sae_i, d_in_i] (d_in may differ between them).
            relations: for AlignedUMAP, ``len(decoders) - 1`` dicts mapping a row of decoder i
                to its related row of decoder i + 1 (umap-learn's ``relations``).

        Returns:
            self, with ``embeddings_`` set.
        """
        import umap  # deferred: importing umap-learn costs seconds, and only builds need it

        xs = [_unit_rows(d) for d in decoders]
        if not xs:
            raise ValueError("DecoderUMAP.fit needs at least one decoder")
        self.n_features_in_ = [int(x.shape[1]) for x in xs]
        small = any(x.shape[0] < _MIN_UMAP_ROWS for x in xs)
        use_aligned = bool(
            self.aligned and relations is not None and len(xs) > 1 and not small and any(len(r) for r in relations)
        )
        with warnings.catch_warnings():
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

    def fit_transform(
        self, decoders: Sequence[np.ndarray], relations: Sequence[dict[int, int]] | None = None
    ) -> list[np.ndarray]:
        """Fit and return ``embeddings_``."""
        return self.fit(decoders, relations).embeddings_


def load_relation(bundle: Bundle, source: str = "assignment") -> dict[int, int]:
    """A -> B feature correspondences for AlignedUMAP, one B per A (the strongest).

    Args:
        bundle: an opened bundle.
        source: ``assignment`` (kept rows of assignment.parquet), ``mutual`` (mutual best rows of
            matches.parquet) or ``none``.

    Returns:
        A dict feature_a -> feature_b; empty when the source part is absent.
    """
    if source == "none":
        return {}
    if source == "assignment":
        if not bundle.has("assignment"):
            return {}
        frame = bundle.assignment()
        if "kept" in frame.collect_schema().names():
            frame = frame.filter(pl.col("kept"))
    elif source == "mutual":
        if not bundle.has("matches"):
            return {}
        frame = bundle.matches().filter(pl.col("is_mutual") & (pl.col("direction") == "a->b"))
    else:
        raise SpecError(f"UMAP relation {source!r} is unknown; choose one of {', '.join(RELATION_SOURCES)}.")
    pairs = (
        frame.select(pl.col("feature_a").cast(pl.Int64), pl.col("feature_b").cast(pl.Int64), pl.col("corr"))
        .sort("corr", descending=True, nulls_last=True)
        .unique("feature_a", keep="first", maintain_order=True)
        # AlignedUMAP wants a function, not a relation: one A per B as well
        .unique("feature_b", keep="first", maintain_order=True)
        .collect()
    )
    return dict(zip(pairs["feature_a"].to_list(), pairs["feature_b"].to_list(), strict=True))


def compute_umap_frames(
    decoder_a: np.ndarray,
    decoder_b: np.ndarray,
    relation: dict[int, int] | None,
    settings: UMAPSettings,
) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """Both sides' 2-D maps as frames (``feature``, ``x``, ``y``), and whether they are aligned."""
    model = DecoderUMAP(
        n_neighbors=settings.n_neighbors,
        min_dist=settings.min_dist,
        n_epochs=settings.n_epochs,
        aligned=settings.aligned,
        alignment_regularisation=settings.alignment_regularisation,
        random_state=settings.seed,
    )
    emb_a, emb_b = model.fit_transform([decoder_a, decoder_b], [relation] if relation else None)
    frames = tuple(
        pl.DataFrame(
            {"feature": np.arange(e.shape[0], dtype=np.int32), "x": e[:, 0].astype(np.float32), "y": e[:, 1]}
        ).with_columns(pl.col("y").cast(pl.Float32))
        for e in (emb_a, emb_b)
    )
    return frames[0], frames[1], model.aligned_


def build_umap(
    bundle_path: str | Path,
    settings: UMAPSettings | None = None,
    progress: ProgressFn | None = None,
) -> Bundle:
    """The UMAP stage: write ``umap_a.parquet`` and ``umap_b.parquet`` into a bundle.

    Args:
        bundle_path: a bundle with decoders (an assignment or matches part enables alignment).
        settings: how to embed (defaults: :class:`UMAPSettings`).
        progress: progress callback (stage ``"umap"``, 0/1 then 1/1: UMAP reports no finer steps).

    Returns:
        The bundle, reopened with the umap part.
    """
    settings = settings or UMAPSettings()
    progress = progress or no_progress
    started = time.perf_counter()
    bundle = open_bundle(bundle_path)
    dec_a, dec_b = bundle.decoder("a"), bundle.decoder("b")
    relation = load_relation(bundle, settings.relation) if settings.aligned else {}
    progress("umap", 0, 1)
    frame_a, frame_b, aligned = compute_umap_frames(dec_a, dec_b, relation, settings)
    progress("umap", 1, 1)
    record = {
        "settings": settings.to_dict(),
        "aligned": aligned,
        "n_relations": len(relation),
        "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    return add_parts(
        bundle.path,
        frames={"umap_a.parquet": frame_a, "umap_b.parquet": frame_b},
        manifest_updates={"umap": record},
    )
