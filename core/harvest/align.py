"""Align two tokenizations of the same text on common character cuts, and pool codes per unit.

Two models with different tokenizers see the same characters but split them differently
("CO₂" is one WordPiece token and three byte-level BPE tokens). A shared text unit is
the span between two consecutive character positions that are token boundaries on BOTH
sides. Per side, each valid token's span is trimmed to its non-whitespace part (so a
leading-space or newline token never blocks a cut), and a side's cuts are its span
starts and ends that lie strictly inside none of its spans (overlapping or repeated
spans of a byte-split character merge instead of breaking). A unit is kept only if each
side has at least one token in it and a common cut in the same window closes it, so a
truncated tail on one side is dropped rather than misaligned.

Everything works on many windows at once: windows are laid end to end on one character
axis (a one-character gap between them, so no cut or span crosses a window), and every
step is a numpy pass linear in characters plus tokens. When both sides tokenize
identically, :func:`compute_alignment` takes a token-level fast path (each valid token is
a unit, whitespace tokens included), which is what the same-tokenizer harvest does.
"""

from __future__ import annotations

import functools
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from core.bundle.codes import SparseCodes
from core.errors import UserError
from core.harvest.specs import POOLINGS
from core.tokens import normalize_token

# share of non-space characters a tokenizer's offsets must cover, and of sampled tokens
# whose text must equal their span (after normalisation), before we trust its offsets
MIN_COVERAGE = 0.95
MIN_TEXT_MATCH = 0.9
SAMPLE_TOKENS = 64


class AlignmentError(UserError):
    """A tokenizer's character offsets cannot be trusted to align two models."""


@dataclass(frozen=True)
class TokenSpans:
    """One side's tokens over several windows, ragged (no padding), in window then position order.

    Attributes:
        window: int64 [T] window of each token.
        starts: int64 [T] character start of each token, relative to its window's text.
        ends: int64 [T] character end (exclusive).
        valid: bool [T] the token can join a unit (attended, not special, not skipped).
    """

    window: np.ndarray
    starts: np.ndarray
    ends: np.ndarray
    valid: np.ndarray

    def __post_init__(self) -> None:
        for name in ("window", "starts", "ends"):
            object.__setattr__(self, name, np.ascontiguousarray(getattr(self, name), dtype=np.int64))
        object.__setattr__(self, "valid", np.ascontiguousarray(self.valid, dtype=bool))

    @property
    def n_tokens(self) -> int:
        return int(self.starts.shape[0])

    @classmethod
    def from_windows(cls, offsets: Sequence[np.ndarray], valid: Sequence[np.ndarray]) -> TokenSpans:
        """Concatenate per-window ``[L, 2]`` offsets and ``[L]`` validity masks.

        Args:
            offsets: per window, int [L, 2] character spans relative to the window text.
            valid: per window, bool [L].

        Returns:
            The ragged spans.
        """
        lengths = [len(v) for v in valid]
        window = np.repeat(np.arange(len(lengths), dtype=np.int64), lengths)
        spans = np.concatenate([np.asarray(o, dtype=np.int64).reshape(-1, 2) for o in offsets]) if offsets else None
        if spans is None or not len(spans):
            empty = np.zeros(0, np.int64)
            return cls(empty, empty, empty, np.zeros(0, bool))
        return cls(window, spans[:, 0], spans[:, 1], np.concatenate([np.asarray(v, bool) for v in valid]))

    @classmethod
    def from_padded(
        cls, offsets: np.ndarray, attention_mask: np.ndarray, special_tokens_mask: np.ndarray | None = None
    ) -> TokenSpans:
        """Spans of a padded ``[B, L]`` block (either padding side): each row is one window.

        Padding positions are removed by the attention mask row by row, so left and right
        padding give the same spans.

        Args:
            offsets: int [B, L, 2].
            attention_mask: int/bool [B, L].
            special_tokens_mask: int/bool [B, L] or ``None``.

        Returns:
            The ragged spans (row = window).
        """
        attended = np.asarray(attention_mask, bool)
        special = np.zeros_like(attended) if special_tokens_mask is None else np.asarray(special_tokens_mask, bool)
        rows, cols = np.nonzero(attended)
        spans = np.asarray(offsets, np.int64)[rows, cols]
        return cls(rows.astype(np.int64), spans[:, 0], spans[:, 1], ~special[rows, cols])


