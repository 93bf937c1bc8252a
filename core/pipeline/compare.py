"""Build a comparison bundle from two side specs and a corpus (what ``python -m core compare`` runs)."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.safety import inputs_of
from core.bundle.schema import WORK_DIRS
from core.bundle.writer import BundleWriter, OutputBuild
from core.device import resolve_device
from core.engine.base import Engine, open_engine
from core.engine.settings import EngineSettings
from core.errors import SpecError
from core.harvest.corpus import CorpusText, read_corpus, read_texts
from core.harvest.encode import HarvestSide
from core.harvest.features import compute_feature_frame, top_tokens_per_feature
from core.harvest.loading import LoadedModel, as_loaded_model, as_loaded_sae
from core.harvest.run import harvest, remove_work_dir
from core.harvest.sanity import hook_sanity
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.harvest.windows import plan_aligned_windows, same_tokenizer, tokenize_windows
from core.paths import hash_texts
from core.pipeline.config import ComparisonConfig
from core.pipeline.costs import check_stage_costs
from core.pipeline.stages import STAGES, run_stages
from core.progress import ProgressFn, in_phase, no_progress
from core.sides import SIDES

VERSIONED = ("featurebridge", "torch", "transformers", "sae-lens", "numpy", "polars", "scipy", "safetensors")
# a neighbouring hook that reconstructs this much better than the configured one is flagged
SANITY_MARGIN = 0.05
# the harvest's resumable shards, inside the staging folder while the bundle is built
WORK_DIR = WORK_DIRS[0]


@dataclass(frozen=True)
class ComparisonSpec:
    """Everything a comparison bundle is built from.

    Attributes:
        a: side A.
        b: side B.
        corpus: the shared text.
        harvest: how the models are run (``build_comparison(config=...)`` takes them from the
            config instead).
        engine: who schedules the harvest's shards and the correlation reduce (local by default).
        extra: free-form manifest additions (the demo records its training report here).
    """

    a: SideSpec
    b: SideSpec
    corpus: CorpusSpec
    harvest: HarvestSettings = field(default_factory=HarvestSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    extra: tuple[tuple[str, Any], ...] = ()


def package_versions() -> dict[str, str]:
    """Installed versions of the packages a result depends on, plus Python's."""
    versions = {"python": platform.python_version()}
    for name in VERSIONED:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return versions


def sanity_verdict(report: list[dict[str, Any]]) -> dict[str, Any]:
    """Summarise a hook-sanity report: is the configured hook the best-reconstructed one?"""
    configured = next(r for r in report if r["configured"])
    best = max(report, key=lambda r: r["explained_variance"])
    suspicious = best["hook"] != configured["hook"] and (
        best["explained_variance"] - configured["explained_variance"] > SANITY_MARGIN
    )
    return {
        "configured_hook": configured["hook"],
        "best_hook": best["hook"],
        "ok": not suspicious,
        "message": (
            f"{best['hook']} reconstructs better (EV {best['explained_variance']:.3f}) than the configured "
            f"{configured['hook']} (EV {configured['explained_variance']:.3f}): the hook may be off by one."
            if suspicious
            else f"The configured hook reconstructs best (EV {configured['explained_variance']:.3f})."
        ),
    }


def describe_model(model: LoadedModel) -> dict[str, Any]:
    return {
        **asdict(model.spec),
        "name": model.name,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "is_causal": model.is_causal,
        "architecture": type(model.model).__name__,
    }


# side -> (model, SAE, hook): the model and SAE as spec strings, specs or in-memory objects
Sources = Mapping[str, tuple[Any, Any, str | None]]


def spec_sources(spec: ComparisonSpec) -> dict[str, tuple[Any, Any, str | None]]:
    """A comparison spec's sides as :data:`Sources`."""
    return {name: (side.model, side.sae, side.hook) for name, side in (("a", spec.a), ("b", spec.b))}


def local_inputs(spec: ComparisonSpec) -> list[tuple[str, str]]:
    """The run's inputs that are files or folders here (the output may never hold one).

    Args:
        spec: the comparison.

    Returns:
        (what, path) pairs, for example ``("the SAE of side A", "/data/sae")``.
    """
    return source_inputs(spec_sources(spec), spec.corpus)


