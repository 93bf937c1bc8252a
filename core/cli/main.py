"""Command line: build and inspect comparison bundles headless.

    python -m core demo                      build (or reuse) the embedded demo bundle
    python -m core demo --pair family        the cross-family demo (MiniLM vs SmolLM2, aligned spans)
    python -m core compare --sae-a ... --model-a ... --sae-b ... --model-b ... --out DIR
    python -m core match|similarity|dashboards|umap BUNDLE   (re)run one stage with new settings
    python -m core match BUNDLE --preset paper|featurebridge  the published pipeline, or ours (default)
    python -m core sweep --model-a M --saes-a S1,S2 --model-b M --saes-b T1,T2 --out DIR
    python -m core discover --bundle B --text "..." [--score_mode M] [--saes S1,S2 --merge-across-layers] [--out F]
    python -m core explain BUNDLE a12 b40    every piece of evidence on one pair
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
    with TqdmProgress() as progress:
        path = build_comparison(
            spec, args.out, overwrite=args.overwrite, progress=progress, stages=stages, stage_settings=stage_settings
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


def cmd_explain(args: argparse.Namespace) -> int:
    from core.bundle.reader import open_bundle
    from core.matching.explain import explain_pair, parse_pair

    feature_a, feature_b = parse_pair(args.first, args.second)
    evidence = explain_pair(open_bundle(args.bundle), feature_a, feature_b)
    print(json.dumps(evidence.to_dict(), indent=2) if args.json else evidence.to_text())
    return 0


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
        settings = match_settings_from_args(args)
    elif args.command == "similarity":
        from core.spaces.settings import SimilaritySettings

        settings = SimilaritySettings(n_null=args.n_null, seed=args.seed)
    stage = {"match": "matching"}.get(args.command, args.command)
    with TqdmProgress() as progress:
        bundle = run_stage(stage, args.bundle, settings, device=args.device, progress=progress)
    if args.command == "match":
        record = bundle.manifest["matching"]
        kept = record["summary"]["methods"][settings.method]["n_kept"]
        print(f"preset {record['preset']}: {kept:,} pairs kept ({settings.method})", file=sys.stderr)
    print(bundle.path)
    return 0


# `python -m core match` flags -> the MatchSettings field each sets
MATCH_FLAGS = {
    "top_k": "--top-k",
    "min_corr": "--min-corr",
    "method": "--method",
    "memory_mb": "--memory-mb",
    "alpha": "--alpha",
    "require_significant": "--significance",
    "require_shared_token": "--shared-token",
    "label_source": "--labels",
    "label_form": "--label-form",
    "fold_case": "--fold-case",
}


def match_settings_from_args(args: argparse.Namespace) -> Any:
    """The matching settings of ``python -m core match``: a preset, then the flags given on top of it.

    Without ``--preset`` the flags change the featurebridge defaults (the result is recorded as the
    preset it still equals, else "custom"); with ``--preset NAME`` a flag that contradicts a setting the
    preset fixes is refused, naming both.
    """
    from core.errors import SpecError
    from core.matching.settings import DEFAULT_PRESET, PRESET_NAMES, PRESETS, MatchSettings

    given = {field: getattr(args, field) for field in MATCH_FLAGS if getattr(args, field, None) is not None}
    if args.preset is None:
        return MatchSettings.from_preset("custom", **{**PRESETS[DEFAULT_PRESET], **given})
    if args.preset not in PRESET_NAMES:
        raise SpecError(f"Unknown preset {args.preset!r}; choose one of {', '.join(PRESET_NAMES)}.")
    fixed = PRESETS.get(args.preset, {})
    for field, value in given.items():
        if field in fixed and value != fixed[field]:
            shown = str(value).lower() if isinstance(value, bool) else value
            raise SpecError(
                f"{MATCH_FLAGS[field]} {shown} contradicts --preset {args.preset}, which fixes {field}={fixed[field]!r}; "
                f"drop {MATCH_FLAGS[field]}, or use --preset custom to set every option yourself."
            )
    return MatchSettings.from_preset(args.preset, **given)


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


def _ids(text: str | None) -> tuple[int, ...]:
    from core.errors import SpecError

    if not text:
        return ()
    try:
        return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
    except ValueError as exc:
        raise SpecError(f"Feature ids are whole numbers separated by commas, e.g. 3,17,42; got {text!r}.") from exc


def discover_settings_from_args(args: argparse.Namespace) -> Any:
    """The DiscoverSettings of ``python -m core discover`` (validated here, before anything loads)."""
    from core.explore.discover import DiscoverSettings

    return DiscoverSettings(
        score_mode=args.score_mode,
        return_top_x=args.return_top_x,
        min_coverage_pct=args.min_coverage_pct,
        restrict_features=_ids(args.restrict_features),
        restrict_features_a=_ids(args.restrict_features_a),
        restrict_features_b=_ids(args.restrict_features_b),
        topk_tokens_per_seq=args.topk_tokens_per_seq,
        token_filter=args.token_filter,
        attach_examples=args.attach_examples,
        merge_across_layers=args.merge_across_layers,
        label_catalog=args.label_catalog,
    )


def cmd_discover(args: argparse.Namespace) -> int:
    from pathlib import Path

    from core.bundle.reader import open_bundle
    from core.dashboards.read import has_dashboards
    from core.errors import BundleError, SpecError
    from core.explore.discover import check_output_path, check_restrictions
    from core.harvest.specs import SAESpec

    # every option is checked before a model loads (that takes tens of seconds)
    if bool(args.text) == bool(args.prompts_file):
        raise SpecError("Give exactly one of --text or --prompts-file.")
    settings = discover_settings_from_args(args)
    if args.out:
        check_output_path(args.out, batch=bool(args.prompts_file))
    prompts = [args.text] if args.text else _read_prompts(args.prompts_file)
    bundle = open_bundle(args.bundle)
    if not has_dashboards(bundle):
        raise BundleError(
            f"Bundle {bundle.path} has no dashboards, which discovery needs for its thresholds; "
            "add them with `python -m core dashboards BUNDLE`."
        )
    check_restrictions(bundle, settings)
    if args.gen_tokens < 0:
        raise SpecError(f"--gen-tokens must be 0 or more, got {args.gen_tokens}.")
    if args.gen_tokens and not bundle.side("a").get("model", {}).get("is_causal", False):
        raise SpecError("Side A's model is an encoder and cannot continue a prompt; leave out --gen-tokens.")
    if args.saes_side not in ("a", "b"):
        raise SpecError(f"--saes-side must be a or b, got {args.saes_side!r}.")
    layer_specs = [SAESpec.parse(t) for t in _split(args.saes or "")]
    layer_hooks = [h or None for h in _split(args.hooks or "")]
    if layer_hooks and len(layer_hooks) != len(layer_specs):
        raise SpecError(f"Give one hook per SAE in --saes ({len(layer_specs)}), or none; got {len(layer_hooks)}.")
    for spec in layer_specs:
        if spec.kind in ("local", "sparsify") and not Path(spec.source).exists():
            raise SpecError(f"SAE folder {spec.source} does not exist; check the path in --saes.")
    if settings.merge_across_layers and not layer_specs:
        raise SpecError("--merge-across-layers merges several SAEs of one model: name the others with --saes.")

    from core.device import resolve_device
    from core.explore.prompts import load_layer_saes, load_sides, run_discovery, sample_layer_stats
    from core.harvest.specs import HarvestSettings

    device = resolve_device(args.device)
    sides = load_sides(bundle, device)
    layer_saes = (
        load_layer_saes(bundle, sides, args.saes_side, layer_specs, layer_hooks, device) if layer_specs else None
    )
    stats = None
    if layer_saes:
        harvest = HarvestSettings(**bundle.manifest["settings"]["harvest"])
        stats = sample_layer_stats(bundle, sides[args.saes_side].model, layer_saes, harvest, settings, device=device)
    results = [
        run_discovery(
            bundle, sides, prompt, settings, args.gen_tokens, args.seed, device, args.saes_side, layer_saes, stats
        )
        for prompt in prompts
    ]
    if args.text:
        if args.out:
            print(results[0].write(args.out))
        else:
            print(json.dumps(results[0].to_json_dict(), indent=2, default=str))
        return 0
    text = "\n".join(json.dumps(r.to_json_dict(), default=str) for r in results) + "\n"
    if args.out:
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
    compare.set_defaults(func=cmd_compare)

    match = sub.add_parser("match", help="(re)compute matches.parquet and assignment.parquet of a bundle")
    match.add_argument("bundle")
    match.add_argument(
        "--preset",
        default=None,
        help="featurebridge (the default: significance required), paper (the published 1-1 pipeline, step by "
        "step) or custom; a flag below that contradicts the named preset is refused",
    )
    match.add_argument("--top-k", type=int, default=None, help="partners listed per feature (default 10)")
    match.add_argument("--min-corr", type=float, default=None, help="correlation a kept pair exceeds (default 0.1)")
    match.add_argument(
        "--method", default=None, help="sparse (default), greedy, mutual, many_to_1_ab, many_to_1_ba or hungarian"
    )
    match.add_argument("--memory-mb", type=float, default=None, help="bound on the dense block (default 1024)")
    match.add_argument("--alpha", type=float, default=None, help="q-value a significant pair reaches (default 0.05)")
    match.add_argument(
        "--significance",
        dest="require_significant",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop pairs with q above alpha (default on; the paper preset: off)",
    )
    match.add_argument(
        "--shared-token",
        dest="require_shared_token",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="drop pairs whose label lists share no token (default off; the paper preset: on)",
    )
    match.add_argument(
        "--labels",
        dest="label_source",
        default=None,
        help="top_tokens (distinct surface strings, the default) or top_activations (top-5 activations, repeats)",
    )
    match.add_argument(
        "--label-form", default=None, help="surface (the default) or vocab (the tokenizer's own form, the paper)"
    )
    match.add_argument(
        "--fold-case",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="compare label tokens case-folded (default on)",
    )
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
    discover.add_argument(
        "--score_mode",
        "--score-mode",
        "--score",
        dest="score_mode",
        default="mean_x_coverage",
        help="mean, max, mean_x_coverage (default) or selectivity",
    )
    discover.add_argument(
        "--return_top_x", "--return-top-x", "--top", dest="return_top_x", type=int, default=20, help="features per list"
    )
    discover.add_argument(
        "--min_coverage_pct",
        "--min-coverage-pct",
        dest="min_coverage_pct",
        type=float,
        default=0.5,
        help="percent of analysed tokens a feature must exceed its threshold on (default 0.5)",
    )
    discover.add_argument(
        "--restrict_features", "--restrict-features", dest="restrict_features", default=None, help="ids, e.g. 3,17"
    )
    discover.add_argument("--restrict-features-a", dest="restrict_features_a", default=None, help="side A only")
    discover.add_argument("--restrict-features-b", dest="restrict_features_b", default=None, help="side B only")
    discover.add_argument(
        "--topk_tokens_per_seq",
        "--topk-tokens-per-seq",
        dest="topk_tokens_per_seq",
        type=int,
        default=None,
        help="analyse only the k most informative tokens (entropy for causal LMs, code norm otherwise)",
    )
    discover.add_argument(
        "--token_filter", "--token-filter", dest="token_filter", default="auto", help="auto, entropy or norm"
    )
    discover.add_argument(
        "--attach_examples",
        "--attach-examples",
        dest="attach_examples",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="top spans in the text and corpus examples per feature (default on)",
    )
    discover.add_argument(
        "--merge_across_layers",
        "--merge-across-layers",
        dest="merge_across_layers",
        action="store_true",
        help="rank the --saes layers and the bundle's SAE of that side together",
    )
    discover.add_argument("--label_catalog", "--label-catalog", dest="label_catalog", default=None)
    discover.add_argument("--saes", default=None, help="more SAEs of one side's model (layers), comma-separated")
    discover.add_argument("--saes-side", default="a", help="the side whose model --saes read (default a)")
    discover.add_argument("--hooks", default=None, help="a hook per --saes SAE (default: each SAE's own)")
    discover.add_argument("--gen-tokens", type=int, default=0, help="continue the prompt first (causal LMs)")
    discover.add_argument("--seed", type=int, default=0)
    discover.add_argument("--device", default="auto")
    discover.set_defaults(func=cmd_discover)

    add_app_command(sub)

    explain = sub.add_parser(
        "explain", help="every piece of evidence on one pair: r, co-firing, significance, top tokens, score"
    )
    explain.add_argument("bundle")
    explain.add_argument("first", help="a feature, e.g. a12 (or a bare id: the first is A)")
    explain.add_argument("second", help="the other side's feature, e.g. b40")
    explain.add_argument("--json", action="store_true", help="print the evidence as JSON")
    explain.set_defaults(func=cmd_explain)

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
