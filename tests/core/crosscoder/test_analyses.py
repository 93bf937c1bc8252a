"""A planted crosscoder gets its planted tags (dead never shared), and Latent Scaling recovers a planted beta."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from core.crosscoder.bundle import latent_frame, reconstruction_summary
from core.crosscoder.checkpoint import CrosscoderWeights
from core.crosscoder.harvest import encode_activations
from core.crosscoder.model import Crosscoder, InputScaling
from core.crosscoder.settings import AnalysisSettings
from core.crosscoder.taxonomy import compute_analyses, delta_norm, relative_norm, summarize_analyses, taxonomy_counts

torch.set_num_threads(1)

D, F, T = 16, 12, 600
SHARED, A_ONLY, B_ONLY, DEAD_SILENT, DEAD_NORMS, OTHER = (0, 1, 2, 3), (4, 5), (6, 7), 8, 9, (10, 11)
THETA = math.radians(30)
BETA = 0.37


def _weights(w_enc: torch.Tensor, b_enc: torch.Tensor, w_dec: torch.Tensor) -> CrosscoderWeights:
    from pathlib import Path

    return CrosscoderWeights(
        W_enc=w_enc,
        b_enc=b_enc,
        W_dec=w_dec,
        b_dec=torch.zeros(2, D),
        architecture="relu",
        k=None,
        threshold=None,
        code_normalization="crosscoder",
        mixed_alphas=(1.0, 0.1),
        normaliser_mean=None,
        normaliser_scale=None,
        format="dictionary_learning",
        path=Path("planted.safetensors"),
    )


def planted() -> tuple[Crosscoder, np.ndarray, np.ndarray]:
    """The planted crosscoder and activations (scale 1).

    Latent j reads coordinate j of one model (A-only latents read A, the others B), so its code
    is that coordinate. Decoders: shared d_A = e_j, d_B = cos30 e_j + sin30 e_{j+12} (rotated, same
    norm); A-only d_A = e_j, d_B = 0.02 e_j; B-only d_A = 0.02 e_{j+1}, d_B = e_j; latent 8 never
    fires (equal norms, so its Delta-norm is 0.5); latent 9 fires but has no decoder; latents 10 and
    11 have n_B = 0.5 n_A (Delta-norm 0.25). Model A's activation carries 0.37 x latent 6's code
    along latent 6's B direction e_6, and nothing of it along its own A decoder.
    """
    e = torch.eye(D)
    w_enc = torch.zeros(2, D, F)
    b_enc = torch.zeros(F)
    w_dec = torch.zeros(2, F, D)
    for j in range(F):
        if j in A_ONLY:
            w_enc[0, j, j] = 1.0
        elif j != DEAD_SILENT:
            w_enc[1, j, j] = 1.0
    b_enc[DEAD_SILENT] = -1.0
    for j in SHARED:
        w_dec[0, j], w_dec[1, j] = e[j], math.cos(THETA) * e[j] + math.sin(THETA) * e[j + 12]
    for j in A_ONLY:
        w_dec[0, j], w_dec[1, j] = e[j], 0.02 * e[j]
    for j in B_ONLY:
        w_dec[0, j], w_dec[1, j] = 0.02 * e[j + 1], e[j]
    w_dec[0, DEAD_SILENT], w_dec[1, DEAD_SILENT] = e[8], e[8]
    for j in OTHER:
        w_dec[0, j], w_dec[1, j] = e[j], 0.5 * e[j]
    cc = Crosscoder(_weights(w_enc, b_enc, w_dec), InputScaling((1.0, 1.0), ("given", "given")))
    rng = np.random.default_rng(0)
    codes = (rng.random((T, F)) < 0.3) * rng.exponential(1.0, (T, F))
    x_a = rng.normal(0, 0.1, (T, D))
    x_b = rng.normal(0, 0.1, (T, D))
    for j in range(F):
        if j in A_ONLY:
            x_a[:, j] = codes[:, j]
        elif j != DEAD_SILENT:
            x_b[:, j] = codes[:, j]
    x_a[:, 6] = BETA * codes[:, 6]
    return cc, x_a.astype(np.float32), x_b.astype(np.float32)


def _frames(settings: AnalysisSettings | None = None) -> tuple[pl.DataFrame, Crosscoder, np.ndarray, np.ndarray]:
    cc, x_a, x_b = planted()
    _, sums = encode_activations(cc, [x_a, x_b])
    latents = latent_frame(cc, sums)
    return compute_analyses(latents, settings or AnalysisSettings()), cc, x_a, x_b


def test_planted_tags_dead_first_and_card_counts() -> None:
    frame, _, _, _ = _frames()
    tags = frame["tag_threshold"].cast(pl.String).to_list()
    assert [tags[j] for j in SHARED] == ["shared"] * 4
    assert [tags[j] for j in A_ONLY] == ["a_only"] * 2
    assert [tags[j] for j in B_ONLY] == ["b_only"] * 2
    assert [tags[j] for j in OTHER] == ["unclassified"] * 2
    # never fires: equal norms give Delta-norm exactly 0.5, yet it is dead, not shared
    assert frame["delta_norm_b_only_1"][DEAD_SILENT] == pytest.approx(0.5)
    assert tags[DEAD_SILENT] == "dead" and tags[DEAD_NORMS] == "dead"
    assert frame.filter(pl.col("is_dead"))["tag_top_n"].cast(pl.String).to_list() == ["dead", "dead"]
    counts = summarize_analyses(frame, AnalysisSettings())["taxonomy"]
    assert counts == {"shared": 4, "dead": 2, "unclassified": 2, "base_only": 2, "chat_only": 2}
    assert list(counts) == ["shared", "dead", "unclassified", "base_only", "chat_only"]
    # shared latents' decoders are rotated by 30 degrees
    assert frame["dec_cos"].to_numpy()[list(SHARED)] == pytest.approx([math.cos(THETA)] * 4)
    assert math.isnan(frame["dec_cos"][DEAD_NORMS])
    # the two orientations are named and are each other's complement
    assert frame["delta_norm_b_only_0"][6] == pytest.approx(1 - frame["delta_norm_b_only_1"][6])


def test_top_n_mode_ranks_live_latents_by_delta_norm() -> None:
    frame, _, _, _ = _frames(AnalysisSettings(top_n=3))
    tags = frame["tag_top_n"].cast(pl.String).to_list()
    # B-only: 6, 7 (0.99) then the first of the ties at 0.5 (latent 0); A-only: 4, 5 (0.01) then 10 (0.25)
    assert [j for j, t in enumerate(tags) if t == "b_only"] == [0, 6, 7]
    assert [j for j, t in enumerate(tags) if t == "a_only"] == [4, 5, 10]
    assert frame["delta_rank"][DEAD_SILENT] is None
    assert frame.filter(pl.col("delta_rank") == 1)["latent"].item() in (6, 7)


def test_norm_formulas_and_conversions() -> None:
    # Delta 0.9 <=> n_B / n_A = 5 <=> r = 0.833; Delta 0.1 <=> ratio 0.2 <=> r = 0.167 (docs/crosscoders.md)
    assert delta_norm(np.array([1.0]), np.array([5.0]))[0] == pytest.approx(0.9)
    assert relative_norm(np.array([1.0]), np.array([5.0]))[0] == pytest.approx(5 / 6)
    assert delta_norm(np.array([5.0]), np.array([1.0]))[0] == pytest.approx(0.1)
    assert relative_norm(np.array([5.0]), np.array([1.0]))[0] == pytest.approx(1 / 6)
    assert math.isnan(delta_norm(np.array([0.0]), np.array([0.0]))[0])
    assert taxonomy_counts(np.array(["dead", "b_only", "b_only"]))["chat_only"] == 2


def test_latent_scaling_recovers_the_planted_beta_and_matches_a_dense_reference() -> None:
    frame, cc, x_a, x_b = _frames()
    # latent 6 is B-only; A carries 0.37 of it along d_B
    assert frame["beta_act_a"][6] == pytest.approx(BETA, rel=1e-6)
    assert frame["beta_act_b"][6] == pytest.approx(1.0, rel=1e-6)
    assert frame["beta_error_a"][6] == pytest.approx(BETA, rel=1e-6)
    assert frame["beta_error_b"][6] == pytest.approx(1.0, rel=1e-6)
    assert frame["nu_error"][6] == pytest.approx(BETA, rel=1e-6)
    assert frame["beta_recon_a"][6] == pytest.approx(0.0, abs=1e-9)
    # the dense reference: beta = d^T sum_t f y_t / (||d||^2 sum_t f^2), y per target, d the B decoder row
    with torch.inference_mode():
        x = torch.stack([torch.from_numpy(x_a), torch.from_numpy(x_b)], dim=1)
        f = cc.encode(x).double().numpy()
        x_hat = cc.decode(cc.encode(x)).double().numpy()
    xs = x.double().numpy()
    w_dec = cc.W_dec.double().numpy()
    for j in range(F):
        d = w_dec[1, j]
        act = f[:, j] > 0
        if frame["is_dead"][j] or np.linalg.norm(d) < 1e-6 or act.sum() < 5:
            assert frame["beta_act_a"][j] is None or math.isnan(frame["beta_act_a"][j])
            continue
        fj = f[act, j]
        for m, side in enumerate("ab"):
            targets = {
                "act": xs[act, m],
                "recon": x_hat[act, m] - fj[:, None] * w_dec[m, j],
                "error": xs[act, m] - (x_hat[act, m] - fj[:, None] * w_dec[m, j]),
            }
            for name, y in targets.items():
                ref = d @ (fj[:, None] * y).sum(axis=0) / (d @ d * (fj**2).sum())
                assert frame[f"beta_{name}_{side}"][j] == pytest.approx(ref, rel=1e-5, abs=1e-6), (j, name, side)


def test_reconstruction_summary_matches_a_dense_computation() -> None:
    cc, x_a, x_b = planted()
    _, sums = encode_activations(cc, [x_a, x_b])
    summary = reconstruction_summary(cc, sums)
    with torch.inference_mode():
        x = torch.stack([torch.from_numpy(x_a), torch.from_numpy(x_b)], dim=1).double()
        f = cc.encode(x.float())
        x_hat = cc.decode(f).double()
    for m, side in enumerate("ab"):
        resid = ((x[:, m] - x_hat[:, m]) ** 2).sum()
        total = ((x[:, m] - x[:, m].mean(dim=0)) ** 2).sum()
        assert summary[side]["explained_variance"] == pytest.approx(float(1 - resid / total), rel=1e-6)
        assert summary[side]["l0"] == pytest.approx(float((f > 0).sum(dim=1).double().mean()))
    assert summary["n_dead"] == 1  # latent 8 never fires; latent 9 fires (it is dead by its norms only)
    assert summary["dead_fraction"] == pytest.approx(1 / F)
