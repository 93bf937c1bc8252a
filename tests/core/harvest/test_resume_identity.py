"""Resume never mixes inputs: shards are keyed by SAE weights, model, corpus text and settings.

Planted cases (issue 16): an interrupted build whose SAE weights are then replaced in place, or
whose corpus file is then edited, must never reuse the old shards: a plain re-run refuses in one
sentence that says what changed (keeping the shards), a re-run with --resume rebuilds them and
says so; a build refused for NaN weights must leave nothing that blocks the re-run once the
weights are fixed. Each re-run is compared byte for byte with a clean build of the same inputs.
"""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.bundle.safety import staging_path
from core.cli.main import main
from core.harvest.run import SUMMARY_FILE, finished_shards
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.progress import split_phase
from tests.core._notes import note_lines
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus

CODE_FILES = ("codes_a.safetensors", "codes_b.safetensors", "units.parquet")
HARVEST = {"max_tokens": 600, "max_len": 24, "shard_units": 150, "batch_tokens": 96, "sanity_tokens": 64}


class _Stop(Exception):
    pass


def _stop_after_first_shard(stage: str, done: int, total: int) -> None:
    # the build names its phases: the harvest step reads "harvest · harvest"
    if split_phase(stage)[1] == "harvest" and 0 < done < total:
        raise _Stop


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_bert_folder(tmp_path_factory.mktemp("model") / "bert")


@pytest.fixture
def inputs(tmp_path: Path, model: Path) -> dict[str, Path]:
    return {
        "model": model,
        "sae_a": build_topk_sae_folder(tmp_path / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1),
        "sae_b": build_topk_sae_folder(tmp_path / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2),
        "corpus": write_corpus(tmp_path / "corpus.jsonl"),
    }


def _spec(inputs: dict[str, Path]) -> ComparisonSpec:
    model = ModelSpec("hf", str(inputs["model"]))
    return ComparisonSpec(
        a=SideSpec(model, SAESpec("local", str(inputs["sae_a"]))),
        b=SideSpec(model, SAESpec("local", str(inputs["sae_b"]))),
        corpus=CorpusSpec("file", str(inputs["corpus"])),
        harvest=HarvestSettings(device="cpu", **HARVEST),
    )


def _cli(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        *("--sae-a", str(inputs["sae_a"]), "--model-a", str(inputs["model"])),
        *("--sae-b", str(inputs["sae_b"]), "--model-b", str(inputs["model"])),
        *("--corpus", f"file:{inputs['corpus']}", "--out", str(out), "--stages", "none", "--device", "cpu"),
        *("--max-tokens", "600", "--max-len", "24", "--shard-units", "150", "--batch-tokens", "96"),
        *extra,
    ]


def _work(out: Path) -> Path:
    """Where an interrupted build of ``out`` keeps its shards (its staging folder's work folder)."""
    return staging_path(out, "partial") / ".work"


def _interrupt(inputs: dict[str, Path], out: Path) -> int:
    with pytest.raises(_Stop):
        build_comparison(_spec(inputs), out, progress=_stop_after_first_shard, stages=())
    shards = finished_shards(_work(out))
    assert 1 <= shards < 4, "the planted interruption leaves some, not all, shards finished"
    return shards


def _assert_same_bytes(out: Path, clean: Path) -> None:
    for name in CODE_FILES:
        assert (out / name).read_bytes() == (clean / name).read_bytes(), f"{name} differs from a clean build"


