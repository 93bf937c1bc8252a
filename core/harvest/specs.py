"""What to compare: frozen, validated specs for models, SAEs, corpora and harvest settings.

Specs are hashable (cache keys) and round-trip through plain dicts for the manifest.
The short string forms are what the CLI and the app's form accept:

- model: ``hf:<id or folder>``, ``hf-package:<dist>`` (a transformers folder inside an
  installed package), ``gguf:<file.gguf>``, ``gguf-package:<dist>``,
  ``onnx-bert:<file.onnx>``, ``onnx-bert-package:<dist>``; a bare value means ``hf:``.
- SAE: ``local:<folder>`` (sae-lens ``save_model`` layout), ``sparsify:<folder>``
  (EleutherAI layout, one ``layers.N`` folder), ``release:<release>/<sae id>``; a bare
  folder is detected from its files.
- corpus: ``fortunes``, ``kjv``, ``file:<path .txt/.jsonl/.parquet>``, ``hf:<dataset name>``.

Models and SAEs handed over as Python objects (``core.compare`` in a notebook) get specs of
kind ``memory``, whose source names the object and a fingerprint of its weights; no string
parses to that kind, and a memory spec cannot be loaded again (the bundle records what it was).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from core.errors import SpecError

MODEL_KINDS = ("hf", "hf-package", "gguf", "gguf-package", "onnx-bert", "onnx-bert-package")
SAE_KINDS = ("local", "sparsify", "release")
CORPUS_KINDS = ("fortunes", "kjv", "file", "hf")
# the kind of a model or SAE passed in as an object rather than named by a string
MEMORY_KIND = "memory"
# the corpus a comparison runs on when none is named (CLI, app form)
DEFAULT_CORPUS = "fortunes"
# how token codes pool into an aligned unit (core.align.compute_pooled_codes)
POOLINGS = ("max", "last", "mean", "sum", "first")
# what the corpus reader does with a row whose text is not a string
BAD_ROWS = ("refuse", "skip")


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from.

    Attributes:
        kind: one of ``MODEL_KINDS``.
        source: hub id, folder, file or installed distribution name.
        tokenizer: tokenizer source (hub id or folder) for models that ship none (ONNX).
    """

    kind: str
    source: str
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in MODEL_KINDS and self.kind != MEMORY_KIND:
            raise SpecError(f"Unknown model kind {self.kind!r}; choose one of {', '.join(MODEL_KINDS)}.")
        if not self.source:
            raise SpecError("A model spec needs a source (a hub id, folder or file).")

    @classmethod
    def parse(cls, text: str, tokenizer: str | None = None) -> ModelSpec:
        """Parse ``kind:source`` (bare text means a transformers id or folder)."""
        kind, sep, rest = text.partition(":")
        if sep and kind in MODEL_KINDS:
            return cls(kind, rest, tokenizer)
        if text.endswith(".gguf"):
            return cls("gguf", text, tokenizer)
        if text.endswith(".onnx"):
            return cls("onnx-bert", text, tokenizer)
        return cls("hf", text, tokenizer)

    def label(self) -> str:
        return f"{self.kind}:{self.source}"


@dataclass(frozen=True)
class SAESpec:
    """Where an SAE comes from.

    Attributes:
        kind: one of ``SAE_KINDS``.
        source: a folder, or a sae-lens release name.
        sae_id: the SAE id inside a release (release kind only).
    """

    kind: str
    source: str
    sae_id: str | None = None

    def __post_init__(self) -> None:
        if self.kind not in SAE_KINDS and self.kind != MEMORY_KIND:
            raise SpecError(f"Unknown SAE kind {self.kind!r}; choose one of {', '.join(SAE_KINDS)}.")
        if self.kind == "release" and not self.sae_id:
            raise SpecError("A sae-lens release needs an SAE id too: write release:<release>/<sae id>.")

    @classmethod
    def parse(cls, text: str) -> SAESpec:
        """Parse ``kind:source``; a bare folder is detected from the files it holds."""
        kind, sep, rest = text.partition(":")
        if sep and kind == "release":
            release, slash, sae_id = rest.partition("/")
            if not slash:
                raise SpecError(f"Release spec {text!r} lacks an SAE id; write release:<release>/<sae id>.")
            return cls("release", release, sae_id)
        if sep and kind in SAE_KINDS:
            return cls(kind, rest)
        folder = Path(text)
        if (folder / "sae.safetensors").is_file():
            return cls("sparsify", text)
        return cls("local", text)

    def label(self) -> str:
        return f"release:{self.source}/{self.sae_id}" if self.kind == "release" else f"{self.kind}:{self.source}"


