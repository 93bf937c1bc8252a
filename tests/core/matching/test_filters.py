"""Non-concept token list, pair filters and their reasons."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes
from core.errors import MatchingError
from core.matching.filters import apply_filters, compute_side_flags, top_token_sets
from core.matching.moments import compute_moments
from core.tokens import load_nonconcept_tokens, normalize_token, parse_token_line


def test_default_list_holds_the_issue_tokens():
    # the loaded set holds each token's normalised (lower-cased) form, as pairs' top tokens are compared
    tokens = load_nonconcept_tokens()
    for tok in [".", ",", "!", "?", "-", "<bos>", "<|endoftext|>", "<pad>", "", "[CLS]"]:
        assert normalize_token(tok) in tokens
    assert "the" not in tokens
    assert not any(t.startswith("# ") for t in tokens)


def test_loader_honours_escapes_and_comments(tmp_path):
    path = tmp_path / "tokens.txt"
    path.write_text("# a comment line\n\\t\n#\n<empty>\n##ing\n  word  \n\n\\n\n", encoding="utf-8")
    assert parse_token_line("# a comment line") is None
    assert parse_token_line("\\t") == "\t"
    assert parse_token_line("<empty>") == ""
    assert parse_token_line("#") == "#"
    assert parse_token_line("") is None
    # tab and newline normalise to the empty string, like <empty>
    assert load_nonconcept_tokens(path) == frozenset({"", "#", "ing", "word"})


def test_normalize_strips_whitespace_and_wordpiece_marks():
    assert normalize_token(" the ") == "the"
    assert normalize_token("##ing") == "ing"
    assert normalize_token("\n") == ""
    assert normalize_token(".") == "."


def test_missing_list_is_a_user_error(tmp_path):
    with pytest.raises(MatchingError, match="cannot be read"):
        load_nonconcept_tokens(tmp_path / "absent.txt")


def _flags():
    # A: feature 0 dead, 1 always on, 2 normal with a "." top token, 3 normal
    dense_a = np.zeros((10, 4), np.float32)
    dense_a[:, 1] = np.linspace(1, 2, 10)
    dense_a[::3, 2] = 1.0
    dense_a[1::4, 3] = 2.0
    dense_b = np.zeros((10, 3), np.float32)
    dense_b[::2, 0] = 1.0
    dense_b[1::3, 1] = 1.0
    dense_b[::5, 2] = 1.0
    feats_a = pl.DataFrame(
        {"feature": [0, 1, 2, 3], "top_tokens": [["x"], ["y"], ["cat", " ."], ["##dog", "run"]]},
        schema_overrides={"top_tokens": pl.List(pl.String)},
    )
    feats_b = pl.DataFrame(
        {"feature": [0, 1, 2], "top_tokens": [["dog"], ["\n", "tree"], ["cat"]]},
        schema_overrides={"top_tokens": pl.List(pl.String)},
    )
    tokens = load_nonconcept_tokens()
    fa = compute_side_flags(compute_moments(SparseCodes.from_dense(dense_a)), feats_a, tokens, max_freq=0.9)
    fb = compute_side_flags(compute_moments(SparseCodes.from_dense(dense_b)), feats_b, tokens, max_freq=0.9)
    return fa, fb


def test_side_flags():
    fa, fb = _flags()
    assert fa.dead.tolist() == [True, False, False, False]
    assert fa.always_on.tolist() == [False, True, False, False]
    assert fa.nonconcept.tolist() == [False, False, True, False]
    assert fb.nonconcept.tolist() == [False, True, False]  # "\n" is a top token of B 1
    assert fa.top_tokens[3] == frozenset({"dog", "run"})


def test_every_dropped_pair_keeps_its_reasons():
    fa, fb = _flags()
    pairs = pl.DataFrame(
        {
            "feature_a": [0, 1, 2, 3, 3, 3],
            "feature_b": [0, 0, 2, 0, 1, 2],
            "corr": [0.9, 0.5, 0.05, 0.6, 0.4, 0.1],
            "q": [0.01, 0.01, 0.01, 0.01, 0.2, 0.01],
        }
    )
    out = apply_filters(pairs, fa, fb, min_corr=0.1, require_shared_token=True, alpha=0.05)
    assert out["kept"].to_list() == [False, False, False, True, False, False]
    assert out["reason"].to_list() == [
        "dead_a",
        "always_on_a",
        "below_threshold",
        None,
        "nonconcept_b",
        "below_threshold",  # 0.1 is not above 0.1 (the paper keeps r > 0.1)
    ]
    assert out["reasons"].to_list()[2] == ["below_threshold", "nonconcept_a"]
    assert out["reasons"].to_list()[4] == ["nonconcept_b", "no_shared_token", "not_significant"]
    loose = apply_filters(pairs, fa, fb, min_corr=0.1)
    assert loose["reasons"].to_list()[4] == ["nonconcept_b"]


def test_features_frame_needs_its_columns():
    with pytest.raises(MatchingError, match="top_tokens"):
        top_token_sets(pl.DataFrame({"feature": [0]}), 1)