def source_inputs(sources: Sources, texts: Any = None) -> list[tuple[str, str]]:
    """The inputs among ``sources`` and ``texts`` that are files or folders here (in-memory objects are none).

    Args:
        sources: side -> (model, SAE, hook).
        texts: a :class:`CorpusSpec`, or anything else (no file).

    Returns:
        (what, path) pairs.
    """
    found: list[tuple[str, str | None]] = []
    for name in SIDES:
        model, sae, _ = sources[name]
        sae = SAESpec.parse(str(sae)) if isinstance(sae, str | Path) else sae
        if isinstance(sae, SAESpec) and sae.kind in ("local", "sparsify"):
            found.append((f"the SAE of side {name.upper()}", sae.source))
        model = ModelSpec.parse(str(model)) if isinstance(model, str | Path) else model
        if isinstance(model, ModelSpec):
            if model.kind in ("hf", "gguf", "onnx-bert"):
                found.append((f"the model of side {name.upper()}", model.source))
            found.append((f"the tokenizer of side {name.upper()}", model.tokenizer))
    if isinstance(texts, CorpusSpec) and texts.kind == "file":
        found.append(("the corpus", texts.source))
    return [(what, str(path)) for what, path in inputs_of(found)]


def check_positions(model: LoadedModel, max_len: int, side: str) -> None:
    """Refuse windows longer than the model has positions for (an index error deep in its embedding otherwise).

    Args:
        model: the loaded model.
        max_len: tokens per window, special tokens included.
        side: ``a`` or ``b``, for the message.
    """
    limit = getattr(model.model.config, "max_position_embeddings", None)
    if isinstance(limit, int) and 0 < limit < max_len:
        raise SpecError(
            f"--max-len {max_len} is beyond the {limit} positions of model {model.name} (side {side.upper()}); "
            f"pass --max-len {limit} or less."
        )


def resolve_config(
    harvest: HarvestSettings,
    stages: Sequence[str] | None = None,
    stage_settings: Mapping[str, Any] | None = None,
    config: ComparisonConfig | None = None,
) -> ComparisonConfig:
    """The one config of a build, from a :class:`ComparisonConfig` or from the older loose arguments.

    Args:
        harvest: the spec's harvest settings.
        stages: stages to run (``None``: all); only without ``config``.
        stage_settings: stage name -> settings object; only without ``config``.
        config: the whole config (then ``harvest`` must be the default or equal to ``config.harvest``).

    Returns:
        The validated config.
    """
    if config is None:
        parts = {name: value for name, value in (stage_settings or {}).items() if value is not None}
        unknown = sorted(set(parts) - set(STAGES))
        if unknown:
            raise ValueError(f"unknown stage settings {unknown}; stages are {STAGES}")
        return ComparisonConfig(harvest=harvest, stages=STAGES if stages is None else tuple(stages), **parts)
    if stages is not None or stage_settings is not None:
        raise ValueError("pass either config or stages/stage_settings, not both")
    if harvest != HarvestSettings() and harvest != config.harvest:
        raise SpecError(
            "The spec's harvest settings differ from the config's; give the harvest settings in one place (the config)."
        )
    return config


def model_key(model: Any) -> Any:
    """What identifies a model source, so two sides naming the same model load it once."""
    if isinstance(model, str | Path):
        return ModelSpec.parse(str(model))
    if isinstance(model, ModelSpec):
        return model
    return id(model[0] if isinstance(model, tuple) else model)


def load_sides(
    sources: Sources,
    device: torch.device,
    progress: ProgressFn = no_progress,
    max_len: int | None = None,
) -> dict[str, HarvestSide]:
    """Load (or adopt) each side's model and SAE and find the hook the SAE reads.

    Args:
        sources: side -> (model, SAE, hook): the model and SAE in any form
            :func:`~core.harvest.loading.as_loaded_model` / ``as_loaded_sae`` take (spec
            strings, specs, in-memory objects); hook ``None`` takes the SAE's own.
        device: where to put them.
        progress: progress callback.
        max_len: tokens per window, checked against each model's positions (``None``: unchecked).

    Returns:
        side -> :class:`~core.harvest.encode.HarvestSide`.
    """
    models: dict[Any, LoadedModel] = {}
    sides: dict[str, HarvestSide] = {}
    for i, (name, (model_source, sae_source, hook)) in enumerate(sources.items()):
        progress("loading models and SAEs", i, len(sources))
        key = model_key(model_source)
        if key not in models:
            models[key] = as_loaded_model(key if isinstance(key, ModelSpec) else model_source, device)
        model = models[key]
        if max_len is not None:
            check_positions(model, max_len, name)
        sae = as_loaded_sae(sae_source, device)
        hook_name = hook or sae.hook_name
        if not hook_name:
            raise SpecError(
                f"The SAE of side {name} records no hook; pass its hook (for example blocks.3.hook_resid_post)."
            )
        sides[name] = HarvestSide(model, sae, model.hook(hook_name))
    progress("loading models and SAEs", len(sources), len(sources))
    return sides


