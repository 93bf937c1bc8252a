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

from core.bundle.writer import BundleWriter, prepare_output_dir
from core.device import resolve_device
from core.errors import SpecError
from core.harvest.corpus import load_corpus
from core.harvest.encode import HarvestSide
from core.harvest.features import compute_feature_frame, top_tokens_per_feature
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.run import harvest, remove_work_dir
from core.harvest.sanity import hook_sanity
from core.harvest.specs import CorpusSpec, HarvestSettings, SideSpec
from core.harvest.windows import plan_aligned_windows, same_tokenizer, tokenize_windows
from core.paths import hash_texts
from core.pipeline.stages import STAGES, run_stages
from core.progress import ProgressFn, in_phase, no_progress

VERSIONED = ("featurebridge", "torch", "transformers", "sae-lens", "numpy", "polars", "scipy", "safetensors")
# a neighbouring hook that reconstructs this much better than the configured one is flagged
SANITY_MARGIN = 0.05


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


def _describe_model(model: LoadedModel) -> dict[str, Any]:
    return {
        **asdict(model.spec),
        "name": model.name,
        "n_layers": model.n_layers,
        "d_model": model.d_model,
        "is_causal": model.is_causal,
        "architecture": type(model.model).__name__,
    }


def build_comparison(
    spec: ComparisonSpec,
    out: str | Path,
    overwrite: bool = False,
    progress: ProgressFn = no_progress,
    stages: Sequence[str] = STAGES,
    stage_settings: dict[str, Any] | None = None,
) -> Path:
    """Load both sides, harvest their codes on the same text, write the bundle, run the stages.

    Args:
        spec: what to compare.
        out: the bundle folder (must be empty, hold only an interrupted build, or
            ``overwrite`` must be set).
        overwrite: replace what the folder holds.
        progress: progress callback.
        stages: the later stages to run on the new bundle (see ``core.stages``).
        stage_settings: stage name -> settings object.

    Returns:
        The bundle folder.
    """
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    out = prepare_output_dir(out, overwrite)
    device = resolve_device(spec.harvest.device)
    models: dict[Any, LoadedModel] = {}
    sides: dict[str, HarvestSide] = {}
    stage_progress = progress
    progress = in_phase(progress, "harvest")
    for i, (name, side_spec) in enumerate((("a", spec.a), ("b", spec.b))):
        progress("loading models and SAEs", i, 2)
        if side_spec.model not in models:
            models[side_spec.model] = load_model(side_spec.model, device)
        model = models[side_spec.model]
        sae = load_sae(side_spec.sae, device)
        hook_name = side_spec.hook or sae.hook_name
        if not hook_name:
            raise SpecError(
                f"The SAE of side {name} records no hook; pass its hook (for example blocks.3.hook_resid_post)."
            )
        sides[name] = HarvestSide(model, sae, model.hook(hook_name))
    progress("loading models and SAEs", 2, 2)
    timings["load_s"] = time.perf_counter() - t0

    t1 = time.perf_counter()
    docs = load_corpus(spec.corpus)
    sanity_settings = HarvestSettings(
        max_tokens=spec.harvest.sanity_tokens, max_len=spec.harvest.max_len, mask_special=spec.harvest.mask_special
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
        sanity[name] = hook_sanity(side, sanity_windows[name], spec.harvest, device)
    progress("hook sanity", len(sides), len(sides))
    timings["sanity_s"] = time.perf_counter() - t1

    t2 = time.perf_counter()
    result = harvest(sides, docs, spec.harvest, out / ".work", device, progress)
    timings["harvest_s"] = time.perf_counter() - t2

    t3 = time.perf_counter()
    writer = BundleWriter(out)
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
                "label": getattr(spec, name).label or f"{side.model.name} {side.hook.name}",
                "model": _describe_model(side.model),
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
    remove_work_dir(out / ".work")
    unembeddings = {name: _unembedding(side.model) for name, side in sides.items() if side.model.is_causal}
    run_stages(out, stages, stage_settings, str(device), stage_progress, unembeddings)
    return out


def _unembedding(model: LoadedModel) -> Any:
    """The model's unembedding with a token string per row (rows past the tokenizer get a placeholder)."""
    from core.dashboards.logits import Unembedding

    w_u = model.unembedding()
    if w_u is None:
        raise ValueError(f"{model.name} has no unembedding (only causal LMs do)")
    tokens = model.tokenizer.convert_ids_to_tokens(list(range(w_u.shape[0])))
    return Unembedding(w_u, tuple(t if t is not None else f"<id {i}>" for i, t in enumerate(tokens)))
