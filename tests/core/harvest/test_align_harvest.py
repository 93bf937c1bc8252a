"""Harvest across two tokenizers: tiny BERT (MiniLM WordPiece) vs tiny Llama (SmolLM2 byte-level BPE).

The SmolLM2 tokenizer comes from the cached conversion of the packaged GGUF (about 60 s the
first time on a fresh machine, hence ``slow``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch

from core.bundle.reader import open_bundle
from core.harvest.align import compute_alignment, compute_pooled_codes, tokenize_for_alignment
from core.harvest.corpus import load_corpus
from core.harvest.encode import HarvestSide
from core.harvest.loading import load_model, load_sae
from core.harvest.run import harvest
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.harvest.windows import plan_aligned_windows
from core.pipeline.compare import ComparisonSpec, build_comparison
from tests.core.builders import build_bert_folder, build_topk_sae_folder

pytestmark = pytest.mark.slow

SENTENCES = [
    "Café owners said CO₂ emissions rose 12.5% in 2024, naïvely.",
    "The [CLS] token and <|endoftext|> are plain text here 😀 东京.",
    "Time flies like an arrow; fruit flies like a banana.",
    "   Indented lines\n\n  and blank ones\tkeep their spaces.",
    "İstanbul's ﬁnal oﬃce re\u0301sume\u0301 a\u200bb end.",
]


def _write_corpus(path: Path, n_docs: int = 40) -> Path:
    rows = []
    for i in range(n_docs):
        words = " ".join(SENTENCES[(i + j) % len(SENTENCES)] for j in range(1 + i % 6))
        rows.append({"text": f"Doc {i}: {words}"})
    path.write_text("\n".join(json.dumps(r) for r in rows))
    return path


def _build_llama_with_smollm2_tokenizer(path: Path) -> Path:
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from tests.core.harvest.test_align import smollm2_folder

    torch.manual_seed(0)
    cfg = LlamaConfig(
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        num_key_value_heads=2,
        intermediate_size=64,
        max_position_embeddings=256,
        vocab_size=49152,
    )
    LlamaForCausalLM(cfg).save_pretrained(path)
    AutoTokenizer.from_pretrained(str(smollm2_folder())).save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cross")
    return {
        "bert": build_bert_folder(root / "bert"),
        "llama": _build_llama_with_smollm2_tokenizer(root / "llama"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.1.hook_resid_post", seed=2, d_sae=48),
        "corpus": _write_corpus(root / "corpus.jsonl"),
    }


def _spec(tiny: dict[str, Path], **harvest: object) -> ComparisonSpec:
    settings = {"max_tokens": 500, "max_len": 32, "shard_units": 120, "batch_tokens": 128, "sanity_tokens": 64}
    return ComparisonSpec(
        a=SideSpec(ModelSpec("hf", str(tiny["bert"])), SAESpec("local", str(tiny["sae_a"]))),
        b=SideSpec(ModelSpec("hf", str(tiny["llama"])), SAESpec("local", str(tiny["sae_b"]))),
        corpus=CorpusSpec("file", str(tiny["corpus"])),
        harvest=HarvestSettings(device="cpu", **{**settings, **harvest}),
    )


def _reference_codes(tiny: dict[str, Path], text: str) -> dict[str, np.ndarray]:
    """Plain transformers forwards of the whole text per model, SAE.encode per token, max per aligned unit."""
    from sae_lens import SAE
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer

    enc = {}
    hidden = {}
    for side, folder, cls, causal in (("a", "bert", AutoModel, False), ("b", "llama", AutoModelForCausalLM, True)):
        tok = AutoTokenizer.from_pretrained(tiny[folder])
        enc[side] = tokenize_for_alignment(tok, [text], 512, causal)
        model = cls.from_pretrained(tiny[folder]).eval()
        ids = torch.from_numpy(enc[side].input_ids[0])[None]
        with torch.no_grad():
            hidden[side] = model(input_ids=ids, output_hidden_states=True).hidden_states[2][0]
    al = compute_alignment([text], enc["a"].spans(), enc["b"].spans())
    out = {}
    for side, token_unit in (("a", al.token_unit_a), ("b", al.token_unit_b)):
        sae = SAE.load_from_disk(tiny[f"sae_{side}"]).eval()
        with torch.no_grad():
            codes = sae.encode(hidden[side]).numpy()
        r, c = np.nonzero(codes)
        out[side] = compute_pooled_codes(r, c, codes[r, c], token_unit, al.n_units, codes.shape[1]).to_dense()
    return out


def test_cross_tokenizer_bundle_equals_direct_forward_pooled(tiny: dict[str, Path], tmp_path: Path) -> None:
    bundle = open_bundle(build_comparison(_spec(tiny), tmp_path / "bundle", stages=()))
    units = bundle.units().collect()
    docs = bundle.docs().collect()
    manifest = bundle.manifest
    assert manifest["unit_kind"] == "span" and units.height == manifest["n_units"] == 500
    stats = manifest["alignment"]
    assert stats["n_units"] == 500 and stats["pooling"] == "max"
    assert 0.9 < stats["share_tokens_used_a"] <= 1 and 0.9 < stats["share_tokens_used_b"] <= 1
    assert 0.4 < stats["share_one_to_one"] < 1
    # every unit is the document text at its span, with positions counting up per document
    texts = dict(zip(docs["doc"].to_list(), docs["text"].to_list(), strict=True))
    for row in units.iter_rows(named=True):
        assert row["text"] == texts[row["doc"]][row["char_start"] : row["char_end"]] and row["text"].strip()
    for _, group in units.group_by("doc"):
        assert group["pos"].to_list() == list(range(group.height))
    # doc 0 fits one window on both sides, so a whole-text forward is the same computation
    text = texts[0]
    rows = units.filter(pl.col("doc") == 0)["unit"].to_numpy()
    expected = _reference_codes(tiny, text)
    for side in ("a", "b"):
        np.testing.assert_allclose(bundle.codes(side).take_rows(rows).to_dense(), expected[side], atol=1e-5)
    # hook sanity ran on each model's own tokens
    assert all(r["n_tokens"] > 0 for r in manifest["sides"]["b"]["hook_sanity"])


def test_windows_share_characters_and_fit_both_models(tiny: dict[str, Path]) -> None:
    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    sides = _sides(tiny)
    settings = HarvestSettings(max_tokens=100_000, max_len=24)
    windows, stats = plan_aligned_windows({s: side.model for s, side in sides.items()}, docs, settings)
    assert stats["n_units"] == sum(w.n_units for w in windows)
    long_doc = max(range(len(docs)), key=lambda d: len(docs[d]))
    mine = [w for w in windows if w.doc == long_doc]
    assert len(mine) > 2, "the long document must be cut into several windows"
    for w in mine:
        for side in ("a", "b"):
            assert len(w.sides[side].input_ids) <= 24
        # the causal side never uses position 0 (sink), and the tokens it keeps lie inside their units
        assert not w.sides["b"].keep[0]
    starts = np.concatenate([w.unit_start for w in mine])
    assert np.all(np.diff(starts) > 0)
    # the planted corpus is dense in emoji, CJK and combining accents, which MiniLM leaves out
    assert stats["share_tokens_used_a"] > 0.95 and stats["share_tokens_used_b"] > 0.85


def _sides(tiny: dict[str, Path]) -> dict[str, HarvestSide]:
    bert, llama = load_model(ModelSpec("hf", str(tiny["bert"]))), load_model(ModelSpec("hf", str(tiny["llama"])))
    return {
        "a": HarvestSide(bert, load_sae(SAESpec("local", str(tiny["sae_a"]))), bert.hook("blocks.1.hook_resid_post")),
        "b": HarvestSide(llama, load_sae(SAESpec("local", str(tiny["sae_b"]))), llama.hook("blocks.1.hook_resid_post")),
    }


class _Killed(Exception):
    pass


def test_killed_cross_harvest_resumes_to_identical_codes(tiny: dict[str, Path], tmp_path: Path) -> None:
    docs = load_corpus(CorpusSpec("file", str(tiny["corpus"])))
    sides = _sides(tiny)
    settings = HarvestSettings(max_tokens=400, max_len=32, shard_units=100, batch_tokens=128, pooling="last")
    cpu = torch.device("cpu")
    whole = harvest(sides, docs, settings, tmp_path / "whole", cpu)
    assert whole.n_shards >= 3 and whole.alignment is not None and whole.alignment["pooling"] == "last"

    def kill_after_two(stage: str, done: int, total: int) -> None:
        if done >= 200:
            raise _Killed

    with pytest.raises(_Killed):
        harvest(sides, docs, settings, tmp_path / "killed", cpu, kill_after_two)
    resumed = harvest(sides, docs, settings, tmp_path / "killed", cpu)
    assert resumed.resumed_shards >= 2
    for s in ("a", "b"):
        for field in ("indptr", "indices", "values"):
            np.testing.assert_array_equal(getattr(resumed.codes[s], field), getattr(whole.codes[s], field))
    assert resumed.units.equals(whole.units)
    assert resumed.alignment == whole.alignment


# ------------------------------------------------------------------ planted ground truth through the pipeline

LETTERS = "abcdefghijklmnopqrstuvwxyz"


def _token_letters(tokenizer: object, vocab_size: int) -> np.ndarray:
    """bool [vocab, 26]: which ASCII letters each token's text holds (## and space markers ignored)."""
    out = np.zeros((vocab_size, len(LETTERS)), dtype=bool)
    pieces = tokenizer.convert_ids_to_tokens(list(range(vocab_size)))  # type: ignore[attr-defined]
    for i, piece in enumerate(pieces):
        if piece is None:
            continue
        # byte-level BPE spells ASCII letters as themselves; a leading space shows as "Ġ"
        text = piece.removeprefix("##").replace("Ġ", "").lower()
        for c in set(text) & set(LETTERS):
            out[i, LETTERS.index(c)] = True
    return out


