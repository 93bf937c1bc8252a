"""The matching stage of a bundle: correlate, test, assign, filter; write matches and assignment.

:func:`build_matching` is the single entry point (the CLI's ``python -m core match BUNDLE``
and the demo build call it). It reads the codes, decoders, features and units of an opened
bundle and writes ``matches.parquet`` and ``assignment.parquet`` with the columns
ARCHITECTURE.md fixes (plus the extras listed below), recording the settings and a summary
under the manifest key ``"matching"``.

matches.parquet, one row per (feature, partner, direction), top-k both ways:
    feature_a, feature_b, direction ("a->b" / "b->a"), rank (1 = best), corr, cos (decoder
    cosine, null when d_in differ), jaccard, n_coactive, is_mutual (each is the other's best),
    and extras: in_both (the pair is in both directions' lists), n_a, n_b (firing counts),
    is_split (the row belongs to a 1 -> k split group), the null of every row (mu, k_over_mu,
    neglog10_p, flags), q and significant on each feature's chosen partner (per A feature for
    "a->b" rows, per B feature for "b->a" rows), and the evidence columns (token_overlap,
    n_shared_tokens, combined_score, note; core.matching.evidence).

assignment.parquet, one row per pair of the chosen method:
    feature_a, feature_b, method, corr, kept, reason (first reason dropped, null if kept),
    and extras: reasons (all of them), n_coactive, jaccard, cos, mu, k_over_mu, neglog10_p, q,
    significant, flags, and the evidence columns.

feature_tokens_a.parquet / feature_tokens_b.parquet, one row per feature: feature, n_top (its top
10% activations), tokens, counts (its 50 most frequent tokens there): what the evidence reads.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from core.bundle.codes import SparseCodes, as_sparse_codes
from core.bundle.reader import Bundle, open_bundle
from core.bundle.writer import add_parts
from core.device import resolve_device
from core.errors import MatchingError
from core.harvest.features import top_tokens_per_feature
from core.matching.assign import (
    compute_assignment,
    compute_orphans,
    compute_splits,
    hungarian_fits,
    summarize_pairs,
)
from core.matching.blocks import Correlator
from core.matching.correlate import CorrelationResult, TopK, compute_correlation, compute_pair_stats, jaccard
from core.matching.evidence import (
    EVIDENCE_COLUMNS,
    FeatureTokens,
    compute_feature_tokens,
    compute_pair_evidence,
    unit_token_ids,
)
from core.matching.filters import SideFlags, compute_side_flags
from core.matching.labels import VocabForms, bundle_vocab_forms, compute_side_labels, load_filter_tokens
from core.matching.presets import apply_pipeline
from core.matching.settings import ASSIGN_METHODS, MatchSettings
from core.matching.significance import (
    DocCounts,
    compute_document_counts,
    compute_pair_significance,
    compute_significance,
    k_over_mu,
    log_pvalues,
    pair_flags,
)
from core.matching.weights import compute_pair_cosine, compute_weight_matches
from core.progress import ProgressFn, no_progress
from core.sides import SIDES

# matches.parquet's core columns, in order (the evidence and significance columns follow them)
MATCH_COLUMNS = (
    "feature_a",
    "feature_b",
    "direction",
    "rank",
    "corr",
    "cos",
    "jaccard",
    "n_coactive",
    "is_mutual",
    "in_both",
    "n_a",
    "n_b",
)


@dataclass(frozen=True, eq=False)
class MatchResult:
    """The whole matching stage, in memory (what ``build_matching`` writes into a bundle).

    Attributes:
        matches: matches.parquet's rows (top-k both ways; columns in the module docstring).
        assignment: assignment.parquet's rows (the chosen method's pairs, kept or not, and why).
        weight_matches: decoder-cosine top-k both ways when both decoders share ``d_in``, else None.
        splits: 1 -> k split groups (``side``, ``feature``, ``partner``, ...).
        orphans: features without a partner above ``min_corr`` (``side``, ``feature``, ...).
        summary: counts per side, per pairing method, significance and splits (the manifest's
            ``matching.summary``).
        settings: the settings used.
        labels: side -> how its label lists were made (source, form, match; the manifest's
            ``matching.labels``).
        feature_tokens_a: A's most frequent tokens in each feature's top activations (what the
            evidence reads; feature_tokens_a.parquet), None without ``unit_text``.
        feature_tokens_b: B's, likewise.
        device: where the correlation ran.
        backend: what accumulated the co-activation sums (``numba`` or ``torch``).
        n_blocks: A-feature blocks streamed.
        timings: seconds per step (``correlate_s``, ``significance_s``, ``assign_s``, ``total_s``).
    """

    matches: pl.DataFrame
    assignment: pl.DataFrame
    weight_matches: pl.DataFrame | None
    splits: pl.DataFrame
    orphans: pl.DataFrame
    summary: dict[str, Any]
    settings: MatchSettings
    labels: dict[str, Any]
    feature_tokens_a: pl.DataFrame | None
    feature_tokens_b: pl.DataFrame | None
    device: str
    backend: str
    n_blocks: int
    timings: dict[str, float] = field(default_factory=dict)

    def record(self) -> dict[str, Any]:
        """The manifest's ``matching`` record: preset, settings, labels, device, backend, blocks, summary, timings."""
        return {
            "preset": self.settings.preset,
            "settings": self.settings.to_dict(),
            "labels": self.labels,
            "device": self.device,
            "backend": self.backend,
            "n_blocks": self.n_blocks,
            "summary": self.summary,
            "timings": {k: round(v, 3) for k, v in self.timings.items()},
        }


