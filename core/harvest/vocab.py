"""A unit's text in its tokenizer's own vocabulary form, read back from a bundle.

The bundle stores each unit's surface text (``units.parquet``'s ``text``: ``"Monday"``, ``"un"``).
The published pipeline of Lan et al. labels a feature with ``tokenizer.decode([id])`` of its top
tokens instead: lower case for an uncased WordPiece (``"monday"``), a continuation piece keeps its
``##`` (``"##un"``), a byte-level BPE piece keeps its leading space (``" Monday"``). That form is
recovered here by re-tokenizing the units' documents with the side's own tokenizer (only the
tokenizer is loaded, no weights) and finding each unit's token by its character span: documents are
tokenized whole, and the harvest cut them into windows only at token boundaries, so every token unit
has exactly one token with its span. An aligned span unit (two tokenizers) is the decoded run of
that side's tokens inside the span.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core.bundle.reader import Bundle
from core.harvest.loading import load_tokenizer
from core.harvest.specs import ModelSpec


@dataclass(frozen=True)
class VocabTokens:
    """Units in their tokenizer's vocabulary form.

    Attributes:
        tokens: one string per asked unit, in the order asked.
        tokenizer: the model spec whose tokenizer was used (``kind:source``).
        n_fallback: token units with no token of exactly their span (the tokens inside the span, or
            the unit's surface text re-tokenized, were decoded instead; 0 for a bundle built by this harvest).
    """

    tokens: tuple[str, ...]
    tokenizer: str
    n_fallback: int


def side_model_spec(bundle: Bundle, side: str) -> ModelSpec | None:
    """The model spec a bundle's side was harvested with, or None when the manifest names none."""
    model = bundle.side(side).get("model") or {}
    if not model.get("kind") or not model.get("source"):
        return None
    return ModelSpec(model["kind"], model["source"], model.get("tokenizer"))


def unit_vocab_tokens(bundle: Bundle, side: str, units: np.ndarray, tokenizer: Any = None) -> VocabTokens:
    """``tokenizer.decode([id])`` of the token behind each listed unit.

    Args:
        bundle: an opened bundle whose manifest names side ``side``'s model.
        side: "a" or "b".
        units: int unit ids (repeats allowed).
        tokenizer: the side's fast tokenizer (None: loaded from the manifest's model spec).

    Returns:
        The :class:`VocabTokens` of the units, in their order.
    """
    spec = side_model_spec(bundle, side)
    if tokenizer is None:
        if spec is None:
            raise ValueError(f"side {side} of {bundle.path} names no model, so it has no tokenizer")
        tokenizer = load_tokenizer(spec)
    units = np.asarray(units, dtype=np.int64)
    wanted = np.unique(units)
    rows = (
        bundle.units()
        .select("unit", "doc", "text", "char_start", "char_end")
        .filter(pl.col("unit").is_in(pl.Series(wanted).implode()))
        .collect()
    )
    docs = dict(
        bundle.docs()
        .filter(pl.col("doc").is_in(rows["doc"].unique().implode()))
        .select("doc", "text")
        .collect()
        .iter_rows()
    )
    by_doc: dict[int, tuple[dict[tuple[int, int], int], np.ndarray, np.ndarray]] = {}
    found: dict[int, str] = {}
    n_fallback = 0
    # a span unit (two tokenizers) has no single token of its span by design
    token_units = int(bundle.manifest.get("unit_kind", "token") == "token")
    for unit, doc, text, start, end in rows.iter_rows():
        if doc not in by_doc:
            enc = tokenizer(docs.get(doc, ""), add_special_tokens=False, return_offsets_mapping=True)
            ids = np.asarray(enc["input_ids"], dtype=np.int64)
            offsets = np.asarray(enc["offset_mapping"], dtype=np.int64).reshape(-1, 2)
            spans = {(int(s), int(e)): i for i, (s, e) in enumerate(offsets)}
            by_doc[doc] = (spans, ids, offsets)
        spans, ids, offsets = by_doc[doc]
        pos = spans.get((int(start), int(end)))
        if pos is not None:
            found[unit] = tokenizer.decode([int(ids[pos])])
            continue
        n_fallback += token_units
        inside = (offsets[:, 0] >= start) & (offsets[:, 1] <= end) & (offsets[:, 1] > offsets[:, 0])
        if inside.any():
            found[unit] = tokenizer.decode(ids[inside].tolist())
        else:
            found[unit] = tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"])
    label = spec.label() if spec is not None else "given tokenizer"
    return VocabTokens(tuple(found.get(int(u), "") for u in units), label, n_fallback)