@dataclass(frozen=True)
class Alignment:
    """Shared units of two tokenizations over several windows.

    Attributes:
        unit_window: int64 [U] window of each unit.
        unit_start: int64 [U] character start of each unit in its window.
        unit_end: int64 [U] character end (exclusive).
        token_unit_a: int64 [Ta] unit of each side-A token, ``-1`` when it joins none.
        token_unit_b: int64 [Tb] the same for side B.
        text_a: bool [Ta] side A's tokens that carry text (valid, non-empty after trimming).
        text_b: bool [Tb] the same for side B.
    """

    unit_window: np.ndarray
    unit_start: np.ndarray
    unit_end: np.ndarray
    token_unit_a: np.ndarray
    token_unit_b: np.ndarray
    text_a: np.ndarray
    text_b: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.unit_start.shape[0])

    @property
    def n_text_a(self) -> int:
        return int(self.text_a.sum())

    @property
    def n_text_b(self) -> int:
        return int(self.text_b.sum())

    def tokens_per_unit(self, side: str) -> np.ndarray:
        """int64 [U] how many of a side's tokens each unit holds."""
        token_unit = self.token_unit_a if side == "a" else self.token_unit_b
        return np.bincount(token_unit[token_unit >= 0], minlength=self.n_units)

    def stats(self) -> dict[str, float | int]:
        """Units, the share of each side's text tokens used, and the share of 1:1 units."""
        count_a, count_b = self.tokens_per_unit("a"), self.tokens_per_unit("b")
        used_a, used_b = int(count_a.sum()), int(count_b.sum())
        return {
            "n_units": self.n_units,
            "tokens_a": self.n_text_a,
            "tokens_b": self.n_text_b,
            "tokens_used_a": used_a,
            "tokens_used_b": used_b,
            "share_tokens_used_a": used_a / max(self.n_text_a, 1),
            "share_tokens_used_b": used_b / max(self.n_text_b, 1),
            "share_one_to_one": float(((count_a == 1) & (count_b == 1)).mean()) if self.n_units else 0.0,
        }


@functools.cache
def _whitespace_codepoints() -> np.ndarray:
    # str.isspace is the definition used everywhere else here (trimming, coverage); the
    # set is tiny, so computing it once beats hard-coding a list that could drift
    return np.array([c for c in range(0x110000) if chr(c).isspace()], dtype=np.uint32)


def _codepoints(text: str) -> np.ndarray:
    # tokenizers report offsets in Python characters (code points), so index by code point
    return np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)


