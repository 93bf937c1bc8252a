"""Tiny comparison bundles with planted features, shared by the dashboard, search and discover tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.bundle.writer import BundleWriter

WORDS = ("the", "cat", "sat", "on", "a", "mat", "and", "dog", "ran", "far")


def units_frame(texts: list[str], doc_len: int) -> pl.DataFrame:
    """Units of consecutive documents of ``doc_len`` units each (char offsets as if space-joined)."""
    n = len(texts)
    pos = np.arange(n) % doc_len
    starts = np.zeros(n, np.int64)
    for i in range(1, n):
        starts[i] = 0 if pos[i] == 0 else starts[i - 1] + len(texts[i - 1]) + 1
    return pl.DataFrame(
        {
            "unit": np.arange(n, dtype=np.int64),
            "doc": np.arange(n, dtype=np.int64) // doc_len,
            "pos": pos.astype(np.int64),
            "text": texts,
            "char_start": starts,
            "char_end": starts + np.array([len(t) for t in texts]),
        }
    )


def features_frame(codes: SparseCodes) -> pl.DataFrame:
    """A features frame with the bundle's FEATURE_COLUMNS, computed densely (tests are tiny)."""
    dense = codes.to_dense()
    n = max(codes.n_rows, 1)
    active = (dense != 0).sum(axis=0)
    return pl.DataFrame(
        {
            "feature": np.arange(codes.n_features, dtype=np.int32),
            "freq": active / n,
            "mean": dense.mean(axis=0) if codes.n_rows else np.zeros(codes.n_features),
            "std": dense.std(axis=0) if codes.n_rows else np.zeros(codes.n_features),
            "max": dense.max(axis=0) if codes.n_rows else np.zeros(codes.n_features),
            "is_dead": active == 0,
            "is_dense": active / n > 0.5,
            "top_tokens": [[] for _ in range(codes.n_features)],
            "is_nonconcept": np.zeros(codes.n_features, bool),
        },
        schema_overrides={"top_tokens": pl.List(pl.String)},
    )


def write_bundle(
    path: Path,
    texts: list[str],
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    doc_len: int = 50,
    d_in: int = 8,
    seed: int = 0,
    assignment: pl.DataFrame | None = None,
) -> Path:
    """Write a whole tiny bundle (random decoders) and return its folder."""
    rng = np.random.default_rng(seed)
    writer = BundleWriter(path)
    units = units_frame(texts, doc_len)
    writer.write_units(units)
    docs = units.group_by("doc", maintain_order=True).agg(pl.col("text").str.join(" "))
    writer.write_docs(docs)
    sides = {}
    for side, codes in (("a", codes_a), ("b", codes_b)):
        writer.write_codes(side, codes)
        writer.write_decoder(side, rng.standard_normal((codes.n_features, d_in)).astype(np.float32))
        writer.write_features(side, features_frame(codes))
        sides[side] = {"hook": f"blocks.1.hook_resid_post.{side}", "d_sae": codes.n_features, "d_in": d_in}
    if assignment is not None:
        assignment.write_parquet(path / "assignment.parquet")
    writer.finalize({"sides": sides, "n_units": len(texts)})
    return open_bundle(path).path


def random_codes(n_units: int, n_features: int, density: float, seed: int) -> SparseCodes:
    """Random non-negative codes with about ``density`` of entries active."""
    rng = np.random.default_rng(seed)
    dense = rng.gamma(2.0, 1.0, size=(n_units, n_features)).astype(np.float32)
    dense[rng.random((n_units, n_features)) > density] = 0
    return SparseCodes.from_dense(dense)


N = 800
COMET = [10, 60, 200, 420, 421, 700]


def planted_comet() -> tuple[list[str], SparseCodes, SparseCodes]:
    """800 units where a3, b2 and b4 fire only on 'comet' (see the comments), plus background features."""
    rng = np.random.default_rng(0)
    texts = list(rng.choice(WORDS, N))
    for u in COMET:
        texts[u] = "comet"
    a = np.zeros((N, 6), np.float32)
    b = np.zeros((N, 5), np.float32)
    for f in (0, 1):  # background features on both sides
        a[:, f] = rng.random(N) * (rng.random(N) < 0.3)
        b[:, f] = rng.random(N) * (rng.random(N) < 0.3)
    # a3 fires on every comet at 2.0; b2 fires on half of them at 3.0;
    # b4 fires on every comet at 1.0
    a[COMET, 3] = 2.0
    b[COMET[:3], 2] = 3.0
    b[COMET, 4] = 1.0
    return texts, SparseCodes.from_dense(a), SparseCodes.from_dense(b)


ASSIGNMENT = pl.DataFrame(
    {
        "feature_a": [3, 3, 0],
        "feature_b": [2, 4, 1],
        "method": ["many_to_1"] * 3,
        "corr": [0.9, 0.7, 0.2],
        "kept": [True, True, False],
        "reason": [None, None, "corr below threshold"],
    },
    schema_overrides={"reason": pl.String},
)
