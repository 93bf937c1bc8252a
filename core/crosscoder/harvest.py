"""Harvest a crosscoder: both models' activations on the same tokens, one code, through the harvest's seam.

The sharded, resumable loop, the windows and the forward passes are the harvest's own
(``core.harvest.run.harvest`` with a :class:`~core.harvest.run.TokenEncoder`,
``core.harvest.encode.collect_activations``); this module only says how a shard's two
activation matrices become codes, and which sums it adds up on the way:

- per model l: tokens, sum ||x_l - x_hat_l||^2, sum x_l, sum ||x_l||^2 (explained variance),
  active latents per token (L0), per latent the tokens where it fires;
- per model l and latent j, Latent Scaling's sufficient statistics (Minder et al. 2025),
  with f the code that multiplies ``W_dec[l]`` and d_j latent j's B decoder row:
  q_l = sum_t f_j^2, p_l = sum_t f_j (x_l . d_j), r_l = sum_t f_j (x_hat_l . d_j).

All sums are float64 and add across shards, so a resumed harvest gives the same totals.
Everything is in the crosscoder's input space (after its per-model scaling).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.bundle.codes import SparseCodes
from core.crosscoder.model import Crosscoder
from core.harvest.encode import collect_activations
from core.harvest.hooks import HookPoint
from core.harvest.loading import LoadedModel
from core.harvest.run import TokenEncoder
from core.harvest.specs import HarvestSettings
from core.harvest.windows import Window
from core.sides import SIDES

# rows encoded at once, so the dense [rows, F] codes stay near 64 MB
_ENCODE_ELEMENTS = 16_000_000


@dataclass
class CrosscoderSides:
    """The two models, the hooks the crosscoder reads, and the crosscoder.

    Attributes:
        models: side -> loaded model (they share a tokenizer).
        hooks: side -> hook point.
        crosscoder: the loaded crosscoder (index 0 reads side a, index 1 side b).
    """

    models: dict[str, LoadedModel]
    hooks: dict[str, HookPoint]
    crosscoder: Crosscoder


def shard_sums(cc: Crosscoder, x: torch.Tensor, f: torch.Tensor, x_hat: torch.Tensor) -> dict[str, np.ndarray]:
    """The float64 sums one block of tokens adds (see the module docstring).

    Args:
        cc: the crosscoder.
        x: [T, M, d] scaled activations.
        f: the codes of ``x`` ([T, F], or [T, M, F] decoupled).
        x_hat: [T, M, d] reconstructions.

    Returns:
        ``n_tokens`` and, per side s, ``sse_s``, ``sum_s`` [d], ``sumsq_s``, ``l0_s``,
        ``fire_s`` [F], ``q_s``, ``p_s``, ``r_s`` [F].
    """
    out: dict[str, np.ndarray] = {"n_tokens": np.array([x.shape[0]], np.float64)}
    d_b = cc.W_dec[1]
    for model, side in enumerate(SIDES):
        code = cc.model_code(f, model)
        xl, xh = x[:, model], x_hat[:, model]
        out[f"sse_{side}"] = np.array([float(((xl - xh).double() ** 2).sum())])
        out[f"sum_{side}"] = xl.double().sum(dim=0).cpu().numpy()
        out[f"sumsq_{side}"] = np.array([float((xl.double() ** 2).sum())])
        active = code > 0
        out[f"l0_{side}"] = np.array([float(active.sum())])
        out[f"fire_{side}"] = active.sum(dim=0).double().cpu().numpy()
        out[f"q_{side}"] = (code.double() ** 2).sum(dim=0).cpu().numpy()
        # per-token products in float32, their sums in float64
        out[f"p_{side}"] = (code * (xl @ d_b.T)).double().sum(dim=0).cpu().numpy()
        out[f"r_{side}"] = (code * (xh @ d_b.T)).double().sum(dim=0).cpu().numpy()
    return out


def add_sums(total: dict[str, np.ndarray], part: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Sum two sets of shard sums key by key."""
    return {k: total[k] + part[k] if k in total else part[k] for k in part}


