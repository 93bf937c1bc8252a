"""Snippets, hover contexts and search results show the original text through the units' character offsets."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import pytest

from components import data
from components.widgets import render_snippet
from core.harvest.specs import HarvestSettings
from core.harvest.windows import tokenize_windows, units_frame

DOCS = [
    "An infallible method of conciliating a tiger is to allow oneself to be devoured.",
    "Café   owners\n\tdisagree: CO2 rose 12.5% in 2024!",
]


@pytest.fixture(scope="module")
def wordpiece() -> Any:
    from transformers import AutoTokenizer

    from core.harvest.loading import default_bert_tokenizer

    return AutoTokenizer.from_pretrained(default_bert_tokenizer())


@pytest.fixture(scope="module")
def index(wordpiece: Any) -> tuple[data.TextIndex, pl.DataFrame]:
    # the harvest's own tokenization and units table (WordPiece: sub-word pieces are units)
    windows = tokenize_windows(wordpiece, DOCS, HarvestSettings(max_tokens=500, max_len=64))
    units = units_frame(windows, DOCS)
    docs = pl.DataFrame({"doc": [0, 1], "text": DOCS})
    return data.text_index_from_frames(units, docs), units


def _doc_units(units: pl.DataFrame, doc: int) -> tuple[int, int]:
    rows = units.filter(pl.col("doc") == doc)["unit"]
    return int(rows.min()), rows.len()


def test_wordpiece_pieces_join_as_the_text_has_them(index: tuple) -> None:
    text_index, units = index
    first, n = _doc_units(units, 0)
    segments = data.window_segments(text_index, first, n)
    assert segments is not None
    # the pieces are units of their own ("in", "fall", "ible"), yet the window reads as the document does
    assert {"fall", "ible"} <= set(units["text"].to_list())
    assert "".join(t for t, _ in segments) == DOCS[0]
    # every unit segment is exactly that unit's characters
    for text, i in segments:
        if i is not None:
            row = units.row(first + i, named=True)
            assert text == DOCS[0][row["char_start"] : row["char_end"]]


def test_whitespace_between_units_becomes_one_space(index: tuple) -> None:
    text_index, units = index
    first, n = _doc_units(units, 1)
    joined = "".join(t for t, _ in data.window_segments(text_index, first, n) or [])
    assert joined == "Café owners disagree: CO2 rose 12.5% in 2024!"


def test_context_brackets_the_units_own_characters(index: tuple) -> None:
    text_index, units = index
    fall = units.filter((pl.col("doc") == 0) & (pl.col("text") == "fall"))["unit"].item()
    # three units each side: "An", "in" before; "ible", "method", "of" after
    assert data.context_text(text_index, int(fall), window=3) == "An in[fall]ible method of"
    tiger = units.filter(pl.col("text") == "tiger")["unit"].item()
    # the context stays inside its document
    assert data.context_text(text_index, int(tiger), window=100).endswith("devoured.")


def test_snippet_html_shows_the_text_and_keeps_the_raw_tokens_on_hover(index: tuple) -> None:
    text_index, units = index
    first, n = _doc_units(units, 0)
    tokens = units["text"].to_list()[first : first + n]
    acts = [0.0] * n
    center = tokens.index("fall")
    acts[center] = 2.0
    html = render_snippet(tokens, acts, center, 2.0, data.window_segments(text_index, first, n))
    assert "in fall ible" not in html
    assert "in</span><span" in html  # pieces touch, no space between them
    assert 'title="token &#x27;fall&#x27; · 2.000"' in html
    assert "rgba(242,158,31,1.00)" in html and "underline" in html
    # without offsets, the old joined view
    assert ">in</span> <span" in render_snippet(tokens, acts, center, 2.0, None)


def test_aligned_spans_render_the_same_way() -> None:
    # aligned units (two tokenizers' common cuts) are character spans, some covering several tokens of a side
    doc = "Café owners disagree"
    units = pl.DataFrame(
        {
            "unit": [0, 1, 2, 3],
            "doc": [0, 0, 0, 0],
            "pos": [0, 1, 2, 3],
            "text": ["Café", "owners", "dis", "agree"],
            "char_start": [0, 5, 12, 15],
            "char_end": [4, 11, 15, 20],
        }
    )
    text_index = data.text_index_from_frames(units, pl.DataFrame({"doc": [0], "text": [doc]}))
    segments = data.window_segments(text_index, 0, 4)
    assert [t for t, _ in segments or []] == ["Café", " ", "owners", " ", "dis", "agree"]
    assert data.context_text(text_index, 2, 1) == "owners [dis]agree"


def test_offsets_that_cannot_place_a_window_fall_back_to_the_units_texts() -> None:
    units = pl.DataFrame(
        {"doc": [0, 0, 1], "char_start": [0, 0, 0], "char_end": [0, 0, 0], "text": ["a", "b", "c"]},
        schema_overrides={"doc": pl.Int64},
    )
    text_index = data.text_index_from_frames(units, pl.DataFrame({"doc": [0, 1], "text": ["a b", "c"]}))
    assert data.window_segments(text_index, 0, 2) is None
    assert data.window_segments(text_index, 1, 2) is None  # two documents
    assert data.context_text(text_index, 1, 3) == "a [b]"
    assert np.array_equal(text_index.doc, [0, 0, 1])
