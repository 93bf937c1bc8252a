"""Evidence for a pair: top-token overlap, a combined score and a one-word note (SplatNLP's, done right).

Top tokens (SplatNLP's rule, ``FeatureMatcher._get_top_tokens``): a feature's top tokens are the
unit texts of its top 10% activations (``max(1, n_fire // 10)`` units, highest first, the earlier
unit on ties), counted, the 50 most frequent kept (the lower token first on equal counts). Unit
texts are compared after :func:`core.tokens.normalize_token` (case-folded unless ``fold_case`` is
off); a unit whose text normalises to the empty string (whitespace) does not count. SplatNLP reads
at most 1,000 of a feature's activations first; we take the top 10% of all of them.

For a pair: ``token_overlap`` is the Jaccard index of the two top-token sets; the shared, A-only and
B-only tokens are listed most frequent first. ``combined_score = 0.4 x token_overlap + 0.6 x r`` and
the note is Strong (> 0.5), Good (> 0.3), Moderate (> 0.1), else Weak, as SplatNLP defines them,
with its two defects fixed:

- SplatNLP scores a pair whose r is not positive by the overlap alone, so an anti-correlated pair
  with overlapping tokens can read "Strong"; here r always enters with its sign, so a negative r
  never makes a strong match (the score is then below 0.4);
- SplatNLP's search computes r only when the overlap exceeds 0.05 (else it counts as 0) while its
  pairwise comparison always does, so one pair gets two scores; here every entry point (the
  matching stage, :func:`core.matching.explain.explain_pair`, the app) calls :func:`combined_score`
  with the exact r.

Everything is computed in one pass over each side's codes (:func:`compute_feature_tokens`), then
per pair from the two short token lists (:func:`compute_pair_evidence`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.matching.kernels import count_top_tokens, token_overlap
from core.matching.labels import compute_top_units
from core.tokens import normalize_token_expr

TOP_SHARE = 0.1
TOP_TOKENS = 50
SCORE_WEIGHTS = (0.4, 0.6)  # token overlap, r
NOTES = (("Strong", 0.5), ("Good", 0.3), ("Moderate", 0.1))
WEAK = "Weak"
EVIDENCE_COLUMNS = ("token_overlap", "n_shared_tokens", "combined_score", "note")


@dataclass(frozen=True, eq=False)
class FeatureTokens:
    """Every feature's top tokens on one side.

    Attributes:
        ptr: int64 [F + 1]; feature ``j``'s tokens are ``token[ptr[j]:ptr[j+1]]``.
        token: int64 ids into ``vocab``, most frequent first.
        count: int64 counts of those tokens among the feature's top units.
        n_top: int64 [F], the units each feature's tokens were counted over.
        vocab: the distinct normalised unit texts, sorted.
    """

    ptr: np.ndarray
    token: np.ndarray
    count: np.ndarray
    n_top: np.ndarray
    vocab: tuple[str, ...]

    @property
    def n_features(self) -> int:
        """Number of features."""
        return int(self.ptr.shape[0] - 1)

    def tokens(self, feature: int) -> list[str]:
        """A feature's top tokens, most frequent first."""
        lo, hi = self.ptr[feature], self.ptr[feature + 1]
        return [self.vocab[t] for t in self.token[lo:hi]]

    def counts(self, feature: int) -> list[int]:
        """The counts of :meth:`tokens`."""
        return self.count[self.ptr[feature] : self.ptr[feature + 1]].tolist()

    def to_frame(self) -> pl.DataFrame:
        """One row per feature: ``feature``, ``n_top``, ``tokens`` (list), ``counts`` (list)."""
        lengths = np.diff(self.ptr)
        vocab = np.asarray(self.vocab, dtype=object)
        flat_tokens = pl.Series(vocab[self.token].tolist() if self.token.size else [], dtype=pl.String)
        return pl.DataFrame(
            {
                "feature": np.arange(self.n_features, dtype=np.int64),
                "n_top": self.n_top.astype(np.int64),
                "tokens": _split(flat_tokens, lengths, pl.String),
                "counts": _split(pl.Series(self.count, dtype=pl.Int64), lengths, pl.Int64),
            }
        )

    @classmethod
    def from_frame(cls, frame: pl.DataFrame) -> FeatureTokens:
        """Read back :meth:`to_frame` (the vocabulary becomes the tokens that occur)."""
        frame = frame.sort("feature")
        lengths = frame["tokens"].list.len().fill_null(0).to_numpy().astype(np.int64)
        flat = frame["tokens"].explode().drop_nulls()
        vocab = flat.unique().sort()
        ids = vocab.search_sorted(flat).to_numpy().astype(np.int64) if flat.len() else np.zeros(0, np.int64)
        ptr = np.zeros(frame.height + 1, np.int64)
        np.cumsum(lengths, out=ptr[1:])
        counts = frame["counts"].explode().drop_nulls().to_numpy().astype(np.int64)
        return cls(ptr, ids, counts, frame["n_top"].to_numpy().astype(np.int64), tuple(vocab.to_list()))


