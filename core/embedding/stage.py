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
from pathlib import Path

import numpy as np
import polars as pl

from core.bundle.provenance import input_digests
from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.embedding.layout import DecoderUMAP
from core.embedding.settings import RELATION_SOURCES, UMAPSettings
from core.errors import SpecError
from core.progress import ProgressFn, no_progress

# relation source -> the bundle file it reads
RELATION_FILES = {"assignment": "assignment.parquet", "mutual": "matches.parquet"}


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
    progress: ProgressFn = no_progress,
) -> tuple[pl.DataFrame, pl.DataFrame, bool]:
    """Both sides' 2-D maps as frames (``feature``, ``x``, ``y``), and whether they are aligned."""
    model = DecoderUMAP(
        n_neighbors=settings.n_neighbors,
        min_dist=settings.min_dist,
        n_epochs=settings.n_epochs,
        aligned=settings.aligned,
        alignment_regularisation=settings.alignment_regularisation,
        random_state=settings.seed,
        method=settings.method,
    )
    emb_a, emb_b = model.fit_transform([decoder_a, decoder_b], [relation] if relation else None, progress)
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
        progress: progress callback (``neighbour graphs``, then each layout loop's epochs, ``layout i/n``).

    Returns:
        The bundle, reopened with the umap part.
    """
    settings = settings or UMAPSettings()
    progress = progress or no_progress
    started = time.perf_counter()
    bundle = open_bundle(bundle_path)
    dec_a, dec_b = bundle.decoder("a"), bundle.decoder("b")
    source = RELATION_FILES.get(settings.relation) if settings.aligned else None
    # the file the relation came from (core.bundle.provenance marks the maps stale when it changes)
    built_from = input_digests(bundle.path, [source] if source else [])
    relation = load_relation(bundle, settings.relation) if settings.aligned else {}
    frame_a, frame_b, aligned = compute_umap_frames(dec_a, dec_b, relation, settings, progress)
    record = {
        "settings": settings.to_dict(),
        "aligned": aligned,
        "n_relations": len(relation),
        "built_from": built_from if relation else {},
        "timings": {"total_s": round(time.perf_counter() - started, 3)},
    }
    return add_parts(
        bundle.path,
        frames={"umap_a.parquet": frame_a, "umap_b.parquet": frame_b},
        manifest_updates={"umap": record},
    )
