"""Per-feature dashboards from CSR codes in one streamed pass (top examples, quantile samples, histograms, token stats)."""

from __future__ import annotations

import queue
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import polars as pl
import pyarrow as pa

from core.bundle.codes import SparseCodes
from core.dashboards import kernels
from core.dashboards.logits import Unembedding, compute_logit_effect
from core.dashboards.settings import QUANTILE_PROBS, DashboardSettings
from core.errors import BundleError, DashboardError
from core.progress import ProgressFn, no_progress


@dataclass(frozen=True, eq=False)
class UnitIndex:
    """What the dashboards need to know about the units: tokens and document runs.

    Attributes:
        token_id: int32 [n_units], index into ``vocab``.
        vocab: the distinct unit texts, sorted.
        text: the unit texts [n_units].
        doc: int64 [n_units].
        pos: int64 [n_units].
        run_start: int64 [n_units], first unit of the unit's document run.
        run_end: int64 [n_units], one past the last unit of that run.
    """

    token_id: np.ndarray
    vocab: pl.Series
    text: pl.Series
    doc: np.ndarray
    pos: np.ndarray
    run_start: np.ndarray
    run_end: np.ndarray

    @property
    def n_units(self) -> int:
        return int(self.token_id.shape[0])

    @classmethod
    def from_frame(cls, units: pl.DataFrame) -> UnitIndex:
        """Index a units frame (columns ``unit``, ``doc``, ``pos``, ``text``).

        Args:
            units: one row per unit; ``unit`` must be ``0..n-1`` (any row order).

        Returns:
            The index, rows in unit order.
        """
        missing = [c for c in ("unit", "doc", "pos", "text") if c not in units.columns]
        if missing:
            raise BundleError(f"units.parquet lacks columns {missing}; rebuild the bundle.")
        units = units.sort("unit")
        n = units.height
        if n and not np.array_equal(units["unit"].to_numpy(), np.arange(n)):
            raise BundleError("units.parquet unit ids are not 0..n-1; rebuild the bundle.")
        text = units["text"].cast(pl.String).fill_null("")
        # dense rank of a string is its index in the sorted distinct strings
        token_id = (text.rank("dense") - 1).cast(pl.Int32).to_numpy() if n else np.zeros(0, np.int32)
        vocab = text.unique().sort()
        doc = units["doc"].to_numpy().astype(np.int64)
        # a window never crosses a change of document, even if a document id repeats later
        starts = np.flatnonzero(np.r_[True, doc[1:] != doc[:-1]]) if n else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], n]
        run = np.cumsum(np.r_[True, doc[1:] != doc[:-1]]) - 1 if n else np.zeros(0, np.int64)
        return cls(
            token_id=np.ascontiguousarray(token_id, dtype=np.int32),
            vocab=vocab,
            text=text,
            doc=doc,
            pos=units["pos"].to_numpy().astype(np.int64),
            run_start=starts[run].astype(np.int64),
            run_end=ends[run].astype(np.int64),
        )


@dataclass(frozen=True, eq=False)
class SideDashboards:
    """Dashboard data of one SAE.

    Attributes:
        examples: one row per example (:data:`EXAMPLE_COLUMNS`).
        features: one row per feature (:data:`DASHBOARD_COLUMNS`, plus :data:`LOGIT_COLUMNS`
            when an unembedding was given).
    """

    examples: pl.DataFrame
    features: pl.DataFrame


def _group_rank(sorted_ids: np.ndarray) -> np.ndarray:
    """Rank of every element within its run of equal ids (ids sorted)."""
    n = sorted_ids.shape[0]
    if n == 0:
        return np.zeros(0, np.int64)
    starts = np.flatnonzero(np.r_[True, sorted_ids[1:] != sorted_ids[:-1]])
    return np.arange(n, dtype=np.int64) - np.repeat(starts, np.diff(np.r_[starts, n]))


def lookup_codes(codes: SparseCodes, rows: np.ndarray, features: np.ndarray) -> np.ndarray:
    """Read single entries ``codes[rows[i], features[i]]`` (0 where not stored).

    A binary search within each row's sorted feature ids, so the cost is
    ``len(rows) * log2(row length)`` and nothing is densified.

    Args:
        codes: the CSR codes.
        rows: int [q] unit ids.
        features: int [q] feature ids.

    Returns:
        float32 [q] activations.
    """
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    features = np.ascontiguousarray(features, dtype=np.int32)
    return kernels.lookup(codes.indptr, codes.indices, codes.values, rows, features)


