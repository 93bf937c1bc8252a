"""Helpers for the hardening tests: hash a neighbourhood, check that stderr is one sentence."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Iterable
from pathlib import Path


def tree_hash(root: Path, exclude: Iterable[Path] = ()) -> dict[str, str]:
    """Every entry below ``root`` -> a hash of what it is (file bytes, link target, or "dir").

    Args:
        root: the folder to hash.
        exclude: folders (and what is below them) left out, such as the bundle's own.

    Returns:
        Relative path -> digest.
    """
    skip = [Path(os.path.abspath(p)) for p in exclude]
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        dirnames[:] = [d for d in dirnames if Path(os.path.abspath(here / d)) not in skip]
        for name in [*dirnames, *filenames]:
            path = here / name
            if Path(os.path.abspath(path)) in skip:
                continue
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_dir():
                out[rel] = "dir"
            else:
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
    return out


def one_sentence(err: str, *fragments: str) -> str:
    """The error line of a CLI run's stderr, checked: the last line, ``error: ...``, no traceback.

    Args:
        err: everything the run wrote to stderr.
        fragments: text the sentence must contain (the file it names, the advice).

    Returns:
        The sentence.
    """
    assert "Traceback" not in err, err
    lines = [line for line in err.replace("\r", "\n").splitlines() if line.strip()]
    assert lines, "a failure must print its sentence"
    line = lines[-1]
    assert line.startswith("error: "), line
    errors = [x for x in lines if x.startswith("error: ")]
    assert len(errors) == 1, errors
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line