def read_documents(texts: str | Path | CorpusSpec | Sequence[str]) -> tuple[CorpusText, dict[str, Any]]:
    """The documents to harvest and the manifest's corpus record.

    Args:
        texts: a corpus spec (string or :class:`CorpusSpec`; a path means a file), or the
            documents themselves (a list of strings, recorded as kind ``memory``).

    Returns:
        The documents with their counts, and the corpus record.
    """
    if isinstance(texts, str | Path):
        texts = CorpusSpec.parse(str(texts))
    if isinstance(texts, CorpusSpec):
        return read_corpus(texts), texts.to_dict()
    return read_texts(texts), {"kind": "memory", "source": None}


def build_comparison(
    spec: ComparisonSpec,
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    stages: Sequence[str] | None = None,
    stage_settings: dict[str, Any] | None = None,
    config: ComparisonConfig | None = None,
    resume: bool = False,
    engine: Engine | None = None,
) -> Path:
    """Load both sides, harvest their codes on the same text, write the bundle, run the stages.

    Every input is checked and every model and SAE loaded before anything is written; the
    bundle is built beside ``out`` and swapped in whole at the end (an old bundle there stays
    whole until then, and stays untouched when the run fails). See ``core.bundle.safety`` for
    what ``overwrite`` may replace.

    Args:
        spec: what to compare.
        out: the bundle folder (absent, empty, an interrupted build of ours, or, with
            ``overwrite``, a bundle this tool wrote).
        overwrite: replace a bundle this tool wrote at ``out``.
        progress: progress callback.
        stages: the later stages to run on the new bundle (``None``: all; see ``core.pipeline.stages``).
        stage_settings: stage name -> settings object.
        config: the whole run's config instead of ``stages`` and ``stage_settings`` (its
            harvest settings then replace the spec's, which must be left at their defaults).
        resume: rebuild the finished shards of an interrupted build whose inputs have changed
            (with a notice); without it (or ``overwrite``) such shards are refused in one
            sentence and kept. Shards of unchanged inputs are always reused.
        engine: an engine built already (tests pass one); ``None`` makes the one ``spec.engine``
            names.

    Returns:
        The bundle folder.
    """
    return run_comparison(
        spec_sources(spec),
        spec.corpus,
        out,
        resolve_config(spec.harvest, stages, stage_settings, config),
        overwrite=overwrite,
        progress=progress,
        labels={"a": spec.a.label, "b": spec.b.label},
        extra=dict(spec.extra),
        resume=resume,
        engine=engine or spec.engine,
    )


def run_comparison(
    sources: Sources,
    texts: str | Path | CorpusSpec | Sequence[str],
    out: str | Path,
    config: ComparisonConfig,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    labels: Mapping[str, str] | None = None,
    extra: Mapping[str, Any] | None = None,
    resume: bool = False,
    engine: Engine | EngineSettings | None = None,
) -> Path:
    """The build behind ``build_comparison`` and ``core.compare``: sides in any form, one config.

    Args:
        sources: side -> (model, SAE, hook), as :func:`load_sides` takes them.
        texts: the corpus, as :func:`read_documents` takes it.
        out: the bundle folder (see :func:`build_comparison`).
        config: harvest and stage settings, and which stages run.
        overwrite: replace a bundle this tool wrote at ``out``.
        progress: progress callback.
        labels: side -> display label ("" or missing: model name and hook).
        extra: free-form manifest additions.
        resume: see :func:`build_comparison`.
        engine: the engine, or its settings (``None``: local). It is started after the output
            check and before anything is loaded, so an unreachable cluster costs nothing.

    Returns:
        The bundle folder.
    """
    build = OutputBuild(out, overwrite, inputs=source_inputs(sources, texts))
    with open_engine(engine or EngineSettings()) as running:
        return _build(sources, texts, build, config, overwrite or resume, progress, labels or {}, extra, running)