class _SideState:
    """The per-feature state of the streamed pass over one SAE's codes.

    Memory is ``n_features x (n_top + sample_size + hist_bins)`` entries plus the
    (feature, token) table, whose size is the number of distinct pairs seen (at most the
    number of stored activations; SAE features are token-selective, so usually far fewer).
    """

    def __init__(self, n_features: int, n_vocab: int, settings: DashboardSettings) -> None:
        nf, k, r, nb = n_features, settings.n_top, settings.sample_size, settings.hist_bins
        self.settings = settings
        self.n_features = nf
        self.n_vocab = max(int(n_vocab), 1)
        self.count = np.zeros(nf, np.int64)
        self.total = np.zeros(nf, np.float64)
        self.total_sq = np.zeros(nf, np.float64)
        self.maxv = np.zeros(nf, np.float32)
        self.top_val = np.zeros((nf, k), np.float32)
        self.top_unit = np.zeros((nf, k), np.int64)
        self.top_n = np.zeros(nf, np.int64)
        self.smp_key = np.zeros((nf, r), np.uint64)
        self.smp_val = np.zeros((nf, r), np.float32)
        self.smp_unit = np.zeros((nf, r), np.int64)
        self.smp_n = np.zeros(nf, np.int64)
        self.hist = np.zeros((nf, nb), np.int64)
        self.hist_exp = np.zeros(nf, np.int64)
        self.hist_set = np.zeros(nf, np.bool_)
        self.log2_bins = int(np.floor(np.log2(nb)))
        # the seed enters the sample's hash, so a different seed draws a different sample
        self.seed_mix = np.uint64((settings.seed * 0x9E3779B97F4A7C15 + 0x632BE59BD9B4E019) % 2**64)
        self.tab_keys = np.full(1 << 16, kernels.EMPTY_KEY, np.int64)
        self.tab_n = np.zeros(1 << 16, np.int64)
        self.tab_s = np.zeros(1 << 16, np.float64)
        self.tab_used = 0

    def update(self, codes: SparseCodes, lo: int, hi: int, token_id: np.ndarray) -> None:
        """Fold units ``lo..hi`` of the codes into the state."""
        start, stop = int(codes.indptr[lo]), int(codes.indptr[hi])
        if stop == start:
            return
        if codes.values[start:stop].min() < 0:
            raise DashboardError(
                "The codes hold negative activations, which dashboards do not support; "
                "encode with an SAE whose activations are non-negative (ReLU, TopK, JumpReLU)."
            )
        self._reserve(self.tab_used + (stop - start))
        # scipy's CSR -> CSC (a counting sort, rows ascending within each column) lets the
        # kernel visit one feature at a time
        chunk = codes.row_slice(lo, hi).to_scipy().tocsc()
        self.tab_used = kernels.scan_columns(
            chunk.indptr, chunk.indices, chunk.data, lo, token_id, self.n_vocab, self.seed_mix,
            self.log2_bins, self.count, self.total, self.total_sq, self.maxv,
            self.top_val, self.top_unit, self.top_n,
            self.smp_key, self.smp_val, self.smp_unit, self.smp_n,
            self.hist, self.hist_exp, self.hist_set,
            self.tab_keys, self.tab_n, self.tab_s, self.tab_used,
        )  # fmt: skip

    def _reserve(self, n_keys: int) -> None:
        # keep the open-addressing table at most 70% full so probes stay short
        capacity = self.tab_keys.shape[0]
        if n_keys <= 0.7 * capacity:
            return
        while n_keys > 0.7 * capacity:
            capacity *= 2
        self.tab_keys, self.tab_n, self.tab_s = kernels.rehash(self.tab_keys, self.tab_n, self.tab_s, capacity)

    def token_counts(self, features: np.ndarray, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Activation count and sum of each (feature, token) pair."""
        query = features.astype(np.int64) * self.n_vocab + tokens.astype(np.int64)
        return kernels.table_get(self.tab_keys, self.tab_n, self.tab_s, query)


def compute_side_dashboards(
    codes: SparseCodes,
    units: UnitIndex,
    settings: DashboardSettings,
    progress: ProgressFn | None = None,
    stage: str = "dashboards",
    unembedding: Unembedding | None = None,
    w_dec: np.ndarray | None = None,
) -> SideDashboards:
    """Dashboard data for every feature of one SAE, in one streamed pass over its codes.

    Args:
        codes: CSR codes [n_units, n_features] (non-negative activations).
        units: the unit index (same number of rows as the codes).
        settings: what to keep.
        progress: called with ``(stage, units done, units total)`` after every chunk.
        stage: the label passed to ``progress``.
        unembedding: a causal LM's unembedding; when given (with ``w_dec``), the logit
            effect columns are added.
        w_dec: the SAE's decoder [n_features, d_in], needed only with ``unembedding``.

    Returns:
        The examples and per-feature frames.
    """
    progress = progress or no_progress
    n_units, n_features = codes.shape
    if units.n_units != n_units:
        raise BundleError(f"The codes have {n_units} rows but units.parquet has {units.n_units}; rebuild the bundle.")
    state = _SideState(n_features, units.vocab.len(), settings)
    for lo in range(0, n_units, settings.chunk_units):
        hi = min(lo + settings.chunk_units, n_units)
        state.update(codes, lo, hi, units.token_id)
        progress(stage, hi, n_units)
    if n_units == 0:
        progress(stage, 0, 0)

    quant, q_feat, q_group, q_unit, q_val = kernels.finish_samples(
        state.smp_key, state.smp_val, state.smp_unit, state.smp_n,
        np.asarray(QUANTILE_PROBS), settings.n_quantiles, settings.n_per_quantile,
    )  # fmt: skip
    examples = _examples_frame(state, (q_feat, q_group, q_unit, q_val), codes, units, settings)
    features = _features_frame(state, quant, examples, units, n_units, settings)
    if unembedding is not None:
        if w_dec is None:
            raise ValueError("compute_side_dashboards: an unembedding needs w_dec")
        logits = compute_logit_effect(w_dec, unembedding, settings.n_logits)
        features = features.join(logits, on="feature", how="left")
    return SideDashboards(examples=examples, features=features)


def _examples_frame(
    state: _SideState,
    quantile_examples: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    codes: SparseCodes,
    units: UnitIndex,
    settings: DashboardSettings,
) -> pl.DataFrame:
    held = np.arange(settings.n_top)[None, :] < state.top_n[:, None]
    t_feat = np.nonzero(held)[0]
    t_val, t_unit = state.top_val[held], state.top_unit[held]
    order = np.lexsort((t_unit, -t_val, t_feat))
    t_feat, t_val, t_unit = t_feat[order], t_val[order], t_unit[order]
    t_rank = _group_rank(t_feat)

    q_feat, q_group, q_unit, q_val = quantile_examples
    nq = settings.n_quantiles
    # each quantile group strongest first
    order = np.lexsort((q_unit, -q_val, q_group, q_feat))
    q_feat, q_group, q_unit, q_val = q_feat[order], q_group[order], q_unit[order], q_val[order]
    q_rank = _group_rank(q_feat * (nq + 1) + q_group)

    feat = np.concatenate([t_feat, q_feat]).astype(np.int32)
    kind_code = np.concatenate([np.zeros(t_feat.shape[0], np.int64), q_group + 1])
    rank = np.concatenate([t_rank, q_rank]).astype(np.int32)
    unit = np.concatenate([t_unit, q_unit]).astype(np.int64)
    act = np.concatenate([t_val, q_val]).astype(np.float32)
    order = np.lexsort((rank, kind_code, feat))
    feat, kind_code, rank, unit, act = feat[order], kind_code[order], rank[order], unit[order], act[order]

    w = settings.window
    lo = np.maximum(unit - w, units.run_start[unit])
    hi = np.minimum(unit + w + 1, units.run_end[unit])
    lengths = hi - lo
    offsets = np.r_[0, np.cumsum(lengths)].astype(np.int64)
    total = int(offsets[-1])
    flat_unit = np.repeat(lo, lengths) + (np.arange(total, dtype=np.int64) - np.repeat(offsets[:-1], lengths))
    flat_acts = lookup_codes(codes, flat_unit, np.repeat(feat, lengths))
    flat_text = units.text.gather(flat_unit)
    arrow_offsets = pa.array(offsets)
    window_text = pa.LargeListArray.from_arrays(arrow_offsets, flat_text.to_arrow())
    window_acts = pa.LargeListArray.from_arrays(arrow_offsets, pa.array(flat_acts))

    kinds = np.asarray(["top"] + [f"quantile_{q}" for q in range(nq)], dtype=object)
    return pl.DataFrame(
        [
            pl.Series("feature", feat),
            pl.Series("kind", kinds[kind_code], dtype=pl.String),
            pl.Series("rank", rank),
            pl.Series("unit", unit),
            pl.Series("act", act),
            pl.Series("doc", units.doc[unit]),
            pl.Series("pos", units.pos[unit]),
            pl.Series("window_start", lo),
            pl.Series("center", (unit - lo).astype(np.int32)),
            pl.Series("window_text", pl.from_arrow(window_text)).cast(pl.List(pl.String)),
            pl.Series("window_acts", pl.from_arrow(window_acts)).cast(pl.List(pl.Float32)),
        ]
    )


def _list_column(name: str, n_rows: int, owner: np.ndarray, values: pl.Series) -> pl.Series:
    """A list column of ``n_rows`` rows from values whose owner rows are sorted."""
    counts = np.bincount(owner, minlength=n_rows) if owner.size else np.zeros(n_rows, np.int64)
    offsets = np.r_[0, np.cumsum(counts)].astype(np.int64)
    arrow = pa.LargeListArray.from_arrays(pa.array(offsets), values.to_arrow())
    return pl.Series(name, pl.from_arrow(arrow)).cast(pl.List(values.dtype))


def _sorted_heaps(
    key1: np.ndarray, key2: np.ndarray, tok: np.ndarray, size: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flatten per-feature heaps into (feature, key1, key2, token) sorted best first."""
    held = np.arange(key1.shape[1])[None, :] < size[:, None]
    feat = np.nonzero(held)[0]
    k1, k2, t = key1[held], key2[held], tok[held]
    order = np.lexsort((t, -k2, -k1, feat))
    return feat[order], k1[order], k2[order], t[order]


def _features_frame(
    state: _SideState,
    quant: np.ndarray,
    examples: pl.DataFrame,
    units: UnitIndex,
    n_units: int,
    settings: DashboardSettings,
) -> pl.DataFrame:
    nf = state.n_features
    count = state.count
    alive = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_active = np.where(alive, state.total / np.maximum(count, 1), np.nan)
        var = np.where(alive, state.total_sq / np.maximum(count, 1) - mean_active**2, np.nan)
    std_active = np.sqrt(np.maximum(var, 0.0))

    # histogram: drop the empty bins above the top one
    hist = state.hist
    nonzero = hist > 0
    n_used = np.where(nonzero.any(axis=1), hist.shape[1] - np.argmax(nonzero[:, ::-1], axis=1), 0)
    in_use = np.arange(hist.shape[1])[None, :] < n_used[:, None]
    hist_counts = _list_column("hist_counts", nf, np.repeat(np.arange(nf), n_used), pl.Series(hist[in_use]))
    hist_width = np.where(state.hist_set, np.ldexp(1.0, state.hist_exp), np.nan)

    c1, c2, ct, cn, m1, m2, mt, mn = kernels.top_tokens(
        state.tab_keys, state.tab_n, state.tab_s, nf, state.n_vocab, settings.n_top_tokens, settings.min_token_count
    )
    c_feat, c_n, _, c_tok = _sorted_heaps(c1, c2, ct, cn)
    m_feat, m_mean, _, m_tok = _sorted_heaps(m1, m2, mt, mn)

    # token_stats: every token a search by token may match (both top lists and the tokens of
    # the top examples), with its exact count and mean activation for this feature
    top = examples.filter(pl.col("kind") == "top")
    ex_feat = top["feature"].to_numpy().astype(np.int64)
    ex_tok = units.token_id[top["unit"].to_numpy()].astype(np.int64)
    pairs = np.unique(
        np.concatenate(
            [c_feat * state.n_vocab + c_tok, m_feat * state.n_vocab + m_tok, ex_feat * state.n_vocab + ex_tok]
        )
    )
    s_feat, s_tok = pairs // state.n_vocab, pairs % state.n_vocab
    s_n, s_sum = state.token_counts(s_feat, s_tok)
    order = np.lexsort((s_tok, -s_n, s_feat))
    s_feat, s_tok, s_n, s_sum = s_feat[order], s_tok[order], s_n[order], s_sum[order]
    stats = pl.DataFrame(
        {
            "token": units.vocab.gather(s_tok),
            "count": s_n,
            "mean_act": (s_sum / np.maximum(s_n, 1)).astype(np.float32),
        }
    ).to_struct("token_stats")

    vocab = units.vocab
    return pl.DataFrame(
        [
            pl.Series("feature", np.arange(nf, dtype=np.int32)),
            pl.Series("count", count),
            pl.Series("freq", count / max(n_units, 1)),
            pl.Series("mean_active", mean_active, nan_to_null=True),
            pl.Series("std_active", std_active, nan_to_null=True),
            pl.Series("mean_all", state.total / max(n_units, 1)),
            pl.Series("max", state.maxv),
            pl.Series("quantiles", quant.astype(np.float32)).cast(pl.List(pl.Float32)),
            pl.Series("hist_width", hist_width, nan_to_null=True),
            hist_counts,
            _list_column("top_tokens_by_count", nf, c_feat, vocab.gather(c_tok)),
            _list_column("top_tokens_by_count_n", nf, c_feat, pl.Series(c_n.astype(np.int64))),
            _list_column("top_tokens_by_mean", nf, m_feat, vocab.gather(m_tok)),
            _list_column("top_tokens_by_mean_act", nf, m_feat, pl.Series(m_mean.astype(np.float32))),
            _list_column("token_stats", nf, s_feat, stats),
        ]
    ).with_columns(
        # a dead feature has no quantiles (null, not a list of NaN)
        pl.when(pl.col("count") > 0).then(pl.col("quantiles")).otherwise(None).alias("quantiles")
    )


def compute_dashboards(
    codes: dict[str, SparseCodes],
    units: UnitIndex,
    settings: DashboardSettings,
    progress: ProgressFn | None = None,
    unembeddings: dict[str, Unembedding | None] | None = None,
    decoders: dict[str, np.ndarray] | None = None,
) -> dict[str, SideDashboards]:
    """Dashboard data for several SAEs over the same units, one thread per SAE.

    The compiled scan releases the GIL, so with ``settings.threads >= 2`` both SAEs are
    scanned at once. ``progress`` is always called from the calling thread (a UI callback
    may only touch its widgets from there).

    Args:
        codes: side name -> CSR codes (every side has ``units.n_units`` rows).
        units: the unit index.
        settings: what to keep.
        progress: called with ``("dashboards <side>", units done, units total)``.
        unembeddings: side -> unembedding, for sides whose model is a causal LM.
        decoders: side -> ``W_dec``, needed for the sides with an unembedding.

    Returns:
        side -> its dashboard data.
    """
    progress = progress or no_progress
    unembeddings = unembeddings or {}
    decoders = decoders or {}
    reports: queue.Queue[tuple[str, int, int]] = queue.Queue()

    def run(side: str) -> SideDashboards:
        unembedding = unembeddings.get(side)
        return compute_side_dashboards(
            codes[side],
            units,
            settings,
            progress=lambda *report: reports.put(report),
            stage=f"dashboards {side}",
            unembedding=unembedding,
            w_dec=decoders.get(side) if unembedding is not None else None,
        )

    with ThreadPoolExecutor(max_workers=max(1, min(settings.threads, len(codes)))) as pool:
        futures = {side: pool.submit(run, side) for side in codes}
        while True:
            try:
                progress(*reports.get(timeout=0.1))
            except queue.Empty:
                if all(f.done() for f in futures.values()):
                    break
        while not reports.empty():
            progress(*reports.get_nowait())
        return {side: future.result() for side, future in futures.items()}
