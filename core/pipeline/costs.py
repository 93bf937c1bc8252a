"""Costs said up front: memory a setting needs (refused when it cannot fit), time estimated or measured.

Memory is computed from the sizes a setting multiplies (null samples, partners per feature,
the dense correlation block), so a setting that cannot fit is refused before anything starts,
naming the largest value that would. Time depends on the machine. Where a step's cost is a
setting times a per-item cost (the similarity stage's null samples), the step measures a few
items first and says the estimate before the bulk runs (``core.spaces.nulls``, through
``core.progress.announce_estimate``). Every other long step is watched as it runs: once it has
run a few seconds, a projection longer than :data:`NOTICE_AFTER_S` is said once ("about 3 h
left at the current rate"), with the setting that sizes it. Notices go to the ``core``
logger; the CLI prints them on stderr, the app shows them.
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping
from typing import Any

from core.errors import SpecError
from core.progress import LOG, NOTICE_AFTER_S, ProgressFn, format_seconds

# measure at least this long before projecting (the first batches include warm-up)
MEASURE_S = 3.0
# a setting may use at most this share of the memory available when it starts
MEMORY_SHARE = 0.8
# which setting sizes each progress label's work, for the notice
SIZED_BY = {
    "null": "--n-null",
    "random-subset null": "--n-null",
    "bootstrap": "n_boot",
    "correlate": "--max-tokens and the SAE widths",
    "harvest": "--max-tokens",
    "assign": "--method",
}


def available_memory() -> int | None:
    """Bytes of memory available to a new allocation now (Linux ``MemAvailable``), or ``None`` if unknown."""
    try:
        with open("/proc/meminfo", encoding="ascii") as handle:
            for line in handle:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    """``1.2 GB``-style size."""
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.1f} {unit}"
    return f"{int(n)} B"


def similarity_memory(n_pairs: int, n_null: int, n_metrics: int = 4, chunk: int = 8) -> int:
    """Bytes the similarity stage's permutation nulls hold.

    The samples (float64 per metric, held twice: drawn and summarised) and one chunk of
    permutations (int64 per pair); what does not grow with ``n_null`` is left out.
    """
    return 16 * n_null * n_metrics + 8 * chunk * n_pairs


def matching_memory(n_a: int, n_b: int, top_k: int, memory_mb: float) -> int:
    """Bytes the matching stage holds: top-k partners both ways (index and value, and the matches rows) plus the block."""
    k_a, k_b = min(top_k, n_b), min(top_k, n_a)
    partners = (n_a * k_a + n_b * k_b) * (4 + 4 + 64)
    return int(partners + memory_mb * 2**20)


def _refuse(what: str, need: int, free: int, largest: str) -> None:
    raise SpecError(
        f"{what} needs about {format_bytes(need)} of memory but {format_bytes(free)} is available; the largest "
        f"that fits is {largest}."
    )


def check_similarity_fits(n_pairs: int, settings: Any, free: int | None = None) -> None:
    """Refuse a null sample count whose samples cannot fit in memory, naming the largest that would.

    Args:
        n_pairs: matched pairs the metrics run on (at most the smaller SAE's width).
        settings: ``SimilaritySettings``.
        free: available bytes (``None``: measured now).
    """
    free = available_memory() if free is None else free
    if free is None:
        return
    budget = int(free * MEMORY_SHARE)
    n_metrics = max(len(settings.metrics), 1)
    need = similarity_memory(n_pairs, settings.n_null, n_metrics, settings.chunk)
    if need > budget:
        fixed = similarity_memory(n_pairs, 0, n_metrics, settings.chunk)
        largest = max((budget - fixed) // (16 * n_metrics), 0)
        _refuse(f"--n-null {settings.n_null:,}", need, free, f"--n-null {largest:,}")


def check_matching_fits(n_a: int, n_b: int, settings: Any, free: int | None = None) -> None:
    """Refuse a top-k or memory bound that cannot fit, naming the largest that would.

    Args:
        n_a: features of side A.
        n_b: features of side B.
        settings: ``MatchSettings``.
        free: available bytes (``None``: measured now).
    """
    free = available_memory() if free is None else free
    if free is None:
        return
    budget = int(free * MEMORY_SHARE)
    if settings.memory_mb * 2**20 > budget:
        _refuse(
            f"--memory-mb {settings.memory_mb:,.0f}",
            int(settings.memory_mb * 2**20),
            free,
            f"--memory-mb {budget // 2**20 // 2:,}",
        )
    need = matching_memory(n_a, n_b, settings.top_k, settings.memory_mb)
    if need > budget:
        per_k = (n_a + n_b) * 72
        largest = max(int((budget - settings.memory_mb * 2**20) // max(per_k, 1)), 0)
        _refuse(f"--top-k {settings.top_k:,}", need, free, f"--top-k {largest:,}")


def check_stage_costs(stages: Mapping[str, Any], n_a: int, n_b: int, free: int | None = None) -> None:
    """Check the memory of every stage about to run on SAEs of widths ``n_a`` and ``n_b``.

    Args:
        stages: stage name -> its settings (``None``: the defaults).
        n_a: features of side A.
        n_b: features of side B.
        free: available bytes (``None``: measured now).
    """
    from core.matching.settings import MatchSettings
    from core.spaces.settings import SimilaritySettings

    if "matching" in stages:
        check_matching_fits(n_a, n_b, stages["matching"] or MatchSettings(), free)
    if "similarity" in stages:
        check_similarity_fits(min(n_a, n_b), stages["similarity"] or SimilaritySettings(), free)


class CostWatcher:
    """A progress callback that passes every report on and announces a long step once, from its measured rate.

    Args:
        progress: the callback to pass reports to.
        notice_after_s: announce steps projected to take longer than this.
        clock: the time source (tests pass a fake one).
    """

    def __init__(
        self, progress: ProgressFn, notice_after_s: float = NOTICE_AFTER_S, clock: Any = time.monotonic
    ) -> None:
        self.progress = progress
        self.notice_after_s = notice_after_s
        self.clock = clock
        self._started: dict[str, tuple[float, int]] = {}
        self._said: set[str] = set()
        self.notices: list[str] = []

    def __call__(self, stage: str, done: int, total: int) -> None:
        self.progress(stage, done, total)
        if total <= 0 or stage in self._said:
            return
        now = self.clock()
        start = self._started.setdefault(stage, (now, done))
        elapsed, progressed = now - start[0], done - start[1]
        if elapsed < MEASURE_S or progressed <= 0 or done >= total:
            return
        left = (total - done) * elapsed / progressed
        if left > self.notice_after_s:
            self._said.add(stage)
            sized = SIZED_BY.get(stage)
            hint = f"; {sized} sizes it" if sized else ""
            message = (
                f"{stage}: about {format_seconds(left)} left at the current rate ({done:,} of {total:,} done){hint}; "
                "Ctrl-C stops it."
            )
            self.notices.append(message)
            LOG.warning(message)
