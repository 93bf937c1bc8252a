"""Command line: build and inspect comparison bundles headless.

    python -m core demo                      build (or reuse) the embedded demo bundle
    python -m core demo --pair family        the cross-family demo (MiniLM vs SmolLM2, aligned spans)
    python -m core compare --sae-a ... --model-a ... --sae-b ... --model-b ... --out DIR
    python -m core match|similarity|dashboards|umap BUNDLE   (re)run one stage with new settings
    python -m core sweep --model-a M --saes-a S1,S2 --model-b M --saes-b T1,T2 --out DIR
    python -m core discover --bundle B --text "..." [--out results.json|.csv]
    python -m core info BUNDLE               what a bundle holds

A user error prints one sentence and exits 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.cli.app import add_app_command
from core.errors import UserError

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TqdmProgress:
    """A progress callback drawing a tqdm bar with done/total per step; a step of unknown size is one line.

    Steps of one phase (``"dashboards · dashboards a"`` and ``"... b"`` report in turns) keep a bar
    each; a new phase closes the previous phase's bars.
    """

    def __init__(self) -> None:
        self._phase: str | None = None
        self._bars: dict[str, Any] = {}
        self._announced: set[str] = set()

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        from core.progress import split_phase

        phase, _ = split_phase(stage)
        if phase != self._phase:
            self.close()
            self._phase = phase
        if not total:
            if stage not in self._announced and stage not in self._bars:
                # no total to show: a line saying what runs, not a bar counting "0it"
                self._announced.add(stage)
                print(f"{stage} ...", file=sys.stderr)
            return
        bar = self._bars.get(stage)
        if bar is None:
            bar = self._bars[stage] = tqdm(total=total, desc=stage, file=sys.stderr, position=len(self._bars))
        bar.total = total
        bar.n = done
        bar.refresh()

    def close(self) -> None:
        for bar in self._bars.values():
            bar.close()
        self._bars = {}

    def __enter__(self) -> TqdmProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        # close before the caller prints an error, so the message is the last line
        self.close()


def _set_threads(n: int) -> None:
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(n)
    threadpool_limits(n)


def _quiet_libraries() -> None:
    import transformers

    transformers.logging.set_verbosity_error()


def _demo_build(args: argparse.Namespace, progress: Any) -> Any:
    if args.pair == "family":
        from core.demo.family import build_cross_demo

        return build_cross_demo(device=args.device, progress=progress, rebuild=args.rebuild, retrain=args.retrain)
    from core.demo.spine import build_demo

    path = build_demo(device=args.device, progress=progress, rebuild=args.rebuild, retrain=args.retrain)
    if args.sweep:
        from core.demo.sweep import build_demo_sweep

        build_demo_sweep(device=args.device, progress=progress)
    return path


def _run_with_status(status_path: str | None, name: str, bundle: Any, build: Callable[[Any], Any]) -> Any:
    """Run ``build(progress)`` with tqdm bars, and with ``--status FILE`` also record steps and outcome there.

    The app follows a background build through that file (``core.progress.StatusFile``): every
    step's done/total, then the bundle built or the one-sentence error.
    """
    from core.progress import StatusFile, tee

    status = StatusFile(status_path, name, {"bundle": str(bundle), "argv": sys.argv[1:]}) if status_path else None
    with TqdmProgress() as bars:
        try:
            path = build(tee(bars, status) if status else bars)
        except UserError as exc:
            if status:
                status.fail(exc, user_error=True)
            raise
        except BaseException as exc:
            if status:
                status.fail(exc, user_error=False)
            raise
    if status:
        status.finish(str(path))
    return path


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo.settings import cross_demo_bundle_path, demo_bundle_path

    bundle = cross_demo_bundle_path() if args.pair == "family" else demo_bundle_path()
    name = {"family": "cross-family demo", "spine": "demo"}[args.pair] + (" + layer sweep" if args.sweep else "")
    print(_run_with_status(args.status, name, bundle, lambda progress: _demo_build(args, progress)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
    from core.pipeline.compare import ComparisonSpec, build_comparison

    sides = {}
    for name in ("a", "b"):
        sides[name] = SideSpec(
            model=ModelSpec.parse(getattr(args, f"model_{name}"), getattr(args, f"tokenizer_{name}")),
            sae=SAESpec.parse(getattr(args, f"sae_{name}")),
            hook=getattr(args, f"hook_{name}"),
            label=getattr(args, f"label_{name}") or "",
        )
    spec = ComparisonSpec(
        a=sides["a"],
        b=sides["b"],
        corpus=CorpusSpec.parse(args.corpus, text_column=args.text_column, max_docs=args.max_docs),
        harvest=HarvestSettings(
            max_tokens=args.max_tokens,
            max_len=args.max_len,
            batch_tokens=args.batch_tokens,
            device=args.device,
            pooling=args.pooling,
        ),
    )
    stages = _parse_stages(args.stages)
    stage_settings: dict[str, Any] = {}
    if "similarity" in stages:
        from core.spaces.settings import SimilaritySettings

        stage_settings["similarity"] = SimilaritySettings(n_null=args.n_null)
    path = _run_with_status(
        args.status,
        f"comparison {args.out}",
        args.out,
        lambda progress: build_comparison(
            spec, args.out, overwrite=args.overwrite, progress=progress, stages=stages, stage_settings=stage_settings
        ),
    )
    print(path)
    return 0


def _parse_stages(text: str) -> tuple[str, ...]:
    from core.errors import SpecError
    from core.pipeline.stages import STAGES

    if text in ("", "none"):
        return ()
    if text == "all":
        return STAGES
    names = tuple(t.strip() for t in text.split(",") if t.strip())
    unknown = [n for n in names if n not in STAGES]
    if unknown:
        raise SpecError(f"Unknown stage(s) {', '.join(unknown)}; choose from {', '.join(STAGES)}, all or none.")
    return names


def cmd_info(args: argparse.Namespace) -> int:
    from core.bundle.reader import open_bundle

    bundle = open_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2, sort_keys=True))
        return 0
    print(f"bundle   {bundle.path}  (schema {m['schema_version']}, created {m.get('created_at', '?')})")
    print(f"units    {m['n_units']:,} ({m.get('unit_kind', 'token')}s) from {m['corpus'].get('n_docs_used', '?')} docs")
    for side in ("a", "b"):
        s = m["sides"][side]
        verdict = s.get("hook_sanity_verdict", {})
        print(
            f"side {side}   {s['label']}: d_in {s['d_in']}, d_sae {s['d_sae']} ({s['architecture']}), "
            f"{s.get('alive_features', '?')} alive; hook {s['hook']} -> {verdict.get('message', '')}"
        )
        for row in s.get("hook_sanity", []):
            mark = "*" if row["configured"] else " "
            print(f"         {mark} {row['hook']:<28} EV {row['explained_variance']:.3f}  MSE {row['mse']:.4g}")
    present = [p for p, ok in m["parts"].items() if ok]
    absent = [p for p, ok in m["parts"].items() if not ok]
    print(f"parts    {', '.join(present)}" + (f"  (not yet: {', '.join(absent)})" if absent else ""))
    return 0


def cmd_stage(args: argparse.Namespace) -> int:
    from core.pipeline.stages import run_stage

    settings: Any = None
    if args.command == "match":
        from core.matching.settings import MatchSettings

        settings = MatchSettings(top_k=args.top_k, min_corr=args.min_corr, method=args.method, memory_mb=args.memory_mb)
    elif args.command == "similarity":
        from core.spaces.settings import SimilaritySettings

        settings = SimilaritySettings(n_null=args.n_null, seed=args.seed)
    stage = {"match": "matching"}.get(args.command, args.command)
    with TqdmProgress() as progress:
        bundle = run_stage(stage, args.bundle, settings, device=args.device, progress=progress)
    print(bundle.path)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec
    from core.pipeline.sweep import SweepSide, SweepSpec, attach_sweep, build_sweep
    from core.spaces.settings import SimilaritySettings

    def side(name: str) -> SweepSide:
        saes = tuple(SAESpec.parse(s) for s in _split(getattr(args, f"saes_{name}")))
        hooks = tuple(_split(getattr(args, f"hooks_{name}") or ""))
        return SweepSide(
            ModelSpec.parse(getattr(args, f"model_{name}"), getattr(args, f"tokenizer_{name}")), saes, hooks
        )

    spec = SweepSpec(
        a=side("a"),
        b=side("b"),
        corpus=CorpusSpec.parse(args.corpus, text_column=args.text_column),
        harvest=HarvestSettings(max_tokens=args.max_tokens, device=args.device),
        similarity=SimilaritySettings(metrics=("svcca", "rsa"), n_null=args.n_null),
    )
    with TqdmProgress() as progress:
        table = build_sweep(spec, args.out, overwrite=args.overwrite, device=args.device, progress=progress)
        if args.bundle:
            attach_sweep(args.bundle, table)
    print(table.select("label_a", "label_b", "metric", "value", "null_mean", "p_adjusted", "n_pairs"))
    return 0


def _split(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def cmd_discover(args: argparse.Namespace) -> int:
    from core.bundle.reader import open_bundle
    from core.device import resolve_device
    from core.errors import UserError as _UserError
    from core.explore.discover import DiscoverSettings
    from core.explore.prompts import load_sides, run_discovery

    if bool(args.text) == bool(args.prompts_file):
        raise _UserError("Give exactly one of --text or --prompts-file.")
    bundle = open_bundle(args.bundle)
    device = resolve_device(args.device)
    sides = load_sides(bundle, device)
    settings = DiscoverSettings(score=args.score, return_top_x=args.top, min_coverage=args.min_coverage)
    if args.text:
        result = run_discovery(bundle, sides, args.text, settings, args.gen_tokens, args.seed, device)
        if args.out:
            print(result.write(args.out))
        else:
            print(json.dumps(result.to_json_dict(), indent=2, default=str))
        return 0
    prompts = _read_prompts(args.prompts_file)
    lines = []
    for prompt in prompts:
        result = run_discovery(bundle, sides, prompt, settings, args.gen_tokens, args.seed, device)
        lines.append(json.dumps(result.to_json_dict(), default=str))
    text = "\n".join(lines) + "\n"
    if args.out:
        from pathlib import Path

        Path(args.out).write_text(text)
        print(args.out)
    else:
        sys.stdout.write(text)
    return 0


def _read_prompts(path: str) -> list[str]:
    from pathlib import Path

    from core.errors import CorpusError

    file = Path(path)
    if not file.is_file():
        raise CorpusError(f"Prompts file {file} does not exist; check the path.")
    prompts = []
    for number, line in enumerate(file.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f'{file} line {number} is not JSON; write one {{"text": ...}} object per line.') from exc
        text = row.get("text") if isinstance(row, dict) else row if isinstance(row, str) else None
        if not text:
            raise CorpusError(f'{file} line {number} has no "text" field; write one {{"text": ...}} object per line.')
        prompts.append(str(text))
    if not prompts:
        raise CorpusError(f'{file} holds no prompts; write one {{"text": ...}} object per line.')
    return prompts


def _add_side_args(parser: argparse.ArgumentParser, name: str) -> None:
    up = name.upper()
    parser.add_argument(
        f"--sae-{name}", required=True, help=f"SAE {up}: folder, local:DIR, sparsify:DIR or release:REL/ID"
    )
    parser.add_argument(
        f"--model-{name}", required=True, help=f"model {up}: hub id or folder, gguf:FILE, onnx-bert:FILE, ..."
    )
    parser.add_argument(
        f"--hook-{name}", default=None, help="hook name (default: the SAE's own), e.g. blocks.3.hook_resid_post"
    )
    parser.add_argument(f"--tokenizer-{name}", default=None, help="tokenizer source for models that ship none (ONNX)")
    parser.add_argument(f"--label-{name}", default=None, help="display name")


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m core`` argument parser."""
    parser = argparse.ArgumentParser(prog="python -m core", description="Compare the features of two SAEs.")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="CPU threads for torch/numpy (default: all cores; 1 helps on a busy box)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build (or reuse) the embedded demo bundle and print its path")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--rebuild", action="store_true", help="rebuild the bundle even when one is cached")
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="retrain the demo SAEs by the recipe, write them to assets/demo_saes/ (the shipped copies), rebuild",
    )
    demo.add_argument("--status", default=None, help="also record progress and the outcome in this JSON file")
    demo.add_argument(
        "--pair",
        choices=("spine", "family"),
        default="spine",
        help="spine: MiniLM-L6 vs MiniLM-L3 (default); family: MiniLM-L6 vs SmolLM2-135M (different tokenizers)",
    )
    demo.add_argument("--sweep", action="store_true", help="also train per-layer SAEs and attach a 3 x 3 layer sweep")
    demo.set_defaults(func=cmd_demo)

    compare = sub.add_parser("compare", help="harvest two SAEs on the same text into a bundle")
    _add_side_args(compare, "a")
    _add_side_args(compare, "b")
    compare.add_argument(
        "--corpus", default="fortunes", help="fortunes, kjv, file:PATH (.txt/.jsonl/.parquet) or hf:NAME"
    )
    compare.add_argument("--text-column", default="text")
    compare.add_argument("--max-docs", type=int, default=None)
    compare.add_argument("--max-tokens", type=int, default=250_000)
    compare.add_argument("--max-len", type=int, default=128)
    compare.add_argument("--batch-tokens", type=int, default=8192)
    compare.add_argument("--device", default="auto")
    compare.add_argument(
        "--pooling",
        default="max",
        help="different tokenizers only: how token codes pool per aligned span (max, last, mean, sum, first)",
    )
    compare.add_argument("--out", required=True, help="bundle folder to write")
    compare.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    compare.add_argument(
        "--stages", default="all", help="later stages to run: all (default), none, or a list like matching,similarity"
    )
    compare.add_argument("--n-null", type=int, default=1000, help="null samples for the similarity stage")
    compare.add_argument("--status", default=None, help="also record progress and the outcome in this JSON file")
    compare.set_defaults(func=cmd_compare)

    match = sub.add_parser("match", help="(re)compute matches.parquet and assignment.parquet of a bundle")
    match.add_argument("bundle")
    match.add_argument("--top-k", type=int, default=10)
    match.add_argument("--min-corr", type=float, default=0.1)
    match.add_argument(
        "--method", default="greedy", help="greedy (default), mutual, many_to_1_ab, many_to_1_ba, hungarian or sparse"
    )
    match.add_argument("--memory-mb", type=float, default=1024.0)
    match.add_argument("--device", default="auto")
    match.set_defaults(func=cmd_stage)

    similarity = sub.add_parser("similarity", help="(re)compute similarity.json (SVCCA, RSA, CKA, Procrustes + nulls)")
    similarity.add_argument("bundle")
    similarity.add_argument("--n-null", type=int, default=1000)
    similarity.add_argument("--seed", type=int, default=0)
    similarity.add_argument("--device", default="auto")
    similarity.set_defaults(func=cmd_stage)

    for name, what in (
        ("dashboards", "per-feature dashboards and examples"),
        ("umap", "UMAP layouts of decoder directions"),
    ):
        stage = sub.add_parser(name, help=f"(re)compute the {what} of a bundle")
        stage.add_argument("bundle")
        stage.add_argument("--device", default="auto")
        stage.set_defaults(func=cmd_stage)

    sweep = sub.add_parser("sweep", help="layer x layer sweep: pair and compare every SAE of A with every SAE of B")
    for name in ("a", "b"):
        sweep.add_argument(f"--model-{name}", required=True)
        sweep.add_argument(f"--saes-{name}", required=True, help="comma-separated SAE folders / specs, one per layer")
        sweep.add_argument(f"--hooks-{name}", default=None, help="comma-separated hooks (default: each SAE's own)")
        sweep.add_argument(f"--tokenizer-{name}", default=None)
    sweep.add_argument("--corpus", default="fortunes")
    sweep.add_argument("--text-column", default="text")
    sweep.add_argument("--max-tokens", type=int, default=50_000)
    sweep.add_argument("--n-null", type=int, default=1000)
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--out", required=True, help="folder for sweep.parquet and sweep.json")
    sweep.add_argument("--overwrite", action="store_true")
    sweep.add_argument("--bundle", default=None, help="also attach the sweep to this bundle (the app shows it)")
    sweep.set_defaults(func=cmd_sweep)

    discover = sub.add_parser("discover", help="rank both sides' features on a text or a file of prompts")
    discover.add_argument("--bundle", required=True)
    discover.add_argument("--text", default=None)
    discover.add_argument("--prompts-file", default=None, help='JSONL, one {"text": ...} per line (batch mode)')
    discover.add_argument("--out", default=None, help="results.json or results.csv (batch: a .jsonl file)")
    discover.add_argument("--score", default="mean_x_coverage", help="mean, max, mean_x_coverage or selectivity")
    discover.add_argument("--top", type=int, default=20)
    discover.add_argument("--min-coverage", type=float, default=0.0)
    discover.add_argument("--gen-tokens", type=int, default=0, help="continue the prompt first (causal LMs)")
    discover.add_argument("--seed", type=int, default=0)
    discover.add_argument("--device", default="auto")
    discover.set_defaults(func=cmd_discover)

    add_app_command(sub)

    info = sub.add_parser("info", help="summarise a bundle")
    info.add_argument("bundle")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI; returns the exit status (2 for a user error)."""
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.threads:
        _set_threads(args.threads)
    try:
        if args.command not in ("info", "app"):
            _quiet_libraries()
        return func(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted: finished shards are kept; run the same command again to resume.", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
