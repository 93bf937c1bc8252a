"""Harvest: codes equal a direct forward + encode, windows and units are right, resume is exact."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from core.bundle.reader import open_bundle
from core.harvest.corpus import load_corpus
from core.harvest.encode import HarvestSide
from core.harvest.loading import load_model, load_sae
from core.harvest.run import harvest
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.harvest.windows import tokenize_windows
from core.pipeline.compare import ComparisonSpec, build_comparison
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny")
    return {
        "model": build_bert_folder(root / "bert"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2, d_sae=48, k=3),
        "corpus": write_corpus(root / "corpus.jsonl"),
    }


def _spec(tiny: dict[str, Path], **harvest: object) -> ComparisonSpec:
    model = ModelSpec("hf", str(tiny["model"]))
    settings = {
        "max_tokens": 600,
        "max_len": 24,
        "shard_units": 150,
        "batch_tokens": 96,
        "sanity_tokens": 64,
        **harvest,
    }
    return ComparisonSpec(
        a=SideSpec(model, SAESpec("local", str(tiny["sae_a"]))),
        b=SideSpec(model, SAESpec("local", str(tiny["sae_b"]))),
        corpus=CorpusSpec("file", str(tiny["corpus"])),
        harvest=HarvestSettings(device="cpu", **settings),
    )


def _direct_codes(tiny: dict[str, Path], text: str, sae_folder: Path, hidden_index: int) -> np.ndarray:
    """The reference: one plain transformers forward with hidden_states, then SAE.encode."""
    from sae_lens import SAE
    from transformers import AutoModel, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny["model"])
    model = AutoModel.from_pretrained(tiny["model"]).eval()
    sae = SAE.load_from_disk(sae_folder).eval()
    enc = tok(text, return_tensors="pt", return_special_tokens_mask=True)
    keep = ~enc.pop("special_tokens_mask")[0].bool()
    with torch.no_grad():
        hidden = model(**enc, output_hidden_states=True).hidden_states[hidden_index][0]
        return sae.encode(hidden[keep]).numpy()


def test_codes_equal_direct_forward_and_encode(tiny: dict[str, Path], tmp_path: Path) -> None:
    out = build_comparison(_spec(tiny), tmp_path / "bundle", stages=())
    bundle = open_bundle(out)
    units = bundle.units().collect()
    docs = bundle.docs().collect()
    # doc 0 is short (one window), so a plain forward over the whole text is the same computation
    text = docs.filter(pl.col("doc") == 0)["text"][0]
    rows = units.filter(pl.col("doc") == 0)["unit"].to_numpy()
    for side, folder, index in (("a", tiny["sae_a"], 2), ("b", tiny["sae_b"], 3)):
        expected = _direct_codes(tiny, text, folder, index)
        got = bundle.codes(side).take_rows(rows).to_dense()
        np.testing.assert_allclose(got, expected, atol=1e-5)
    assert bundle.manifest["sides"]["a"]["hidden_states_index"] == 2
    assert bundle.manifest["n_units"] == units.height == 600


def test_units_are_the_text_at_their_offsets_and_windows_continue_positions(tiny: dict[str, Path]) -> None:
    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    model = load_model(ModelSpec("hf", str(tiny["model"])))
    settings = HarvestSettings(max_tokens=10_000, max_len=16)
    windows = tokenize_windows(model.tokenizer, docs, settings)
    long_doc = max(range(len(docs)), key=lambda d: len(docs[d]))
    mine = [w for w in windows if w.doc == long_doc]
    assert len(mine) > 1, "the long document must be cut into several windows"
    positions = np.concatenate([w.pos[w.keep] for w in mine])
    np.testing.assert_array_equal(positions, np.arange(len(positions)))
    # every kept token's span is its own text, with no special token among the units
    for w in mine:
        for (a, b), tid in zip(w.offsets[w.keep], w.input_ids[w.keep], strict=True):
            piece = model.tokenizer.convert_ids_to_tokens(int(tid)).removeprefix("##")
            assert docs[long_doc][a:b].lower() == piece
    assert sum(w.n_units for w in windows) == sum(len(model.tokenizer(d)["input_ids"]) - 2 for d in docs)


def test_token_budget_is_exact(tiny: dict[str, Path]) -> None:
    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    model = load_model(ModelSpec("hf", str(tiny["model"])))
    windows = tokenize_windows(model.tokenizer, docs, HarvestSettings(max_tokens=123, max_len=16))
    assert sum(w.n_units for w in windows) == 123


class _Killed(Exception):
    pass


def test_killed_harvest_resumes_to_identical_codes(tiny: dict[str, Path], tmp_path: Path) -> None:
    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    model = load_model(ModelSpec("hf", str(tiny["model"])))
    sides = {
        "a": HarvestSide(model, load_sae(SAESpec("local", str(tiny["sae_a"]))), model.hook("blocks.1.hook_resid_post")),
        "b": HarvestSide(model, load_sae(SAESpec("local", str(tiny["sae_b"]))), model.hook("blocks.2.hook_resid_post")),
    }
    settings = HarvestSettings(max_tokens=600, max_len=24, shard_units=150, batch_tokens=96)
    cpu = torch.device("cpu")
    whole = harvest(sides, docs, settings, tmp_path / "whole", cpu)
    assert whole.n_shards >= 3

    def kill_after_two(stage: str, done: int, total: int) -> None:
        if done >= 300:
            raise _Killed

    with pytest.raises(_Killed):
        harvest(sides, docs, settings, tmp_path / "killed", cpu, kill_after_two)
    resumed = harvest(sides, docs, settings, tmp_path / "killed", cpu)
    assert resumed.resumed_shards >= 2
    for s in ("a", "b"):
        np.testing.assert_array_equal(resumed.codes[s].indptr, whole.codes[s].indptr)
        np.testing.assert_array_equal(resumed.codes[s].indices, whole.codes[s].indices)
        np.testing.assert_array_equal(resumed.codes[s].values, whole.codes[s].values)
    assert resumed.units.equals(whole.units)
    for key in ("count", "sum", "sumsq", "max"):
        np.testing.assert_allclose(resumed.moments["a"][key], whole.moments["a"][key])


def test_feature_stats_match_dense_reference(tiny: dict[str, Path], tmp_path: Path) -> None:
    bundle = open_bundle(build_comparison(_spec(tiny), tmp_path / "bundle", stages=()))
    dense = bundle.codes("b").to_dense().astype(np.float64)
    feats = bundle.features("b").collect().sort("feature")
    np.testing.assert_allclose(feats["freq"].to_numpy(), (dense > 0).mean(0))
    np.testing.assert_allclose(feats["mean"].to_numpy(), dense.mean(0), atol=1e-9)
    np.testing.assert_allclose(feats["std"].to_numpy(), dense.std(0), atol=1e-6)
    np.testing.assert_allclose(feats["max"].to_numpy(), dense.max(0), atol=1e-6)
    np.testing.assert_array_equal(feats["is_dead"].to_numpy(), (dense > 0).sum(0) == 0)
    # top tokens: the first is the text of the unit with the feature's largest activation
    units = bundle.units().collect()["text"].to_list()
    alive = np.flatnonzero((dense > 0).any(0))
    for f in alive[:10]:
        assert feats["top_tokens"][int(f)][0] == units[int(dense[:, f].argmax())]


def _pca_sae(folder: Path, acts: np.ndarray, n_components: int, hook: str) -> Path:
    """An SAE that reconstructs exactly the top principal subspace of ``acts`` (planted hook)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    mean = acts.mean(0)
    _, _, vt = np.linalg.svd(acts - mean, full_matrices=False)
    basis = torch.from_numpy(vt[:n_components].astype(np.float32))
    cfg = TopKSAEConfig(d_in=acts.shape[1], d_sae=2 * n_components, k=2 * n_components, dtype="float32", device="cpu")
    cfg.metadata.hook_name = hook
    sae = TopKSAE(cfg)
    with torch.no_grad():
        # +p and -p latents: relu(p) - relu(-p) = p, so decode(encode(x)) = mean + projection of x - mean
        sae.W_enc.copy_(torch.cat([basis, -basis]).T)
        sae.W_dec.copy_(torch.cat([basis, -basis]))
        sae.b_enc.zero_()
        sae.b_dec.copy_(torch.from_numpy(mean.astype(np.float32)))
    sae.save_model(folder)
    return folder


