"""Encode and decode with a loaded crosscoder (plain torch), and the per-model input scaling it reads.

The formulas (docs/crosscoders.md), with x_l model l's activation after input scaling
(x_l <- (x_l - mean_l) * s_l) and d_{l,j} row j of ``W_dec[l]``:

- pre = relu(sum_l x_l W_enc[l] + b_enc)
- ReLU crosscoder: f = pre
- BatchTopK at inference: f = pre * (pre * c > threshold), c_j the code normaliser:
  crosscoder sum_l ||d_{l,j}||, sae ||concat_l d_{l,j}||, mixed alpha_sae * sae + alpha_cc * crosscoder,
  none 1; decoupled keeps one code per model, f_l = pre * (pre * ||d_{l,j}|| > threshold_l)
- x_hat_l = f W_dec[l] + b_dec[l]

A latent's contribution to model l's raw (unscaled) activation is f_j d_{l,j} / s_l.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from core.crosscoder.checkpoint import CrosscoderWeights
from core.errors import CrosscoderError


@dataclass(frozen=True)
class InputScaling:
    """How each model's activation is scaled before the crosscoder reads it: x -> (x - mean) * scale.

    Attributes:
        scale: per model, s_l.
        source: per model, ``given``, ``checkpoint`` (its own normaliser) or ``estimated``
            (sqrt(d) / E||x|| on the corpus).
        mean: [M, d] subtracted first (the checkpoint's normaliser), or ``None``.
    """

    scale: tuple[float, ...]
    source: tuple[str, ...]
    mean: torch.Tensor | None = None

    def describe(self) -> list[dict[str, object]]:
        """One ``{"scale", "source", "centred"}`` dict per model, for the manifest."""
        return [
            {"scale": s, "source": src, "centred": self.mean is not None}
            for s, src in zip(self.scale, self.source, strict=True)
        ]


def estimate_scale(acts: np.ndarray | torch.Tensor) -> float:
    """s = sqrt(d) / E||x||, the input normalisation crosscoder training used (ckkissane, Minder et al.).

    Args:
        acts: [n, d] activations of one model.

    Returns:
        The scale factor.
    """
    x = torch.as_tensor(acts, dtype=torch.float64)
    mean_norm = float(x.norm(dim=1).mean())
    if not mean_norm > 0:
        raise CrosscoderError(
            "The activations to estimate the crosscoder's input scaling from are all zero; check the hook."
        )
    return math.sqrt(x.shape[1]) / mean_norm


class Crosscoder:
    """A crosscoder ready to encode, decode and ablate; every tensor on one device.

    Args:
        weights: the checkpoint's tensors.
        scaling: the per-model input scaling.
        device: where to compute.
    """

    def __init__(self, weights: CrosscoderWeights, scaling: InputScaling, device: torch.device | str = "cpu") -> None:
        if len(scaling.scale) != weights.n_models:
            raise ValueError(f"{len(scaling.scale)} scale factors for {weights.n_models} models")
        self.weights = weights
        self.scaling = scaling
        self.device = torch.device(device)
        self.W_enc = weights.W_enc.to(self.device)
        self.b_enc = weights.b_enc.to(self.device)
        self.W_dec = weights.W_dec.to(self.device)
        self.b_dec = weights.b_dec.to(self.device)
        self.scale = torch.tensor(scaling.scale, dtype=torch.float32, device=self.device)
        self.mean = None if scaling.mean is None else scaling.mean.float().to(self.device)
        # [M, F] decoder row norms: n_A = norms[0], n_B = norms[1]
        self.norms = self.W_dec.norm(dim=2)
        self.code_norm = self._code_norm()
        self.threshold = None if weights.threshold is None else weights.threshold.to(self.device)

    @property
    def n_models(self) -> int:
        return self.weights.n_models

    @property
    def n_latents(self) -> int:
        return self.weights.n_latents

    @property
    def decoupled(self) -> bool:
        return self.weights.architecture == "batchtopk" and self.weights.code_normalization == "decoupled"

    def _code_norm(self) -> torch.Tensor:
        kind = self.weights.code_normalization
        if kind == "crosscoder":
            return self.norms.sum(dim=0)
        if kind == "sae":
            return self.W_dec.pow(2).sum(dim=(0, 2)).sqrt()
        if kind == "mixed":
            alpha_sae, alpha_cc = self.weights.mixed_alphas
            return alpha_sae * self.W_dec.pow(2).sum(dim=(0, 2)).sqrt() + alpha_cc * self.norms.sum(dim=0)
        if kind == "none":
            return torch.ones(self.n_latents, device=self.device)
        return self.norms  # decoupled: [M, F]

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """Raw activations [T, M, d] -> the crosscoder's input space."""
        if self.mean is not None:
            x = x - self.mean
        return x * self.scale[None, :, None]

    def pre_activation(self, x: torch.Tensor) -> torch.Tensor:
        """relu(sum_l x_l W_enc[l] + b_enc) for scaled inputs [T, M, d] -> [T, F]."""
        return torch.relu(torch.einsum("tmd,mdf->tf", x, self.W_enc) + self.b_enc)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Latent codes of scaled inputs [T, M, d]: [T, F], or [T, M, F] for a decoupled BatchTopK."""
        pre = self.pre_activation(x)
        if self.weights.architecture == "relu":
            return pre
        assert self.threshold is not None
        if self.decoupled:
            scaled = pre[:, None, :] * self.code_norm[None, :, :]
            return pre[:, None, :] * (scaled > self.threshold[None, :, None])
        return pre * (pre * self.code_norm > self.threshold)

    def decode(self, f: torch.Tensor) -> torch.Tensor:
        """Reconstructions [T, M, d] in the scaled space from codes [T, F] (or [T, M, F])."""
        if f.ndim == 2:
            return torch.einsum("tf,mfd->tmd", f, self.W_dec) + self.b_dec
        return torch.einsum("tmf,mfd->tmd", f, self.W_dec) + self.b_dec

    def model_code(self, f: torch.Tensor, model: int) -> torch.Tensor:
        """The code that multiplies model ``model``'s decoder: f itself, or its slice when decoupled."""
        return f if f.ndim == 2 else f[:, model, :]

    def side_code(self, f: torch.Tensor, model: int) -> torch.Tensor:
        """f x ||d_{l,j}||: the latent's activation as model l sees it (what the bundle stores)."""
        return self.model_code(f, model) * self.norms[model]

    def contribution_directions(self, model: int, latents: torch.Tensor | np.ndarray) -> torch.Tensor:
        """d_{l,j} / s_l for the given latents: what one unit of f_j adds to model l's raw activation.

        Returns:
            [len(latents), d].
        """
        idx = torch.as_tensor(np.asarray(latents), dtype=torch.long, device=self.device)
        return self.W_dec[model, idx] / self.scale[model]
