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
"""

from __future__ import annotations

import hashlib
import json
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
DISCOVERY_COLUMNS = (
    "feature_id",
    "side",
    "hook",
    "score",
    "mean",
    "coverage",
    "max",
    "selectivity",
    "top_span_text",
    "partner",
    "partner_corr",
)
RANKED_COLUMNS = ("feature", "rank", "score", "mean", "coverage", "max", "selectivity", "tau", "top_token")
DRIFT_COLUMNS = ("feature_a", "feature_b", "corr", "rank_a", "rank_b", "score_a", "score_b", "drift")


@dataclass(frozen=True)
class DiscoverSettings:
    """How features are scored on a text.

    Attributes:
        score: one of :data:`SCORE_MODES`.
        tau_quantile: per-feature threshold = this quantile of the feature's non-zero corpus
            activations (used by coverage).
        tau: one absolute threshold for every feature instead (``None``: use ``tau_quantile``).
        min_coverage: drop features whose coverage is below this share of analysed tokens.
        restrict_features_a: score only these features of side A (empty: all).
        restrict_features_b: score only these features of side B (empty: all).
        topk_tokens_per_seq: analyse only the tokens whose code vectors have the largest L2
            norm (``None``: every token).
        return_top_x: features returned per side.
        background_units: corpus units in the background window for ``selectivity``.
        span_tokens: tokens either side of a feature's strongest token in ``top_span_text``.
        seed: picks the background window.
    """

    score: str = "mean_x_coverage"
    tau_quantile: float = 0.95
    tau: float | None = None
    min_coverage: float = 0.0
    restrict_features_a: tuple[int, ...] = ()
    restrict_features_b: tuple[int, ...] = ()
    topk_tokens_per_seq: int | None = None
    return_top_x: int = 20
    background_units: int = 4096
    span_tokens: int = 4
    seed: int = 0

    def __post_init__(self) -> None:
        if self.score not in SCORE_MODES:
            raise SpecError(f"Score mode {self.score!r} is unknown; choose one of {', '.join(SCORE_MODES)}.")
        if not 0.0 <= self.tau_quantile <= 1.0:
            raise SpecError(f"tau_quantile must lie in [0, 1], got {self.tau_quantile}.")
        if self.tau is not None and not np.isfinite(self.tau):
            raise SpecError(f"tau must be a finite number or None, got {self.tau}.")
        if not 0.0 <= self.min_coverage <= 1.0:
            raise SpecError(f"min_coverage must lie in [0, 1], got {self.min_coverage}.")
        if self.topk_tokens_per_seq is not None and self.topk_tokens_per_seq < 1:
            raise SpecError(f"topk_tokens_per_seq must be positive or None, got {self.topk_tokens_per_seq}.")
        for name in ("return_top_x", "background_units"):
            if getattr(self, name) < 1:
                raise SpecError(f"{name} must be positive, got {getattr(self, name)}.")
        if self.span_tokens < 0 or self.seed < 0:
            raise SpecError("span_tokens and seed must be non-negative.")
        for name in ("restrict_features_a", "restrict_features_b"):
            object.__setattr__(self, name, tuple(int(f) for f in getattr(self, name)))

    def restrict(self, side: str) -> tuple[int, ...]:
        """The restriction of one side (empty: all features)."""
        return self.restrict_features_a if side == "a" else self.restrict_features_b

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (JSON output, cache keys)."""
        return asdict(self)


@dataclass(frozen=True, eq=False)
class TextCodes:
    """One SAE's codes on the tokens of one text.

    Attributes:
        codes: [n_tokens, n_features], one row per analysed token (special tokens removed).
        tokens: the token strings, one per row.
        text: the text the tokens came from (for exact spans).
        offsets: int [n_tokens, 2] character spans of the tokens in ``text``, or ``None``
            (spans are then the tokens joined by spaces).
    """

    codes: SparseCodes
    tokens: tuple[str, ...]
    text: str = ""
    offsets: np.ndarray | None = field(default=None)

    def __post_init__(self) -> None:
        object.__setattr__(self, "tokens", tuple(str(t) for t in self.tokens))
        if self.codes.n_rows != len(self.tokens):
            raise ValueError(f"TextCodes: {self.codes.n_rows} code rows but {len(self.tokens)} tokens")
        if self.offsets is not None:
            offsets = np.asarray(self.offsets, dtype=np.int64)
            if offsets.shape != (len(self.tokens), 2):
                raise ValueError(f"TextCodes: offsets must be [{len(self.tokens)}, 2], got {offsets.shape}")
            object.__setattr__(self, "offsets", offsets)

    def span(self, position: int, width: int) -> str:
        """The text around token ``position``: ``width`` tokens either side."""
        lo, hi = max(0, position - width), min(len(self.tokens) - 1, position + width)
        if self.offsets is not None and self.text:
            return self.text[int(self.offsets[lo, 0]) : int(self.offsets[hi, 1])]
        return " ".join(self.tokens[lo : hi + 1])