def _split(flat: pl.Series, lengths: np.ndarray, dtype: Any) -> pl.Series:
    offsets = np.zeros(lengths.shape[0] + 1, np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = flat.to_list()
    return pl.Series([values[offsets[i] : offsets[i + 1]] for i in range(lengths.shape[0])], dtype=pl.List(dtype))


def unit_token_ids(texts: pl.Series, fold_case: bool = True) -> tuple[np.ndarray, tuple[str, ...]]:
    """Each unit's normalised text as an id into a sorted vocabulary (-1 for an empty text).

    Args:
        texts: the units' texts, in unit order.
        fold_case: case-fold (see :func:`core.tokens.normalize_token`).

    Returns:
        ``(ids, vocab)``: int64 [n_units] and the sorted distinct non-empty texts.
    """
    norm = pl.DataFrame({"t": texts.cast(pl.String).fill_null("")}).select(normalize_token_expr("t", fold_case))["t"]
    vocab = norm.filter(norm != "").unique().sort()
    ids = vocab.search_sorted(norm).to_numpy().astype(np.int64)
    found = ids < vocab.len()
    ids = np.where(found, ids, 0)
    match = found & (vocab.gather(ids).to_numpy() == norm.to_numpy()) if vocab.len() else np.zeros(ids.shape, bool)
    return np.where(match, ids, -1), tuple(vocab.to_list())


def compute_feature_tokens(
    codes: SparseCodes,
    token_of_unit: np.ndarray,
    vocab: tuple[str, ...],
    share: float = TOP_SHARE,
    top_n: int = TOP_TOKENS,
) -> FeatureTokens:
    """Every feature's top tokens (module docstring), in one pass over one side's codes.

    Args:
        codes: CSR codes of one side.
        token_of_unit: int64 [n_units] token id of each unit (-1: no token), from :func:`unit_token_ids`.
        vocab: the vocabulary those ids index.
        share: share of a feature's firings, highest first, whose tokens are counted.
        top_n: tokens kept per feature.

    Returns:
        The :class:`FeatureTokens`.
    """
    n_fire = np.bincount(codes.indices, minlength=codes.n_features).astype(np.int64)
    # SplatNLP's rule: max(1, n // 10) of the firings (an integer division for the default share)
    wanted = n_fire // 10 if share == TOP_SHARE else (n_fire * share).astype(np.int64)
    n_top = np.where(n_fire > 0, np.maximum(1, wanted), 0)
    top_ptr, chosen = compute_top_units(codes, n_top)
    out_ptr = np.zeros(codes.n_features + 1, np.int64)
    np.cumsum(np.minimum(n_top, top_n), out=out_ptr[1:])
    out_tok = np.full(int(out_ptr[-1]), -1, np.int64)
    out_cnt = np.zeros(int(out_ptr[-1]), np.int64)
    count_top_tokens(top_ptr, np.asarray(token_of_unit, np.int64), chosen, top_n, out_ptr, out_tok, out_cnt)
    # features whose top units include empty texts hold fewer tokens than reserved: compact
    real = out_tok >= 0
    ptr = np.concatenate([[0], np.cumsum(real)])[out_ptr].astype(np.int64)
    return FeatureTokens(ptr, out_tok[real], out_cnt[real], n_top.astype(np.int64), tuple(vocab))


def combined_score(token_overlap_: np.ndarray | float, corr: np.ndarray | float) -> np.ndarray:
    """SplatNLP's combined score with its sign defect fixed: ``0.4 x overlap + 0.6 x r``, r with its sign.

    Args:
        token_overlap_: Jaccard overlap of the top tokens, in [0, 1].
        corr: Pearson r (nan: no correlation, the score is nan).

    Returns:
        float64 scores in [-0.6, 1].
    """
    w_overlap, w_corr = SCORE_WEIGHTS
    return w_overlap * np.asarray(token_overlap_, np.float64) + w_corr * np.asarray(corr, np.float64)


def match_note(score: np.ndarray | float) -> list[str]:
    """The one-word note of each score: Strong (> 0.5), Good (> 0.3), Moderate (> 0.1), else Weak."""
    out = []
    for value in np.atleast_1d(np.asarray(score, np.float64)):
        out.append(next((name for name, cut in NOTES if value > cut), WEAK))
    return out


def compute_pair_evidence(
    tokens_a: FeatureTokens, tokens_b: FeatureTokens, pair_a: np.ndarray, pair_b: np.ndarray, corr: np.ndarray
) -> pl.DataFrame:
    """The evidence columns of listed pairs.

    Args:
        tokens_a: side A's :class:`FeatureTokens`.
        tokens_b: side B's (its own vocabulary; tokens are matched by text).
        pair_a: int [P] A features.
        pair_b: int [P] B features.
        corr: float [P] their exact Pearson r.

    Returns:
        :data:`EVIDENCE_COLUMNS` in the pairs' order: ``token_overlap`` (Jaccard of the top-token
        sets, 0 when both are empty), ``n_shared_tokens``, ``combined_score``, ``note``.
    """
    ids_a, ids_b = _shared_vocab(tokens_a, tokens_b)
    pa = np.asarray(pair_a, np.int64)
    pb = np.asarray(pair_b, np.int64)
    shared = np.zeros(pa.shape[0], np.int64)
    union = np.zeros(pa.shape[0], np.int64)
    if pa.size:
        token_overlap(tokens_a.ptr, ids_a, tokens_b.ptr, ids_b, pa, pb, shared, union)
    with np.errstate(divide="ignore", invalid="ignore"):
        overlap = np.where(union > 0, shared / np.maximum(union, 1), 0.0)
    score = combined_score(overlap, corr)
    return pl.DataFrame(
        {
            "token_overlap": overlap,
            "n_shared_tokens": shared,
            "combined_score": score,
            "note": pl.Series(match_note(score) if pa.size else [], dtype=pl.String),
        }
    )


def _shared_vocab(tokens_a: FeatureTokens, tokens_b: FeatureTokens) -> tuple[np.ndarray, np.ndarray]:
    """Both sides' token ids in one vocabulary (the union of the two)."""
    if tokens_a.vocab == tokens_b.vocab:
        return tokens_a.token, tokens_b.token
    union = pl.Series(sorted(set(tokens_a.vocab) | set(tokens_b.vocab)), dtype=pl.String)

    def remap(t: FeatureTokens) -> np.ndarray:
        if not t.token.size:
            return t.token
        own = union.search_sorted(pl.Series(t.vocab, dtype=pl.String)).to_numpy().astype(np.int64)
        return own[t.token]

    return remap(tokens_a), remap(tokens_b)


def pair_token_lists(
    tokens_a: FeatureTokens, tokens_b: FeatureTokens, feature_a: int, feature_b: int
) -> tuple[list[str], list[str], list[str]]:
    """The shared, A-only and B-only top tokens of one pair, each most frequent first.

    Shared tokens are ordered by their summed count on both sides (then by text).
    """
    la, lb = tokens_a.tokens(feature_a), tokens_b.tokens(feature_b)
    ca = dict(zip(la, tokens_a.counts(feature_a), strict=True))
    cb = dict(zip(lb, tokens_b.counts(feature_b), strict=True))
    shared = sorted(set(ca) & set(cb), key=lambda t: (-(ca[t] + cb[t]), t))
    return shared, [t for t in la if t not in cb], [t for t in lb if t not in ca]


def split_group(
    partners: pl.DataFrame, tokens_other: FeatureTokens, min_score: float = 0.1, badge_min: int = 3
) -> tuple[pl.DataFrame, int | None]:
    """A feature's split group: its partners above a combined score, each with its distinct tokens.

    Args:
        partners: the feature's partner rows (``partner``, ``corr``, ``combined_score``, ...), one per partner.
        tokens_other: the partners' side's :class:`FeatureTokens`.
        min_score: a partner belongs to the group when its combined score is above this.
        badge_min: the group is "decomposed into k" when more than this many partners pass 0.1.

    Returns:
        ``(group, k)``: the passing rows, best first, with ``distinct_tokens`` (the partner's top tokens
        that no other member has); ``k`` is the number of partners above 0.1 when that is more than
        ``badge_min``, else None.
    """
    group = partners.filter(pl.col("combined_score") > min_score).sort("combined_score", descending=True)
    lists = {int(p): tokens_other.tokens(int(p)) for p in group["partner"].to_list()}
    distinct = []
    for p, own in lists.items():
        others = set().union(*(set(v) for q, v in lists.items() if q != p))
        distinct.append([t for t in own if t not in others])
    group = group.with_columns(distinct_tokens=pl.Series(distinct, dtype=pl.List(pl.String)))
    n_pass = int((partners["combined_score"] > 0.1).sum())
    return group, (n_pass if n_pass > badge_min else None)
