"""Write a new bundle (parts first, manifest last) and change an existing one, each as one unit.

New bundles are built beside their target and swapped in (:class:`OutputBuild`); stage parts
are committed with their manifest entry in one swap (:func:`add_parts`). The rules of what may
be replaced are in :mod:`core.bundle.safety`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import polars as pl

from core.boundary import describe_os_error
from core.bundle.codes import SparseCodes
from core.bundle.io import BundleWriteError, write_json_atomic, write_parquet_atomic, write_tensors_atomic
from core.bundle.lock import bundle_lock
from core.bundle.reader import Bundle, open_bundle
from core.bundle.safety import (
    BUILD_MARKER,
    BUNDLE_OUTPUT,
    FolderState,
    OutputKind,
    check_output,
    copy_for_change,
    discard,
    inspect_folder,
    open_staging,
    replace_folder,
)
from core.bundle.schema import (
    BUNDLE_KIND,
    FEATURE_COLUMNS,
    MANIFEST,
    PART_FILES,
    REQUIRED_PARTS,
    SCHEMA_VERSION,
    UNITS_COLUMNS,
    _present_parts,
)
from core.sides import check_side

T = TypeVar("T")


class OutputBuild:
    """A new folder built beside its target and swapped in whole: the deletion policy in one object.

    The output is checked at once (:func:`~core.bundle.safety.check_output`, which deletes
    nothing), so a caller can refuse a bad ``--out`` before loading anything. Entering the
    ``with`` takes the target's write lock, checks again and opens the staging folder
    (``.<name>.partial``, keeping an interrupted build's work folder); :meth:`commit` swaps the
    finished staging folder in and only then deletes the old target. Leaving the ``with``
    without a commit keeps the target untouched and the staging folder for a resume.

    Args:
        out: the output path as the user gave it.
        overwrite: whether a finished folder of ours may be replaced.
        kind: the kind of folder being built.
        inputs: (what, path) of the run's local inputs, which the output may never hold.
        flag: how the user named the output, for messages.
    """

    def __init__(
        self,
        out: str | Path | None,
        overwrite: bool = False,
        kind: OutputKind = BUNDLE_OUTPUT,
        inputs: Iterable[tuple[str, str | Path]] = (),
        flag: str = "--out",
    ) -> None:
        self.overwrite = overwrite
        self.kind = kind
        self.inputs = list(inputs)
        self.flag = flag
        self.target = check_output(out, overwrite, kind, self.inputs, flag)
        self._staging: Path | None = None
        self._lock: ExitStack | None = None

    @property
    def staging(self) -> Path:
        """The folder to write into (only inside the ``with``)."""
        if self._staging is None:
            raise RuntimeError("OutputBuild.staging is only available inside its with block")
        return self._staging

    def __enter__(self) -> OutputBuild:
        stack = ExitStack()
        stack.enter_context(bundle_lock(self.target))
        try:
            # the folder may have changed since the first check (another run finished meanwhile)
            check_output(self.target, self.overwrite, self.kind, self.inputs, self.flag)
            self._staging = _guard_io(lambda: open_staging(self.target, self.kind), self.target)
        except BaseException:
            stack.close()
            raise
        self._lock = stack
        return self

    def commit(self) -> Path:
        """Swap the finished staging folder in place of the target, then delete the old target.

        Returns:
            The target folder.
        """
        staging = self.staging
        _guard_io(lambda: replace_folder(staging, self.target, self.kind), self.target)
        self._staging = None
        return self.target

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        staging, self._staging = self._staging, None
        if staging is not None and not _holds_work(staging, self.kind):
            # a run that failed before any resumable work leaves nothing beside the target
            discard(staging, self.kind)
        if self._lock is not None:
            self._lock.close()
            self._lock = None
        if isinstance(exc, BundleWriteError) and staging is not None:
            # name the file the user knows (the bundle's), not the hidden staging folder's
            raise _named_as_target(exc, staging, self.target) from exc


def prepare_output_dir(path: str | Path, overwrite: bool = False, kind: OutputKind = BUNDLE_OUTPUT) -> Path:
    """Make ``path`` ready for a folder written in place (test builders, benchmarks), by the deletion policy.

    A build that must keep an old bundle whole until the new one is finished uses
    :class:`OutputBuild` instead; this is for writers that fill a folder directly. The path is
    checked by :func:`~core.bundle.safety.check_output` first (never a folder holding anything
    this tool did not write, the current or a home folder, a root). An absent, empty or
    unfinished folder of ours is kept as it is (an interrupted build's work folder stays for a
    resume); a finished folder of ours is emptied only with ``overwrite``, its manifest first
    so that it stops being a bundle at once.

    Args:
        path: the output folder.
        overwrite: empty a finished folder of ours.
        kind: the kind of folder to be written.

    Returns:
        The folder (absolute), created.
    """
    target = check_output(path, overwrite, kind)
    if inspect_folder(target, kind).state is FolderState.FINISHED:
        (target / kind.manifest).unlink()
        for entry in target.iterdir():
            # check_output found nothing but our own file names and work folders here; work folders stay
            if not entry.is_dir():
                entry.unlink()
    target.mkdir(parents=True, exist_ok=True)
    return target


class BundleWriter:
    """Writes the parts of a new bundle, then the manifest last.

    Args:
        path: output folder (see :class:`OutputBuild`, or :func:`prepare_output_dir` for a
            folder written in place).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)

    def write_units(self, units: pl.DataFrame) -> None:
        """Write units.parquet (unit, doc, pos, text, char_start, char_end)."""
        _require_columns(units, UNITS_COLUMNS, "units")
        write_parquet_atomic(units.select(UNITS_COLUMNS), self.path / "units.parquet")

    def write_docs(self, docs: pl.DataFrame) -> None:
        """Write docs.parquet (doc, text)."""
        _require_columns(docs, ("doc", "text"), "docs")
        write_parquet_atomic(docs.select("doc", "text"), self.path / "docs.parquet")

    def write_codes(self, side: str, codes: SparseCodes) -> None:
        """Write codes_{side}.safetensors."""
        codes.save(self.path / f"codes_{check_side(side)}.safetensors")

    def write_decoder(self, side: str, w_dec: np.ndarray) -> None:
        """Write decoder_{side}.safetensors: ``W_dec`` [d_sae, d_in] float32."""
        w_dec = np.asarray(w_dec, dtype=np.float32)
        write_tensors_atomic(
            {"W_dec": w_dec},
            self.path / f"decoder_{check_side(side)}.safetensors",
            {"d_sae": str(w_dec.shape[0]), "d_in": str(w_dec.shape[1])},
        )

    def write_features(self, side: str, features: pl.DataFrame) -> None:
        """Write features_{side}.parquet (per-feature statistics)."""
        _require_columns(features, FEATURE_COLUMNS, "features")
        write_parquet_atomic(features, self.path / f"features_{check_side(side)}.parquet")

    def finalize(self, manifest: dict[str, Any]) -> Path:
        """Write manifest.json last, with the schema version and which parts exist.

        Args:
            manifest: the manifest body (sides, corpus, settings, versions, timings, ...).

        Returns:
            The bundle folder.
        """
        body = dict(manifest)
        body["schema_version"] = SCHEMA_VERSION
        body["kind"] = BUNDLE_KIND
        body.setdefault("created_at", datetime.now(timezone.utc).isoformat(timespec="seconds"))
        body["parts"] = _present_parts(self.path)
        missing = [p for p in REQUIRED_PARTS if not body["parts"][p]]
        if missing:
            raise RuntimeError(f"bundle is missing required parts {missing}")
        write_json_atomic(body, self.path / MANIFEST)
        return self.path


