"""The one token normaliser: the documented spellings, and the polars expression equal to the Python rule."""

from __future__ import annotations

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from core.tokens import normalize_token, normalize_token_expr


def test_every_tokenizer_spelling_normalises_to_the_same_word() -> None:
    for spelling in ("ĠMonday", " Monday", "▁Monday", "monday", "MONDAY ", "##Monday"):
        assert normalize_token(spelling) == "monday"
    assert normalize_token("Ċ") == "" and normalize_token("\n") == "" and normalize_token("  ") == ""
    assert normalize_token("##ing") == "ing" and normalize_token(".") == "."
    assert normalize_token("ĠMonday", fold_case=False) == "Monday"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.text(alphabet=st.sampled_from(list("aZ #.\nĠĊ▁ßÉ")), max_size=8), min_size=1, max_size=20))
def test_polars_expression_equals_the_python_rule(tokens: list[str]) -> None:
    frame = pl.DataFrame({"t": tokens})
    for fold in (True, False):
        got = frame.select(normalize_token_expr("t", fold_case=fold))["t"].to_list()
        assert got == [normalize_token(t, fold_case=fold) for t in tokens]
