"""Where derived artefacts live, and content hashes that key them."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def _assets_dir() -> Path:
    # an installed wheel carries assets/ inside the core package; a checkout keeps it at the top level
    here = Path(__file__).resolve().parent
    packaged = here / "assets"
    return packaged if packaged.is_dir() else here.parent / "assets"


ASSETS = _assets_dir()


def cache_dir(*parts: str) -> Path:
    """The user cache folder (``$FEATUREBRIDGE_CACHE`` or ``~/.cache/featurebridge``), created.

    Args:
        parts: sub-folders below the cache root.

    Returns:
        The folder path.
    """
    root = Path(os.environ.get("FEATUREBRIDGE_CACHE") or Path.home() / ".cache" / "featurebridge")
    path = root.joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def hash_json(obj: Any, length: int = 16) -> str:
    """A short stable hash of a JSON-serialisable object (keys sorted)."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def hash_file_identity(path: str | Path) -> str:
    """A cheap identity of a file: its resolved path, size and modification time."""
    path = Path(path).resolve()
    stat = path.stat()
    return hash_json([str(path), stat.st_size, int(stat.st_mtime)])


def hash_texts(texts: list[str]) -> str:
    """The sha256 of a list of documents (content hash for the manifest)."""
    digest = hashlib.sha256()
    for text in texts:
        digest.update(text.encode("utf-8", "surrogatepass"))
        digest.update(b"\x00")
    return digest.hexdigest()
