"""What made a harvest shard: content digests of the SAEs, the models and the corpus.

A resumed harvest reuses a finished shard only when everything that made it is unchanged, so
the key must change when a file is replaced in place (same path, new content). Paths and
modification times cannot tell that; these digests read the content:

- an SAE: sha256 over every tensor of its state dict (name, dtype, shape, bytes). SAEs are at
  most a few GB, so hashing all of them costs seconds against a harvest of hours;
- a model: its spec, class, config, hub revision (``_commit_hash``, when loaded from the hub)
  and a fingerprint of the parameters the hooks read through, the input embeddings and every
  transformer block (name, shape, dtype and the exact bytes of a strided sample of at most
  65536 values each). Heads and poolers are left out: transformers initialises them at random
  when a checkpoint lacks them, which would change the key on every load. No arithmetic enters
  the fingerprint, so a GPU worker and a CPU driver agree on it (a float sum would differ with
  the device and the thread count). A full sha256 of a 9B model would read 36 GB once more;
  retrained or fine-tuned weights change nearly every value, so the sample sees them;
- the corpus: the sha256 of its documents (``core.paths.hash_texts``).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import torch

from core.harvest.loading import LoadedModel, LoadedSAE

# values sampled per parameter for the model fingerprint
_SAMPLE = 65536


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
    described = (
        config.to_json_string(use_diff=False) if config is not None and hasattr(config, "to_json_string") else ""
    )
    digest.update(f"{model.spec.label()}|{type(model.model).__name__}|{revision}|{described}|".encode())
    embeddings = model.base.get_input_embeddings()
    named = [(f"embed.{n}", p) for n, p in embeddings.named_parameters()]
    named += [(f"blocks.{n}", p) for n, p in model.blocks.named_parameters()]
    with torch.no_grad():
        for name, param in named:
            flat = param.detach().reshape(-1)
            step = max(1, flat.numel() // _SAMPLE)
            sample = flat[::step][:_SAMPLE].contiguous().to("cpu").view(torch.uint8).numpy()
            digest.update(f"{name}|{tuple(param.shape)}|{param.dtype}|".encode())
            digest.update(sample.data)
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
