"""The demo's SAE training path on a tiny model: sae-lens trains, saves, reloads; the EV floor holds."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from core.demo.settings import DemoSettings
from core.demo.train import split_held_out_rows, train_side_sae
from core.harvest.corpus import load_corpus
from core.harvest.loading import load_model, load_sae
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec
from core.harvest.windows import tokenize_windows
from tests.core.builders import build_bert_folder, write_corpus


def test_train_side_sae_saves_a_loadable_sae_and_enforces_its_floor(tmp_path: Path) -> None:
    docs = load_corpus(CorpusSpec("file", str(write_corpus(tmp_path / "c.jsonl", n_docs=80))))
    model = load_model(ModelSpec("hf", str(build_bert_folder(tmp_path / "bert"))))
    settings = DemoSettings(n_tokens=2000, d_sae=64, k=8, epochs=3, batch_size=64, min_explained_variance=0.0)
    windows = tokenize_windows(model.tokenizer, docs, HarvestSettings(max_tokens=settings.n_tokens))
    train, held = split_held_out_rows(windows, settings)
    assert len(set(train) & set(held)) == 0 and len(train) + len(held) == settings.n_tokens
    report = train_side_sae(
        model,
        "blocks.1.hook_resid_post",
        windows,
        (train, held),
        settings,
        tmp_path / "sae",
        torch.device("cpu"),
        lambda *a: None,
    )
    # 84 steps on 1.8K tokens: far from converged, but an untrained or broken run stays near or below 0
    assert report["held_out_explained_variance"] > 0.3 and report["l0"] == pytest.approx(8.0)
    sae = load_sae(SAESpec("local", str(tmp_path / "sae")))
    assert (sae.hook_name, sae.d_sae, sae.architecture) == ("blocks.1.hook_resid_post", 64, "topk")
    strict = DemoSettings(n_tokens=2000, d_sae=64, k=8, epochs=1, batch_size=64, min_explained_variance=0.9999)
    with pytest.raises(RuntimeError, match="training recipe needs attention"):
        train_side_sae(
            model,
            "blocks.1.hook_resid_post",
            windows,
            (train, held),
            strict,
            tmp_path / "sae2",
            torch.device("cpu"),
            lambda *a: None,
        )
