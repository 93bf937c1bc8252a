"""Read a crosscoder checkpoint of either public layout into one set of tensors, without unpickling.

Two layouts are seen in public releases (docs/crosscoders.md has the table):

- dictionary_learning (saprmarks and its science-of-finetuning / jkminder forks):
  ``encoder.weight [M,d,F]``, ``encoder.bias [F]``, ``decoder.weight [M,F,d]``,
  ``decoder.bias [M,d]``; BatchTopK adds ``k``, ``threshold`` (a float, or [M] when
  decoupled; -1 means never calibrated) and ``code_normalization_id`` (1-based:
  CROSSCODER, SAE, MIXED, NONE, DECOUPLED; missing means CROSSCODER). The forks may add an
  input normaliser (``activation_mean``, ``activation_std``, ``target_rms``,
  ``activation_global_scale``). A ``config.json`` beside it describes the run.
- ckkissane / Neel Nanda: ``W_enc [M,d,F]``, ``b_enc [F]``, ``W_dec [F,M,d]``,
  ``b_dec [M,d]``, a ``cfg.json`` (or ``<name>_cfg.json``) beside it; input scaling is not saved.

Both load into the dictionary_learning orientation (``W_dec [M,F,d]``). The layout is
decided by key names, then checked against the decoder shape; with F == M that check
cannot tell the orientations apart, so such a checkpoint must name its format. No PyPI
package loads either layout (sae-lens has no crosscoder class), hence this reader.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from core.crosscoder.settings import CODE_NORMALIZATIONS, FORMATS
from core.errors import CrosscoderError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth")
DL_KEYS = ("encoder.weight", "encoder.bias", "decoder.weight", "decoder.bias")
CK_KEYS = ("W_enc", "b_enc", "W_dec", "b_dec")
BATCHTOPK_KEYS = ("k", "threshold", "code_normalization_id")
NORMALISER_KEYS = ("activation_mean", "activation_std", "target_rms", "activation_global_scale")
CONFIG_NAMES = ("config.json", "cfg.json")
# file names a trainer writes, in the order a folder holding several is searched
PREFERRED_NAMES = ("model.safetensors", "crosscoder.safetensors", "ae.pt", "model.pt", "crosscoder.pt")


@dataclass
class CrosscoderWeights:
    """A crosscoder's tensors in the dictionary_learning orientation, float32 on the CPU.

    Attributes:
        W_enc: [M, d, F] encoder.
        b_enc: [F] encoder bias.
        W_dec: [M, F, d] decoder (row j of ``W_dec[l]`` is latent j's direction in model l).
        b_dec: [M, d] decoder bias.
        architecture: ``relu`` (L1-trained) or ``batchtopk``.
        k: BatchTopK's k (``None`` for ReLU).
        threshold: BatchTopK's inference threshold, [] or [M] (decoupled); ``None`` for ReLU.
        code_normalization: one of ``CODE_NORMALIZATIONS``.
        mixed_alphas: (alpha_sae, alpha_cc) of the ``mixed`` normaliser.
        normaliser_mean: [M, d] input mean the checkpoint subtracts, or ``None``.
        normaliser_scale: [M] input scale the checkpoint applies, or ``None``.
        format: ``dictionary_learning`` or ``ckkissane``.
        path: the weights file read.
        config: sibling config files (file name -> parsed JSON), metadata only.
        unknown_keys: keys neither layout defines (reported, ignored).
        threshold_uncalibrated: the threshold is -1 (never calibrated): inference then keeps
            every positive pre-activation, far denser than training.
        notes: what the reader assumed (for the manifest).
    """

    W_enc: torch.Tensor
    b_enc: torch.Tensor
    W_dec: torch.Tensor
    b_dec: torch.Tensor
    architecture: str
    k: int | None
    threshold: torch.Tensor | None
    code_normalization: str
    mixed_alphas: tuple[float, float]
    normaliser_mean: torch.Tensor | None
    normaliser_scale: torch.Tensor | None
    format: str
    path: Path
    config: dict[str, Any] = field(default_factory=dict)
    unknown_keys: tuple[str, ...] = ()
    threshold_uncalibrated: bool = False
    notes: tuple[str, ...] = ()

    @property
    def n_models(self) -> int:
        return int(self.W_enc.shape[0])

    @property
    def d_model(self) -> int:
        return int(self.W_enc.shape[1])

    @property
    def n_latents(self) -> int:
        return int(self.W_enc.shape[2])

    def describe(self) -> dict[str, Any]:
        """What the manifest records about the checkpoint (no tensors)."""
        return {
            "path": str(self.path),
            "format": self.format,
            "architecture": self.architecture,
            "n_models": self.n_models,
            "d_model": self.d_model,
            "n_latents": self.n_latents,
            "k": self.k,
            "threshold": None if self.threshold is None else self.threshold.tolist(),
            "threshold_uncalibrated": self.threshold_uncalibrated,
            "code_normalization": self.code_normalization,
            "mixed_alphas": list(self.mixed_alphas) if self.code_normalization == "mixed" else None,
            "has_normaliser": self.normaliser_scale is not None,
            "unknown_keys": list(self.unknown_keys),
            "config_files": sorted(self.config),
            "notes": list(self.notes),
        }


def find_checkpoint_file(path: str | Path) -> Path:
    """The weights file of a crosscoder: ``path`` itself, or the one file of a folder that holds weights.

    Args:
        path: a ``.safetensors`` / ``.pt`` file, or the folder holding it.

    Returns:
        The weights file.
    """
    path = Path(path).expanduser()
    if path.is_file():
        return path
    if not path.is_dir():
        raise CrosscoderError(f"Crosscoder checkpoint {path} does not exist; give the checkpoint file or its folder.")
    candidates = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in WEIGHT_SUFFIXES)
    if not candidates:
        raise CrosscoderError(f"Folder {path} holds no .safetensors or .pt file; point --crosscoder at the checkpoint.")
    for name in PREFERRED_NAMES:
        if (path / name).is_file():
            return path / name
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates[:5])
        raise CrosscoderError(f"Folder {path} holds several weight files ({names}); point --crosscoder at one of them.")
    return candidates[0]


def _read_configs(weights: Path) -> dict[str, Any]:
    found: dict[str, Any] = {}
    names = [*CONFIG_NAMES, f"{weights.stem}_cfg.json", f"{weights.stem}.json"]
    for name in dict.fromkeys(names):
        file = weights.parent / name
        if file.is_file():
            try:
                found[name] = json.loads(file.read_text())
            except (json.JSONDecodeError, UnicodeDecodeError):
                found[name] = {"unreadable": True}
    return found


def read_state_dict(weights: Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file: safetensors, or a ``.pt`` state dict through ``torch.load(weights_only=True)``.

    Args:
        weights: the file.

    Returns:
        key -> tensor, with torch.compile's ``_orig_mod.`` prefixes stripped.
    """
    if weights.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            state = load_file(str(weights))
        except (SafetensorError, OSError) as exc:
            raise CrosscoderError(
                f"{weights} is not readable safetensors ({exc}); the file is corrupt, re-save it."
            ) from exc
    else:
        try:
            loaded: Any = torch.load(weights, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as exc:
            raise CrosscoderError(
                f"{weights} holds Python objects that only unpickling could read, which this tool never does; "
                "re-save it as a plain state dict (torch.save(model.state_dict(), ...)) or as safetensors."
            ) from exc
        except (RuntimeError, EOFError, OSError) as exc:
            raise CrosscoderError(
                f"{weights} is not a readable torch file ({str(exc).splitlines()[0]}); re-save it."
            ) from exc
        if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
            loaded = loaded["state_dict"]
        if not isinstance(loaded, dict) or not all(isinstance(v, torch.Tensor) for v in loaded.values()):
            raise CrosscoderError(
                f"{weights} does not hold a state dict of tensors; re-save it with torch.save(state_dict)."
            )
        state = loaded
    return {str(k).replace("_orig_mod.", ""): v for k, v in state.items()}


def _layout(keys: set[str], weights: Path, named: str) -> str:
    has_dl, has_ck = set(DL_KEYS) <= keys, set(CK_KEYS) <= keys
    if named != "auto":
        need = DL_KEYS if named == "dictionary_learning" else CK_KEYS
        missing = [k for k in need if k not in keys]
        if missing:
            raise CrosscoderError(
                f"{weights} lacks the {named} key(s) {missing} (found {sorted(keys)[:8]}); check the format or the file."
            )
        return named
    if has_dl == has_ck:
        raise CrosscoderError(
            f"{weights} is neither a dictionary_learning crosscoder (encoder.weight, encoder.bias, decoder.weight, "
            f"decoder.bias) nor a ckkissane one (W_enc, b_enc, W_dec, b_dec): it holds {sorted(keys)[:8]}."
        )
    return "dictionary_learning" if has_dl else "ckkissane"


def load_checkpoint(path: str | Path, format: str = "auto") -> CrosscoderWeights:
    """Load a crosscoder checkpoint of either layout.

    Args:
        path: the weights file or the folder holding it.
        format: one of ``FORMATS``; ``auto`` decides by key names and checks the decoder shape.

    Returns:
        The weights, validated (shapes agree, every value finite).
    """
    if format not in FORMATS:
        raise CrosscoderError(f"Unknown crosscoder format {format!r}; choose one of {', '.join(FORMATS)}.")
    weights = find_checkpoint_file(path)
    state = read_state_dict(weights)
    keys = set(state)
    layout = _layout(keys, weights, format)
    enc_key, benc_key, dec_key, bdec_key = DL_KEYS if layout == "dictionary_learning" else CK_KEYS
    w_enc = state[enc_key].float()
    if w_enc.ndim != 3:
        raise CrosscoderError(
            f"{weights}: {enc_key} has shape {list(w_enc.shape)}, not [M, d, F]; it is not a crosscoder."
        )
    m, d, f = (int(s) for s in w_enc.shape)
    raw_dec = state[dec_key].float()
    expected = (m, f, d) if layout == "dictionary_learning" else (f, m, d)
    if tuple(raw_dec.shape) != expected:
        raise CrosscoderError(
            f"{weights}: {dec_key} has shape {list(raw_dec.shape)} but a {layout} crosscoder with encoder "
            f"[{m}, {d}, {f}] has {list(expected)}; the file mixes layouts, name --crosscoder-format if it is deliberate."
        )
    if m == f and format == "auto":
        raise CrosscoderError(
            f"{weights} has as many latents as models (M = F = {m}), so the decoder shape cannot tell the two layouts "
            "apart; name the format (dictionary_learning or ckkissane)."
        )
    w_dec = raw_dec if layout == "dictionary_learning" else raw_dec.permute(1, 0, 2)
    b_enc, b_dec = state[benc_key].float(), state[bdec_key].float()
    if tuple(b_enc.shape) != (f,) or tuple(b_dec.shape) != (m, d):
        raise CrosscoderError(
            f"{weights}: biases have shapes {list(b_enc.shape)} and {list(b_dec.shape)}, expected [{f}] and [{m}, {d}]."
        )
    configs = _read_configs(weights)
    notes: list[str] = []
    architecture, k, threshold, normalization = "relu", None, None, "crosscoder"
    uncalibrated = False
    if "threshold" in keys or "k" in keys:
        architecture = "batchtopk"
        k = int(state["k"].reshape(-1)[0]) if "k" in keys else None
        if "threshold" not in keys:
            raise CrosscoderError(
                f"{weights} has a BatchTopK k but no threshold, so it cannot encode one token at a time."
            )
        threshold = state["threshold"].float().reshape(-1)
        threshold = threshold.reshape(()) if threshold.numel() == 1 else threshold
        if threshold.numel() not in (1, m):
            raise CrosscoderError(
                f"{weights}: threshold has {threshold.numel()} values; expected 1 or one per model ({m})."
            )
        uncalibrated = bool((threshold == -1).any())
    if "code_normalization_id" in keys:
        ident = int(state["code_normalization_id"].reshape(-1)[0])
        if not 1 <= ident <= len(CODE_NORMALIZATIONS):
            raise CrosscoderError(f"{weights}: code_normalization_id {ident} is none of 1..{len(CODE_NORMALIZATIONS)}.")
        normalization = CODE_NORMALIZATIONS[ident - 1]
    elif architecture == "batchtopk":
        notes.append("no code_normalization_id: assumed CROSSCODER (dictionary_learning's default)")
    if normalization == "decoupled" and threshold is not None and threshold.ndim == 0:
        threshold = threshold.expand(m).clone()
    trainer = next((c.get("trainer") for c in configs.values() if isinstance(c, dict) and "trainer" in c), None) or {}
    alphas = (
        float(trainer.get("code_normalization_alpha_sae", 1.0) or 1.0),
        float(trainer.get("code_normalization_alpha_cc", 0.1) or 0.1),
    )
    mean, scale = _normaliser(state, m, d, weights)
    known = set(DL_KEYS if layout == "dictionary_learning" else CK_KEYS) | set(BATCHTOPK_KEYS) | set(NORMALISER_KEYS)
    loaded = CrosscoderWeights(
        W_enc=w_enc.contiguous(),
        b_enc=b_enc.contiguous(),
        W_dec=w_dec.contiguous(),
        b_dec=b_dec.contiguous(),
        architecture=architecture,
        k=k,
        threshold=threshold,
        code_normalization=normalization,
        mixed_alphas=alphas,
        normaliser_mean=mean,
        normaliser_scale=scale,
        format=layout,
        path=weights.resolve(),
        config=configs,
        unknown_keys=tuple(sorted(keys - known)),
        threshold_uncalibrated=uncalibrated,
        notes=tuple(notes),
    )
    check_finite(loaded)
    return loaded


def _normaliser(
    state: dict[str, torch.Tensor], m: int, d: int, weights: Path
) -> tuple[torch.Tensor | None, torch.Tensor | None]:
    """The input normaliser of the dictionary_learning forks: x -> (x - mean) * scale per model.

    The forks keep ``activation_mean``/``activation_std`` [M, d] (NaN when unused) and scale
    each model's input by ``target_rms / sqrt(sum std^2)`` (their keep_relative_variance
    default), stored as ``activation_global_scale`` [M].
    """
    if "activation_mean" not in state:
        return None, None
    mean = state["activation_mean"].float()
    if torch.isnan(mean).any():
        return None, None
    if tuple(mean.shape) != (m, d):
        raise CrosscoderError(f"{weights}: activation_mean has shape {list(mean.shape)}, expected [{m}, {d}].")
    if "activation_global_scale" in state:
        scale = state["activation_global_scale"].float().reshape(-1)
    else:
        std = state["activation_std"].float()
        target = float(state.get("target_rms", torch.tensor(1.0)).reshape(-1)[0])
        scale = target / torch.sqrt((std**2).sum(dim=-1) + 1e-8)
    if scale.numel() != m or not torch.isfinite(scale).all() or (scale <= 0).any():
        raise CrosscoderError(
            f"{weights}: the input normaliser's scale {scale.tolist()} is not one positive value per model."
        )
    return mean, scale


def check_finite(weights: CrosscoderWeights) -> None:
    """Refuse NaN or infinite weights, naming the tensor."""
    tensors = {
        "encoder": weights.W_enc,
        "encoder bias": weights.b_enc,
        "decoder": weights.W_dec,
        "decoder bias": weights.b_dec,
    }
    if weights.threshold is not None:
        tensors["threshold"] = weights.threshold
    for name, tensor in tensors.items():
        if not torch.isfinite(tensor).all():
            raise CrosscoderError(
                f"The {name} of {weights.path} holds NaN or infinite values; load a healthy checkpoint (training diverged)."
            )


def recorded_hook(weights: CrosscoderWeights) -> str | None:
    """The hook the checkpoint's sibling config names, if any (both models read the same layer).

    ckkissane's cfg.json carries a TransformerLens ``hook_point`` (the same naming as ours);
    dictionary_learning's config.json a ``layer``, whose output (``blocks.L.hook_resid_post``)
    its activation buffers read.
    """
    for body in weights.config.values():
        if not isinstance(body, dict):
            continue
        hook = body.get("hook_point")
        if isinstance(hook, str) and hook.startswith("blocks."):
            return hook
        for section in (body.get("trainer"), body.get("buffer"), body):
            if isinstance(section, dict) and isinstance(section.get("layer"), int):
                return f"blocks.{section['layer']}.hook_resid_post"
    return None
