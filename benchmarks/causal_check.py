"""Causal check speed on the demo's two MiniLMs: batched ablations through the later blocks only vs one full forward each.

Both ways ablate the same ``--latents`` random crosscoder latents (d 384, the demo's hooks) on
the same ``--probes`` probes of 32 tokens and must give the same shifts. Ours:
``compute_shifts`` (each probe's later blocks replayed once per batch of up to 64 ablations).
Baseline: one full forward pass of the model per (latent, probe) with a hook that subtracts
the latent's contribution, as a straightforward loop would. Prints seconds of each, the ratio
(baseline / ours) and the machine's load; one thread.

    python benchmarks/causal_check.py --latents 40 --probes 24
"""

from __future__ import annotations

import argparse
import os
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from core.crosscoder.causal import CrosscoderLatents, compute_shifts, draw_probes, shift  # noqa: E402
from core.crosscoder.checkpoint import CrosscoderWeights  # noqa: E402
from core.crosscoder.model import Crosscoder, InputScaling  # noqa: E402
from core.crosscoder.settings import CausalSettings  # noqa: E402
from core.demo.settings import DEMO_CORPUS, DEMO_HOOK_A, DEMO_HOOK_B, DEMO_MODEL_A, DEMO_MODEL_B  # noqa: E402
from core.harvest.corpus import load_corpus  # noqa: E402
from core.harvest.loading import load_model  # noqa: E402


def _crosscoder(d: int, f: int) -> Crosscoder:
    from pathlib import Path

    g = torch.Generator().manual_seed(0)
    weights = CrosscoderWeights(
        W_enc=torch.randn(2, d, f, generator=g) / d,
        b_enc=torch.zeros(f),
        W_dec=torch.randn(2, f, d, generator=g) * 0.05,
        b_dec=torch.zeros(2, d),
        architecture="relu",
        k=None,
        threshold=None,
        code_normalization="crosscoder",
        mixed_alphas=(1.0, 0.1),
        normaliser_mean=None,
        normaliser_scale=None,
        format="dictionary_learning",
        path=Path("random"),
    )
    return Crosscoder(weights, InputScaling((1.0, 1.0), ("given", "given")))


def _baseline(models, hooks, source, probes) -> dict[str, np.ndarray]:
    """One full forward per (latent, probe): a hook on the hook's block subtracts the contribution."""
    out = {s: np.zeros((source.n, len(probes))) for s in "ab"}
    for col, probe in enumerate(probes):
        acts, clean = {}, {}
        for s in "ab":
            model, hook = models[s], hooks[s]
            store = {}
            handle = model.blocks[hook.after_block].register_forward_hook(
                lambda m, a, o, store=store: store.__setitem__("x", o[0] if isinstance(o, tuple) else o)
            )
            with torch.inference_mode():
                clean[s] = model.base(input_ids=probe.ids[s]).last_hidden_state[0]
            handle.remove()
            acts[s] = store["x"][0]
        kept = {s: torch.from_numpy(np.flatnonzero(probe.keep[s])) for s in "ab"}
        codes = source.codes({s: acts[s][kept[s]] for s in "ab"})
        for s in "ab":
            model, hook = models[s], hooks[s]
            for i in range(source.n):
                code = codes[s][:, i]
                if not torch.any(code != 0):
                    continue
                delta = torch.zeros_like(acts[s])
                delta[kept[s]] = code[:, None] * source.directions[s][i][None]

                def edit(m, a, o, delta=delta):
                    h = o[0] if isinstance(o, tuple) else o
                    return (h - delta[None], *o[1:]) if isinstance(o, tuple) else h - delta[None]

                handle = model.blocks[hook.after_block].register_forward_hook(edit)
                with torch.inference_mode():
                    ablated = model.base(input_ids=probe.ids[s]).last_hidden_state
                handle.remove()
                out[s][i, col] = float(shift(model, clean[s], ablated)[0])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--latents", type=int, default=40)
    parser.add_argument("--probes", type=int, default=24)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = {"a": load_model(DEMO_MODEL_A), "b": load_model(DEMO_MODEL_B)}
    hooks = {"a": models["a"].hook(DEMO_HOOK_A), "b": models["b"].hook(DEMO_HOOK_B)}
    docs = load_corpus(DEMO_CORPUS)[:2000]
    settings = CausalSettings(n_probes=args.probes, probe_len=32)
    probes = draw_probes(docs, list(range(len(docs))), {s: models[s].tokenizer for s in "ab"}, settings)
    source = CrosscoderLatents(_crosscoder(models["a"].d_model, 256), list(range(args.latents)))
    t0 = time.perf_counter()
    ours = compute_shifts(models, hooks, source, probes, settings, torch.device("cpu"))
    t_ours = time.perf_counter() - t0
    t0 = time.perf_counter()
    base = _baseline(models, hooks, source, probes)
    t_base = time.perf_counter() - t0
    for s in "ab":
        assert np.allclose(ours.shift[s], base[s], rtol=1e-3, atol=1e-6), f"side {s}: shifts differ"
    load = os.getloadavg()
    print(
        f"{args.latents} latents x {len(probes)} probes, load {load[0]:.1f}: ours {t_ours:.1f} s, "
        f"full forward per ablation {t_base:.1f} s, ratio {t_base / t_ours:.1f}x"
    )


if __name__ == "__main__":
    main()
