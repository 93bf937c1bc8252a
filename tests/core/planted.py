"""Synthetic SAE codes with planted answers, for the matching tests.

Builders take a config made by ``build_*_config(**overrides)`` (like SAELens's
tests/helpers.py), so a test states only what it changes.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.bundle.writer import BundleWriter, prepare_output_dir


@dataclass(frozen=True)
class PlantedConfig:
    """Shape of a planted comparison.

    Attributes:
        n_units: units (rows) of both codes.
        n_docs: documents, contiguous runs of units of equal length.
        n_shared: concepts each carried by one A and one B feature (the permutation).
        n_split_hubs: A features whose concept is split between ``split_size`` B features.
        split_size: B features per split hub.
        n_orphans_a: A features with a concept of their own.
        n_orphans_b: B features with a concept of their own.
        n_dead_a: A features that never fire.
        n_dead_b: B features that never fire.
        n_always_on_a: A features firing on every unit with varying values.
        n_always_on_b: B features firing on every unit with varying values.
        n_constant_b: B features firing on every unit with one constant value (zero variance).
        fire_prob: probability a concept fires on a unit.
        noise_prob: probability a feature fires on a unit on its own (spurious firings).
        orphan_fires: (lo, hi) firings of each orphan, at random units (rare features whose chance
            co-firings reach r 0.1-0.2); None: orphans fire like concepts, with ``fire_prob``.
        value_noise: relative jitter of each side's activation around the concept's value.
        d_in: decoder width.
        decoder_noise: jitter added to a partner's decoder direction.
        seed: random seed.
    """

    n_units: int = 4000
    n_docs: int = 40
    n_shared: int = 30
    n_split_hubs: int = 3
    split_size: int = 2
    n_orphans_a: int = 4
    n_orphans_b: int = 4
    n_dead_a: int = 2
    n_dead_b: int = 2
    n_always_on_a: int = 1
    n_always_on_b: int = 1
    n_constant_b: int = 1
    fire_prob: float = 0.04
    noise_prob: float = 0.004
    orphan_fires: tuple[int, int] | None = None
    value_noise: float = 0.2
    d_in: int = 16
    decoder_noise: float = 0.1
    seed: int = 0


def build_planted_config(**overrides: object) -> PlantedConfig:
    """The default :class:`PlantedConfig` with ``overrides`` applied."""
    return replace(PlantedConfig(), **overrides)


@dataclass(frozen=True, eq=False)
class Planted:
    """A planted comparison and its known answers (all ids are feature ids on their side).

    Attributes:
        codes_a: codes of SAE A.
        codes_b: codes of SAE B.
        pairs: int [n_shared, 2] (a, b) that share a concept.
        splits: hub A feature -> its B parts.
        orphans_a: A features with no partner.
        orphans_b: B features with no partner.
        dead_a: never-firing A features.
        dead_b: never-firing or constant B features.
        always_on_a: A features firing everywhere.
        always_on_b: B features firing everywhere (with variance).
        docs: int [n_units] document of each unit.
        w_dec_a: [Fa, d_in] decoder of A.
        w_dec_b: [Fb, d_in] decoder of B.
    """

    codes_a: SparseCodes
    codes_b: SparseCodes
    pairs: np.ndarray
    splits: dict[int, tuple[int, ...]]
    orphans_a: np.ndarray
    orphans_b: np.ndarray
    dead_a: np.ndarray
    dead_b: np.ndarray
    always_on_a: np.ndarray
    always_on_b: np.ndarray
    docs: np.ndarray
    w_dec_a: np.ndarray
    w_dec_b: np.ndarray
    top_tokens_a: list[list[str]] = field(default_factory=list)
    top_tokens_b: list[list[str]] = field(default_factory=list)


def make_planted(cfg: PlantedConfig) -> Planted:
    """Build codes where the right matching is known by construction.

    Args:
        cfg: the shape (see :class:`PlantedConfig`).

    Returns:
        The :class:`Planted` comparison.
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_units
    n_concepts = cfg.n_shared + cfg.n_split_hubs
    fires = rng.random((n, n_concepts)) < cfg.fire_prob
    value = np.where(fires, rng.uniform(0.5, 2.0, (n, n_concepts)), 0.0)

    def side(cols: list[np.ndarray]) -> np.ndarray:
        dense = np.stack(cols, axis=1) if cols else np.zeros((n, 0))
        jitter = 1.0 + cfg.value_noise * rng.standard_normal(dense.shape)
        dense = np.where(dense > 0, np.abs(dense * jitter) + 1e-3, 0.0)
        spurious = rng.random(dense.shape) < cfg.noise_prob
        return np.where(spurious & (dense == 0), rng.uniform(0.1, 1.0, dense.shape), dense)

    def own() -> np.ndarray:
        if cfg.orphan_fires is None:
            return np.where(rng.random(n) < cfg.fire_prob, rng.uniform(0.5, 2.0, n), 0.0)
        col = np.zeros(n)
        hit = rng.choice(n, int(rng.integers(cfg.orphan_fires[0], cfg.orphan_fires[1], endpoint=True)), replace=False)
        col[hit] = rng.uniform(0.5, 2.0, hit.size)
        return col

    # A columns in a known order, then shuffled ids
    cols_a = [value[:, c] for c in range(n_concepts)] + [own() for _ in range(cfg.n_orphans_a)]
    # B: shared concepts, split parts (the hub's firing units partitioned), orphans
    cols_b = [value[:, c] for c in range(cfg.n_shared)]
    parts_of: list[list[int]] = []
    for h in range(cfg.n_split_hubs):
        col = value[:, cfg.n_shared + h]
        which = rng.integers(0, cfg.split_size, n)
        parts_of.append([])
        for s in range(cfg.split_size):
            parts_of[-1].append(len(cols_b))
            cols_b.append(np.where(which == s, col, 0.0))
    cols_b += [own() for _ in range(cfg.n_orphans_b)]
    dense_a, dense_b = side(cols_a), side(cols_b)
    extra_a = [np.zeros(n)] * cfg.n_dead_a + [rng.uniform(0.5, 1.5, n) for _ in range(cfg.n_always_on_a)]
    extra_b = (
        [np.zeros(n)] * cfg.n_dead_b
        + [rng.uniform(0.5, 1.5, n) for _ in range(cfg.n_always_on_b)]
        + [np.full(n, 0.75)] * cfg.n_constant_b
    )
    dense_a = np.concatenate([dense_a, np.stack(extra_a, 1)], 1) if extra_a else dense_a
    dense_b = np.concatenate([dense_b, np.stack(extra_b, 1)], 1) if extra_b else dense_b
    perm_a, perm_b = rng.permutation(dense_a.shape[1]), rng.permutation(dense_b.shape[1])
    id_a, id_b = np.argsort(perm_a), np.argsort(perm_b)  # original column -> new id
    codes_a = SparseCodes.from_dense(dense_a[:, perm_a])
    codes_b = SparseCodes.from_dense(dense_b[:, perm_b])

    k_a = n_concepts + cfg.n_orphans_a
    k_b = cfg.n_shared + cfg.n_split_hubs * cfg.split_size + cfg.n_orphans_b
    pairs = np.array([[id_a[c], id_b[c]] for c in range(cfg.n_shared)], dtype=np.int64).reshape(-1, 2)
    splits = {int(id_a[cfg.n_shared + h]): tuple(int(id_b[p]) for p in parts_of[h]) for h in range(cfg.n_split_hubs)}
    orphans_a = np.sort(id_a[n_concepts:k_a])
    orphans_b = np.sort(id_b[k_b - cfg.n_orphans_b : k_b])
    dead_a = np.sort(id_a[k_a : k_a + cfg.n_dead_a])
    always_on_a = np.sort(id_a[k_a + cfg.n_dead_a :])
    dead_b = np.sort(np.concatenate([id_b[k_b : k_b + cfg.n_dead_b], id_b[k_b + cfg.n_dead_b + cfg.n_always_on_b :]]))
    always_on_b = np.sort(id_b[k_b + cfg.n_dead_b : k_b + cfg.n_dead_b + cfg.n_always_on_b])

    # decoders: partners share a direction up to noise, split parts lean on their hub
    w_a = rng.standard_normal((dense_a.shape[1], cfg.d_in))
    w_b = rng.standard_normal((dense_b.shape[1], cfg.d_in))
    for a, b in pairs:
        w_b[b] = w_a[a] + cfg.decoder_noise * rng.standard_normal(cfg.d_in) * np.linalg.norm(w_a[a])
    docs = np.repeat(np.arange(cfg.n_docs), int(np.ceil(n / cfg.n_docs)))[:n]
    return Planted(
        codes_a=codes_a,
        codes_b=codes_b,
        pairs=pairs,
        splits=splits,
        orphans_a=orphans_a,
        orphans_b=orphans_b,
        dead_a=dead_a,
        dead_b=dead_b,
        always_on_a=always_on_a,
        always_on_b=always_on_b,
        docs=docs,
        w_dec_a=w_a.astype(np.float32),
        w_dec_b=w_b.astype(np.float32),
    )


