"""What made a harvest shard: content digests of the SAEs, the models and the corpus.

A resumed harvest reuses a finished shard only when everything that made it is unchanged, so
the key must change when a file is replaced in place (same path, new content). Paths and
modification times cannot tell that; these digests read the content:

- an SAE: sha256 over every tensor of its state dict (name, dtype, shape, bytes). SAEs are at
  most a few GB, so hashing all of them costs seconds against a harvest of hours;
- a model: its spec, class, hub revision (``_commit_hash``, when loaded from the hub) and a
  fingerprint of every parameter (name, shape, dtype, the float64 sum and a strided sample of
  at most 4096 values). A full sha256 of a 9B model would read 36 GB once more; no real edit
  of weights keeps both every parameter's sum and its sample unchanged;
- the corpus: the sha256 of its documents (``core.paths.hash_texts``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from core.harvest.loading import LoadedModel, LoadedSAE

# values sampled per parameter for the model fingerprint
_SAMPLE = 4096


def sae_digest(sae: LoadedSAE) -> str:
    """The sha256 of an SAE's weights (every state-dict tensor, in name order).

    Args:
        sae: the loaded SAE.

    Returns:
        A hex digest; equal for two loads of the same weights, different after any change.
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(sae.sae.state_dict().items()):
        array = np.ascontiguousarray(tensor.detach().to("cpu").numpy())
        digest.update(f"{name}|{array.dtype}|{array.shape}|".encode())
        digest.update(array.data)
    return digest.hexdigest()


def model_fingerprint(model: LoadedModel) -> str:
    """A digest of a model's identity: spec, class, hub revision and every parameter's fingerprint.

    Args:
        model: the loaded model.

    Returns:
        A hex digest.
    """
    digest = hashlib.sha256()
    config = getattr(model.model, "config", None)
    revision = getattr(config, "_commit_hash", None)
    digest.update(f"{model.spec.label()}|{type(model.model).__name__}|{revision}|".encode())
    with torch.no_grad():
        for name, param in model.model.named_parameters():
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            sample = flat[::step][:_SAMPLE].to("cpu", torch.float32).numpy()
            total = float(flat.to(torch.float64).sum())
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|{total!r}|".encode())
            digest.update(np.ascontiguousarray(sample).data)
    return digest.hexdigest()


def side_identity(model: LoadedModel, sae: LoadedSAE, hook: str) -> dict[str, Any]:
    """The identity of one harvest side, as the shard key records it.

    Args:
        model: the side's model.
        sae: the side's SAE.
        hook: the hook name the SAE reads.

    Returns:
        ``{"model", "model_digest", "sae", "sae_digest", "hook"}``.
    """
    return {
        "model": model.spec.label(),
        "model_digest": model_fingerprint(model),
        "sae": sae.spec.label(),
        "sae_digest": sae_digest(sae),
        "hook": hook,
    }
