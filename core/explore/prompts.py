"""Run a bundle's two models and SAEs on a live text (prompt discovery's model side).

The sides are rebuilt from the bundle's manifest (the same specs the harvest used), so a
text is encoded exactly as the corpus was: same windows, same special-token masking,
same hook. For a causal LM a prompt can first be continued by ``gen_tokens`` sampled
tokens (seeded), and the features are then read on prompt plus continuation.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import torch

from core.bundle.reader import Bundle
from core.errors import UserError
from core.explore.discover import DiscoverSettings, DiscoveryResult, TextCodes, discover_from_codes
from core.harvest.encode import HarvestSide, encode_windows
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.specs import HarvestSettings, ModelSpec, SAESpec
from core.harvest.windows import tokenize_windows


def load_sides(bundle: Bundle, device: torch.device | str = "cpu") -> dict[str, HarvestSide]:
    """Load both sides (models, SAEs, hooks) a bundle was built from.

    Args:
        bundle: the opened bundle.
        device: where to put models and SAEs.

    Returns:
        ``{"a": HarvestSide, "b": HarvestSide}``; a model shared by both sides is loaded once.
    """
    if "crosscoder" in bundle.manifest:
        raise UserError(
            "This bundle holds one crosscoder, not two SAEs, so live text cannot be encoded side by side here; "
            "its latents are on the Model diffing and Feature pages."
        )
    models: dict[ModelSpec, LoadedModel] = {}
    sides = {}
    for name in ("a", "b"):
        side = bundle.side(name)
        m = side["model"]
        model_spec = ModelSpec(m["kind"], m["source"], m.get("tokenizer"))
        if model_spec not in models:
            models[model_spec] = load_model(model_spec, device)
        s = side["sae"]["spec"]
        sae = load_sae(SAESpec(s["kind"], s["source"], s.get("sae_id")), device)
        sides[name] = HarvestSide(models[model_spec], sae, models[model_spec].hook(side["hook"]))
    return sides


def continue_prompt(model: LoadedModel, prompt: str, gen_tokens: int, seed: int, device: torch.device) -> str:
    """Append ``gen_tokens`` sampled tokens to ``prompt`` (causal LMs only; seeded).

    Returns:
        Prompt plus continuation.
    """
    if gen_tokens <= 0:
        return prompt
    if not model.is_causal:
        raise UserError(f"{model.name} is an encoder and cannot continue a prompt; set gen_tokens to 0.")
    enc = model.tokenizer(prompt, return_tensors="pt").to(device)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.inference_mode():
            out = model.model.generate(**enc, max_new_tokens=gen_tokens, do_sample=True, top_p=0.95)
    finally:
        torch.random.set_rng_state(generator_state)
    new = model.tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    return prompt + new


def encode_text(
    sides: dict[str, HarvestSide], text: str, harvest: HarvestSettings, device: torch.device | str = "cpu"
) -> dict[str, TextCodes]:
    """SAE codes of both sides on one text, one row per kept token, as the harvest keeps them.

    Args:
        sides: loaded sides (see :func:`load_sides`).
        text: the text.
        harvest: the bundle's harvest settings (window length, special-token masking).
        device: where to run.

    Returns:
        side -> TextCodes (codes, token strings, text, character offsets).
    """
    if not text.strip():
        raise UserError("The text is empty; type or paste some text to analyse.")
    device = torch.device(device)
    settings = replace(harvest, max_tokens=10**9)
    tokenizer = sides["a"].model.tokenizer
    windows = tokenize_windows(tokenizer, [text], settings)
    if not windows:
        raise UserError("The text produced no tokens to analyse; give a longer text.")
    offsets = np.concatenate([w.offsets[w.keep] for w in windows])
    tokens = tuple(text[a:b] for a, b in offsets)
    out = {}
    for name, side in sides.items():
        (codes,) = encode_windows(side.model, [(side.sae, side.hook)], windows, settings, device)
        out[name] = TextCodes(codes=codes, tokens=tokens, text=text, offsets=offsets)
    return out


def run_discovery(
    bundle: Bundle,
    sides: dict[str, HarvestSide],
    text: str,
    settings: DiscoverSettings | None = None,
    gen_tokens: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> DiscoveryResult:
    """Rank the features of both sides on a text (optionally a continued prompt).

    Args:
        bundle: the opened bundle (corpus quantiles, examples, assignment).
        sides: its loaded sides (see :func:`load_sides`).
        text: the text or prompt.
        settings: discovery settings.
        gen_tokens: tokens to sample after the prompt first (causal side A only).
        seed: seeds the continuation.
        device: where to run.

    Returns:
        The discovery result (per-side rankings, partners, rank drift).
    """
    settings = settings or DiscoverSettings()
    harvest = HarvestSettings(**{k: v for k, v in bundle.manifest["settings"]["harvest"].items()})
    full = continue_prompt(sides["a"].model, text, gen_tokens, seed, torch.device(device))
    codes = encode_text(sides, full, harvest, device)
    extra: dict[str, Any] = {"gen_tokens": gen_tokens, "seed": seed}
    return discover_from_codes(bundle, codes, settings, text=full, cache_extra=extra)