def _build(
    sources: Sources,
    texts: str | Path | CorpusSpec | Sequence[str],
    build: OutputBuild,
    config: ComparisonConfig,
    rebuild_stale: bool,
    progress: ProgressFn,
    labels: Mapping[str, str],
    extra: Mapping[str, Any] | None,
    engine: Engine,
) -> Path:
    settings = config.harvest
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    device = resolve_device(settings.device)
    # the harvest's steps read "harvest · <step>"; the stages name their own phases
    stage_progress, progress = progress, in_phase(progress, "harvest")
    sides = load_sides(sources, device, progress, settings.max_len)
    timings["load_s"] = time.perf_counter() - t0
    corpus, corpus_record = read_documents(texts)
    docs = corpus.docs
    stage_settings = config.stage_settings()
    # a stage setting that cannot fit is refused now, not after the harvest
    check_stage_costs(
        {name: stage_settings.get(name) for name in config.stages}, sides["a"].sae.d_sae, sides["b"].sae.d_sae
    )

    with build:
        staging = build.staging
        t1 = time.perf_counter()
        sanity = _hook_sanity(sides, docs, settings, device, progress)
        timings["sanity_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        runner = engine.shard_runner(sides, settings, device)
        result = harvest(
            sides, docs, settings, staging / WORK_DIR, device, progress, rebuild_stale=rebuild_stale, runner=runner
        )
        timings["harvest_s"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        writer = BundleWriter(staging)
        units = result.units
        writer.write_units(units)
        used_docs = np.unique(units["doc"].to_numpy())
        writer.write_docs(pl.DataFrame({"doc": used_docs, "text": [docs[int(d)] for d in used_docs]}))
        unit_text = units["text"].to_list()
        for i, (name, side) in enumerate(sides.items()):
            progress("writing codes and features", 2 * i, 2 * len(sides))
            writer.write_codes(name, result.codes[name])
            writer.write_decoder(name, side.sae.decoder().numpy())
            progress("writing codes and features", 2 * i + 1, 2 * len(sides))
            tops = top_tokens_per_feature(result.codes[name], unit_text)
            writer.write_features(name, compute_feature_frame(result.moments[name], units.height, tops))
        progress("writing codes and features", 2 * len(sides), 2 * len(sides))
        timings["write_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0

        manifest = {
            "sides": {
                name: {
                    "label": labels.get(name) or f"{side.model.name} {side.hook.name}",
                    "model": describe_model(side.model),
                    "sae": side.sae.describe(),
                    "hook": side.hook.name,
                    "hidden_states_index": side.hook.hidden_states_index,
                    "d_in": side.sae.d_in,
                    "d_sae": side.sae.d_sae,
                    "architecture": side.sae.architecture,
                    "hook_sanity": sanity[name],
                    "hook_sanity_verdict": sanity_verdict(sanity[name]),
                    "alive_features": int((result.moments[name]["count"] > 0).sum()),
                }
                for name, side in sides.items()
            },
            "corpus": {
                **corpus_record,
                "content_hash": hash_texts(docs),
                "n_docs": len(docs),
                "n_docs_used": int(len(used_docs)),
                # documents read, kept, and left out per reason (empty, not text, beyond max_docs, ...)
                **corpus.to_dict(),
            },
            "n_units": units.height,
            "n_tokens": units.height,
            "unit_kind": "token" if result.alignment is None else "span",
            # different tokenizers: units, share of each side's tokens used, share of 1:1 units
            **({} if result.alignment is None else {"alignment": result.alignment}),
            "settings": {"harvest": settings.to_dict(), "device": str(device), "engine": engine.describe()},
            "versions": package_versions(),
            "timings": {**timings, "tokens_per_s": units.height / max(timings["harvest_s"], 1e-9)},
            "harvest": {
                "n_shards": result.n_shards,
                "resumed_shards": result.resumed_shards,
                "rebuilt_because": result.rebuilt_because,
            },
            **dict(extra or {}),
        }
        writer.finalize(manifest)
        unembeddings = {name: unembedding(side.model) for name, side in sides.items() if side.model.is_causal}
        # the stages run on the staging copy too: a failing stage leaves the old bundle whole
        run_stages(
            staging, config.stages, stage_settings, str(device), stage_progress, unembeddings, engine.correlator()
        )
        remove_work_dir(staging / WORK_DIR)
        return build.commit()


def _hook_sanity(
    sides: dict[str, HarvestSide],
    docs: list[str],
    settings: HarvestSettings,
    device: Any,
    progress: ProgressFn,
) -> dict[str, list[dict[str, Any]]]:
    sanity_settings = HarvestSettings(
        max_tokens=settings.sanity_tokens, max_len=settings.max_len, mask_special=settings.mask_special
    )
    if same_tokenizer(sides["a"].model.tokenizer, sides["b"].model.tokenizer):
        shared = tokenize_windows(sides["a"].model.tokenizer, docs, sanity_settings)
        sanity_windows = {name: shared for name in sides}
    else:
        # each model's own tokens of the shared windows (a causal model's position 0 left out)
        planned, _ = plan_aligned_windows({n: side.model for n, side in sides.items()}, docs, sanity_settings)
        sanity_windows = {name: [w.sides[name] for w in planned] for name in sides}
    sanity = {}
    for i, (name, side) in enumerate(sides.items()):
        progress("hook sanity", i, len(sides))
        sanity[name] = hook_sanity(side, sanity_windows[name], settings, device)
    progress("hook sanity", len(sides), len(sides))
    return sanity


def unembedding(model: LoadedModel) -> Any:
    """The model's unembedding with a token string per row (rows past the tokenizer get a placeholder)."""
    from core.dashboards.logits import Unembedding

    w_u = model.unembedding()
    if w_u is None:
        raise ValueError(f"{model.name} has no unembedding (only causal LMs do)")
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(w_u.shape[0])))
    return Unembedding(w_u, tuple(t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)))
