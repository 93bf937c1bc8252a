"""Run a model to its hook on a batch of windows and encode the activations with the SAE, sparsely."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from core.bundle.codes import SparseCodes
from core.harvest.hooks import HookPoint, capture, run_until_captured
from core.harvest.loading import LoadedModel, LoadedSAE, check_sae_fits
from core.harvest.specs import HarvestSettings
from core.harvest.windows import Window, iter_batches, pad_id
from core.progress import ProgressFn, no_progress

# rows encoded at once, so the dense [rows, d_sae] SAE output stays near 64 MB
_ENCODE_ELEMENTS = 16_000_000


@dataclass
class HarvestSide:
    """A model, an SAE and the hook where the SAE reads the model."""

    model: LoadedModel
    sae: LoadedSAE
    hook: HookPoint

    def __post_init__(self) -> None:
        check_sae_fits(self.sae, self.model, self.hook)


def forward_capture(
    model: LoadedModel, after_blocks: list[int], ids: torch.Tensor, mask: torch.Tensor, device: torch.device
) -> dict[int, torch.Tensor]:
    """Run the model up to the deepest requested block and return the captured outputs.

    Returns:
        block index -> [B, L, d_model] float32 activations on ``device``.
    """
    with torch.inference_mode(), capture(model.blocks, after_blocks) as store:
        run_until_captured(model.base, input_ids=ids.to(device), attention_mask=mask.to(device))
    return {k: v.float() for k, v in store.items()}


def kept_rows(acts: torch.Tensor, windows: Sequence[Window], chosen: np.ndarray) -> torch.Tensor:
    """Rows of ``acts`` [B, L, d] at the kept tokens, window by window in ``chosen`` order."""
    mask = torch.zeros(acts.shape[:2], dtype=torch.bool)
    for row, w in enumerate(chosen):
        mask[row, : len(windows[w].keep)] = torch.from_numpy(windows[w].keep)
    return acts[mask.to(acts.device)]


def unit_rows(windows: Sequence[Window], chosen: np.ndarray, row_start: np.ndarray) -> np.ndarray:
    """Row ids of the kept tokens of ``chosen`` windows, in the order :func:`_kept` returns them."""
    return np.concatenate([row_start[w] + np.arange(windows[w].n_units) for w in chosen])


def encode_windows(
    model: LoadedModel,
    readers: Sequence[tuple[LoadedSAE, HookPoint]],
    windows: Sequence[Window],
    settings: HarvestSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> list[SparseCodes]:
    """Codes of several SAEs reading one model, from one forward pass per batch.

    Args:
        model: the model.
        readers: (SAE, hook) pairs; hooks may repeat or differ.
        windows: the windows to run.
        settings: harvest settings (batch size).
        device: where to run.
        progress: called as ``progress("encode", units_done, units_total)``.

    Returns:
        One CSR [n_units, d_sae] per reader, rows in window order.
    """
    row_start = np.cumsum([0] + [w.n_units for w in windows])
    n_rows = int(row_start[-1])
    coo: list[list[tuple[np.ndarray, np.ndarray, np.ndarray]]] = [[] for _ in readers]
    blocks = sorted({hook.after_block for _, hook in readers})
    done = 0
    for chosen, ids, mask in iter_batches(windows, settings.batch_tokens, pad_id(model)):
        rows = unit_rows(windows, chosen, row_start)
        acts = forward_capture(model, blocks, ids, mask, device)
        for i, (sae, hook) in enumerate(readers):
            r, c, v = encode_sparse(sae, kept_rows(acts[hook.after_block], windows, chosen))
            coo[i].append((rows[r], c, v))
        done += len(rows)
        progress("encode", done, n_rows)
    out = []
    for (sae, _), parts in zip(readers, coo, strict=True):
        r, c, v = (np.concatenate(p) for p in zip(*parts, strict=True))
        out.append(SparseCodes.from_coo(r, c, v, n_rows, sae.d_sae))
    return out


def collect_activations(
    model: LoadedModel,
    hook: HookPoint,
    windows: Sequence[Window],
    settings: HarvestSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
) -> np.ndarray:
    """Dense activations at one hook for every kept token (for SAE training and checks).

    Returns:
        float32 [n_units, d_model], rows in window order.
    """
    row_start = np.cumsum([0] + [w.n_units for w in windows])
    out = np.zeros((int(row_start[-1]), model.d_model), dtype=np.float32)
    pad = pad_id(model)
    done = 0
    for chosen, ids, mask in iter_batches(windows, settings.batch_tokens, pad):
        acts = forward_capture(model, [hook.after_block], ids, mask, device)[hook.after_block]
        rows = unit_rows(windows, chosen, row_start)
        out[rows] = kept_rows(acts, windows, chosen).cpu().numpy()
        done += len(rows)
        progress(f"activations {model.name}", done, len(out))
    return out


def encode_sparse(sae: LoadedSAE, acts: torch.Tensor) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Encode activations with the SAE in chunks and keep the non-zeros.

    Args:
        sae: the SAE.
        acts: float32 [n, d_in].

    Returns:
        ``(rows, features, values)`` COO triplets, rows relative to ``acts``.
    """
    step = max(1, _ENCODE_ELEMENTS // sae.d_sae)
    rows, cols, vals = [], [], []
    with torch.inference_mode():
        for lo in range(0, acts.shape[0], step):
            feats = sae.sae.encode(acts[lo : lo + step])
            r, c = torch.nonzero(feats, as_tuple=True)
            rows.append((r + lo).cpu().numpy())
            cols.append(c.cpu().numpy())
            vals.append(feats[r, c].float().cpu().numpy())
    if not rows:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.float32)
    return np.concatenate(rows), np.concatenate(cols), np.concatenate(vals)
