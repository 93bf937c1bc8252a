"""Layer x layer sweeps: pair every SAE of side A with every SAE of side B and compare.

Each model runs once per batch over the shared text, with every SAE reading it encoded
from that one pass (``core.harvest.encode_windows``). Each cell is paired by exact correlation
and a greedy 1-1 (by B id) after the threshold and non-concept filters on the harvest's top
tokens: neither matching preset (no significance rule, and the threshold comes before the
de-duplication, unlike the ``paper`` preset), so a cell's pairs can differ from a bundle's; it
is then measured with ``core.similarity.compute_layer_sweep`` (metric, permutation null, p,
adjusted p across cells).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import polars as pl
import torch

from core.bundle.codes import SparseCodes
from core.bundle.io import write_json_atomic, write_parquet_atomic
from core.bundle.reader import open_bundle
from core.bundle.safety import OutputKind, inputs_of
from core.bundle.writer import OutputBuild, add_parts
from core.device import resolve_device
from core.errors import BundleError, SpecError
from core.harvest.corpus import load_corpus
from core.harvest.encode import encode_windows
from core.harvest.features import top_tokens_per_feature
from core.harvest.loading import check_sae_fits, load_model, load_sae
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec
from core.harvest.windows import check_same_tokenizer, tokenize_windows, units_frame
from core.matching.assign import compute_assignment, greedy_one_to_one
from core.matching.correlate import compute_correlation
from core.matching.filters import apply_filters, compute_side_flags
from core.pipeline.compare import package_versions
from core.pipeline.config import SWEEP_MAX_TOKENS, SWEEP_METRICS
from core.progress import ProgressFn, no_progress
from core.spaces.settings import SimilaritySettings
from core.spaces.sweep import compute_layer_sweep
from core.tokens import load_nonconcept_tokens

SWEEP_KIND = "featurebridge-sweep"
# a sweep folder: the table and its record, nothing else (the deletion policy's notion of "ours")
SWEEP_OUTPUT = OutputKind("sweep folder", "sweep.json", SWEEP_KIND, frozenset({"sweep.json", "sweep.parquet"}))


@dataclass(frozen=True)
class SweepSide:
    """One side of a sweep: a model and the SAEs (one per layer) that read it.

    Attributes:
        model: the model spec.
        saes: one SAE per layer, in display order.
        hooks: a hook per SAE (empty: each SAE's own hook).
        labels: a display label per SAE (empty: its hook).
    """

    model: ModelSpec
    saes: tuple[SAESpec, ...]
    hooks: tuple[str | None, ...] = ()
    labels: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.saes:
            raise SpecError("A sweep side needs at least one SAE.")
        if self.hooks and len(self.hooks) != len(self.saes):
            raise SpecError("Give one hook per SAE, or none to use each SAE's own hook.")
        if self.labels and len(self.labels) != len(self.saes):
            raise SpecError("Give one label per SAE, or none.")


@dataclass(frozen=True)
class SweepSpec:
    """A layer x layer sweep.

    Attributes:
        a: side A.
        b: side B.
        corpus: the shared text.
        harvest: how the models are run (``max_tokens`` bounds the sweep's cost).
        top_k: partners kept per feature while pairing.
        min_corr: correlation a pair must exceed to be kept (the paper's 0.1).
        similarity: metrics and nulls per cell.
    """

    a: SweepSide
    b: SweepSide
    corpus: CorpusSpec
    harvest: HarvestSettings = field(default_factory=lambda: HarvestSettings(max_tokens=SWEEP_MAX_TOKENS))
    top_k: int = 5
    min_corr: float = 0.1
    similarity: SimilaritySettings = field(default_factory=lambda: SimilaritySettings(metrics=SWEEP_METRICS))


def compute_pairing(
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    features_a: pl.DataFrame,
    features_b: pl.DataFrame,
    top_k: int,
    min_corr: float,
    device: torch.device,
) -> pl.DataFrame:
    """One cell's pairing: greedy 1-1 after the threshold and non-concept filters (see the module docstring).

    Args:
        codes_a: codes of the A SAE.
        codes_b: codes of the B SAE on the same units.
        features_a: ``feature``, ``top_tokens`` of A (for the non-concept filter).
        features_b: the same for B.
        top_k: partners kept per feature.
        min_corr: correlation threshold.
        device: where to correlate.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``, ``kept``, ``reason``.
    """
    result = compute_correlation(
        codes_a, codes_b, top_k=min(top_k, codes_a.n_features, codes_b.n_features), device=device
    )
    tokens = load_nonconcept_tokens()
    flags_a = compute_side_flags(result.moments_a, features_a, tokens)
    flags_b = compute_side_flags(result.moments_b, features_b, tokens)
    pairs = compute_assignment("greedy", result.ab, result.ba)
    return greedy_one_to_one(apply_filters(pairs, flags_a, flags_b, min_corr)).select(
        "feature_a", "feature_b", "corr", "kept", "reason"
    )


def build_sweep(
    spec: SweepSpec,
    out: str | Path,
    overwrite: bool = False,
    device: str = "auto",
    progress: ProgressFn = no_progress,
) -> pl.DataFrame:
    """Run a sweep and write ``sweep.parquet`` and ``sweep.json`` into ``out``.

    Args:
        spec: the sweep.
        out: output folder (absent, empty, or with ``overwrite`` a sweep folder this tool wrote;
            written beside and swapped in whole, see ``core.bundle.safety``).
        overwrite: replace a sweep folder this tool wrote.
        device: ``auto``, ``cpu`` or ``cuda``.
        progress: progress callback.

    Returns:
        The sweep table (one row per layer pair and metric).
    """
    t0 = time.perf_counter()
    found = [(f"an SAE of side {n.upper()}", sae.source) for n in ("a", "b") for sae in getattr(spec, n).saes]
    found += [(f"the model of side {n.upper()}", getattr(spec, n).model.source) for n in ("a", "b")]
    if spec.corpus.kind == "file":
        found.append(("the corpus", spec.corpus.source))
    build = OutputBuild(out, overwrite, SWEEP_OUTPUT, inputs_of(found))
    torch_device = resolve_device(device)
    docs = load_corpus(spec.corpus)
    models = {"a": load_model(spec.a.model, torch_device)}
    models["b"] = models["a"] if spec.b.model == spec.a.model else load_model(spec.b.model, torch_device)
    check_same_tokenizer(models["a"].tokenizer, models["b"].tokenizer)
    windows = tokenize_windows(models["a"].tokenizer, docs, spec.harvest)
    unit_text = units_frame(windows, docs)["text"].to_list()
    codes, decoders, features, labels = {}, {}, {}, {}
    for name, side in (("a", spec.a), ("b", spec.b)):
        model = models[name]
        saes = [load_sae(s, torch_device) for s in side.saes]
        hooks = [
            model.hook(h or sae.hook_name or "") for h, sae in zip(side.hooks or [None] * len(saes), saes, strict=True)
        ]
        for sae, hook in zip(saes, hooks, strict=True):
            check_sae_fits(sae, model, hook)
        codes[name] = encode_windows(
            model, list(zip(saes, hooks, strict=True)), windows, spec.harvest, torch_device, progress
        )
        decoders[name] = [sae.decoder().numpy() for sae in saes]
        features[name] = [
            pl.DataFrame({"feature": range(c.n_features), "top_tokens": top_tokens_per_feature(c, unit_text)})
            for c in codes[name]
        ]
        labels[name] = list(side.labels) or [h.name for h in hooks]
    pairing = [
        [
            compute_pairing(ca, cb, fa, fb, spec.top_k, spec.min_corr, torch_device)
            for cb, fb in zip(codes["b"], features["b"], strict=True)
        ]
        for ca, fa in zip(codes["a"], features["a"], strict=True)
    ]
    table = compute_layer_sweep(
        decoders["a"], decoders["b"], pairing, spec.similarity, torch_device, progress, labels["a"], labels["b"]
    )
    kept = pl.DataFrame(
        [
            {
                "layer_a": i,
                "layer_b": j,
                "mean_matched_corr": float(p.filter("kept").select(pl.col("corr").mean()).item() or 0.0),
            }
            for i, row in enumerate(pairing)
            for j, p in enumerate(row)
        ]
    )
    table = table.join(kept, on=["layer_a", "layer_b"], how="left")
    with build:
        write_parquet_atomic(table, build.staging / "sweep.parquet")
        write_json_atomic(
            {
                "kind": SWEEP_KIND,
                "spec": asdict(spec),
                "n_units": len(unit_text),
                "versions": package_versions(),
                "timings": {"total_s": time.perf_counter() - t0},
            },
            build.staging / "sweep.json",
        )
        build.commit()
    return table


def attach_sweep(bundle_path: str | Path, table: pl.DataFrame) -> None:
    """Put a sweep table into a bundle's similarity.json (``sweep`` rows), where the app looks for it.

    Args:
        bundle_path: a bundle that already has its similarity part.
        table: the table :func:`build_sweep` returned.
    """
    bundle = open_bundle(bundle_path)
    if not bundle.has("similarity"):
        raise BundleError(
            f"Bundle {bundle.path} has no similarity part to attach a sweep to; run `python -m core similarity` first."
        )
    body = bundle.similarity_json()
    body["sweep"] = table.to_dicts()
    add_parts(bundle.path, json_files={"similarity.json": body})
