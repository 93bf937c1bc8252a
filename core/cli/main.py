"""Command line: build and inspect comparison bundles headless.

    python -m core demo                      build (or reuse) the embedded demo bundle
    python -m core demo --pair family        the cross-family demo (MiniLM vs SmolLM2, aligned spans)
    python -m core compare --sae-a ... --model-a ... --sae-b ... --model-b ... --out DIR
    python -m core match|similarity|dashboards|umap BUNDLE   (re)run one stage with new settings
    python -m core sweep --model-a M --saes-a S1,S2 --model-b M --saes-b T1,T2 --out DIR
    python -m core discover --bundle B --text "..." [--out results.json|.csv]
    python -m core info BUNDLE               what a bundle holds

Every failure ends as one line on stderr (core.cli.boundary): a user error or a known failure
class exits 2, a bug exits 1 with its traceback in a log file, never on the terminal.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.cli.app import add_app_command
from core.cli.boundary import (
    OneLineParser,
    correlation,
    fraction,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
)

os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


class TqdmProgress:
    """A progress callback drawing one tqdm bar per stage (a spinner-like bar when the total is unknown)."""

    def __init__(self) -> None:
        self._stage: str | None = None
        self._bar: Any = None

    def __call__(self, stage: str, done: int, total: int) -> None:
        from tqdm import tqdm

        if stage != self._stage:
            self.close()
            self._stage = stage
            self._bar = tqdm(total=total or None, desc=stage, file=sys.stderr)
        if total:
            self._bar.total = total
        self._bar.n = done
        self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

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


def cmd_demo(args: argparse.Namespace) -> int:
    from core.demo.spine import build_demo

    if args.pair == "family":
        from core.demo.family import build_cross_demo

        with TqdmProgress() as progress:
            path = build_cross_demo(device=args.device, progress=progress, rebuild=args.rebuild)
        print(path)
        return 0

    with TqdmProgress() as progress:
        path = build_demo(device=args.device, progress=progress, rebuild=args.rebuild)
        if args.sweep:
            from core.demo.sweep import build_demo_sweep

            build_demo_sweep(device=args.device, progress=progress)
    print(path)
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
        corpus=CorpusSpec.parse(
            args.corpus,
            text_column=args.text_column,
            max_docs=args.max_docs,
            bad_rows="skip" if args.skip_bad_rows else "refuse",
        ),
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
    with TqdmProgress() as progress:
        path = build_comparison(
            spec, args.out, overwrite=args.overwrite, progress=progress, stages=stages, stage_settings=stage_settings
        )
    print(path)
    return 0


def _parse_stages(text: str) -> tuple[str, ...]:
    from core.pipeline.stages import STAGES, check_stage_names

    if text in ("", "none"):
        return ()
    if text == "all":
        return STAGES
    return check_stage_names([t.strip() for t in text.split(",") if t.strip()])


def cmd_info(args: argparse.Namespace) -> int:
    from core.bundle.reader import open_bundle

    bundle = open_bundle(args.bundle)
    m = bundle.manifest
    if args.json:
        print(json.dumps(m, indent=2, sort_keys=True))
        return 0
    print(f"bundle   {bundle.path}  (schema {m['schema_version']}, created {m.get('created_at', '?')})")
    corpus = m.get("corpus") or {}
    dropped = corpus.get("dropped") or {}
    left_out = f"; left out: {', '.join(f'{n:,} {why}' for why, n in dropped.items())}" if dropped else ""
    print(
        f"units    {m['n_units']:,} ({m.get('unit_kind', 'token')}s) from {corpus.get('n_docs_used', '?')} docs{left_out}"
    )
    for side in ("a", "b"):
        s = m["sides"][side]
        verdict = s.get("hook_sanity_verdict", {})
        print(
            f"side {side}   {s.get('label', side.upper())}: d_in {s.get('d_in', '?')}, d_sae {s.get('d_sae', '?')} "
            f"({s.get('architecture', '?')}), "
            f"{s.get('alive_features', '?')} alive; hook {s.get('hook', '?')} -> {verdict.get('message', '')}"
        )
        for row in s.get("hook_sanity", []):
            mark = "*" if row.get("configured") else " "
            print(
                f"         {mark} {row.get('hook', '?'):<28} EV {row.get('explained_variance', float('nan')):.3f}  "
                f"MSE {row.get('mse', float('nan')):.4g}"
            )
    present = [p for p, ok in bundle.parts.items() if ok]
    absent = [p for p, ok in m["parts"].items() if not ok]
    print(f"parts    {', '.join(present)}" + (f"  (not yet: {', '.join(absent)})" if absent else ""))
    damaged = dict(bundle.broken)
    if args.check:
        from core.bundle.check import check_parts

        damaged.update(check_parts(bundle))
    for part, reason in damaged.items():
        print(f"damaged  {part}: {reason}; rebuild it with `{bundle.repair_hint(part)}`")
    if args.check and not damaged:
        print("check    every listed part reads in full")
    _print_stale(bundle)
    return 3 if damaged else 0


def _print_stale(bundle: Any) -> None:
    """One line per derived part whose inputs changed since it was built, with the command that rebuilds it."""
    from core.bundle.provenance import stale_parts

    for stale in stale_parts(bundle):
        print(f"STALE    {stale.reason}; rebuild: {stale.command}")


def cmd_stage(args: argparse.Namespace) -> int:
    from core.pipeline.stages import run_stage

    settings: Any = None
    if args.command == "match":
        from core.matching.settings import MatchSettings

        settings = MatchSettings(
            top_k=args.top_k,
            min_corr=args.min_corr,
            method=args.method,
            memory_mb=args.memory_mb,
            nonconcept_file=args.nonconcept_file,
            require_shared_token=args.require_shared_token,
            require_significant=args.require_significant,
        )
    elif args.command == "similarity":
        from core.spaces.settings import SimilaritySettings

        settings = SimilaritySettings(n_null=args.n_null, seed=args.seed)
    stage = {"match": "matching"}.get(args.command, args.command)
    with TqdmProgress() as progress:
        bundle = run_stage(stage, args.bundle, settings, device=args.device, progress=progress)
    # a new assignment (or a rebuilt part) changes what the other derived parts were built from
    _print_stale(bundle)
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
        corpus=CorpusSpec.parse(
            args.corpus, text_column=args.text_column, bad_rows="skip" if args.skip_bad_rows else "refuse"
        ),
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
    from core.errors import UserError
    from core.explore.discover import DiscoverSettings
    from core.explore.prompts import load_sides, run_discovery

    if bool(args.text) == bool(args.prompts_file):
        raise UserError("Give exactly one of --text or --prompts-file.")
    # every input is checked before the models load
    bundle = open_bundle(args.bundle)
    settings = DiscoverSettings(score=args.score, return_top_x=args.top, min_coverage=args.min_coverage)
    prompts = _read_prompts(args.prompts_file) if args.prompts_file else []
    device = resolve_device(args.device)
    sides = load_sides(bundle, device)
    if args.text:
        result = run_discovery(bundle, sides, args.text, settings, args.gen_tokens, args.seed, device)
        if args.out:
            print(result.write(args.out))
        else:
            print(json.dumps(result.to_json_dict(), indent=2, default=str))
        return 0
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
    from core.harvest.corpus import read_text_file

    file = Path(path)
    if file.is_dir():
        raise CorpusError(f"Prompts file {file} is a folder, not a file; name the .jsonl file.")
    if not file.is_file():
        raise CorpusError(f"Prompts file {file} does not exist; check the path.")
    prompts = []
    for number, line in enumerate(read_text_file(file).splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise CorpusError(f'{file} line {number} is not JSON; write one {{"text": ...}} object per line.') from exc
        text = row.get("text") if isinstance(row, dict) else row if isinstance(row, str) else None
        if not isinstance(text, str) or not text.strip():
            raise CorpusError(f'{file} line {number} has no "text" string; write one {{"text": ...}} object per line.')
        prompts.append(text)
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
    parser = OneLineParser(prog="python -m core", description="Compare the features of two SAEs.")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch/numpy (default: all cores; 1 helps on a busy box)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build (or reuse) the embedded demo bundle and print its path")
    demo.add_argument("--device", default="auto")
    demo.add_argument("--rebuild", action="store_true", help="retrain the SAEs and rebuild the bundle")
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
    compare.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave out corpus rows whose text is not a string (null, number, list) instead of refusing; counted in the manifest",
    )
    compare.add_argument("--max-docs", type=positive_int, default=None)
    compare.add_argument("--max-tokens", type=positive_int, default=250_000)
    compare.add_argument("--max-len", type=positive_int, default=128)
    compare.add_argument("--batch-tokens", type=positive_int, default=8192)
    compare.add_argument("--device", default="auto")
    compare.add_argument(
        "--pooling",
        default="max",
        help="different tokenizers only: how token codes pool per aligned span (max, last, mean, sum, first)",
    )
    compare.add_argument("--out", required=True, help="bundle folder to write")
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a bundle this tool wrote at --out (never a folder holding anything else); the old one "
        "stays whole until the new one is finished",
    )
    compare.add_argument(
        "--stages", default="all", help="later stages to run: all (default), none, or a list like matching,similarity"
    )
    compare.add_argument("--n-null", type=non_negative_int, default=1000, help="null samples for the similarity stage")
    compare.set_defaults(func=cmd_compare)

    match = sub.add_parser("match", help="(re)compute matches.parquet and assignment.parquet of a bundle")
    match.add_argument("bundle")
    match.add_argument("--top-k", type=positive_int, default=10)
    match.add_argument("--min-corr", type=correlation, default=0.1)
    match.add_argument(
        "--method", default="greedy", help="greedy (default), mutual, many_to_1_ab, many_to_1_ba, hungarian or sparse"
    )
    match.add_argument("--memory-mb", type=positive_float, default=1024.0)
    match.add_argument(
        "--nonconcept-file", default=None, help="token list of the non-concept filter (default: the shipped list)"
    )
    match.add_argument("--require-shared-token", action="store_true", help="also drop pairs with no shared top token")
    match.add_argument(
        "--require-significant", action="store_true", help="also drop pairs whose q-value is above alpha"
    )
    match.add_argument("--device", default="auto")
    match.set_defaults(func=cmd_stage)

    similarity = sub.add_parser("similarity", help="(re)compute similarity.json (SVCCA, RSA, CKA, Procrustes + nulls)")
    similarity.add_argument("bundle")
    similarity.add_argument("--n-null", type=non_negative_int, default=1000)
    similarity.add_argument("--seed", type=non_negative_int, default=0)
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
    sweep.add_argument("--skip-bad-rows", action="store_true", help="leave out corpus rows whose text is not a string")
    sweep.add_argument("--max-tokens", type=positive_int, default=50_000)
    sweep.add_argument("--n-null", type=non_negative_int, default=1000)
    sweep.add_argument("--device", default="auto")
    sweep.add_argument("--out", required=True, help="folder for sweep.parquet and sweep.json")
    sweep.add_argument("--overwrite", action="store_true", help="replace a sweep folder this tool wrote at --out")
    sweep.add_argument("--bundle", default=None, help="also attach the sweep to this bundle (the app shows it)")
    sweep.set_defaults(func=cmd_sweep)

    discover = sub.add_parser("discover", help="rank both sides' features on a text or a file of prompts")
    discover.add_argument("--bundle", required=True)
    discover.add_argument("--text", default=None)
    discover.add_argument("--prompts-file", default=None, help='JSONL, one {"text": ...} per line (batch mode)')
    discover.add_argument("--out", default=None, help="results.json or results.csv (batch: a .jsonl file)")
    discover.add_argument("--score", default="mean_x_coverage", help="mean, max, mean_x_coverage or selectivity")
    discover.add_argument("--top", type=positive_int, default=20)
    discover.add_argument("--min-coverage", type=fraction, default=0.0)
    discover.add_argument(
        "--gen-tokens", type=non_negative_int, default=0, help="continue the prompt first (causal LMs)"
    )
    discover.add_argument("--seed", type=non_negative_int, default=0)
    discover.add_argument("--device", default="auto")
    discover.set_defaults(func=cmd_discover)

    add_app_command(sub)

    info = sub.add_parser("info", help="summarise a bundle")
    info.add_argument("bundle")
    info.add_argument("--json", action="store_true", help="print the whole manifest")
    info.add_argument(
        "--check", action="store_true", help="read every listed part in full and report those that fail (exit 3)"
    )
    info.set_defaults(func=cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI inside its error boundary; returns the exit status (2 user error, 1 bug, 130 Ctrl-C)."""
    return run_cli(_main, argv)


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    func: Callable[[argparse.Namespace], int] = args.func
    if args.threads:
        _set_threads(args.threads)
    if args.command not in ("info", "app"):
        _quiet_libraries()
    return func(args)


if __name__ == "__main__":
    sys.exit(main())
