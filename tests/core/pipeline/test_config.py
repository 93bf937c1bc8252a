"""``ComparisonConfig``: validated once, round-trips through dicts and JSON, and is the only place defaults live."""

from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from core.cli.main import build_parser, comparison_config, corpus_spec, match_settings, similarity_settings
from core.dashboards.settings import DashboardSettings
from core.embedding.settings import RELATION_SOURCES, UMAPSettings
from core.errors import SpecError
from core.harvest.specs import DEFAULT_CORPUS, POOLINGS, CorpusSpec, HarvestSettings
from core.matching.settings import ASSIGN_METHODS, MatchSettings
from core.pipeline.config import SWEEP_MAX_TOKENS, SWEEP_METRICS, ComparisonConfig, field_default, parse_stages
from core.pipeline.stages import STAGES
from core.spaces.settings import CORRECTIONS, METRICS, SimilaritySettings

harvests = st.builds(
    HarvestSettings,
    max_tokens=st.integers(1, 10**9),
    max_len=st.integers(8, 4096),
    batch_tokens=st.just(8192),
    shard_units=st.integers(1, 10**7),
    mask_special=st.booleans(),
    sanity_tokens=st.integers(1, 10**6),
    device=st.sampled_from(["auto", "cpu", "cuda", "cuda:1"]),
    pooling=st.sampled_from(POOLINGS),
)
matchings = st.builds(
    MatchSettings,
    top_k=st.integers(1, 100),
    min_corr=st.floats(-1.0, 0.999),
    method=st.sampled_from(ASSIGN_METHODS),
    memory_mb=st.floats(1.0, 1e6),
    require_shared_token=st.booleans(),
    max_freq=st.floats(0.01, 1.0),
    alpha=st.floats(0.001, 0.999),
    unmatched_value=st.none() | st.floats(-1.0, 1.0),
    nonconcept_file=st.none() | st.text(min_size=1, max_size=20),
)
similarities = st.builds(
    SimilaritySettings,
    metrics=st.lists(st.sampled_from(METRICS), min_size=1, max_size=5, unique=True).map(tuple),
    n_null=st.integers(0, 10_000),
    seed=st.integers(0, 2**31),
    variance=st.floats(0.01, 1.0),
    nulls=st.sampled_from([("permutation",), ("permutation", "random_subset")]),
    concepts=st.booleans(),
    correction=st.sampled_from(CORRECTIONS),
)
dashboards = st.builds(DashboardSettings, n_top=st.integers(1, 100), window=st.integers(0, 64), seed=st.integers(0, 99))
umaps = st.builds(
    UMAPSettings,
    n_neighbors=st.integers(2, 200),
    min_dist=st.floats(0.0, 1.0),
    n_epochs=st.none() | st.integers(1, 1000),
    relation=st.sampled_from(RELATION_SOURCES),
)
stage_sets = st.sets(st.sampled_from(STAGES)).filter(lambda s: "similarity" not in s or "matching" in s)
configs = st.builds(
    ComparisonConfig,
    harvest=harvests,
    matching=matchings,
    similarity=similarities,
    dashboards=dashboards,
    umap=umaps,
    stages=stage_sets.map(tuple),
)


@settings(max_examples=150, deadline=None)
@given(configs)
def test_to_dict_from_dict_round_trips_through_json(config: ComparisonConfig) -> None:
    body = json.loads(json.dumps(config.to_dict()))
    assert ComparisonConfig.from_dict(body) == config
    assert hash(ComparisonConfig.from_dict(body)) == hash(config)  # frozen and hashable: a cache key


@settings(max_examples=60, deadline=None)
@given(configs)
def test_from_manifest_reads_the_records_each_stage_writes(config: ComparisonConfig) -> None:
    # what build_comparison and each stage write into the manifest (settings.harvest, <stage>.settings)
    body = config.to_dict()
    manifest = {"settings": {"harvest": body["harvest"], "device": "cpu"}}
    manifest.update({name: {"settings": body[name], "summary": {}} for name in config.stages})
    # a stage that did not run left no record: it reads back with its defaults
    expected = dataclasses.replace(
        config, **{name: type(getattr(config, name))() for name in STAGES if name not in config.stages}
    )
    assert ComparisonConfig.from_manifest(json.loads(json.dumps(manifest))) == expected


