"""The Python front door's functions: ``core.compare``, ``core.match_codes``, ``core.similarity``.

``core/__init__.py`` re-exports these (lazily, so ``import core`` loads no torch); the CLI
(``core/cli``) and the app's build form call them too, so a notebook, the command line and
the app run the same code with the same defaults (:class:`~core.pipeline.config.ComparisonConfig`).
"""

from __future__ import annotations

import dataclasses
import logging
import uuid
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.reader import Bundle, open_bundle
from core.bundle.results import SimilarityReport
from core.engine.settings import EngineSettings
from core.errors import SpecError
from core.harvest.specs import CorpusSpec
from core.matching.settings import MatchSettings
from core.matching.stage import MatchResult, compute_matching
from core.paths import cache_dir
from core.pipeline.compare import run_comparison
from core.pipeline.config import ComparisonConfig
from core.progress import ProgressFn, no_progress
from core.spaces.compute import P_VALUE_RULE, compute_similarity
from core.spaces.settings import METRICS, SimilaritySettings

logger = logging.getLogger(__name__)


def fresh_bundle_dir() -> Path:
    """A new folder name for a bundle under the cache (``<cache>/bundles/<time>-<id>``; the build creates it)."""
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    return cache_dir("bundles") / f"{stamp}-{uuid.uuid4().hex[:8]}"


def compare(
    sae_a: Any,
    model_a: Any,
    sae_b: Any,
    model_b: Any,
    texts: str | Path | CorpusSpec | Sequence[str],
    out: str | Path | None = None,
    settings: ComparisonConfig | None = None,
    *,
    hook_a: str | None = None,
    hook_b: str | None = None,
    label_a: str = "",
    label_b: str = "",
    overwrite: bool = False,
    progress: ProgressFn | None = None,
    engine: EngineSettings | None = None,
    resume: bool = False,
) -> Bundle:
    """Compare two SAEs: run both models over the same text, harvest the codes, run the stages, return the bundle.

    Each SAE and model may be named or passed in memory:

    - SAE: a folder or spec string (``local:DIR``, ``sparsify:DIR``, ``release:REL/ID``), a
      :class:`~core.harvest.specs.SAESpec`, or a ``sae_lens.SAE`` object;
    - model: a hub id, folder or spec string (``gguf:FILE``, ``onnx-bert:FILE``, ...), a
      :class:`~core.harvest.specs.ModelSpec`, a transformers model (its tokenizer is loaded
      from ``model.name_or_path``), or a ``(model, tokenizer)`` pair.

    In-memory objects are moved to the run's device and put in eval mode in place (SAEs also
    to float32); the bundle records them as kind ``memory`` with a fingerprint of their weights,
    so the app can browse the bundle but cannot reload those models for live text.

    Args:
        sae_a: side A's SAE.
        model_a: the model SAE A reads.
        sae_b: side B's SAE.
        model_b: the model SAE B reads (the same object or name as ``model_a`` loads once).
        texts: a corpus spec (``fortunes``, ``kjv``, ``file:PATH``, ``hf:NAME``), a
            :class:`~core.harvest.specs.CorpusSpec`, or the documents as a list of strings.
        out: the bundle folder (absent, empty, or with ``overwrite`` a bundle this tool wrote);
            ``None`` writes to a fresh folder under the cache (``$FEATUREBRIDGE_CACHE/bundles/``),
            which the returned bundle's ``path`` names.
        settings: the run's :class:`~core.pipeline.config.ComparisonConfig` (harvest, every
            stage's settings, which stages run); ``None`` for the defaults.
        hook_a: the hook SAE A reads (``None``: the one its config records).
        hook_b: the hook SAE B reads.
        label_a: display name of side A ("" : model name and hook).
        label_b: display name of side B.
        overwrite: replace a bundle this tool wrote at ``out``.
        progress: progress callback ``(stage, done, total)``.
        engine: who runs the harvest's shards and the correlation reduce
            (:class:`~core.engine.settings.EngineSettings`; ``None``: this process).
        resume: rebuild an interrupted build's shards whose inputs changed (shards of unchanged
            inputs are always reused).

    Returns:
        The opened :class:`~core.bundle.reader.Bundle`.
    """
    config = settings if settings is not None else ComparisonConfig()
    if not isinstance(config, ComparisonConfig):
        raise SpecError(f"settings must be a core.ComparisonConfig, got {type(config).__name__}.")
    progress = progress or no_progress
    path = fresh_bundle_dir() if out is None else out
    logger.info("writing the comparison bundle to %s", path)
    built = run_comparison(
        {"a": (model_a, sae_a, hook_a), "b": (model_b, sae_b, hook_b)},
        texts,
        path,
        config,
        overwrite=overwrite,
        progress=progress,
        labels={"a": label_a, "b": label_b},
        resume=resume,
        engine=engine,
    )
    return open_bundle(built)