# ---------------------------------------------------------------- pure scoring


def select_tokens(codes: SparseCodes, k: int | None) -> np.ndarray:
    """The rows (tokens) to analyse: the ``k`` with the largest code-vector L2 norm.

    Args:
        codes: [n_tokens, n_features].
        k: how many to keep (``None`` or ``>= n_tokens``: all).

    Returns:
        int64 row ids, ascending.
    """
    n = codes.n_rows
    if k is None or k >= n:
        return np.arange(n, dtype=np.int64)
    norms = np.bincount(codes.row_ids(), weights=codes.values.astype(np.float64) ** 2, minlength=n)
    # stable order: equal norms keep the earlier token
    keep = np.argsort(-norms, kind="stable")[:k]
    return np.sort(keep).astype(np.int64)


def score_features(
    codes: SparseCodes,
    tau: np.ndarray,
    settings: DiscoverSettings,
    background: np.ndarray | None = None,
    restrict: Sequence[int] = (),
) -> pl.DataFrame:
    """Rank one SAE's features on a text.

    Args:
        codes: the SAE's codes on the text's tokens [n_tokens, n_features].
        tau: float [n_features] coverage thresholds (``inf``: the feature never counts).
        settings: score mode, gates and token selection.
        background: float [n_features] mean activation on background corpus units; needed
            for ``selectivity`` (``None``: the selectivity column is null).
        restrict: score only these feature ids (empty: all).

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
    if settings.score == "selectivity" and background is None:
        raise ValueError("score_features: the selectivity score needs a background")
    rows = select_tokens(codes, settings.topk_tokens_per_seq)
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
    }[settings.score]

    candidates = fired[coverage[fired] >= settings.min_coverage]
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
class DiscoveryResult:
    """Ranked features of both sides on one text.

    Attributes:
        table: the top ``return_top_x`` per side, :data:`DISCOVERY_COLUMNS` plus ``rank``,
            ``tau``, ``top_token`` (row of the strongest token) and ``top_token_text``.
        ranked: side -> the full ranking (:data:`RANKED_COLUMNS`).
        drift: partner pairs by rank drift (:data:`DRIFT_COLUMNS`); empty without an
            assignment or with only one side.
        examples: top corpus examples of the returned features: ``side``, ``feature``,
            ``rank``, ``unit``, ``act``, ``window_text``, ``center``.
        settings: the settings used.
        text: the analysed text.
        key: the cache key.
    """

    table: pl.DataFrame
    ranked: dict[str, pl.DataFrame]
    drift: pl.DataFrame
    examples: pl.DataFrame
    settings: DiscoverSettings
    text: str
    key: str

    def to_json_dict(self) -> dict[str, Any]:
        """A JSON-ready dict: text, settings, results (each with its corpus examples), drift."""
        examples = self.examples.group_by(["side", "feature"]).agg(
            pl.struct("rank", "unit", "act", "window_text", "center").sort_by("rank").alias("examples")
        )
        rows = (
            self.table.join(
                examples.rename({"feature": "feature_id"}), on=["side", "feature_id"], how="left"
            ).to_dicts()
            if self.table.height
            else []
        )
        return {
            "text": self.text,
            "key": self.key,
            "settings": self.settings.to_dict(),
            "results": rows,
            "drift": self.drift.to_dicts(),
        }

    def write(self, path: str | Path) -> Path:
        """Write the result as ``.json`` (everything) or ``.csv`` (the table's :data:`DISCOVERY_COLUMNS`).

        Args:
            path: output file; its suffix picks the format.

        Returns:
            The path written.
        """
        path = Path(path)
        if path.suffix == ".csv":
            self.table.select(DISCOVERY_COLUMNS).write_csv(path)
        elif path.suffix == ".json":
            path.write_text(json.dumps(self.to_json_dict(), indent=2, default=str))
        else:
            raise DashboardError(f"Output {path} must end in .json or .csv; choose one of those.")
        return path


def discover_from_codes(
    bundle: Bundle,
    text_codes: dict[str, TextCodes],
    settings: DiscoverSettings | None = None,
    text: str | None = None,
    n_examples: int = 3,
    cache_extra: dict[str, Any] | None = None,
) -> DiscoveryResult:
    """Rank both SAEs' features on a text whose codes the caller has computed.

    Args:
        bundle: an opened bundle with dashboards.
        text_codes: side -> that SAE's codes on the text (one or both sides).
        settings: scoring settings (defaults: :class:`DiscoverSettings`).
        text: the text, for the result and the cache key (default: side A's, else B's).
        n_examples: top corpus examples attached per returned feature.
        cache_extra: extra cache-key inputs (see :func:`discovery_cache_key`).

    Returns:
        The :class:`DiscoveryResult`.
    """
    settings = settings or DiscoverSettings()
    if not text_codes:
        raise ValueError("discover_from_codes needs the codes of at least one side")
    if not has_dashboards(bundle):
        raise BundleError(
            f"Bundle {bundle.path} has no dashboards, which discovery needs for its thresholds; add them with "
            "core.dashboards.build_dashboards (or `python -m core dashboards --bundle ...`)."
        )
    if text is None:
        text = next(tc.text for tc in text_codes.values())
    ranked: dict[str, pl.DataFrame] = {}
    tables, example_frames = [], []
    for side, tc in text_codes.items():
        if side not in ("a", "b"):
            raise DashboardError(f"Side {side!r} does not exist; choose 'a' or 'b'.")
        tau = side_thresholds(bundle, side, settings)
        if tc.codes.n_features != tau.shape[0]:
            raise DashboardError(
                f"The text's codes for side {side} have {tc.codes.n_features} features but the bundle's SAE has "
                f"{tau.shape[0]}; encode the text with the bundle's SAE."
            )
        restrict = settings.restrict(side)
        bad = [f for f in restrict if not 0 <= f < tau.shape[0]]
        if bad:
            raise DashboardError(
                f"restrict_features_{side} names feature {bad[0]}, which side {side} does not have "
                f"(it has {tau.shape[0]}); use ids 0..{tau.shape[0] - 1}."
            )
        if tc.codes.n_rows == 0:
            raise DashboardError("The text has no tokens to analyse; give a non-empty text.")
        background = background_mean(bundle, side, settings.background_units, settings.seed)
        full = score_features(tc.codes, tau, settings, background=background, restrict=restrict)
        ranked[side] = full
        top = full.head(settings.return_top_x)
        partners = feature_partners(bundle, side).select(
            "feature",
            pl.col("partners").list.first().alias("partner"),
            pl.col("partner_corr").list.first().alias("partner_corr"),
        )
        positions = top["top_token"].to_numpy()
        hook = bundle.manifest.get("sides", {}).get(side, {}).get("hook")
        tables.append(
            top.join(partners, on="feature", how="left").with_columns(
                pl.col("feature").alias("feature_id"),
                pl.lit(side).alias("side"),
                pl.lit(hook, pl.String).alias("hook"),
                pl.Series("top_span_text", [tc.span(int(p), settings.span_tokens) for p in positions], pl.String),
                pl.Series("top_token_text", [tc.tokens[int(p)] for p in positions], pl.String),
            )
        )
        example_frames.append(
            bundle.examples(side)
            .filter(
                (pl.col("kind") == "top")
                & (pl.col("rank") < n_examples)
                & pl.col("feature").is_in(top["feature"].implode())
            )
            .select(pl.lit(side).alias("side"), "feature", "rank", "unit", "act", "window_text", "center")
            .collect()
        )
    table = pl.concat(tables, how="vertical_relaxed").select(
        *DISCOVERY_COLUMNS, "rank", "tau", "top_token", "top_token_text"
    )
    if "a" in ranked and "b" in ranked and bundle.has("assignment"):
        drift = compute_rank_drift(ranked["a"], ranked["b"], bundle.assignment().collect(), settings.return_top_x)
    else:
        drift = pl.DataFrame(
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
    return DiscoveryResult(
        table=table,
        ranked=ranked,
        drift=drift,
        examples=pl.concat(example_frames),
        settings=settings,
        text=text,
        key=discovery_cache_key(text, settings, bundle, cache_extra),
    )
