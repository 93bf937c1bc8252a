"""Layer x layer sweep: planted identical layers on the diagonal, CLI and attaching to a bundle."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.cli.main import main
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec
from core.pipeline.sweep import SweepSide, SweepSpec, build_sweep
from core.spaces.settings import SimilaritySettings
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def parts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("sweep")
    return {
        "model": build_bert_folder(root / "bert"),
        "l0": build_topk_sae_folder(root / "l0", hook_name="blocks.0.hook_resid_post", seed=10, d_sae=48, k=4),
        "l2": build_topk_sae_folder(root / "l2", hook_name="blocks.2.hook_resid_post", seed=12, d_sae=48, k=4),
        "corpus": write_corpus(root / "c.jsonl", n_docs=60),
    }


def test_identical_layers_on_the_diagonal_are_the_most_similar(parts: dict[str, Path], tmp_path: Path) -> None:
    model = ModelSpec("hf", str(parts["model"]))
    saes = (SAESpec("local", str(parts["l0"])), SAESpec("local", str(parts["l2"])))
    spec = SweepSpec(
        a=SweepSide(model, saes),
        b=SweepSide(model, saes),
        corpus=CorpusSpec("file", str(parts["corpus"])),
        harvest=HarvestSettings(max_tokens=1500, max_len=32, device="cpu"),
        similarity=SimilaritySettings(metrics=("svcca", "rsa"), n_null=49, seed=0),
    )
    table = build_sweep(spec, tmp_path / "sweep", device="cpu")
    assert (tmp_path / "sweep" / "sweep.parquet").is_file() and (tmp_path / "sweep" / "sweep.json").is_file()
    svcca = table.filter(pl.col("metric") == "svcca").sort("layer_a", "layer_b")
    assert svcca.height == 4
    values = svcca["value"].to_numpy().reshape(2, 2)
    # the same SAE on both sides pairs every live feature with itself: a perfect match
    np.testing.assert_allclose(np.diag(values), 1.0, atol=1e-4)
    diag = svcca.filter(pl.col("layer_a") == pl.col("layer_b"))
    assert (diag["p_value"] <= 1 / 50 + 1e-12).all() and (diag["mean_matched_corr"] > 0.999).all()
    off = svcca.filter(pl.col("layer_a") != pl.col("layer_b"))
    assert (off["value"] < 0.999).all()
    assert set(svcca["label_a"].to_list()) == {"blocks.0.hook_resid_post", "blocks.2.hook_resid_post"}


def test_sweep_cli_rejects_unequal_hook_lists(parts: dict[str, Path], tmp_path: Path, capsys) -> None:
    args = ["sweep", "--model-a", str(parts["model"]), "--saes-a", f"{parts['l0']},{parts['l2']}"]
    args += ["--hooks-a", "blocks.0.hook_resid_post", "--model-b", str(parts["model"]), "--saes-b", str(parts["l2"])]
    args += ["--corpus", f"file:{parts['corpus']}", "--out", str(tmp_path / "s")]
    assert main(args) == 2
    assert "one hook per SAE" in capsys.readouterr().err