def test_hook_sanity_exposes_an_off_by_one_hook(tiny: dict[str, Path], tmp_path: Path) -> None:
    from core.harvest.encode import collect_activations
    from core.harvest.sanity import hook_sanity
    from core.pipeline.compare import sanity_verdict

    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    # large initial weights, so that each block really changes the residual stream
    model = load_model(ModelSpec("hf", str(build_bert_folder(tmp_path / "bert", initializer_range=0.6))))
    settings = HarvestSettings(max_tokens=400, max_len=24, sanity_tokens=400)
    windows = tokenize_windows(model.tokenizer, docs, settings)
    acts = collect_activations(model, model.hook("blocks.1.hook_resid_post"), windows, settings, torch.device("cpu"))
    sae = load_sae(SAESpec("local", str(_pca_sae(tmp_path / "pca", acts, 6, "blocks.1.hook_resid_post"))))
    cpu = torch.device("cpu")

    right = hook_sanity(HarvestSide(model, sae, model.hook("blocks.1.hook_resid_post")), windows, settings, cpu)
    assert [r["hook"] for r in right] == [
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
        "blocks.2.hook_resid_post",
    ]
    assert right[1]["explained_variance"] > max(right[0]["explained_variance"], right[2]["explained_variance"]) + 0.05
    assert sanity_verdict(right)["ok"]

    # the same SAE declared one block too deep: the report shows the better hook one block up
    wrong = hook_sanity(HarvestSide(model, sae, model.hook("blocks.2.hook_resid_post")), windows, settings, cpu)
    verdict = sanity_verdict(wrong)
    assert not verdict["ok"] and verdict["best_hook"] == "blocks.1.hook_resid_post"
    assert "off by one" in verdict["message"]
