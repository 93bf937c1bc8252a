"""The sharded, resumable harvest: both models over the same windows, SAE codes per shard, merged.

The harvest is three pure steps an engine can schedule (docs/architecture.md, "Built to scale
out"): :func:`plan_harvest` cuts the corpus into windows and shards and keys them by the identity
of everything that makes a shard; :func:`harvest_shard` runs one shard on both sides, writes its
files into a temp folder renamed into place, and returns its moments; :func:`merge_shards` joins
the finished shards in order. :func:`harvest` runs them with a shard runner: a plain loop by
default (the local engine), or any scheduler with the :data:`ShardRunner` signature (the Ray
engine's actor pool).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, cast

import numpy as np
import polars as pl
import torch

from core.bundle.codes import SparseCodes, concat_codes
from core.bundle.io import write_json_atomic, write_parquet_atomic, write_tensors_atomic
from core.errors import BundleError, HarvestError, UserError
from core.harvest.align import compute_pooled_codes, tokenizer_name
from core.harvest.encode import HarvestSide, encode_windows
from core.harvest.identity import side_identity
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
from core.paths import hash_json, hash_texts
from core.progress import ProgressFn, no_progress
from core.sides import SIDES

log = logging.getLogger(__name__)

PLAN_FILE = "plan.json"
SUMMARY_FILE = "summary.json"
# every file a finished shard holds; summary.json is written last
SHARD_FILES = tuple(f"{kind}_{s}.safetensors" for kind in ("codes", "moments") for s in SIDES) + (
    "units.parquet",
    SUMMARY_FILE,
)
# a dictionary's float64 sums that merge across shards by addition (a crosscoder's), if any
EXTRA_FILE = "extra.safetensors"
# harvest settings that change how a shard is computed, not what it holds
_UNKEYED_SETTINGS = ("device", "batch_tokens", "sanity_tokens")


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
        rebuilt_because: why finished shards of an earlier run were discarded (their inputs
            changed), or ``None``.
        extra: a :class:`TokenEncoder`'s extra sums, added over shards (empty for two SAEs).
    """

    units: pl.DataFrame
    codes: dict[str, SparseCodes]
    moments: dict[str, dict[str, np.ndarray]]
    n_shards: int
    resumed_shards: int
    alignment: dict[str, Any] | None = None
    rebuilt_because: str | None = None
    extra: dict[str, np.ndarray] = field(default_factory=dict)


# how one shard's token windows become both sides' codes, plus extra float64 sums that merge
# across shards by addition (a crosscoder's reconstruction and Latent Scaling sums, for example)
EncodeShard = Callable[
    [Sequence[Window], HarvestSettings, torch.device], tuple[dict[str, SparseCodes], dict[str, np.ndarray]]
]


@dataclass(frozen=True)
class TokenEncoder:
    """The seam a dictionary other than two SAEs plugs into (``core.crosscoder.harvest`` uses it).

    Attributes:
        tokenizer: the tokenizer both sides share (windows are cut with it).
        identity: what the codes depend on (checkpoint, hooks, scaling); the sides' part of the key.
        encode: windows of one shard -> (side -> codes, extra sums).
    """

    tokenizer: Any
    identity: dict[str, Any]
    encode: EncodeShard


@dataclass(frozen=True, eq=False)
class ShardTask:
    """Everything one shard needs besides the loaded models: its windows, their text, its key.

    Attributes:
        number: the shard's index (its folder is ``shard_{number:05d}``).
        first_unit: unit id of the shard's first row.
        windows: the shard's windows (``Window``, or ``AlignedWindow`` for two tokenizers).
        docs: the documents the windows index (a list, or a doc -> text mapping holding at
            least the shard's documents, which is what travels to a remote worker).
        aligned: whether the windows are aligned windows of two tokenizers.
        key: the harvest key (see :func:`plan_harvest`), recorded in the shard's summary.
        work_dir: the harvest's work folder.
    """

    number: int
    first_unit: int
    windows: Sequence[Window] | Sequence[AlignedWindow]
    docs: Sequence[str] | Mapping[int, str]
    aligned: bool
    key: str
    work_dir: str

    @property
    def n_units(self) -> int:
        """Units (rows) of the shard."""
        return sum(w.n_units for w in self.windows)

    @property
    def shard_dir(self) -> Path:
        """The shard's folder, once finished."""
        return Path(self.work_dir) / shard_name(self.number)

    def portable(self) -> ShardTask:
        """The same task carrying only its own documents (what a remote worker is sent)."""
        used = sorted({w.doc for w in self.windows})
        return replace(self, docs={d: self.docs[d] for d in used})


