"""Pair filters: non-concept tokens, the correlation threshold, dead and always-on features.

A filter never deletes a pair: it sets ``kept`` to False and records why, so the UI can show
what was dropped and the user can loosen a rule. Reason codes (in this order of priority):

- ``dead_a`` / ``dead_b``: the feature has zero variance on these units (never fires, or constant);
- ``always_on_a`` / ``always_on_b``: the feature fires on at least ``max_freq`` of the units;
- ``below_threshold``: correlation not above ``min_corr`` (the paper keeps r > 0.1; the ``paper``
  preset applies it after the de-duplication, :func:`apply_threshold`);
- ``nonconcept_a`` / ``nonconcept_b``: one of the feature's label tokens is a non-concept token;
- ``no_shared_token``: (optional) the two features share none of their label tokens;
- ``not_significant``: (optional) the pair's q-value is above ``alpha``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl

from core.errors import MatchingError
from core.matching.moments import FeatureMoments
from core.tokens import normalize_token

REASONS = (
    "dead_a",
    "dead_b",
    "always_on_a",
    "always_on_b",
    "below_threshold",
    "nonconcept_a",
    "nonconcept_b",
    "no_shared_token",
    "not_significant",
)


@dataclass(frozen=True, eq=False)
class SideFlags:
    """Per-feature facts one side's filters need.

    Attributes:
        dead: bool [F], zero variance on the matched units.
        always_on: bool [F], firing frequency at or above ``max_freq``.
        nonconcept: bool [F], a top token is in the non-concept list.
        top_tokens: per feature, its label tokens in comparison form (for the shared-token rule);
            empty when no labels were given.
    """

    dead: np.ndarray
    always_on: np.ndarray
    nonconcept: np.ndarray
    top_tokens: tuple[frozenset[str], ...]


def top_token_lists(features: pl.DataFrame | None, n_features: int, top_n: int = 5) -> tuple[tuple[str, ...], ...]:
    """The first ``top_n`` ``top_tokens`` of each feature, as stored (surface strings, in order).

    Args:
        features: a frame with ``feature`` and ``top_tokens`` (list of str), or None.
        n_features: number of features (features missing from the frame get no tokens).
        top_n: how many of each list to use.

    Returns:
        One tuple per feature id.
    """
    lists: list[tuple[str, ...]] = [()] * n_features
    if features is None:
        return tuple(lists)
    missing = [c for c in ("feature", "top_tokens") if c not in features.columns]
    if missing:
        raise MatchingError(f"The features table lacks column(s) {missing}; rebuild the bundle's features.")
    for feature, tokens in zip(features["feature"].to_list(), features["top_tokens"].to_list(), strict=True):
        if feature is not None and 0 <= feature < n_features and tokens:
            lists[feature] = tuple(t for t in tokens[:top_n] if t is not None)
    return tuple(lists)


def top_token_sets(features: pl.DataFrame | None, n_features: int, top_n: int = 5) -> tuple[frozenset[str], ...]:
    """The normalised first ``top_n`` tokens of each feature, from a features frame.

    Args:
        features: a frame with ``feature`` and ``top_tokens`` (list of str), or None.
        n_features: number of features (features missing from the frame get no tokens).
        top_n: how many of each list to use.

    Returns:
        One frozenset per feature id.
    """
    return tuple(frozenset(normalize_token(t) for t in lst) for lst in top_token_lists(features, n_features, top_n))


def compute_side_flags(
    moments: FeatureMoments,
    features: pl.DataFrame | None = None,
    nonconcept_tokens: Iterable[str] = (),
    top_n: int = 5,
    max_freq: float = 0.5,
    label_sets: Sequence[frozenset[str]] | None = None,
) -> SideFlags:
    """Flags of one side: dead and always-on from the codes, non-concept from the label tokens.

    Dead and always-on come from the very codes that were correlated, so they agree with
    the correlations; the label tokens come from ``label_sets`` when given (already in the form
    they are compared in, and so must ``nonconcept_tokens`` be), else from the features frame's
    first ``top_n`` ``top_tokens``, normalised.

    Args:
        moments: the side's :class:`~core.matching.moments.FeatureMoments`.
        features: the side's features frame (``feature``, ``top_tokens``), or None.
        nonconcept_tokens: tokens that mark a feature as non-concept (normalised here unless
            ``label_sets`` is given).
        top_n: how many top tokens are checked.
        max_freq: firing frequency from which a feature counts as always on.
        label_sets: per feature, its label tokens in comparison form (see core.matching.labels).

    Returns:
        The side's :class:`SideFlags`.
    """
    if label_sets is None:
        tokens = top_token_sets(features, moments.n_features, top_n)
        bad = frozenset(normalize_token(t) for t in nonconcept_tokens)
    else:
        tokens, bad = tuple(label_sets), frozenset(nonconcept_tokens)
        if len(tokens) != moments.n_features:
            raise ValueError(f"label_sets has {len(tokens)} entries for {moments.n_features} features")
    nonconcept = np.fromiter((bool(s & bad) for s in tokens), dtype=bool, count=len(tokens))
    return SideFlags(moments.is_dead, moments.freq >= max_freq, nonconcept, tokens)


def apply_filters(
    pairs: pl.DataFrame,
    flags_a: SideFlags,
    flags_b: SideFlags,
    min_corr: float | None = 0.1,
    require_shared_token: bool = False,
    alpha: float | None = None,
    filter_always_on: bool = True,
) -> pl.DataFrame:
    """Mark each pair kept or dropped, with every reason it was dropped for.

    Args:
        pairs: a frame with ``feature_a``, ``feature_b``, ``corr`` (and ``q`` when ``alpha`` is set).
        flags_a: :func:`compute_side_flags` of side A.
        flags_b: :func:`compute_side_flags` of side B.
        min_corr: pairs need ``corr > min_corr`` (None: no threshold here, see :func:`apply_threshold`).
        require_shared_token: also drop pairs whose label tokens are disjoint.
        alpha: if set, also drop pairs with ``q > alpha`` (or no q).
        filter_always_on: drop pairs with an always-on feature.

    Returns:
        ``pairs`` with ``kept`` (bool), ``reason`` (the first reason in :data:`REASONS` order,
        null when kept) and ``reasons`` (all of them, a list of str).
    """
    fa = pairs["feature_a"].to_numpy().astype(np.int64)
    fb = pairs["feature_b"].to_numpy().astype(np.int64)
    corr = pairs["corr"].to_numpy().astype(np.float64)
    checks: list[tuple[str, np.ndarray]] = [("dead_a", flags_a.dead[fa]), ("dead_b", flags_b.dead[fb])]
    if filter_always_on:
        checks += [("always_on_a", flags_a.always_on[fa]), ("always_on_b", flags_b.always_on[fb])]
    if min_corr is not None:
        checks.append(("below_threshold", ~(np.nan_to_num(corr, nan=-np.inf) > min_corr)))
    checks += [("nonconcept_a", flags_a.nonconcept[fa]), ("nonconcept_b", flags_b.nonconcept[fb])]
    if require_shared_token:
        shared = np.fromiter(
            (bool(flags_a.top_tokens[a] & flags_b.top_tokens[b]) for a, b in zip(fa, fb, strict=True)),
            dtype=bool,
            count=len(fa),
        )
        checks.append(("no_shared_token", ~shared))
    if alpha is not None:
        q = pairs["q"].to_numpy().astype(np.float64) if "q" in pairs.columns else np.full(len(fa), np.nan)
        checks.append(("not_significant", ~(np.nan_to_num(q, nan=np.inf) <= alpha)))
    return pairs.with_columns(**_reason_columns(checks, len(fa)))


def apply_threshold(pairs: pl.DataFrame, min_corr: float) -> pl.DataFrame:
    """Drop the still-kept pairs with ``corr <= min_corr`` (reason ``below_threshold``), after the rest.

    The published pipeline applies its threshold only after the greedy de-duplication, so a
    pair below it still claims its A feature there; this is that last step. A pair dropped
    earlier keeps its first reason and gets ``below_threshold`` appended to ``reasons``.

    Args:
        pairs: a frame from :func:`apply_filters` (and the de-duplication).
        min_corr: pairs need ``corr > min_corr``.

    Returns:
        ``pairs`` with ``kept``, ``reason`` and ``reasons`` updated.
    """
    corr = pairs["corr"].to_numpy().astype(np.float64)
    low = ~(np.nan_to_num(corr, nan=-np.inf) > min_corr)
    kept = pairs["kept"].to_numpy()
    old = pairs["reason"].to_list()
    reason = ["below_threshold" if k and lo else r for r, k, lo in zip(old, kept, low, strict=True)]
    reasons = [
        [*(rs or []), "below_threshold"] if lo else rs for rs, lo in zip(pairs["reasons"].to_list(), low, strict=True)
    ]
    return pairs.with_columns(
        kept=pl.Series(kept & ~low, dtype=pl.Boolean),
        reason=pl.Series(reason, dtype=pl.String),
        reasons=pl.Series(reasons, dtype=pl.List(pl.String)),
    )


def _reason_columns(checks: Sequence[tuple[str, np.ndarray]], n: int) -> dict[str, pl.Series]:
    reasons: list[list[str]] = [[] for _ in range(n)]
    for name, hit in checks:
        for i in np.flatnonzero(hit):
            reasons[i].append(name)
    return {
        "kept": pl.Series([not r for r in reasons], dtype=pl.Boolean),
        "reason": pl.Series([r[0] if r else None for r in reasons], dtype=pl.String),
        "reasons": pl.Series(reasons, dtype=pl.List(pl.String)),
    }
