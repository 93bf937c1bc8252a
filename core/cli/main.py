"""Command line: build and inspect comparison bundles headless.

    python -m core demo                      build (or reuse) the embedded demo bundle
    python -m core demo --pair family        the cross-family demo (MiniLM vs SmolLM2, aligned spans)
    python -m core demo --pair crosscoder    a BatchTopK crosscoder trained here on the two MiniLMs
    python -m core compare --sae-a ... --model-a ... --sae-b ... --model-b ... --out DIR
    python -m core compare --crosscoder PATH --model-a ... --model-b ... [--hook-a H --hook-b H] --out DIR
    python -m core match|similarity|dashboards|umap BUNDLE   (re)run one stage with new settings
    python -m core match BUNDLE --preset paper|featurebridge  the published pipeline, or ours (default)
    python -m core analyses BUNDLE           (re)classify a crosscoder bundle's latents
    python -m core causal BUNDLE             the causal check (shared latents, or an SAE bundle's kept pairs)
    python -m core sweep --model-a M --saes-a S1,S2 --model-b M --saes-b T1,T2 --out DIR
    python -m core discover --bundle B --text "..." [--score_mode M] [--saes S1,S2 --merge-across-layers] [--out F]
    python -m core explain BUNDLE a12 b40    every piece of evidence on one pair
    python -m core submit --address http://HEAD:8265 -- <compare args>   a cluster job, followed
    python -m core info BUNDLE               what a bundle holds

A thin layer over the Python API (``core.compare``, ``core.run_stage``, ...): each command
parses its flags into settings objects (every default read from its settings dataclass),
calls the API, and prints. Every failure ends as one line on stderr (core.cli.boundary): a
user error or a known failure class exits 2, a bug exits 1 with its traceback in a log file,
never on the terminal.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

from core.cli.app import add_app_command
from core.cli.boundary import (
    OneLineParser,
    correlation,
    non_negative_int,
    positive_float,
    positive_int,
    run_cli,
)

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


# ---------------------------------------------------------------- settings from arguments
# Every settings flag is declared with _setting: its default is read from the settings
# dataclass (written there once), and the subcommand records which (group, field) the flag
# sets, so settings_from_args builds each group's object from whatever flags a subcommand
# declares. A new flag for an existing setting is one _setting line; a new group is one
# builder below.

SETTINGS_FLAGS = "settings_flags"


def _setting(
    parser: argparse.ArgumentParser,
    flag: str,
    group: str,
    cls: type,
    name: str,
    default: Any = dataclasses.MISSING,
    **kwargs: Any,
) -> None:
    from core.pipeline.config import field_default

    value = field_default(cls, name) if default is dataclasses.MISSING else default
    action = parser.add_argument(flag, default=value, **kwargs)
    known = parser.get_default(SETTINGS_FLAGS) or ()
    parser.set_defaults(**{SETTINGS_FLAGS: (*known, (group, name, action.dest))})


def settings_from_args(args: argparse.Namespace, group: str, cls: type, base: Any = None) -> Any:
    """The settings object of one group from the parsed flags (fields without a flag keep ``base``'s or the defaults).

    Args:
        args: the parsed arguments.
        group: the flag group (``harvest``, ``matching``, ``similarity``, ``corpus``, ``discover``).
        cls: its settings dataclass.
        base: the object the flags change (``None``: the class defaults).

    Returns:
        The validated settings.
    """
    values = _group_values(args, group)
    return dataclasses.replace(base, **values) if base is not None else cls(**values)


def _group_values(args: argparse.Namespace, group: str) -> dict[str, Any]:
    return {name: getattr(args, dest) for g, name, dest in getattr(args, SETTINGS_FLAGS, ()) if g == group}


def harvest_settings(args: argparse.Namespace) -> Any:
    """:class:`~core.harvest.specs.HarvestSettings` from the harvest flags."""
    from core.harvest.specs import HarvestSettings

    return settings_from_args(args, "harvest", HarvestSettings)


def match_settings(args: argparse.Namespace) -> Any:
    """:class:`~core.matching.settings.MatchSettings` from the matching flags (see :func:`match_settings_from_args`)."""
    return match_settings_from_args(args)


def similarity_settings(args: argparse.Namespace, base: Any = None) -> Any:
    """:class:`~core.spaces.settings.SimilaritySettings` from the similarity flags."""
    from core.spaces.settings import SimilaritySettings

    return settings_from_args(args, "similarity", SimilaritySettings, base)


def analysis_settings(args: argparse.Namespace) -> Any:
    """:class:`~core.crosscoder.settings.AnalysisSettings` from ``analyses``' flags."""
    from core.crosscoder.settings import AnalysisSettings

    return settings_from_args(args, "analyses", AnalysisSettings)


def causal_settings(args: argparse.Namespace) -> Any:
    """:class:`~core.crosscoder.settings.CausalSettings` from ``causal``'s flags."""
    from core.crosscoder.settings import CausalSettings

    return settings_from_args(args, "causal", CausalSettings)


def comparison_config(args: argparse.Namespace) -> Any:
    """The run's :class:`~core.pipeline.config.ComparisonConfig` from ``compare``'s flags."""
    from core.dashboards.settings import DashboardSettings
    from core.embedding.settings import UMAPSettings
    from core.pipeline.config import ComparisonConfig

    return ComparisonConfig(
        harvest=harvest_settings(args),
        matching=match_settings(args),
        similarity=similarity_settings(args),
        dashboards=settings_from_args(args, "dashboards", DashboardSettings),
        umap=settings_from_args(args, "umap", UMAPSettings),
        stages=args.stages,
    )


def corpus_spec(args: argparse.Namespace) -> Any:
    """The :class:`~core.harvest.specs.CorpusSpec` from ``--corpus``, the corpus flags and ``--skip-bad-rows``."""
    from core.harvest.specs import CorpusSpec

    values = _group_values(args, "corpus")
    if getattr(args, "skip_bad_rows", False):
        values["bad_rows"] = "skip"
    return CorpusSpec.parse(args.corpus, **values)


def _demo_build(args: argparse.Namespace, progress: Any) -> Any:
    if args.pair == "family":
        from core.demo.family import build_cross_demo

        return build_cross_demo(device=args.device, progress=progress, rebuild=args.rebuild, retrain=args.retrain)
    if args.pair == "crosscoder":
        from core.demo.crosscoder import build_crosscoder_demo

        return build_crosscoder_demo(device=args.device, progress=progress, rebuild=args.rebuild or args.retrain)
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
    from core.errors import UserError
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
    from core.demo.crosscoder import crosscoder_demo_bundle_path
    from core.demo.settings import cross_demo_bundle_path, demo_bundle_path

    bundle = {"family": cross_demo_bundle_path, "crosscoder": crosscoder_demo_bundle_path}.get(
        args.pair, demo_bundle_path
    )()
    name = {"family": "cross-family demo", "spine": "demo", "crosscoder": "crosscoder demo"}[args.pair]
    name += " + layer sweep" if args.sweep else ""
    print(_run_with_status(args.status, name, bundle, lambda progress: _demo_build(args, progress)))
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from core.errors import SpecError
    from core.harvest.specs import ModelSpec, SAESpec
    from core.pipeline.api import compare

    if args.crosscoder:
        if args.sae_a or args.sae_b:
            raise SpecError(
                "Give either --crosscoder or --sae-a and --sae-b, not both: a crosscoder replaces the two SAEs."
            )
        return _compare_crosscoder(args)
    if not (args.sae_a and args.sae_b):
        raise SpecError("Give --sae-a and --sae-b (two SAEs), or --crosscoder PATH (one crosscoder over both models).")
    config = comparison_config(args)
    sides = {
        name: {
            "sae": SAESpec.parse(getattr(args, f"sae_{name}")),
            "model": ModelSpec.parse(getattr(args, f"model_{name}"), getattr(args, f"tokenizer_{name}")),
            "hook": getattr(args, f"hook_{name}"),
            "label": getattr(args, f"label_{name}") or "",
        }
        for name in ("a", "b")
    }
    path = _run_with_status(
        args.status,
        f"comparison {args.out}",
        args.out,
        lambda progress: (
            compare(
                sides["a"]["sae"],
                sides["a"]["model"],
                sides["b"]["sae"],
                sides["b"]["model"],
                corpus_spec(args),
                out=args.out,
                settings=config,
                hook_a=sides["a"]["hook"],
                hook_b=sides["b"]["hook"],
                label_a=sides["a"]["label"],
                label_b=sides["b"]["label"],
                overwrite=args.overwrite,
                progress=progress,
                engine=_engine_settings(args),
                resume=args.resume,
            ).path
        ),
    )
    print(path)
    return 0


def _engine_settings(args: argparse.Namespace) -> Any:
    from core.engine.settings import EngineSettings

    return EngineSettings(
        name=args.engine,
        address=args.address,
        workers=getattr(args, "workers", None),
        gpus_per_worker=args.gpus_per_worker,
        cpus_per_worker=args.cpus_per_worker,
        row_blocks=args.row_blocks,
    )


def cmd_submit(args: argparse.Namespace) -> int:
    import time

    from core.engine.jobs import job_state, submit_compare
    from core.errors import EngineError

    compare_args = [a for a in args.compare_args if a != "--"]
    job_id = submit_compare(args.address, compare_args, working_dir=args.working_dir, python=args.python)
    print(f"submitted job {job_id} to {args.address}", file=sys.stderr)
    if args.no_follow:
        print(job_id)
        return 0
    with TqdmProgress() as progress:
        while True:
            state = job_state(args.address, job_id)
            if state.stage:
                progress(state.stage, state.done, state.total)
            if state.finished:
                break
            time.sleep(args.poll_s)
    if state.status != "SUCCEEDED":
        raise EngineError(f"Job {job_id} on {args.address} ended {state.status.lower()}: {state.last_line}")
    print(state.last_line)
    return 0


def cmd_explain(args: argparse.Namespace) -> int:
    from core.bundle.reader import open_bundle
    from core.matching.explain import explain_pair, parse_pair

    feature_a, feature_b = parse_pair(args.first, args.second)
    evidence = explain_pair(open_bundle(args.bundle), feature_a, feature_b)
    print(json.dumps(evidence.to_dict(), indent=2) if args.json else evidence.to_text())
    return 0


def _compare_crosscoder(args: argparse.Namespace) -> int:
    from core.crosscoder.settings import CausalSettings, CrosscoderSpec
    from core.errors import SpecError
    from core.harvest.specs import ModelSpec
    from core.pipeline.crosscoder import CrosscoderComparisonSpec, build_crosscoder_comparison

    if args.engine != "local":
        raise SpecError("A crosscoder comparison runs on the local engine; leave out --engine ray.")
    spec = CrosscoderComparisonSpec(
        crosscoder=CrosscoderSpec(args.crosscoder, args.crosscoder_format, args.scale_a, args.scale_b),
        model_a=ModelSpec.parse(args.model_a, args.tokenizer_a),
        model_b=ModelSpec.parse(args.model_b, args.tokenizer_b),
        corpus=corpus_spec(args),
        hook_a=args.hook_a,
        hook_b=args.hook_b,
        label_a=args.label_a or "",
        label_b=args.label_b or "",
        harvest=harvest_settings(args),
    )
    stages = parse_crosscoder_stages(args.stages)
    stage_settings: dict[str, Any] = {}
    if "similarity" in stages:
        stage_settings["similarity"] = similarity_settings(args)
    if "causal" in stages:
        stage_settings["causal"] = CausalSettings(device=args.device)
    path = _run_with_status(
        args.status,
        f"comparison {args.out}",
        args.out,
        lambda progress: build_crosscoder_comparison(
            spec, args.out, overwrite=args.overwrite, progress=progress, stages=stages, stage_settings=stage_settings
        ),
    )
    print(path)
    return 0


def parse_crosscoder_stages(stages: str | Sequence[str]) -> tuple[str, ...]:
    """A crosscoder comparison's stages from ``--stages`` ("all" and the SAE default mean ``CROSSCODER_STAGES``).

    Args:
        stages: the flag's text, or the default tuple.

    Returns:
        The stages, in run order.
    """
    from core.errors import SpecError
    from core.pipeline.config import parse_stages
    from core.pipeline.stages import CROSSCODER_STAGES, STAGES

    if isinstance(stages, str) and stages.strip() == "all" or tuple(stages) == STAGES:
        return CROSSCODER_STAGES
    names = parse_stages(stages)
    allowed = (*CROSSCODER_STAGES, "causal")
    unknown = [n for n in names if n not in allowed]
    if unknown:
        raise SpecError(
            f"Unknown stage(s) {', '.join(unknown)} for a crosscoder; choose from {', '.join(allowed)}, all or none."
        )
    return names


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
    if "crosscoder" in m:
        cc = m["crosscoder"]
        ck = cc.get("checkpoint", {})
        ev = cc.get("explained_variance", {})
        print(
            f"crosscoder {ck.get('path')} ({ck.get('format')}, {ck.get('architecture')}, {ck.get('n_latents', 0):,} latents): "
            f"EV A {ev.get('a', float('nan')):.3f}, EV B {ev.get('b', float('nan')):.3f}, L0 {cc.get('l0', float('nan')):.1f}, "
            f"dead {cc.get('dead_fraction', float('nan')):.1%}"
        )
        if ck.get("threshold_uncalibrated"):
            print(
                "         warning: the BatchTopK threshold is -1 (never calibrated): every positive pre-activation fires"
            )
        if ck.get("unknown_keys"):
            print(f"         unknown checkpoint keys (ignored): {', '.join(ck['unknown_keys'])}")
        if "analyses" in m:
            print(f"taxonomy {json.dumps(m['analyses']['taxonomy'])}")
    if "causal" in m:
        c = m["causal"]
        median = c.get("median_equivalence")
        print(
            f"causal   {c.get('n_ok', 0)}/{c.get('n_checked', 0)} checked with an equivalence, median "
            f"{'n/a' if median is None else f'{median:.3f}'} over {c.get('n_probes', 0)} probes ({c.get('measure')})"
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


# command -> stage name and the builder of its settings from the flags (None: defaults)
STAGE_COMMANDS: dict[str, tuple[str, Callable[[argparse.Namespace], Any] | None]] = {
    "match": ("matching", match_settings),
    "similarity": ("similarity", similarity_settings),
    "dashboards": ("dashboards", None),
    "umap": ("umap", None),
    "analyses": ("analyses", analysis_settings),
    "causal": ("causal", causal_settings),
}


def _print_stale(bundle: Any) -> None:
    """One line per derived part whose inputs changed since it was built, with the command that rebuilds it."""
    from core.bundle.provenance import stale_parts

    for stale in stale_parts(bundle):
        print(f"STALE    {stale.reason}; rebuild: {stale.command}")


def cmd_stage(args: argparse.Namespace) -> int:
    from core.pipeline.stages import run_stage

    stage, build = STAGE_COMMANDS[args.command]
    settings = build(args) if build is not None else None
    if stage == "matching":
        from core.engine.base import open_engine

        with open_engine(_engine_settings(args)) as engine, TqdmProgress() as progress:
            bundle = run_stage(
                stage, args.bundle, settings, device=args.device, progress=progress, correlator=engine.correlator()
            )
        record = bundle.manifest["matching"]
        method = record["settings"]["method"]
        kept = record["summary"]["methods"][method]["n_kept"]
        print(f"preset {record['preset']}: {kept:,} pairs kept ({method})", file=sys.stderr)
    else:
        with TqdmProgress() as progress:
            bundle = run_stage(stage, args.bundle, settings, device=args.device, progress=progress)
    # a new assignment (or a rebuilt part) changes what the other derived parts were built from
    _print_stale(bundle)
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
    "nonconcept_file": "--nonconcept-file",
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
    from core.harvest.specs import ModelSpec, SAESpec
    from core.pipeline.config import SWEEP_METRICS
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
        corpus=corpus_spec(args),
        harvest=harvest_settings(args),
        similarity=similarity_settings(args, SimilaritySettings(metrics=SWEEP_METRICS)),
    )
    with TqdmProgress() as progress:
        table = build_sweep(spec, args.out, overwrite=args.overwrite, device=spec.harvest.device, progress=progress)
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
        f"--sae-{name}",
        default=None,
        help=f"SAE {up}: folder, local:DIR, sparsify:DIR or release:REL/ID (not with --crosscoder)",
    )
    parser.add_argument(
        f"--model-{name}", required=True, help=f"model {up}: hub id or folder, gguf:FILE, onnx-bert:FILE, ..."
    )
    parser.add_argument(
        f"--hook-{name}", default=None, help="hook name (default: the SAE's own), e.g. blocks.3.hook_resid_post"
    )
    parser.add_argument(f"--tokenizer-{name}", default=None, help="tokenizer source for models that ship none (ONNX)")
    parser.add_argument(f"--label-{name}", default=None, help="display name")


