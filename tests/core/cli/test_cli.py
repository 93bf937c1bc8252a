"""The CLI end to end on local folders, and every bad input: one sentence, exit 2, nothing half-written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from core.bundle.reader import open_bundle
from core.bundle.schema import MANIFEST
from core.cli.main import main
from tests.core.builders import build_bert_folder, build_sparsify_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli")
    return {
        "model": build_bert_folder(root / "bert"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post"),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=3),
        "sparsify": build_sparsify_folder(root / "sparsify", layer=2),
        "corpus": write_corpus(root / "corpus.jsonl"),
        "root": root,
    }


def _compare(folders: dict[str, Path], out: Path, *extra: str, **override: str) -> list[str]:
    args = {
        "--sae-a": str(folders["sae_a"]),
        "--model-a": str(folders["model"]),
        "--sae-b": str(folders["sae_b"]),
        "--model-b": str(folders["model"]),
        "--corpus": f"file:{folders['corpus']}",
        "--max-tokens": "300",
        "--out": str(out),
        "--stages": "none",
        "--device": "cpu",
        **override,
    }
    return ["compare", *[x for kv in args.items() for x in kv], *extra]


def _one_sentence_error(capsys: pytest.CaptureFixture[str], *fragments: str) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "a user error must print its sentence"
    line = err[-1]
    assert line.startswith("error: ") and "Traceback" not in "\n".join(err)
    for fragment in fragments:
        assert fragment in line, f"{fragment!r} not in {line!r}"
    return line


def test_compare_two_local_folders_then_info(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    assert main(_compare(folders, out)) == 0
    bundle = open_bundle(out)
    assert bundle.n_units == 300
    assert not (out / ".work").exists(), "the shard folder is removed once the bundle is whole"
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "blocks.1.hook_resid_post" in text and "units    300" in text


def test_compare_with_a_sparsify_folder(folders: dict[str, Path], tmp_path: Path) -> None:
    out = tmp_path / "bundle"
    assert main(_compare(folders, out, **{"--sae-b": str(folders["sparsify"])})) == 0
    side_b = open_bundle(out).side("b")
    # the sparsify converter maps the folder name layers.2 onto the output of block 2
    assert side_b["hook"] == "blocks.2.hook_resid_post" and side_b["sae"]["spec"]["kind"] == "sparsify"


def test_output_folder_with_other_files_is_refused_even_with_overwrite(folders, tmp_path: Path, capsys) -> None:
    out = tmp_path / "busy"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    for extra in ((), ("--overwrite",)):
        assert main(_compare(folders, out, *extra)) == 2
        _one_sentence_error(capsys, "notes.txt", "did not write")
        assert sorted(p.name for p in out.iterdir()) == ["notes.txt"] and (out / "notes.txt").read_text() == "mine"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"], "nothing is left beside the refused folder"


def _bad_sae(folders: dict[str, Path], name: str) -> Path:
    bad = folders["root"] / name
    if bad.exists():
        shutil.rmtree(bad)
    shutil.copytree(folders["sae_a"], bad)
    return bad


@pytest.mark.parametrize(
    ("case", "fragments"),
    [
        ("missing_folder", ("does not exist",)),
        ("not_an_sae", ("cfg.json",)),
        ("cfg_missing_keys", ("lacks the key", "d_sae")),
        ("corrupt_weights", ("corrupt",)),
        ("d_in_mismatch", ("d_in=16",)),
        ("unknown_hook", ("Unknown hook", "blocks.0.hook_resid_pre")),
        ("offline_release", ("local folder",)),
        ("empty_corpus", ("holds no text",)),
        ("no_text_column", ("no text field", "--text-column")),
    ],
)
def test_bad_input_prints_one_sentence_and_leaves_no_bundle(
    case: str, fragments: tuple[str, ...], folders: dict[str, Path], tmp_path: Path, capsys
) -> None:
    override: dict[str, str] = {}
    if case == "missing_folder":
        override["--sae-a"] = str(tmp_path / "nowhere")
    elif case == "not_an_sae":
        (tmp_path / "empty").mkdir()
        override["--sae-a"] = str(tmp_path / "empty")
    elif case == "cfg_missing_keys":
        bad = _bad_sae(folders, "nokeys")
        cfg = json.loads((bad / "cfg.json").read_text())
        del cfg["d_sae"]
        (bad / "cfg.json").write_text(json.dumps(cfg))
        override["--sae-a"] = str(bad)
    elif case == "corrupt_weights":
        bad = _bad_sae(folders, "corrupt")
        (bad / "sae_weights.safetensors").write_bytes(b"\x00\x01 not safetensors at all")
        override["--sae-a"] = str(bad)
    elif case == "d_in_mismatch":
        override["--sae-a"] = str(build_topk_sae_folder(tmp_path / "narrow", d_in=16))
    elif case == "unknown_hook":
        override["--hook-a"] = "blocks.7.hook_mlp_out"
    elif case == "offline_release":
        override["--sae-a"] = "release:gpt2-small-res-jb/blocks.0.hook_resid_pre"
    elif case == "empty_corpus":
        (tmp_path / "empty.jsonl").write_text("\n")
        override["--corpus"] = f"file:{tmp_path / 'empty.jsonl'}"
    elif case == "no_text_column":
        (tmp_path / "other.jsonl").write_text('{"body": "some text"}\n')
        override["--corpus"] = f"file:{tmp_path / 'other.jsonl'}"
    out = tmp_path / "bundle"
    assert main(_compare(folders, out, **override)) == 2
    _one_sentence_error(capsys, *fragments)
    assert not (out / MANIFEST).exists()


def test_unknown_schema_version_and_incomplete_bundle(folders: dict[str, Path], tmp_path: Path, capsys) -> None:
    out = tmp_path / "bundle"
    assert main(_compare(folders, out)) == 0
    manifest = json.loads((out / MANIFEST).read_text())
    manifest["schema_version"] = 99
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert main(["info", str(out)]) == 2
    _one_sentence_error(capsys, "schema version 99")
    (out / MANIFEST).unlink()
    assert main(["info", str(out)]) == 2
    _one_sentence_error(capsys, "not a finished comparison bundle")
