"""The Ray engine's fixed overhead and harvest throughput against the local engine, in one run.

On the demo pair (all-MiniLM-L6-v2 block 3 vs paraphrase-MiniLM-L3-v2 block 1; the demo's
trained SAEs when the cache holds them, else random TopK SAEs of the same shape) and the
demo corpus, builds the same bundle (harvest + matching) with:

- the local engine (the baseline, this process, default torch threads);
- the Ray engine with 1 worker of all the CPUs, then 2 workers of half the CPUs each, on a
  private cluster started here (its start-up is timed on its own);

then once more on a tiny input (one shard) to isolate the fixed cost of scheduling (actor
start-up, model loading in the workers, reduce tasks). Prints seconds per stage, harvest
tokens/s and every ratio against the local engine, plus the two unit costs the scale-out
plan (docs/scaleout.md) is derived from: harvest seconds per token (both sides) and reduce
nanoseconds per pair increment (sum over units of L0_A x L0_B).

    python benchmarks/scaleout.py --tokens 16384 --shard-units 4096
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

import numpy as np  # noqa: E402

from core.bundle.reader import open_bundle  # noqa: E402
from core.demo.settings import DEMO_CORPUS, DEMO_HOOK_A, DEMO_HOOK_B, DEMO_MODEL_A, DEMO_MODEL_B  # noqa: E402
from core.demo.spine import demo_dir  # noqa: E402
from core.engine.settings import EngineSettings  # noqa: E402
from core.harvest.specs import HarvestSettings, SAESpec, SideSpec  # noqa: E402
from core.pipeline.compare import ComparisonSpec, build_comparison  # noqa: E402


def _saes(root: Path) -> tuple[Path, Path, str]:
    trained = demo_dir()
    if (trained / "sae_a" / "cfg.json").is_file() and (trained / "sae_b" / "cfg.json").is_file():
        return trained / "sae_a", trained / "sae_b", "the demo's trained SAEs"
    from sae_lens import TopKSAE, TopKSAEConfig

    out = []
    for name, hook in (("sae_a", DEMO_HOOK_A), ("sae_b", DEMO_HOOK_B)):
        cfg = TopKSAEConfig(d_in=384, d_sae=2048, k=32, dtype="float32", device="cpu")
        cfg.metadata.hook_name = hook
        TopKSAE(cfg).save_model(root / name)
        out.append(root / name)
    return out[0], out[1], "random TopK SAEs of the demo's shape (2048 latents, k 32)"


def _build(spec: ComparisonSpec, out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    build_comparison(spec, out, stages=("matching",))
    total = time.perf_counter() - started
    bundle = open_bundle(out)
    m = bundle.manifest
    codes_a, codes_b = bundle.codes("a"), bundle.codes("b")
    pairs = float(np.dot(np.diff(codes_a.indptr).astype(np.float64), np.diff(codes_b.indptr).astype(np.float64)))
    return {
        "total_s": total,
        "harvest_s": m["timings"]["harvest_s"],
        "correlate_s": m["matching"]["timings"]["correlate_s"],
        "units": m["n_units"],
        "pairs": pairs,
        "codes": (out / "codes_a.safetensors").read_bytes() + (out / "codes_b.safetensors").read_bytes(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--shard-units", type=int, default=4096)
    parser.add_argument("--tiny-tokens", type=int, default=512)
    parser.add_argument(
        "--device", default="auto", help="auto: the GPU when there is one (the GPU figures), else the CPU"
    )
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 2
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        sae_a, sae_b, which = _saes(root)
        base = ComparisonSpec(
            a=SideSpec(DEMO_MODEL_A, SAESpec("local", str(sae_a)), DEMO_HOOK_A),
            b=SideSpec(DEMO_MODEL_B, SAESpec("local", str(sae_b)), DEMO_HOOK_B),
            corpus=DEMO_CORPUS,
            harvest=HarvestSettings(max_tokens=args.tokens, shard_units=args.shard_units, device=args.device),
        )
        tiny = replace(base, harvest=replace(base.harvest, max_tokens=args.tiny_tokens, shard_units=args.tiny_tokens))
        print(f"inputs: demo models, {which}, {args.tokens} tokens in shards of {args.shard_units}; {cores} CPUs")
        print(f"load: {os.getloadavg()[0]:.2f} (1-minute average) at the start")

        results: dict[str, dict[str, Any]] = {}
        results["local"] = _build(base, root / "local")
        results["local tiny"] = _build(tiny, root / "local-tiny")
        started = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        ray_start = time.perf_counter() - started
        try:
            one = EngineSettings(name="ray", workers=1, cpus_per_worker=cores)
            two = EngineSettings(name="ray", workers=2, cpus_per_worker=max(1, cores // 2))
            results["ray 1 worker"] = _build(replace(base, engine=one), root / "ray1")
            results["ray 2 workers"] = _build(replace(base, engine=two), root / "ray2")
            results["ray tiny"] = _build(replace(tiny, engine=one), root / "ray-tiny")
        finally:
            ray.shutdown()

    local = results["local"]
    print(f"\nray cluster start-up: {ray_start:6.1f} s (once per run; a joined cluster costs nothing)")
    print(
        f"{'run':<14} {'total s':>8} {'harvest s':>10} {'tokens/s':>9} {'reduce s':>9}  ratios to local (total, harvest, reduce)"
    )
    for name, r in results.items():
        ref = results["local tiny"] if "tiny" in name else local
        print(
            f"{name:<14} {r['total_s']:8.1f} {r['harvest_s']:10.1f} {r['units'] / r['harvest_s']:9.0f} {r['correlate_s']:9.2f}"
            f"  {r['total_s'] / ref['total_s']:5.2f} {r['harvest_s'] / ref['harvest_s']:5.2f} "
            f"{r['correlate_s'] / max(ref['correlate_s'], 1e-9):5.2f}"
        )
    fixed = results["ray tiny"]["total_s"] - results["local tiny"]["total_s"]
    print(f"fixed overhead of the Ray engine (tiny input, one shard, cluster already up): {fixed:.1f} s")
    same = all(r["codes"] == local["codes"] for name, r in results.items() if "tiny" not in name and "2" not in name)
    print(f"codes byte-identical to local for the same torch thread count (1 worker of {cores} CPUs): {same}")
    unit = {
        "harvest_s_per_token_both_sides": local["harvest_s"] / local["units"],
        "reduce_ns_per_pair": 1e9 * local["correlate_s"] / max(local["pairs"], 1.0),
        "pairs": local["pairs"],
        "units": local["units"],
        "load_1min_end": os.getloadavg()[0],
    }
    print("unit costs (local engine):", json.dumps(unit))


if __name__ == "__main__":
    main()
