"""Synthetic crosscoder checkpoints in both public layouts, and a hand-computable tiny one."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file


def random_weights(m: int = 2, d: int = 6, f: int = 10, seed: int = 0) -> dict[str, torch.Tensor]:
    """Random crosscoder tensors in the dictionary_learning orientation (W_dec [M, F, d])."""
    g = torch.Generator().manual_seed(seed)
    return {
        "W_enc": torch.randn(m, d, f, generator=g),
        "b_enc": torch.randn(f, generator=g) * 0.1,
        "W_dec": torch.randn(m, f, d, generator=g),
        "b_dec": torch.randn(m, d, generator=g) * 0.1,
    }


def hand_weights() -> dict[str, torch.Tensor]:
    """The tiny crosscoder the hand computation in test_checkpoint.py uses (M 2, d 2, F 3).

    n_A = [1, 2, 0], n_B = [1, 0, 5]: latent 0 shared, latent 1 A-only, latent 2 B-only.
    """
    return {
        "W_enc": torch.tensor([[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]]]),
        "b_enc": torch.tensor([0.0, -0.5, 0.0]),
        "W_dec": torch.tensor([[[1.0, 0.0], [0.0, 2.0], [0.0, 0.0]], [[0.0, 1.0], [0.0, 0.0], [3.0, 4.0]]]),
        "b_dec": torch.tensor([[0.1, 0.2], [0.0, 0.0]]),
    }


def save_dictionary_learning(
    path: Path,
    w: dict[str, torch.Tensor],
    k: int | None = None,
    threshold: float | list[float] | None = None,
    code_normalization_id: int | None = None,
    config: dict | None = None,
    compiled: bool = False,
    extra: dict[str, torch.Tensor] | None = None,
    as_pt: bool = False,
) -> Path:
    """Write ``w`` in the dictionary_learning layout (optionally BatchTopK buffers, torch.compile prefixes)."""
    state = {
        "encoder.weight": w["W_enc"],
        "encoder.bias": w["b_enc"],
        "decoder.weight": w["W_dec"],
        "decoder.bias": w["b_dec"],
    }
    if k is not None:
        state["k"] = torch.tensor(k, dtype=torch.int64)
    if threshold is not None:
        state["threshold"] = torch.tensor(threshold, dtype=torch.float32)
    if code_normalization_id is not None:
        state["code_normalization_id"] = torch.tensor(code_normalization_id, dtype=torch.int64)
    state.update(extra or {})
    if compiled:
        state = {f"_orig_mod.{key}": value for key, value in state.items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {key: value.contiguous() for key, value in state.items()}
    if as_pt:
        torch.save(state, path)
    else:
        save_file(state, str(path))
    if config is not None:
        (path.parent / "config.json").write_text(json.dumps(config))
    return path


def save_ckkissane(path: Path, w: dict[str, torch.Tensor], cfg: dict | None = None) -> Path:
    """Write ``w`` in the ckkissane layout (W_dec [F, M, d]) as a ``.pt`` state dict with its cfg.json."""
    state = {
        "W_enc": w["W_enc"].contiguous(),
        "b_enc": w["b_enc"].contiguous(),
        "W_dec": w["W_dec"].permute(1, 0, 2).contiguous(),
        "b_dec": w["b_dec"].contiguous(),
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, path)
    m, d, f = w["W_enc"].shape
    body = {"d_in": int(d), "dict_size": int(f), "hook_point": "blocks.1.hook_resid_post", "l1_coeff": 2.0}
    (path.parent / f"{path.stem}_cfg.json").write_text(json.dumps(cfg or body))
    return path


def as_numpy(w: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """The tensors as numpy arrays."""
    return {k: v.numpy() for k, v in w.items()}
