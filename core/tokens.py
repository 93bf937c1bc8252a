"""The one rule by which token strings are compared: filters, concept keywords, search and alignment.

A token reaches us in many spellings: a surface string from the text (``" Monday"``), a
GPT-2 byte-level piece (``"ĠMonday"``, ``"Ċ"`` for a newline), a SentencePiece piece
(``"▁Monday"``) or a WordPiece continuation (``"##day"``). They are compared after
:func:`normalize_token`: sub-word markers become spaces, outer whitespace goes, one leading
``##`` goes, and the rest is lower-cased (``str.lower``, which polars' ``to_lowercase``
matches, so the same rule also runs inside a lazy scan through :func:`normalize_token_expr`).
A whitespace-only token normalises to the empty string. The non-concept token list
(`assets/nonconcept_tokens.txt`) is read here too, into that normalised form.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.errors import MatchingError
from core.paths import ASSETS

# sub-word markers of the common tokenizers: GPT-2 BPE space and newline, SentencePiece space
MARKERS = ("Ġ", "Ċ", "▁")
# the editable list of tokens that mark a feature as not a concept (the paper's junk list and ours)
DEFAULT_TOKEN_FILE = ASSETS / "nonconcept_tokens.txt"
# the published pipeline's own junk list, compared as exact strings by the ``paper`` matching preset
PAPER_TOKEN_FILE = ASSETS / "paper_junk_tokens.txt"
# the shipped lists by name (MatchSettings.nonconcept_list)
TOKEN_LISTS = {"featurebridge": DEFAULT_TOKEN_FILE, "paper": PAPER_TOKEN_FILE}


def normalize_token(token: str, fold_case: bool = True) -> str:
    """A token's comparable form.

    Args:
        token: a token or keyword in any of the spellings above.
        fold_case: lower-case the result (the default everywhere; off keeps case).

    Returns:
        The normalised text, for example ``"monday"`` for ``"ĠMonday"`` and ``"day"`` for ``"##day"``.
    """
    for marker in MARKERS:
        token = token.replace(marker, " ")
    token = token.strip().removeprefix("##").strip()
    return token.lower() if fold_case else token


def normalize_token_expr(column: str, fold_case: bool = True) -> Any:
    """The same rule as :func:`normalize_token`, as a polars expression over a string column.

    Args:
        column: the column name.
        fold_case: lower-case the result.

    Returns:
        A ``pl.Expr`` (polars is imported here only, so this module stays import-light).
    """
    import polars as pl

    expr = pl.col(column)
    for marker in MARKERS:
        expr = expr.str.replace_all(marker, " ", literal=True)
    expr = expr.str.strip_chars().str.strip_prefix("##").str.strip_chars()
    return expr.str.to_lowercase() if fold_case else expr


_ESCAPES = {"\\n": "\n", "\\t": "\t"}
EMPTY_MARK = "<empty>"


def parse_token_line(line: str) -> str | None:
    """One line of the token list file as a token, or None for a comment or blank line.

    ``\\n`` and ``\\t`` stand for newline and tab, ``<empty>`` for the empty string, and a
    line starting with ``"# "`` is a comment (a lone ``#`` is the token ``#``).

    Args:
        line: the line, without its line ending.

    Returns:
        The token (not yet normalised), or None.
    """
    if line.startswith("# ") or line.strip() == "":
        return None
    text = line.strip()
    if text == EMPTY_MARK:
        return ""
    for escape, char in _ESCAPES.items():
        text = text.replace(escape, char)
    return text


def load_nonconcept_tokens(path: str | Path | None = None) -> frozenset[str]:
    """Read the editable non-concept token list (default ``assets/nonconcept_tokens.txt``).

    Args:
        path: the list file; None for the shipped default.

    Returns:
        The normalised tokens (see :func:`normalize_token`).
    """
    return load_token_list(path)


def load_token_list(path: str | Path | None = None, normalize: bool = True, fold_case: bool = True) -> frozenset[str]:
    """Read a token list file (the format of :func:`parse_token_line`).

    Args:
        path: the list file; None for ``assets/nonconcept_tokens.txt``.
        normalize: bring each token into :func:`normalize_token`'s form; False keeps the exact strings.
        fold_case: with ``normalize``, lower-case them too.

    Returns:
        The tokens.
    """
    path = Path(path) if path is not None else DEFAULT_TOKEN_FILE
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise MatchingError(
            f"The non-concept token list {path} cannot be read ({exc}); fix the path or restore the file."
        ) from exc
    tokens = (tok for tok in map(parse_token_line, lines) if tok is not None)
    return frozenset(normalize_token(tok, fold_case) if normalize else tok for tok in tokens)