def random_codes(n_units: int, n_features: int, density: float, seed: int) -> SparseCodes:
    """Random sparse codes with some dead, one always-on and one constant feature (for dense references)."""
    rng = np.random.default_rng(seed)
    dense = np.where(rng.random((n_units, n_features)) < density, rng.exponential(1.0, (n_units, n_features)), 0.0)
    dense[:, 0] = 0.0  # dead
    dense[:, 1] = rng.uniform(0.5, 1.5, n_units)  # always on
    dense[:, 2] = 2.5  # constant: zero variance
    dense[: n_units // 2, 3] *= 0.0  # fires only in the second half
    return SparseCodes.from_dense(dense.astype(np.float32))


def dense_pearson(codes_a: SparseCodes, codes_b: SparseCodes) -> np.ndarray:
    """Reference Pearson matrix in float64 with numpy; nan where a feature has zero variance."""
    x = codes_a.to_dense().astype(np.float64)
    y = codes_b.to_dense().astype(np.float64)
    x -= x.mean(0)
    y -= y.mean(0)
    sx, sy = np.sqrt((x * x).sum(0)), np.sqrt((y * y).sum(0))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (x.T @ y) / np.outer(sx, sy)
    n = x.shape[0]
    # the same zero-variance rule as core.correlate: spread below 1e-6 of the mean
    dead_x = sx / np.sqrt(n) <= 1e-6 * np.abs(codes_a.to_dense().astype(np.float64).mean(0))
    dead_y = sy / np.sqrt(n) <= 1e-6 * np.abs(codes_b.to_dense().astype(np.float64).mean(0))
    r[dead_x] = np.nan
    r[:, dead_y] = np.nan
    return r


@dataclass(frozen=True)
class BurstyConfig:
    """Shape of the significance benchmark: bursty chance features and planted co-firing pairs.

    Attributes:
        n_docs: documents.
        doc_len: units per document.
        n_topics: topics; each document has one, each chance feature fires only in its topic.
        n_chance_a: A features independent of every B feature.
        n_chance_b: B features independent of every A feature.
        docs_per_feature: (lo, hi) documents a chance feature fires in.
        fires_per_doc: (lo, hi) firings of a chance feature in each of its documents.
        n_planted: planted pairs (a co-fires with b on ``k`` of its units).
        planted_fires: (lo, hi) firings of a planted A feature, spread over random units.
        planted_k: (lo, hi) co-firings of a planted pair.
        seed: random seed.
    """

    n_docs: int = 400
    doc_len: int = 500
    n_topics: int = 8
    n_chance_a: int = 800
    n_chance_b: int = 800
    docs_per_feature: tuple[int, int] = (2, 5)
    fires_per_doc: tuple[int, int] = (4, 20)
    n_planted: int = 200
    planted_fires: tuple[int, int] = (7, 40)
    planted_k: tuple[int, int] = (3, 7)
    seed: int = 0


def build_bursty_config(**overrides: object) -> BurstyConfig:
    """The default :class:`BurstyConfig` with ``overrides`` applied."""
    return replace(BurstyConfig(), **overrides)


@dataclass(frozen=True, eq=False)
class Bursty:
    """Bursty codes with their answers: ``planted`` [n, 2] (a, b) pairs and ``chance_a`` ids."""

    codes_a: SparseCodes
    codes_b: SparseCodes
    docs: np.ndarray
    planted: np.ndarray
    chance_a: np.ndarray


def make_bursty(cfg: BurstyConfig) -> Bursty:
    """Codes with topic-bound bursty chance features plus planted pairs (see :class:`BurstyConfig`).

    Args:
        cfg: the shape.

    Returns:
        The :class:`Bursty` codes and answers.
    """
    rng = np.random.default_rng(cfg.seed)
    n = cfg.n_docs * cfg.doc_len
    topic_of_doc = rng.integers(0, cfg.n_topics, cfg.n_docs)
    docs_of_topic = [np.flatnonzero(topic_of_doc == t) for t in range(cfg.n_topics)]

    def chance(n_features: int) -> list[np.ndarray]:
        out = []
        for _ in range(n_features):
            pool = docs_of_topic[rng.integers(0, cfg.n_topics)]
            chosen = rng.choice(pool, min(len(pool), rng.integers(*cfg.docs_per_feature, endpoint=True)), replace=False)
            units = [
                d * cfg.doc_len
                + rng.choice(cfg.doc_len, rng.integers(*cfg.fires_per_doc, endpoint=True), replace=False)
                for d in chosen
            ]
            out.append(np.sort(np.concatenate(units)))
        return out

    units_a, units_b = chance(cfg.n_chance_a), chance(cfg.n_chance_b)
    planted_a, planted_b = [], []
    for _ in range(cfg.n_planted):
        ua = np.sort(rng.choice(n, rng.integers(*cfg.planted_fires, endpoint=True), replace=False))
        k = min(len(ua), rng.integers(*cfg.planted_k, endpoint=True))
        shared = rng.choice(ua, k, replace=False)
        extra = rng.choice(n, rng.integers(0, len(ua), endpoint=True), replace=False)
        planted_a.append(ua)
        planted_b.append(np.unique(np.concatenate([shared, extra])))
    cols_a, cols_b = units_a + planted_a, units_b + planted_b
    perm_a, perm_b = rng.permutation(len(cols_a)), rng.permutation(len(cols_b))
    id_a, id_b = np.argsort(perm_a), np.argsort(perm_b)

    def codes(cols: list[np.ndarray], ids: np.ndarray) -> SparseCodes:
        rows = np.concatenate(cols)
        feats = np.concatenate([np.full(len(c), ids[j]) for j, c in enumerate(cols)])
        vals = rng.uniform(0.5, 1.5, rows.shape[0])
        return SparseCodes.from_coo(rows, feats, vals, n, len(cols))

    planted = np.stack([id_a[cfg.n_chance_a :], id_b[cfg.n_chance_b :]], axis=1).astype(np.int64)
    return Bursty(
        codes_a=codes(cols_a, id_a),
        codes_b=codes(cols_b, id_b),
        docs=np.repeat(np.arange(cfg.n_docs), cfg.doc_len),
        planted=planted,
        chance_a=np.sort(id_a[: cfg.n_chance_a]),
    )


def write_bundle(
    path: Path,
    codes_a: SparseCodes,
    codes_b: SparseCodes,
    docs: np.ndarray,
    w_dec_a: np.ndarray,
    w_dec_b: np.ndarray,
    top_tokens_a: list[list[str]] | None = None,
    top_tokens_b: list[list[str]] | None = None,
    texts: list[str] | None = None,
) -> Path:
    """Write a minimal but complete bundle (schema 1) around the given codes.

    Args:
        path: output folder (must be empty or absent).
        codes_a: codes of SAE A.
        codes_b: codes of SAE B.
        docs: document of each unit.
        w_dec_a: decoder of A.
        w_dec_b: decoder of B.
        top_tokens_a: per A feature its top tokens (default: a distinct word per feature).
        top_tokens_b: per B feature its top tokens.
        texts: the text of each unit (default ``t0``, ``t1``, ...).

    Returns:
        The bundle folder.
    """
    prepare_output_dir(path)
    writer = BundleWriter(path)
    n = codes_a.n_rows
    writer.write_units(
        pl.DataFrame(
            {
                "unit": np.arange(n, dtype=np.int64),
                "doc": np.asarray(docs, np.int64),
                "pos": np.arange(n, dtype=np.int64),
                "text": texts if texts is not None else [f"t{i}" for i in range(n)],
                "char_start": np.arange(n, dtype=np.int64),
                "char_end": np.arange(n, dtype=np.int64) + 1,
            }
        )
    )
    writer.write_docs(pl.DataFrame({"doc": np.unique(docs).astype(np.int64), "text": "x"}))
    for side, codes, w, tokens in (("a", codes_a, w_dec_a, top_tokens_a), ("b", codes_b, w_dec_b, top_tokens_b)):
        writer.write_codes(side, codes)
        writer.write_decoder(side, w)
        f = codes.n_features
        tokens = tokens if tokens is not None else [[f"{side}word{i}"] for i in range(f)]
        dense_freq = np.bincount(codes.indices, minlength=f) / max(n, 1)
        writer.write_features(
            side,
            pl.DataFrame(
                {
                    "feature": np.arange(f, dtype=np.int64),
                    "freq": dense_freq,
                    "mean": np.zeros(f),
                    "std": np.zeros(f),
                    "max": np.zeros(f),
                    "is_dead": dense_freq == 0,
                    "is_dense": dense_freq > 0.5,
                    "top_tokens": pl.Series(tokens, dtype=pl.List(pl.String)),
                    "is_nonconcept": np.zeros(f, bool),
                }
            ),
        )
    sides = {
        s: {"d_sae": c.n_features, "d_in": int(w.shape[1])}
        for s, c, w in (("a", codes_a, w_dec_a), ("b", codes_b, w_dec_b))
    }
    return writer.finalize({"sides": sides, "n_units": n})