@dataclass(frozen=True, eq=False)
class ShardSummary:
    """What a finished shard returns: its place and its per-feature moments (a few MB at most).

    Attributes:
        number: the shard's index.
        first_unit: unit id of its first row.
        n_rows: its units.
        moments: side -> ``feature_moments`` of its codes.
        extra: a :class:`TokenEncoder`'s extra sums of the shard (empty for two SAEs).
    """

    number: int
    first_unit: int
    n_rows: int
    moments: dict[str, dict[str, np.ndarray]]
    extra: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass(frozen=True, eq=False)
class HarvestPlan:
    """The windows, their shards and the key every shard of this harvest carries.

    Attributes:
        windows: all windows, in order.
        shards: ``(first window, end window)`` per shard.
        aligned: two tokenizers (aligned windows) or one (token windows).
        alignment: alignment statistics (aligned only).
        identity: what the key hashes (side digests, corpus hash, settings, sizes).
        key: the hash of ``identity``.
    """

    windows: Sequence[Window] | Sequence[AlignedWindow]
    shards: list[tuple[int, int]]
    aligned: bool
    alignment: dict[str, Any] | None
    identity: dict[str, Any]
    key: str

    @property
    def n_units(self) -> int:
        """Units of the whole harvest."""
        return int(self.identity["units"])

    def tasks(self, docs: Sequence[str], work_dir: str | Path) -> list[ShardTask]:
        """One task per shard, in order."""
        out, first = [], 0
        for number, (lo, hi) in enumerate(self.shards):
            task = ShardTask(number, first, self.windows[lo:hi], docs, self.aligned, self.key, str(work_dir))
            out.append(task)
            first += task.n_units
        return out


# schedules shard tasks and yields their summaries in any order; progress counts units
ShardRunner = Callable[[Sequence[ShardTask], ProgressFn], Iterable[ShardSummary]]


def shard_name(number: int) -> str:
    """The folder name of shard ``number``."""
    return f"shard_{number:05d}"


def plan_harvest(
    sides: dict[str, HarvestSide], docs: Sequence[str], settings: HarvestSettings, encoder: TokenEncoder | None = None
) -> HarvestPlan:
    """Cut the corpus into windows and shards and key them by everything that makes a shard.

    Args:
        sides: ``{"a": HarvestSide, "b": HarvestSide}`` (ignored when ``encoder`` is given).
        docs: the corpus documents.
        settings: harvest settings.
        encoder: a dictionary other than two SAEs (its tokenizer cuts the windows, its
            identity keys the shards).

    Returns:
        The plan; its key changes when an SAE's weights, a model, the corpus text, the hook or
        a harvest setting that changes the codes does.
    """
    aligned = encoder is None and not same_tokenizer(sides["a"].model.tokenizer, sides["b"].model.tokenizer)
    stats: dict[str, Any] | None = None
    # AlignedWindow for two tokenizers, Window for one; both carry n_units
    windows: Sequence[Any]
    if aligned:
        aligned_windows, stats = plan_aligned_windows({s: sides[s].model for s in SIDES}, docs, settings)
        windows = cast(Sequence[Any], aligned_windows)
    else:
        tokenizer = encoder.tokenizer if encoder is not None else sides["a"].model.tokenizer
        windows = cast(Sequence[Any], tokenize_windows(tokenizer, docs, settings))
    if not windows:
        raise UserError("The corpus produced no tokens to harvest; give a corpus with some text.")
    identity: dict[str, Any] = {
        "sides": (
            encoder.identity
            if encoder is not None
            else {s: side_identity(sides[s].model, sides[s].sae, sides[s].hook.name) for s in SIDES}
        ),
        "corpus": hash_texts(list(docs)),
        "docs": len(docs),
        "windows": len(windows),
        "units": sum(w.n_units for w in windows),
        "settings": {k: v for k, v in settings.to_dict().items() if k not in _UNKEYED_SETTINGS},
    }
    if aligned:
        identity["aligned"] = {s: tokenizer_name(sides[s].model.tokenizer) for s in SIDES}
    shards = plan_shards(windows, settings.shard_units)
    return HarvestPlan(windows, shards, aligned, stats, identity, hash_json(identity))


