"""Classify every crosscoder latent from its decoder norms, and Latent Scaling from the harvest's sums (torch-free).

Notation: n_A = ||d_{A,j}||, n_B = ||d_{B,j}|| (decoder row norms, the crosscoder's input space).

- relative norm (Lindsey et al. 2024, Kissane et al.): r = n_B / (n_A + n_B), B-only near 1.
- Delta-norm (Minder et al. 2025): 0.5 * ((n_B - n_A) / max(n_A, n_B) + 1), B-only near 1, stored as
  ``delta_norm_b_only_1``; the published feature tables store the reversed quantity (B-only near 0),
  stored as ``delta_norm_b_only_0`` = 1 - the first.
- tags, dead first (no activation on the evaluation set, or both norms below eps: with
  n_A = n_B = 0 the formula gives 0.5 and would call the latent shared), then by threshold on
  Delta-norm (B-only near 1): > 0.9 ``b_only``, < 0.1 ``a_only``, |x - 0.5| < 0.1 ``shared``,
  else ``unclassified``; the top-N mode instead takes the N live latents of highest Delta-norm
  as B-only and the N lowest as A-only (the diffing-toolkit's ranking), the rest as above.
- decoder cosine <d_{A,j}, d_{B,j}> / (n_A n_B), NaN when a norm is below eps; encoder cosine the same
  for the encoder columns.
- Latent Scaling (Minder et al. 2025), d_j = d_{B,j}, f the code multiplying the decoder of model l,
  sums over the tokens where f_j > 0 (q_l = sum f_j^2, p_l = sum f_j (x_l . d_j),
  r_l = sum f_j (x_hat_l . d_j), g_l = d_{l,j} . d_j):
  beta^act_l = p_l / (||d_j||^2 q_l), beta^r_l = (r_l - q_l g_l) / (||d_j||^2 q_l) (reconstruction
  without j), beta^eps_l = (p_l - r_l + q_l g_l) / (||d_j||^2 q_l) (error plus j's own share);
  nu^r = beta^r_A / beta^r_B, nu^eps = beta^eps_A / beta^eps_B. nu^eps near 1 suggests Complete
  Shrinkage, nu^r near 1 Latent Decoupling, both near 0 a genuinely B-specific latent.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from core.crosscoder.settings import CARD_KEYS, TAGS, AnalysisSettings

# the raw per-latent columns the bundle's crosscoder part holds (core.crosscoder.bundle writes them)
LATENT_COLUMNS = (
    "latent",
    "norm_a",
    "norm_b",
    "dec_dot",
    "enc_cos",
    "fire",
    "q_a",
    "q_b",
    "p_a",
    "p_b",
    "r_a",
    "r_b",
)


def delta_norm(norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """0.5 * ((n_B - n_A) / max(n_A, n_B) + 1): B-only near 1 (Minder et al. 2025); NaN where both are 0."""
    a, b = np.asarray(norm_a, np.float64), np.asarray(norm_b, np.float64)
    top = np.maximum(a, b)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(top > 0, 0.5 * ((b - a) / np.where(top > 0, top, 1.0) + 1.0), np.nan)


def relative_norm(norm_a: np.ndarray, norm_b: np.ndarray) -> np.ndarray:
    """n_B / (n_A + n_B): B-only near 1 (Lindsey et al. 2024); NaN where both are 0."""
    a, b = np.asarray(norm_a, np.float64), np.asarray(norm_b, np.float64)
    total = a + b
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, b / np.where(total > 0, total, 1.0), np.nan)


def threshold_tags(delta: np.ndarray, dead: np.ndarray, settings: AnalysisSettings) -> np.ndarray:
    """Tags by the Delta-norm cut (B-only near 1), dead latents first."""
    tags = np.full(delta.shape, "unclassified", dtype=object)
    tags[np.abs(delta - 0.5) < settings.shared_band] = "shared"
    tags[delta > settings.b_only_above] = "b_only"
    tags[delta < settings.a_only_below] = "a_only"
    tags[dead] = "dead"
    return tags


def top_n_tags(delta: np.ndarray, dead: np.ndarray, settings: AnalysisSettings) -> np.ndarray:
    """Tags by rank: the N live latents of highest Delta-norm are B-only, the N lowest A-only, the rest by the shared band.

    Ties are broken by latent index; with fewer than 2N live latents the B-only set is taken first.
    """
    tags = np.full(delta.shape, "unclassified", dtype=object)
    tags[np.abs(delta - 0.5) < settings.shared_band] = "shared"
    live = np.flatnonzero(~dead)
    order = live[np.argsort(-delta[live], kind="stable")]
    top = order[: settings.top_n]
    tags[top] = "b_only"
    rest = np.setdiff1d(live, top, assume_unique=True)
    bottom = rest[np.argsort(delta[rest], kind="stable")][: settings.top_n]
    tags[bottom] = "a_only"
    tags[dead] = "dead"
    return tags


def taxonomy_counts(tags: np.ndarray) -> dict[str, int]:
    """Counts in the model card's JSON shape: shared, dead, unclassified, base_only (A), chat_only (B)."""
    values, counts = np.unique(np.asarray(tags, dtype=str), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist(), strict=True))
    return {CARD_KEYS[t]: int(found.get(t, 0)) for t in ("shared", "dead", "unclassified", "a_only", "b_only")}


