"""The embedded demo: all-MiniLM-L6-v2 vs paraphrase-MiniLM-L3-v2 on the fortunes text, SAEs trained here."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from core.bundle.io import write_json_atomic
from core.bundle.reader import open_bundle
from core.demo.settings import DEMO_CORPUS, DEMO_HOOK_A, DEMO_HOOK_B, DEMO_MODEL_A, DEMO_MODEL_B, DemoSettings, demo_key
from core.demo.train import split_held_out_rows, train_side_sae
from core.device import resolve_device
from core.harvest.corpus import load_corpus
from core.harvest.loading import LoadedModel, load_model
from core.harvest.specs import HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.harvest.windows import tokenize_windows
from core.paths import cache_dir
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.pipeline.stages import missing_stages, run_stages
from core.progress import ProgressFn, no_progress


def demo_dir(settings: DemoSettings | None = None) -> Path:
    """The cache folder of a demo build (holds sae_a/, sae_b/, training.json, bundle/)."""
    return cache_dir("demo", demo_key(settings or DemoSettings()))


def demo_bundle_path(settings: DemoSettings | None = None) -> Path:
    """Where the demo bundle lives once built."""
    return demo_dir(settings) / "bundle"


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
) -> Path:
    """Build (or reuse) the demo bundle.

    Args:
        settings: demo settings (defaults are the shipped demo).
        device: ``auto``, ``cpu`` or ``cuda`` for the model forward passes.
        progress: progress callback.
        rebuild: ignore cached SAEs and bundle.

    Returns:
        The demo bundle folder.
    """
    settings = settings or DemoSettings()
    root = demo_dir(settings)
    bundle = root / "bundle"
    if not rebuild and reuse_cached_bundle(bundle, device, progress):
        return bundle
    torch_device = resolve_device(device)
    report_path = root / "training.json"
    sides = {"a": (DEMO_MODEL_A, DEMO_HOOK_A), "b": (DEMO_MODEL_B, DEMO_HOOK_B)}
    report = json.loads(report_path.read_text()) if report_path.is_file() and not rebuild else None
    if report is None:
        report = _train_demo_saes(settings, sides, root, torch_device, progress)
        write_json_atomic(report, report_path)
    spec = ComparisonSpec(
        a=SideSpec(DEMO_MODEL_A, SAESpec("local", str(root / "sae_a")), DEMO_HOOK_A, "all-MiniLM-L6-v2 · block 3"),
        b=SideSpec(
            DEMO_MODEL_B, SAESpec("local", str(root / "sae_b")), DEMO_HOOK_B, "paraphrase-MiniLM-L3-v2 · block 1"
        ),
        corpus=DEMO_CORPUS,
        harvest=HarvestSettings(max_tokens=settings.n_tokens, device=device),
        extra=(("demo", {"settings": asdict(settings), "training": report}),),
    )
    return build_comparison(spec, bundle, overwrite=True, progress=progress)


def _train_demo_saes(
    settings: DemoSettings,
    sides: dict[str, tuple[ModelSpec, str]],
    root: Path,
    device: torch.device,
    progress: ProgressFn,
) -> dict[str, Any]:
    docs = load_corpus(DEMO_CORPUS)
    report: dict[str, Any] = {}
    models: dict[str, LoadedModel] = {}
    for name, (model_spec, _) in sides.items():
        progress(f"loading model {name}", 0, 0)
        models[name] = load_model(model_spec, device)
    windows = tokenize_windows(models["a"].tokenizer, docs, HarvestSettings(max_tokens=settings.n_tokens))
    train_rows, held_rows = split_held_out_rows(windows, settings)
    for name, (_, hook_name) in sides.items():
        rows = (train_rows, held_rows)
        report[name] = train_side_sae(
            models[name], hook_name, windows, rows, settings, root / f"sae_{name}", device, progress
        )
    return report
