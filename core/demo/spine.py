"""The embedded demo: all-MiniLM-L6-v2 vs paraphrase-MiniLM-L3-v2 on the fortunes text, SAEs trained here."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.bundle.reader import open_bundle
from core.demo.settings import (
    DEMO_CORPUS,
    DEMO_HOOK_A,
    DEMO_HOOK_B,
    DEMO_MODEL_A,
    DEMO_MODEL_B,
    DemoSettings,
    demo_bundle_path,
    demo_dir,
)
from core.demo.shipped import prepare_pair_saes
from core.device import resolve_device
from core.harvest.corpus import load_corpus
from core.harvest.loading import LoadedModel
from core.harvest.specs import HarvestSettings, SAESpec, SideSpec
from core.harvest.windows import tokenize_windows
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.pipeline.stages import missing_stages, run_stages
from core.progress import ProgressFn, in_phase, no_progress

__all__ = ["build_demo", "demo_bundle_path", "demo_dir", "reuse_cached_bundle"]


def reuse_cached_bundle(bundle: Path, device: str, progress: ProgressFn) -> bool:
    """Reuse a demo bundle built before, first adding the stages it lacks (an older or interrupted build).

    Args:
        bundle: the cached bundle folder.
        device: ``auto``, ``cpu`` or ``cuda`` for missing stages.
        progress: progress callback.

    Returns:
        Whether a finished bundle was there to reuse.
    """
    if not (bundle / "manifest.json").is_file():
        return False
    missing = missing_stages(open_bundle(bundle))
    if missing:
        run_stages(bundle, missing, device=device, progress=progress)
    return True


def build_demo(
    settings: DemoSettings | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    rebuild: bool = False,
    retrain: bool = False,
) -> Path:
    """Build (or reuse) the demo bundle.

    The SAEs come from the project's shipped files when their recipe matches (checked on held-out
    text), else from an earlier training here, else they are trained now (core.demo.shipped).

    Args:
        settings: demo settings (defaults are the shipped demo).
        device: ``auto``, ``cpu`` or ``cuda`` for the model forward passes.
        progress: progress callback (steps named by phase: ``SAEs · ...``, ``harvest · ...``, ``matching · ...``).
        rebuild: rebuild the bundle even when a finished one is cached.
        retrain: retrain both SAEs by the recipe (and ship them: ``assets/demo_saes/spine``), then rebuild.

    Returns:
        The demo bundle folder.
    """
    settings = settings or DemoSettings()
    root = demo_dir(settings)
    bundle = root / "bundle"
    if not (rebuild or retrain) and reuse_cached_bundle(bundle, device, progress):
        return bundle
    sides = {"a": (DEMO_MODEL_A, DEMO_HOOK_A), "b": (DEMO_MODEL_B, DEMO_HOOK_B)}

    def windows(models: dict[str, LoadedModel]) -> tuple[dict[str, list], dict[str, Any]]:
        # both MiniLMs read BERT's uncased WordPiece: one set of windows serves both sides
        shared = tokenize_windows(
            models["a"].tokenizer, load_corpus(DEMO_CORPUS), HarvestSettings(max_tokens=settings.n_tokens)
        )
        return {"a": shared, "b": shared}, {}

    saes, report = prepare_pair_saes(
        "spine", sides, settings, root, windows, resolve_device(device), in_phase(progress, "SAEs"), retrain
    )
    spec = ComparisonSpec(
        a=SideSpec(DEMO_MODEL_A, SAESpec("local", str(saes["a"])), DEMO_HOOK_A, "all-MiniLM-L6-v2 · block 3"),
        b=SideSpec(DEMO_MODEL_B, SAESpec("local", str(saes["b"])), DEMO_HOOK_B, "paraphrase-MiniLM-L3-v2 · block 1"),
        corpus=DEMO_CORPUS,
        harvest=HarvestSettings(max_tokens=settings.n_tokens, device=device),
        extra=(("demo", {"pair": "spine", "settings": asdict(settings), "training": report}),),
    )
    return build_comparison(spec, bundle, overwrite=True, progress=progress)