def _letter_model(folder: Path) -> None:
    """Make the model's embedding output say which letters each token holds (positions silenced)."""
    from transformers import AutoConfig, AutoModel, AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(folder)
    causal = "LlamaForCausalLM" in (AutoConfig.from_pretrained(folder).architectures or [])
    model = (AutoModelForCausalLM if causal else AutoModel).from_pretrained(folder)
    emb = model.get_input_embeddings().weight
    letters = _token_letters(tok, emb.shape[0])
    with torch.no_grad():
        emb.zero_()
        emb[:, : len(LETTERS)] = torch.from_numpy(letters.astype(np.float32))
        # the last dimension cancels the letters' sum, so BERT's LayerNorm (mean 0 already)
        # only rescales a token's vector: absent letters stay exactly 0, present ones positive
        emb[:, -1] = -torch.from_numpy(letters.sum(1).astype(np.float32))
        embeddings = getattr(model, "embeddings", None)
        if embeddings is not None:  # BERT: no position or segment signal, identity LayerNorm scale
            embeddings.position_embeddings.weight.zero_()
            embeddings.token_type_embeddings.weight.zero_()
    model.save_pretrained(folder)


def _letter_sae(folder: Path, perm: np.ndarray) -> Path:
    """A TopK SAE whose feature perm[l] reads letter l (positive only where the letter is present)."""
    from sae_lens import TopKSAE, TopKSAEConfig

    cfg = TopKSAEConfig(d_in=32, d_sae=32, k=26, dtype="float32", device="cpu")
    cfg.metadata.hook_name = "blocks.0.hook_resid_pre"
    sae = TopKSAE(cfg)
    w = torch.zeros(32, 32)
    for letter, feature in enumerate(perm):
        w[letter, feature] = 1.0
    with torch.no_grad():
        sae.W_enc.copy_(w)
        sae.W_dec.copy_(w.T)
        # a small threshold: LayerNorm leaves absent letters at about 1e-7, not exactly 0
        sae.b_enc.fill_(-0.1)
        sae.b_dec.zero_()
    sae.save_model(folder)
    return folder


