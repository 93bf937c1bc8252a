"""The causal stage on both kinds of bundle: an SAE bundle's kept pairs and a crosscoder bundle's shared latents."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest

from core.bundle.reader import open_bundle
from core.cli.main import main
from core.crosscoder.settings import CausalSettings
from core.errors import SpecError
from core.pipeline.stages import run_stage
from tests.pages.app_bundle import build_app_bundle, build_crosscoder_app_bundle


def test_causal_stage_on_an_sae_bundles_top_kept_pairs(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    source = build_app_bundle(tmp_path_factory.getbasetemp() / "app-bundle")
    bundle = shutil.copytree(source, tmp_path / "sae-bundle")
    assert (
        main(
            [
                "causal",
                str(bundle),
                "--top-n",
                "6",
                "--n-probes",
                "20",
                "--probe-len",
                "16",
                "--n-perm",
                "49",
                "--device",
                "cpu",
            ]
        )
        == 0
    )
    opened = open_bundle(bundle)
    frame = pl.read_parquet(bundle / "causal.parquet")
    kept = opened.assignment().filter(pl.col("kept")).sort("corr", descending=True).collect().head(6)
    assert frame["feature_a"].to_list() == kept["feature_a"].to_list()
    assert frame["feature_b"].to_list() == kept["feature_b"].to_list()
    record = opened.manifest["causal"]
    assert record["select"] == "kept_pairs" and record["measure"] == {"a": "hidden_shift", "b": "hidden_shift"}
    assert record["n_probes"] == 20 and len(record["probes"]) == 20
    assert set(frame["status"]) <= {"ok", "inactive", "few_probes", "no_shift_a", "no_shift_b", "no_shift", "constant"}
    ok = frame.filter(pl.col("status") == "ok")
    assert ok["equivalence"].is_between(-1, 1).all() and ok["p_value"].is_between(0, 1).all()
    assert frame.filter(pl.col("status") != "ok")["equivalence"].null_count() == frame.height - ok.height
    with pytest.raises(SpecError, match="does not apply"):
        run_stage("causal", bundle, CausalSettings(select="shared"), device="cpu")
    with pytest.raises(SpecError, match="classifies crosscoder latents"):
        run_stage("analyses", bundle, device="cpu")


def test_causal_stage_on_a_crosscoder_bundles_shared_latents(
    tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    source = build_crosscoder_app_bundle(tmp_path_factory.getbasetemp() / "app-crosscoder")
    bundle = shutil.copytree(source, tmp_path / "cc-bundle")
    run_stage(
        "causal", bundle, CausalSettings(top_n=5, n_probes=20, probe_len=16, n_perm=49, device="cpu"), device="cpu"
    )
    opened = open_bundle(bundle)
    frame = pl.read_parquet(bundle / "causal.parquet")
    analyses = pl.read_parquet(bundle / "analyses.parquet")
    shared = analyses.filter(pl.col("tag_threshold") == "shared").sort(["fire", "latent"], descending=[True, False])
    assert frame["feature_a"].to_list() == shared["latent"].head(5).to_list()
    assert set(frame["tag"]) == {"shared"} and frame["feature_a"].to_list() == frame["feature_b"].to_list()
    assert opened.manifest["causal"]["select"] == "shared"
    assert "median_equivalence_shared" in opened.manifest["causal"]
    # the probe record locates each probe's text in the bundle's documents
    docs = opened.docs().collect()
    doc, start, length = opened.manifest["causal"]["probes"][0]
    text = docs.filter(pl.col("doc") == doc)["text"][0]
    assert len(text[start : start + length]) == length