def _add_corpus_args(parser: argparse.ArgumentParser, max_docs: bool = True) -> None:
    from core.harvest.specs import DEFAULT_CORPUS, CorpusSpec

    parser.add_argument(
        "--corpus", default=DEFAULT_CORPUS, help="fortunes, kjv, file:PATH (.txt/.jsonl/.parquet) or hf:NAME"
    )
    _setting(parser, "--text-column", "corpus", CorpusSpec, "text_column")
    parser.add_argument(
        "--skip-bad-rows",
        action="store_true",
        help="leave out corpus rows whose text is not a string (null, number, list) instead of refusing; counted in the manifest",
    )
    if max_docs:
        _setting(parser, "--max-docs", "corpus", CorpusSpec, "max_docs", type=positive_int)


def _add_device_arg(parser: argparse.ArgumentParser, group: str | None = None) -> None:
    from core.harvest.specs import HarvestSettings

    if group:
        _setting(parser, "--device", group, HarvestSettings, "device", help="auto (default), cpu or cuda")
    else:
        from core.pipeline.config import field_default

        parser.add_argument("--device", default=field_default(HarvestSettings, "device"), help="auto, cpu or cuda")


def _add_match_args(parser: argparse.ArgumentParser) -> None:
    from core.matching.settings import ASSIGN_METHODS, DEFAULT_PRESET, LABEL_FORMS, LABEL_SOURCES, MatchSettings
    from core.pipeline.config import field_default

    # every flag defaults to None: a preset fills what is not given (see match_settings_from_args)
    def default(name: str) -> str:
        value = field_default(MatchSettings, name)
        return str(value).lower() if isinstance(value, bool) else str(value)

    parser.add_argument(
        "--preset",
        default=None,
        help=f"{DEFAULT_PRESET} (the default: significance required), paper (the published 1-1 pipeline, step "
        "by step) or custom; a flag below that contradicts the named preset is refused",
    )
    parser.add_argument(
        "--top-k", type=positive_int, default=None, help=f"partners listed per feature (default {default('top_k')})"
    )
    parser.add_argument(
        "--min-corr",
        type=correlation,
        default=None,
        help=f"correlation a kept pair exceeds (default {default('min_corr')})",
    )
    parser.add_argument(
        "--method",
        default=None,
        help=f"pairing written to assignment.parquet: {', '.join(ASSIGN_METHODS)} (default {default('method')})",
    )
    parser.add_argument(
        "--memory-mb",
        type=positive_float,
        default=None,
        help=f"bound on the dense block (default {default('memory_mb')})",
    )
    parser.add_argument(
        "--alpha", type=float, default=None, help=f"q-value a significant pair reaches (default {default('alpha')})"
    )
    parser.add_argument(
        "--significance",
        dest="require_significant",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"drop pairs with q above alpha (default {default('require_significant')}; the paper preset: off)",
    )
    parser.add_argument(
        "--shared-token",
        dest="require_shared_token",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"drop pairs whose label lists share no token (default {default('require_shared_token')}; "
        "the paper preset: on)",
    )
    parser.add_argument(
        "--labels",
        dest="label_source",
        default=None,
        help=f"{' or '.join(LABEL_SOURCES)} (default {default('label_source')}; top_activations: the top-5 "
        "activations, repeats kept)",
    )
    parser.add_argument(
        "--label-form",
        default=None,
        help=f"{' or '.join(LABEL_FORMS)} (default {default('label_form')}; vocab: the tokenizer's own form, the paper)",
    )
    parser.add_argument(
        "--fold-case",
        action=argparse.BooleanOptionalAction,
        default=None,
        help=f"compare label tokens case-folded (default {default('fold_case')})",
    )
    parser.add_argument(
        "--nonconcept-file",
        default=None,
        help="token list of the non-concept filter, one token per line (default: the preset's shipped list)",
    )


