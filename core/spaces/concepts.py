"""Concept subspaces: keyword groups, and the matched pairs whose features speak of them.

A concept (for example "emotions") is a list of keywords. A matched pair belongs to the
concept when one of the top tokens of its A feature and/or its B feature (see
``match``) is a keyword, after both are normalised the same way. The default groups ship
as ``assets/concepts.json``, which users may edit or replace.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from core.errors import SpecError
from core.paths import ASSETS
from core.tokens import normalize_token

DEFAULT_CONCEPTS_PATH = ASSETS / "concepts.json"
CONCEPT_MATCH = ("either", "both", "a", "b")

# tokenizer marks that carry no meaning for a keyword match: GPT-2/Llama space marks,
# SentencePiece's space mark, WordPiece continuation marks


def load_concept_groups(path: str | Path | None = None) -> dict[str, tuple[str, ...]]:
    """Read keyword groups from a JSON file.

    The file is ``{"groups": {"name": ["keyword", ...], ...}}`` (a bare
    ``{"name": [...]}`` mapping is accepted too).

    Args:
        path: the JSON file; ``None`` reads the shipped ``assets/concepts.json``.

    Returns:
        Concept name -> normalised, de-duplicated keywords (in file order).
    """
    path = Path(path) if path is not None else DEFAULT_CONCEPTS_PATH
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise SpecError(f"Concept file {path} does not exist; pass an existing JSON file of keyword groups.") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise SpecError(f"Concept file {path} is not valid JSON ({exc}); fix it or use the shipped default.") from exc
    groups = raw.get("groups", raw) if isinstance(raw, dict) else None
    if not isinstance(groups, dict) or not groups:
        raise SpecError(f'Concept file {path} holds no keyword groups; write {{"groups": {{"name": ["word"]}}}}.')
    out: dict[str, tuple[str, ...]] = {}
    for name, words in groups.items():
        if not isinstance(words, list) or not all(isinstance(w, str) for w in words):
            raise SpecError(f"Concept {name!r} in {path} must be a list of keyword strings; fix that entry.")
        normalised = [normalize_token(w) for w in words]
        kept = tuple(dict.fromkeys(w for w in normalised if w))
        if not kept:
            raise SpecError(f"Concept {name!r} in {path} has no non-empty keywords; add some or remove it.")
        out[str(name)] = kept
    return out


def _feature_hits(top_tokens: Sequence[Sequence[str] | None], keywords: frozenset[str], top_n: int) -> np.ndarray:
    hits = np.zeros(len(top_tokens), dtype=bool)
    for i, tokens in enumerate(top_tokens):
        if tokens is None:
            continue
        hits[i] = any(normalize_token(t) in keywords for t in list(tokens)[:top_n] if t is not None)
    return hits


def select_concept_pairs(
    top_tokens_a: Sequence[Sequence[str] | None],
    top_tokens_b: Sequence[Sequence[str] | None],
    groups: Mapping[str, Sequence[str]],
    match: str = "either",
    top_n: int = 5,
) -> dict[str, np.ndarray]:
    """Which matched pairs belong to each concept.

    Args:
        top_tokens_a: per pair, the top tokens of its A feature (most activating first).
        top_tokens_b: per pair, the top tokens of its B feature.
        groups: concept name -> keywords (normalised or not).
        match: ``"either"`` (a keyword among the A or the B tokens), ``"both"``, ``"a"`` or ``"b"``.
        top_n: how many top tokens of each feature are looked at.

    Returns:
        Concept name -> int64 array of pair positions (rows of the pairing), ascending.
    """
    if match not in CONCEPT_MATCH:
        raise SpecError(f"Concept match {match!r} is unknown; choose one of {', '.join(CONCEPT_MATCH)}.")
    if len(top_tokens_a) != len(top_tokens_b):
        raise ValueError("top_tokens_a and top_tokens_b must have one entry per pair")
    out: dict[str, np.ndarray] = {}
    for name, words in groups.items():
        keywords = frozenset(normalize_token(w) for w in words)
        hit_a = _feature_hits(top_tokens_a, keywords, top_n)
        hit_b = _feature_hits(top_tokens_b, keywords, top_n)
        chosen = {"either": hit_a | hit_b, "both": hit_a & hit_b, "a": hit_a, "b": hit_b}[match]
        out[name] = np.flatnonzero(chosen).astype(np.int64)
    return out
