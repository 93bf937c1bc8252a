"""The stages that add parts to a harvested bundle, in the order a full build runs them.

Each stage reads what the bundle already holds and writes its own parts through
``core.bundle.add_parts``; ``python -m core <stage> BUNDLE`` reruns one with new settings.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from core.bundle.reader import Bundle, open_bundle
from core.progress import ProgressFn, in_phase, no_progress

STAGES = ("matching", "similarity", "dashboards", "umap")
# the part whose presence says a stage has run
STAGE_PARTS = {"matching": "assignment", "similarity": "similarity", "dashboards": "dashboards", "umap": "umap"}


def missing_stages(bundle: Bundle) -> list[str]:
    """The stages whose parts a bundle does not hold yet, in run order."""
    return [name for name in STAGES if not bundle.has(STAGE_PARTS[name])]


def run_stage(
    name: str,
    bundle_path: str | Path,
    settings: Any = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    unembeddings: dict[str, Any] | None = None,
) -> Bundle:
    """Run one stage on a bundle.

    Args:
        name: one of ``STAGES``.
        bundle_path: the bundle folder.
        settings: that stage's settings object (``None``: its defaults).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        unembeddings: side -> ``core.dashboards.Unembedding`` for causal LMs (dashboards only).

    Returns:
        The reopened bundle.
    """
    if name == "matching":
        from core.matching.stage import build_matching

        return build_matching(bundle_path, settings, device=device, progress=progress)
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
    raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")


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
) -> Bundle:
    """Run several stages in order (a stage needs the parts of those before it).

    Args:
        bundle_path: the bundle folder.
        names: stages to run, in ``STAGES`` order.
        settings: stage name -> settings object.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        unembeddings: passed to the dashboards stage.

    Returns:
        The reopened bundle.
    """
    settings = settings or {}
    bundle = open_bundle(bundle_path)
    for name in sorted(names, key=STAGES.index):
        # each stage's steps read "<stage> · <step>", so a follower knows which stage is running
        bundle = run_stage(name, bundle_path, settings.get(name), device, in_phase(progress, name), unembeddings)
    return bundle