def latent_scaling(latents: pl.DataFrame, g_a: np.ndarray, settings: AnalysisSettings) -> dict[str, np.ndarray]:
    """Closed-form betas for the activation, reconstruction and error targets of both models, and the nu ratios.

    Args:
        latents: the crosscoder part's frame (``q_*``, ``p_*``, ``r_*``, ``norm_b``, ``fire``).
        g_a: d_{A,j} . d_{B,j} per latent.
        settings: ``eps``, ``min_ls_tokens``, ``nu_near_one``, ``nu_near_zero``.

    Returns:
        ``beta_{act,recon,error}_{a,b}``, ``nu_recon``, ``nu_error`` (NaN where undefined) and the
        boolean flags ``complete_shrinkage``, ``latent_decoupling``, ``b_specific``.
    """
    n_b = latents["norm_b"].to_numpy().astype(np.float64)
    fire = latents["fire"].to_numpy().astype(np.float64)
    d2 = n_b**2
    g = {"a": np.asarray(g_a, np.float64), "b": d2}
    out: dict[str, np.ndarray] = {}
    ok_base = (n_b >= settings.eps) & (fire >= settings.min_ls_tokens)
    for side in ("a", "b"):
        q = latents[f"q_{side}"].to_numpy().astype(np.float64)
        p = latents[f"p_{side}"].to_numpy().astype(np.float64)
        r = latents[f"r_{side}"].to_numpy().astype(np.float64)
        ok = ok_base & (q > 0)
        denom = np.where(ok, d2 * q, 1.0)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[f"beta_act_{side}"] = np.where(ok, p / denom, np.nan)
            out[f"beta_recon_{side}"] = np.where(ok, (r - q * g[side]) / denom, np.nan)
            out[f"beta_error_{side}"] = np.where(ok, (p - r + q * g[side]) / denom, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        nu_r = out["beta_recon_a"] / out["beta_recon_b"]
        nu_e = out["beta_error_a"] / out["beta_error_b"]
    nu_r[~np.isfinite(nu_r)] = np.nan
    nu_e[~np.isfinite(nu_e)] = np.nan
    out["nu_recon"], out["nu_error"] = nu_r, nu_e
    with np.errstate(invalid="ignore"):
        out["complete_shrinkage"] = nu_e >= settings.nu_near_one
        out["latent_decoupling"] = nu_r >= settings.nu_near_one
        out["b_specific"] = (np.abs(nu_r) < settings.nu_near_zero) & (np.abs(nu_e) < settings.nu_near_zero)
    return out


def compute_analyses(latents: pl.DataFrame, settings: AnalysisSettings) -> pl.DataFrame:
    """Every latent's norms, Delta-norm (both orientations), cosines, tags and Latent Scaling.

    Args:
        latents: the bundle's crosscoder part (``LATENT_COLUMNS``).
        settings: thresholds and the top-N size.

    Returns:
        One row per latent: ``latent``, ``is_dead``, ``fire``, ``norm_a``, ``norm_b``,
        ``relative_norm``, ``delta_norm_b_only_1``, ``delta_norm_b_only_0``, ``dec_cos``,
        ``enc_cos``, ``tag_threshold``, ``tag_top_n``, ``delta_rank`` (1 = most B-only among
        live latents), the betas, nu ratios and flags of :func:`latent_scaling`.
    """
    n_a = latents["norm_a"].to_numpy().astype(np.float64)
    n_b = latents["norm_b"].to_numpy().astype(np.float64)
    fire = latents["fire"].to_numpy()
    dead = (fire == 0) | ((n_a < settings.eps) & (n_b < settings.eps))
    delta = delta_norm(n_a, n_b)
    both = (n_a >= settings.eps) & (n_b >= settings.eps)
    dot = latents["dec_dot"].to_numpy().astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        cos = np.where(both, dot / np.where(both, n_a * n_b, 1.0), np.nan)
    cos = np.clip(cos, -1.0, 1.0)
    live = np.flatnonzero(~dead)
    rank = np.full(delta.shape, 0, dtype=np.int64)
    rank[live[np.argsort(-delta[live], kind="stable")]] = np.arange(1, live.size + 1)
    scaling = latent_scaling(latents, dot, settings)
    frame = pl.DataFrame(
        {
            "latent": latents["latent"].cast(pl.Int64),
            "is_dead": dead,
            "fire": pl.Series(fire).cast(pl.Int64),
            "norm_a": n_a,
            "norm_b": n_b,
            "relative_norm": relative_norm(n_a, n_b),
            "delta_norm_b_only_1": delta,
            "delta_norm_b_only_0": 1.0 - delta,
            "dec_cos": cos,
            "enc_cos": latents["enc_cos"].cast(pl.Float64),
            "tag_threshold": pl.Series(threshold_tags(delta, dead, settings).astype(str), dtype=pl.Enum(TAGS)),
            "tag_top_n": pl.Series(top_n_tags(delta, dead, settings).astype(str), dtype=pl.Enum(TAGS)),
            "delta_rank": pl.Series("delta_rank", rank, dtype=pl.Int64).replace(0, None),
            **scaling,
        },
        nan_to_null=False,
    )
    return frame


def summarize_analyses(frame: pl.DataFrame, settings: AnalysisSettings) -> dict[str, Any]:
    """The analyses' headline numbers: taxonomy counts (both modes), medians, Latent Scaling flag counts.

    Returns:
        ``taxonomy`` and ``taxonomy_top_n`` (the model card's JSON shape), ``counts`` (A/B names),
        ``median_dec_cos_shared``, ``n_latents``, ``n_live``, and per B-only latents (threshold
        mode) the counts of each Latent Scaling flag.
    """
    tags = frame["tag_threshold"].cast(pl.String).to_numpy()
    shared = frame.filter(pl.col("tag_threshold") == "shared")["dec_cos"].drop_nans().drop_nulls()
    b_only = frame.filter(pl.col("tag_threshold") == "b_only")
    return {
        "taxonomy": taxonomy_counts(tags),
        "taxonomy_top_n": taxonomy_counts(frame["tag_top_n"].cast(pl.String).to_numpy()),
        "counts": {t: int((tags == t).sum()) for t in TAGS},
        "n_latents": frame.height,
        "n_live": int((~frame["is_dead"]).sum()),
        "median_dec_cos_shared": float(np.median(shared.to_numpy())) if shared.len() else None,
        "b_only_latent_scaling": {
            flag: int(b_only[flag].fill_null(False).sum())
            for flag in ("complete_shrinkage", "latent_decoupling", "b_specific")
        },
        "card_keys": {"base_only": "a_only (model A, index 0)", "chat_only": "b_only (model B, index 1)"},
        "settings": settings.to_dict(),
    }