def harvest_shard(
    sides: dict[str, HarvestSide],
    task: ShardTask,
    settings: HarvestSettings,
    device: torch.device,
    encoder: TokenEncoder | None = None,
) -> ShardSummary:
    """Run one shard on both sides and write its files; return its moments.

    The files go into a temp folder beside the shard's, renamed into place when whole, so a
    killed worker leaves no half shard; codes that are not finite are refused before anything
    is kept, so a fixed re-run is never blocked by a bad shard.

    Args:
        sides: the loaded sides.
        task: the shard.
        settings: harvest settings (batch size, pooling).
        device: where to run the models and SAEs.
        encoder: encode the shard with this instead of the two SAEs.

    Returns:
        The shard's summary.
    """
    extra: dict[str, np.ndarray] = {}
    if encoder is not None:
        codes, extra = encoder.encode(cast(Sequence[Window], task.windows), settings, device)
        extra = {k: np.asarray(v, np.float64) for k, v in extra.items()}
    elif task.aligned:
        codes = _encode_aligned(sides, task, settings, device)
    else:
        codes = _encode(sides, task, settings, device)
    n_rows = task.n_units
    for s in SIDES:
        if not np.all(np.isfinite(codes[s].values)):
            label = "the crosscoder" if encoder is not None else sides[s].sae.spec.label()
            raise HarvestError(
                f"SAE {s.upper()} ({label}) gave NaN or inf codes on units {task.first_unit}-"
                f"{task.first_unit + n_rows - 1}; check its weights (they may hold NaN) and dtype, then re-run."
            )
    moments = {s: feature_moments(codes[s]) for s in SIDES}
    final = task.shard_dir
    tmp = final.with_name(f".{final.name}.part-{uuid.uuid4().hex[:8]}")
    tmp.mkdir(parents=True)
    try:
        for s in SIDES:
            codes[s].save(tmp / f"codes_{s}.safetensors")
            write_tensors_atomic(moments[s], tmp / f"moments_{s}.safetensors", {"n_rows": str(n_rows)})
        if extra:
            write_tensors_atomic(extra, tmp / EXTRA_FILE, {})
        # units_frame only indexes docs by document id, so the mapping a remote task carries serves too
        docs = cast(Sequence[str], task.docs)
        if task.aligned:
            units = aligned_units_frame(cast(Sequence[AlignedWindow], task.windows), docs, task.first_unit)
        else:
            units = units_frame(cast(Sequence[Window], task.windows), docs, task.first_unit)
        write_parquet_atomic(units, tmp / "units.parquet")
        summary = {"n_rows": n_rows, "first_unit": task.first_unit, "key": task.key, "number": task.number}
        write_json_atomic(summary, tmp / SUMMARY_FILE)
        if final.exists() and not _finished(final, task.key):
            shutil.rmtree(final)
        try:
            os.rename(tmp, final)
        except OSError:
            # another attempt at this shard (a retried worker) finished first: same key, same content
            if not _finished(final, task.key):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return ShardSummary(task.number, task.first_unit, n_rows, moments, extra)


def _encode(
    sides: dict[str, HarvestSide], task: ShardTask, settings: HarvestSettings, device: torch.device
) -> dict[str, SparseCodes]:
    # sides that read the same model share one forward pass
    groups: dict[int, list[str]] = {}
    for s in SIDES:
        groups.setdefault(id(sides[s].model), []).append(s)
    codes: dict[str, SparseCodes] = {}
    windows = cast(Sequence[Window], task.windows)
    for names in groups.values():
        readers = [(sides[s].sae, sides[s].hook) for s in names]
        codes.update(zip(names, encode_windows(sides[names[0]].model, readers, windows, settings, device), strict=True))
    return codes