def match_codes(
    codes_a: Any,
    codes_b: Any,
    docs: Any = None,
    settings: MatchSettings | None = None,
    *,
    decoder_a: Any = None,
    decoder_b: Any = None,
    features_a: pl.DataFrame | Sequence[Sequence[str]] | None = None,
    features_b: pl.DataFrame | Sequence[Sequence[str]] | None = None,
    unit_text: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
) -> MatchResult:
    """Match two SAEs' codes in memory: the whole matching stage a bundle build runs, without a bundle.

    Exact Pearson correlation of every pair (top-k both ways), the document-stratified
    significance test, the filters (dead, always-on, non-concept, threshold), every pairing
    method (the chosen one in ``assignment``), splits, orphans and the summary; decoder cosine
    and weight matches when both decoders are given and share ``d_in``.

    Args:
        codes_a: SAE A's codes [n_units, Fa]: ``core.SparseCodes``, scipy sparse, numpy or torch.
        codes_b: SAE B's codes on the same units [n_units, Fb].
        docs: each unit's document id (int [n_units]) for the significance test; ``None``
            treats all units as one document.
        settings: :class:`~core.matching.settings.MatchSettings` (``None``: defaults).
        decoder_a: SAE A's ``W_dec`` [Fa, d_in] (numpy or torch), for cosines.
        decoder_b: SAE B's ``W_dec`` [Fb, d_in].
        features_a: A's top tokens (frame with ``feature``, ``top_tokens``, or one list per
            feature) for the non-concept and shared-token filters.
        features_b: B's top tokens.
        unit_text: each unit's text, to compute top tokens when ``features_*`` are not given.
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        progress: progress callback.

    Returns:
        The :class:`~core.matching.stage.MatchResult` (``matches``, ``assignment``,
        ``weight_matches``, ``splits``, ``orphans`` frames and the ``summary``).
    """
    return compute_matching(
        codes_a,
        codes_b,
        docs,
        settings,
        decoder_a=decoder_a,
        decoder_b=decoder_b,
        features_a=features_a,
        features_b=features_b,
        unit_text=unit_text,
        device=device,
        progress=progress,
    )


def similarity(
    x: Any,
    y: Any,
    metrics: Sequence[str] | str | None = None,
    n_null: int | None = None,
    seed: int | None = None,
    settings: SimilaritySettings | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
) -> SimilarityReport:
    """How similar two paired spaces are: SVCCA, RSA, CKA, Procrustes, each against a permutation null.

    Row ``i`` of ``x`` is paired with row ``i`` of ``y`` (for SAEs: the decoder rows of matched
    features, ``W_dec_a[pairs.feature_a]`` and ``W_dec_b[pairs.feature_b]``). The null shuffles
    the pairing; ``p = (b + 1) / (n + 1)`` with ``b`` the null samples at or above the value.

    Args:
        x: [n, d_a] rows (numpy or torch).
        y: [n, d_b] rows, paired with ``x`` by row.
        metrics: a subset of ``svcca``, ``svcca_paper``, ``rsa``, ``cka``, ``procrustes``
            (``None``: all of them).
        n_null: permutation null samples per metric (``None``: the settings'; 0 skips the null).
        seed: seed of the permutations (``None``: the settings').
        settings: :class:`~core.spaces.settings.SimilaritySettings` for the finer knobs
            (variance kept by SVCCA, RSA subsample, ...); the arguments above override it.
        device: ``auto``, ``cpu``, ``cuda`` or a torch device.
        progress: progress callback.

    Returns:
        The :class:`~core.bundle.results.SimilarityReport` (``.metrics`` frame with value,
        null mean/std, n_null, p_value per metric; ``.metric("svcca")`` one of them).
    """
    base = settings if settings is not None else SimilaritySettings(metrics=METRICS)
    if isinstance(metrics, str):
        metrics = (metrics,)
    bad = [m for m in (metrics or ()) if m not in METRICS]
    if bad:
        raise SpecError(
            f"Metric {bad[0]!r} is not one core.similarity computes on paired rows; choose from {', '.join(METRICS)}."
        )
    changes: dict[str, Any] = {"metrics": tuple(metrics) if metrics else base.decoder_metrics}
    if n_null is not None:
        changes["n_null"] = n_null
    if seed is not None:
        changes["seed"] = seed
    chosen = dataclasses.replace(base, **changes)
    x, y = _rows(x), _rows(y)
    results = compute_similarity(x, y, chosen, device, progress)
    n_pairs = int(x.shape[0])
    return SimilarityReport.from_json(
        {
            "metrics": {m: r.to_json(chosen.ci_level) for m, r in results.items()},
            "n_pairs": n_pairs,
            "p_value_rule": P_VALUE_RULE,
            "settings": chosen.to_dict(),
        }
    )


def _rows(rows: Any) -> np.ndarray:
    if hasattr(rows, "detach") and hasattr(rows, "cpu"):
        rows = rows.detach().cpu().double().numpy()
    return np.asarray(rows, dtype=np.float64)
