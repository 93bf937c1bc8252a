"""Build a comparison bundle from a crosscoder and its two models (``python -m core compare --crosscoder``).

Everything a user can get wrong is checked before anything is written: the output folder
(``core.bundle.safety``), the checkpoint's layout and values, its number of models (M = 2),
each model's width at its hook against the checkpoint's d, the window length against the
models' positions, a shared tokenizer (a crosscoder reads both models on the same tokens),
the corpus and the stages' memory. Then, as for two SAEs, the bundle is built beside the
target: the harvest runs through its crosscoder seam, the bundle is written
(``core.crosscoder.bundle``), the stages run on the staging copy (analyses, similarity,
dashboards, UMAP, and the causal check when asked for), and the finished bundle is swapped in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.bundle.io import write_parquet_atomic
from core.bundle.safety import inputs_of
from core.bundle.writer import BundleWriter, OutputBuild
from core.crosscoder.bundle import identity_frames, latent_frame, reconstruction_summary
from core.crosscoder.checkpoint import CrosscoderWeights, load_checkpoint, recorded_hook
from core.crosscoder.harvest import CrosscoderSides, crosscoder_encoder, crosscoder_hook_sanity
from core.crosscoder.model import Crosscoder, InputScaling, estimate_scale
from core.crosscoder.settings import CrosscoderSpec
from core.device import resolve_device
from core.errors import CrosscoderError, SpecError
from core.harvest.corpus import read_corpus
from core.harvest.encode import collect_activations
from core.harvest.features import compute_feature_frame, top_tokens_per_feature
from core.harvest.loading import LoadedModel, load_model
from core.harvest.run import harvest, remove_work_dir
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec
from core.harvest.windows import same_tokenizer, tokenize_windows
from core.paths import hash_texts
from core.pipeline.compare import (
    WORK_DIR,
    check_positions,
    describe_model,
    package_versions,
    sanity_verdict,
    unembedding,
)
from core.pipeline.costs import check_stage_costs
from core.pipeline.stages import CROSSCODER_STAGES, check_stage_names, run_stages
from core.progress import ProgressFn, no_progress
from core.sides import SIDES


@dataclass(frozen=True)
class CrosscoderComparisonSpec:
    """Everything a crosscoder bundle is built from.

    Attributes:
        crosscoder: the checkpoint and its input scaling.
        model_a: the model the crosscoder's index 0 reads (base, in every public source).
        model_b: the model its index 1 reads.
        corpus: the shared text.
        hook_a: model A's hook (``None``: the hook the checkpoint's config names).
        hook_b: model B's hook.
        label_a: display name of side A.
        label_b: display name of side B.
        harvest: how the models are run.
        extra: free-form manifest additions (the demo records its training report here).
    """

    crosscoder: CrosscoderSpec
    model_a: ModelSpec
    model_b: ModelSpec
    corpus: CorpusSpec
    hook_a: str | None = None
    hook_b: str | None = None
    label_a: str = ""
    label_b: str = ""
    harvest: HarvestSettings = field(default_factory=HarvestSettings)
    extra: tuple[tuple[str, Any], ...] = ()


def crosscoder_inputs(spec: CrosscoderComparisonSpec) -> list[tuple[str, str]]:
    """The run's inputs that are files or folders here (the output may never hold one).

    Args:
        spec: the crosscoder comparison.

    Returns:
        (what, path) pairs.
    """
    found: list[tuple[str, str | None]] = [("the crosscoder checkpoint", spec.crosscoder.path)]
    for name, model in (("A", spec.model_a), ("B", spec.model_b)):
        if model.kind in ("hf", "gguf", "onnx-bert"):
            found.append((f"the model of side {name}", model.source))
        found.append((f"the tokenizer of side {name}", model.tokenizer))
    if spec.corpus.kind == "file":
        found.append(("the corpus", spec.corpus.source))
    return [(what, str(path)) for what, path in inputs_of(found)]


@dataclass
class LoadedCrosscoderSides:
    """What the checks produced: the checkpoint, the models, their hooks (the crosscoder comes once scaled)."""

    weights: CrosscoderWeights
    models: dict[str, LoadedModel]
    hooks: dict[str, Any]


def load_crosscoder_sides(
    spec: CrosscoderSpec,
    model_specs: dict[str, ModelSpec],
    hooks: dict[str, str | None],
    device: Any,
    progress: ProgressFn = no_progress,
) -> LoadedCrosscoderSides:
    """Load and check the checkpoint and both models (nothing is written).

    Args:
        spec: the crosscoder spec.
        model_specs: side -> model spec.
        hooks: side -> hook name (``None``: the checkpoint's recorded hook).
        device: where to put the models.
        progress: progress callback.

    Returns:
        The checked checkpoint, models and hook points.
    """
    progress("loading crosscoder", 0, 0)
    weights = load_checkpoint(spec.path, spec.format)
    if weights.n_models != 2:
        raise CrosscoderError(
            f"The crosscoder {weights.path.name} reads M={weights.n_models} models but a comparison gives two "
            "(--model-a, --model-b); use a two-model crosscoder."
        )
    models: dict[Any, LoadedModel] = {}
    loaded: dict[str, LoadedModel] = {}
    points = {}
    for side in SIDES:
        progress(f"loading model {side}", 0, 0)
        if model_specs[side] not in models:
            models[model_specs[side]] = load_model(model_specs[side], device)
        model = loaded[side] = models[model_specs[side]]
        name = hooks[side] or recorded_hook(weights)
        if not name:
            raise SpecError(
                f"The crosscoder's config names no hook; pass --hook-{side} (for example blocks.3.hook_resid_post)."
            )
        points[side] = model.hook(name)
        if model.d_model != weights.d_model:
            raise CrosscoderError(
                f"Model {side.upper()} ({model.name}) has width {model.d_model} at {name} but the crosscoder reads "
                f"d={weights.d_model}; give the models the crosscoder was trained on."
            )
    if not same_tokenizer(loaded["a"].tokenizer, loaded["b"].tokenizer):
        raise CrosscoderError(
            "The two models tokenize text differently, but a crosscoder reads both on the same tokens; "
            "give two models that share a tokenizer."
        )
    return LoadedCrosscoderSides(weights, loaded, points)


def resolve_scaling(
    spec: CrosscoderSpec,
    loaded: LoadedCrosscoderSides,
    docs: Sequence[str],
    settings: HarvestSettings,
    device: Any,
) -> InputScaling:
    """Each model's input scale: given, else the checkpoint's normaliser, else sqrt(d) / E||x|| on the corpus.

    Args:
        spec: the crosscoder spec (given factors).
        loaded: the checked sides.
        docs: the corpus documents (the estimate reads their first ``spec.scale_tokens`` tokens).
        settings: harvest settings (window length, special-token masking).
        device: where the models run.

    Returns:
        The scaling, with each factor's source.
    """
    weights = loaded.weights
    given = {"a": spec.scale_a, "b": spec.scale_b}
    scale, source = [], []
    windows = None
    for index, side in enumerate(SIDES):
        factor = given[side]
        if factor is not None:
            scale.append(float(factor))
            source.append("given")
        elif weights.normaliser_scale is not None:
            scale.append(float(weights.normaliser_scale[index]))
            source.append("checkpoint")
        else:
            if windows is None:
                sample = HarvestSettings(
                    max_tokens=spec.scale_tokens, max_len=settings.max_len, mask_special=settings.mask_special
                )
                windows = tokenize_windows(loaded.models["a"].tokenizer, docs, sample)
            acts = collect_activations(loaded.models[side], loaded.hooks[side], windows, settings, device)
            scale.append(estimate_scale(acts))
            source.append("estimated")
    return InputScaling(tuple(scale), tuple(source), weights.normaliser_mean)


def build_crosscoder_comparison(
    spec: CrosscoderComparisonSpec,
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    stages: Sequence[str] = CROSSCODER_STAGES,
    stage_settings: dict[str, Any] | None = None,
) -> Path:
    """Check, harvest and write a crosscoder bundle, then run its stages.

    Args:
        spec: what to compare.
        out: the bundle folder (empty, an interrupted build, or ``overwrite``).
        overwrite: replace what the folder holds.
        progress: progress callback.
        stages: stages to run after the harvest (``core.pipeline.stages``; add ``causal`` for the causal check).
        stage_settings: stage name -> settings object.

    Returns:
        The bundle folder.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    build = OutputBuild(out, overwrite, inputs=crosscoder_inputs(spec))
    stages = check_stage_names(stages)
    device = resolve_device(spec.harvest.device)
    loaded = load_crosscoder_sides(
        spec.crosscoder,
        {"a": spec.model_a, "b": spec.model_b},
        {"a": spec.hook_a, "b": spec.hook_b},
        device,
        progress,
    )
    for side in SIDES:
        check_positions(loaded.models[side], spec.harvest.max_len, side)
    corpus = read_corpus(spec.corpus)
    docs = corpus.docs
    # a stage setting that cannot fit is refused now, not after the harvest (both sides have F latents)
    n_latents = loaded.weights.n_latents
    check_stage_costs({name: (stage_settings or {}).get(name) for name in stages}, n_latents, n_latents)
    scaling = resolve_scaling(spec.crosscoder, loaded, docs, spec.harvest, device)
    cc = Crosscoder(loaded.weights, scaling, device)
    sides = CrosscoderSides(loaded.models, loaded.hooks, cc)
    timings["load_s"] = time.perf_counter() - t0
    with build:
        return _build(
            spec, build, loaded, sides, docs, corpus.to_dict(), stages, stage_settings, device, progress, timings, t0
        )


def _build(
    spec: CrosscoderComparisonSpec,
    build: OutputBuild,
    loaded: LoadedCrosscoderSides,
    sides: CrosscoderSides,
    docs: list[str],
    corpus_record: dict[str, Any],
    stages: tuple[str, ...],
    stage_settings: dict[str, Any] | None,
    device: Any,
    progress: ProgressFn,
    timings: dict[str, float],
    t0: float,
) -> Path:
    """Harvest, write and stage the bundle inside its staging folder, then swap it in."""
    out = build.staging
    cc = sides.crosscoder
    scaling = cc.scaling
    t1 = time.perf_counter()
    sanity_windows = tokenize_windows(
        loaded.models["a"].tokenizer,
        docs,
        HarvestSettings(max_tokens=spec.harvest.sanity_tokens, max_len=spec.harvest.max_len),
    )
    progress("hook sanity", 0, 0)
    sanity = crosscoder_hook_sanity(sides, sanity_windows, spec.harvest, device)
    timings["sanity_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    identity = {
        "crosscoder": {**loaded.weights.describe(), "size": loaded.weights.path.stat().st_size},
        "models": {s: loaded.models[s].spec.label() for s in SIDES},
        "hooks": {s: loaded.hooks[s].name for s in SIDES},
        "scale": list(scaling.scale),
    }
    result = harvest(
        {}, docs, spec.harvest, out / ".work", device, progress, encoder=crosscoder_encoder(sides, identity)
    )
    timings["harvest_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    writer = BundleWriter(out)
    units = result.units
    writer.write_units(units)
    used_docs = np.unique(units["doc"].to_numpy())
    writer.write_docs(pl.DataFrame({"doc": used_docs, "text": [docs[int(d)] for d in used_docs]}))
    unit_text = units["text"].to_list()
    for index, side in enumerate(SIDES):
        progress(f"features {side}", 0, 0)
        writer.write_codes(side, result.codes[side])
        writer.write_decoder(side, cc.W_dec[index].cpu().numpy())
        tops = top_tokens_per_feature(result.codes[side], unit_text)
        writer.write_features(side, compute_feature_frame(result.moments[side], units.height, tops))
    latents = latent_frame(cc, result.extra)
    write_parquet_atomic(latents, out / "crosscoder_latents.parquet")
    matches, assignment, matching = identity_frames(
        result.codes["a"], result.codes["b"], cc, latents["fire"].to_numpy()
    )
    write_parquet_atomic(matches, out / "matches.parquet")
    write_parquet_atomic(assignment, out / "assignment.parquet")
    recon = reconstruction_summary(cc, result.extra)
    timings["write_s"] = time.perf_counter() - t3
    timings["total_s"] = time.perf_counter() - t0

    labels = {"a": spec.label_a, "b": spec.label_b}
    weights = loaded.weights
    manifest = {
        "sides": {
            side: {
                "label": labels[side] or f"{loaded.models[side].name} {loaded.hooks[side].name}",
                "model": describe_model(loaded.models[side]),
                "sae": {
                    "spec": {"kind": "crosscoder", "source": str(weights.path), "sae_id": None},
                    "hook_name": loaded.hooks[side].name,
                    "d_in": weights.d_model,
                    "d_sae": weights.n_latents,
                    "architecture": f"crosscoder-{weights.architecture}",
                    "crosscoder_index": index,
                },
                "hook": loaded.hooks[side].name,
                "hidden_states_index": loaded.hooks[side].hidden_states_index,
                "d_in": weights.d_model,
                "d_sae": weights.n_latents,
                "architecture": f"crosscoder-{weights.architecture}",
                "hook_sanity": sanity[side],
                "hook_sanity_verdict": sanity_verdict(sanity[side]),
                "alive_features": int((result.moments[side]["count"] > 0).sum()),
                "explained_variance": recon[side]["explained_variance"],
                "l0": recon[side]["l0"],
            }
            for index, side in enumerate(SIDES)
        },
        "crosscoder": {
            "spec": spec.crosscoder.to_dict(),
            "checkpoint": weights.describe(),
            "scaling": {s: row for s, row in zip(SIDES, scaling.describe(), strict=True)},
            "reconstruction": recon,
            "explained_variance": {s: recon[s]["explained_variance"] for s in SIDES},
            "l0": recon["l0"],
            "dead_fraction": recon["dead_fraction"],
            "n_latents": weights.n_latents,
            "space": "the crosscoder's input space (each model's activation times its scale)",
        },
        "matching": matching,
        "corpus": {
            **spec.corpus.to_dict(),
            "content_hash": hash_texts(docs),
            "n_docs": len(docs),
            "n_docs_used": int(len(used_docs)),
            # documents read, kept, and left out per reason (empty, not text, beyond max_docs, ...)
            **corpus_record,
        },
        "n_units": units.height,
        "n_tokens": units.height,
        "unit_kind": "token",
        "settings": {"harvest": spec.harvest.to_dict(), "device": str(device)},
        "versions": package_versions(),
        "timings": {**timings, "tokens_per_s": units.height / max(timings["harvest_s"], 1e-9)},
        "harvest": {"n_shards": result.n_shards, "resumed_shards": result.resumed_shards},
        **dict(spec.extra),
    }
    writer.finalize(manifest)
    unembeddings = {s: unembedding(loaded.models[s]) for s in SIDES if loaded.models[s].is_causal}
    # the stages run on the staging copy too: a failing stage leaves an old bundle at the target whole
    run_stages(out, stages, stage_settings, str(device), progress, unembeddings)
    remove_work_dir(out / WORK_DIR)
    return build.commit()
