"""The matching pipeline a preset runs after the correlation: filters, de-duplication, threshold.

``featurebridge`` (the default):
  1. the pairing of ``method`` (the exact max-weight 1-1 on the top-k candidates by default);
  2. every filter at once: dead, always-on, ``corr > min_corr``, non-concept labels, (optionally)
     shared label token, and ``q <= alpha`` under the document-stratified test; a dropped pair
     takes nothing;
  3. (method ``greedy`` only) the greedy de-duplication of the surviving pairs.

``paper`` (Lan et al., the published 1-1 pipeline), in this order:
  1. each live B feature with its best A feature by Pearson r over all units (many-to-1);
  2. labels: the decoded tokens of each feature's 5 highest activations, repeats allowed, in the
     tokenizer's vocabulary form (core.matching.labels);
  3. drop the pair if either label list holds a token of the paper's junk list, or if the two label
     lists share no token (exact strings);
  4. walk the surviving pairs in ascending B id; the first B to claim an A keeps it
     (``duplicate_a`` for the rest);
  5. only then drop the pairs with r <= 0.1 (a pair below it has already claimed its A in step 4);
  6. no always-on and no significance filter.

Both are one function here (:func:`apply_pipeline`), driven by the settings' fields; the order of
step 4 and 5 is ``threshold_after_dedup``.
"""

from __future__ import annotations

import polars as pl

from core.matching.assign import greedy_one_to_one
from core.matching.filters import SideFlags, apply_filters, apply_threshold
from core.matching.settings import MatchSettings


def apply_pipeline(
    pairs: pl.DataFrame, flags_a: SideFlags, flags_b: SideFlags, settings: MatchSettings, method: str | None = None
) -> pl.DataFrame:
    """Filter, de-duplicate and threshold a pairing in the order the settings say.

    Args:
        pairs: ``feature_a``, ``feature_b``, ``corr`` (and ``q`` when significance is required) of
            the pairing of ``method`` (for "greedy": the many-to-1 B -> A pairs).
        flags_a: side A's flags (dead, always-on, non-concept, label sets).
        flags_b: side B's flags.
        settings: the matching settings.
        method: the pairing method (default ``settings.method``).

    Returns:
        ``pairs`` with ``kept``, ``reason`` (first reason, null when kept) and ``reasons`` (all),
        sorted by ``feature_b`` for "greedy".
    """
    method = method or settings.method
    late = settings.threshold_after_dedup and method == "greedy"
    frame = apply_filters(
        pairs,
        flags_a,
        flags_b,
        None if late else settings.min_corr,
        settings.require_shared_token,
        settings.alpha if settings.require_significant else None,
        settings.filter_always_on,
    )
    if method == "greedy":
        frame = greedy_one_to_one(frame)
    if late:
        frame = apply_threshold(frame, settings.min_corr)
    return frame