def _add_similarity_args(parser: argparse.ArgumentParser, seed: bool = True) -> None:
    from core.spaces.settings import SimilaritySettings

    _setting(
        parser,
        "--n-null",
        "similarity",
        SimilaritySettings,
        "n_null",
        type=non_negative_int,
        help="null samples for the similarity stage (default %(default)s)",
    )
    if seed:
        _setting(parser, "--seed", "similarity", SimilaritySettings, "seed", type=non_negative_int)


def _add_engine_args(parser: argparse.ArgumentParser, harvest: bool) -> None:
    group = parser.add_argument_group("engine (docs/scaleout.md)")
    group.add_argument(
        "--engine",
        choices=("local", "ray"),
        default="local",
        help="local (default: this process) or ray (needs the ray extra)",
    )
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster: auto (the one ray start began here), host:port; default: a private one",
    )
    if harvest:
        group.add_argument(
            "--workers", type=positive_int, default=None, help="harvest actors (default: as many as the cluster fits)"
        )
    group.add_argument(
        "--gpus-per-worker",
        type=float,
        default=None,
        help="GPUs per worker and reduce task (default: 1 if the cluster has GPUs)",
    )
    group.add_argument(
        "--cpus-per-worker", type=float, default=None, help="CPUs per worker and reduce task (default: 1)"
    )
    group.add_argument(
        "--row-blocks",
        type=positive_int,
        default=None,
        help="row blocks of the correlation reduce (default: one per worker slot)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m core`` argument parser (every settings flag's default comes from its settings dataclass)."""
    from core.crosscoder.settings import AnalysisSettings, CausalSettings
    from core.explore.discover import DiscoverSettings
    from core.harvest.specs import POOLINGS, HarvestSettings
    from core.pipeline.config import SWEEP_MAX_TOKENS, ComparisonConfig, field_default

    parser = OneLineParser(prog="python -m core", description="Compare the features of two SAEs.")
    parser.add_argument(
        "--threads",
        type=positive_int,
        default=None,
        help="CPU threads for torch/numpy (default: all cores; 1 helps on a busy box)",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    demo = sub.add_parser("demo", help="build (or reuse) the embedded demo bundle and print its path")
    _add_device_arg(demo)
    demo.add_argument("--rebuild", action="store_true", help="rebuild the bundle even when one is cached")
    demo.add_argument(
        "--retrain",
        action="store_true",
        help="retrain the demo SAEs by the recipe, write them to assets/demo_saes/ (the shipped copies), rebuild",
    )
    demo.add_argument("--status", default=None, help="also record progress and the outcome in this JSON file")
    demo.add_argument(
        "--pair",
        choices=("spine", "family", "crosscoder"),
        default="spine",
        help="spine: MiniLM-L6 vs MiniLM-L3 (default); family: MiniLM-L6 vs SmolLM2-135M (different tokenizers); "
        "crosscoder: one BatchTopK crosscoder over the two MiniLMs",
    )
    demo.add_argument("--sweep", action="store_true", help="also train per-layer SAEs and attach a 3 x 3 layer sweep")
    demo.set_defaults(func=cmd_demo)

    compare = sub.add_parser("compare", help="harvest two SAEs (or one crosscoder) on the same text into a bundle")
    _add_side_args(compare, "a")
    _add_side_args(compare, "b")
    compare.add_argument(
        "--crosscoder",
        default=None,
        help="a crosscoder checkpoint (.safetensors/.pt, dictionary_learning or ckkissane layout) or its folder, "
        "instead of two SAEs; index 0 reads --model-a, index 1 --model-b",
    )
    compare.add_argument(
        "--crosscoder-format",
        default="auto",
        choices=("auto", "dictionary_learning", "ckkissane"),
        help="the checkpoint layout (auto decides by key names; a square M = F checkpoint must name it)",
    )
    compare.add_argument(
        "--scale-a", type=positive_float, default=None, help="model A's input scale (default: estimated)"
    )
    compare.add_argument(
        "--scale-b", type=positive_float, default=None, help="model B's input scale (default: estimated)"
    )
    _add_corpus_args(compare)
    _setting(
        compare, "--max-tokens", "harvest", HarvestSettings, "max_tokens", type=positive_int, help="units to harvest"
    )
    _setting(compare, "--max-len", "harvest", HarvestSettings, "max_len", type=positive_int, help="tokens per window")
    _setting(compare, "--batch-tokens", "harvest", HarvestSettings, "batch_tokens", type=positive_int)
    _add_device_arg(compare, "harvest")
    _setting(
        compare,
        "--pooling",
        "harvest",
        HarvestSettings,
        "pooling",
        help=f"different tokenizers only: how token codes pool per aligned span ({', '.join(POOLINGS)})",
    )
    compare.add_argument("--out", required=True, help="bundle folder to write")
    compare.add_argument(
        "--overwrite",
        action="store_true",
        help="replace a bundle this tool wrote at --out (never a folder holding anything else); the old one "
        "stays whole until the new one is finished",
    )
    compare.add_argument(
        "--stages",
        default=field_default(ComparisonConfig, "stages"),
        help="later stages to run: all (default), none, or a list like matching,similarity (a crosscoder: "
        "analyses,similarity,dashboards,umap; add causal for the causal check)",
    )
    _add_match_args(compare)
    _add_similarity_args(compare)
    _setting(
        compare,
        "--shard-units",
        "harvest",
        HarvestSettings,
        "shard_units",
        type=positive_int,
        help="units per harvest shard (the unit of resume and of scheduling)",
    )
    compare.add_argument(
        "--resume",
        action="store_true",
        help="rebuild an interrupted build's shards whose inputs changed (shards of unchanged inputs are always reused)",
    )
    _add_engine_args(compare, harvest=True)
    compare.add_argument("--status", default=None, help="also record progress and the outcome in this JSON file")
    compare.set_defaults(func=cmd_compare)

    match = sub.add_parser("match", help="(re)compute matches.parquet and assignment.parquet of a bundle")
    match.add_argument("bundle")
    _add_match_args(match)
    _add_device_arg(match)
    _add_engine_args(match, harvest=False)
    match.set_defaults(func=cmd_stage)

    similarity = sub.add_parser("similarity", help="(re)compute similarity.json (SVCCA, RSA, CKA, Procrustes + nulls)")
    similarity.add_argument("bundle")
    _add_similarity_args(similarity)
    _add_device_arg(similarity)
    similarity.set_defaults(func=cmd_stage)

    analyses = sub.add_parser(
        "analyses", help="(re)classify a crosscoder bundle's latents (Delta-norm, Latent Scaling)"
    )
    analyses.add_argument("bundle")
    for flag, name, kind, text in (
        ("--b-only-above", "b_only_above", float, "Delta-norm (B-only -> 1) cut for B-only"),
        ("--a-only-below", "a_only_below", float, "Delta-norm cut for A-only"),
        ("--shared-band", "shared_band", float, "|Delta-norm - 0.5| below this is shared"),
        ("--top-n", "top_n", positive_int, "the top-N mode's A-only and B-only counts"),
        ("--nu-near-one", "nu_near_one", float, "Latent Scaling: nu from which it is near 1"),
        ("--nu-near-zero", "nu_near_zero", float, "Latent Scaling: |nu| below which near 0"),
    ):
        _setting(analyses, flag, "analyses", AnalysisSettings, name, type=kind, help=f"{text} (default %(default)s)")
    _add_device_arg(analyses)
    analyses.set_defaults(func=cmd_stage)

    causal = sub.add_parser("causal", help="the causal check: ablate latents in both models, correlate the shifts")
    causal.add_argument("bundle")
    _setting(
        causal,
        "--top-n",
        "causal",
        CausalSettings,
        "top_n",
        type=positive_int,
        help="latents (crosscoder) or kept pairs (SAEs) checked (default %(default)s)",
    )
    _setting(
        causal,
        "--select",
        "causal",
        CausalSettings,
        "select",
        choices=("shared", "live", "kept_pairs"),
        help="which to check",
    )
    _setting(causal, "--n-probes", "causal", CausalSettings, "n_probes", type=positive_int)
    _setting(causal, "--probe-len", "causal", CausalSettings, "probe_len", type=positive_int, help="tokens per probe")
    _setting(
        causal,
        "--probes",
        "causal",
        CausalSettings,
        "probes",
        choices=("active", "all"),
        help="probes the correlation uses",
    )
    _setting(
        causal,
        "--n-perm",
        "causal",
        CausalSettings,
        "n_perm",
        type=non_negative_int,
        help="permutations for the p-value",
    )
    _setting(causal, "--seed", "causal", CausalSettings, "seed", type=non_negative_int)
    _setting(causal, "--device", "causal", CausalSettings, "device", help="auto (default), cpu or cuda")
    causal.set_defaults(func=cmd_stage)

    for name, what in (
        ("dashboards", "per-feature dashboards and examples"),
        ("umap", "UMAP layouts of decoder directions"),
    ):
        stage = sub.add_parser(name, help=f"(re)compute the {what} of a bundle")
        stage.add_argument("bundle")
        _add_device_arg(stage)
        stage.set_defaults(func=cmd_stage)

    sweep = sub.add_parser("sweep", help="layer x layer sweep: pair and compare every SAE of A with every SAE of B")
    for name in ("a", "b"):
        sweep.add_argument(f"--model-{name}", required=True)
        sweep.add_argument(f"--saes-{name}", required=True, help="comma-separated SAE folders / specs, one per layer")
        sweep.add_argument(f"--hooks-{name}", default=None, help="comma-separated hooks (default: each SAE's own)")
        sweep.add_argument(f"--tokenizer-{name}", default=None)
    _add_corpus_args(sweep, max_docs=False)
    _setting(
        sweep, "--max-tokens", "harvest", HarvestSettings, "max_tokens", default=SWEEP_MAX_TOKENS, type=positive_int
    )
    _add_similarity_args(sweep, seed=False)
    _add_device_arg(sweep, "harvest")
    sweep.add_argument("--out", required=True, help="folder for sweep.parquet and sweep.json")
    sweep.add_argument("--overwrite", action="store_true", help="replace a sweep folder this tool wrote at --out")
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
        default=field_default(DiscoverSettings, "score_mode"),
        help="mean, max, mean_x_coverage or selectivity (default %(default)s)",
    )
    discover.add_argument(
        "--return_top_x",
        "--return-top-x",
        "--top",
        dest="return_top_x",
        type=int,
        default=field_default(DiscoverSettings, "return_top_x"),
        help="features per list",
    )
    discover.add_argument(
        "--min_coverage_pct",
        "--min-coverage-pct",
        dest="min_coverage_pct",
        type=float,
        default=field_default(DiscoverSettings, "min_coverage_pct"),
        help="percent of analysed tokens a feature must exceed its threshold on (default %(default)s)",
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
        "--token_filter",
        "--token-filter",
        dest="token_filter",
        default=field_default(DiscoverSettings, "token_filter"),
        help="auto, entropy or norm",
    )
    discover.add_argument(
        "--attach_examples",
        "--attach-examples",
        dest="attach_examples",
        action=argparse.BooleanOptionalAction,
        default=field_default(DiscoverSettings, "attach_examples"),
        help="top spans in the text and corpus examples per feature (default %(default)s)",
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

    submit = sub.add_parser(
        "submit", help="run a comparison on a Ray cluster as a job and follow it (docs/scaleout.md)"
    )
    submit.add_argument("--address", required=True, help="the cluster's job server, http://HEAD:8265")
    submit.add_argument("--working-dir", default=None, help="a folder uploaded as the job's working folder")
    submit.add_argument("--python", default="python", help="the Python the cluster's nodes run")
    submit.add_argument("--no-follow", action="store_true", help="print the job id and return at once")
    submit.add_argument("--poll-s", type=float, default=2.0, help=argparse.SUPPRESS)
    submit.add_argument("compare_args", nargs=argparse.REMAINDER, help="-- then the compare arguments")
    submit.set_defaults(func=cmd_submit)

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