def _encode_aligned(
    sides: dict[str, HarvestSide], task: ShardTask, settings: HarvestSettings, device: torch.device
) -> dict[str, SparseCodes]:
    windows = cast(Sequence[AlignedWindow], task.windows)
    unit_start = np.cumsum([0] + [w.n_units for w in windows])
    n_rows = int(unit_start[-1])
    codes = {}
    for s in SIDES:
        side = sides[s]
        side_windows = [w.sides[s] for w in windows]
        token_unit = np.concatenate(
            [w.token_unit[s] + unit_start[i] for i, w in enumerate(windows)] or [np.zeros(0, np.int64)]
        )
        (tokens,) = encode_windows(side.model, [(side.sae, side.hook)], side_windows, settings, device)
        r = np.repeat(np.arange(tokens.n_rows, dtype=np.int64), np.diff(tokens.indptr))
        codes[s] = compute_pooled_codes(
            r, tokens.indices, tokens.values, token_unit, n_rows, side.sae.d_sae, settings.pooling
        )
    return codes


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
    """Combine per-shard moments (sums add, maxima take the maximum).

    Counts and maxima merge exactly in any order and grouping; the float64 sums do so up to
    rounding (a relative 1e-12 on real codes), so engines merge in shard order and agree to the bit.
    """
    merged = {k: np.sum([p[k] for p in parts], axis=0) for k in ("count", "sum", "sumsq")}
    merged["max"] = np.max([p["max"] for p in parts], axis=0)
    return merged


def run_shards_locally(
    sides: dict[str, HarvestSide], settings: HarvestSettings, device: torch.device, encoder: TokenEncoder | None = None
) -> ShardRunner:
    """The local engine's shard runner: one shard after the other, in this process.

    Args:
        sides: the loaded sides.
        settings: harvest settings.
        device: where to run.
        encoder: encode shards with this instead of the two SAEs.

    Returns:
        A :data:`ShardRunner`.
    """

    def run(tasks: Sequence[ShardTask], progress: ProgressFn) -> Iterable[ShardSummary]:
        for task in tasks:
            yield harvest_shard(sides, task, settings, device, encoder)

    return run


def finished_shards(work_dir: str | Path) -> int:
    """How many finished shards a work folder holds (any key)."""
    work_dir = Path(work_dir)
    if not work_dir.is_dir():
        return 0
    return sum(1 for p in work_dir.glob("shard_*") if (p / SUMMARY_FILE).is_file())


def harvest(
    sides: dict[str, HarvestSide],
    docs: Sequence[str],
    settings: HarvestSettings,
    work_dir: str | Path,
    device: torch.device,
    progress: ProgressFn = no_progress,
    rebuild_stale: bool = True,
    runner: ShardRunner | None = None,
    encoder: TokenEncoder | None = None,
) -> HarvestResult:
    """Harvest sparse codes of both sides on the same units, resumably.

    Args:
        sides: ``{"a": HarvestSide, "b": HarvestSide}``.
        docs: the corpus documents.
        settings: harvest settings.
        work_dir: folder for shards.
        device: where to run the models and SAEs (local runner).
        progress: called as ``progress("harvest", units_done, units_total)``.
        rebuild_stale: what to do with finished shards of other inputs in ``work_dir`` (a changed
            SAE, model, corpus or setting): rebuild them, with a logged notice, or (``False``)
            refuse in one sentence and keep them. Shards carrying this harvest's key are reused.
        runner: schedules the shards (default :func:`run_shards_locally`).
        encoder: encode each shard's token windows with this instead of the two SAEs (a
            crosscoder; ``sides`` is then ignored, and only the local runner can carry it).

    Returns:
        The merged result.
    """
    if encoder is not None and runner is not None:
        raise HarvestError("A crosscoder harvest runs on the local engine; leave out --engine ray.")
    plan = plan_harvest(sides, docs, settings, encoder)
    work_dir = Path(work_dir).resolve()
    reason = _prepare_work_dir(work_dir, plan, rebuild_stale)
    tasks = plan.tasks(docs, work_dir)
    todo = [t for t in tasks if not _finished(t.shard_dir, plan.key)]
    resumed = len(tasks) - len(todo)
    done_units = plan.n_units - sum(t.n_units for t in todo)
    total = plan.n_units
    progress("harvest", done_units, total)
    summaries: dict[int, ShardSummary] = {}
    results = (runner or run_shards_locally(sides, settings, device, encoder))(todo, progress)
    try:
        for summary in results:
            summaries[summary.number] = summary
            done_units += summary.n_rows
            progress("harvest", done_units, total)
    finally:
        # a runner holding workers frees them now, also when the caller stops the harvest
        close = getattr(results, "close", None)
        if close is not None:
            close()
    missing = [t.number for t in todo if t.number not in summaries]
    if missing:
        raise HarvestError(f"The harvest engine returned no result for shard(s) {missing}; re-run with --resume.")
    result = merge_shards(work_dir, len(tasks), summaries)
    return replace(result, resumed_shards=resumed, alignment=plan.alignment, rebuilt_because=reason)


