"""The three ways `compare --overwrite` lost user data (issue 16), and their neighbours: never again.

Each run must exit 2 with one sentence, and leave every file around it as it was.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from core.bundle.reader import open_bundle
from core.bundle.safety import check_output
from core.cli.main import main
from core.errors import BundleError
from tests.core._guard import one_sentence, tree_hash
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("loss")
    return {
        "model": build_bert_folder(root / "bert"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post"),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=3),
        "corpus": write_corpus(root / "corpus.jsonl", n_docs=12),
        "root": root,
    }


@pytest.fixture(scope="module")
def good_bundle(inputs: dict[str, Path]) -> Path:
    out = inputs["root"] / "built" / "bundle"
    assert main(_compare(inputs, str(out))) == 0
    return out


def _compare(inputs: dict[str, Path], out: str, *extra: str, **override: str) -> list[str]:
    args = {
        "--sae-a": str(inputs["sae_a"]),
        "--model-a": str(inputs["model"]),
        "--sae-b": str(inputs["sae_b"]),
        "--model-b": str(inputs["model"]),
        "--corpus": f"file:{inputs['corpus']}",
        "--max-tokens": "200",
        "--out": out,
        "--stages": "none",
        "--device": "cpu",
        **override,
    }
    return ["compare", *[x for kv in args.items() for x in kv], *extra]


def test_empty_out_with_overwrite_never_touches_the_working_folder(
    inputs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    work = tmp_path / "work"
    work.mkdir()
    (work / "thesis.tex").write_text("three years of it")
    (work / "data").mkdir()
    (work / "data" / "runs.csv").write_text("a,b\n1,2\n")
    monkeypatch.chdir(work)
    before = tree_hash(tmp_path)
    assert main(_compare(inputs, "", "--overwrite")) == 2
    one_sentence(capsys.readouterr().err, "empty", "--out")
    assert tree_hash(tmp_path) == before


def test_overwrite_with_a_typo_in_an_input_keeps_the_old_bundle_whole(
    inputs: dict[str, Path], good_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(good_bundle, bundle)
    before = tree_hash(tmp_path)
    typo = str(inputs["sae_a"]) + "_typo"
    assert main(_compare(inputs, str(bundle), "--overwrite", **{"--sae-a": typo})) == 2
    one_sentence(capsys.readouterr().err, typo, "does not exist")
    assert tree_hash(tmp_path) == before, "the old bundle and its neighbours are untouched"
    assert open_bundle(bundle).n_units == 200


@pytest.mark.parametrize("which", ["sae_a", "model"])
def test_out_naming_an_input_folder_is_refused_and_the_input_kept(
    which: str, inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    before = tree_hash(inputs["root"], exclude=[inputs["root"] / "built"])
    assert main(_compare(inputs, str(inputs[which]), "--overwrite")) == 2
    one_sentence(capsys.readouterr().err, str(inputs[which]), "choose another folder")
    assert tree_hash(inputs["root"], exclude=[inputs["root"] / "built"]) == before


def test_out_above_an_input_is_refused(inputs: dict[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    before = tree_hash(inputs["root"], exclude=[inputs["root"] / "built"])
    assert main(_compare(inputs, str(inputs["root"]), "--overwrite")) == 2
    one_sentence(capsys.readouterr().err, str(inputs["root"]), "holds")
    assert tree_hash(inputs["root"], exclude=[inputs["root"] / "built"]) == before


# Only folders under tmp_path are ever given to a build here: a test that handed "/" to code
# that might still delete would risk the machine (see the filesystem-root test below).
@pytest.mark.parametrize("where", ["cwd", "parent_of_cwd", "home"])
def test_protected_folders_are_never_an_output(
    where: str,
    inputs: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    work = tmp_path / "home" / "me"
    work.mkdir(parents=True)
    (work / "notes.txt").write_text("keep")
    monkeypatch.setenv("HOME", str(work))
    monkeypatch.chdir(work)
    out = {"cwd": ".", "parent_of_cwd": "..", "home": "~"}[where]
    before = tree_hash(tmp_path)
    assert main(_compare(inputs, out, "--overwrite")) == 2
    one_sentence(capsys.readouterr().err, "Output")
    assert tree_hash(tmp_path) == before


def test_a_filesystem_root_is_refused_by_the_check_alone() -> None:
    # check_output only reads; it is called directly so that no build (which could delete) ever sees "/"
    with pytest.raises(BundleError, match="filesystem root"):
        check_output("/", overwrite=True)


def test_overwrite_replaces_a_bundle_we_wrote_and_nothing_beside_it(
    inputs: dict[str, Path], good_bundle: Path, tmp_path: Path
) -> None:
    bundle = tmp_path / "bundle"
    shutil.copytree(good_bundle, bundle)
    (tmp_path / "neighbour.txt").write_text("mine")
    before = tree_hash(tmp_path, exclude=[bundle])
    assert main(_compare(inputs, str(bundle), "--overwrite", **{"--max-tokens": "150"})) == 0
    assert open_bundle(bundle).n_units == 150
    assert tree_hash(tmp_path, exclude=[bundle]) == before, "no staging, lock or old copy is left beside it"
