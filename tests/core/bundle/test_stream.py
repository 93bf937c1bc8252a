"""CodesFile reads the same rows as SparseCodes, and safetensors bytes are reproducible across processes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors import safe_open
from safetensors.numpy import load_file

from core.bundle.codes import SparseCodes
from core.bundle.io import write_safetensors_exact, write_tensors_atomic
from core.bundle.stream import CodesFile
from core.errors import BundleError
from tests.core.planted import random_codes

ROOT = Path(__file__).resolve().parents[3]


def test_codes_file_row_slices_equal_in_memory_slices(tmp_path: Path) -> None:
    codes = random_codes(120, 17, 0.2, seed=3)
    codes.save(tmp_path / "c.safetensors")
    stream = CodesFile(tmp_path / "c.safetensors")
    assert (stream.n_rows, stream.n_features) == codes.shape
    for lo, hi in ((0, 120), (5, 6), (7, 7), (100, 500), (0, 1)):
        got, want = stream.row_slice(lo, hi), codes.row_slice(lo, hi)
        for field in ("indptr", "indices", "values"):
            np.testing.assert_array_equal(getattr(got, field), getattr(want, field))


def test_codes_file_refuses_a_missing_or_foreign_file(tmp_path: Path) -> None:
    with pytest.raises(BundleError, match="does not exist"):
        CodesFile(tmp_path / "none.safetensors")
    write_tensors_atomic({"W_dec": np.zeros((2, 2), np.float32)}, tmp_path / "d.safetensors", {"d_in": "2"})
    with pytest.raises(BundleError, match="lacks"):
        CodesFile(tmp_path / "d.safetensors")


def test_exact_writer_is_read_by_safetensors(tmp_path: Path) -> None:
    tensors = {"b": np.arange(5, dtype=np.int64), "a": np.linspace(0, 1, 6, dtype=np.float32).reshape(2, 3)}
    write_safetensors_exact(tensors, tmp_path / "t.safetensors", {"z": "1", "y": "2"})
    back = load_file(str(tmp_path / "t.safetensors"))
    for name, array in tensors.items():
        np.testing.assert_array_equal(back[name], array)
    with safe_open(str(tmp_path / "t.safetensors"), framework="numpy") as handle:
        assert handle.metadata() == {"y": "2", "z": "1"}


def test_same_codes_give_the_same_bytes_in_two_processes(tmp_path: Path) -> None:
    # the safetensors library orders metadata by a per-process hash seed, so this needs two processes
    script = (
        "import sys; import numpy as np; from tests.core.planted import random_codes; "
        "random_codes(50, 9, 0.3, seed=2).save(sys.argv[1])"
    )
    for name in ("one", "two"):
        subprocess.run([sys.executable, "-c", script, str(tmp_path / name)], check=True, cwd=ROOT)
    assert (tmp_path / "one").read_bytes() == (tmp_path / "two").read_bytes()
    assert SparseCodes.load(tmp_path / "one").nnz == random_codes(50, 9, 0.3, seed=2).nnz