def _prepare_work_dir(work_dir: Path, plan: HarvestPlan, rebuild_stale: bool) -> str | None:
    """Make ``work_dir`` hold only shards of this plan; say why older ones were discarded."""
    plan_file = work_dir / PLAN_FILE
    reason = None
    if work_dir.exists():
        old = _read_plan(plan_file)
        n_old = finished_shards(work_dir)
        if old is None or old.get("key") != plan.key:
            if n_old:
                reason = describe_change(old.get("identity") if old else None, plan.identity)
                if not rebuild_stale:
                    raise HarvestError(
                        f"The interrupted build in this output folder holds {n_old} finished shard(s) of a different "
                        f"harvest ({reason}); pass --resume to rebuild them for these inputs, or choose another --out."
                    )
                log.warning(
                    "the interrupted build holds %d finished shard(s) of a different harvest (%s); they are rebuilt, "
                    "not reused.",
                    n_old,
                    reason,
                )
            _remove_harvest_folder(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in work_dir.glob(".shard_*.part-*"):
        shutil.rmtree(stale, ignore_errors=True)
    write_json_atomic({"key": plan.key, "identity": plan.identity, "n_shards": len(plan.shards)}, plan_file)
    return reason


def _read_plan(path: Path) -> dict[str, Any] | None:
    try:
        plan = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return plan if isinstance(plan, dict) else None


def describe_change(old: dict[str, Any] | None, new: dict[str, Any]) -> str:
    """Name what differs between two harvest identities, for the notice of a rebuild.

    Args:
        old: the identity an earlier run recorded (``None`` if unreadable).
        new: this run's identity.

    Returns:
        A short clause such as ``"SAE A's weights changed"``.
    """
    if not isinstance(old, dict):
        return "their plan is missing or unreadable"
    changes = []
    two_saes = all(isinstance(new["sides"].get(s), dict) and "sae" in new["sides"][s] for s in SIDES)
    if not two_saes and old.get("sides") != new["sides"]:
        # a dictionary other than two SAEs (a crosscoder) keys its sides its own way
        changes.append("the dictionary, its models or its hooks changed")
    for s in SIDES if two_saes else ():
        before, after = (old.get("sides") or {}).get(s) or {}, new["sides"][s]
        side = s.upper()
        if before.get("sae") != after["sae"]:
            changes.append(f"SAE {side} is another SAE")
        elif before.get("sae_digest") != after["sae_digest"]:
            changes.append(f"SAE {side}'s weights changed")
        if before.get("model") != after["model"]:
            changes.append(f"model {side} is another model")
        elif before.get("model_digest") != after["model_digest"]:
            changes.append(f"model {side}'s weights or revision changed")
        if before.get("hook") != after["hook"]:
            changes.append(f"side {side}'s hook changed")
    if old.get("corpus") != new["corpus"] or old.get("docs") != new["docs"]:
        changes.append("the corpus text changed")
    settings_before, settings_after = old.get("settings") or {}, new["settings"]
    changed = sorted(k for k in settings_after if settings_before.get(k) != settings_after[k])
    if changed:
        changes.append(f"harvest settings changed ({', '.join(changed)})")
    return "; ".join(changes) or "their inputs differ"


def _finished(shard_dir: Path, key: str) -> bool:
    """A shard folder is finished when it holds every file and its summary carries ``key``."""
    if not all((shard_dir / f).is_file() for f in SHARD_FILES):
        return False
    try:
        summary = json.loads((shard_dir / SUMMARY_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(summary, dict) and summary.get("key") == key


def merge_shards(
    work_dir: str | Path, n_shards: int, summaries: Mapping[int, ShardSummary] | None = None
) -> HarvestResult:
    """Join finished shards in order: codes and units from their files, moments merged in shard order.

    Args:
        work_dir: the harvest's work folder.
        n_shards: how many shards the plan holds.
        summaries: moments already returned by the shards run now (others are read from disk).

    Returns:
        The merged result (``resumed_shards`` 0; :func:`harvest` fills it in).
    """
    from safetensors.numpy import load_file

    work_dir = Path(work_dir)
    summaries = summaries or {}
    codes: dict[str, list[SparseCodes]] = {s: [] for s in SIDES}
    moments: dict[str, list[dict[str, np.ndarray]]] = {s: [] for s in SIDES}
    units = []
    extra: dict[str, np.ndarray] = {}
    for number in range(n_shards):
        shard_dir = work_dir / shard_name(number)
        try:
            if number in summaries:
                part = summaries[number].extra
            elif (shard_dir / EXTRA_FILE).is_file():
                part = load_file(str(shard_dir / EXTRA_FILE))
            else:
                part = {}
            for key, value in part.items():
                extra[key] = extra[key] + value if key in extra else value
            for s in SIDES:
                codes[s].append(SparseCodes.load(shard_dir / f"codes_{s}.safetensors"))
                if number in summaries:
                    moments[s].append(summaries[number].moments[s])
                else:
                    moments[s].append(load_file(str(shard_dir / f"moments_{s}.safetensors")))
            units.append(pl.read_parquet(shard_dir / "units.parquet"))
        except (BundleError, OSError, ValueError, pl.exceptions.PolarsError) as exc:
            # a damaged shard must not block the re-run: drop it, the next --resume rebuilds it
            shutil.rmtree(shard_dir, ignore_errors=True)
            raise HarvestError(
                f"Shard {number} in {work_dir} could not be read ({exc.__class__.__name__}); it was removed, "
                "run the same command with --resume to rebuild it."
            ) from exc
    return HarvestResult(
        units=pl.concat(units),
        codes={s: concat_codes(codes[s]) for s in SIDES},
        moments={s: merge_moments(moments[s]) for s in SIDES},
        n_shards=n_shards,
        resumed_shards=0,
        extra=extra,
    )


def remove_work_dir(work_dir: str | Path) -> None:
    """Delete a finished harvest's shards (the bundle holds the merged result)."""
    if os.path.isdir(work_dir):
        _remove_harvest_folder(Path(work_dir))


def _is_harvest_entry(name: str) -> bool:
    return name == PLAN_FILE or re.fullmatch(r"shard_\d{5,}|\.shard_\d{5,}\.part-[0-9a-f]{8}", name) is not None


def _remove_harvest_folder(work_dir: Path) -> None:
    """Delete a harvest work folder, only when it holds nothing but what a harvest writes there.

    The work folder sits inside a build's staging folder, which the deletion policy
    (core.bundle.safety) already vouches for; this check keeps ``harvest``, a public function
    taking any folder, from removing one that holds anything else.
    """
    foreign = sorted(e.name for e in os.scandir(work_dir) if not _is_harvest_entry(e.name))
    if foreign:
        raise HarvestError(
            f"{work_dir} holds {', '.join(foreign[:3])}, which no harvest wrote, so it was left alone; "
            "give the harvest a folder of its own."
        )
    shutil.rmtree(work_dir)
