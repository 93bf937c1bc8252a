"""The demo's layer sweep: SAEs at three depths of each MiniLM, attached to the demo bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from core.bundle.io import write_json_atomic
from core.demo.settings import DEMO_CORPUS, DEMO_MODEL_A, DEMO_MODEL_B, DemoSettings, demo_key
from core.demo.spine import build_demo, demo_dir
from core.demo.train import split_held_out_rows, train_side_sae
from core.device import resolve_device
from core.harvest.corpus import load_corpus
from core.harvest.loading import load_model
from core.harvest.specs import HarvestSettings, SAESpec
from core.harvest.windows import tokenize_windows
from core.progress import ProgressFn, no_progress

# the demo sweep: three depths of each model, every cell paired and measured
SWEEP_HOOKS_A = ("blocks.1.hook_resid_post", "blocks.3.hook_resid_post", "blocks.5.hook_resid_post")


SWEEP_HOOKS_B = ("blocks.0.hook_resid_post", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post")


SWEEP_SETTINGS = DemoSettings(n_tokens=60_000, min_explained_variance=0.0)


def build_demo_sweep(
    settings: DemoSettings = SWEEP_SETTINGS,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    n_null: int = 1000,
) -> Path:
    """Train one SAE per sweep layer with the demo's recipe and attach the 3 x 3 sweep to the demo bundle.

    The SAEs follow the demo recipe (TopK, same width, k, epochs and optimiser) on fewer
    tokens (``settings.n_tokens``) so the whole sweep stays a few minutes on 2 cores; their
    held-out explained variance is recorded beside the table, not enforced.

    Args:
        settings: recipe and token budget of the sweep SAEs.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        n_null: permutation-null samples per cell.

    Returns:
        The demo bundle, now carrying the sweep in its similarity.json.
    """
    from core.pipeline.sweep import SweepSide, SweepSpec, attach_sweep, build_sweep
    from core.spaces.settings import SimilaritySettings

    bundle = build_demo(device=device, progress=progress)
    root = demo_dir() / f"sweep-{demo_key(settings)}"
    torch_device = resolve_device(device)
    report_path = root / "training.json"
    if not report_path.is_file():
        docs = load_corpus(DEMO_CORPUS)
        report: dict[str, Any] = {}
        for name, model_spec, hooks in (("a", DEMO_MODEL_A, SWEEP_HOOKS_A), ("b", DEMO_MODEL_B, SWEEP_HOOKS_B)):
            model = load_model(model_spec, torch_device)
            windows = tokenize_windows(model.tokenizer, docs, HarvestSettings(max_tokens=settings.n_tokens))
            train_rows, held_rows = split_held_out_rows(windows, settings)
            for hook in hooks:
                report[f"{name}:{hook}"] = train_side_sae(
                    model,
                    hook,
                    windows,
                    (train_rows, held_rows),
                    settings,
                    root / f"sae_{name}_{hook}",
                    torch_device,
                    progress,
                )
        write_json_atomic(report, report_path)
    spec = SweepSpec(
        a=SweepSide(
            DEMO_MODEL_A, tuple(SAESpec("local", str(root / f"sae_a_{h}")) for h in SWEEP_HOOKS_A), SWEEP_HOOKS_A
        ),
        b=SweepSide(
            DEMO_MODEL_B, tuple(SAESpec("local", str(root / f"sae_b_{h}")) for h in SWEEP_HOOKS_B), SWEEP_HOOKS_B
        ),
        corpus=DEMO_CORPUS,
        harvest=HarvestSettings(max_tokens=settings.n_tokens, device=device),
        similarity=SimilaritySettings(metrics=("svcca", "rsa"), n_null=n_null),
    )
    table = build_sweep(spec, root / "table", overwrite=True, device=device, progress=progress)
    attach_sweep(bundle, table)
    return bundle