def compute_matching(
    codes_a: Any,
    codes_b: Any,
    docs: Any = None,
    settings: MatchSettings | None = None,
    decoder_a: Any = None,
    decoder_b: Any = None,
    features_a: pl.DataFrame | Sequence[Sequence[str]] | None = None,
    features_b: pl.DataFrame | Sequence[Sequence[str]] | None = None,
    unit_text: Sequence[str] | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    correlate: Callable[..., CorrelationResult] | None = None,
    vocab: Mapping[str, VocabForms] | None = None,
) -> MatchResult:
    """The whole matching stage on two code matrices: correlate, test, label, filter, assign, split, summarise.

    Args:
        codes_a: codes of SAE A [n_units, Fa]: :class:`~core.bundle.codes.SparseCodes`, a scipy
            sparse matrix, a dense numpy array or a torch tensor.
        codes_b: codes of SAE B on the same units [n_units, Fb], in any of those forms.
        docs: the document of each unit (int [n_units]) for the document-stratified
            significance test; None tests as if all units were one document.
        settings: the matching settings (defaults if None).
        decoder_a: ``W_dec`` of SAE A [Fa, d_in] (numpy or torch), for the ``cos`` columns and
            weight matches; None leaves cos null.
        decoder_b: ``W_dec`` of SAE B [Fb, d_in].
        features_a: A's top tokens for the ``top_tokens`` labels (non-concept and shared-token
            filters): a frame with ``feature`` and ``top_tokens``, or one token list per
            feature; None computes them from ``unit_text`` when given, else the labels are empty.
        features_b: B's, likewise.
        unit_text: the text of every unit: the top tokens when ``features_*`` are not given,
            the ``top_activations`` labels, and the evidence columns (token overlap, combined
            score), which are left out without it.
        device: "auto", "cpu", "cuda" (or "cuda:N"), or a torch device.
        progress: the progress callback (stages "correlate", "significance", "labels", "assign",
            "evidence").
        correlate: runs the correlation reduce elsewhere (called like :func:`compute_correlation`,
            e.g. an engine's row-block tasks); None runs :func:`compute_correlation` here.
        vocab: side -> the vocabulary form of units (``label_form="vocab"``); a side without
            one keeps the units' surface text, with a note in the labels record.

    Returns:
        The :class:`MatchResult`.
    """
    settings = settings or MatchSettings()
    progress = progress or no_progress
    device = resolve_device(device) if isinstance(device, str) else torch.device(device)
    started = time.perf_counter()
    codes_a, codes_b = as_sparse_codes(codes_a, "codes_a"), as_sparse_codes(codes_b, "codes_b")
    if codes_a.n_rows != codes_b.n_rows:
        raise MatchingError(
            f"codes_a has {codes_a.n_rows} units but codes_b has {codes_b.n_rows}; both must be codes of the same units."
        )
    dec_a, dec_b = _decoder(decoder_a, codes_a.n_features, "a"), _decoder(decoder_b, codes_b.n_features, "b")
    docs = _docs(docs, codes_a.n_rows)
    texts = _texts(unit_text, codes_a.n_rows)
    feats_a = _top_tokens_frame(features_a, codes_a, texts, "a")
    feats_b = _top_tokens_frame(features_b, codes_b, texts, "b")
    vocab = vocab or {}
    timings: dict[str, float] = {}

    t0 = time.perf_counter()
    keep_dense = hungarian_fits(codes_a.n_features, codes_b.n_features, settings.hungarian_max)
    result = (correlate or compute_correlation)(
        codes_a,
        codes_b,
        top_k=settings.top_k,
        memory_mb=settings.memory_mb,
        chunk_units=settings.chunk_units,
        device=device,
        keep_dense=keep_dense,
        progress=progress,
    )
    timings["correlate_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    progress("significance", 0, 1)
    doc_counts = compute_document_counts(codes_a, codes_b, docs)
    sig_rows, _ = compute_significance(
        result, None, None, docs, settings.sig_candidates, settings.alpha, doc_counts, "a->b"
    )
    sig_rows_ba, _ = compute_significance(
        result, None, None, docs, settings.sig_candidates, settings.alpha, doc_counts, "b->a"
    )
    progress("significance", 1, 1)
    timings["significance_s"] = time.perf_counter() - t0

    same_space = dec_a is not None and dec_b is not None and dec_a.shape[1] == dec_b.shape[1]
    splits = compute_splits(result.ab, result.ba, settings.split_min_corr)
    matches = build_matches_frame(result, dec_a if same_space else None, dec_b if same_space else None)
    matches = _attach_significance(matches, doc_counts, sig_rows, sig_rows_ba)
    matches = _attach_splits(matches, splits)

    t0 = time.perf_counter()
    progress("labels", 0, 2)
    labels_a = compute_side_labels(codes_a, feats_a, settings, texts, vocab.get("a"))
    progress("labels", 1, 2)
    labels_b = compute_side_labels(codes_b, feats_b, settings, texts, vocab.get("b"))
    progress("labels", 2, 2)
    timings["labels_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    tokens = load_filter_tokens(settings)
    flags_a = compute_side_flags(
        result.moments_a, nonconcept_tokens=tokens, max_freq=settings.max_freq, label_sets=labels_a.sets
    )
    flags_b = compute_side_flags(
        result.moments_b, nonconcept_tokens=tokens, max_freq=settings.max_freq, label_sets=labels_b.sets
    )
    methods = [m for m in ASSIGN_METHODS if m != "hungarian" or result.dense is not None]
    if settings.method not in methods:
        methods.append(settings.method)  # fails below with a clear message
    pairings = {
        method: compute_assignment(
            method, result.ab, result.ba, result.dense, unmatched_value=settings.sparse_unmatched_value
        )
        for method in methods
    }
    # exact counts of every pair of every method at once (Hungarian pairs can lie outside the top-k lists)
    union = pl.concat([p.select("feature_a", "feature_b") for p in pairings.values()]).unique()
    _, union_k = compute_pair_stats(
        codes_a,
        codes_b,
        result.moments_a,
        result.moments_b,
        union["feature_a"].to_numpy(),
        union["feature_b"].to_numpy(),
    )
    counts = union.with_columns(n_coactive=pl.Series(union_k, dtype=pl.Int64))
    summaries: dict[str, Any] = {}
    assignment: pl.DataFrame | None = None
    for done, method in enumerate(methods, start=1):
        progress("assign", done - 1, len(methods))
        frame = _full_assignment(
            pairings[method], method, result, counts, doc_counts, dec_a, dec_b, same_space, flags_a, flags_b, settings
        )
        if method == settings.method:
            assignment = frame
        summaries[method] = summarize_pairs(frame, method, settings.min_corr).to_dict()
    progress("assign", len(methods), len(methods))
    timings["assign_s"] = time.perf_counter() - t0
    assert assignment is not None

    tokens_a = tokens_b = None
    if texts is not None:
        t0 = time.perf_counter()
        progress("evidence", 0, 3)
        token_ids, token_vocab = unit_token_ids(pl.Series(texts, dtype=pl.String), settings.fold_case)
        tokens_a = compute_feature_tokens(codes_a, token_ids, token_vocab)
        progress("evidence", 1, 3)
        tokens_b = compute_feature_tokens(codes_b, token_ids, token_vocab)
        progress("evidence", 2, 3)
        matches = _with_evidence(matches, tokens_a, tokens_b)
        assignment = _with_evidence(assignment, tokens_a, tokens_b)
        progress("evidence", 3, 3)
        timings["evidence_s"] = time.perf_counter() - t0

    orphans = compute_orphans(result.ab, result.ba, flags_a.dead, flags_b.dead, settings.min_corr)
    summary = {
        "n_features_a": codes_a.n_features,
        "n_features_b": codes_b.n_features,
        "n_units": codes_a.n_rows,
        "n_dead_a": int(flags_a.dead.sum()),
        "n_dead_b": int(flags_b.dead.sum()),
        "n_always_on_a": int(flags_a.always_on.sum()),
        "n_always_on_b": int(flags_b.always_on.sum()),
        "n_nonconcept_a": int(flags_a.nonconcept.sum()),
        "n_nonconcept_b": int(flags_b.nonconcept.sum()),
        "best_a_to_b": summarize_pairs(
            compute_assignment("many_to_1_ab", result.ab, result.ba), "best_a->b", settings.min_corr
        ).to_dict(),
        "best_b_to_a": summarize_pairs(
            compute_assignment("many_to_1_ba", result.ab, result.ba), "best_b->a", settings.min_corr
        ).to_dict(),
        "methods": summaries,
        "significance": _significance_summary(sig_rows, settings),
        "significance_b_to_a": _significance_summary(sig_rows_ba, settings),
        "n_split_groups_a": int(splits.filter(pl.col("side") == "a")["feature"].n_unique()),
        "n_split_groups_b": int(splits.filter(pl.col("side") == "b")["feature"].n_unique()),
        "n_orphans_a": int((orphans["side"] == "a").sum()),
        "n_orphans_b": int((orphans["side"] == "b").sum()),
    }
    weight_matches = None
    if same_space and dec_a is not None and dec_b is not None:
        weight_matches = compute_weight_matches(dec_a, dec_b, settings.top_k, settings.memory_mb, device)
    timings["total_s"] = time.perf_counter() - started
    return MatchResult(
        matches=matches,
        assignment=assignment,
        weight_matches=weight_matches,
        splits=splits,
        orphans=orphans,
        summary=summary,
        settings=settings,
        labels={"a": labels_a.record, "b": labels_b.record},
        feature_tokens_a=None if tokens_a is None else tokens_a.to_frame(),
        feature_tokens_b=None if tokens_b is None else tokens_b.to_frame(),
        device=str(device),
        backend=result.backend,
        n_blocks=result.n_blocks,
        timings=timings,
    )


def build_matching(
    bundle_path: str | Path,
    settings: MatchSettings | None = None,
    device: str | torch.device = "auto",
    progress: ProgressFn | None = None,
    correlator: Correlator | None = None,
) -> Bundle:
    """(Re)compute a bundle's matches, assignment and feature tokens: read the bundle, :func:`compute_matching`, write.

    Args:
        bundle_path: a bundle folder holding at least units, codes, decoders and features.
        settings: the matching settings (defaults if None).
        device: "auto", "cpu", "cuda" (or "cuda:N"), or a torch device.
        progress: the progress callback (see :func:`compute_matching`).
        correlator: runs the correlation reduce elsewhere (an engine's row-block tasks, which
            may stream the bundle's codes files); None runs :func:`compute_correlation` here.

    Returns:
        The bundle, reopened with the new parts.
    """
    started = time.perf_counter()
    bundle = open_bundle(bundle_path)
    codes_a = bundle.codes("a")
    result = compute_matching(
        codes_a,
        bundle.codes("b"),
        docs=_unit_docs(bundle, codes_a.n_rows),
        settings=settings,
        decoder_a=bundle.decoder("a"),
        decoder_b=bundle.decoder("b"),
        features_a=_features(bundle, "a"),
        features_b=_features(bundle, "b"),
        unit_text=_unit_texts(bundle, codes_a.n_rows).to_list(),
        device=device,
        progress=progress,
        correlate=None if correlator is None else functools.partial(correlator, bundle.path),
        vocab={side: forms for side in SIDES if (forms := bundle_vocab_forms(bundle, side)) is not None},
    )
    frames = {"matches.parquet": result.matches, "assignment.parquet": result.assignment}
    if result.feature_tokens_a is not None and result.feature_tokens_b is not None:
        frames["feature_tokens_a.parquet"] = result.feature_tokens_a
        frames["feature_tokens_b.parquet"] = result.feature_tokens_b
    if result.weight_matches is not None:
        frames["weight_matches.parquet"] = result.weight_matches
    record = result.record()
    # the stage's total includes reading the bundle
    record["timings"]["total_s"] = round(time.perf_counter() - started, 3)
    return add_parts(bundle.path, frames=frames, manifest_updates={"matching": record})


def _decoder(decoder: Any, n_features: int, side: str) -> np.ndarray | None:
    if decoder is None:
        return None
    if hasattr(decoder, "detach") and hasattr(decoder, "cpu"):
        decoder = decoder.detach().float().cpu().numpy()
    dec = np.asarray(decoder, dtype=np.float32)
    if dec.ndim != 2 or dec.shape[0] != n_features:
        raise MatchingError(
            f"decoder_{side} has shape {dec.shape} but the codes have {n_features} features; pass W_dec [d_sae, d_in]."
        )
    return dec


def _docs(docs: Any, n_units: int) -> np.ndarray | None:
    if docs is None:
        return None
    out = np.asarray(docs)
    if out.shape != (n_units,) or not np.issubdtype(out.dtype, np.integer):
        raise MatchingError(
            f"docs must hold one integer document id per unit ({n_units}), got shape {out.shape} of {out.dtype}."
        )
    return out


def _texts(unit_text: Sequence[str] | None, n_units: int) -> list[str] | None:
    if unit_text is None:
        return None
    texts = [str(t) for t in unit_text]
    if len(texts) != n_units:
        raise MatchingError(f"unit_text holds {len(texts)} texts but the codes have {n_units} units.")
    return texts


def _top_tokens_frame(
    features: pl.DataFrame | Sequence[Sequence[str]] | None,
    codes: SparseCodes,
    texts: list[str] | None,
    side: str,
) -> pl.DataFrame | None:
    if features is None:
        if texts is None:
            return None
        features = top_tokens_per_feature(codes, texts)
    if isinstance(features, pl.DataFrame):
        return features
    tokens = [list(t) for t in features]
    if len(tokens) != codes.n_features:
        raise MatchingError(
            f"features_{side} lists top tokens for {len(tokens)} features but the codes have {codes.n_features}."
        )
    return pl.DataFrame(
        {"feature": np.arange(len(tokens), dtype=np.int64), "top_tokens": tokens},
        schema={"feature": pl.Int64, "top_tokens": pl.List(pl.String)},
    )


def _features(bundle: Bundle, side: str) -> pl.DataFrame | None:
    if not bundle.has("features"):
        return None
    frame = bundle.features(side)
    names = frame.collect_schema().names()
    if "top_tokens" not in names:
        return None
    return frame.select("feature", "top_tokens").collect()


def _unit_texts(bundle: Bundle, n_units: int) -> pl.Series:
    units = bundle.units().select("unit", "text").sort("unit").collect()
    if units.height != n_units:
        raise MatchingError(
            f"units.parquet lists {units.height} units but the codes hold {n_units}; rebuild the bundle."
        )
    return units["text"]


def _with_evidence(frame: pl.DataFrame, tokens_a: FeatureTokens, tokens_b: FeatureTokens) -> pl.DataFrame:
    """``frame`` (pairs with ``corr``) with the evidence columns of core.matching.evidence."""
    evidence = compute_pair_evidence(
        tokens_a, tokens_b, frame["feature_a"].to_numpy(), frame["feature_b"].to_numpy(), frame["corr"].to_numpy()
    )
    return frame.drop([c for c in EVIDENCE_COLUMNS if c in frame.columns]).hstack(evidence)


def _unit_docs(bundle: Bundle, n_units: int) -> np.ndarray | None:
    units = bundle.units().select("unit", "doc").sort("unit").collect()
    if units.height != n_units:
        raise MatchingError(
            f"units.parquet lists {units.height} units but the codes hold {n_units}; rebuild the bundle."
        )
    return units["doc"].to_numpy()


def build_matches_frame(
    result: CorrelationResult, dec_a: np.ndarray | None = None, dec_b: np.ndarray | None = None
) -> pl.DataFrame:
    """matches.parquet's core columns from a correlation result.

    Args:
        result: the correlation top-k.
        dec_a: ``W_dec`` of SAE A for the ``cos`` column (None: cos is null).
        dec_b: ``W_dec`` of SAE B.

    Returns:
        ``feature_a``, ``feature_b``, ``direction``, ``rank``, ``corr``, ``cos``, ``jaccard``,
        ``n_coactive``, ``is_mutual``, ``in_both``, ``n_a``, ``n_b``.
    """
    best_ab, best_ba = result.ab.index[:, 0], result.ba.index[:, 0]
    pair_keys = []
    parts = []
    for topk, direction in ((result.ab, "a->b"), (result.ba, "b->a")):
        n, k = topk.index.shape
        own = np.repeat(np.arange(n, dtype=np.int64), k)
        other = topk.index.reshape(-1)
        keep = other >= 0
        fa, fb = (own[keep], other[keep]) if direction == "a->b" else (other[keep], own[keep])
        pair_keys.append(fa * result.moments_b.n_features + fb)
        n_fire_a, n_fire_b = result.moments_a.n_fire[fa], result.moments_b.n_fire[fb]
        count = topk.count.reshape(-1)[keep]
        parts.append(
            pl.DataFrame(
                {
                    "feature_a": fa,
                    "feature_b": fb,
                    "direction": [direction] * fa.size,
                    "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep],
                    "corr": topk.score.reshape(-1)[keep],
                    "cos": (
                        compute_pair_cosine(dec_a, dec_b, fa, fb) if dec_a is not None and dec_b is not None else None
                    ),
                    "jaccard": jaccard(count, n_fire_a, n_fire_b),
                    "n_coactive": count,
                    "is_mutual": (best_ab[fa] == fb) & (best_ba[fb] == fa),
                    "n_a": n_fire_a,
                    "n_b": n_fire_b,
                },
                schema_overrides={"cos": pl.Float64},
            )
        )
    in_ab, in_ba = np.isin(pair_keys[0], pair_keys[1]), np.isin(pair_keys[1], pair_keys[0])
    parts[0] = parts[0].with_columns(in_both=pl.Series(in_ab))
    parts[1] = parts[1].with_columns(in_both=pl.Series(in_ba))
    return pl.concat([p.select(MATCH_COLUMNS) for p in parts])


def _attach_significance(
    matches: pl.DataFrame, doc_counts: DocCounts, rows_ab: pl.DataFrame, rows_ba: pl.DataFrame
) -> pl.DataFrame:
    """The null of every listed pair (mu, k/mu, -log10 p, flags), and q on each feature's chosen partner."""
    fa, fb = matches["feature_a"].to_numpy(), matches["feature_b"].to_numpy()
    k = matches["n_coactive"].to_numpy()
    mu, log_c, fill = doc_counts.null(fa, fb, k)
    log_p = log_pvalues(k, mu, log_c)
    matches = matches.with_columns(
        mu=pl.Series(mu),
        k_over_mu=pl.Series(k_over_mu(k, mu)),
        neglog10_p=pl.Series(-log_p / math.log(10)),
        flags=pl.Series(pair_flags(k, fill), dtype=pl.List(pl.String)),
    )
    keys = ["feature_a", "feature_b", "direction"]
    chosen = pl.concat(
        [
            rows.select("feature_a", "feature_b", "q", "significant").with_columns(direction=pl.lit(direction))
            for rows, direction in ((rows_ab, "a->b"), (rows_ba, "b->a"))
        ]
    )
    return matches.join(chosen, on=keys, how="left", maintain_order="left")


def _attach_splits(matches: pl.DataFrame, splits: pl.DataFrame) -> pl.DataFrame:
    hub_a = splits.filter(pl.col("side") == "a").select(
        feature_a="feature", feature_b="partner", direction=pl.lit("a->b")
    )
    hub_b = splits.filter(pl.col("side") == "b").select(
        feature_a="partner", feature_b="feature", direction=pl.lit("b->a")
    )
    marks = pl.concat([hub_a, hub_b]).with_columns(is_split=pl.lit(True))
    return matches.join(
        marks, on=["feature_a", "feature_b", "direction"], how="left", maintain_order="left"
    ).with_columns(pl.col("is_split").fill_null(False))


def _full_assignment(
    pairs: pl.DataFrame,
    method: str,
    result: CorrelationResult,
    counts: pl.DataFrame,
    doc_counts: DocCounts,
    dec_a: np.ndarray | None,
    dec_b: np.ndarray | None,
    same_space: bool,
    flags_a: SideFlags,
    flags_b: SideFlags,
    settings: MatchSettings,
) -> pl.DataFrame:
    """One method's pairs with their statistics and significance, run through the preset's pipeline."""
    pairs = pairs.join(counts, on=["feature_a", "feature_b"], how="left", maintain_order="left")
    fa, fb = pairs["feature_a"].to_numpy(), pairs["feature_b"].to_numpy()
    count = pairs["n_coactive"].to_numpy()
    sig = compute_pair_significance(
        result.moments_a, result.moments_b, None, None, None, fa, fb, count, settings.alpha, doc_counts
    )
    frame = pairs.with_columns(
        method=pl.lit(method),
        jaccard=pl.Series(jaccard(count, result.moments_a.n_fire[fa], result.moments_b.n_fire[fb])),
        cos=pl.Series(
            compute_pair_cosine(dec_a, dec_b, fa, fb)
            if same_space and dec_a is not None and dec_b is not None
            else np.full(fa.shape, None)
        ),
        mu=sig["mu"],
        k_over_mu=sig["k_over_mu"],
        neglog10_p=sig["neglog10_p"],
        q=sig["q"],
        significant=sig["significant"],
        flags=sig["flags"],
    ).with_columns(pl.col("cos").cast(pl.Float64))
    frame = apply_pipeline(frame, flags_a, flags_b, settings, method)
    first = ["feature_a", "feature_b", "method", "corr", "kept", "reason"]
    return frame.select(first + [c for c in frame.columns if c not in first])


def _significance_summary(rows: pl.DataFrame, settings: MatchSettings) -> dict[str, Any]:
    above = rows.filter(pl.col("corr") > settings.min_corr)
    return {
        "n_rows_tested": rows.height,
        "n_called": int(rows["significant"].sum()) if rows.height else 0,
        "n_above_threshold": above.height,
        "n_above_threshold_not_significant": int((~above["significant"]).sum()) if above.height else 0,
        "n_low_k": int(rows["k"].le(2).sum()) if rows.height else 0,
        "alpha": settings.alpha,
        "candidates_per_row": settings.sig_candidates,
    }


def topk_frame(topk: TopK) -> pl.DataFrame:
    """A :class:`~core.correlate.TopK` as a long frame (``feature``, ``rank``, ``partner``, ``score``, ``count``)."""
    n, k = topk.index.shape
    keep = topk.index.reshape(-1) >= 0
    return pl.DataFrame(
        {
            "feature": np.repeat(np.arange(n, dtype=np.int64), k)[keep],
            "rank": np.tile(np.arange(1, k + 1, dtype=np.int32), n)[keep],
            "partner": topk.index.reshape(-1)[keep],
            "score": topk.score.reshape(-1)[keep],
            "count": topk.count.reshape(-1)[keep],
        }
    )
