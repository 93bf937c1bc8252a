"""Every piece of evidence on one pair of features, for any pair a user asks about.

:func:`explain_pair` (the CLI's ``python -m core explain BUNDLE a12 b40``) recomputes the pair's
statistics from the codes, exactly as the matching stage does for the pairs it lists: Pearson r,
co-firing count k, the document-stratified null (mu, k/mu, -log10 p, flags), the top-token
evidence (core.matching.evidence) and the decoder cosine, and reads from the bundle what only the
stage knows: the pair's q (its family is the assignment, or each feature's top candidates), whether
the assignment kept it and why not, and its ranks in the two top-k lists.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import polars as pl
import scipy.sparse as sp

from core.bundle.codes import SparseCodes
from core.bundle.reader import Bundle
from core.errors import BundleError, SpecError
from core.matching.evidence import (
    FeatureTokens,
    combined_score,
    compute_feature_tokens,
    match_note,
    pair_token_lists,
    unit_token_ids,
)
from core.matching.moments import FeatureMoments
from core.matching.significance import compute_pair_null, document_index, k_over_mu, log_pvalues, pair_flags

_FEATURE = re.compile(r"^\s*([abAB])?\s*(\d+)\s*$")


@dataclass(frozen=True)
class PairEvidence:
    """The evidence on one pair (every number a researcher needs to judge it).

    Attributes:
        feature_a: the A feature.
        feature_b: the B feature.
        corr: exact Pearson r over all units (nan when a feature is dead).
        n_coactive: units where both fire (k).
        n_a: units where A fires.
        n_b: units where B fires.
        jaccard: co-firing Jaccard of the binarised codes.
        mu: expected co-firings under the document-stratified null.
        k_over_mu: k / mu.
        neglog10_p: -log10 of the pair's own p-value (no multiple-testing correction).
        q: the q-value the matching stage gave this pair, or None when it tested it in no family.
        q_source: where ``q`` comes from ("assignment", "matches a->b", "matches b->a") or None.
        flags: warnings on the test ("k <= 2: ...", "document-filling: ...").
        tokens_a: A's top tokens (top 10% activations), most frequent first.
        tokens_b: B's top tokens.
        token_overlap: Jaccard overlap of the two top-token sets.
        shared_tokens: tokens on both lists, most frequent first.
        a_only_tokens: A's tokens B lacks.
        b_only_tokens: B's tokens A lacks.
        combined_score: ``0.4 x token_overlap + 0.6 x r``.
        note: Strong / Good / Moderate / Weak.
        cos: decoder cosine (None when the two SAEs read spaces of different width).
        assignment: the pair's assignment row (method, kept, reason), or None when not assigned.
        rank_ab: B's rank among A's top-k partners (None if absent).
        rank_ba: A's rank among B's top-k partners (None if absent).
    """

    feature_a: int
    feature_b: int
    corr: float
    n_coactive: int
    n_a: int
    n_b: int
    jaccard: float
    mu: float
    k_over_mu: float
    neglog10_p: float
    q: float | None
    q_source: str | None
    flags: tuple[str, ...]
    tokens_a: tuple[str, ...]
    tokens_b: tuple[str, ...]
    token_overlap: float
    shared_tokens: tuple[str, ...]
    a_only_tokens: tuple[str, ...]
    b_only_tokens: tuple[str, ...]
    combined_score: float
    note: str
    cos: float | None
    assignment: dict[str, Any] | None = field(default=None)
    rank_ab: int | None = None
    rank_ba: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (nan and inf become None)."""
        out = asdict(self)
        for key, value in out.items():
            if isinstance(value, float) and not math.isfinite(value):
                out[key] = None
            elif isinstance(value, tuple):
                out[key] = list(value)
        return out

    def to_text(self) -> str:
        """The evidence as a few readable lines (what ``python -m core explain`` prints)."""

        def num(value: float | None, fmt: str = ".4f") -> str:
            return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else format(value, fmt)

        status = "not in the assignment"
        if self.assignment is not None:
            a = self.assignment
            status = f"{a['method']}: " + ("kept" if a["kept"] else f"dropped ({a['reason']})")
        q = f"{num(self.q, '.3g')} ({self.q_source})" if self.q is not None else "not tested in a family (n/a)"
        lines = [
            f"A{self.feature_a} <-> B{self.feature_b}   {self.note} match, combined score {num(self.combined_score, '.3f')}"
            f" = 0.4 x overlap {num(self.token_overlap, '.3f')} + 0.6 x r {num(self.corr, '.3f')}",
            f"  assignment       {status}; rank {self.rank_ab or '-'} of A's partners, {self.rank_ba or '-'} of B's",
            f"  correlation      r {num(self.corr)}   decoder cosine {num(self.cos)}   co-firing Jaccard "
            f"{num(self.jaccard)}",
            f"  co-firing        k {self.n_coactive:,} of A {self.n_a:,} / B {self.n_b:,} firings; expected mu "
            f"{num(self.mu, '.3g')}, k/mu {num(self.k_over_mu, '.3g')}",
            f"  significance     -log10 p {num(abs(self.neglog10_p) if self.neglog10_p == 0 else self.neglog10_p, '.2f')}"
            f"   q {q}",
            f"  flags            {'; '.join(self.flags) if self.flags else 'none'}",
            f"  shared tokens    {', '.join(map(repr, self.shared_tokens)) or '-'}",
            f"  A-only tokens    {', '.join(map(repr, self.a_only_tokens[:20])) or '-'}",
            f"  B-only tokens    {', '.join(map(repr, self.b_only_tokens[:20])) or '-'}",
        ]
        return "\n".join(lines)


