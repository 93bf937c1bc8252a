"""Pair filters: non-concept tokens, the correlation threshold, dead and always-on features.

A filter never deletes a pair: it sets ``kept`` to False and records why, so the UI can show
what was dropped and the user can loosen a rule. Reason codes (in this order of priority):

- ``dead_a`` / ``dead_b``: the feature has zero variance on these units (never fires, or constant);
- ``always_on_a`` / ``always_on_b``: the feature fires on at least ``max_freq`` of the units;
- ``below_threshold``: correlation not above ``min_corr`` (the paper keeps r > 0.1);
- ``nonconcept_a`` / ``nonconcept_b``: one of the feature's top tokens is a non-concept token;
- ``no_shared_token``: (optional) the two features share none of their top tokens;
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
        top_tokens: per feature, the normalised top tokens (for the shared-token rule); empty
            when no features frame was given.
    """

    dead: np.ndarray
    always_on: np.ndarray
    nonconcept: np.ndarray
    top_tokens: tuple[frozenset[str], ...]


def top_token_sets(features: pl.DataFrame | None, n_features: int, top_n: int = 5) -> tuple[frozenset[str], ...]:
    """The normalised first ``top_n`` tokens of each feature, from a features frame.

    Args:
        features: a frame with ``feature`` and ``top_tokens`` (list of str), or None.
        n_features: number of features (features missing from the frame get no tokens).
        top_n: how many of each list to use.

    Returns:
        One frozenset per feature id.
    """
    sets: list[frozenset[str]] = [frozenset()] * n_features
    if features is None:
        return tuple(sets)
    missing = [c for c in ("feature", "top_tokens") if c not in features.columns]
    if missing:
        raise MatchingError(f"The features table lacks column(s) {missing}; rebuild the bundle's features.")
    for feature, tokens in zip(features["feature"].to_list(), features["top_tokens"].to_list(), strict=True):
        if feature is not None and 0 <= feature < n_features and tokens:
            sets[feature] = frozenset(normalize_token(t) for t in tokens[:top_n] if t is not None)
    return tuple(sets)


def compute_side_flags(
    moments: FeatureMoments,
    features: pl.DataFrame | None,
    nonconcept_tokens: Iterable[str],
    top_n: int = 5,
    max_freq: float = 0.5,
) -> SideFlags:
    """Flags of one side: dead and always-on from the codes, non-concept from the top tokens.

    Dead and always-on come from the very codes that were correlated, so they agree with
    the correlations; the features frame supplies only ``top_tokens``.

    Args:
        moments: the side's :class:`~core.correlate.FeatureMoments`.
        features: the side's features frame (``feature``, ``top_tokens``), or None.
        nonconcept_tokens: tokens (normalised or not) that mark a feature as non-concept.
        top_n: how many top tokens are checked.
        max_freq: firing frequency from which a feature counts as always on.

    Returns:
        The side's :class:`SideFlags`.
    """
    tokens = top_token_sets(features, moments.n_features, top_n)
    bad = frozenset(normalize_token(t) for t in nonconcept_tokens)
    nonconcept = np.fromiter((bool(s & bad) for s in tokens), dtype=bool, count=len(tokens))
    return SideFlags(moments.is_dead, moments.freq >= max_freq, nonconcept, tokens)


def apply_filters(
    pairs: pl.DataFrame,
    flags_a: SideFlags,
    flags_b: SideFlags,
    min_corr: float = 0.1,
    require_shared_token: bool = False,
    alpha: float | None = None,
) -> pl.DataFrame:
    """Mark each pair kept or dropped, with every reason it was dropped for.

    Args:
        pairs: a frame with ``feature_a``, ``feature_b``, ``corr`` (and ``q`` when ``alpha`` is set).
        flags_a: :func:`compute_side_flags` of side A.
        flags_b: :func:`compute_side_flags` of side B.
        min_corr: pairs need ``corr > min_corr``.
        require_shared_token: also drop pairs whose top tokens are disjoint.
        alpha: if set, also drop pairs with ``q > alpha`` (or no q).

    Returns:
        ``pairs`` with ``kept`` (bool), ``reason`` (the first reason in :data:`REASONS` order,
        null when kept) and ``reasons`` (all of them, a list of str).
    """
    fa = pairs["feature_a"].to_numpy().astype(np.int64)
    fb = pairs["feature_b"].to_numpy().astype(np.int64)
    corr = pairs["corr"].to_numpy().astype(np.float64)
    checks: list[tuple[str, np.ndarray]] = [
        ("dead_a", flags_a.dead[fa]),
        ("dead_b", flags_b.dead[fb]),
        ("always_on_a", flags_a.always_on[fa]),
        ("always_on_b", flags_b.always_on[fb]),
        ("below_threshold", ~(np.nan_to_num(corr, nan=-np.inf) > min_corr)),
        ("nonconcept_a", flags_a.nonconcept[fa]),
        ("nonconcept_b", flags_b.nonconcept[fb]),
    ]
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