def test_stages_are_kept_in_run_order_and_validated() -> None:
    assert ComparisonConfig(stages=("umap", "matching")).stages == ("matching", "umap")
    assert ComparisonConfig(stages="none").stages == () and ComparisonConfig(stages="all").stages == STAGES
    assert parse_stages("matching, dashboards") == ("matching", "dashboards")
    with pytest.raises(SpecError, match="Unknown stage"):
        ComparisonConfig(stages=("matching", "plots"))
    with pytest.raises(SpecError, match="add the matching stage"):
        ComparisonConfig(stages=("similarity",))


def test_parts_must_be_their_settings_classes_and_dicts_their_fields() -> None:
    with pytest.raises(SpecError, match="ComparisonConfig.matching must be a MatchSettings"):
        ComparisonConfig(matching=SimilaritySettings())  # type: ignore[arg-type]
    with pytest.raises(SpecError, match="has no setting"):
        ComparisonConfig.from_dict({"matching": {"top_kk": 3}})
    with pytest.raises(SpecError, match="has no part"):
        ComparisonConfig.from_dict({"plots": {}})
    with pytest.raises(SpecError, match="Matching setting top_k"):
        ComparisonConfig.from_dict({"matching": {"top_k": 0}})
    # another version's extra keys in a manifest are dropped, not fatal
    manifest = {"settings": {"harvest": {"max_tokens": 5, "future_knob": 1}}, "matching": {"settings": {"x": 1}}}
    config = ComparisonConfig.from_manifest(manifest)
    assert config.harvest.max_tokens == 5 and config.matching == MatchSettings() and config.stages == ("matching",)


def _defaults(cls: type) -> dict:
    return {f.name: field_default(cls, f.name) for f in dataclasses.fields(cls)}


COMPARE = ["compare", "--sae-a", "s1", "--model-a", "m", "--sae-b", "s2", "--model-b", "m", "--out", "o"]


def test_cli_compare_defaults_are_the_dataclass_defaults() -> None:
    args = build_parser().parse_args(COMPARE)
    assert comparison_config(args) == ComparisonConfig()
    assert corpus_spec(args) == CorpusSpec.parse(DEFAULT_CORPUS)
    # every settings flag's parser default is the field default, flag by flag (the matching flags
    # default to None instead: the preset fills what is not given, checked by the config above)
    groups = {"harvest": HarvestSettings, "similarity": SimilaritySettings}
    flags = args.settings_flags
    assert {g for g, _, _ in flags} >= set(groups) and len(flags) >= 7
    assert args.preset is None and args.top_k is None
    for group, name, dest in flags:
        if group in groups:
            assert getattr(args, dest) == _defaults(groups[group])[name], dest


def test_cli_stage_commands_default_to_the_dataclass_defaults() -> None:
    parser = build_parser()
    assert match_settings(parser.parse_args(["match", "B"])) == MatchSettings()
    assert similarity_settings(parser.parse_args(["similarity", "B"])) == SimilaritySettings()
    assert parser.parse_args(["match", "B"]).device == HarvestSettings().device
    sweep = parser.parse_args(
        ["sweep", "--model-a", "m", "--saes-a", "x", "--model-b", "m", "--saes-b", "y", "--out", "o"]
    )
    assert sweep.max_tokens == SWEEP_MAX_TOKENS
    assert similarity_settings(sweep, SimilaritySettings(metrics=SWEEP_METRICS)).n_null == SimilaritySettings().n_null


def test_cli_flags_reach_the_config() -> None:
    args = build_parser().parse_args(
        [*COMPARE, "--max-tokens", "123", "--top-k", "4", "--method", "hungarian", "--n-null", "7", "--stages", "none"]
    )
    config = comparison_config(args)
    assert config.harvest.max_tokens == 123 and config.matching.top_k == 4 and config.matching.method == "hungarian"
    assert config.similarity.n_null == 7 and config.stages == ()
