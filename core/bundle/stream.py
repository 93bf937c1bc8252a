"""Codes read from storage a row range at a time, so a reduce task never holds a whole codes file.

A scale-out reduce task streams every unit of both sides' codes: at 100M units that is tens of
GB per side, so :class:`CodesFile` reads ``indptr[lo:hi+1]`` and the matching slice of
``indices`` and ``values`` straight from the safetensors file (``safe_open`` slices, no full
load). It offers what the chunked statistics need from :class:`SparseCodes` (``n_rows``,
``n_features``, ``row_slice``), so the same functions run on an in-memory or an on-disk source.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from safetensors import SafetensorError, safe_open

from core.bundle.codes import SparseCodes
from core.errors import BundleError


class RowSliceable(Protocol):
    """What a chunked statistic needs from a codes source (``SparseCodes`` or ``CodesFile``)."""

    @property
    def n_rows(self) -> int:
        """Number of units."""
        ...

    @property
    def n_features(self) -> int:
        """Number of SAE features."""
        ...

    def row_slice(self, lo: int, hi: int) -> SparseCodes:
        """Rows ``lo`` to ``hi`` (exclusive) as in-memory codes."""
        ...


class CodesFile:
    """A ``codes_*.safetensors`` file read lazily, one row range per call.

    Args:
        path: a codes file written by :meth:`SparseCodes.save`.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise BundleError(f"Codes file {self.path} does not exist; rebuild the bundle.")
        try:
            with safe_open(str(self.path), framework="numpy") as handle:
                metadata = handle.metadata() or {}
                missing = sorted({"indptr", "indices", "values"} - set(handle.keys()))
                if missing or "n_features" not in metadata:
                    raise BundleError(f"Codes file {self.path} lacks {missing or ['n_features']}; rebuild the bundle.")
                self._n_rows = int(handle.get_slice("indptr").get_shape()[0]) - 1
        except (SafetensorError, OSError, ValueError, json.JSONDecodeError) as exc:
            raise BundleError(
                f"Codes file {self.path} is not readable safetensors ({exc}); rebuild the bundle."
            ) from exc
        self._n_features = int(metadata["n_features"])

    @property
    def n_rows(self) -> int:
        """Number of units."""
        return self._n_rows

    @property
    def n_features(self) -> int:
        """Number of SAE features."""
        return self._n_features

    def row_slice(self, lo: int, hi: int) -> SparseCodes:
        """Rows ``lo`` (inclusive) to ``hi`` (exclusive), read from the file.

        Args:
            lo: first unit.
            hi: one past the last unit.

        Returns:
            In-memory codes of those rows (``indptr`` rebased to 0), equal to
            ``SparseCodes.load(path).row_slice(lo, hi)``.
        """
        lo, hi = max(0, lo), min(self._n_rows, hi)
        hi = max(lo, hi)
        with safe_open(str(self.path), framework="numpy") as handle:
            indptr = handle.get_slice("indptr")[lo : hi + 1]
            start, stop = int(indptr[0]), int(indptr[-1])
            indices = handle.get_slice("indices")[start:stop]
            values = handle.get_slice("values")[start:stop]
        return SparseCodes(indptr - start, indices, values, self._n_features)
