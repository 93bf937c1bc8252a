"""Turn correlation top-k lists into pairings, and summarise them.

Methods (each returns a frame with ``feature_a``, ``feature_b``, ``corr``):

- ``many_to_1_ab``: every live A feature with its best B partner (B features may repeat);
- ``many_to_1_ba``: every live B feature with its best A partner (A features may repeat);
- ``mutual``: pairs that are each other's best partner;
- ``greedy``: the paper's de-duplication (Lan et al.) of ``many_to_1_ba``: after the filters,
  walk the B features in ascending id order and keep, for each A feature, only the first B
  feature that chose it; later B features that chose an already-taken A feature are dropped
  with reason ``duplicate_a``. The walk is by id, not by correlation, as in the published code
  (the ``paper`` preset runs it between the label filters and the threshold; its tests in
  tests/core/matching/test_presets.py check the whole published order);
- ``hungarian``: the 1-1 pairing maximising the summed correlation over the full dense
  matrix (``scipy.optimize.linear_sum_assignment``), while the matrix fits;
- ``sparse``: the exact maximum-weight 1-1 pairing restricted to the top-k candidate graph
  (``scipy.sparse.csgraph.min_weight_full_bipartite_matching``). Leaving a feature unmatched
  is always allowed: it maximises ``sum over matched pairs of (r - t)`` with ``t`` the
  unmatched value (the correlation threshold by default), so a pair is only used if it
  beats leaving both features alone. See :func:`assign_sparse` for the construction.

Splits (1 -> k groups) and orphans (no partner above a threshold) are read off the top-k.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp
from scipy.optimize import linear_sum_assignment
from scipy.sparse.csgraph import min_weight_full_bipartite_matching

from core.errors import MatchingError
from core.matching.correlate import TopK
from core.matching.settings import ASSIGN_METHODS

_PAIR_SCHEMA = {"feature_a": pl.Int64, "feature_b": pl.Int64, "corr": pl.Float64}


def _pairs(fa: np.ndarray, fb: np.ndarray, corr: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        {"feature_a": np.asarray(fa, np.int64), "feature_b": np.asarray(fb, np.int64), "corr": np.asarray(corr, float)},
        schema=_PAIR_SCHEMA,
    )


def assign_many_to_one(topk: TopK, direction: str) -> pl.DataFrame:
    """Each feature of one side with its best partner on the other (argmax per side).

    Args:
        topk: that side's top-k lists (``ab`` for "a->b", ``ba`` for "b->a").
        direction: "a->b" (one row per A feature) or "b->a" (one row per B feature).

    Returns:
        ``feature_a``, ``feature_b``, ``corr``; features without a live partner are left out.
    """
    own = np.flatnonzero(topk.index[:, 0] >= 0)
    other, corr = topk.index[own, 0], topk.score[own, 0]
    if direction == "a->b":
        return _pairs(own, other, corr)
    if direction == "b->a":
        return _pairs(other, own, corr).sort("feature_b")
    raise ValueError(f"direction must be 'a->b' or 'b->a', got {direction!r}")


def assign_mutual(ab: TopK, ba: TopK) -> pl.DataFrame:
    """Pairs in which each feature is the other's best partner.

    Args:
        ab: top-k of A features over B.
        ba: top-k of B features over A.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``, sorted by ``feature_a``.
    """
    a = np.flatnonzero(ab.index[:, 0] >= 0)
    b = ab.index[a, 0]
    mutual = ba.index[b, 0] == a
    return _pairs(a[mutual], b[mutual], ab.score[a[mutual], 0])


def greedy_one_to_one(pairs: pl.DataFrame) -> pl.DataFrame:
    """The paper's greedy de-duplication of a many-to-1 (B -> A) pairing (step 4 of the ``paper`` preset).

    Walk the rows in ascending ``feature_b`` order; a kept row whose ``feature_a`` was
    already taken by an earlier kept row is dropped with reason ``duplicate_a``. Rows that
    were already dropped (by filters) neither take an A feature nor change.

    Args:
        pairs: ``feature_a``, ``feature_b``, ``corr``, and optionally ``kept`` / ``reason`` /
            ``reasons`` from :func:`core.filters.apply_filters` (all rows kept if absent).

    Returns:
        The rows sorted by ``feature_b`` with ``kept``, ``reason`` and ``reasons`` updated.
    """
    frame = pairs.sort("feature_b")
    if "kept" not in frame.columns:
        frame = frame.with_columns(
            kept=pl.lit(True), reason=pl.lit(None, dtype=pl.String), reasons=pl.lit([], dtype=pl.List(pl.String))
        )
    kept = frame["kept"].to_numpy().copy()
    reason = frame["reason"].to_list()
    reasons = frame["reasons"].to_list()
    taken: set[int] = set()
    for i, a in enumerate(frame["feature_a"].to_list()):
        if not kept[i]:
            continue
        if a in taken:
            kept[i] = False
            reason[i] = "duplicate_a"
            reasons[i] = [*(reasons[i] or []), "duplicate_a"]
        else:
            taken.add(a)
    return frame.with_columns(
        kept=pl.Series(kept, dtype=pl.Boolean),
        reason=pl.Series(reason, dtype=pl.String),
        reasons=pl.Series(reasons, dtype=pl.List(pl.String)),
    )


def hungarian_fits(n_a: int, n_b: int, max_size: int) -> bool:
    """Whether a dense Hungarian solve is allowed: the larger side has at most ``max_size`` features."""
    return max(n_a, n_b) <= max_size


def assign_hungarian(dense: np.ndarray) -> pl.DataFrame:
    """The 1-1 pairing maximising total correlation over the full matrix (scipy's solver).

    Dead features (nan rows or columns) are left out before solving; with unequal live
    counts, every feature of the smaller side is paired.

    Args:
        dense: [Fa, Fb] correlations, nan for dead features.

    Returns:
        ``feature_a``, ``feature_b``, ``corr``, sorted by ``feature_a``.
    """
    live_a = np.flatnonzero(~np.all(np.isnan(dense), axis=1))
    live_b = np.flatnonzero(~np.all(np.isnan(dense), axis=0))
    sub = np.nan_to_num(dense[np.ix_(live_a, live_b)].astype(np.float64), nan=-1.0)
    rows, cols = linear_sum_assignment(sub, maximize=True)
    return _pairs(live_a[rows], live_b[cols], sub[rows, cols])


def assign_sparse(ab: TopK, ba: TopK, unmatched_value: float = 0.1) -> pl.DataFrame:
    """Exact maximum-weight 1-1 pairing on the top-k candidate graph, unmatched allowed.

    Candidate edges are the union of both directions' top-k lists with ``r > t``
    (``t = unmatched_value``). scipy's solver needs a full matching, so each feature gets a
    private "unmatched" twin: left nodes are A plus a copy B' of B, right nodes are B plus
    a copy A' of A. Edges and costs (C = 2 keeps every cost positive):

    - a - b for each candidate, cost ``C - r_ab``;
    - b' - a' for each candidate (mirror), cost ``C``;
    - a - a' and b' - b (stay unmatched), cost ``C - t / 2`` each.

    A perfect matching always exists (everyone unmatched), and every perfect matching has
    the same number of edges, so minimising cost maximises ``sum over matched (r_ab - t)``:
    a pair is used only when it beats leaving both of its features unmatched.

    Args:
        ab: top-k of A features over B.
        ba: top-k of B features over A.
        unmatched_value: ``t``, the value of leaving a feature unmatched, in correlation units.

    Returns:
        ``feature_a``, ``feature_b``, ``corr`` of the matched pairs, sorted by ``feature_a``.
    """
    n_a, n_b = ab.index.shape[0], ba.index.shape[0]
    fa = np.concatenate([np.repeat(np.arange(n_a), ab.k), ba.index.reshape(-1)])
    fb = np.concatenate([ab.index.reshape(-1), np.repeat(np.arange(n_b), ba.k)])
    r = np.concatenate([ab.score.reshape(-1), ba.score.reshape(-1)])
    ok = (fa >= 0) & (fb >= 0) & (np.nan_to_num(r, nan=-np.inf) > unmatched_value)
    edges = pl.DataFrame({"a": fa[ok], "b": fb[ok], "r": r[ok]}).unique(["a", "b"]).sort(["a", "b"])
    ea, eb, er = edges["a"].to_numpy(), edges["b"].to_numpy(), edges["r"].to_numpy()
    if ea.size == 0:
        return _pairs(np.zeros(0), np.zeros(0), np.zeros(0))
    big = 2.0
    stay = big - unmatched_value / 2.0
    ids_a, ids_b = np.arange(n_a), np.arange(n_b)
    rows = np.concatenate([ea, n_a + eb, ids_a, n_a + ids_b])
    cols = np.concatenate([eb, n_b + ea, n_b + ids_a, ids_b])
    cost = np.concatenate([big - er, np.full(ea.size, big), np.full(n_a, stay), np.full(n_b, stay)])
    graph = sp.csr_matrix((cost, (rows, cols)), shape=(n_a + n_b, n_b + n_a))
    row_ind, col_ind = min_weight_full_bipartite_matching(graph)
    real = (row_ind < n_a) & (col_ind < n_b)
    pa, pb = row_ind[real], col_ind[real]
    lookup = dict(zip(zip(ea.tolist(), eb.tolist(), strict=True), er.tolist(), strict=True))
    corr = np.array([lookup[(a, b)] for a, b in zip(pa.tolist(), pb.tolist(), strict=True)])
    order = np.argsort(pa)
    return _pairs(pa[order], pb[order], corr[order])


def compute_assignment(
    method: str,
    ab: TopK,
    ba: TopK,
    dense: np.ndarray | None = None,
    unmatched_value: float = 0.1,
) -> pl.DataFrame:
    """Pair features with one of :data:`ASSIGN_METHODS` (greedy de-duplication comes later, after filters).

    Args:
        method: the method name.
        ab: top-k of A features over B.
        ba: top-k of B features over A.
        dense: the full correlation matrix, needed by "hungarian".
        unmatched_value: the sparse method's value of an unmatched feature.

    Returns:
        ``feature_a``, ``feature_b``, ``corr`` (for "greedy", the many-to-1 B -> A pairs it de-duplicates).
    """
    if method == "many_to_1_ab":
        return assign_many_to_one(ab, "a->b")
    if method in ("many_to_1_ba", "greedy"):
        return assign_many_to_one(ba, "b->a")
    if method == "mutual":
        return assign_mutual(ab, ba)
    if method == "hungarian":
        if dense is None:
            raise MatchingError(
                "The Hungarian pairing needs the whole correlation matrix, which is too large for the memory "
                "setting or the hungarian_max setting here; use the 'sparse' method instead."
            )
        return assign_hungarian(dense)
    if method == "sparse":
        return assign_sparse(ab, ba, unmatched_value)
    raise MatchingError(f"Unknown assignment method {method!r}; choose one of {', '.join(ASSIGN_METHODS)}.")


@dataclass(frozen=True)
class AssignmentSummary:
    """Summary statistics of a set of pairs' correlations.

    Attributes:
        method: the pairing method (or "best_a->b" / "best_b->a" for top-1 lists).
        n_pairs: pairs considered.
        n_kept: pairs kept after filters (equals ``n_pairs`` when unfiltered).
        mean_corr: mean correlation of the kept pairs (nan if none).
        median_corr: median correlation of the kept pairs (nan if none).
        share_above: share of the considered pairs with correlation above ``threshold``.
        threshold: the threshold used.
        hist_edges: histogram bin edges over [-1, 1].
        hist_counts: kept pairs per bin.
    """

    method: str
    n_pairs: int
    n_kept: int
    mean_corr: float
    median_corr: float
    share_above: float
    threshold: float
    hist_edges: tuple[float, ...]
    hist_counts: tuple[int, ...]

    def to_dict(self) -> dict:
        """Plain JSON-ready dict (nan becomes None)."""
        out = asdict(self)
        for key in ("mean_corr", "median_corr", "share_above"):
            if out[key] != out[key]:
                out[key] = None
        out["hist_edges"], out["hist_counts"] = list(self.hist_edges), list(self.hist_counts)
        return out


def summarize_pairs(pairs: pl.DataFrame, method: str, threshold: float = 0.1, bins: int = 40) -> AssignmentSummary:
    """Mean and median correlation, share above a threshold and a histogram of a pairing.

    Args:
        pairs: ``corr`` and optionally ``kept``.
        method: label stored in the summary.
        threshold: correlation threshold for ``share_above``.
        bins: histogram bins over [-1, 1].

    Returns:
        The :class:`AssignmentSummary`.
    """
    corr = pairs["corr"].to_numpy().astype(float)
    kept = pairs["kept"].to_numpy().astype(bool) if "kept" in pairs.columns else np.ones(corr.shape, bool)
    good = corr[kept & np.isfinite(corr)]
    edges = np.linspace(-1.0, 1.0, bins + 1)
    counts, _ = np.histogram(good, bins=edges)
    n = corr.shape[0]
    return AssignmentSummary(
        method=method,
        n_pairs=int(n),
        n_kept=int(kept.sum()),
        mean_corr=float(good.mean()) if good.size else float("nan"),
        median_corr=float(np.median(good)) if good.size else float("nan"),
        share_above=float((np.nan_to_num(corr, nan=-np.inf) > threshold).mean()) if n else float("nan"),
        threshold=float(threshold),
        hist_edges=tuple(float(e) for e in edges),
        hist_counts=tuple(int(c) for c in counts),
    )


def compute_splits(ab: TopK, ba: TopK, min_corr: float = 0.3) -> pl.DataFrame:
    """1 -> k groups: features with two or more partners above ``min_corr`` on the other side.

    Args:
        ab: top-k of A features over B (A hubs that split into several B features).
        ba: top-k of B features over A (B hubs that split into several A features).
        min_corr: a partner counts when its correlation is above this.

    Returns:
        One row per (hub, partner): ``side`` (the hub's side, "a" or "b"), ``feature`` (hub),
        ``partner``, ``corr``, ``rank``, ``group_size``, ``reciprocal`` (the hub is the
        partner's own best match). Empty when there are no splits.
    """
    parts = []
    for side, own, other in (("a", ab, ba), ("b", ba, ab)):
        above = (own.index >= 0) & (np.nan_to_num(own.score, nan=-np.inf) > min_corr)
        size = above.sum(axis=1)
        hub, rank = np.nonzero(above & (size[:, None] >= 2))
        partner = own.index[hub, rank]
        parts.append(
            pl.DataFrame(
                {
                    "side": [side] * hub.size,
                    "feature": hub.astype(np.int64),
                    "partner": partner.astype(np.int64),
                    "corr": own.score[hub, rank],
                    "rank": (rank + 1).astype(np.int32),
                    "group_size": size[hub].astype(np.int32),
                    "reciprocal": other.index[partner, 0] == hub,
                },
                schema={
                    "side": pl.String,
                    "feature": pl.Int64,
                    "partner": pl.Int64,
                    "corr": pl.Float64,
                    "rank": pl.Int32,
                    "group_size": pl.Int32,
                    "reciprocal": pl.Boolean,
                },
            )
        )
    return pl.concat(parts)


def compute_orphans(ab: TopK, ba: TopK, dead_a: np.ndarray, dead_b: np.ndarray, min_corr: float = 0.1) -> pl.DataFrame:
    """Live features with no partner above ``min_corr`` on the other side, per side.

    Args:
        ab: top-k of A features over B.
        ba: top-k of B features over A.
        dead_a: bool [Fa], dead A features (not orphans: they have no correlations at all).
        dead_b: bool [Fb], dead B features.
        min_corr: the threshold a best partner must exceed.

    Returns:
        ``side`` ("a" / "b"), ``feature``, ``best_corr`` (nan if no live partner).
    """
    parts = []
    for side, own, dead in (("a", ab, dead_a), ("b", ba, dead_b)):
        best = own.score[:, 0]
        orphan = ~dead & ~(np.nan_to_num(best, nan=-np.inf) > min_corr)
        ids = np.flatnonzero(orphan)
        parts.append(
            pl.DataFrame(
                {"side": [side] * ids.size, "feature": ids.astype(np.int64), "best_corr": best[ids]},
                schema={"side": pl.String, "feature": pl.Int64, "best_corr": pl.Float64},
            )
        )
    return pl.concat(parts)
