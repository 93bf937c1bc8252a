"""A crosscoder as a comparison bundle: one latent index on both sides, the identity pairing, per-latent raw stats.

- side codes: f x ||d_A|| on side a and f x ||d_B|| on side b, so every page that reads two
  sets of codes (dashboards, correlation, UMAP of each model's decoder) works unchanged;
- decoders: ``decoder_a`` = W_dec[0], ``decoder_b`` = W_dec[1] (the crosscoder's input space);
- ``assignment.parquet``: latent j of A paired with latent j of B (method ``identity``), its
  score the decoder cosine (``cos`` and ``score``); ``corr`` is the exact Pearson of the two side
  codes, 1 by construction when both norms are positive (not a search over partners); kept when
  the latent fires and both decoder norms are at least eps;
- ``matches.parquet``: the same identity pairs as rank-1 rows of both directions;
- ``crosscoder_latents.parquet``: per latent, the norms, the decoder dot product, the encoder
  cosine, the firing count and the Latent Scaling sums the analyses stage turns into betas.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from core.bundle.codes import SparseCodes
from core.crosscoder.model import Crosscoder
from core.matching.assign import summarize_pairs
from core.matching.correlate import compute_pair_stats, jaccard
from core.matching.moments import compute_moments
from core.matching.stage import MATCH_COLUMNS
from core.sides import SIDES


def latent_frame(cc: Crosscoder, sums: dict[str, np.ndarray]) -> pl.DataFrame:
    """The crosscoder part's per-latent frame (``core.crosscoder.taxonomy.LATENT_COLUMNS`` plus firing per model).

    Args:
        cc: the crosscoder.
        sums: the harvest's merged sums (``core.crosscoder.harvest.shard_sums`` keys).

    Returns:
        One row per latent.
    """
    w_dec = cc.W_dec.double().cpu().numpy()
    w_enc = cc.W_enc.double().cpu().numpy()  # [M, d, F]
    norms = np.linalg.norm(w_dec, axis=2)
    enc_norms = np.linalg.norm(w_enc, axis=1)
    enc_dot = (w_enc[0] * w_enc[1]).sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        enc_cos = np.where(enc_norms.min(axis=0) > 0, enc_dot / (enc_norms[0] * enc_norms[1]), np.nan)
    n = cc.n_latents
    fire_a = sums.get("fire_a", np.zeros(n))
    fire_b = sums.get("fire_b", np.zeros(n))
    frame = {
        "latent": np.arange(n, dtype=np.int64),
        "norm_a": norms[0],
        "norm_b": norms[1],
        "dec_dot": (w_dec[0] * w_dec[1]).sum(axis=1),
        "enc_cos": np.clip(enc_cos, -1.0, 1.0),
        "fire": np.maximum(fire_a, fire_b).astype(np.int64),
        "fire_a": fire_a.astype(np.int64),
        "fire_b": fire_b.astype(np.int64),
    }
    for key in ("q", "p", "r"):
        for side in SIDES:
            frame[f"{key}_{side}"] = sums.get(f"{key}_{side}", np.zeros(n))
    return pl.DataFrame(frame, nan_to_null=False)


def reconstruction_summary(cc: Crosscoder, sums: dict[str, np.ndarray]) -> dict[str, Any]:
    """Per-model explained variance, MSE and L0, and the dead fraction, from the harvest's sums.

    EV_l = 1 - sum ||x_l - x_hat_l||^2 / sum ||x_l - mean(x_l)||^2 over every harvested token
    (the crosscoder's input space; a per-model scale does not change it).

    Returns:
        ``{"a": {...}, "b": {...}, "n_tokens", "dead_fraction", "n_dead", "l0"}``.
    """
    n = float(sums["n_tokens"][0]) if "n_tokens" in sums else 0.0
    d = cc.weights.d_model
    out: dict[str, Any] = {"n_tokens": int(n)}
    for side in SIDES:
        sse = float(sums[f"sse_{side}"][0])
        centred = float(sums[f"sumsq_{side}"][0]) - float((sums[f"sum_{side}"] ** 2).sum()) / max(n, 1.0)
        out[side] = {
            "explained_variance": 1.0 - sse / centred if centred > 0 else float("nan"),
            "mse": sse / max(n * d, 1.0),
            "l0": float(sums[f"l0_{side}"][0]) / max(n, 1.0),
        }
    dead = (sums["fire_a"] == 0) & (sums["fire_b"] == 0)
    out["n_dead"] = int(dead.sum())
    out["dead_fraction"] = float(dead.mean())
    out["l0"] = max(out["a"]["l0"], out["b"]["l0"])
    return out


def identity_frames(
    codes_a: SparseCodes, codes_b: SparseCodes, cc: Crosscoder, fire: np.ndarray, eps: float = 1e-6
) -> tuple[pl.DataFrame, pl.DataFrame, dict[str, Any]]:
    """``matches.parquet``, ``assignment.parquet`` and the manifest's ``matching`` record of the identity pairing.

    Args:
        codes_a: side a's codes (f x n_A).
        codes_b: side b's codes (f x n_B).
        cc: the crosscoder (decoder norms and cosines).
        fire: per latent, tokens where it fires.
        eps: a decoder norm below this counts as zero.

    Returns:
        (matches, assignment, matching record).
    """
    n = cc.n_latents
    latents = np.arange(n, dtype=np.int64)
    moments_a, moments_b = compute_moments(codes_a), compute_moments(codes_b)
    corr, count = compute_pair_stats(codes_a, codes_b, moments_a, moments_b, latents, latents)
    norms = cc.norms.double().cpu().numpy()
    dot = (cc.W_dec[0].double() * cc.W_dec[1].double()).sum(dim=1).cpu().numpy()
    both = (norms[0] >= eps) & (norms[1] >= eps)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.clip(np.where(both, dot / np.where(both, norms[0] * norms[1], 1.0), np.nan), -1.0, 1.0)
    reason = np.full(n, None, dtype=object)
    reason[norms[1] < eps] = "no_decoder_b"
    reason[norms[0] < eps] = "no_decoder_a"
    reason[fire == 0] = "dead"
    kept = np.array([r is None for r in reason])
    jac = jaccard(count, moments_a.n_fire, moments_b.n_fire)
    assignment = pl.DataFrame(
        {
            "feature_a": latents,
            "feature_b": latents,
            "method": ["identity"] * n,
            "corr": corr,
            "kept": kept,
            "reason": pl.Series(reason.tolist(), dtype=pl.String),
            "cos": cos,
            "score": cos,
            "n_coactive": count.astype(np.int64),
            "jaccard": jac,
        },
        nan_to_null=True,
    )
    rows = np.flatnonzero(np.isfinite(corr))
    one = {
        "feature_a": latents[rows],
        "feature_b": latents[rows],
        "rank": np.ones(rows.size, np.int32),
        "corr": corr[rows],
        "cos": cos[rows],
        "jaccard": jac[rows],
        "n_coactive": count[rows].astype(np.int64),
        "is_mutual": np.ones(rows.size, bool),
        "in_both": np.ones(rows.size, bool),
        "n_a": moments_a.n_fire[rows],
        "n_b": moments_b.n_fire[rows],
    }
    matches = pl.concat(
        [
            pl.DataFrame({**one, "direction": [direction] * rows.size}, nan_to_null=True)
            for direction in ("a->b", "b->a")
        ]
    ).select(MATCH_COLUMNS)
    summary = summarize_pairs(assignment.with_columns(pl.col("corr").fill_null(float("nan"))), "identity", 0.1)
    n_dead = int((fire == 0).sum())
    record = {
        "settings": {"method": "identity", "min_corr": 0.1, "eps": eps},
        "source": "crosscoder (latent j of A is latent j of B; score = decoder cosine)",
        "summary": {
            "n_features_a": n,
            "n_features_b": n,
            "n_units": codes_a.n_rows,
            "n_dead_a": n_dead,
            "n_dead_b": n_dead,
            "methods": {"identity": summary.to_dict()},
            "n_kept": int(kept.sum()),
            "reasons": {str(r): int((reason == r).sum()) for r in ("dead", "no_decoder_a", "no_decoder_b")},
        },
    }
    return matches, assignment, record
