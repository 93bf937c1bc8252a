"""`python -m core match --preset ...` and `python -m core explain`: presets recorded, bad input refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.bundle.reader import open_bundle
from core.cli.main import main
from tests.core.planted import build_planted_config, make_planted, write_bundle


@pytest.fixture
def bundle_path(tmp_path: Path) -> Path:
    planted = make_planted(build_planted_config(n_units=2000))
    return write_bundle(
        tmp_path / "b", planted.codes_a, planted.codes_b, planted.docs, planted.w_dec_a, planted.w_dec_b
    )


def _snapshot(path: Path) -> dict[str, bytes]:
    return {f.name: f.read_bytes() for f in sorted(path.iterdir()) if f.is_file()}


@pytest.mark.parametrize("preset", ["paper", "featurebridge"])
def test_match_with_a_preset_records_it_and_every_setting(bundle_path: Path, preset: str, capsys) -> None:
    assert main(["match", str(bundle_path), "--preset", preset, "--device", "cpu", "--memory-mb", "64"]) == 0
    record = open_bundle(bundle_path).manifest["matching"]
    assert record["preset"] == preset
    settings = record["settings"]
    assert settings["preset"] == preset and settings["memory_mb"] == 64
    for field in ("method", "min_corr", "label_source", "label_form", "require_significant", "threshold_after_dedup"):
        assert field in settings
    assert f"preset {preset}" in capsys.readouterr().err


def test_flags_without_a_preset_customise_the_default(bundle_path: Path) -> None:
    assert main(["match", str(bundle_path), "--method", "greedy", "--no-significance", "--device", "cpu"]) == 0
    record = open_bundle(bundle_path).manifest["matching"]
    assert record["preset"] == "custom"
    assert record["settings"]["method"] == "greedy" and record["settings"]["require_significant"] is False


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--preset", "papers"], "Unknown preset 'papers'; choose one of featurebridge, paper, custom."),
        (
            ["--preset", "paper", "--method", "sparse"],
            "--method sparse contradicts --preset paper, which fixes method='greedy'; drop --method, "
            "or use --preset custom to set every option yourself.",
        ),
        (
            ["--preset", "featurebridge", "--no-significance"],
            "--significance false contradicts --preset featurebridge, which fixes require_significant=True",
        ),
        (["--labels", "words"], "label_source='words' must be one of top_tokens, top_activations"),
    ],
)
def test_bad_match_input_is_one_sentence_and_exit_2_and_nothing_is_overwritten(
    bundle_path: Path, argv: list[str], message: str, capsys
) -> None:
    before = _snapshot(bundle_path)
    assert main(["match", str(bundle_path), *argv, "--device", "cpu"]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err
    assert err.count("\n") == 0 and err.startswith("error: ")
    assert _snapshot(bundle_path) == before
    assert "matching" not in json.loads((bundle_path / "manifest.json").read_text())


def test_explain_prints_the_evidence_and_equals_the_stage(bundle_path: Path, capsys) -> None:
    assert main(["match", str(bundle_path), "--device", "cpu"]) == 0
    matches = open_bundle(bundle_path).matches().collect()
    row = matches.filter(matches["direction"] == "a->b").sort("corr", descending=True).row(0, named=True)
    capsys.readouterr()
    assert main(["explain", str(bundle_path), f"b{row['feature_b']}", f"a{row['feature_a']}", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["feature_a"] == row["feature_a"] and out["feature_b"] == row["feature_b"]
    for key in ("corr", "mu", "neglog10_p", "combined_score", "token_overlap"):
        assert out[key] == pytest.approx(row[key], rel=1e-6, abs=1e-9), key
    assert out["n_coactive"] == row["n_coactive"] and out["note"] == row["note"]
    assert main(["explain", str(bundle_path), f"a{row['feature_a']}", f"b{row['feature_b']}"]) == 0
    text = capsys.readouterr().out
    assert f"A{row['feature_a']} <-> B{row['feature_b']}" in text and "shared tokens" in text and "q " in text


@pytest.mark.parametrize(
    ("pair", "message"),
    [
        (("a100000", "b1"), "Feature a100000 does not exist: side A has"),
        (("a1", "a2"), "Both features are on side A"),
        (("x1", "b2"), "'x1' is not a feature"),
    ],
)
def test_explain_bad_pairs_are_one_sentence(bundle_path: Path, pair: tuple[str, str], message: str, capsys) -> None:
    assert main(["explain", str(bundle_path), *pair]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and err.count("\n") == 0


def test_explain_on_a_bundle_without_codes_is_one_sentence(bundle_path: Path, capsys) -> None:
    manifest = json.loads((bundle_path / "manifest.json").read_text())
    manifest["parts"]["codes"] = False
    (bundle_path / "manifest.json").write_text(json.dumps(manifest))
    for side in ("a", "b"):
        (bundle_path / f"codes_{side}.safetensors").unlink()
    before = _snapshot(bundle_path)
    assert main(["explain", str(bundle_path), "a1", "b1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "holds no codes" in err and err.count("\n") == 0
    assert _snapshot(bundle_path) == before
