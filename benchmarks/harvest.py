"""Harvest throughput on the demo pair against a plain transformers forward, in one run.

Ours: the resumable harvest (windows, batches sorted by length, forward stopped after
the hooked block, SAE encode, sparse shards) for BOTH demo models. Baseline: what a
script would do with transformers alone: batches of 32 documents in corpus order padded
to their longest, the full model with ``output_hidden_states=True``, for both models,
without any SAE. Prints tokens/s of each and the ratio (ours / baseline).

    python benchmarks/harvest.py --tokens 50000 [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import torch  # noqa: E402

from core.demo.settings import DEMO_CORPUS, DEMO_HOOK_A, DEMO_HOOK_B, DEMO_MODEL_A, DEMO_MODEL_B  # noqa: E402
from core.harvest.corpus import load_corpus  # noqa: E402
from core.harvest.encode import HarvestSide  # noqa: E402
from core.harvest.loading import load_model, load_sae  # noqa: E402
from core.harvest.run import harvest  # noqa: E402
from core.harvest.specs import HarvestSettings, SAESpec  # noqa: E402
from core.harvest.windows import tokenize_windows  # noqa: E402


def _random_sae(folder: Path, hook: str) -> Path:
    from sae_lens import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=384, d_sae=2048, k=32, dtype="float32", device="cpu")
    cfg.metadata.hook_name = hook
    TopKSAE(cfg).save_model(folder)
    return folder


def baseline(models: list, docs: list[str], n_tokens: int) -> float:
    """Seconds for a plain full forward of every model over docs until ``n_tokens`` tokens."""
    tok = models[0].tokenizer
    start = time.perf_counter()
    for model in models:
        seen, i = 0, 0
        while seen < n_tokens:
            enc = tok(docs[i : i + 32], return_tensors="pt", padding=True, truncation=True, max_length=128)
            with torch.inference_mode():
                model.base(**enc, output_hidden_states=True)
            seen += int(enc["attention_mask"].sum()) - 2 * enc["input_ids"].shape[0]
            i += 32
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokens", type=int, default=50_000)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    docs = load_corpus(DEMO_CORPUS)
    model_a, model_b = load_model(DEMO_MODEL_A), load_model(DEMO_MODEL_B)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sides = {
            "a": HarvestSide(
                model_a,
                load_sae(SAESpec("local", str(_random_sae(root / "a", DEMO_HOOK_A)))),
                model_a.hook(DEMO_HOOK_A),
            ),
            "b": HarvestSide(
                model_b,
                load_sae(SAESpec("local", str(_random_sae(root / "b", DEMO_HOOK_B)))),
                model_b.hook(DEMO_HOOK_B),
            ),
        }
        settings = HarvestSettings(max_tokens=args.tokens, device="cpu")
        n_units = sum(w.n_units for w in tokenize_windows(model_a.tokenizer, docs, settings))
        t0 = time.perf_counter()
        result = harvest(sides, docs, settings, root / "work", torch.device("cpu"))
        ours = time.perf_counter() - t0
    base = baseline([model_a, model_b], docs, n_units)
    print(f"threads            {torch.get_num_threads()}")
    print(f"units              {result.units.height:,} (both models, SAE d_sae 2048 k 32 on each)")
    print(
        f"ours               {ours:7.1f} s  {n_units / ours:8.0f} tokens/s (both sides, SAE encode and shards included)"
    )
    print(f"plain transformers {base:7.1f} s  {n_units / base:8.0f} tokens/s (both full models, no SAE)")
    print(f"ratio              {base / ours:7.2f}x")


if __name__ == "__main__":
    main()
