"""Token windows over the corpus (one tokenizer, or shared character windows for two), shards and batches."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from core.errors import SpecError
from core.harvest.align import EncodedWindows, compute_alignment, tokenize_for_alignment
from core.harvest.loading import LoadedModel
from core.harvest.specs import HarvestSettings
from core.sides import SIDES


@dataclass(frozen=True)
class Window:
    """One tokenized window of a document.

    Attributes:
        doc: document index.
        input_ids: int64 [L], special tokens included.
        offsets: int64 [L, 2] character span of each token in the document.
        keep: bool [L], tokens that become units.
        pos: int64 [L], position of each token among the document's kept tokens.
    """

    doc: int
    input_ids: np.ndarray
    offsets: np.ndarray
    keep: np.ndarray
    pos: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.keep.sum())


@dataclass(frozen=True)
class AlignedWindow:
    """One shared character window of a document, tokenized by both sides and aligned.

    Attributes:
        doc: document index.
        char_lo: where the window starts in the document.
        sides: side -> that model's tokens of the window (offsets in document
            characters; ``keep`` marks the tokens inside a kept unit).
        token_unit: side -> window-local unit of each kept token, in token order.
        unit_start: int64 [U] unit starts in document characters.
        unit_end: int64 [U] unit ends.
        unit_pos: int64 [U] index of each unit among the document's units.
    """

    doc: int
    char_lo: int
    sides: dict[str, Window]
    token_unit: dict[str, np.ndarray]
    unit_start: np.ndarray
    unit_end: np.ndarray
    unit_pos: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.unit_start.shape[0])


def same_tokenizer(tok_a: Any, tok_b: Any) -> bool:
    """Whether two tokenizers split text alike (same vocabulary, same ids on a probe).

    Args:
        tok_a: side A's fast tokenizer.
        tok_b: side B's fast tokenizer.

    Returns:
        ``True`` when the token-level path applies.
    """
    probe = "The quick brown fox, CO2 and 3.14159 naïve café — don't stop!"
    return tok_a is tok_b or (
        tok_a.get_vocab() == tok_b.get_vocab() and tok_a(probe)["input_ids"] == tok_b(probe)["input_ids"]
    )


def check_same_tokenizer(tok_a: Any, tok_b: Any) -> None:
    """Refuse a pair whose tokenizers split text differently (span alignment comes later).

    Args:
        tok_a: side A's fast tokenizer.
        tok_b: side B's fast tokenizer.
    """
    probe = "The quick brown fox, CO2 and 3.14159 naïve café — don't stop!"
    if tok_a.get_vocab() != tok_b.get_vocab() or tok_a(probe)["input_ids"] != tok_b(probe)["input_ids"]:
        raise SpecError(
            "The two models use different tokenizers; comparing across tokenizers is not supported yet, "
            "so pick two models that share one."
        )


def tokenize_windows(tokenizer: Any, docs: Sequence[str], settings: HarvestSettings) -> list[Window]:
    """Cut documents into model windows until ``settings.max_tokens`` units are reached.

    Args:
        tokenizer: a fast tokenizer (offsets needed).
        docs: the documents.
        settings: harvest settings (max_len, max_tokens, mask_special).

    Returns:
        Windows in document order; the last one may keep fewer tokens to hit the budget.
    """
    windows: list[Window] = []
    total = 0
    for start in range(0, len(docs), 256):
        batch = list(docs[start : start + 256])
        enc = tokenizer(
            batch,
            truncation=True,
            max_length=settings.max_len,
            return_overflowing_tokens=True,
            return_offsets_mapping=True,
            return_special_tokens_mask=True,
        )
        doc_pos: dict[int, int] = {}
        for i, sample in enumerate(enc["overflow_to_sample_mapping"]):
            doc = start + int(sample)
            ids = np.asarray(enc["input_ids"][i], dtype=np.int64)
            offsets = np.asarray(enc["offset_mapping"][i], dtype=np.int64).reshape(-1, 2)
            special = np.asarray(enc["special_tokens_mask"][i], dtype=bool)
            if settings.mask_special:
                # empty-span tokens carry no text to show or align, whatever the mask says
                keep = ~special & (offsets[:, 1] > offsets[:, 0])
            else:
                keep = np.ones(len(ids), dtype=bool)
            room = settings.max_tokens - total
            if keep.sum() > room:
                keep[np.flatnonzero(keep)[room:]] = False
            first = doc_pos.get(doc, 0)
            pos = np.full(len(ids), -1, dtype=np.int64)
            pos[keep] = np.arange(first, first + keep.sum())
            doc_pos[doc] = first + int(keep.sum())
            if keep.any():
                windows.append(Window(doc, ids, offsets, keep, pos))
                total += int(keep.sum())
            if total >= settings.max_tokens:
                return windows
    return windows


def plan_shards(windows: Sequence[Window], shard_units: int) -> list[tuple[int, int]]:
    """Group consecutive windows into shards of about ``shard_units`` units.

    Returns:
        ``(first window, end window)`` pairs covering all windows in order.
    """
    shards, start, count = [], 0, 0
    for i, window in enumerate(windows):
        count += window.n_units
        if count >= shard_units:
            shards.append((start, i + 1))
            start, count = i + 1, 0
    if start < len(windows):
        shards.append((start, len(windows)))
    return shards


def iter_batches(
    windows: Sequence[Window], batch_tokens: int, pad_id: int
) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor]]:
    """Batches of windows sorted by length (longest first), padded to the batch's longest.

    Yields:
        ``(window indices, input_ids [B, L], attention_mask [B, L])``.
    """
    order = sorted(range(len(windows)), key=lambda i: -len(windows[i].input_ids))
    i = 0
    while i < len(order):
        longest = len(windows[order[i]].input_ids)
        size = max(1, batch_tokens // longest)
        chosen = np.asarray(order[i : i + size])
        ids = torch.full((len(chosen), longest), pad_id, dtype=torch.long)
        mask = torch.zeros((len(chosen), longest), dtype=torch.long)
        for row, w in enumerate(chosen):
            n = len(windows[w].input_ids)
            ids[row, :n] = torch.from_numpy(windows[w].input_ids)
            mask[row, :n] = 1
        yield chosen, ids, mask
        i += size


def pad_id(model: LoadedModel) -> int:
    """The id batches are padded with (the pad token, else end-of-text, else 0; masked out anyway)."""
    tok = model.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))


# tokens kept free in each window's budget: a window re-tokenized on its own can take a
# token or two more than the same text inside the document (a first word without its space)
_WINDOW_MARGIN = 2


# documents planned per tokenizer call
_PLAN_DOCS = 256


def cut_char_windows(
    docs: Sequence[str], sides: dict[str, tuple[Any, int]], first_doc: int = 0
) -> list[tuple[int, int, int]]:
    """Cut documents into character windows at whitespace, so every side's tokens fit.

    Args:
        docs: the documents.
        sides: side -> (fast tokenizer, text tokens a window may hold for that model).
        first_doc: index of ``docs[0]`` in the corpus.

    Returns:
        ``(doc, char_lo, char_hi)`` per window, in document order; windows holding only
        whitespace are left out.
    """
    starts: dict[str, list[np.ndarray]] = {}
    for name, (tok, _) in sides.items():
        enc = tok(list(docs), add_special_tokens=False, return_offsets_mapping=True, split_special_tokens=True)
        starts[name] = [np.asarray(o, np.int64).reshape(-1, 2)[:, 0] for o in enc["offset_mapping"]]
    out = []
    for i, text in enumerate(docs):
        lo, n = 0, len(text)
        while lo < n:
            hi = n
            for name, (_, budget) in sides.items():
                first = int(np.searchsorted(starts[name][i], lo, side="left"))
                if first + budget < len(starts[name][i]):
                    hi = min(hi, int(starts[name][i][first + budget]))
            if hi < n:
                # end at the last whitespace, so no word is split between two windows
                space = max(text.rfind(c, lo + 1, hi + 1) for c in (" ", "\n", "\t"))
                hi = space if space > lo else max(hi, lo + 1)
            if text[lo:hi].strip():
                out.append((first_doc + i, lo, hi))
            lo = hi
    return out


def plan_aligned_windows(
    models: dict[str, LoadedModel], docs: Sequence[str], settings: HarvestSettings
) -> tuple[list[AlignedWindow], dict[str, Any]]:
    """Shared character windows, tokenized per side, aligned, until ``settings.max_tokens`` units.

    Alignment needs only the tokenizers, so the whole plan (and the exact unit budget)
    is known before any model runs.

    Args:
        models: side -> model (only its tokenizer and causal flag are read).
        docs: the documents.
        settings: max_len (per model window, special tokens included), max_tokens (units).

    Returns:
        The windows and the alignment statistics (units, share of each side's text
        tokens used, share of 1:1 units, pooling).
    """
    budgets = {}
    for name in SIDES:
        model = models[name]
        overhead = (
            len(tokenize_for_alignment(model.tokenizer, ["a"], settings.max_len, model.is_causal).input_ids[0]) - 1
        )
        budgets[name] = (model.tokenizer, max(1, settings.max_len - overhead - _WINDOW_MARGIN))
    windows: list[AlignedWindow] = []
    totals = {"units": 0, "one_to_one": 0, **{f"text_{s}": 0 for s in SIDES}, **{f"used_{s}": 0 for s in SIDES}}
    truncated = dict.fromkeys(SIDES, 0)
    doc_pos: dict[int, int] = {}
    for start in range(0, len(docs), _PLAN_DOCS):
        cuts = cut_char_windows(docs[start : start + _PLAN_DOCS], budgets, start)
        if not cuts:
            continue
        texts = [docs[d][lo:hi] for d, lo, hi in cuts]
        encoded: dict[str, EncodedWindows] = {}
        for name in SIDES:
            model = models[name]
            encoded[name] = tokenize_for_alignment(model.tokenizer, texts, settings.max_len, model.is_causal)
            truncated[name] += sum(encoded[name].truncated)
        al = compute_alignment(texts, encoded["a"].spans(), encoded["b"].spans())
        first_unit = np.searchsorted(al.unit_window, np.arange(len(texts) + 1))
        token_start = {n: np.cumsum([0] + [len(ids) for ids in encoded[n].input_ids]) for n in SIDES}
        token_unit = {"a": al.token_unit_a, "b": al.token_unit_b}
        has_text = {"a": al.text_a, "b": al.text_b}
        for w, (doc, lo, _) in enumerate(cuts):
            u0, u1 = int(first_unit[w]), int(first_unit[w + 1])
            room = settings.max_tokens - totals["units"]
            u1 = min(u1, u0 + room)
            limit = int(al.unit_end[u1 - 1]) if u1 > u0 else -1
            side_windows, side_units = {}, {}
            for name in SIDES:
                t0, t1 = token_start[name][w], token_start[name][w + 1]
                local = token_unit[name][t0:t1] - u0
                local[(token_unit[name][t0:t1] < 0) | (local >= u1 - u0)] = -1
                keep = local >= 0
                offsets = encoded[name].offsets[w] + lo
                ids = encoded[name].input_ids[w]
                side_windows[name] = Window(doc, ids, offsets, keep, np.arange(len(ids), dtype=np.int64))
                side_units[name] = local[keep]
                # a window cut short by the budget counts only the text tokens before the cut
                text = has_text[name][t0:t1]
                if u0 + room < int(first_unit[w + 1]):
                    text = text & (encoded[name].offsets[w][:, 1] <= limit)
                totals[f"text_{name}"] += int(text.sum())
                totals[f"used_{name}"] += int(keep.sum())
            n_units = u1 - u0
            if n_units:
                count_a = np.bincount(side_units["a"], minlength=n_units)
                count_b = np.bincount(side_units["b"], minlength=n_units)
                totals["one_to_one"] += int(((count_a == 1) & (count_b == 1)).sum())
                first_pos = doc_pos.get(doc, 0)
                doc_pos[doc] = first_pos + n_units
                windows.append(
                    AlignedWindow(
                        doc=doc,
                        char_lo=lo,
                        sides=side_windows,
                        token_unit=side_units,
                        unit_start=al.unit_start[u0:u1] + lo,
                        unit_end=al.unit_end[u0:u1] + lo,
                        unit_pos=np.arange(first_pos, first_pos + n_units, dtype=np.int64),
                    )
                )
                totals["units"] += n_units
            if totals["units"] >= settings.max_tokens:
                return windows, _alignment_stats(totals, truncated, len(windows), settings)
    return windows, _alignment_stats(totals, truncated, len(windows), settings)


def _alignment_stats(
    totals: dict[str, int], truncated: dict[str, int], n_windows: int, settings: HarvestSettings
) -> dict[str, Any]:
    units = max(totals["units"], 1)
    return {
        "unit_kind": "span",
        "pooling": settings.pooling,
        "n_units": totals["units"],
        "n_windows": n_windows,
        **{f"tokens_{s}": totals[f"text_{s}"] for s in SIDES},
        **{f"tokens_used_{s}": totals[f"used_{s}"] for s in SIDES},
        **{f"share_tokens_used_{s}": totals[f"used_{s}"] / max(totals[f"text_{s}"], 1) for s in SIDES},
        "share_one_to_one": totals["one_to_one"] / units,
        **{f"truncated_windows_{s}": truncated[s] for s in SIDES},
    }


def aligned_units_frame(windows: Sequence[AlignedWindow], docs: Sequence[str], first_unit: int = 0) -> pl.DataFrame:
    """The units table of aligned windows: the shared character span of each unit.

    Args:
        windows: aligned windows.
        docs: the documents.
        first_unit: unit id of the first row.

    Returns:
        unit, doc, pos (index among the document's units), text, char_start, char_end.
    """
    empty = np.zeros(0, np.int64)
    doc = np.concatenate([np.full(w.n_units, w.doc, dtype=np.int64) for w in windows] or [empty])
    start = np.concatenate([w.unit_start for w in windows] or [empty])
    end = np.concatenate([w.unit_end for w in windows] or [empty])
    return pl.DataFrame(
        {
            "unit": np.arange(first_unit, first_unit + len(doc), dtype=np.int64),
            "doc": doc,
            "pos": np.concatenate([w.unit_pos for w in windows] or [empty]),
            "text": [docs[d][a:b] for d, a, b in zip(doc.tolist(), start.tolist(), end.tolist(), strict=True)],
            "char_start": start,
            "char_end": end,
        }
    )


def units_frame(windows: Sequence[Window], docs: Sequence[str], first_unit: int = 0) -> pl.DataFrame:
    """The units table of some windows: unit, doc, pos, text, char_start, char_end."""
    doc_col: list[np.ndarray] = []
    pos_col: list[np.ndarray] = []
    start_col: list[np.ndarray] = []
    end_col: list[np.ndarray] = []
    text_col: list[str] = []
    for w in windows:
        spans = w.offsets[w.keep]
        doc_col.append(np.full(len(spans), w.doc, dtype=np.int64))
        pos_col.append(w.pos[w.keep])
        start_col.append(spans[:, 0])
        end_col.append(spans[:, 1])
        text = docs[w.doc]
        text_col.extend(text[a:b] for a, b in spans)
    n = len(text_col)
    return pl.DataFrame(
        {
            "unit": np.arange(first_unit, first_unit + n, dtype=np.int64),
            "doc": np.concatenate(doc_col) if doc_col else np.zeros(0, np.int64),
            "pos": np.concatenate(pos_col) if pos_col else np.zeros(0, np.int64),
            "text": text_col,
            "char_start": np.concatenate(start_col) if start_col else np.zeros(0, np.int64),
            "char_end": np.concatenate(end_col) if end_col else np.zeros(0, np.int64),
        }
    )
