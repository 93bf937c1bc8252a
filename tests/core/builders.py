"""Tiny real artefacts for tests: transformers folders, sae-lens and sparsify SAE folders.

Builders take overrides, like SAELens's tests/helpers.py. Models are randomly initialised
but real transformers models using the MiniLM WordPiece tokenizer, so every code path
(offsets, special tokens, hooks) is the production one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from core.harvest.loading import default_bert_tokenizer


def build_bert_folder(path: Path, **overrides: Any) -> Path:
    """Save a tiny random BertModel with the MiniLM tokenizer into ``path``."""
    from transformers import AutoTokenizer, BertConfig, BertModel

    cfg = {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 128,
        "vocab_size": 30522,
        **overrides,
    }
    torch.manual_seed(cfg.pop("seed", 0))
    model = BertModel(BertConfig(**cfg), add_pooling_layer=False)
    model.config.architectures = ["BertModel"]
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(default_bert_tokenizer()).save_pretrained(path)
    return path


def build_llama_folder(path: Path, **overrides: Any) -> Path:
    """Save a tiny random LlamaForCausalLM (with the MiniLM tokenizer) into ``path``."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    cfg = {
        "hidden_size": 32,
        "num_hidden_layers": 3,
        "num_attention_heads": 2,
        "num_key_value_heads": 2,
        "intermediate_size": 64,
        "max_position_embeddings": 256,
        "vocab_size": 30522,
        **overrides,
    }
    torch.manual_seed(cfg.pop("seed", 0))
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.save_pretrained(path)
    AutoTokenizer.from_pretrained(default_bert_tokenizer()).save_pretrained(path)
    return path


def build_topk_sae_folder(path: Path, d_in: int = 32, d_sae: int = 64, k: int = 4, **overrides: Any) -> Path:
    """Save a random sae-lens TopK SAE (``save_model`` layout) into ``path``."""
    from sae_lens import TopKSAE, TopKSAEConfig

    seed = overrides.pop("seed", 0)
    hook_name = overrides.pop("hook_name", "blocks.1.hook_resid_post")
    torch.manual_seed(seed)
    cfg = TopKSAEConfig(d_in=d_in, d_sae=d_sae, k=k, dtype="float32", device="cpu", **overrides)
    cfg.metadata.hook_name = hook_name
    sae = TopKSAE(cfg)
    with torch.no_grad():
        sae.W_enc.normal_()
        sae.W_dec.copy_(sae.W_enc.T / sae.W_enc.T.norm(dim=1, keepdim=True))
        sae.b_enc.zero_()
    sae.save_model(path)
    return path


def build_sparsify_folder(root: Path, layer: int = 1, d_in: int = 32, num_latents: int = 64, k: int = 4) -> Path:
    """Write an EleutherAI sparsify-layout SAE folder ``root/layers.{layer}`` (W_dec [num_latents, d_in])."""
    folder = root / f"layers.{layer}"
    folder.mkdir(parents=True)
    torch.manual_seed(layer)
    enc = torch.randn(num_latents, d_in)
    cfg = {"expansion_factor": num_latents // d_in, "normalize_decoder": True, "num_latents": num_latents, "k": k}
    (folder / "cfg.json").write_text(json.dumps({**cfg, "d_in": d_in}))
    save_file(
        {
            "encoder.weight": enc,
            "encoder.bias": torch.zeros(num_latents),
            "W_dec": enc / enc.norm(dim=1, keepdim=True),
            "b_dec": torch.zeros(d_in),
        },
        folder / "sae.safetensors",
    )
    return folder


def write_corpus(path: Path, n_docs: int = 40) -> Path:
    """A small .jsonl corpus with varied, repeated English text."""
    words = "the cat sat on a mat while seven dogs barked loudly at night and time flies like an arrow".split()
    rows = []
    for i in range(n_docs):
        length = 5 + (i * 7) % 60
        rows.append({"text": " ".join(words[(i + j) % len(words)] for j in range(length)) + f". Doc {i}!"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path
