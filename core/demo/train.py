"""Train a TopK SAE on harvested activations with sae-lens's own SAETrainer (the demos' recipe)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.demo.settings import DemoSettings
from core.harvest.encode import collect_activations
from core.harvest.loading import LoadedModel
from core.harvest.sanity import explained_variance
from core.harvest.specs import HarvestSettings
from core.progress import ProgressFn, no_progress


def _batches(
    acts: torch.Tensor, batch_size: int, generator: torch.Generator, report: Callable[[int], None] | None = None
) -> Iterator[torch.Tensor]:
    report = report or (lambda served: None)
    served = 0
    while True:
        order = torch.randperm(acts.shape[0], generator=generator)
        for lo in range(0, acts.shape[0] - batch_size + 1, batch_size):
            # the trainer draws a few batches for its normalisation estimate first: those count too
            report(served)
            served += batch_size
            yield acts[order[lo : lo + batch_size]]


def train_topk_sae(
    train: np.ndarray,
    held_out: np.ndarray,
    settings: DemoSettings,
    hook_name: str,
    model_name: str,
    out: Path,
    progress: ProgressFn = no_progress,
) -> dict[str, Any]:
    """Train one TopK SAE with sae-lens's ``SAETrainer`` and save it with ``save_inference_model``.

    Args:
        train: float32 [n, d_in] training activations.
        held_out: float32 [m, d_in] activations from held-out documents.
        settings: demo settings.
        hook_name: recorded in the SAE's metadata.
        model_name: recorded in the SAE's metadata.
        out: the folder to save into (sae-lens disk format).
        progress: called as ``progress("training SAE <model> <hook>", samples_served, samples_total)``.

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
    label = f"training SAE {model_name} {hook_name}"
    # the samples served include the normalisation estimate's batches, so the total does too
    total_served = total + trainer_cfg.n_batches_for_norm_estimate * settings.batch_size

    def report(served: int) -> None:
        progress(label, min(served, total_served), total_served)

    t0 = time.perf_counter()
    trainer = SAETrainer(
        cfg=trainer_cfg,
        sae=sae,
        data_provider=_batches(torch.from_numpy(train), settings.batch_size, generator, report),
    )
    trained = trainer.fit()
    progress(label, total_served, total_served)
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
    report = train_topk_sae(acts[rows[0]], acts[rows[1]], settings, hook_name, model.name, out, progress)
    if report["held_out_explained_variance"] < settings.min_explained_variance:
        raise RuntimeError(
            f"demo SAE for {model.name} {hook_name} reached held-out EV {report['held_out_explained_variance']:.3f} "
            f"< {settings.min_explained_variance}; the training recipe needs attention"
        )
    return report