def encode_activations(
    cc: Crosscoder, acts: Sequence[np.ndarray]
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], dict[str, np.ndarray]]:
    """Encode both models' raw activations with the crosscoder, block by block.

    Args:
        cc: the crosscoder.
        acts: per model, float32 [n, d] raw activations on the same tokens.

    Returns:
        (side -> COO ``(rows, latents, values)`` of the side codes f x ||d_{l,j}||, the sums).
    """
    n = acts[0].shape[0]
    step = max(1, _ENCODE_ELEMENTS // cc.n_latents)
    coo: dict[str, list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = {s: [] for s in SIDES}
    sums: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for lo in range(0, n, step):
            x = torch.stack([torch.from_numpy(np.ascontiguousarray(a[lo : lo + step])) for a in acts], dim=1)
            x = cc.normalise(x.to(cc.device))
            f = cc.encode(x)
            sums = add_sums(sums, shard_sums(cc, x, f, cc.decode(f)))
            for model, side in enumerate(SIDES):
                code = cc.side_code(f, model)
                r, c = torch.nonzero(code, as_tuple=True)
                coo[side].append(((r + lo).cpu().numpy(), c.cpu().numpy(), code[r, c].float().cpu().numpy()))
    merged: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    for side, parts in coo.items():
        if parts:
            rows, cols, vals = (np.concatenate(p) for p in zip(*parts, strict=True))
            merged[side] = (rows, cols, vals)
        else:
            merged[side] = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32))
    return merged, sums


def crosscoder_encoder(sides: CrosscoderSides, identity: dict[str, Any]) -> TokenEncoder:
    """The harvest seam for a crosscoder: each shard's windows -> both sides' codes and the sums.

    Args:
        sides: models, hooks and the crosscoder.
        identity: what the codes depend on (checkpoint, hooks, scaling), for the resume key.

    Returns:
        The encoder ``core.harvest.run.harvest`` runs shard by shard.
    """
    cc = sides.crosscoder

    def encode(
        windows: Sequence[Window], settings: HarvestSettings, device: torch.device
    ) -> tuple[dict[str, SparseCodes], dict[str, np.ndarray]]:
        acts = [collect_activations(sides.models[s], sides.hooks[s], windows, settings, device) for s in SIDES]
        coo, sums = encode_activations(cc, acts)
        n_rows = acts[0].shape[0]
        codes = {s: SparseCodes.from_coo(*coo[s], n_rows, cc.n_latents) for s in SIDES}
        return codes, sums

    return TokenEncoder(sides.models["a"].tokenizer, identity, encode)


def crosscoder_hook_sanity(
    sides: CrosscoderSides, windows: Sequence[Window], settings: HarvestSettings, device: torch.device
) -> dict[str, list[dict[str, Any]]]:
    """Each model's explained variance with its input read at its hook and at the neighbouring hooks.

    The other model stays at its configured hook, so an off-by-one hook on one side shows as a
    neighbour that reconstructs better, as the SAE hook-sanity check reports it.

    Returns:
        side -> one dict per hook (hook, hidden_states_index, explained_variance, mse, configured, n_tokens).
    """
    from core.harvest.hooks import hook_for_block_output
    from core.harvest.sanity import explained_variance

    cc = sides.crosscoder
    sample, count = [], 0
    for window in windows:
        sample.append(window)
        count += window.n_units
        if count >= settings.sanity_tokens:
            break
    base = {s: collect_activations(sides.models[s], sides.hooks[s], sample, settings, device) for s in SIDES}
    report: dict[str, list[dict[str, Any]]] = {}
    for model, side in enumerate(SIDES):
        here = sides.hooks[side].after_block
        rows = []
        for block in (b for b in (here - 1, here, here + 1) if -1 <= b < sides.models[side].n_layers):
            point = hook_for_block_output(block)
            acts = dict(base)
            if block != here:
                acts[side] = collect_activations(sides.models[side], point, sample, settings, device)
            with torch.inference_mode():
                x = cc.normalise(torch.stack([torch.from_numpy(acts[s]) for s in SIDES], dim=1).to(cc.device))
                x_hat = cc.decode(cc.encode(x))
            rows.append(
                {
                    "hook": point.name,
                    "hidden_states_index": point.hidden_states_index,
                    "explained_variance": explained_variance(x[:, model], x_hat[:, model]),
                    "mse": float(((x[:, model] - x_hat[:, model]) ** 2).mean()),
                    "configured": block == here,
                    "n_tokens": int(x.shape[0]),
                }
            )
        report[side] = rows
    return report
