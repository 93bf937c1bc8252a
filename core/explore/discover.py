"""Prompt discovery: which features of each SAE a given text uses, and whether they are partners.

The scoring is pure: it takes one side's SAE codes on the text's tokens (a small
:class:`~core.codes.SparseCodes`, one row per token) and per-feature thresholds from the
bundle's dashboards, and ranks the features. Running the models and SAEs over the text is
the caller's job (core/harvest); :func:`discover_from_codes` is the entry point once both
sides' codes are in hand.

Score modes (per feature ``f``, over the ``T`` analysed tokens with activations ``a_t``):

- ``mean``: ``sum_t a_t / T``;
- ``max``: ``max_t a_t``;
- ``mean_x_coverage`` (default): ``mean * coverage`` where ``coverage = #{t: a_t > tau_f} / T``;
- ``selectivity``: ``mean`` minus the feature's mean over a background window of corpus units.

``tau_f`` is the ``tau_quantile`` quantile (default 0.95) of the feature's non-zero corpus
activations (stored by core/dashboards), or one absolute ``tau`` for every feature.

The options and output follow the feature-discovery spec this tool implements: ``score_mode``,
``min_coverage_pct`` (percent of analysed tokens above tau, default 0.5), ``restrict_features``,
``topk_tokens_per_seq`` (an informative-token pre-filter: the tokens of highest next-token entropy
for a causal LM, of largest code norm otherwise), ``return_top_x``, ``attach_examples`` (each
feature's top spans in the text and its top corpus examples), proto-labels from a feature's top
tokens when no label catalog is given, and several SAEs of one model (layers) ranked apart or, with
``merge_across_layers``, together. The JSON holds one entry per analysed SAE (or per side when
merged): ``{"model_id", "sae_id", "analyzed": {"mode", "tokens", "layers"}, "features": [{"feature_id",
"layer", "stream", "score", "scores": {"mean", "coverage", "max", "selectivity"}, "proto_label",
"top_spans": [{"text", "position": [start, end], "act"}]}]}`` plus our ``side``, ``rank``,
``partner``, ``partner_corr`` and ``rank_drift`` fields; the CSV has :data:`DISCOVERY_COLUMNS`.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from safetensors import safe_open

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle
from core.dashboards.read import has_dashboards, load_dashboards, tau_from_quantiles
from core.errors import BundleError, DashboardError, SpecError
from core.explore.search import feature_partners

SCORE_MODES = ("mean", "max", "mean_x_coverage", "selectivity")
TOKEN_FILTERS = ("auto", "entropy", "norm")
# the spec's CSV columns, then ours
SPEC_COLUMNS = (
    "feature_id",
    "layer",
    "stream",
    "score",
    "mean",
    "coverage",
    "max",
    "selectivity",
    "proto_label",
    "top_span_text",
)
OUR_COLUMNS = ("side", "hook", "sae_id", "rank", "partner", "partner_corr", "rank_drift")
DISCOVERY_COLUMNS = SPEC_COLUMNS + OUR_COLUMNS
_HOOK = re.compile(r"blocks\.(\d+)\.hook_([a-z_]+)")
RANKED_COLUMNS = ("feature", "rank", "score", "mean", "coverage", "max", "selectivity", "tau", "top_token")
DRIFT_COLUMNS = ("feature_a", "feature_b", "corr", "rank_a", "rank_b", "score_a", "score_b", "drift")


@dataclass(frozen=True)
class DiscoverSettings:
    """How features are scored on a text (the spec's option names).

    Attributes:
        score_mode: one of :data:`SCORE_MODES`.
        tau_quantile: per-feature threshold = this quantile of the feature's non-zero corpus
            activations (used by coverage).
        tau: one absolute threshold for every feature instead (``None``: use ``tau_quantile``).
        min_coverage_pct: drop features above tau on fewer than this percent of the analysed tokens
            (the spec's default 0.5, i.e. 0.5%).
        restrict_features: score only these feature ids, on every analysed SAE (empty: all).
        restrict_features_a: score only these features of side A (overrides ``restrict_features`` there).
        restrict_features_b: the same for side B.
        topk_tokens_per_seq: analyse only this many tokens of the text, the most informative ones
            (``None``: every token); see ``token_filter``.
        token_filter: which tokens are informative: "entropy" (highest next-token entropy of a
            causal LM), "norm" (largest SAE code norm), or "auto" (entropy for a causal LM, else norm).
        return_top_x: features returned per side (per analysed SAE unless ``merge_across_layers``).
        attach_examples: attach each returned feature's top spans in the text and top corpus examples.
        n_spans: top spans per feature.
        merge_across_layers: rank the features of several SAEs of one model together (one list per side).
        label_catalog: a CSV or parquet file of labels (``feature_id``, ``label``, optional ``side`` and
            ``layer``); features it lacks get a proto-label from their top tokens.
        background_units: corpus units in the background window for ``selectivity``.
        span_tokens: tokens either side of a feature's strongest token in a span.
        seed: picks the background window.
    """

    score_mode: str = "mean_x_coverage"
    tau_quantile: float = 0.95
    tau: float | None = None
    min_coverage_pct: float = 0.5
    restrict_features: tuple[int, ...] = ()
    restrict_features_a: tuple[int, ...] = ()
    restrict_features_b: tuple[int, ...] = ()
    topk_tokens_per_seq: int | None = None
    token_filter: str = "auto"
    return_top_x: int = 20
    attach_examples: bool = True
    n_spans: int = 3
    merge_across_layers: bool = False
    label_catalog: str | None = None
    background_units: int = 4096
    span_tokens: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score_mode not in SCORE_MODES:
            raise SpecError(f"Score mode {self.score_mode!r} is unknown; choose one of {', '.join(SCORE_MODES)}.")
        if self.token_filter not in TOKEN_FILTERS:
            raise SpecError(f"token_filter {self.token_filter!r} is unknown; choose one of {', '.join(TOKEN_FILTERS)}.")
        if not 0.0 <= self.tau_quantile <= 1.0:
            raise SpecError(f"tau_quantile must lie in [0, 1], got {self.tau_quantile}.")
        if self.tau is not None and not np.isfinite(self.tau):
            raise SpecError(f"tau must be a finite number or None, got {self.tau}.")
        if not 0.0 <= self.min_coverage_pct <= 100.0:
            raise SpecError(
                f"min_coverage_pct is a percent of the analysed tokens: give 0..100, got {self.min_coverage_pct}."
            )
        if self.topk_tokens_per_seq is not None and self.topk_tokens_per_seq < 1:
            raise SpecError(f"topk_tokens_per_seq must be positive or None, got {self.topk_tokens_per_seq}.")
        for name in ("return_top_x", "background_units", "n_spans"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.span_tokens < 0 or self.seed < 0:
            raise SpecError("span_tokens and seed must be non-negative.")
        for name in ("restrict_features", "restrict_features_a", "restrict_features_b"):
            ids = tuple(int(f) for f in getattr(self, name))
            if any(f < 0 for f in ids):
                raise SpecError(f"{name} holds a negative feature id; feature ids start at 0.")
            object.__setattr__(self, name, ids)
        if self.label_catalog is not None and not Path(self.label_catalog).is_file():
            raise SpecError(f"Label catalog {self.label_catalog} does not exist; check the path or leave it out.")

    def restrict(self, side: str) -> tuple[int, ...]:
        """The restriction of one side (empty: all features)."""
        own = self.restrict_features_a if side == "a" else self.restrict_features_b
        return own or self.restrict_features

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON output, cache keys)."""
        return asdict(self)


def hook_layer(hook: str | None) -> tuple[int | None, str | None]:
    """The layer and stream of a hook name (``blocks.3.hook_resid_post`` -> ``(3, "resid_post")``)."""
    m = _HOOK.search(hook or "")
    return (int(m.group(1)), m.group(2)) if m else (None, hook)


@dataclass(frozen=True, eq=False)
class TextCodes:
    """One SAE's codes on the tokens of one text.

    Attributes:
        codes: [n_tokens, n_features], one row per analysed token (special tokens removed).
        tokens: the token strings, one per row.
        text: the text the tokens came from (for exact spans).
        offsets: int [n_tokens, 2] character spans of the tokens in ``text``, or ``None``
            (spans are then the tokens joined by spaces).
        entropy: float [n_tokens] next-token entropy (nats) of a causal LM at each token, or ``None``.
    """

    codes: SparseCodes
    tokens: tuple[str, ...]
    text: str = ""
    offsets: np.ndarray | None = field(default=None)
    entropy: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        if self.codes.n_rows != len(self.tokens):
            raise ValueError(f"TextCodes: {self.codes.n_rows} code rows but {len(self.tokens)} tokens")
        if self.offsets is not None:
            offsets = np.asarray(self.offsets, dtype=np.int64)
            if offsets.shape != (len(self.tokens), 2):
                raise ValueError(f"TextCodes: offsets must be [{len(self.tokens)}, 2], got {offsets.shape}")
            object.__setattr__(self, "offsets", offsets)
        if self.entropy is not None:
            entropy = np.asarray(self.entropy, dtype=np.float64)
            if entropy.shape != (len(self.tokens),):
                raise ValueError(f"TextCodes: entropy must be [{len(self.tokens)}], got {entropy.shape}")
            object.__setattr__(self, "entropy", entropy)

    def span_position(self, position: int, width: int) -> tuple[int, int]:
        """Character ``[start, end)`` of :meth:`span` in ``text`` (token indices when there are no offsets)."""
        lo, hi = max(0, position - width), min(len(self.tokens) - 1, position + width)
        if self.offsets is not None:
            return int(self.offsets[lo, 0]), int(self.offsets[hi, 1])
        return lo, hi + 1

    def span(self, position: int, width: int) -> str:
        """The text around token ``position``: ``width`` tokens either side."""
        lo, hi = max(0, position - width), min(len(self.tokens) - 1, position + width)
        if self.offsets is not None and self.text:
            return self.text[int(self.offsets[lo, 0]) : int(self.offsets[hi, 1])]
        return " ".join(self.tokens[lo : hi + 1])


# ---------------------------------------------------------------- pure scoring


def select_tokens(codes: SparseCodes, k: int | None, entropy: np.ndarray | None = None) -> np.ndarray:
    """The rows (tokens) to analyse: the ``k`` most informative ones.

    Args:
        codes: [n_tokens, n_features].
        k: how many to keep (``None`` or ``>= n_tokens``: all).
        entropy: per-token next-token entropy of a causal LM; when given, the ``k`` tokens of highest
            entropy are kept (where the model is least sure of what comes next), else the ``k`` with
            the largest code-vector L2 norm.

    Returns:
        int64 row ids, ascending.
    """
    n = codes.n_rows
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    informative: np.ndarray
    if entropy is not None:
        informative = np.asarray(entropy, dtype=np.float64)
    else:
        informative = np.bincount(codes.row_ids(), weights=codes.values.astype(np.float64) ** 2, minlength=n)
    # stable order: equal values keep the earlier token
    keep = np.argsort(-informative, kind="stable")[:k]
    return np.sort(keep).astype(np.int64)


def score_features(
    codes: SparseCodes,
    tau: np.ndarray,
    settings: DiscoverSettings,
    background: np.ndarray | None = None,
    restrict: Sequence[int] = (),
    entropy: np.ndarray | None = None,
) -> pl.DataFrame:
    """Rank one SAE's features on a text.

    Args:
        codes: the SAE's codes on the text's tokens [n_tokens, n_features].
        tau: float [n_features] coverage thresholds (``inf``: the feature never counts).
        settings: score mode, gates and token selection.
        background: float [n_features] mean activation on background corpus units; needed
            for ``selectivity`` (``None``: the selectivity column is null).
        restrict: score only these feature ids (empty: all).
        entropy: per-token next-token entropy (causal LMs) for the token pre-filter.

    Returns:
        :data:`RANKED_COLUMNS`, one row per feature that fires on an analysed token and
        passes the gates, best first; ``rank`` starts at 1; ``top_token`` is the row of
        the feature's strongest token.
    """
    n_features = codes.n_features
    if codes.n_rows == 0:
        raise DashboardError("The text has no tokens to analyse; give a non-empty text.")
    tau = np.asarray(tau, dtype=np.float64)
    if tau.shape != (n_features,):
        raise ValueError(f"score_features: tau must have shape ({n_features},), got {tau.shape}")
    if settings.score_mode == "selectivity" and background is None:
        raise ValueError("score_features: the selectivity score needs a background")
    use_entropy = settings.token_filter == "entropy" or (settings.token_filter == "auto" and entropy is not None)
    if settings.token_filter == "entropy" and entropy is None:
        raise DashboardError(
            "token_filter 'entropy' needs a causal language model's next-token entropy; use 'norm' or 'auto'."
        )
    rows = select_tokens(codes, settings.topk_tokens_per_seq, entropy if use_entropy else None)
    sub = codes if rows.shape[0] == codes.n_rows else codes.take_rows(rows)
    n_tokens = sub.n_rows
    feat, val = sub.indices, sub.values.astype(np.float64)
    row = rows[sub.row_ids()]

    total = np.bincount(feat, weights=val, minlength=n_features)
    above = np.bincount(feat, weights=(val > tau[feat]).astype(np.float64), minlength=n_features)
    # strongest token per feature: highest activation, earliest token on ties
    order = np.lexsort((row, -val, feat))
    first = order[np.r_[True, feat[order][1:] != feat[order][:-1]]] if feat.size else order
    fired = feat[first]
    maximum = np.zeros(n_features)
    maximum[fired] = val[first]
    top_token = np.full(n_features, -1, np.int64)
    top_token[fired] = row[first]

    mean = total / n_tokens
    coverage = above / n_tokens
    # NaN without a background (then the selectivity score was refused above)
    selectivity = (
        mean - np.asarray(background, dtype=np.float64) if background is not None else np.full(n_features, np.nan)
    )
    score = {
        "mean": mean,
        "max": maximum,
        "mean_x_coverage": mean * coverage,
        "selectivity": selectivity,
    }[settings.score_mode]

    # a percent of the analysed tokens (a feature at exactly the gate passes)
    candidates = fired[coverage[fired] * 100.0 >= settings.min_coverage_pct - 1e-12]
    if len(restrict):
        candidates = candidates[np.isin(candidates, np.asarray(restrict, dtype=np.int64))]
    ranking = candidates[np.lexsort((candidates, -score[candidates]))]
    return pl.DataFrame(
        {
            "feature": ranking.astype(np.int32),
            "rank": np.arange(1, ranking.shape[0] + 1, dtype=np.int32),
            "score": score[ranking],
            "mean": mean[ranking],
            "coverage": coverage[ranking],
            "max": maximum[ranking],
            "selectivity": selectivity[ranking],
            "tau": tau[ranking],
            "top_token": top_token[ranking],
        }
    ).with_columns(pl.col("selectivity").fill_nan(None))


def compute_rank_drift(
    ranked_a: pl.DataFrame,
    ranked_b: pl.DataFrame,
    assignment: pl.DataFrame,
    top_x: int,
) -> pl.DataFrame:
    """Partners whose ranks on the same text differ most (what changed between the models).

    A pair enters when either partner is in its side's top ``top_x``. A partner that did not
    fire ranks one below its side's last ranked feature. ``drift = log2(rank_b / rank_a)``:
    positive when side B ranks the pair lower than side A does.

    Args:
        ranked_a: :func:`score_features` output of side A (the full ranking).
        ranked_b: the same for side B.
        assignment: pairs with ``feature_a``, ``feature_b``, ``corr`` (and ``kept``: only
            kept pairs are used when the column is there).
        top_x: how high a partner must rank for the pair to be considered.

    Returns:
        :data:`DRIFT_COLUMNS`, largest ``|drift|`` first (``rank_*``/``score_*`` null where
        that side's feature did not fire).
    """
    pairs = assignment
    if "kept" in pairs.columns:
        pairs = pairs.filter(pl.col("kept").fill_null(False))
    pairs = pairs.select(
        pl.col("feature_a").cast(pl.Int32), pl.col("feature_b").cast(pl.Int32), pl.col("corr").cast(pl.Float64)
    )
    a = ranked_a.select(
        pl.col("feature").alias("feature_a"), pl.col("rank").alias("rank_a"), pl.col("score").alias("score_a")
    )
    b = ranked_b.select(
        pl.col("feature").alias("feature_b"), pl.col("rank").alias("rank_b"), pl.col("score").alias("score_b")
    )
    floor_a, floor_b = ranked_a.height + 1, ranked_b.height + 1
    return (
        pairs.join(a, on="feature_a", how="left")
        .join(b, on="feature_b", how="left")
        .filter((pl.col("rank_a") <= top_x) | (pl.col("rank_b") <= top_x))
        .with_columns(
            (
                pl.col("rank_b").fill_null(floor_b).cast(pl.Float64).log(2)
                - pl.col("rank_a").fill_null(floor_a).cast(pl.Float64).log(2)
            ).alias("drift")
        )
        .with_columns(pl.col("drift").abs().alias("_abs"))
        .sort(["_abs", "feature_a", "feature_b"], descending=[True, False, False])
        .select(DRIFT_COLUMNS)
    )


# ---------------------------------------------------------------- bundle inputs


def load_codes_window(bundle: Bundle, side: str, lo: int, hi: int) -> SparseCodes:
    """Rows ``lo..hi`` of one side's corpus codes, reading only those rows from disk.

    Args:
        bundle: an opened bundle.
        side: ``"a"`` or ``"b"``.
        lo: first unit (inclusive).
        hi: last unit (exclusive).

    Returns:
        The codes of those units.
    """
    path = bundle.path / f"codes_{side}.safetensors"
    with safe_open(str(path), framework="numpy") as handle:
        n_features = int((handle.metadata() or {})["n_features"])
        indptr = handle.get_slice("indptr")[lo : hi + 1]
        start, stop = int(indptr[0]), int(indptr[-1])
        indices = handle.get_slice("indices")[start:stop]
        values = handle.get_slice("values")[start:stop]
    return SparseCodes(indptr - start, indices, values, n_features)


def background_mean(bundle: Bundle, side: str, n_units: int, seed: int) -> np.ndarray:
    """Each feature's mean activation over a seeded random window of ``n_units`` corpus units.

    Args:
        bundle: an opened bundle.
        side: ``"a"`` or ``"b"``.
        n_units: window length (the whole corpus when it is shorter).
        seed: picks where the window starts.

    Returns:
        float64 [n_features] (zeros included in the mean).
    """
    total = bundle.n_units
    n = min(n_units, total)
    start = int(np.random.default_rng(seed).integers(0, total - n + 1)) if total else 0
    window = load_codes_window(bundle, side, start, start + n)
    return np.bincount(window.indices, weights=window.values.astype(np.float64), minlength=window.n_features) / max(
        n, 1
    )


def side_thresholds(bundle: Bundle, side: str, settings: DiscoverSettings) -> np.ndarray:
    """Per-feature ``tau`` of one side: the absolute ``settings.tau``, or the stored quantile."""
    quantiles = load_dashboards(bundle, side).select("quantiles").collect()["quantiles"]
    if settings.tau is not None:
        return np.full(quantiles.len(), float(settings.tau))
    return tau_from_quantiles(quantiles, settings.tau_quantile)


def discovery_cache_key(
    text: str, settings: DiscoverSettings, bundle: Bundle, extra: dict[str, Any] | None = None
) -> str:
    """A hash of (text, settings, bundle identity): equal keys give equal results.

    Args:
        text: the analysed text (with any generated continuation).
        settings: the discovery settings.
        bundle: the bundle (its folder and manifest identify it).
        extra: anything else the result depends on (for example ``gen_tokens`` and a seed).

    Returns:
        A hex digest.
    """
    body = {
        "text": text,
        "settings": settings.to_dict(),
        "bundle": str(bundle.path.resolve()),
        "manifest": {k: bundle.manifest.get(k) for k in ("created_at", "corpus", "sides", "dashboards")},
        "extra": extra or {},
    }
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()


class DiscoveryCache:
    """A small in-process LRU of discovery results keyed by :func:`discovery_cache_key`.

    Args:
        max_items: results kept before the least recently used is dropped.
    """

    def __init__(self, max_items: int = 64) -> None:
        self.max_items = max_items
        self._items: OrderedDict[str, DiscoveryResult] = OrderedDict()

    def get(self, key: str) -> DiscoveryResult | None:
        """The cached result, or ``None``."""
        if key in self._items:
            self._items.move_to_end(key)
            return self._items[key]
        return None

    def put(self, key: str, result: DiscoveryResult) -> None:
        """Store a result."""
        self._items[key] = result
        self._items.move_to_end(key)
        while len(self._items) > self.max_items:
            self._items.popitem(last=False)

    def __len__(self) -> int:
        return len(self._items)


# ---------------------------------------------------------------- the whole query


@dataclass(frozen=True, eq=False)
class LayerCodes:
    """An extra SAE of one side's model (another layer) and its codes on the text.

    Attributes:
        side: the model's side in the bundle ("a" or "b").
        sae_id: the SAE spec (``kind:source``).
        hook: the hook it reads.
        codes: its codes on the text's tokens.
        tau: float [n_features] coverage thresholds (from a corpus sample, see core.explore.prompts).
        background: float [n_features] mean activation over that sample (for ``selectivity``).
        top_tokens: per feature, its most frequent tokens in the sample (its proto-label).
    """

    side: str
    sae_id: str
    hook: str
    codes: TextCodes
    tau: np.ndarray
    background: np.ndarray
    top_tokens: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True, eq=False)
class _Entry:
    side: str
    sae_id: str
    hook: str | None
    codes: TextCodes
    tau: np.ndarray
    background: np.ndarray
    labels: tuple[str, ...]
    in_bundle: bool


@dataclass(frozen=True, eq=False)
class DiscoveryResult:
    """Ranked features of every analysed SAE on one text.

    Attributes:
        table: the returned features, :data:`DISCOVERY_COLUMNS` plus ``tau``, ``top_token`` (row of the
            strongest token), ``top_token_text`` and ``top_spans`` (list of ``text``, ``position``, ``act``).
        ranked: side -> the full ranking of the bundle's SAE of that side (:data:`RANKED_COLUMNS`).
        drift: partner pairs by rank drift (:data:`DRIFT_COLUMNS`); empty without an
            assignment or with only one side.
        examples: top corpus examples of the returned features: ``side``, ``feature``,
            ``rank``, ``unit``, ``act``, ``window_text``, ``center``.
        groups: one per output list: ``side``, ``model_id``, ``sae_id``, ``analyzed`` (mode, tokens, layers).
        settings: the settings used.
        text: the analysed text.
        key: the cache key.
    """

    table: pl.DataFrame
    ranked: dict[str, pl.DataFrame]
    drift: pl.DataFrame
    examples: pl.DataFrame
    groups: tuple[dict[str, Any], ...]
    settings: DiscoverSettings
    text: str
    key: str

    def to_json_dict(self) -> dict[str, Any]:
        """The spec's JSON: per output list ``model_id``, ``sae_id``, ``analyzed`` and ``features``, plus ours."""
        examples: dict[tuple[str, int], list[dict[str, Any]]] = {}
        if self.examples.height:
            for row in self.examples.sort("rank").iter_rows(named=True):
                examples.setdefault((row["side"], int(row["feature"])), []).append(
                    {k: row[k] for k in ("rank", "unit", "act", "window_text", "center")}
                )
        sides = []
        for group in self.groups:
            rows = self.table.filter(pl.col("_group") == group["_group"]).sort("rank")
            features = []
            for r in rows.iter_rows(named=True):
                features.append(
                    {
                        "feature_id": r["feature_id"],
                        "layer": r["layer"],
                        "stream": r["stream"],
                        "score": r["score"],
                        "scores": {k: r[k] for k in ("mean", "coverage", "max", "selectivity")},
                        "proto_label": r["proto_label"],
                        "top_spans": r["top_spans"] or [],
                        "side": r["side"],
                        "hook": r["hook"],
                        "sae_id": r["sae_id"],
                        "rank": r["rank"],
                        "partner": r["partner"],
                        "partner_corr": r["partner_corr"],
                        "rank_drift": r["rank_drift"],
                        "tau": r["tau"],
                        "examples": examples.get((r["side"], int(r["feature_id"])), [])
                        if r["sae_id"] == group["_bundle_sae"]
                        else [],
                    }
                )
            sides.append({**{k: v for k, v in group.items() if not k.startswith("_")}, "features": features})
        return {
            "text": self.text,
            "key": self.key,
            "settings": self.settings.to_dict(),
            "sides": sides,
            "drift": self.drift.to_dicts(),
        }

    def write(self, path: str | Path) -> Path:
        """Write the result as ``.json`` (everything) or ``.csv`` (:data:`DISCOVERY_COLUMNS`).

        Args:
            path: output file; its suffix picks the format.

        Returns:
            The path written.
        """
        path = Path(path)
        check_output_path(path)
        if path.suffix == ".csv":
            self.table.select(DISCOVERY_COLUMNS).write_csv(path)
        else:
            path.write_text(json.dumps(self.to_json_dict(), indent=2, default=str))
        return path


def check_output_path(path: str | Path, batch: bool = False) -> None:
    """Refuse an output file discovery cannot write (checked before any model loads).

    Args:
        path: the output file.
        batch: several prompts (one JSON line each): the file must end in ``.jsonl``.
    """
    suffixes = (".jsonl",) if batch else (".json", ".csv")
    path = Path(path)
    if path.suffix not in suffixes:
        raise DashboardError(f"Output {path} must end in {' or '.join(suffixes)}; choose one of those.")
    if not path.parent.is_dir():
        raise DashboardError(f"The folder of {path} does not exist; create it or write elsewhere.")


def check_restrictions(bundle: Bundle, settings: DiscoverSettings) -> None:
    """Refuse restricted feature ids the bundle's SAEs do not have (checked before any model loads)."""
    for side in ("a", "b"):
        n = int(bundle.side(side).get("d_sae") or bundle.features(side).select(pl.len()).collect().item())
        name = f"restrict_features_{side}" if getattr(settings, f"restrict_features_{side}") else "restrict_features"
        bad = [f for f in settings.restrict(side) if not 0 <= f < n]
        if bad:
            raise DashboardError(
                f"{name} names feature {bad[0]}, which side {side} does not have (it has {n}); use ids 0..{n - 1}."
            )


def load_label_catalog(path: str | None) -> pl.DataFrame | None:
    """A label catalog (``feature_id``, ``label``, optional ``side`` and ``layer``) from CSV or parquet."""
    if path is None:
        return None
    file = Path(path)
    try:
        frame = pl.read_parquet(file) if file.suffix == ".parquet" else pl.read_csv(file)
    except (OSError, pl.exceptions.PolarsError) as exc:
        raise DashboardError(f"Label catalog {file} cannot be read ({exc}); give a CSV or parquet file.") from exc
    missing = [c for c in ("feature_id", "label") if c not in frame.columns]
    if missing:
        raise DashboardError(f"Label catalog {file} lacks column(s) {missing}; it needs feature_id and label.")
    return frame


def _catalog_label(catalog: pl.DataFrame | None, side: str, layer: int | None, feature: int) -> str | None:
    if catalog is None:
        return None
    rows = catalog.filter(pl.col("feature_id") == feature)
    if "side" in rows.columns:
        rows = rows.filter(pl.col("side").cast(pl.String) == side)
    if "layer" in rows.columns and layer is not None:
        rows = rows.filter(pl.col("layer") == layer)
    return str(rows["label"][0]) if rows.height else None


def proto_label(tokens: Sequence[str], n: int = 3) -> str:
    """A proto-label from a feature's top tokens (the first ``n`` distinct ones, stripped, joined)."""
    seen = list(dict.fromkeys(t.strip() for t in tokens if t and t.strip()))
    return " / ".join(seen[:n])


def top_spans(codes: TextCodes, feature: int, settings: DiscoverSettings, rows: np.ndarray) -> list[dict[str, Any]]:
    """A feature's strongest tokens among the analysed rows, each as its span: text, [start, end], act."""
    sub = codes.codes.take_rows(rows) if rows.shape[0] != codes.codes.n_rows else codes.codes
    hit = np.flatnonzero(sub.indices == feature)
    if hit.size == 0:
        return []
    pos = rows[np.searchsorted(sub.indptr, hit, side="right") - 1]
    acts = sub.values[hit].astype(np.float64)
    order = np.lexsort((pos, -acts))[: settings.n_spans]
    out = []
    for i in order:
        start, end = codes.span_position(int(pos[i]), settings.span_tokens)
        out.append(
            {"text": codes.span(int(pos[i]), settings.span_tokens), "position": [start, end], "act": float(acts[i])}
        )
    return out


def discover_from_codes(
    bundle: Bundle,
    text_codes: dict[str, TextCodes],
    settings: DiscoverSettings | None = None,
    text: str | None = None,
    n_examples: int = 3,
    cache_extra: dict[str, Any] | None = None,
    layers: Sequence[LayerCodes] = (),
) -> DiscoveryResult:
    """Rank the features of every analysed SAE on a text whose codes the caller has computed.

    Args:
        bundle: an opened bundle with dashboards.
        text_codes: side -> the bundle's SAE of that side, its codes on the text (one or both sides).
        settings: scoring settings (defaults: :class:`DiscoverSettings`).
        text: the text, for the result and the cache key (default: side A's, else B's).
        n_examples: top corpus examples attached per returned feature (with ``attach_examples``).
        cache_extra: extra cache-key inputs (see :func:`discovery_cache_key`).
        layers: extra SAEs of one side's model (other layers), with their own thresholds.

    Returns:
        The :class:`DiscoveryResult`.
    """
    settings = settings or DiscoverSettings()
    if not text_codes and not layers:
        raise ValueError("discover_from_codes needs the codes of at least one SAE")
    if not has_dashboards(bundle):
        raise BundleError(
            f"Bundle {bundle.path} has no dashboards, which discovery needs for its thresholds; add them with "
            "core.dashboards.build_dashboards (or `python -m core dashboards --bundle ...`)."
        )
    if text is None:
        text = next(tc.text for tc in (*text_codes.values(), *(lc.codes for lc in layers)))
    check_restrictions(bundle, settings)
    catalog = load_label_catalog(settings.label_catalog)
    entries: list[_Entry] = []
    for side, tc in text_codes.items():
        if side not in ("a", "b"):
            raise DashboardError(f"Side {side!r} does not exist; choose 'a' or 'b'.")
        tau = side_thresholds(bundle, side, settings)
        if tc.codes.n_features != tau.shape[0]:
            raise DashboardError(
                f"The text's codes for side {side} have {tc.codes.n_features} features but the bundle's SAE has "
                f"{tau.shape[0]}; encode the text with the bundle's SAE."
            )
        if tc.codes.n_rows == 0:
            raise DashboardError("The text has no tokens to analyse; give a non-empty text.")
        labels = bundle.features(side).select("feature", "top_tokens").sort("feature").collect()["top_tokens"]
        entries.append(
            _Entry(
                side,
                _sae_id(bundle, side),
                bundle.manifest.get("sides", {}).get(side, {}).get("hook"),
                tc,
                tau,
                background_mean(bundle, side, settings.background_units, settings.seed),
                tuple(proto_label(t or []) for t in labels.to_list()),
                True,
            )
        )
    for lc in layers:
        if lc.codes.codes.n_rows == 0:
            raise DashboardError("The text has no tokens to analyse; give a non-empty text.")
        entries.append(
            _Entry(
                lc.side,
                lc.sae_id,
                lc.hook,
                lc.codes,
                np.asarray(lc.tau, np.float64),
                np.asarray(lc.background, np.float64),
                tuple(proto_label(t) for t in lc.top_tokens),
                False,
            )
        )

    def group_of(e: _Entry) -> str:
        return e.side if settings.merge_across_layers else f"{e.side}:{e.sae_id}"

    ranked: dict[str, pl.DataFrame] = {}
    frames = []
    for i, e in enumerate(entries):
        full = score_features(
            e.codes.codes,
            e.tau,
            settings,
            background=e.background,
            restrict=settings.restrict(e.side),
            entropy=e.codes.entropy,
        )
        if e.in_bundle:
            ranked[e.side] = full
        layer, stream = hook_layer(e.hook)
        frames.append(
            full.with_columns(
                pl.lit(i).alias("_entry"),
                pl.lit(e.side).alias("side"),
                pl.lit(e.hook, pl.String).alias("hook"),
                pl.lit(e.sae_id).alias("sae_id"),
                pl.lit(layer, pl.Int64).alias("layer"),
                pl.lit(stream, pl.String).alias("stream"),
                pl.lit(group_of(e)).alias("_group"),
            )
        )
    everything = pl.concat(frames, how="vertical_relaxed")
    top = (
        everything.sort(
            ["_group", "score", "layer", "feature"], descending=[False, True, False, False], nulls_last=True
        )
        .with_columns(pl.int_range(1, pl.len() + 1).over("_group").cast(pl.Int32).alias("rank"))
        .filter(pl.col("rank") <= settings.return_top_x)
    )

    drift = _empty_drift()
    if "a" in ranked and "b" in ranked and bundle.has("assignment"):
        drift = compute_rank_drift(ranked["a"], ranked["b"], bundle.assignment().collect(), settings.return_top_x)
    rows, example_frames = [], []
    partners = {s: _first_partners(bundle, s) for s in {e.side for e in entries if e.in_bundle}}
    for r in top.iter_rows(named=True):
        e = entries[r["_entry"]]
        feature = int(r["feature"])
        analysed = select_tokens(
            e.codes.codes,
            settings.topk_tokens_per_seq,
            e.codes.entropy if settings.token_filter != "norm" else None,
        )
        partner = partners.get(e.side, {}).get(feature) if e.in_bundle else None
        label = _catalog_label(catalog, e.side, r["layer"], feature) or (
            e.labels[feature] if feature < len(e.labels) else ""
        )
        rows.append(
            {
                **{k: r[k] for k in ("side", "hook", "sae_id", "layer", "stream", "rank", "score", "mean")},
                **{k: r[k] for k in ("coverage", "max", "selectivity", "tau", "top_token", "_group")},
                "feature_id": feature,
                "proto_label": label,
                "top_span_text": e.codes.span(int(r["top_token"]), settings.span_tokens),
                "top_token_text": e.codes.tokens[int(r["top_token"])],
                "top_spans": top_spans(e.codes, feature, settings, analysed) if settings.attach_examples else [],
                "partner": partner[0] if partner else None,
                "partner_corr": partner[1] if partner else None,
                "rank_drift": _feature_drift(drift, e.side, feature) if e.in_bundle else None,
            }
        )
    for side in ("a", "b"):
        mine = [row["feature_id"] for row in rows if row["side"] == side and row["sae_id"] == _sae_id(bundle, side)]
        if settings.attach_examples and mine and bundle.has("examples"):
            example_frames.append(
                bundle.examples(side)
                .filter((pl.col("kind") == "top") & (pl.col("rank") < n_examples) & pl.col("feature").is_in(mine))
                .select(pl.lit(side).alias("side"), "feature", "rank", "unit", "act", "window_text", "center")
                .collect()
            )
    table = pl.DataFrame(
        rows,
        schema={
            "feature_id": pl.Int32,
            "layer": pl.Int64,
            "stream": pl.String,
            "score": pl.Float64,
            "mean": pl.Float64,
            "coverage": pl.Float64,
            "max": pl.Float64,
            "selectivity": pl.Float64,
            "proto_label": pl.String,
            "top_span_text": pl.String,
            "side": pl.String,
            "hook": pl.String,
            "sae_id": pl.String,
            "rank": pl.Int32,
            "partner": pl.Int32,
            "partner_corr": pl.Float64,
            "rank_drift": pl.Float64,
            "tau": pl.Float64,
            "top_token": pl.Int64,
            "top_token_text": pl.String,
            "top_spans": pl.List(pl.Struct({"text": pl.String, "position": pl.List(pl.Int64), "act": pl.Float64})),
            "_group": pl.String,
        },
    )
    groups = []
    for group in dict.fromkeys(group_of(e) for e in entries):
        members = [e for e in entries if group_of(e) == group]
        side = members[0].side
        n_tokens = int(
            select_tokens(
                members[0].codes.codes,
                settings.topk_tokens_per_seq,
                members[0].codes.entropy if settings.token_filter != "norm" else None,
            ).shape[0]
        )
        groups.append(
            {
                "_group": group,
                "_bundle_sae": _sae_id(bundle, side),
                "side": side,
                "model_id": _model_id(bundle, side),
                "sae_id": ", ".join(dict.fromkeys(e.sae_id for e in members)),
                "analyzed": {
                    "mode": settings.score_mode,
                    "tokens": n_tokens,
                    "layers": [hook_layer(e.hook)[0] for e in members],
                },
            }
        )
    return DiscoveryResult(
        table=table.sort(["_group", "rank"], maintain_order=True) if table.height else table,
        ranked=ranked,
        drift=drift,
        examples=pl.concat(example_frames) if example_frames else _empty_examples(),
        groups=tuple(groups),
        settings=settings,
        text=text,
        key=discovery_cache_key(text, settings, bundle, cache_extra),
    )


def _sae_id(bundle: Bundle, side: str) -> str:
    spec = bundle.manifest.get("sides", {}).get(side, {}).get("sae", {}).get("spec") or {}
    if spec.get("kind") == "release":
        return f"release:{spec.get('source')}/{spec.get('sae_id')}"
    return f"{spec.get('kind', 'local')}:{spec.get('source', side)}" if spec else f"sae_{side}"


def _model_id(bundle: Bundle, side: str) -> str:
    model = bundle.manifest.get("sides", {}).get(side, {}).get("model") or {}
    return str(
        model.get("name") or model.get("source") or bundle.manifest.get("sides", {}).get(side, {}).get("label") or side
    )


def _first_partners(bundle: Bundle, side: str) -> dict[int, tuple[int, float]]:
    frame = feature_partners(bundle, side).select(
        "feature",
        pl.col("partners").list.first().alias("partner"),
        pl.col("partner_corr").list.first().alias("partner_corr"),
    )
    return {int(f): (int(p), float(c)) for f, p, c in frame.drop_nulls("partner").iter_rows()}


def _feature_drift(drift: pl.DataFrame, side: str, feature: int) -> float | None:
    rows = drift.filter(pl.col(f"feature_{side}") == feature)
    return float(rows["drift"][0]) if rows.height else None


def _empty_drift() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "feature_a": pl.Int32,
            "feature_b": pl.Int32,
            "corr": pl.Float64,
            "rank_a": pl.Int32,
            "rank_b": pl.Int32,
            "score_a": pl.Float64,
            "score_b": pl.Float64,
            "drift": pl.Float64,
        }
    )


def _empty_examples() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "side": pl.String,
            "feature": pl.Int64,
            "rank": pl.Int64,
            "unit": pl.Int64,
            "act": pl.Float32,
            "window_text": pl.String,
            "center": pl.Int64,
        }
    )
