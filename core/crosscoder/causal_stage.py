"""The causal stage: the causal check (``core.crosscoder.causal``) on a bundle's shared latents or kept pairs.

Loads the bundle's two models (and its crosscoder, or its two SAEs) from the specs the
manifest records, draws the probes from the bundle's documents, and writes ``causal.parquet``:
one row per checked latent or pair with ``feature_a``, ``feature_b``, ``cos`` (decoder cosine),
``corr``, ``tag`` (crosscoder latents), ``equivalence``, ``p_value``, ``status``, the counts and
both shift vectors; the manifest's ``causal`` key records the settings, each side's measure,
the probes (document, first character, length) and the median equivalence.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.crosscoder.causal import (
    CrosscoderLatents,
    LatentSource,
    SAEPairs,
    compute_equivalence,
    compute_shifts,
    draw_probes,
)
from core.crosscoder.checkpoint import load_checkpoint
from core.crosscoder.model import Crosscoder, InputScaling
from core.crosscoder.settings import CausalSettings
from core.device import resolve_device
from core.errors import BundleError, SpecError
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.specs import ModelSpec, SAESpec
from core.progress import ProgressFn, no_progress
from core.sides import SIDES


def _models(bundle: Bundle, device: torch.device) -> dict[str, LoadedModel]:
    loaded: dict[ModelSpec, LoadedModel] = {}
    out = {}
    for side in SIDES:
        m = bundle.side(side)["model"]
        spec = ModelSpec(m["kind"], m["source"], m.get("tokenizer"))
        if spec not in loaded:
            loaded[spec] = load_model(spec, device)
        out[side] = loaded[spec]
    return out


def load_bundle_crosscoder(bundle: Bundle, device: torch.device) -> Crosscoder:
    """The crosscoder a bundle was built from, with the input scaling it recorded."""
    record = bundle.manifest["crosscoder"]
    weights = load_checkpoint(record["spec"]["path"], record["spec"]["format"])
    scaling = record["scaling"]
    mean = weights.normaliser_mean if scaling["a"].get("centred") else None
    return Crosscoder(
        weights,
        InputScaling(
            tuple(float(scaling[s]["scale"]) for s in SIDES), tuple(scaling[s]["source"] for s in SIDES), mean
        ),
        device,
    )


def select_pairs(bundle: Bundle, settings: CausalSettings) -> tuple[pl.DataFrame, str]:
    """The latents or pairs to check, and the selection used.

    Crosscoder bundles: ``shared`` latents (analyses part, threshold tags) or every ``live``
    latent, most frequently firing first. SAE bundles: ``kept_pairs`` of the assignment,
    highest correlation first. The first ``top_n`` are checked.

    Returns:
        (``feature_a``, ``feature_b``, ``cos``, ``corr``, ``tag``; the selection name).
    """
    crosscoder = "crosscoder" in bundle.manifest
    select = settings.select or ("shared" if crosscoder else "kept_pairs")
    if crosscoder and select == "kept_pairs" or not crosscoder and select != "kept_pairs":
        kind = "a crosscoder" if crosscoder else "two SAEs"
        raise SpecError(f"Causal selection {select!r} does not apply to a bundle of {kind}; leave select unset.")
    if not bundle.has("assignment"):
        raise BundleError(
            f"Bundle {bundle.path} has no assignment yet; run its matching stage before the causal check."
        )
    pairs = bundle.assignment().collect()
    names = pairs.columns
    base = pairs.select(
        pl.col("feature_a").cast(pl.Int64),
        pl.col("feature_b").cast(pl.Int64),
        (pl.col("cos") if "cos" in names else pl.lit(None)).cast(pl.Float64).alias("cos"),
        pl.col("corr").cast(pl.Float64),
        pl.col("kept").fill_null(False),
    )
    if not crosscoder:
        chosen = base.filter(pl.col("kept")).sort("corr", descending=True, nulls_last=True).head(settings.top_n)
        return chosen.drop("kept").with_columns(tag=pl.lit(None, pl.String)), select
    if not bundle.has("analyses"):
        raise BundleError(f"Bundle {bundle.path} has no analyses yet; run `python -m core analyses BUNDLE` first.")
    analyses = bundle.scan("analyses.parquet").select("latent", "fire", "is_dead", "tag_threshold").collect()
    frame = base.join(analyses.rename({"latent": "feature_a"}), on="feature_a", how="left")
    frame = frame.filter(~pl.col("is_dead"))
    if select == "shared":
        frame = frame.filter(pl.col("tag_threshold") == "shared")
    chosen = frame.sort(["fire", "feature_a"], descending=[True, False]).head(settings.top_n)
    return chosen.select(
        "feature_a", "feature_b", "cos", "corr", pl.col("tag_threshold").cast(pl.String).alias("tag")
    ), select


def build_causal(
    bundle_path: str | Path,
    settings: CausalSettings | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
) -> Bundle:
    """Run the causal check on a bundle and add its ``causal`` part.

    Args:
        bundle_path: a crosscoder bundle (with analyses) or an SAE bundle (with an assignment).
        settings: what to check and how (defaults if ``None``).
        device: ``auto``, ``cpu`` or ``cuda`` (``settings.device`` when this is ``auto``).
        progress: progress callback (stages ``loading models``, ``causal``).

    Returns:
        The bundle, reopened.
    """
    settings = settings or CausalSettings()
    progress = progress or no_progress
    device = resolve_device(settings.device if str(device) == "auto" else str(device))
    started = time.perf_counter()
    bundle = open_bundle(bundle_path)
    chosen, select = select_pairs(bundle, settings)
    if chosen.height == 0:
        raise BundleError(f"Bundle {bundle.path} has no {select.replace('_', ' ')} latents or pairs to check.")
    progress("loading models", 0, 0)
    models = _models(bundle, device)
    hooks = {s: models[s].hook(bundle.side(s)["hook"]) for s in SIDES}
    source: LatentSource
    if "crosscoder" in bundle.manifest:
        source = CrosscoderLatents(load_bundle_crosscoder(bundle, device), chosen["feature_a"].to_list())
    else:
        saes = {}
        for s in SIDES:
            spec = bundle.side(s)["sae"]["spec"]
            saes[s] = load_sae(SAESpec(spec["kind"], spec["source"], spec.get("sae_id")), device)
        source = SAEPairs(saes, {"a": chosen["feature_a"].to_list(), "b": chosen["feature_b"].to_list()})
    docs = bundle.docs().select("doc", "text").sort("doc").collect()
    probes = draw_probes(
        docs["text"].to_list(), docs["doc"].to_list(), {s: models[s].tokenizer for s in SIDES}, settings
    )
    loaded_s = time.perf_counter() - started
    shifts = compute_shifts(models, hooks, source, probes, settings, device, progress)
    frame = pl.concat([chosen, compute_equivalence(shifts, settings)], how="horizontal")
    ok = frame.filter(pl.col("status") == "ok")["equivalence"]
    record: dict[str, Any] = {
        "settings": settings.to_dict(),
        "select": select,
        "measure": shifts.measure,
        "n_checked": frame.height,
        "n_ok": int(ok.len()),
        "statuses": {k: int(v) for k, v in frame["status"].value_counts().iter_rows()},
        "median_equivalence": float(np.median(ok.to_numpy())) if ok.len() else None,
        "n_probes": len(probes),
        "probes": [[p.doc, p.char_start, len(p.text)] for p in probes],
        "device": str(device),
        "timings_s": {"load": round(loaded_s, 3), "total": round(time.perf_counter() - started, 3)},
    }
    if "crosscoder" in bundle.manifest:
        shared = frame.filter((pl.col("status") == "ok") & (pl.col("tag") == "shared"))["equivalence"]
        record["median_equivalence_shared"] = float(np.median(shared.to_numpy())) if shared.len() else None
    significant = frame.filter(pl.col("p_value") <= 0.05).height
    record["n_p_below_0.05"] = int(significant)
    return add_parts(bundle.path, frames={"causal.parquet": frame}, manifest_updates={"causal": record})
