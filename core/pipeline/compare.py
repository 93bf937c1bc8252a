"""Build a comparison bundle from two side specs and a corpus (what ``python -m core compare`` runs)."""

from __future__ import annotations

import importlib.metadata as metadata
import platform
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from core.bundle.safety import inputs_of
from core.bundle.schema import WORK_DIRS
from core.bundle.writer import BundleWriter, OutputBuild
from core.device import resolve_device
from core.errors import SpecError
from core.harvest.corpus import read_corpus
from core.harvest.encode import HarvestSide
from core.harvest.features import compute_feature_frame, top_tokens_per_feature
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.run import harvest, remove_work_dir
from core.harvest.sanity import hook_sanity
from core.harvest.specs import CorpusSpec, HarvestSettings, SideSpec
from core.harvest.windows import plan_aligned_windows, same_tokenizer, tokenize_windows
from core.paths import hash_texts
from core.pipeline.costs import check_stage_costs
from core.pipeline.stages import STAGES, check_stage_names, run_stages
from core.progress import ProgressFn, no_progress
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
        harvest: how the models are run.
        extra: free-form manifest additions (the demo records its training report here).
    """

    a: SideSpec
    b: SideSpec
    corpus: CorpusSpec
    harvest: HarvestSettings = field(default_factory=HarvestSettings)
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


def local_inputs(spec: ComparisonSpec) -> list[tuple[str, str]]:
    """The run's inputs that are files or folders here (the output may never hold one).

    Args:
        spec: the comparison.

    Returns:
        (what, path) pairs, for example ``("the SAE of side A", "/data/sae")``.
    """
    found: list[tuple[str, str | None]] = []
    for name in SIDES:
        side: SideSpec = getattr(spec, name)
        if side.sae.kind != "release":
            found.append((f"the SAE of side {name.upper()}", side.sae.source))
        if side.model.kind in ("hf", "gguf", "onnx-bert"):
            found.append((f"the model of side {name.upper()}", side.model.source))
        found.append((f"the tokenizer of side {name.upper()}", side.model.tokenizer))
    if spec.corpus.kind == "file":
        found.append(("the corpus", spec.corpus.source))
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


def build_comparison(
    spec: ComparisonSpec,
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    stages: Sequence[str] = STAGES,
    stage_settings: dict[str, Any] | None = None,
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
        stages: the later stages to run on the new bundle (see ``core.pipeline.stages``).
        stage_settings: stage name -> settings object.

    Returns:
        The bundle folder.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    build = OutputBuild(out, overwrite, inputs=local_inputs(spec))
    stages = check_stage_names(stages)
    device = resolve_device(spec.harvest.device)
    models: dict[Any, LoadedModel] = {}
    sides: dict[str, HarvestSide] = {}
    for name, side_spec in (("a", spec.a), ("b", spec.b)):
        progress(f"loading side {name}", 0, 0)
        if side_spec.model not in models:
            models[side_spec.model] = load_model(side_spec.model, device)
        model = models[side_spec.model]
        check_positions(model, spec.harvest.max_len, name)
        sae = load_sae(side_spec.sae, device)
        hook_name = side_spec.hook or sae.hook_name
        if not hook_name:
            raise SpecError(
                f"The SAE of side {name} records no hook; pass its hook (for example blocks.3.hook_resid_post)."
            )
        sides[name] = HarvestSide(model, sae, model.hook(hook_name))
    timings["load_s"] = time.perf_counter() - t0
    corpus = read_corpus(spec.corpus)
    docs = corpus.docs
    # a stage setting that cannot fit is refused now, not after the harvest
    check_stage_costs(
        {name: (stage_settings or {}).get(name) for name in stages}, sides["a"].sae.d_sae, sides["b"].sae.d_sae
    )

    with build:
        staging = build.staging
        t1 = time.perf_counter()
        sanity = _hook_sanity(sides, docs, spec.harvest, device, progress)
        timings["sanity_s"] = time.perf_counter() - t1

        t2 = time.perf_counter()
        result = harvest(sides, docs, spec.harvest, staging / WORK_DIR, device, progress)
        timings["harvest_s"] = time.perf_counter() - t2

        t3 = time.perf_counter()
        writer = BundleWriter(staging)
        units = result.units
        writer.write_units(units)
        used_docs = np.unique(units["doc"].to_numpy())
        writer.write_docs(pl.DataFrame({"doc": used_docs, "text": [docs[int(d)] for d in used_docs]}))
        unit_text = units["text"].to_list()
        for name, side in sides.items():
            progress(f"features {name}", 0, 0)
            writer.write_codes(name, result.codes[name])
            writer.write_decoder(name, side.sae.decoder().numpy())
            tops = top_tokens_per_feature(result.codes[name], unit_text)
            writer.write_features(name, compute_feature_frame(result.moments[name], units.height, tops))
        timings["write_s"] = time.perf_counter() - t3
        timings["total_s"] = time.perf_counter() - t0

        manifest = {
            "sides": {
                name: {
                    "label": getattr(spec, name).label or f"{side.model.name} {side.hook.name}",
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
                **spec.corpus.to_dict(),
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
            "settings": {"harvest": spec.harvest.to_dict(), "device": str(device)},
            "versions": package_versions(),
            "timings": {**timings, "tokens_per_s": units.height / max(timings["harvest_s"], 1e-9)},
            "harvest": {"n_shards": result.n_shards, "resumed_shards": result.resumed_shards},
            **dict(spec.extra),
        }
        writer.finalize(manifest)
        unembeddings = {name: unembedding(side.model) for name, side in sides.items() if side.model.is_causal}
        # the stages run on the staging copy too: a failing stage leaves the old bundle whole
        run_stages(staging, stages, stage_settings, str(device), progress, unembeddings)
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
    for name, side in sides.items():
        progress(f"hook sanity {name}", 0, 0)
        sanity[name] = hook_sanity(side, sanity_windows[name], settings, device)
    return sanity


def unembedding(model: LoadedModel) -> Any:
    """The model's unembedding with a token string per row (rows past the tokenizer get a placeholder)."""
    from core.dashboards.logits import Unembedding

    w_u = model.unembedding()
    if w_u is None:
        raise ValueError(f"{model.name} has no unembedding (only causal LMs do)")
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(w_u.shape[0])))
    return Unembedding(w_u, tuple(t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)))
