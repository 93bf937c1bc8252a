"""The sharded, resumable harvest: both models over the same windows, SAE codes per shard, merged."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import torch

from core.bundle.codes import SparseCodes, concat_codes
from core.bundle.io import write_json_atomic, write_parquet_atomic, write_tensors_atomic
from core.errors import UserError
from core.harvest.align import compute_pooled_codes, tokenizer_name
from core.harvest.encode import HarvestSide, encode_windows
from core.harvest.specs import HarvestSettings
from core.harvest.windows import (
    AlignedWindow,
    Window,
    aligned_units_frame,
    plan_aligned_windows,
    plan_shards,
    same_tokenizer,
    tokenize_windows,
    units_frame,
)
from core.paths import hash_json
from core.progress import ProgressFn, no_progress
from core.sides import SIDES


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
    # AlignedWindow for two tokenizers, Window for one; both carry n_units
    windows: Sequence[Any]
    if aligned:
        aligned_windows, stats = plan_aligned_windows({s: sides[s].model for s in SIDES}, docs, settings)
        windows = cast(Sequence[Any], aligned_windows)
    else:
        windows = cast(Sequence[Any], tokenize_windows(sides["a"].model.tokenizer, docs, settings))
    if not windows:
        raise UserError("The corpus produced no tokens to harvest; give a corpus with some text.")
    shards = plan_shards(windows, settings.shard_units)
    total = sum(w.n_units for w in windows)
    work_dir = Path(work_dir)
    identity = {
        "sides": {s: _side_identity(sides[s]) for s in SIDES},
        "docs": len(docs),
        "first_doc": docs[0][:200],
        "windows": len(windows),
        "units": total,
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

    done_units, resumed = 0, 0
    progress("harvest", 0, total)
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
