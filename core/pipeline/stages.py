"""The stages that add parts to a harvested bundle, in the order a full build runs them.

Each stage reads what the bundle already holds and writes its own parts through
``core.bundle.add_parts`` (parts and manifest entry committed as one unit);
``python -m core <stage> BUNDLE`` reruns one with new settings. A stage holds the bundle's
write lock while it runs, refuses settings whose memory cannot fit before it starts, and
announces itself when its measured rate projects more than a few minutes. It never needs its
own parts, so rerunning it rebuilds them when they are missing or damaged.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

from core.bundle.lock import bundle_lock
from core.bundle.reader import Bundle, open_bundle
from core.errors import SpecError
from core.pipeline.costs import CostWatcher, check_stage_costs
from core.progress import ProgressFn, in_phase, no_progress

if TYPE_CHECKING:  # the blocks import torch; the config (torch-free) imports this module
    from core.matching.blocks import Correlator

# the stages a full build of two SAEs runs, in order
STAGES = ("matching", "similarity", "dashboards", "umap")
# a crosscoder bundle is paired by construction (identity), so its analyses take matching's place
CROSSCODER_STAGES = ("analyses", "similarity", "dashboards", "umap")
# every stage in run order; ``causal`` loads both models again and runs only when asked for
ALL_STAGES = ("matching", "analyses", "similarity", "dashboards", "umap", "causal")
# the parts whose presence says a stage has run (a bundle from before a stage wrote a part lacks it)
STAGE_PARTS: dict[str, tuple[str, ...]] = {
    "matching": ("assignment", "feature_tokens"),
    "analyses": ("analyses",),
    "similarity": ("similarity",),
    "dashboards": ("dashboards",),
    "umap": ("umap",),
    "causal": ("causal",),
}
# stages that read what an earlier stage wrote: rerunning that one makes theirs stale
STAGE_NEEDS: dict[str, tuple[str, ...]] = {
    "similarity": ("matching", "analyses"),
    "umap": ("matching", "analyses"),
}


def is_crosscoder_bundle(bundle: Bundle) -> bool:
    """Whether the bundle holds one crosscoder's latents (its manifest has a ``crosscoder`` record)."""
    return "crosscoder" in bundle.manifest


def default_stages(bundle: Bundle) -> tuple[str, ...]:
    """The stages a full build of this kind of bundle runs (``STAGES`` or ``CROSSCODER_STAGES``)."""
    return CROSSCODER_STAGES if is_crosscoder_bundle(bundle) else STAGES


def missing_stages(bundle: Bundle) -> list[str]:
    """The stages a bundle still needs, in run order: those whose parts it lacks, and those reading them."""
    missing: list[str] = []
    for name in default_stages(bundle):
        if not all(bundle.has(part) for part in STAGE_PARTS[name]) or set(STAGE_NEEDS.get(name, ())) & set(missing):
            missing.append(name)
    return missing


def check_stage_names(names: Sequence[str]) -> tuple[str, ...]:
    """The stage names in run order, refusing an unknown one.

    Args:
        names: stage names.

    Returns:
        The names, sorted in ``ALL_STAGES`` order.
    """
    unknown = [n for n in names if n not in ALL_STAGES]
    if unknown:
        raise SpecError(f"Unknown stage(s) {', '.join(map(str, unknown))}; choose from {', '.join(ALL_STAGES)}.")
    return tuple(sorted(dict.fromkeys(names), key=ALL_STAGES.index))


def check_stage_applies(name: str, bundle: Bundle) -> None:
    """Refuse matching on a crosscoder bundle (paired by construction) and analyses on an SAE bundle."""
    crosscoder = is_crosscoder_bundle(bundle)
    if name == "matching" and crosscoder:
        raise SpecError(
            "This bundle holds a crosscoder, whose latent j is the same on both sides (identity pairing); "
            "rerun its analyses stage instead of matching."
        )
    if name == "analyses" and not crosscoder:
        raise SpecError("The analyses stage classifies crosscoder latents; this bundle holds two SAEs (run matching).")