def _require_columns(frame: pl.DataFrame, columns: tuple[str, ...], what: str) -> None:
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(f"{what} frame lacks columns {missing}")


def add_parts(
    path: str | Path,
    frames: dict[str, pl.DataFrame] | None = None,
    json_files: dict[str, Any] | None = None,
    manifest_updates: dict[str, Any] | None = None,
) -> Bundle:
    """Add (or replace) parts of an existing bundle and its manifest entry as one unit.

    The parts and the new manifest are written into a hard-linked copy of the bundle beside it,
    which is then swapped in by one rename (see :mod:`core.bundle.safety`): a kill or a full disk
    at any point leaves the old bundle or the new one, never new parts with an old manifest.
    The bundle's write lock is held throughout.

    Args:
        path: the bundle folder.
        frames: file name (for example ``"matches.parquet"``) -> frame to write.
        json_files: file name (for example ``"similarity.json"``) -> object to write.
        manifest_updates: top-level manifest keys to set (for example ``{"matching": {...}}``).

    Returns:
        The bundle, reopened.
    """
    bundle = open_bundle(path)
    known = {f for files in PART_FILES.values() for f in files}
    for name in [*(frames or {}), *(json_files or {})]:
        if name not in known:
            raise ValueError(f"{name} is not a bundle file; known: {sorted(known)}")
    target = Path(os.path.abspath(bundle.path))
    with bundle_lock(target):
        bundle = open_bundle(target)  # the state to change is the one under the lock
        rewritten = [*(frames or {}), *(json_files or {}), MANIFEST]
        staging = _guard_io(lambda: copy_for_change(target, rewritten), target)
        current = staging / MANIFEST
        try:
            for name, frame in (frames or {}).items():
                current = staging / name
                write_parquet_atomic(frame, current)
            for name, obj in (json_files or {}).items():
                current = staging / name
                write_json_atomic(obj, current)
            manifest = dict(bundle.manifest)
            manifest.update(manifest_updates or {})
            manifest["parts"] = _present_parts(staging)
            current = staging / MANIFEST
            write_json_atomic(manifest, current)
            replace_folder(staging, target, keep_marker=(target / BUILD_MARKER).is_file())
        except OSError as exc:
            discard(staging)
            raise BundleWriteError(describe_os_error(exc, target / current.name)) from exc
        except BundleWriteError as exc:
            discard(staging)
            raise _named_as_target(exc, staging, target) from exc
        except BaseException:
            discard(staging)
            raise
    return open_bundle(target)


def _holds_work(folder: Path, kind: OutputKind) -> bool:
    return any((folder / name).is_dir() and any((folder / name).iterdir()) for name in kind.dirs)


def _named_as_target(exc: BundleWriteError, staging: Path, target: Path) -> BundleWriteError:
    """The same sentence with the staging folder's name replaced by the bundle's."""
    return BundleWriteError(str(exc).replace(str(staging), str(target)))


def _guard_io(action: Callable[[], T], where: Path) -> T:
    """Run a folder operation, restating an OS error as one sentence naming the file."""
    try:
        return action()
    except OSError as exc:
        raise BundleWriteError(describe_os_error(exc, where)) from exc
