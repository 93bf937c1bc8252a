"""SparseCodes and the bundle contract: round trips, invariants, atomic and checked opening."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes, concat_codes
from core.bundle.reader import open_bundle
from core.bundle.schema import MANIFEST, SCHEMA_VERSION
from core.bundle.writer import BundleWriter, add_parts
from core.errors import BundleError


def _random_dense(rows: int = 50, feats: int = 12, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    dense = rng.random((rows, feats)).astype(np.float32)
    dense[dense < 0.7] = 0
    return dense


def test_codes_round_trips_and_slices() -> None:
    dense = _random_dense()
    codes = SparseCodes.from_dense(dense)
    np.testing.assert_array_equal(codes.to_dense(), dense)
    np.testing.assert_array_equal(codes.row_slice(10, 20).to_dense(), dense[10:20])
    np.testing.assert_array_equal(codes.take_rows(np.array([5, 1, 5])).to_dense(), dense[[5, 1, 5]])
    parts = [codes.row_slice(0, 7), codes.row_slice(7, 7), codes.row_slice(7, 50)]
    np.testing.assert_array_equal(concat_codes(parts).to_dense(), dense)
    rows, cols = np.nonzero(dense)
    again = SparseCodes.from_coo(rows, cols, dense[rows, cols], *dense.shape)
    np.testing.assert_array_equal(again.indptr, codes.indptr)
    np.testing.assert_array_equal(codes.row_ids(), rows)
    top_idx = np.array([[0, 3], [2, 2]])
    top_val = np.array([[1.0, 0.0], [0.5, 0.25]])
    np.testing.assert_allclose(SparseCodes.from_topk(top_idx, top_val, 4).to_dense(), [[1, 0, 0, 0], [0, 0, 0.75, 0]])


def test_codes_safetensors_round_trip_and_corruption(tmp_path: Path) -> None:
    codes = SparseCodes.from_dense(_random_dense())
    codes.save(tmp_path / "c.safetensors")
    back = SparseCodes.load(tmp_path / "c.safetensors")
    assert back.n_features == 12
    np.testing.assert_array_equal(back.to_dense(), codes.to_dense())
    (tmp_path / "bad.safetensors").write_bytes(b"garbage")
    with pytest.raises(BundleError, match="not readable"):
        SparseCodes.load(tmp_path / "bad.safetensors")
    broken = SparseCodes(codes.indptr, codes.indices + 100, codes.values, 12)
    with pytest.raises(BundleError, match="feature indices"):
        broken.validate()


def _write_minimal(path: Path) -> Path:
    writer = BundleWriter(path)
    dense = _random_dense(rows=6, feats=4)
    units = pl.DataFrame(
        {
            "unit": range(6),
            "doc": [0] * 6,
            "pos": range(6),
            "text": list("abcdef"),
            "char_start": range(6),
            "char_end": range(1, 7),
        }
    )
    writer.write_units(units)
    writer.write_docs(pl.DataFrame({"doc": [0], "text": ["abcdef"]}))
    features = pl.DataFrame(
        {
            "feature": range(4),
            "freq": [0.1] * 4,
            "mean": [0.1] * 4,
            "std": [0.1] * 4,
            "max": [1.0] * 4,
            "is_dead": [False] * 4,
            "is_dense": [False] * 4,
            "top_tokens": [["a"]] * 4,
            "is_nonconcept": [False] * 4,
        }
    )
    for side in ("a", "b"):
        writer.write_codes(side, SparseCodes.from_dense(dense))
        writer.write_decoder(side, np.eye(4, 3, dtype=np.float32))
        writer.write_features(side, features)
    return writer.finalize({"sides": {"a": {}, "b": {}}, "n_units": 6})


def test_bundle_write_open_and_add_parts(tmp_path: Path) -> None:
    path = _write_minimal(tmp_path / "b")
    bundle = open_bundle(path)
    assert bundle.manifest["schema_version"] == SCHEMA_VERSION
    assert bundle.has("codes") and not bundle.has("matches")
    assert bundle.units().collect().height == 6
    np.testing.assert_array_equal(bundle.decoder("a"), np.eye(4, 3))
    with pytest.raises(BundleError, match="no 'matches' part"):
        bundle.matches()
    bundle = add_parts(path, frames={"matches.parquet": pl.DataFrame({"feature_a": [0]})}, manifest_updates={"x": 1})
    assert bundle.has("matches") and bundle.manifest["x"] == 1
    assert not list(path.glob(".*.tmp")), "no temp file is left behind"
    with pytest.raises(ValueError):
        add_parts(path, frames={"other.parquet": pl.DataFrame({"a": [1]})})


def test_open_refuses_incomplete_unknown_and_missing(tmp_path: Path) -> None:
    path = _write_minimal(tmp_path / "b")
    with pytest.raises(BundleError, match="does not exist"):
        open_bundle(tmp_path / "nope")
    (path / "codes_b.safetensors").unlink()
    with pytest.raises(BundleError, match="incomplete: codes_b.safetensors"):
        open_bundle(path)
    manifest = json.loads((path / MANIFEST).read_text())
    (path / MANIFEST).write_text(json.dumps({**manifest, "schema_version": 2}))
    with pytest.raises(BundleError, match="schema version 2"):
        open_bundle(path)
    (path / MANIFEST).write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        open_bundle(path)
