"""Named lists of pairs that a user saves while browsing a bundle (the app's ``lists.json``).

The file is app-owned, not a bundle part: no stage writes it, the manifest does not list it
(saving a list must not change the manifest, whose modification time keys every cached read),
and a rebuild with ``--overwrite`` removes it with the rest of the folder. It lives inside the
bundle folder so a list travels with the bundle it names features of
(``core.bundle.schema.APP_FILES``; docs/architecture.md). Every change is a locked
read-modify-write followed by an atomic rename, so two sessions saving at once lose nothing.

Format::

    {"schema": 1, "lists": [{"name": "...", "pairs": [[feature_a, feature_b], ...], "note": "",
                             "created_at": "...", "updated_at": "..."}, ...]}

(an array, so the save order survives the writer's sorted keys).

A pair may have a null side (a selected feature with no partner).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.bundle.io import write_json_atomic
from core.bundle.lock import BundleBusyError, bundle_lock
from core.bundle.schema import LISTS_FILE, LISTS_LOCK
from core.errors import BundleError

LISTS_SCHEMA = 1
MAX_NAME = 80
# a stage holding the bundle's lock for longer than this makes a list save fail with its message
BUSY_RETRIES = 10
BUSY_WAIT_S = 0.2

Pair = tuple[int | None, int | None]


@dataclass(frozen=True)
class NamedList:
    """A saved list of pairs.

    Attributes:
        name: the list's name (unique within the bundle).
        pairs: ``(feature_a, feature_b)`` pairs in the order they were saved; a side may be None.
        note: free text the user attached.
        created_at: ISO time of the first save.
        updated_at: ISO time of the last change.
    """

    name: str
    pairs: tuple[Pair, ...]
    note: str = ""
    created_at: str = ""
    updated_at: str = ""

    def to_json(self) -> dict[str, Any]:
        """The list's JSON entry."""
        return {
            "name": self.name,
            "pairs": [list(p) for p in self.pairs],
            "note": self.note,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        }


def lists_path(bundle_path: str | Path) -> Path:
    """Where a bundle's named lists live."""
    return Path(bundle_path) / LISTS_FILE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _check_name(name: str) -> str:
    clean = " ".join(str(name).split())
    if not clean:
        raise BundleError("A list needs a name; type one first.")
    if len(clean) > MAX_NAME:
        raise BundleError(f"List names are at most {MAX_NAME} characters; shorten {clean[:20]!r}….")
    return clean


def _pair(value: Any) -> Pair:
    a, b = value
    return (None if a is None else int(a), None if b is None else int(b))


def _read(path: Path) -> dict[str, NamedList]:
    if not path.is_file():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {
            str(entry["name"]): NamedList(
                str(entry["name"]),
                tuple(_pair(p) for p in entry.get("pairs", [])),
                str(entry.get("note", "")),
                str(entry.get("created_at", "")),
                str(entry.get("updated_at", "")),
            )
            for entry in raw["lists"]
        }
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BundleError(f"{path} is not a readable list file ({exc}); move it away to start a new one.") from exc


@contextlib.contextmanager
def _locked(bundle_path: str | Path) -> Iterator[Path]:
    """Hold the lists lock (list writers wait for each other) and the bundle's write lock.

    The bundle's lock keeps a list save out of a stage's swap (a stage writes a linked copy of the
    folder and renames it into place, so a list saved meanwhile would be left in the old folder);
    list saves take milliseconds, so a busy lock is retried briefly, then reported.
    """
    folder = Path(bundle_path)
    if not folder.is_dir():
        raise BundleError(f"Bundle folder {folder} does not exist; open an existing bundle first.")
    try:
        handle = open(folder / LISTS_LOCK, "a")  # noqa: SIM115  (closed below, after the lock is released)
    except OSError as exc:
        raise BundleError(f"Cannot save lists in {folder} ({exc.strerror}); make the folder writable.") from exc
    try:
        fcntl.flock(handle, fcntl.LOCK_EX)
        for attempt in range(BUSY_RETRIES):
            try:
                with bundle_lock(folder):
                    yield lists_path(folder)
                return
            except BundleBusyError:
                if attempt == BUSY_RETRIES - 1:
                    raise
                time.sleep(BUSY_WAIT_S)
    finally:
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def _write(path: Path, lists: dict[str, NamedList]) -> None:
    body = {"schema": LISTS_SCHEMA, "lists": [lst.to_json() for lst in lists.values()]}
    try:
        write_json_atomic(body, path)
    except OSError as exc:
        raise BundleError(f"Cannot save lists in {path.parent} ({exc.strerror}); make the folder writable.") from exc


def load_named_lists(bundle_path: str | Path) -> dict[str, NamedList]:
    """The bundle's named lists, by name in save order (empty when none were saved).

    Args:
        bundle_path: the bundle folder.

    Returns:
        name -> :class:`NamedList`.
    """
    return _read(lists_path(bundle_path))


def save_named_list(
    bundle_path: str | Path, name: str, pairs: Sequence[Sequence[int | None]], note: str = ""
) -> NamedList:
    """Save (or replace) a named list of pairs beside the bundle.

    Args:
        bundle_path: the bundle folder.
        name: the list's name; an existing list of that name is replaced (its creation time kept).
        pairs: ``(feature_a, feature_b)`` pairs; duplicates are dropped, order kept.
        note: free text to keep with the list.

    Returns:
        The saved list.
    """
    name = _check_name(name)
    clean = tuple(dict.fromkeys(_pair(p) for p in pairs))
    if not clean:
        raise BundleError("The list is empty; select some features first.")
    with _locked(bundle_path) as path:
        lists = _read(path)
        created = lists[name].created_at if name in lists else _now()
        saved = NamedList(name, clean, str(note), created, _now())
        lists[name] = saved
        _write(path, lists)
    return saved


def rename_named_list(bundle_path: str | Path, old: str, new: str) -> NamedList:
    """Rename a list (its place in the order is kept).

    Args:
        bundle_path: the bundle folder.
        old: the current name.
        new: the new name (must not be taken by another list).

    Returns:
        The renamed list.
    """
    new = _check_name(new)
    with _locked(bundle_path) as path:
        lists = _read(path)
        if old not in lists:
            raise BundleError(f"There is no list called {old!r}; reload the page to see the saved lists.")
        if new != old and new in lists:
            raise BundleError(f"A list called {new!r} exists already; choose another name or delete that list.")
        entry = lists[old]
        renamed = NamedList(new, entry.pairs, entry.note, entry.created_at, _now())
        lists = {(new if k == old else k): (renamed if k == old else v) for k, v in lists.items()}
        _write(path, lists)
    return renamed


def delete_named_list(bundle_path: str | Path, name: str) -> None:
    """Delete a list (deleting one that is not there is a no-op).

    Args:
        bundle_path: the bundle folder.
        name: the list's name.
    """
    with _locked(bundle_path) as path:
        lists = _read(path)
        if name in lists:
            del lists[name]
            _write(path, lists)
