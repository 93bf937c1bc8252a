"""Run both models over the same text and keep sparse SAE codes on shared units.

The corpus is tokenized once into windows (documents longer than ``max_len`` become
consecutive windows, each with the model's own special tokens). Windows are grouped
into shards; each shard runs its windows in batches sorted by length, captures the hook
of each side (stopping the forward pass at the deepest block needed), encodes with the
SAE, and writes its codes, units and feature moments atomically, ``summary.json`` last.
A killed harvest therefore resumes at the first shard without a summary, and the merged
result is identical to an uninterrupted run. When both sides tokenize alike, units are
the tokens themselves. When the tokenizers differ, documents are cut into shared
character windows, each model tokenizes each window its own way, and units are the
spans between common character cuts (``core.align``); each side's token codes are
pooled per unit (``settings.pooling``).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.codes import SparseCodes, concat_codes
from core.bundle.reader import write_json_atomic, write_parquet_atomic, write_tensors_atomic
from core.errors import SpecError, UserError
from core.harvest.align import (
    EncodedWindows,
    compute_alignment,
    compute_pooled_codes,
    tokenize_for_alignment,
    tokenizer_name,
)
from core.harvest.hooks import HookPoint, capture, hook_for_block_output, run_until_captured
from core.harvest.loading import LoadedModel, LoadedSAE, check_sae_fits
from core.harvest.specs import HarvestSettings
from core.paths import hash_json
from core.progress import ProgressFn, no_progress

SIDES = ("a", "b")
# rows encoded at once, so the dense [rows, d_sae] SAE output stays near 64 MB
_ENCODE_ELEMENTS = 16_000_000


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


@dataclass
class HarvestSide:
    """A model, an SAE and the hook where the SAE reads the model."""

    model: LoadedModel
    sae: LoadedSAE
    hook: HookPoint

    def __post_init__(self) -> None:
        check_sae_fits(self.sae, self.model, self.hook)


@dataclass(frozen=True)
class HarvestResult:
    """Codes of both sides on the same units, with the units table and feature moments.

    Attributes:
        units: one row per unit (unit, doc, pos, text, char_start, char_end).
        codes: side -> CSR codes [n_units, d_sae].
        moments: side -> dict of float64 [d_sae] arrays (count, sum, sumsq) and max.
        n_shards: how many shards the harvest used.
        resumed_shards: shards found finished on disk and reused.
        alignment: ``None`` for same-tokenizer pairs (units are tokens), else the
            alignment statistics (units, share of each side's tokens used, share of 1:1
            units, pooling).
    """

    units: pl.DataFrame
    codes: dict[str, SparseCodes]
    moments: dict[str, dict[str, np.ndarray]]
    n_shards: int
    resumed_shards: int
    alignment: dict[str, Any] | None = None


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


def forward_capture(
    model: LoadedModel, after_blocks: list[int], ids: torch.Tensor, mask: torch.Tensor, device: torch.device
) -> dict[int, torch.Tensor]:
    """Run the model up to the deepest requested block and return the captured outputs.

    Returns:
        block index -> [B, L, d_model] float32 activations on ``device``.
    """
    with torch.inference_mode(), capture(model.blocks, after_blocks) as store:
        run_until_captured(model.base, input_ids=ids.to(device), attention_mask=mask.to(device))
    return {k: v.float() for k, v in store.items()}


def kept_rows(acts: torch.Tensor, windows: Sequence[Window], chosen: np.ndarray) -> torch.Tensor:
    """Rows of ``acts`` [B, L, d] at the kept tokens, window by window in ``chosen`` order."""
    mask = torch.zeros(acts.shape[:2], dtype=torch.bool)
    for row, w in enumerate(chosen):
        mask[row, : len(windows[w].keep)] = torch.from_numpy(windows[w].keep)
    return acts[mask.to(acts.device)]


def unit_rows(windows: Sequence[Window], chosen: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """Row ids of the kept tokens of ``chosen`` windows, in the order :func:`_kept` returns them."""
    return np.concatenate([row_start[w] + np.arange(windows[w].n_units) for w in chosen])


def encode_windows(
    model: LoadedModel,
    readers: Sequence[tuple[LoadedSAE, HookPoint]],
    windows: Sequence[Window],
    settings: HarvestSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> list[SparseCodes]:
    """Codes of several SAEs reading one model, from one forward pass per batch.

    Args:
        model: the model.
        readers: (SAE, hook) pairs; hooks may repeat or differ.
        windows: the windows to run.
        settings: harvest settings (batch size).
        device: where to run.
        progress: called as ``progress("encode", units_done, units_total)``.

    Returns:
        One CSR [n_units, d_sae] per reader, rows in window order.
    """
    row_start = np.cumsum([0] + [w.n_units for w in windows])
    n_rows = int(row_start[-1])
    coo: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in readers]
    blocks = sorted({hook.after_block for _, hook in readers})
    done = 0
    for chosen, ids, mask in iter_batches(windows, settings.batch_tokens, pad_id(model)):
        rows = unit_rows(windows, chosen, row_start)
        acts = forward_capture(model, blocks, ids, mask, device)
        for i, (sae, hook) in enumerate(readers):
            r, c, v = encode_sparse(sae, kept_rows(acts[hook.after_block], windows, chosen))
            coo[i].append((rows[r], c, v))
        done += len(rows)
        progress("encode", done, n_rows)
    out = []
    for (sae, _), parts in zip(readers, coo, strict=True):
        r, c, v = (np.concatenate(p) for p in zip(*parts, strict=True))
        out.append(SparseCodes.from_coo(r, c, v, n_rows, sae.d_sae))
    return out


def collect_activations(
    model: LoadedModel,
    hook: HookPoint,
    windows: Sequence[Window],
    settings: HarvestSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """Dense activations at one hook for every kept token (for SAE training and checks).

    Returns:
        float32 [n_units, d_model], rows in window order.
    """
    row_start = np.cumsum([0] + [w.n_units for w in windows])
    out = np.zeros((int(row_start[-1]), model.d_model), dtype=np.float32)
    pad = pad_id(model)
    done = 0
    for chosen, ids, mask in iter_batches(windows, settings.batch_tokens, pad):
        acts = forward_capture(model, [hook.after_block], ids, mask, device)[hook.after_block]
        rows = unit_rows(windows, chosen, row_start)
        out[rows] = kept_rows(acts, windows, chosen).cpu().numpy()
        done += len(rows)
        progress(f"activations {model.name}", done, len(out))
    return out


def pad_id(model: LoadedModel) -> int:
    """The id batches are padded with (the pad token, else end-of-text, else 0; masked out anyway)."""
    tok = model.tokenizer
    return int(tok.pad_token_id if tok.pad_token_id is not None else (tok.eos_token_id or 0))


def encode_sparse(sae: LoadedSAE, acts: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode activations with the SAE in chunks and keep the non-zeros.

    Args:
        sae: the SAE.
        acts: float32 [n, d_in].

    Returns:
        ``(rows, features, values)`` COO triplets, rows relative to ``acts``.
    """
    step = max(1, _ENCODE_ELEMENTS // sae.d_sae)
    rows, cols, vals = [], [], []
    with torch.inference_mode():
        for lo in range(0, acts.shape[0], step):
            feats = sae.sae.encode(acts[lo : lo + step])
            r, c = torch.nonzero(feats, as_tuple=True)
            rows.append((r + lo).cpu().numpy())
            cols.append(c.cpu().numpy())
            vals.append(feats[r, c].float().cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)


def hook_sanity(
    side: HarvestSide, windows: Sequence[Window], settings: HarvestSettings, device: torch.device
) -> list[dict[str, Any]]:
    """Reconstruction of the SAE at its hook and at the neighbouring hooks.

    An SAE read at the wrong layer reconstructs badly there and better one layer off, so
    recording all three makes an off-by-one hook visible.

    Returns:
        One dict per hook (hook, hidden_states_index, explained_variance, mse, configured),
        shallowest first.
    """
    sample, count = [], 0
    for window in windows:
        sample.append(window)
        count += window.n_units
        if count >= settings.sanity_tokens:
            break
    here = side.hook.after_block
    blocks = [b for b in (here - 1, here, here + 1) if -1 <= b < side.model.n_layers]
    chunks: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for chosen, ids, mask in iter_batches(sample, settings.batch_tokens, pad_id(side.model)):
        acts = forward_capture(side.model, blocks, ids, mask, device)
        for b in blocks:
            chunks[b].append(kept_rows(acts[b], sample, chosen))
    report = []
    for b in blocks:
        x = torch.cat(chunks[b])
        with torch.inference_mode():
            x_hat = side.sae.sae(x)
        point = hook_for_block_output(b)
        report.append(
            {
                "hook": point.name,
                "hidden_states_index": point.hidden_states_index,
                "explained_variance": explained_variance(x, x_hat),
                "mse": float(((x - x_hat) ** 2).mean()),
                "configured": b == here,
                "n_tokens": int(x.shape[0]),
            }
        )
    return report


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over all tokens and dimensions."""
    residual = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(dim=0, keepdim=True)) ** 2).sum()
    return float(1.0 - residual / total.clamp_min(1e-12))


def _side_identity(side: HarvestSide) -> dict[str, Any]:
    return {"model": side.model.spec.label(), "sae": side.sae.spec.label(), "hook": side.hook.name}


def harvest(
    sides: dict[str, HarvestSide],
    docs: Sequence[str],
    settings: HarvestSettings,
    work_dir: str | Path,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> HarvestResult:
    """Harvest sparse codes of both sides on the same units, resumably.

    Args:
        sides: ``{"a": HarvestSide, "b": HarvestSide}``; both must share a tokenizer.
        docs: the corpus documents.
        settings: harvest settings.
        work_dir: folder for shards; an earlier run's finished shards with the same
            inputs are reused.
        device: where to run the models and SAEs.
        progress: called as ``progress("harvest", units_done, units_total)``.

    Returns:
        The merged result.
    """
    aligned = not same_tokenizer(sides["a"].model.tokenizer, sides["b"].model.tokenizer)
    stats: dict[str, Any] | None = None
    windows: Sequence[Window] | Sequence[AlignedWindow]
    if aligned:
        windows, stats = plan_aligned_windows({s: sides[s].model for s in SIDES}, docs, settings)
    else:
        windows = tokenize_windows(sides["a"].model.tokenizer, docs, settings)
    if not windows:
        raise UserError("The corpus produced no tokens to harvest; give a corpus with some text.")
    shards = plan_shards(windows, settings.shard_units)
    work_dir = Path(work_dir)
    identity = {
        "sides": {s: _side_identity(sides[s]) for s in SIDES},
        "docs": len(docs),
        "first_doc": docs[0][:200],
        "windows": len(windows),
        "units": sum(w.n_units for w in windows),
        "settings": {k: v for k, v in settings.to_dict().items() if k not in ("device", "batch_tokens")},
    }
    if aligned:
        identity["aligned"] = {s: tokenizer_name(sides[s].model.tokenizer) for s in SIDES}
    key = hash_json(identity)
    plan_file = work_dir / "plan.json"
    if work_dir.exists() and (not plan_file.is_file() or json.loads(plan_file.read_text()).get("key") != key):
        shutil.rmtree(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomic({"key": key, "identity": identity, "n_shards": len(shards)}, plan_file)

    total = identity["units"]
    done_units, resumed = 0, 0
    for number, (lo, hi) in enumerate(shards):
        shard_dir = work_dir / f"shard_{number:05d}"
        if not (shard_dir / "summary.json").is_file():
            if aligned:
                _run_aligned_shard(sides, windows[lo:hi], docs, settings, shard_dir, device, done_units)
            else:
                _run_shard(sides, windows[lo:hi], docs, settings, shard_dir, device, done_units)
        else:
            resumed += 1
        done_units += sum(w.n_units for w in windows[lo:hi])
        progress("harvest", done_units, total)
    result = _merge(work_dir, len(shards), resumed)
    if stats is not None:
        result = HarvestResult(**{**result.__dict__, "alignment": stats})
    return result


def _run_shard(
    sides: dict[str, HarvestSide],
    windows: Sequence[Window],
    docs: Sequence[str],
    settings: HarvestSettings,
    shard_dir: Path,
    device: torch.device,
    first_unit: int,
) -> None:
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir(parents=True)
    n_rows = sum(w.n_units for w in windows)
    # sides that read the same model share one forward pass
    groups: dict[int, list[str]] = {}
    for s in SIDES:
        groups.setdefault(id(sides[s].model), []).append(s)
    codes: dict[str, SparseCodes] = {}
    for names in groups.values():
        readers = [(sides[s].sae, sides[s].hook) for s in names]
        codes.update(zip(names, encode_windows(sides[names[0]].model, readers, windows, settings, device), strict=True))
    for s in SIDES:
        codes[s].save(shard_dir / f"codes_{s}.safetensors")
        write_tensors_atomic(feature_moments(codes[s]), shard_dir / f"moments_{s}.safetensors", {"n_rows": str(n_rows)})
    write_parquet_atomic(units_frame(windows, docs, first_unit), shard_dir / "units.parquet")
    write_json_atomic({"n_rows": n_rows, "first_unit": first_unit}, shard_dir / "summary.json")


def feature_moments(codes: SparseCodes) -> dict[str, np.ndarray]:
    """Per-feature count of non-zeros, sum, sum of squares (float64) and max of the codes.

    These merge across shards by addition (max by maximum), so shards can be computed
    anywhere and combined exactly.
    """
    n = codes.n_features
    values = codes.values.astype(np.float64)
    return {
        "count": np.bincount(codes.indices, minlength=n).astype(np.float64),
        "sum": np.bincount(codes.indices, weights=values, minlength=n),
        "sumsq": np.bincount(codes.indices, weights=values**2, minlength=n),
        "max": _feature_max(codes),
    }


def _feature_max(codes: SparseCodes) -> np.ndarray:
    out = np.zeros(codes.n_features, dtype=np.float64)
    np.maximum.at(out, codes.indices, codes.values.astype(np.float64))
    return out


def merge_moments(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """Combine per-shard moments (sums add, maxima take the maximum)."""
    merged = {k: np.sum([p[k] for p in parts], axis=0) for k in ("count", "sum", "sumsq")}
    merged["max"] = np.max([p["max"] for p in parts], axis=0)
    return merged


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


def _run_aligned_shard(
    sides: dict[str, HarvestSide],
    windows: Sequence[AlignedWindow],
    docs: Sequence[str],
    settings: HarvestSettings,
    shard_dir: Path,
    device: torch.device,
    first_unit: int,
) -> None:
    shutil.rmtree(shard_dir, ignore_errors=True)
    shard_dir.mkdir(parents=True)
    unit_start = np.cumsum([0] + [w.n_units for w in windows])
    n_rows = int(unit_start[-1])
    moments = {}
    for s in SIDES:
        side = sides[s]
        side_windows = [w.sides[s] for w in windows]
        token_unit = np.concatenate(
            [w.token_unit[s] + unit_start[i] for i, w in enumerate(windows)] or [np.zeros(0, np.int64)]
        )
        (tokens,) = encode_windows(side.model, [(side.sae, side.hook)], side_windows, settings, device)
        r = np.repeat(np.arange(tokens.n_rows, dtype=np.int64), np.diff(tokens.indptr))
        c, v = tokens.indices, tokens.values
        codes = compute_pooled_codes(r, c, v, token_unit, n_rows, side.sae.d_sae, settings.pooling)
        codes.save(shard_dir / f"codes_{s}.safetensors")
        moments[s] = feature_moments(codes)
        write_tensors_atomic(moments[s], shard_dir / f"moments_{s}.safetensors", {"n_rows": str(n_rows)})
    write_parquet_atomic(aligned_units_frame(windows, docs, first_unit), shard_dir / "units.parquet")
    write_json_atomic({"n_rows": n_rows, "first_unit": first_unit}, shard_dir / "summary.json")


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
    doc_col, pos_col, start_col, end_col, text_col = [], [], [], [], []
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


def _merge(work_dir: Path, n_shards: int, resumed: int) -> HarvestResult:
    from safetensors.numpy import load_file

    codes: dict[str, list[SparseCodes]] = {s: [] for s in SIDES}
    moments: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SIDES}
    units = []
    for number in range(n_shards):
        shard_dir = work_dir / f"shard_{number:05d}"
        for s in SIDES:
            codes[s].append(SparseCodes.load(shard_dir / f"codes_{s}.safetensors"))
            moments[s].append(load_file(str(shard_dir / f"moments_{s}.safetensors")))
        units.append(pl.read_parquet(shard_dir / "units.parquet"))
    return HarvestResult(
        units=pl.concat(units),
        codes={s: concat_codes(codes[s]) for s in SIDES},
        moments={s: merge_moments(moments[s]) for s in SIDES},
        n_shards=n_shards,
        resumed_shards=resumed,
    )


def remove_work_dir(work_dir: str | Path) -> None:
    """Delete a finished harvest's shards (the bundle holds the merged result)."""
    if os.path.isdir(work_dir):
        shutil.rmtree(work_dir)