def _layout(texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Window bases on one axis (one gap character between windows) and the space mask."""
    lengths = np.fromiter((len(t) for t in texts), dtype=np.int64, count=len(texts))
    bases = np.zeros(len(texts), dtype=np.int64)
    if len(texts) > 1:
        bases[1:] = np.cumsum(lengths + 1)[:-1]
    # the gap is a space: it is never inside a trimmed span, never a text character
    is_space = np.isin(_codepoints(" ".join(texts)), _whitespace_codepoints())
    return bases, lengths, is_space


def _trim(spans: TokenSpans, bases: np.ndarray, is_space: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global trimmed starts/ends of the valid tokens, and which tokens keep some text."""
    n = is_space.shape[0]
    idx = np.arange(n, dtype=np.int64)
    # first non-space at or after p, and one past the last non-space before p
    next_text = np.minimum.accumulate(np.where(is_space, n, idx)[::-1])[::-1]
    next_text = np.append(next_text, n)
    prev_text_end = np.concatenate([[0], np.maximum.accumulate(np.where(is_space, 0, idx + 1))])
    base = bases[spans.window] if spans.n_tokens else np.zeros(0, np.int64)
    starts = next_text[np.clip(spans.starts + base, 0, n)]
    ends = prev_text_end[np.clip(spans.ends + base, 0, n)]
    keep = spans.valid & (spans.ends > spans.starts) & (starts < ends)
    return starts, ends, keep


def _cuts(starts: np.ndarray, ends: np.ndarray, n: int) -> np.ndarray:
    """bool [n + 1]: positions that are a span start or end and strictly inside no span."""
    # +1 just after each start, -1 at each end: the running sum counts spans strictly around p
    inside = np.cumsum(np.bincount(starts + 1, minlength=n + 2)[: n + 1] - np.bincount(ends, minlength=n + 2)[: n + 1])
    cut = np.zeros(n + 1, dtype=bool)
    cut[starts] = True
    cut[ends] = True
    return cut & (inside == 0)


def compute_alignment(
    texts: Sequence[str], spans_a: TokenSpans, spans_b: TokenSpans, identical: bool = False
) -> Alignment:
    """Shared units of two tokenizations of the same windows.

    Args:
        texts: the window texts (offsets are relative to these).
        spans_a: side A's tokens.
        spans_b: side B's tokens.
        identical: both sides tokenize identically (same spans, same validity); take the
            token-level fast path, where each valid non-empty token is one unit.

    Returns:
        The units (window, start, end) in window and text order and each token's unit.
    """
    if identical:
        return _token_level(spans_a, spans_b)
    for spans in (spans_a, spans_b):
        if spans.n_tokens and (spans.window.min() < 0 or spans.window.max() >= len(texts)):
            raise ValueError(f"token windows must lie in [0, {len(texts)}), the number of texts")
    bases, lengths, is_space = _layout(texts)
    n = is_space.shape[0]
    trimmed = {}
    for side, spans in (("a", spans_a), ("b", spans_b)):
        trimmed[side] = _trim(spans, bases, is_space)
    cut = np.ones(n + 1, dtype=bool)
    for starts, ends, keep in trimmed.values():
        cut &= _cuts(starts[keep], ends[keep], n)
    cuts = np.flatnonzero(cut)
    token_unit = {}
    counts = {}
    for side, (starts, _ends, keep) in trimmed.items():
        interval = np.searchsorted(cuts, starts, side="right") - 1
        inside = keep & (interval >= 0) & (interval < len(cuts) - 1)
        interval = np.where(inside, interval, -1)
        token_unit[side] = interval
        counts[side] = np.bincount(interval[inside], minlength=max(len(cuts) - 1, 0))
    lo, hi = cuts[:-1], cuts[1:]
    # the closing cut must lie in the opening cut's window (never across the gap)
    window = np.searchsorted(bases, lo, side="right") - 1
    same_window = hi <= bases[window] + lengths[window] if len(lo) else np.zeros(0, bool)
    kept = (counts["a"] > 0) & (counts["b"] > 0) & same_window
    renumber = np.full(len(lo) + 1, -1, dtype=np.int64)
    renumber[:-1][kept] = np.arange(int(kept.sum()))
    unit_window = window[kept]
    return Alignment(
        unit_window=unit_window,
        unit_start=lo[kept] - bases[unit_window],
        unit_end=hi[kept] - bases[unit_window],
        token_unit_a=renumber[token_unit["a"]],
        token_unit_b=renumber[token_unit["b"]],
        text_a=trimmed["a"][2],
        text_b=trimmed["b"][2],
    )


def _token_level(spans_a: TokenSpans, spans_b: TokenSpans) -> Alignment:
    same = (
        spans_a.n_tokens == spans_b.n_tokens
        and np.array_equal(spans_a.starts, spans_b.starts)
        and np.array_equal(spans_a.ends, spans_b.ends)
        and np.array_equal(spans_a.window, spans_b.window)
    )
    if not same:
        raise ValueError("identical=True needs the same token spans on both sides")
    keep = spans_a.valid & spans_b.valid & (spans_a.ends > spans_a.starts)
    token_unit = np.full(spans_a.n_tokens, -1, dtype=np.int64)
    token_unit[keep] = np.arange(int(keep.sum()))
    return Alignment(
        unit_window=spans_a.window[keep],
        unit_start=spans_a.starts[keep],
        unit_end=spans_a.ends[keep],
        token_unit_a=token_unit,
        token_unit_b=token_unit.copy(),
        text_a=keep,
        text_b=keep.copy(),
    )


def compute_pooled_codes(
    rows: np.ndarray,
    features: np.ndarray,
    values: np.ndarray,
    token_unit: np.ndarray,
    n_units: int,
    n_features: int,
    pooling: str = "max",
) -> SparseCodes:
    """Pool per-token sparse codes into per-unit codes.

    Args:
        rows: int [nnz] token of each non-zero (index into ``token_unit``).
        features: int [nnz] feature of each non-zero.
        values: float [nnz] activation of each non-zero.
        token_unit: int64 [T] unit of each token, ``-1`` for tokens in no unit.
        n_units: number of units.
        n_features: number of SAE features.
        pooling: ``max`` (keeps a 1-1 match exact whatever the split), ``last`` (the
            latest token, which a causal model has read the whole unit at), ``first``,
            ``sum`` or ``mean`` (over the unit's tokens, zeros included; both scale with
            how finely a tokenizer splits).

    Returns:
        CSR codes [n_units, n_features].
    """
    if pooling not in POOLINGS:
        raise ValueError(f"unknown pooling {pooling!r}; choose one of {', '.join(POOLINGS)}")
    token_unit = np.asarray(token_unit, dtype=np.int64)
    rows = np.asarray(rows, dtype=np.int64)
    unit = token_unit[rows] if len(rows) else np.zeros(0, np.int64)
    inside = unit >= 0
    if pooling in ("first", "last"):
        tokens = np.flatnonzero(token_unit >= 0)
        # tokens are in text order, so the first / last token of a unit has the least / largest index
        if pooling == "first":
            chosen = np.full(n_units, np.iinfo(np.int64).max, dtype=np.int64)
            np.minimum.at(chosen, token_unit[tokens], tokens)
        else:
            chosen = np.full(n_units, -1, dtype=np.int64)
            np.maximum.at(chosen, token_unit[tokens], tokens)
        inside &= chosen[np.where(inside, unit, 0)] == rows
    unit, cols, vals = unit[inside], np.asarray(features, np.int64)[inside], np.asarray(values, np.float64)[inside]
    if pooling in ("first", "last", "sum", "mean"):
        if pooling == "mean":
            per_unit = np.bincount(token_unit[token_unit >= 0], minlength=n_units)
            vals = vals / np.maximum(per_unit[unit], 1)
        # from_coo sums duplicates, which is the pooling itself for sum and mean
        return SparseCodes.from_coo(unit, cols, vals.astype(np.float32), n_units, n_features)
    key = unit * n_features + cols
    order = np.argsort(key, kind="stable")
    key, vals = key[order], vals[order]
    if not len(key):
        return SparseCodes.from_coo(key, key, vals, n_units, n_features)
    first = np.flatnonzero(np.concatenate([[True], key[1:] != key[:-1]]))
    pooled = np.maximum.reduceat(vals, first)
    return SparseCodes.from_coo(key[first] // n_features, key[first] % n_features, pooled, n_units, n_features)


def _normalise(text: str) -> str:
    """A token compared with its offsets' text: NFKD without combining marks, :func:`normalize_token`, no whitespace."""
    text = unicodedata.normalize("NFKD", text)
    text = normalize_token("".join(c for c in text if not unicodedata.combining(c)))
    return "".join(text.split())


def tokenizer_name(tokenizer: Any) -> str:
    """A short name for a tokenizer in error messages."""
    return str(getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__)


def validate_offsets(
    tokenizer: Any,
    texts: Sequence[str],
    input_ids: Sequence[np.ndarray],
    offsets: Sequence[np.ndarray],
    special: Sequence[np.ndarray],
) -> None:
    """Check one batch of a tokenizer's offsets before anything is aligned on them.

    Checks: a fast tokenizer; 0 <= start <= end <= len(text); non-special spans non-empty;
    starts non-decreasing; at least 95% of non-space characters (up to the last token)
    covered; and a sample of tokens whose decoded text equals their span after
    normalisation (NFKD, combining marks removed, casefolded, ``##`` and leading-space
    markers removed).

    Args:
        tokenizer: the tokenizer that produced the batch.
        texts: the window texts.
        input_ids: per window, int [L].
        offsets: per window, int [L, 2].
        special: per window, bool [L] special tokens (added or by id).

    Raises:
        AlignmentError: one sentence naming the tokenizer and the broken property.
    """
    name = tokenizer_name(tokenizer)

    def fail(what: str) -> None:
        raise AlignmentError(
            f"The tokenizer {name!r} returns unusable character offsets ({what}), so its tokens cannot be "
            "aligned with the other model's; use a model with a fast tokenizer whose offsets are correct."
        )

    if not getattr(tokenizer, "is_fast", False):
        fail("it is not a fast tokenizer, so it has no offsets")
    covered_chars = text_chars = 0
    samples: list[tuple[int, str]] = []
    for text, ids, spans, spec in zip(texts, input_ids, offsets, special, strict=True):
        spans = np.asarray(spans, np.int64).reshape(-1, 2)
        spec = np.asarray(spec, bool)
        starts, ends = spans[:, 0], spans[:, 1]
        if np.any(starts < 0) or np.any(starts > ends) or np.any(ends > len(text)):
            fail("a span lies outside its text")
        body = ~spec
        if np.any(ends[body] <= starts[body]):
            fail("a text token has an empty span")
        if np.any(np.diff(starts[body]) < 0):
            fail("token starts go backwards")
        if not body.any():
            continue
        # any token with a span covers text, an [UNK] included: coverage asks whether the
        # offsets reach the characters, not whether the vocabulary does
        spanned = ends > starts
        limit = int(ends[spanned].max())
        cover = np.zeros(limit + 1, np.int64)
        np.add.at(cover, starts[spanned], 1)
        np.add.at(cover, ends[spanned], -1)
        is_text = ~np.isin(_codepoints(text[:limit]), _whitespace_codepoints())
        covered = np.cumsum(cover)[:limit] > 0
        covered_chars += int((covered & is_text).sum())
        text_chars += int(is_text.sum())
        # tokens that share a span with a neighbour are parts of one byte-split character
        lone = body.copy()
        lone[1:] &= starts[1:] >= ends[:-1]
        lone[:-1] &= ends[:-1] <= starts[1:]
        picks = np.flatnonzero(lone)
        step = max(1, len(picks) // 8)
        samples.extend((int(ids[i]), text[starts[i] : ends[i]]) for i in picks[::step][:8])
    if text_chars and covered_chars < MIN_COVERAGE * text_chars:
        fail(f"only {covered_chars / text_chars:.0%} of the text is covered by tokens")
    checked = matched = 0
    special_ids = set(getattr(tokenizer, "all_special_ids", []))
    for token_id, span_text in samples[:SAMPLE_TOKENS]:
        decoded = tokenizer.decode([token_id])
        if "\ufffd" in decoded or token_id in special_ids:
            continue
        want = _normalise(span_text)
        if not want:
            continue
        checked += 1
        matched += _normalise(decoded) == want
    if checked >= 8 and matched < MIN_TEXT_MATCH * checked:
        fail(f"only {matched} of {checked} sampled tokens spell the text at their span")


@dataclass(frozen=True)
class EncodedWindows:
    """One side's tokenization of a list of window texts, unpadded.

    Attributes:
        input_ids: per window, int64 [L] (position 0 may be a prepended sink token).
        offsets: per window, int64 [L, 2] spans relative to the window text.
        valid: per window, bool [L] tokens that may join a unit.
        truncated: per window, whether the tokenizer cut the window short.
    """

    input_ids: list[np.ndarray]
    offsets: list[np.ndarray]
    valid: list[np.ndarray]
    truncated: list[bool]

    def spans(self) -> TokenSpans:
        """The ragged spans of all windows (window = list index)."""
        return TokenSpans.from_windows(self.offsets, self.valid)


def sink_token_id(tokenizer: Any) -> int | None:
    """The token a causal model without BOS reads at position 0 (its document separator).

    ``<|endoftext|>`` separates documents in GPT-2-style pretraining (Pythia, SmolLM2), so
    it is the natural start of a document there; otherwise the end-of-sequence token.
    Returns ``None`` when the tokenizer has neither.
    """
    vocab = tokenizer.get_vocab()
    if "<|endoftext|>" in vocab:
        return int(vocab["<|endoftext|>"])
    eos = getattr(tokenizer, "eos_token_id", None)
    return None if eos is None else int(eos)


def tokenize_for_alignment(
    tokenizer: Any, texts: Sequence[str], max_length: int, causal: bool = False, validate: bool = True
) -> EncodedWindows:
    """Tokenize window texts the way a model reads them, ready to align.

    Explicit truncation to ``max_length`` (a raw tokenizer file may bake its own),
    ``split_special_tokens=True`` (a literal "[CLS]" or "<|endoftext|>" in the corpus stays
    text), and the model's own special tokens. A causal model's position 0 never becomes
    a unit (an attention sink with huge activations): it is the BOS where the tokenizer
    adds one, else a prepended separator (:func:`sink_token_id`), else the first text
    token, which is then skipped.

    Args:
        tokenizer: a fast tokenizer.
        texts: window texts.
        max_length: tokens per window, special tokens included.
        causal: the model is a causal LM.
        validate: check the offsets with :func:`validate_offsets` (raises
            :class:`AlignmentError`).

    Returns:
        The windows' ids, spans and validity.
    """
    texts = list(texts)
    if not texts:
        return EncodedWindows([], [], [], [])
    sink = None
    if causal:
        probe = tokenizer("a", add_special_tokens=True)["input_ids"]
        bos = getattr(tokenizer, "bos_token_id", None)
        if not (probe and bos is not None and probe[0] == bos):
            sink = sink_token_id(tokenizer)
    room = max_length - (1 if sink is not None else 0)
    enc = tokenizer(
        texts,
        add_special_tokens=True,
        truncation=True,
        max_length=room,
        return_offsets_mapping=True,
        return_special_tokens_mask=True,
        return_overflowing_tokens=False,
        split_special_tokens=True,
    )
    special_ids = np.asarray(sorted(set(getattr(tokenizer, "all_special_ids", []))), dtype=np.int64)
    ids_list, offsets_list, special_list = [], [], []
    for i in range(len(texts)):
        ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
        ids_list.append(ids)
        offsets_list.append(np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2))
        special_list.append(np.asarray(enc["special_tokens_mask"][i], dtype=bool) | np.isin(ids, special_ids))
    if validate:
        validate_offsets(tokenizer, texts, ids_list, offsets_list, special_list)
    valid, truncated = [], []
    for i, text in enumerate(texts):
        spans, special = offsets_list[i], special_list[i]
        body = ~special & (spans[:, 1] > spans[:, 0])
        truncated.append(bool(body.any()) and len(text[int(spans[body, 1].max()) :].strip()) > 0)
        if sink is not None:
            ids_list[i] = np.concatenate([[sink], ids_list[i]])
            offsets_list[i] = np.concatenate([np.zeros((1, 2), np.int64), spans])
            body = np.concatenate([[False], body])
        elif causal and len(body):
            body[0] = False
        valid.append(body)
    return EncodedWindows(ids_list, offsets_list, valid, truncated)
