"""Tiny real models shared by the crosscoder tests (built once per session)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.core.builders import build_bert_folder, build_llama_folder, write_corpus


@pytest.fixture(scope="session", autouse=True)
def _one_thread() -> None:
    # two threads on a busy 2-core box ran the crosscoder's small matmuls about 40x slower (CROSSCODERS.md)
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def bert_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random BertModel (hidden 32, 3 blocks) with the MiniLM tokenizer."""
    return build_bert_folder(tmp_path_factory.mktemp("cc-bert") / "bert")


@pytest.fixture(scope="session")
def llama_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random LlamaForCausalLM (hidden 32, 3 blocks) with the MiniLM tokenizer."""
    return build_llama_folder(tmp_path_factory.mktemp("cc-llama") / "llama")


@pytest.fixture(scope="session")
def corpus_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small jsonl corpus."""
    return write_corpus(tmp_path_factory.mktemp("cc-corpus") / "corpus.jsonl")