def parse_pair(first: str, second: str) -> tuple[int, int]:
    """Two feature names (``a12 b40``, ``b40 a12``, or ``12 40`` for A then B) as ``(a, b)``."""
    parsed = []
    for text in (first, second):
        m = _FEATURE.match(str(text))
        if not m:
            raise SpecError(f"{text!r} is not a feature; write a12 or b40 (side letter, then the feature id).")
        parsed.append(((m.group(1) or "").lower(), int(m.group(2))))
    (s1, f1), (s2, f2) = parsed
    if not s1 and not s2:
        return f1, f2
    s1 = s1 or ("b" if s2 == "a" else "a")
    s2 = s2 or ("b" if s1 == "a" else "a")
    if s1 == s2:
        raise SpecError(f"Both features are on side {s1.upper()}; name one A and one B feature, e.g. a12 b40.")
    return (f1, f2) if s1 == "a" else (f2, f1)


def explain_pair(bundle: Bundle, feature_a: int, feature_b: int) -> PairEvidence:
    """All the evidence on one pair (module docstring).

    Args:
        bundle: an opened bundle with its codes.
        feature_a: the A feature id.
        feature_b: the B feature id.

    Returns:
        The :class:`PairEvidence`.
    """
    if not bundle.has("codes"):
        raise BundleError(
            f"Bundle {bundle.path} holds no codes, and explaining a pair recomputes it from them; "
            "rebuild the bundle with its codes (python -m core compare)."
        )
    for side, feature in (("a", feature_a), ("b", feature_b)):
        n = int(bundle.side(side).get("d_sae") or bundle.codes(side).n_features)
        if not 0 <= int(feature) < n:
            raise SpecError(
                f"Feature {side}{feature} does not exist: side {side.upper()} has {n:,} features "
                f"({side}0..{side}{n - 1}); pick an id in that range."
            )
    codes_a, codes_b = bundle.codes("a"), bundle.codes("b")
    # only the pair's two columns are read: the same formulas as the stage (moments, r, the
    # per-document null), on one feature per side
    units_a, vals_a = _column(codes_a, int(feature_a))
    units_b, vals_b = _column(codes_b, int(feature_b))
    n = codes_a.n_rows
    mom_a, mom_b = _moments(units_a, vals_a, n), _moments(units_b, vals_b, n)
    both, ia, ib = np.intersect1d(units_a, units_b, assume_unique=True, return_indices=True)
    k_arr = np.array([both.size], np.int64)
    k = int(both.size)
    sums = float(np.dot(vals_a[ia], vals_b[ib]))
    dead = bool(mom_a.is_dead[0] or mom_b.is_dead[0])
    num = sums - n * float(mom_a.mean[0]) * float(mom_b.mean[0])
    corr = float("nan") if dead else float(np.clip(num / math.sqrt(float(mom_a.m2[0] * mom_b.m2[0])), -1.0, 1.0))
    n_a, n_b = int(units_a.size), int(units_b.size)
    docs = bundle.units().select("unit", "doc").sort("unit").collect()["doc"].to_numpy()
    doc_of_unit, doc_len = document_index(docs, n)
    counts_a = _doc_column(doc_of_unit[units_a], doc_len.shape[0])
    counts_b = _doc_column(doc_of_unit[units_b], doc_len.shape[0])
    zero = np.zeros(1, np.int64)
    mu, log_c, fill = compute_pair_null(counts_a, counts_b, doc_len, zero, zero, k_arr)
    log_p = log_pvalues(k_arr, mu, log_c)
    tokens_a, tokens_b = _feature_tokens(bundle)
    shared, only_a, only_b = pair_token_lists(tokens_a, tokens_b, int(feature_a), int(feature_b))
    union = len(set(tokens_a.tokens(int(feature_a))) | set(tokens_b.tokens(int(feature_b))))
    overlap = len(shared) / union if union else 0.0
    score = float(combined_score(overlap, corr))
    cos = _decoder_cosine(bundle, int(feature_a), int(feature_b))
    q, q_source, row = _stage_q(bundle, int(feature_a), int(feature_b))
    rank_ab, rank_ba = _ranks(bundle, int(feature_a), int(feature_b))
    return PairEvidence(
        feature_a=int(feature_a),
        feature_b=int(feature_b),
        corr=corr,
        n_coactive=k,
        n_a=n_a,
        n_b=n_b,
        jaccard=k / (n_a + n_b - k) if n_a + n_b - k > 0 else 0.0,
        mu=float(mu[0]),
        k_over_mu=float(k_over_mu(k_arr, mu)[0]),
        neglog10_p=float(-log_p[0] / math.log(10)),
        q=q,
        q_source=q_source,
        flags=tuple(pair_flags(k_arr, fill)[0]),
        tokens_a=tuple(tokens_a.tokens(int(feature_a))),
        tokens_b=tuple(tokens_b.tokens(int(feature_b))),
        token_overlap=overlap,
        shared_tokens=tuple(shared),
        a_only_tokens=tuple(only_a),
        b_only_tokens=tuple(only_b),
        combined_score=score,
        note=match_note(score)[0],
        cos=cos,
        assignment=row,
        rank_ab=rank_ab,
        rank_ba=rank_ba,
    )