def test_replaced_sae_weights_rebuild_instead_of_reusing_old_shards(inputs, tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    shards = _interrupt(inputs, out)
    # the same folder and shapes, other weights: only a content digest can tell
    build_topk_sae_folder(inputs["sae_a"], hook_name="blocks.1.hook_resid_post", seed=7)

    # a plain re-run is refused, saying what changed, and removes nothing finished
    assert main(_cli(inputs, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("error: ") and "pass --resume" in err and "SAE A's weights changed" in err, err
    assert finished_shards(_work(out)) == shards

    assert main(_cli(inputs, out, "--resume")) == 0
    notes = note_lines(capsys.readouterr().err)
    assert any("SAE A's weights changed" in line and "rebuilt, not reused" in line for line in notes), notes
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["harvest"]["resumed_shards"] == 0
    assert "SAE A's weights changed" in manifest["harvest"]["rebuilt_because"]

    clean = build_comparison(_spec(inputs), tmp_path / "clean", stages=())
    _assert_same_bytes(out, clean)


def test_edited_corpus_rebuilds_instead_of_reusing_old_shards(inputs, tmp_path: Path, caplog) -> None:
    out = tmp_path / "bundle"
    _interrupt(inputs, out)
    lines = inputs["corpus"].read_text().splitlines()
    # the first document changes, so the first (finished) shard's units no longer match the text
    lines[0] = json.dumps({"text": "An edited opening line about violins, rivers and the price of tea."})
    inputs["corpus"].write_text("\n".join(lines) + "\n")

    with caplog.at_level(logging.WARNING, logger="core"):
        build_comparison(_spec(inputs), out, stages=(), resume=True)
    assert "the corpus text changed" in caplog.text
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["harvest"]["resumed_shards"] == 0

    clean = build_comparison(_spec(inputs), tmp_path / "clean", stages=())
    _assert_same_bytes(out, clean)


def test_nan_weights_refused_then_fixed_rerun_is_not_blocked(inputs, tmp_path: Path, capsys) -> None:
    weights = inputs["sae_a"] / "sae_weights.safetensors"
    good = load_file(str(weights))
    bad = {k: v.clone() for k, v in good.items()}
    bad["W_enc"][:, 0] = float("nan")
    save_file(bad, str(weights))
    out = tmp_path / "bundle"

    assert main(_cli(inputs, out)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert "Traceback" not in "\n".join(err)
    assert err[-1].startswith("error: ") and "NaN" in err[-1] and "SAE A" in err[-1], err[-1]
    assert finished_shards(_work(out)) == 0, "a shard with NaN codes must not be kept"

    save_file(good, str(weights))
    # the fixed re-run needs no flag: nothing finished is in its way
    assert main(_cli(inputs, out)) == 0
    clean = build_comparison(_spec(inputs), tmp_path / "clean", stages=())
    _assert_same_bytes(out, clean)


def test_unchanged_inputs_resume_with_or_without_the_flag(inputs, tmp_path: Path) -> None:
    clean = build_comparison(_spec(inputs), tmp_path / "clean", stages=())
    for name, resume in (("plain", False), ("flagged", True)):
        out = tmp_path / name
        shards = _interrupt(inputs, out)
        build_comparison(_spec(inputs), out, stages=(), resume=resume)
        manifest = json.loads((out / "manifest.json").read_text())
        assert manifest["harvest"]["resumed_shards"] == shards and manifest["harvest"]["rebuilt_because"] is None
        _assert_same_bytes(out, clean)
        assert not staging_path(out, "partial").exists(), "the staging folder goes once the bundle is in place"


def test_half_written_shard_and_foreign_key_are_never_finished(inputs, tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    _interrupt(inputs, out)
    work = _work(out)
    first = work / "shard_00000"
    # a worker killed while writing leaves only a temp folder; a shard of another key is not ours
    shutil.copytree(first, work / ".shard_00001.part-deadbeef")
    summary = json.loads((first / SUMMARY_FILE).read_text())
    (first / SUMMARY_FILE).write_text(json.dumps({**summary, "key": "another-run"}))
    build_comparison(_spec(inputs), out, stages=(), resume=True)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["harvest"]["resumed_shards"] == 0
    clean = build_comparison(_spec(inputs), tmp_path / "clean", stages=())
    _assert_same_bytes(out, clean)


def test_sae_digest_sees_one_changed_value(inputs) -> None:
    from core.harvest.identity import sae_digest
    from core.harvest.loading import load_sae

    spec = SAESpec("local", str(inputs["sae_a"]))
    before = sae_digest(load_sae(spec))
    assert sae_digest(load_sae(spec)) == before
    weights = inputs["sae_a"] / "sae_weights.safetensors"
    tensors = load_file(str(weights))
    tensors["b_dec"] = tensors["b_dec"] + torch.finfo(torch.float32).eps
    save_file(tensors, str(weights))
    assert sae_digest(load_sae(spec)) != before