@dataclass(frozen=True)
class SideSpec:
    """One side of a comparison: a model, an SAE, and the hook the SAE reads.

    Attributes:
        model: the model spec.
        sae: the SAE spec.
        hook: hook name (``blocks.L.hook_resid_post`` / ``blocks.L.hook_resid_pre``);
            ``None`` takes the hook recorded in the SAE's config.
        label: a short display name.
    """

    model: ModelSpec
    sae: SAESpec
    hook: str | None = None
    label: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class CorpusSpec:
    """Which text to run both models over.

    Attributes:
        kind: one of ``CORPUS_KINDS``.
        source: file path or dataset name (file and hf kinds).
        text_column: the column (parquet, jsonl, datasets) holding the text.
        split: datasets split (hf kind).
        max_docs: keep at most this many documents (``None``: all).
        bad_rows: what to do with a row whose text is not a string (null, number, list) or
            not encodable: ``refuse`` (the default: one sentence naming the row) or ``skip``
            (leave it out; the manifest counts it).
    """

    kind: str
    source: str | None = None
    text_column: str = "text"
    split: str = "train"
    max_docs: int | None = None
    bad_rows: str = "refuse"

    def __post_init__(self) -> None:
        if self.kind not in CORPUS_KINDS:
            raise SpecError(f"Unknown corpus kind {self.kind!r}; choose one of {', '.join(CORPUS_KINDS)}.")
        if self.kind in ("file", "hf") and not self.source:
            raise SpecError(f"A {self.kind} corpus needs a source: write {self.kind}:<path or name>.")
        if self.max_docs is not None and self.max_docs <= 0:
            raise SpecError("max_docs must be a positive number of documents.")
        if self.bad_rows not in BAD_ROWS:
            raise SpecError(f"Unknown bad_rows {self.bad_rows!r}; choose one of {', '.join(BAD_ROWS)}.")

    @classmethod
    def parse(
        cls, text: str, text_column: str = "text", max_docs: int | None = None, bad_rows: str = "refuse"
    ) -> CorpusSpec:
        """Parse ``fortunes``, ``kjv``, ``file:<path>`` or ``hf:<name>`` (a bare path means a file)."""
        kind, sep, rest = text.partition(":")
        if text in ("fortunes", "kjv"):
            return cls(text, None, text_column, max_docs=max_docs, bad_rows=bad_rows)
        if sep and kind in CORPUS_KINDS:
            return cls(kind, rest, text_column, max_docs=max_docs, bad_rows=bad_rows)
        return cls("file", text, text_column, max_docs=max_docs, bad_rows=bad_rows)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class HarvestSettings:
    """How the models are run over the corpus.

    Attributes:
        max_tokens: stop after this many units (kept tokens) in total.
        max_len: tokens per window, special tokens included; longer documents are cut
            into consecutive windows.
        batch_tokens: padded tokens per forward batch (batches are sorted by length).
        shard_units: units per shard; a killed harvest resumes at the first unfinished shard.
        mask_special: drop special tokens ([CLS], [SEP], BOS, ...) from the units.
        sanity_tokens: tokens used for the hook-sanity reconstruction check.
        device: ``auto``, ``cpu`` or ``cuda``.
        pooling: how a side's token codes become one aligned unit's codes when the two
            tokenizers differ (``max``, ``last``, ``mean``, ``sum``, ``first``; see
            ``core.align.compute_pooled_codes``); unused when they tokenize alike.
    """

    max_tokens: int = 250_000
    max_len: int = 128
    batch_tokens: int = 8192
    shard_units: int = 32_768
    mask_special: bool = True
    sanity_tokens: int = 4096
    device: str = "auto"
    pooling: str = "max"

    def __post_init__(self) -> None:
        if self.pooling not in POOLINGS:
            raise SpecError(f"Unknown pooling {self.pooling!r}; choose one of {', '.join(POOLINGS)}.")
        for name in ("max_tokens", "max_len", "batch_tokens", "shard_units", "sanity_tokens"):
            if getattr(self, name) <= 0:
                raise SpecError(f"Harvest setting {name} must be positive, got {getattr(self, name)}.")
        if self.max_len < 8:
            raise SpecError(f"max_len must be at least 8 tokens, got {self.max_len}.")
        if self.batch_tokens < self.max_len:
            raise SpecError(f"batch_tokens ({self.batch_tokens}) must be at least max_len ({self.max_len}).")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
