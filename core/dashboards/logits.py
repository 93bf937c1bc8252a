"""Logit effects of a feature for causal LMs: its decoder direction through the unembedding."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from core.errors import DashboardError


@dataclass(frozen=True, eq=False)
class Unembedding:
    """A causal LM's unembedding, for the logit effect of decoder directions.

    Attributes:
        w_u: float array, either ``[d_vocab, d_in]`` (transformers ``lm_head.weight``, what
            ``core.loading.LoadedModel.unembedding()`` returns) or ``[d_in, d_vocab]``
            (TransformerLens ``W_U``); the axis whose length equals ``len(tokens)`` is the vocab.
        tokens: the string of every vocabulary id, in id order.
    """

    w_u: np.ndarray | torch.Tensor
    tokens: tuple[str, ...]

    def __post_init__(self) -> None:
        w_u = self.w_u.detach().float().cpu().numpy() if isinstance(self.w_u, torch.Tensor) else np.asarray(self.w_u)
        tokens = tuple(str(t) for t in self.tokens)
        if w_u.ndim != 2:
            raise DashboardError(f"The unembedding must be a 2-D matrix, got shape {w_u.shape}; pass lm_head.weight.")
        if w_u.shape[0] != len(tokens):
            if w_u.shape[1] != len(tokens):
                raise DashboardError(
                    f"The unembedding has shape {w_u.shape} but the token list has {len(tokens)} entries; "
                    "pass the tokenizer's full vocabulary in id order."
                )
            w_u = w_u.T
        object.__setattr__(self, "w_u", np.ascontiguousarray(w_u, dtype=np.float32))
        object.__setattr__(self, "tokens", tokens)

    @property
    def d_in(self) -> int:
        return int(self.w_u.shape[1])


def compute_logit_effect(
    w_dec: np.ndarray | torch.Tensor,
    unembedding: Unembedding,
    k: int = 10,
    chunk_features: int = 1024,
    device: torch.device | str = "cpu",
) -> pl.DataFrame:
    """Top promoted and suppressed tokens of each decoder direction through the unembedding.

    The effect of feature ``f`` on token ``t`` is ``W_dec[f] @ W_U[:, t]`` (the direct path,
    ignoring the final norm, as in the usual SAE dashboards).

    Args:
        w_dec: decoder rows [n_features, d_in].
        unembedding: the model's unembedding and token strings.
        k: tokens kept on each side.
        chunk_features: features per matrix product (bounds memory at
            ``chunk_features x d_vocab`` floats).
        device: where to multiply.

    Returns:
        Columns ``feature`` and :data:`LOGIT_COLUMNS` (lists of ``k`` strings / floats,
        strongest first).
    """
    w = torch.as_tensor(np.asarray(w_dec, dtype=np.float32) if not isinstance(w_dec, torch.Tensor) else w_dec)
    w = w.detach().float().to(device)
    if w.ndim != 2 or w.shape[1] != unembedding.d_in:
        raise DashboardError(
            f"The decoder has shape {tuple(w.shape)} but the unembedding reads width {unembedding.d_in}; "
            "pass the unembedding of the model this SAE was trained on."
        )
    w_u = torch.from_numpy(unembedding.w_u).to(device)  # [d_vocab, d_in]
    k = min(k, w_u.shape[0])
    pos_val, pos_idx, neg_val, neg_idx = [], [], [], []
    for lo in range(0, w.shape[0], chunk_features):
        logits = w[lo : lo + chunk_features] @ w_u.T
        top = torch.topk(logits, k, dim=1)
        bottom = torch.topk(logits, k, dim=1, largest=False)
        pos_val.append(top.values.cpu().numpy())
        pos_idx.append(top.indices.cpu().numpy())
        neg_val.append(bottom.values.cpu().numpy())
        neg_idx.append(bottom.indices.cpu().numpy())
    n = w.shape[0]
    vocab = np.asarray(unembedding.tokens, dtype=object)

    def stack(parts: list[np.ndarray], dtype: Any) -> np.ndarray:
        return np.concatenate(parts).astype(dtype) if parts else np.zeros((0, k), dtype)

    p_idx, n_idx = stack(pos_idx, np.int64), stack(neg_idx, np.int64)
    return pl.DataFrame(
        {
            "feature": np.arange(n, dtype=np.int32),
            "promoted_tokens": [list(row) for row in vocab[p_idx]],
            "promoted_logits": stack(pos_val, np.float32),
            "suppressed_tokens": [list(row) for row in vocab[n_idx]],
            "suppressed_logits": stack(neg_val, np.float32),
        },
        schema={
            "feature": pl.Int32,
            "promoted_tokens": pl.List(pl.String),
            "promoted_logits": pl.List(pl.Float32),
            "suppressed_tokens": pl.List(pl.String),
            "suppressed_logits": pl.List(pl.Float32),
        },
    )
