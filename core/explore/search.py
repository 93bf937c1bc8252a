"""Find features in a bundle: by id, or by a token they fire on; each with its partners.

Partners come from ``assignment.parquet`` (the chosen pairing: ``feature_a``, ``feature_b``,
``method``, ``corr``, ``kept``, ``reason``). A bundle without an assignment still searches;
its results carry empty partner lists.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import polars as pl

from core.bundle.reader import Bundle
from core.dashboards.read import load_dashboards
from core.errors import DashboardError
from core.sides import SIDES, check_side, other_side
from core.tokens import normalize_token, normalize_token_expr

PARTNER_COLUMNS = ("partners", "partner_corr", "partner_kept")
TOKEN_RESULT_COLUMNS = (
    "side",
    "feature",
    "token",
    "mean_act",
    "mean_act_active",
    "count",
    "token_occurrences",
    "coverage",
    "in_top_tokens",
    "in_top_examples",
    *PARTNER_COLUMNS,
)


def feature_partners(bundle: Bundle, side: str) -> pl.DataFrame:
    """Every feature of ``side`` that has partners, with them, strongest correlation first.

    Args:
        bundle: an opened bundle.
        side: ``"a"`` or ``"b"``.

    Returns:
        Columns ``feature`` (i32), ``partners`` (list[i32], features of the other side),
        ``partner_corr`` (list[f64]), ``partner_kept`` (list[bool], survived the filters).
        Empty (same columns) when the bundle has no assignment.
    """
    check_side(side)
    schema = pl.Schema(
        {
            "feature": pl.Int32(),
            "partners": pl.List(pl.Int32),
            "partner_corr": pl.List(pl.Float64),
            "partner_kept": pl.List(pl.Boolean),
        }
    )
    if not bundle.has("assignment"):
        return pl.DataFrame(schema=schema)
    mine, theirs = f"feature_{side}", f"feature_{other_side(side)}"
    return (
        bundle.assignment()
        .select(
            pl.col(mine).cast(pl.Int32).alias("feature"),
            pl.col(theirs).cast(pl.Int32).alias("partner"),
            pl.col("corr").cast(pl.Float64),
            pl.col("kept").cast(pl.Boolean),
        )
        .sort(["feature", "corr", "partner"], descending=[False, True, False], nulls_last=True)
        .group_by("feature", maintain_order=True)
        .agg(
            pl.col("partner").alias("partners"),
            pl.col("corr").alias("partner_corr"),
            pl.col("kept").alias("partner_kept"),
        )
        .collect()
        .cast(schema)
    )


def _attach_partners(frame: pl.DataFrame, bundle: Bundle, side_column: str = "side") -> pl.DataFrame:
    """Left-join partner lists (empty lists where none) onto a frame with side and feature."""
    parts = []
    for side in SIDES:
        rows = frame.filter(pl.col(side_column) == side)
        if rows.height == 0:
            continue
        joined = rows.join(feature_partners(bundle, side), on="feature", how="left")
        parts.append(joined)
    if not parts:
        return frame.with_columns(
            pl.lit([], pl.List(pl.Int32)).alias("partners"),
            pl.lit([], pl.List(pl.Float64)).alias("partner_corr"),
            pl.lit([], pl.List(pl.Boolean)).alias("partner_kept"),
        )
    out = pl.concat(parts)
    return out.with_columns(pl.col(c).fill_null(pl.lit([], out.schema[c])) for c in PARTNER_COLUMNS)


@dataclass(frozen=True, eq=False)
class FeatureCard:
    """Everything the bundle knows about one feature.

    Attributes:
        side: ``"a"`` or ``"b"``.
        feature: the feature id.
        hook: the side's hook (from the manifest), or ``None``.
        dashboard: the feature's dashboard row (histogram, quantiles, top tokens, ...).
        examples: its examples (top and quantile), ``EXAMPLE_COLUMNS``.
        partners: its partners on the other side: ``partner``, ``corr``, ``kept``,
            ``reason``, ``method`` (empty without an assignment).
    """

    side: str
    feature: int
    hook: str | None
    dashboard: dict[str, Any]
    examples: pl.DataFrame
    partners: pl.DataFrame


def _n_features(bundle: Bundle, side: str) -> int:
    return int(load_dashboards(bundle, side).select(pl.len()).collect().item())


def check_feature_ids(bundle: Bundle, side: str, features: list[int] | tuple[int, ...]) -> None:
    """Raise :class:`DashboardError` naming the first id that is not a feature of ``side``."""
    n = _n_features(bundle, side)
    bad = [f for f in features if not isinstance(f, int) or not 0 <= f < n]
    if bad:
        raise DashboardError(
            f"Feature {bad[0]!r} does not exist on side {side} (it has {n} features); use ids 0..{n - 1}."
        )


def search_feature(bundle: Bundle, side: str, feature: int) -> FeatureCard:
    """Look a feature up by id.

    Args:
        bundle: an opened bundle with dashboards.
        side: ``"a"`` or ``"b"``.
        feature: the feature id.

    Returns:
        Its :class:`FeatureCard`.
    """
    check_side(side)
    check_feature_ids(bundle, side, [feature])
    dashboard = load_dashboards(bundle, side).filter(pl.col("feature") == feature).collect().row(0, named=True)
    examples = bundle.examples(side).filter(pl.col("feature") == feature).sort(["kind", "rank"]).collect()
    mine, theirs = f"feature_{side}", f"feature_{other_side(side)}"
    if bundle.has("assignment"):
        partners = (
            bundle.assignment()
            .filter(pl.col(mine) == feature)
            .select(pl.col(theirs).cast(pl.Int32).alias("partner"), "corr", "kept", "reason", "method")
            .sort(["corr", "partner"], descending=[True, False], nulls_last=True)
            .collect()
        )
    else:
        partners = pl.DataFrame(
            schema={
                "partner": pl.Int32,
                "corr": pl.Float64,
                "kept": pl.Boolean,
                "reason": pl.String,
                "method": pl.String,
            }
        )
    hook = bundle.manifest.get("sides", {}).get(side, {}).get("hook")
    return FeatureCard(side, feature, hook, dashboard, examples, partners)


def search_token(
    bundle: Bundle,
    token: str,
    sides: tuple[str, ...] = SIDES,
    exact: bool = False,
    limit: int | None = 50,
) -> pl.DataFrame:
    """Features that fire on a token: those whose top tokens or top examples contain it.

    Ranked by the feature's mean activation over every occurrence of the token in the corpus
    (zeros included), so a feature that fires on the token reliably outranks one that fires
    strongly but rarely; ``mean_act_active`` is the mean over the occurrences it fires on.

    Args:
        bundle: an opened bundle with dashboards.
        token: the token text; matched after :func:`normalize_token` unless ``exact``.
        sides: which SAEs to search.
        exact: match the unit text exactly (leading spaces and markers included).
        limit: keep this many results (``None``: all).

    Returns:
        :data:`TOKEN_RESULT_COLUMNS`, best first.
    """
    if not token or (not exact and not normalize_token(token)):
        raise DashboardError("The search token is empty; type the token to look for.")
    for side in sides:
        check_side(side)
    wanted = token if exact else normalize_token(token)

    def matches(column: str) -> pl.Expr:
        return (pl.col(column) if exact else normalize_token_expr(column)) == wanted

    occurrences = bundle.units().filter(matches("text")).group_by("text").agg(pl.len().alias("occ")).collect()
    n_occ = int(occurrences["occ"].sum()) if occurrences.height else 0
    parts = []
    for side in sides:
        stats = (
            load_dashboards(bundle, side)
            .select("feature", "token_stats", "top_tokens_by_count", "top_tokens_by_mean")
            .explode("token_stats")
            .unnest("token_stats")
            .filter(pl.col("token").is_not_null() & matches("token"))
            .with_columns(
                (
                    pl.col("top_tokens_by_count").list.contains(pl.col("token"))
                    | pl.col("top_tokens_by_mean").list.contains(pl.col("token"))
                ).alias("listed")
            )
            .group_by("feature")
            .agg(
                pl.col("count").sum(),
                (pl.col("count") * pl.col("mean_act").cast(pl.Float64)).sum().alias("act_sum"),
                pl.col("listed").any().alias("in_top_tokens"),
                pl.col("token").sort().first(),
            )
            .collect()
        )
        if stats.height == 0:
            continue
        top_units = (
            bundle.examples(side)
            .filter((pl.col("kind") == "top") & pl.col("feature").is_in(stats["feature"].implode()))
            .select("feature", "unit")
            .collect()
        )
        texts = bundle.units().select("unit", "text").filter(pl.col("unit").is_in(top_units["unit"].implode()))
        in_examples = (
            top_units.join(texts.collect(), on="unit")
            .filter(matches("text"))
            .select("feature")
            .unique()
            .with_columns(pl.lit(True).alias("in_top_examples"))
        )
        parts.append(
            stats.join(in_examples, on="feature", how="left").with_columns(
                pl.lit(side).alias("side"), pl.col("in_top_examples").fill_null(False)
            )
        )
    empty = pl.Schema(
        {
            "side": pl.String,
            "feature": pl.Int32,
            "token": pl.String,
            "mean_act": pl.Float64,
            "mean_act_active": pl.Float64,
            "count": pl.Int64,
            "token_occurrences": pl.Int64,
            "coverage": pl.Float64,
            "in_top_tokens": pl.Boolean,
            "in_top_examples": pl.Boolean,
        }
    )
    if not parts:
        found = pl.DataFrame(schema=empty)
    else:
        found = (
            pl.concat(parts)
            .with_columns(
                (pl.col("act_sum") / max(n_occ, 1)).alias("mean_act"),
                (pl.col("act_sum") / pl.col("count")).alias("mean_act_active"),
                pl.lit(n_occ, pl.Int64).alias("token_occurrences"),
                (pl.col("count") / max(n_occ, 1)).alias("coverage"),
            )
            .select(list(empty))
            .cast(empty)
            .sort(["mean_act", "count", "side", "feature"], descending=[True, True, False, False])
        )
        if limit is not None:
            found = found.head(limit)
    return _attach_partners(found, bundle).select(TOKEN_RESULT_COLUMNS)
