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
from core.explore.discover import DiscoverSettings, DiscoveryResult, LayerCodes, TextCodes, discover_from_codes
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
    causal = next((side.model for side in sides.values() if side.model.is_causal), None)
    entropy = token_entropy(causal, windows, device) if causal is not None else None
    out = {}
    for name, side in sides.items():
        (codes,) = encode_windows(side.model, [(side.sae, side.hook)], windows, settings, device)
        out[name] = TextCodes(codes=codes, tokens=tokens, text=text, offsets=offsets, entropy=entropy)
    return out


def token_entropy(model: LoadedModel, windows: list, device: torch.device | str = "cpu") -> np.ndarray:
    """A causal LM's next-token entropy (nats) at every kept token of the windows, in order.

    The informative-token pre-filter of discovery keeps the tokens where the model is least sure
    what comes next.

    Args:
        model: a causal LM.
        windows: the text's windows (core.harvest.windows.Window).
        device: where to run.

    Returns:
        float64 [n_kept_tokens].
    """
    out = []
    with torch.inference_mode():
        for w in windows:
            ids = torch.from_numpy(w.input_ids[None, :]).to(device)
            logits = model.model(input_ids=ids).logits[0].double()
            logp = torch.log_softmax(logits, dim=-1)
            entropy = -(logp.exp() * logp).sum(-1).cpu().numpy()
            out.append(entropy[w.keep])
    return np.concatenate(out) if out else np.zeros(0)


def load_layer_saes(
    bundle: Bundle,
    sides: dict[str, HarvestSide],
    side: str,
    saes: list[SAESpec],
    hooks: list[str | None],
    device: torch.device | str = "cpu",
) -> list[tuple[SAESpec, Any, Any]]:
    """Load extra SAEs of one side's model (other layers) and check each fits it.

    Returns:
        ``(spec, LoadedSAE, HookPoint)`` per SAE.
    """
    model = sides[side].model
    out = []
    for spec, hook in zip(saes, hooks or [None] * len(saes), strict=True):
        sae = load_sae(spec, device)
        point = model.hook(hook or sae.hook_name or "")
        HarvestSide(model, sae, point)  # checks that the SAE reads this model at that hook
        out.append((spec, sae, point))
    return out


def sample_layer_stats(
    bundle: Bundle,
    model: LoadedModel,
    layer_saes: list[tuple[SAESpec, Any, Any]],
    harvest: HarvestSettings,
    settings: DiscoverSettings,
    n_tokens: int = 4096,
    device: torch.device | str = "cpu",
) -> list[tuple[np.ndarray, np.ndarray, tuple[tuple[str, ...], ...]]]:
    """Thresholds, background means and proto-label tokens of extra SAEs, from a sample of the bundle's corpus.

    The bundle's own SAEs take tau from their dashboards; an extra SAE has none, so its features'
    ``tau_quantile`` quantiles are read off its codes on the first ``n_tokens`` units of the corpus,
    and so is its background mean and its most frequent tokens among its top activations.

    Returns:
        Per SAE: ``(tau, background, top_tokens)``.
    """
    docs = bundle.docs().sort("doc").collect()["text"].to_list()
    windows = tokenize_windows(model.tokenizer, docs, replace(harvest, max_tokens=n_tokens))
    tokens = [model.tokenizer.convert_ids_to_tokens(int(i)) for w in windows for i in w.input_ids[w.keep]]
    codes = encode_windows(model, [(sae, hook) for _, sae, hook in layer_saes], windows, harvest, torch.device(device))
    out = []
    for c in codes:
        dense_tau = np.full(c.n_features, np.inf)
        top: list[tuple[str, ...]] = []
        csc = c.to_scipy().tocsc()
        for f in range(c.n_features):
            vals = csc.data[csc.indptr[f] : csc.indptr[f + 1]]
            rows = csc.indices[csc.indptr[f] : csc.indptr[f + 1]]
            if vals.size:
                dense_tau[f] = float(np.quantile(vals, settings.tau_quantile))
            best = rows[np.argsort(-vals, kind="stable")[:20]]
            counts: dict[str, int] = {}
            for r in best:
                counts[tokens[r]] = counts.get(tokens[r], 0) + 1
            top.append(tuple(t for t, _ in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))))
        if settings.tau is not None:
            dense_tau = np.full(c.n_features, float(settings.tau))
        background = np.asarray(csc.sum(axis=0)).ravel() / max(c.n_rows, 1)
        out.append((dense_tau, background, tuple(top)))
    return out


def run_discovery(
    bundle: Bundle,
    sides: dict[str, HarvestSide],
    text: str,
    settings: DiscoverSettings | None = None,
    gen_tokens: int = 0,
    seed: int = 0,
    device: torch.device | str = "cpu",
    layer_side: str | None = None,
    layer_saes: list[tuple[SAESpec, Any, Any]] | None = None,
    layer_stats: list[tuple[np.ndarray, np.ndarray, tuple[tuple[str, ...], ...]]] | None = None,
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
        layer_side: the side whose model the extra SAEs read.
        layer_saes: extra SAEs of that model (:func:`load_layer_saes`).
        layer_stats: their thresholds and labels (:func:`sample_layer_stats`; computed here if None).

    Returns:
        The discovery result (per-SAE rankings, partners, rank drift).
    """
    settings = settings or DiscoverSettings()
    harvest = HarvestSettings(**{k: v for k, v in bundle.manifest["settings"]["harvest"].items()})
    full = continue_prompt(sides["a"].model, text, gen_tokens, seed, torch.device(device))
    codes = encode_text(sides, full, harvest, device)
    layers: list[LayerCodes] = []
    if layer_saes:
        assert layer_side is not None
        model = sides[layer_side].model
        stats = layer_stats or sample_layer_stats(bundle, model, layer_saes, harvest, settings, device=device)
        base = codes[layer_side]
        windows = tokenize_windows(model.tokenizer, [full], replace(harvest, max_tokens=10**9))
        extra_codes = encode_windows(
            model, [(sae, hook) for _, sae, hook in layer_saes], windows, harvest, torch.device(device)
        )
        for (spec, _, hook), c, (tau, background, top) in zip(layer_saes, extra_codes, stats, strict=True):
            text_codes = TextCodes(c, base.tokens, base.text, base.offsets, base.entropy)
            layers.append(LayerCodes(layer_side, spec.label(), hook.name, text_codes, tau, background, top))
    extra: dict[str, Any] = {
        "gen_tokens": gen_tokens,
        "seed": seed,
        "layers": [spec.label() for spec, _, _ in layer_saes or []],
    }
    return discover_from_codes(bundle, codes, settings, text=full, cache_extra=extra, layers=layers)