def _decoder_cosine(bundle: Bundle, feature_a: int, feature_b: int) -> float | None:
    """The two decoder rows' cosine (the stage's compute_pair_cosine for one pair; None when d_in differ)."""
    if not bundle.has("decoders"):
        return None
    w_a, w_b = bundle.decoder("a")[feature_a].astype(np.float64), bundle.decoder("b")[feature_b].astype(np.float64)
    if w_a.shape != w_b.shape:
        return None
    norm = float(np.linalg.norm(w_a) * np.linalg.norm(w_b))
    return float(np.clip(w_a @ w_b / norm, -1.0, 1.0)) if norm > 0 else float("nan")


def _column(codes: SparseCodes, feature: int) -> tuple[np.ndarray, np.ndarray]:
    """The units (ascending) and float64 values where one feature fires."""
    hit = np.flatnonzero(codes.indices == feature)
    units = np.searchsorted(codes.indptr, hit, side="right") - 1
    return units.astype(np.int64), codes.values[hit].astype(np.float64)


def _moments(units: np.ndarray, vals: np.ndarray, n_units: int) -> FeatureMoments:
    mean = vals.sum() / max(n_units, 1)
    m2 = float(((vals - mean) ** 2).sum() + (n_units - units.size) * mean * mean)
    return FeatureMoments(n_units, np.array([mean]), np.array([m2]), np.array([units.size], np.int64))


def _doc_column(doc_of_fire: np.ndarray, n_docs: int) -> sp.csc_matrix:
    docs, counts = np.unique(doc_of_fire, return_counts=True)
    return sp.csc_matrix((counts.astype(np.int64), (docs, np.zeros(docs.size, np.int64))), shape=(n_docs, 1))


def _feature_tokens(bundle: Bundle) -> tuple[FeatureTokens, FeatureTokens]:
    # the stage's part when there is one; else the same function over the codes, with the
    # stage's case rule, so the score is the one the stage would have written
    if bundle.has("feature_tokens"):
        return tuple(FeatureTokens.from_frame(bundle.feature_tokens(s).collect()) for s in ("a", "b"))  # type: ignore[return-value]
    fold = bool(bundle.manifest.get("matching", {}).get("settings", {}).get("fold_case", True))
    texts = bundle.units().select("unit", "text").sort("unit").collect()["text"]
    ids, vocab = unit_token_ids(texts, fold)
    return compute_feature_tokens(bundle.codes("a"), ids, vocab), compute_feature_tokens(bundle.codes("b"), ids, vocab)


def _stage_q(bundle: Bundle, fa: int, fb: int) -> tuple[float | None, str | None, dict[str, Any] | None]:
    pair = (pl.col("feature_a") == fa) & (pl.col("feature_b") == fb)
    row = None
    if bundle.has("assignment"):
        hits = bundle.assignment().filter(pair).collect()
        if hits.height:
            first = hits.row(0, named=True)
            row = {k: first.get(k) for k in ("method", "kept", "reason")}
            if first.get("q") is not None:
                return float(first["q"]), "assignment", row
    if bundle.has("matches") and _has_q(bundle):
        found = bundle.matches().filter(pair & pl.col("q").is_not_null()).collect()
        if found.height:
            first = found.sort("q").row(0, named=True)
            return float(first["q"]), f"matches {first['direction']}", row
    return None, None, row


def _has_q(bundle: Bundle) -> bool:
    return "q" in bundle.matches().collect_schema().names()


def _ranks(bundle: Bundle, fa: int, fb: int) -> tuple[int | None, int | None]:
    if not bundle.has("matches"):
        return None, None
    hits = (
        bundle.matches()
        .filter((pl.col("feature_a") == fa) & (pl.col("feature_b") == fb))
        .select("direction", "rank")
        .collect()
    )
    ranks = dict(zip(hits["direction"].to_list(), hits["rank"].to_list(), strict=True))
    return ranks.get("a->b"), ranks.get("b->a")
