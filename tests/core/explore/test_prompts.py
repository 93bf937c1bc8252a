"""Live text through a bundle's own models: the same codes as the harvest, and the discover CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.bundle.reader import open_bundle
from core.cli.main import main
from core.explore.prompts import encode_text, load_sides
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.pipeline.compare import ComparisonSpec, build_comparison
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("prompts")


@pytest.fixture(scope="module")
def bundle_path(root: Path) -> Path:
    model = ModelSpec("hf", str(build_bert_folder(root / "bert")))
    spec = ComparisonSpec(
        a=SideSpec(
            model, SAESpec("local", str(build_topk_sae_folder(root / "a", hook_name="blocks.1.hook_resid_post")))
        ),
        b=SideSpec(
            model,
            SAESpec("local", str(build_topk_sae_folder(root / "b", hook_name="blocks.2.hook_resid_post", seed=4))),
        ),
        corpus=CorpusSpec("file", str(write_corpus(root / "c.jsonl"))),
        harvest=HarvestSettings(max_tokens=800, max_len=32, device="cpu"),
    )
    return build_comparison(spec, root / "bundle", stages=("matching", "dashboards"))


def test_live_text_is_encoded_exactly_as_the_corpus_was(bundle_path: Path) -> None:
    bundle = open_bundle(bundle_path)
    sides = load_sides(bundle)
    doc = bundle.docs().filter(pl.col("doc") == 3).collect()["text"][0]
    rows = bundle.units().filter(pl.col("doc") == 3).collect()["unit"].to_numpy()
    harvest = HarvestSettings(**bundle.manifest["settings"]["harvest"])
    live = encode_text(sides, doc, harvest)
    for side in ("a", "b"):
        np.testing.assert_allclose(
            live[side].codes.to_dense(), bundle.codes(side).take_rows(rows).to_dense(), atol=1e-5
        )
    assert list(live["a"].tokens) == bundle.units().filter(pl.col("doc") == 3).collect()["text"].to_list()


def test_discover_cli_single_and_batch(bundle_path: Path, tmp_path: Path, capsys) -> None:
    assert main(["discover", "--bundle", str(bundle_path), "--text", "the cat sat on a mat", "--device", "cpu"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result, "discovery returns a result object"
    out_csv = tmp_path / "hits.csv"
    # a three-token text: keep features that never pass their corpus threshold here (the 0.5% gate would not)
    argv = ["discover", "--bundle", str(bundle_path), "--text", "seven dogs barked", "--min-coverage-pct", "0"]
    assert main([*argv, "--out", str(out_csv)]) == 0
    table = pl.read_csv(out_csv)
    assert {"feature_id", "side", "score", "partner"} <= set(table.columns)
    assert set(table["side"].to_list()) <= {"a", "b"} and table.height > 0
    prompts = tmp_path / "p.jsonl"
    prompts.write_text('{"text": "time flies like an arrow"}\n{"text": "the mat"}\n')
    out = tmp_path / "batch.jsonl"
    assert main(["discover", "--bundle", str(bundle_path), "--prompts-file", str(prompts), "--out", str(out)]) == 0
    assert len(out.read_text().strip().splitlines()) == 2


def test_discover_cli_bad_input(bundle_path: Path, tmp_path: Path, capsys) -> None:
    assert main(["discover", "--bundle", str(bundle_path)]) == 2
    assert capsys.readouterr().err.strip().startswith("error: Give exactly one of --text or --prompts-file")
    (tmp_path / "bad.jsonl").write_text('{"body": "x"}\n')
    assert main(["discover", "--bundle", str(bundle_path), "--prompts-file", str(tmp_path / "bad.jsonl")]) == 2
    err = capsys.readouterr().err
    assert 'no "text" string' in err
    assert "Loading weights" not in err, "the prompts are checked before any model loads"
    assert main(["discover", "--bundle", str(bundle_path), "--text", "   "]) == 2
    assert "empty" in capsys.readouterr().err


def test_discover_cli_spec_flags_and_several_saes_of_one_model(bundle_path: Path, root: Path, tmp_path: Path) -> None:
    # another SAE of side A's model, at block 0: a second layer of side A
    other = build_topk_sae_folder(root / "layer0", hook_name="blocks.0.hook_resid_post", seed=9)
    out = tmp_path / "layers.json"
    argv = ["discover", "--bundle", str(bundle_path), "--text", "the cat sat on a mat", "--device", "cpu"]
    argv += ["--min_coverage_pct", "0"]
    assert main([*argv, "--score_mode", "max", "--saes", str(other), "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    groups = [(g["side"], g["analyzed"]["layers"]) for g in result["sides"]]
    assert groups == [("a", [1]), ("b", [2]), ("a", [0])]
    assert all(g["analyzed"]["mode"] == "max" for g in result["sides"])
    layer0 = result["sides"][2]["features"]
    assert layer0 and all(f["layer"] == 0 and f["stream"] == "resid_post" for f in layer0)
    assert all(isinstance(f["proto_label"], str) for f in layer0)
    assert main([*argv, "--score-mode", "mean", "--saes", str(other), "--merge-across-layers", "--out", str(out)]) == 0
    merged = json.loads(out.read_text())
    assert [(g["side"], g["analyzed"]["layers"]) for g in merged["sides"]] == [("a", [1, 0]), ("b", [2])]
    ranks = [f["rank"] for f in merged["sides"][0]["features"]]
    assert ranks == sorted(ranks) and {f["layer"] for f in merged["sides"][0]["features"]} <= {0, 1}
    csv = tmp_path / "t.csv"
    assert main([*argv, "--score", "max", "--topk-tokens-per-seq", "3", "--out", str(csv)]) == 0
    table = pl.read_csv(csv)
    assert table.columns[:10] == [
        "feature_id",
        "layer",
        "stream",
        "score",
        "mean",
        "coverage",
        "max",
        "selectivity",
        "proto_label",
        "top_span_text",
    ]


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--score", "bogus"], "Score mode 'bogus' is unknown"),
        (["--score_mode", "bogus"], "Score mode 'bogus' is unknown"),
        (["--min-coverage-pct", "300"], "min_coverage_pct is a percent"),
        (["--restrict-features", "1,100000"], "restrict_features names feature 100000"),
        (["--restrict-features", "1,x"], "whole numbers separated by commas"),
        (["--out", "r.txt"], "must end in .json or .csv"),
        (["--merge-across-layers"], "name the others with --saes"),
        (["--saes", "/no/such/sae"], "SAE folder /no/such/sae does not exist"),
        (["--token-filter", "loud"], "token_filter 'loud' is unknown"),
        (["--gen-tokens", "5"], "encoder and cannot continue"),
    ],
)
def test_every_discover_option_is_checked_before_a_model_loads(
    bundle_path: Path, extra: list[str], message: str, capsys, monkeypatch
) -> None:
    import core.explore.prompts as prompts

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model was loaded before the options were checked")

    monkeypatch.setattr(prompts, "load_sides", refuse)
    assert main(["discover", "--bundle", str(bundle_path), "--text", "the cat", *extra]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0
