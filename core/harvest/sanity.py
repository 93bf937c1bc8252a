"""Hook sanity: the SAE's reconstruction at its hook and at the neighbouring hooks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from core.harvest.encode import HarvestSide, forward_capture, kept_rows
from core.harvest.hooks import hook_for_block_output
from core.harvest.specs import HarvestSettings
from core.harvest.windows import Window, iter_batches, pad_id


def hook_sanity(
    side: HarvestSide, windows: Sequence[Window], settings: HarvestSettings, device: torch.device
) -> list[dict[str, Any]]:
    """Reconstruction of the SAE at its hook and at the neighbouring hooks.

    An SAE read at the wrong layer reconstructs badly there and better one layer off, so
    recording all three makes an off-by-one hook visible.

    Returns:
        One dict per hook (hook, hidden_states_index, explained_variance, mse, configured),
        shallowest first.
    """
    sample, count = [], 0
    for window in windows:
        sample.append(window)
        count += window.n_units
        if count >= settings.sanity_tokens:
            break
    here = side.hook.after_block
    blocks = [b for b in (here - 1, here, here + 1) if -1 <= b < side.model.n_layers]
    chunks: dict[int, list[torch.Tensor]] = {b: [] for b in blocks}
    for chosen, ids, mask in iter_batches(sample, settings.batch_tokens, pad_id(side.model)):
        acts = forward_capture(side.model, blocks, ids, mask, device)
        for b in blocks:
            chunks[b].append(kept_rows(acts[b], sample, chosen))
    report = []
    for b in blocks:
        x = torch.cat(chunks[b])
        with torch.inference_mode():
            x_hat = side.sae.sae(x)
        point = hook_for_block_output(b)
        report.append(
            {
                "hook": point.name,
                "hidden_states_index": point.hidden_states_index,
                "explained_variance": explained_variance(x, x_hat),
                "mse": float(((x - x_hat) ** 2).mean()),
                "configured": b == here,
                "n_tokens": int(x.shape[0]),
            }
        )
    return report


def explained_variance(x: torch.Tensor, x_hat: torch.Tensor) -> float:
    """1 - sum ||x - x_hat||^2 / sum ||x - mean(x)||^2 over all tokens and dimensions."""
    residual = ((x - x_hat) ** 2).sum()
    total = ((x - x.mean(dim=0, keepdim=True)) ** 2).sum()
    return float(1.0 - residual / total.clamp_min(1e-12))
