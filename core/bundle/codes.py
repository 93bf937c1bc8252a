"""Sparse SAE codes: one CSR row per shared text unit, one column per SAE feature.

The layout is the bundle contract (ARCHITECTURE.md): ``indptr`` int64 (n_rows + 1),
``indices`` int32 (nnz), ``values`` float32 (nnz), plus ``n_features``. Column indices
are sorted within each row and every stored value is non-zero.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp
from safetensors import SafetensorError, safe_open
from safetensors.numpy import load_file

from core.bundle.io import write_safetensors_exact
from core.errors import BundleError, MatchingError

_FORMAT = "sparse-codes-csr-v1"


@dataclass(frozen=True, eq=False)
class SparseCodes:
    """CSR codes of one SAE on a sequence of units.

    Attributes:
        indptr: int64 [n_rows + 1], row ``i`` owns ``indices[indptr[i]:indptr[i+1]]``.
        indices: int32 [nnz], feature ids, sorted within each row.
        values: float32 [nnz], activations (non-zero).
        n_features: number of SAE features (``d_sae``).
    """

    indptr: np.ndarray
    indices: np.ndarray
    values: np.ndarray
    n_features: int

    def __post_init__(self) -> None:
        object.__setattr__(self, "indptr", np.ascontiguousarray(self.indptr, dtype=np.int64))
        object.__setattr__(self, "indices", np.ascontiguousarray(self.indices, dtype=np.int32))
        object.__setattr__(self, "values", np.ascontiguousarray(self.values, dtype=np.float32))
        object.__setattr__(self, "n_features", int(self.n_features))

    @property
    def n_rows(self) -> int:
        return int(self.indptr.shape[0] - 1)

    @property
    def nnz(self) -> int:
        return int(self.indices.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        return (self.n_rows, self.n_features)

    def validate(self) -> None:
        """Check the CSR invariants; raise :class:`BundleError` naming the first broken one."""
        problems = []
        if self.indptr.ndim != 1 or self.indptr.shape[0] < 1:
            problems.append("indptr must be 1-D with at least one entry")
        elif self.indptr[0] != 0 or self.indptr[-1] != self.nnz:
            problems.append("indptr must start at 0 and end at nnz")
        elif np.any(np.diff(self.indptr) < 0):
            problems.append("indptr must be non-decreasing")
        if self.values.shape != self.indices.shape:
            problems.append("indices and values must have the same length")
        if self.nnz and (self.indices.min() < 0 or self.indices.max() >= self.n_features):
            problems.append(f"feature indices must lie in [0, {self.n_features})")
        if not np.all(np.isfinite(self.values)):
            problems.append("values must be finite")
        if problems:
            raise BundleError(f"Sparse codes are corrupt ({problems[0]}); rebuild the bundle.")

    @classmethod
    def from_dense(cls, dense: np.ndarray) -> SparseCodes:
        """Build codes from a dense [n_rows, n_features] array, keeping the non-zeros.

        Args:
            dense: float array [n_rows, n_features].

        Returns:
            The CSR codes.
        """
        matrix = sp.csr_matrix(np.asarray(dense, dtype=np.float32))
        return cls.from_scipy(matrix)

    @classmethod
    def from_coo(
        cls,
        rows: np.ndarray,
        cols: np.ndarray,
        vals: np.ndarray,
        n_rows: int,
        n_features: int,
    ) -> SparseCodes:
        """Build codes from coordinate triplets (duplicates are summed, zeros dropped).

        Args:
            rows: int [nnz] row ids.
            cols: int [nnz] feature ids.
            vals: float [nnz] activations.
            n_rows: number of units.
            n_features: number of SAE features.

        Returns:
            The CSR codes.
        """
        matrix = sp.coo_matrix(
            (np.asarray(vals, dtype=np.float32), (np.asarray(rows), np.asarray(cols))),
            shape=(n_rows, n_features),
        ).tocsr()
        return cls.from_scipy(matrix)

    @classmethod
    def from_scipy(cls, matrix: sp.spmatrix | sp.sparray) -> SparseCodes:
        """Build codes from any scipy sparse matrix [n_rows, n_features]."""
        csr = sp.csr_matrix(matrix, dtype=np.float32)
        csr.eliminate_zeros()
        csr.sort_indices()
        return cls(csr.indptr, csr.indices, csr.data, csr.shape[1])

    @classmethod
    def from_topk(cls, indices: np.ndarray, values: np.ndarray, n_features: int) -> SparseCodes:
        """Build codes from fixed-width rows (for example a TopK SAE's top-k).

        Args:
            indices: int [n_rows, k] feature ids per row.
            values: float [n_rows, k] activations; zeros are dropped.
            n_features: number of SAE features.

        Returns:
            The CSR codes.
        """
        n_rows, k = indices.shape
        rows = np.repeat(np.arange(n_rows), k)
        return cls.from_coo(rows, indices.reshape(-1), values.reshape(-1), n_rows, n_features)

    @classmethod
    def empty(cls, n_rows: int, n_features: int) -> SparseCodes:
        """Codes with ``n_rows`` all-zero rows."""
        return cls(np.zeros(n_rows + 1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.float32), n_features)

    def to_scipy(self) -> sp.csr_matrix:
        """The codes as a scipy CSR matrix [n_rows, n_features] (shares memory)."""
        return sp.csr_matrix((self.values, self.indices, self.indptr), shape=self.shape)

    def to_dense(self) -> np.ndarray:
        """Dense float32 [n_rows, n_features]; only for small slices and tests."""
        return self.to_scipy().toarray()

    def row_slice(self, lo: int, hi: int) -> SparseCodes:
        """Rows ``lo`` (inclusive) to ``hi`` (exclusive) as new codes."""
        lo, hi = max(0, lo), min(self.n_rows, hi)
        start, stop = self.indptr[lo], self.indptr[hi]
        return SparseCodes(
            self.indptr[lo : hi + 1] - start,
            self.indices[start:stop],
            self.values[start:stop],
            self.n_features,
        )

    def take_rows(self, rows: np.ndarray) -> SparseCodes:
        """Rows in the given order (any int array of row ids)."""
        return SparseCodes.from_scipy(self.to_scipy()[np.asarray(rows)])

    def row_ids(self) -> np.ndarray:
        """int64 [nnz]: the row of every stored value (COO rows)."""
        return np.repeat(np.arange(self.n_rows, dtype=np.int64), np.diff(self.indptr))

    def save(self, path: str | Path) -> None:
        """Write the codes to a safetensors file atomically (temp name, then rename)."""
        # byte-for-byte reproducible: the same codes give the same file, whichever engine wrote them
        write_safetensors_exact(
            {"indptr": self.indptr, "indices": self.indices, "values": self.values},
            path,
            {"format": _FORMAT, "n_features": str(self.n_features)},
        )

    @classmethod
    def load(cls, path: str | Path) -> SparseCodes:
        """Read codes written by :meth:`save`, validating them.

        Args:
            path: a ``codes_*.safetensors`` file.

        Returns:
            The CSR codes.
        """
        path = Path(path)
        if not path.is_file():
            raise BundleError(f"Codes file {path} does not exist; rebuild the bundle.")
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise BundleError(f"Codes file {path} is not readable safetensors ({exc}); rebuild the bundle.") from exc
        missing = {"indptr", "indices", "values"} - tensors.keys()
        if missing or "n_features" not in metadata:
            raise BundleError(f"Codes file {path} lacks {sorted(missing) or ['n_features']}; rebuild the bundle.")
        codes = cls(tensors["indptr"], tensors["indices"], tensors["values"], int(metadata["n_features"]))
        codes.validate()
        return codes


def concat_codes(parts: Sequence[SparseCodes]) -> SparseCodes:
    """Stack codes row-wise (all parts must have the same ``n_features``).

    Args:
        parts: codes to stack in order.

    Returns:
        One SparseCodes with the rows of every part.
    """
    if not parts:
        raise ValueError("concat_codes needs at least one part")
    n_features = parts[0].n_features
    if any(p.n_features != n_features for p in parts):
        raise ValueError("concat_codes: parts differ in n_features")
    offsets = np.cumsum([0] + [p.nnz for p in parts[:-1]])
    indptr = np.concatenate(
        [np.zeros(1, np.int64)] + [p.indptr[1:] + off for p, off in zip(parts, offsets, strict=True)]
    )
    return SparseCodes(
        indptr,
        np.concatenate([p.indices for p in parts]),
        np.concatenate([p.values for p in parts]),
        n_features,
    )


def as_sparse_codes(codes: object, name: str = "codes") -> SparseCodes:
    """Codes in any accepted form as :class:`SparseCodes`.

    Accepted: :class:`SparseCodes` (returned as is), a scipy sparse matrix or array, a dense
    numpy array, or a torch tensor (dense or sparse, any device; read without importing torch
    here). Every form is [n_units, n_features]; zeros are not stored.

    Args:
        codes: the codes.
        name: what to call them in an error (``codes_a``).

    Returns:
        The CSR codes.
    """
    if isinstance(codes, SparseCodes):
        return codes
    matrix: Any
    if sp.issparse(codes):
        matrix = codes
    elif hasattr(codes, "detach") and hasattr(codes, "cpu"):
        tensor = codes.detach().cpu()
        layout = str(getattr(tensor, "layout", ""))
        if layout == "torch.sparse_coo":
            tensor = tensor.coalesce()
            rows, cols = tensor.indices().numpy()
            matrix = sp.coo_matrix((tensor.values().float().numpy(), (rows, cols)), shape=tuple(tensor.shape))
        elif layout == "torch.sparse_csr":
            matrix = sp.csr_matrix(
                (tensor.values().float().numpy(), tensor.col_indices().numpy(), tensor.crow_indices().numpy()),
                shape=tuple(tensor.shape),
            )
        else:
            matrix = tensor.float().numpy()
    else:
        matrix = np.asarray(codes)
    if matrix.ndim != 2:
        raise MatchingError(f"{name} must be a 2-D [units, features] matrix, got shape {tuple(matrix.shape)}.")
    if not sp.issparse(matrix):
        if not np.issubdtype(matrix.dtype, np.number) or np.issubdtype(matrix.dtype, np.complexfloating):
            raise MatchingError(f"{name} must hold real numbers, got dtype {matrix.dtype}.")
        return SparseCodes.from_dense(matrix)
    return SparseCodes.from_scipy(matrix)
