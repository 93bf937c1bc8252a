"""One boundary for errors: a known failure becomes one sentence, an unknown one a sentence and a log file.

Every user-facing entry point goes through here: the command line (``core.cli.boundary.run_cli``),
the app (``components.widgets.render_failure`` around every page) and the Python API
(:func:`translate_errors` turns known library failures into a :class:`~core.errors.UserError`).
Failures are best explained where they happen (the loader knows the file); this module is the
safety net for what slips through, and the one place that knows the library exception classes.
It imports no torch or polars: classes are recognised by module and name.
"""

from __future__ import annotations

import errno
import json
import os
import pickle
import shutil
import sys
import tempfile
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

from core.errors import UserError

# exceptions whose class lives in one of these modules are told apart by class name below
_POLARS = "polars"
_SAFETENSORS = "safetensors"
_PROTOBUF = "google.protobuf"


class ExplainedError(UserError):
    """A library failure of a known class, restated as one sentence (the original is its ``__cause__``)."""


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0].strip() if text else exc.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _existing_ancestor(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(os.sep)


def free_space(path: str | Path) -> str:
    """Free space on the disk holding ``path`` (or its nearest existing folder), for messages ("1.2 GB")."""
    try:
        free = shutil.disk_usage(_existing_ancestor(Path(path).absolute())).free
    except OSError:
        return "unknown space"
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if free >= size:
            return f"{free / size:.1f} {unit}"
    return f"{free / 1e3:.0f} kB"


def describe_os_error(exc: OSError, path: str | Path | None = None) -> str:
    """One sentence for a failed file operation: which file, what went wrong, what to do.

    Args:
        exc: the error.
        path: the file being written or read when ``exc`` carries none.

    Returns:
        The sentence.
    """
    target = exc.filename if exc.filename is not None else path
    name = f"{target}" if target is not None else "a file"
    code = exc.errno
    if code in (errno.ENOSPC, errno.EDQUOT):
        where = target if target is not None else "."
        return (
            f"Writing {name} failed because the disk is full ({free_space(where)} free there); free some space "
            "and run the same command again (nothing half-written was kept, finished work is)."
        )
    if code == errno.ENOTDIR:
        return f"{name} names a folder below a file; a part of that path is a file, so give a folder path instead."
    if code == errno.EISDIR:
        return f"{name} is a folder where a file is expected; give the path of the file itself."
    if code == errno.ENOENT:
        return f"{name} does not exist; check the path."
    if code in (errno.EACCES, errno.EPERM):
        return f"Permission denied on {name}; choose a place you may write to, or fix the permissions."
    if code == errno.EROFS:
        return f"{name} is on a read-only file system; choose a writable place."
    return f"The file operation on {name} failed ({exc.strerror or _first_line(exc)}); check the path and the disk."


def describe_failure(exc: BaseException) -> str | None:
    """The one sentence for a known failure class, or ``None`` for an unknown one (a bug).

    Args:
        exc: the exception.

    Returns:
        The sentence, or ``None``.
    """
    if isinstance(exc, UserError):
        return str(exc)
    module = type(exc).__module__ or ""
    name = type(exc).__name__
    if isinstance(exc, MemoryError):
        return (
            "The machine ran out of memory; lower the setting that sizes the work (--memory-mb, --batch-tokens, "
            "--max-tokens or --n-null) and run again."
        )
    if isinstance(exc, OSError) and exc.errno is not None:
        return describe_os_error(exc)
    if isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in str(exc):
        return (
            "A file needs unpickling, which this tool refuses because unpickling can run code; convert it to "
            "safetensors (for example with safetensors.torch.save_file) and point at the converted file."
        )
    if module.startswith(_SAFETENSORS) or name == "SafetensorError":
        return f"A safetensors file is corrupt or truncated ({_first_line(exc)}); re-save or re-download it."
    if module.startswith(_PROTOBUF) and name == "DecodeError":
        return "An ONNX file is corrupt (its protobuf does not parse); re-download or re-export it."
    if module.startswith(_POLARS) and "parquet" in str(exc).lower():
        return f"A parquet file is corrupt or truncated ({_first_line(exc)}); rebuild or re-download it."
    if isinstance(exc, json.JSONDecodeError):
        return f"A JSON file is not valid JSON ({_first_line(exc)}); fix it or rebuild it."
    if isinstance(exc, UnicodeDecodeError):
        return f"A text file is not UTF-8 ({_first_line(exc)}); re-save it as UTF-8."
    if isinstance(exc, UnicodeEncodeError) and "surrogate" in str(exc):
        return "A text holds a lone surrogate (an invalid \\ud800-\\udfff escape), which no tokenizer encodes; fix that text."
    return None


def log_dir() -> Path:
    """Where full tracebacks are written: ``$FEATUREBRIDGE_CACHE/logs`` (or the temp folder if that fails)."""
    root = os.environ.get("FEATUREBRIDGE_CACHE") or str(Path.home() / ".cache" / "featurebridge")
    for folder in (Path(root) / "logs", Path(tempfile.gettempdir()) / "featurebridge-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    return Path(tempfile.gettempdir())


def write_traceback(exc: BaseException, context: str = "") -> Path | None:
    """Write the full traceback of ``exc`` to a new log file.

    Args:
        exc: the exception.
        context: what was running (the command line, the page), written first.

    Returns:
        The log file, or ``None`` when no file could be written (a full disk).
    """
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    path = log_dir() / f"error-{stamp}-{os.getpid()}.log"
    body = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    try:
        path.write_text(f"{context}\npython {sys.version.split()[0]}\n\n{body}", encoding="utf-8")
    except OSError:
        return None
    return path


def user_message(exc: BaseException, context: str = "") -> str:
    """What to show a user for any exception: its one sentence, or a sentence and the log file.

    Args:
        exc: the exception.
        context: what was running, recorded in the log of an unknown failure.

    Returns:
        One sentence (one line).
    """
    known = describe_failure(exc)
    if known is not None:
        return " ".join(known.split())
    log = write_traceback(exc, context)
    where = f"the full traceback is in {log}" if log else "the traceback could not be saved (is the disk full?)"
    return (
        f"Unexpected failure ({exc.__class__.__name__}: {_first_line(exc, 120)}); {where}; "
        "please report it with that file."
    )


def is_known(exc: BaseException) -> bool:
    """Whether ``exc`` is a user error or a known failure class (exit status 2, no log)."""
    return describe_failure(exc) is not None


@contextmanager
def translate_errors() -> Iterator[None]:
    """Restate known library failures as :class:`ExplainedError` (a ``UserError``); let bugs through.

    The Python API wraps its entry points in this, so a caller catches ``UserError`` for
    everything a user can cause and still gets the traceback of a bug.
    """
    try:
        yield
    except UserError:
        raise
    except Exception as exc:
        sentence = describe_failure(exc)
        if sentence is None:
            raise
        raise ExplainedError(sentence) from exc
