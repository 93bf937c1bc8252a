"""The Python front door: ``core.compare`` on names and in-memory objects, ``core.similarity``, lazy ``import core``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from polars.testing import assert_frame_equal

import core
from core.errors import CorpusError, ModelLoadError, SAELoadError, SimilarityError, SpecError
from core.harvest.loading import load_model, load_sae
from core.harvest.specs import ModelSpec, SAESpec
from core.spaces.compute import compute_similarity
from core.spaces.settings import SimilaritySettings
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("api")
    return {
        "model": build_bert_folder(root / "bert"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2, d_sae=48, k=3),
        "corpus": write_corpus(root / "corpus.jsonl"),
    }


CONFIG = core.ComparisonConfig(
    harvest=core.HarvestSettings(max_tokens=600, max_len=24, sanity_tokens=64, device="cpu"),
    matching=core.MatchSettings(top_k=3),
    stages=("matching",),
)


def test_in_memory_objects_give_the_same_bundle_as_their_folders(tiny, tmp_path: Path) -> None:
    corpus = f"file:{tiny['corpus']}"
    by_name = core.compare(
        str(tiny["sae_a"]), str(tiny["model"]), str(tiny["sae_b"]), str(tiny["model"]), corpus, tmp_path / "n", CONFIG
    )
    loaded = load_model(ModelSpec("hf", str(tiny["model"])))
    sae_a = load_sae(SAESpec("local", str(tiny["sae_a"]))).sae  # a plain sae_lens.SAE object
    sae_b = load_sae(SAESpec("local", str(tiny["sae_b"]))).sae
    texts = [json.loads(line)["text"] for line in tiny["corpus"].read_text().splitlines()]
    in_memory = core.compare(
        sae_a, (loaded.model, loaded.tokenizer), sae_b, loaded.model, texts, tmp_path / "m", CONFIG
    )
    for side in ("a", "b"):
        assert np.array_equal(by_name.codes(side).to_dense(), in_memory.codes(side).to_dense())
        described = in_memory.side(side)
        assert described["sae"]["spec"]["kind"] == "memory" and described["model"]["kind"] == "memory"
        assert described["hook"] == by_name.side(side)["hook"]
    assert_frame_equal(by_name.matches().collect(), in_memory.matches().collect())
    assert in_memory.manifest["corpus"]["kind"] == "memory"
    assert in_memory.manifest["corpus"]["content_hash"] == by_name.manifest["corpus"]["content_hash"]
    # the manifest gives the config back, piece by piece
    assert core.ComparisonConfig.from_manifest(in_memory.manifest) == CONFIG
    # a memory spec cannot be reloaded: live text in the app says why in one sentence
    with pytest.raises(ModelLoadError, match="passed in memory"):
        load_model(ModelSpec(**{k: in_memory.side("a")["model"][k] for k in ("kind", "source", "tokenizer")}))
    with pytest.raises(SAELoadError, match="passed in memory"):
        load_sae(SAESpec("memory", in_memory.side("a")["sae"]["spec"]["source"]))


def test_out_none_writes_a_fresh_folder_under_the_cache(tiny, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path / "cache"))
    config = core.ComparisonConfig(harvest=CONFIG.harvest, stages="none")
    bundle = core.compare(
        str(tiny["sae_a"]), str(tiny["model"]), str(tiny["sae_b"]), str(tiny["model"]), ["a b c"] * 50, settings=config
    )
    assert bundle.path.parent == tmp_path / "cache" / "bundles" and bundle.has("codes")
    assert str(bundle.path) in repr(bundle) and not bundle.has("matches")


def test_fingerprints_tell_two_in_memory_saes_apart(tiny) -> None:
    from core.harvest.loading import wrap_sae

    sae = load_sae(SAESpec("local", str(tiny["sae_a"]))).sae
    first = wrap_sae(sae).spec.source
    with torch.no_grad():
        sae.W_dec[0, 0] += 1.0
    assert wrap_sae(sae).spec.source != first and "TopK" in first


@pytest.mark.parametrize(
    ("texts", "error", "fragment"),
    [([], CorpusError, "holds no text"), ([" ", ""], CorpusError, "holds no text"), ([1, 2], CorpusError, "not text")],
)
def test_bad_texts_fail_before_the_harvest(tiny, tmp_path: Path, texts, error, fragment) -> None:
    with pytest.raises(error, match=fragment):
        core.compare(
            str(tiny["sae_a"]),
            str(tiny["model"]),
            str(tiny["sae_b"]),
            str(tiny["model"]),
            texts,
            tmp_path / "x",
            CONFIG,
        )


def test_non_sae_and_non_model_objects_are_one_sentence_errors(tiny, tmp_path: Path) -> None:
    with pytest.raises(SAELoadError, match="not a sae-lens SAE"):
        core.compare(
            object(), str(tiny["model"]), str(tiny["sae_b"]), str(tiny["model"]), ["x y"], tmp_path / "x", CONFIG
        )
    with pytest.raises(ModelLoadError, match="not a transformers model"):
        core.compare(
            str(tiny["sae_a"]), object(), str(tiny["sae_b"]), str(tiny["model"]), ["x y"], tmp_path / "y", CONFIG
        )
    with pytest.raises(SpecError, match="ComparisonConfig"):
        core.compare(str(tiny["sae_a"]), str(tiny["model"]), str(tiny["sae_b"]), str(tiny["model"]), ["x"], None, {})  # type: ignore[arg-type]


def test_similarity_on_planted_rows_finds_a_rotation_and_its_p_value() -> None:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((80, 12))
    rotation, _ = np.linalg.qr(rng.standard_normal((12, 12)))
    report = core.similarity(x, x @ rotation, metrics=("svcca", "cka", "procrustes"), n_null=99, seed=4)
    assert isinstance(report, core.SimilarityReport)
    assert report.metrics["metric"].to_list() == ["svcca", "cka", "procrustes"]
    for metric in ("svcca", "cka", "procrustes"):
        summary = report.metric(metric)
        # a rotation is perfectly similar; no shuffle of 80 pairs reaches it: p = (0 + 1) / (99 + 1)
        assert summary.value == pytest.approx(1.0, abs=1e-9) and summary.p_value == pytest.approx(0.01)
        assert summary.n_null == 99 and summary.n_pairs == 80 and summary.null_mean < 0.9
    unrelated = core.similarity(x, rng.standard_normal((80, 5)), metrics="svcca", n_null=99, seed=4)
    assert unrelated.metric("svcca").p_value > 0.01


def test_similarity_equals_compute_similarity_with_the_same_settings() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 7))
    report = core.similarity(x, y, n_null=30, seed=2)
    reference = compute_similarity(
        x, y, SimilaritySettings(metrics=report.metrics["metric"].to_list(), n_null=30, seed=2), "cpu"
    )
    assert set(reference) == {"svcca", "svcca_paper", "rsa", "cka", "procrustes"}
    for name, result in reference.items():
        summary = report.metric(name)
        assert summary.value == result.value and summary.p_value == result.primary.p_value
        assert summary.null_mean == pytest.approx(result.primary.mean)


def test_similarity_refuses_bundle_only_metrics_and_too_few_rows() -> None:
    with pytest.raises(SpecError, match="matched_corr"):
        core.similarity(np.zeros((5, 2)), np.zeros((5, 2)), metrics=("matched_corr",))
    with pytest.raises(SimilarityError, match="at least 3"):
        core.similarity(np.ones((2, 3)), np.ones((2, 3)), n_null=0)


def test_every_exported_name_resolves() -> None:
    # `import core` itself loads no torch: tests/test_architecture.py checks that in a fresh interpreter
    missing = [name for name in core.__all__ if getattr(core, name, None) is None]
    assert not missing, missing
    assert set(core.__all__) <= set(dir(core))
    assert core.match_codes.__module__ == "core.pipeline.api" and core.open_bundle is core.bundle.reader.open_bundle
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        core.nope  # noqa: B018
