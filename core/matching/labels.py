"""Feature label lists: what the non-concept and shared-token filters read.

Two definitions (``MatchSettings.label_source``):

- ``top_tokens``: the features table's ``top_tokens``, distinct surface strings, most frequent
  among the feature's top activations first (what the harvest writes); the first
  ``nonconcept_top_n`` of them;
- ``top_activations``: the units of the feature's ``nonconcept_top_n`` highest activations over all
  units, highest first (the earlier unit first on ties), repeats allowed: the published pipeline's
  labels. Each unit is its surface text or, with ``label_form="vocab"``, its tokenizer's
  vocabulary form (:mod:`core.harvest.vocab`).

Label tokens are compared in one of two ways (``label_match``): ``normalized`` (through
:func:`core.tokens.normalize_token`, case-folded when ``fold_case``) or ``exact`` (the strings as
they are, as published). The token list of the non-concept filter is read in the same form.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numba as nb
import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle
from core.errors import MatchingError
from core.matching.filters import top_token_lists
from core.matching.kernels import feature_major, top_share_units, top_units
from core.matching.settings import MatchSettings
from core.tokens import TOKEN_LISTS, load_token_list, normalize_token


@dataclass(frozen=True)
class SideLabels:
    """One side's label lists and how they were made.

    Attributes:
        lists: per feature, its label tokens in order (repeats kept for ``top_activations``).
        sets: per feature, the set of its label tokens in comparison form.
        record: what the manifest records: source, form actually used, tokenizer, fallbacks.
    """

    lists: tuple[tuple[str, ...], ...]
    sets: tuple[frozenset[str], ...]
    record: dict[str, Any]


def compute_top_units(codes: SparseCodes, counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each feature's highest-activation units, in one pass over the codes.

    Args:
        codes: CSR codes of one side.
        counts: int [F], how many units to take per feature (capped at its firing count).

    Returns:
        ``(ptr, units)``: feature ``j``'s units are ``units[ptr[j]:ptr[j+1]]``, highest activation
        first, the earlier unit first on ties.
    """
    n_fire = np.bincount(codes.indices, minlength=codes.n_features).astype(np.int64)
    take = np.minimum(np.asarray(counts, np.int64), n_fire)
    ptr = np.zeros(codes.n_features + 1, np.int64)
    np.cumsum(take, out=ptr[1:])
    values = np.ascontiguousarray(codes.values, dtype=np.float32)
    if values.size and values.min() > 0:
        # positive activations (every SAE here): the histogram route never regroups all entries
        out = np.empty(int(ptr[-1]), np.int64)
        top_share_units(
            codes.indptr.astype(np.int64),
            codes.indices,
            values.view(np.uint32),
            values,
            codes.n_features,
            take,
            nb.get_num_threads(),
            ptr,
            out,
        )
        return ptr, out
    colptr, units, vals = feature_major(
        codes.indptr.astype(np.int64), codes.indices, values, codes.n_features, nb.get_num_threads()
    )
    out32 = np.empty(int(ptr[-1]), np.int32)
    top_units(colptr, units, vals, ptr, out32)
    out = out32.astype(np.int64)
    return ptr, out.astype(np.int64)


def compare_form(token: str, settings: MatchSettings) -> str:
    """A label token in the form the filters compare it in (see the module docstring)."""
    return normalize_token(token, settings.fold_case) if settings.label_match == "normalized" else token


def load_filter_tokens(settings: MatchSettings) -> frozenset[str]:
    """The non-concept token list of the settings, in the label comparison form."""
    path = settings.nonconcept_file or TOKEN_LISTS[settings.nonconcept_list]
    return load_token_list(path, normalize=settings.label_match == "normalized", fold_case=settings.fold_case)


# the vocabulary form of units: unit ids -> (their tokens, a record: form, tokenizer, fallbacks)
VocabForms = Callable[[np.ndarray], tuple[list[str], dict[str, Any]]]


def bundle_vocab_forms(bundle: Bundle, side: str) -> VocabForms | None:
    """The vocabulary form of a bundle's units for one side, or None when its manifest names no model.

    Args:
        bundle: the opened bundle.
        side: "a" or "b".

    Returns:
        A function of unit ids (see ``VocabForms``), or None.
    """
    from core.harvest.vocab import side_model_spec, unit_vocab_tokens

    if side_model_spec(bundle, side) is None:
        return None

    def forms(units: np.ndarray) -> tuple[list[str], dict[str, Any]]:
        vocab = unit_vocab_tokens(bundle, side, units)
        return list(vocab.tokens), {"form": "vocab", "tokenizer": vocab.tokenizer, "n_fallback": vocab.n_fallback}

    return forms


def compute_side_labels(
    codes: SparseCodes,
    features: pl.DataFrame | None,
    settings: MatchSettings,
    unit_text: Sequence[str] | None = None,
    vocab: VocabForms | None = None,
) -> SideLabels:
    """One side's label lists under the settings.

    Args:
        codes: that side's codes.
        features: that side's features frame (``feature``, ``top_tokens``) for ``top_tokens`` labels.
        settings: the matching settings.
        unit_text: every unit's text, in unit order (``top_activations`` labels need it).
        vocab: the vocabulary form of units for ``label_form="vocab"`` (None: the surface text,
            with a note in the record).

    Returns:
        The :class:`SideLabels`.
    """
    n, top_n = codes.n_features, settings.nonconcept_top_n
    if settings.label_source == "top_tokens":
        raw = top_token_lists(features, n, top_n)
        lists = tuple(tuple(t) for t in raw)
        record: dict[str, Any] = {"source": "top_tokens", "form": "surface", "top_n": top_n}
        if features is None:
            record["note"] = "no features table: every label list is empty"
    else:
        if unit_text is None:
            raise MatchingError(
                "label_source='top_activations' labels features by the text of their top units; pass unit_text."
            )
        ptr, units = compute_top_units(codes, np.full(n, top_n, np.int64))
        texts, record = _label_texts(units, unit_text, vocab, settings.label_form)
        record = {"source": "top_activations", "top_n": top_n, **record}
        lists = tuple(tuple(texts[ptr[j] : ptr[j + 1]]) for j in range(n))
    sets = tuple(frozenset(compare_form(t, settings) for t in labels) for labels in lists)
    return SideLabels(lists, sets, {**record, "match": settings.label_match, "fold_case": settings.fold_case})


def _label_texts(
    units: np.ndarray, unit_text: Sequence[str], vocab: VocabForms | None, form: str
) -> tuple[list[str], dict[str, Any]]:
    if form == "vocab":
        if vocab is not None:
            return vocab(units)
        note: str | None = (
            "no tokenizer is known for this side (the manifest names no model), so units keep their surface text"
        )
    else:
        note = None
    if units.size and units.max() >= len(unit_text):
        raise MatchingError(f"The units list {len(unit_text)} texts but the codes name more; rebuild the bundle.")
    text = np.asarray(unit_text, dtype=object)
    out = [str(t) for t in text[units]] if units.size else []
    record: dict[str, Any] = {"form": "surface"}
    if note:
        record["note"] = note
    return out, record