def test_planted_letter_features_are_recovered_one_to_one_with_max_pooling(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    import shutil

    bert, llama = shutil.copytree(tiny["bert"], tmp_path / "bert"), shutil.copytree(tiny["llama"], tmp_path / "llama")
    for folder in (bert, llama):
        _letter_model(folder)
    rng = np.random.default_rng(0)
    perm_a, perm_b = rng.permutation(32)[:26], rng.permutation(32)[:26]
    spec = ComparisonSpec(
        a=SideSpec(ModelSpec("hf", str(bert)), SAESpec("local", str(_letter_sae(tmp_path / "sae_a", perm_a)))),
        b=SideSpec(ModelSpec("hf", str(llama)), SAESpec("local", str(_letter_sae(tmp_path / "sae_b", perm_b)))),
        corpus=CorpusSpec("file", str(tiny["corpus"])),
        harvest=HarvestSettings(device="cpu", max_tokens=800, max_len=32, sanity_tokens=64),
    )
    bundle = open_bundle(build_comparison(spec, tmp_path / "bundle", stages=("matching",)))
    # the greedy 1-1 pairs (rows it de-duplicated away are kept=False)
    pairs = bundle.assignment().collect().filter(pl.col("kept"))
    found = dict(zip(pairs["feature_a"].to_list(), pairs["feature_b"].to_list(), strict=True))
    texts = [t.lower() for t in bundle.units().collect()["text"].to_list()]
    # two letters found in exactly the same units are indistinguishable: check the others
    where = {c: tuple(i for i, t in enumerate(texts) if c in t) for c in LETTERS}
    distinct = [c for c in LETTERS if where[c] and sum(w == where[c] for w in where.values()) == 1]
    planted = {int(perm_a[LETTERS.index(c)]): int(perm_b[LETTERS.index(c)]) for c in distinct}
    assert len(planted) >= 15
    for fa, fb in planted.items():
        assert found.get(fa) == fb, f"letter feature {fa} of A should pair with {fb} of B"