def _widths(bundle: Bundle) -> tuple[int, int] | None:
    a, b = (bundle.side(s).get("d_sae") for s in ("a", "b"))
    if isinstance(a, int) and isinstance(b, int) and a > 0 and b > 0:
        return a, b
    return None


def run_stage(
    name: str,
    bundle_path: str | Path,
    settings: Any = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    unembeddings: dict[str, Any] | None = None,
    correlator: Correlator | None = None,
) -> Bundle:
    """Run one stage on a bundle.

    Args:
        name: one of ``ALL_STAGES``.
        bundle_path: the bundle folder.
        settings: that stage's settings object (``None``: its defaults).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        unembeddings: side -> ``core.dashboards.Unembedding`` for causal LMs (dashboards only).
        correlator: an engine's scheduler of the correlation reduce (matching only; ``None``: in process).

    Returns:
        The reopened bundle.
    """
    check_stage_names([name])
    bundle = open_bundle(bundle_path)
    check_stage_applies(name, bundle)
    with bundle_lock(bundle.path):
        widths = _widths(bundle)
        if widths is not None:
            check_stage_costs({name: settings}, *widths)
        return _run_stage(name, bundle.path, settings, device, CostWatcher(progress), unembeddings, correlator)


def _run_stage(
    name: str,
    bundle_path: Path,
    settings: Any,
    device: str,
    progress: ProgressFn,
    unembeddings: dict[str, Any] | None,
    correlator: Correlator | None = None,
) -> Bundle:
    if name == "matching":
        from core.matching.stage import build_matching

        return build_matching(bundle_path, settings, device=device, progress=progress, correlator=correlator)
    if name == "analyses":
        from core.crosscoder.stage import build_analyses

        return build_analyses(bundle_path, settings, progress=progress)
    if name == "causal":
        from core.crosscoder.causal_stage import build_causal

        # many small forward passes of the layers after the hook: one thread avoids the hand-offs
        with _single_thread_on_cpu(device):
            return build_causal(bundle_path, settings, device=device, progress=progress)
    if name == "similarity":
        from core.spaces.stage import build_similarity

        # its many small eigen-solves and numba loops lose to thread hand-offs on a 2-core box:
        # on the demo bundle (50 concept nulls) 9 s with one thread against 26 s with two
        with _single_thread_on_cpu(device):
            return build_similarity(bundle_path, settings, device=device, progress=progress)
    if name == "dashboards":
        from core.dashboards.stage import build_dashboards

        unembeddings = unembeddings or {}
        return build_dashboards(
            bundle_path,
            settings,
            progress=progress,
            unembedding_a=unembeddings.get("a"),
            unembedding_b=unembeddings.get("b"),
        )
    if name == "umap":
        from core.embedding.stage import build_umap

        return build_umap(bundle_path, settings, progress=progress)
    raise AssertionError(f"stage {name!r} passed check_stage_names but has no runner")


@contextmanager
def _single_thread_on_cpu(device: str) -> Iterator[None]:
    import torch

    from core.device import resolve_device

    if resolve_device(device).type == "cuda":
        yield
        return
    from threadpoolctl import threadpool_limits

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        torch.set_num_threads(before)


def run_stages(
    bundle_path: str | Path,
    names: Sequence[str] = STAGES,
    settings: dict[str, Any] | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    unembeddings: dict[str, Any] | None = None,
    correlator: Correlator | None = None,
) -> Bundle:
    """Run several stages in order (a stage needs the parts of those before it).

    Args:
        bundle_path: the bundle folder.
        names: stages to run (sorted into ``ALL_STAGES`` order).
        settings: stage name -> settings object.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        unembeddings: passed to the dashboards stage.
        correlator: passed to the matching stage.

    Returns:
        The reopened bundle.
    """
    settings = settings or {}
    bundle = open_bundle(bundle_path)
    with bundle_lock(bundle.path):
        for name in check_stage_names(names):
            # each stage's steps read "<stage> · <step>", so a follower knows which stage is running
            bundle = run_stage(
                name, bundle_path, settings.get(name), device, in_phase(progress, name), unembeddings, correlator
            )
    return bundle
