"""``core.match_codes``: the whole matching stage in memory, equal to what ``build_matching`` writes."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import scipy.sparse as sp
import torch
from polars.testing import assert_frame_equal

import core
from core.bundle.reader import open_bundle
from core.errors import MatchingError
from core.matching.settings import MatchSettings
from core.matching.stage import build_matching
from tests.core.planted import build_planted_config, dense_pearson, make_planted, write_bundle


@pytest.fixture(scope="module")
def planted():
    return make_planted(build_planted_config())


def _tokens(planted) -> list[list[str]]:
    tokens = [[f"w{i}"] for i in range(planted.codes_a.n_features)]
    tokens[int(planted.pairs[0, 0])] = ["<bos>", "x"]  # non-concept: its pair must be dropped
    return tokens


def test_build_matching_writes_exactly_what_match_codes_returns(tmp_path, planted) -> None:
    tokens_a = _tokens(planted)
    path = write_bundle(
        tmp_path / "bundle",
        planted.codes_a,
        planted.codes_b,
        planted.docs,
        planted.w_dec_a,
        planted.w_dec_b,
        top_tokens_a=tokens_a,
    )
    settings = MatchSettings(top_k=4)
    bundle = build_matching(path, settings, device="cpu")
    unit_text = bundle.units().sort("unit").collect()["text"].to_list()
    result = core.match_codes(
        planted.codes_a,
        planted.codes_b,
        planted.docs,
        settings,
        decoder_a=planted.w_dec_a,
        decoder_b=planted.w_dec_b,
        features_a=tokens_a,
        features_b=[[f"bword{i}"] for i in range(planted.codes_b.n_features)],
        unit_text=unit_text,
        device="cpu",
    )
    assert isinstance(result, core.MatchResult)
    assert_frame_equal(bundle.matches().collect(), result.matches)
    assert_frame_equal(bundle.assignment().collect(), result.assignment)
    assert result.weight_matches is not None
    assert_frame_equal(pl.read_parquet(path / "weight_matches.parquet"), result.weight_matches)
    record = open_bundle(path).manifest["matching"]
    assert record["summary"] == result.summary
    assert record["settings"] == settings.to_dict() == result.record()["settings"]
    assert set(record["timings"]) == {"correlate_s", "significance_s", "labels_s", "assign_s", "evidence_s", "total_s"}
    assert record["labels"] == result.labels and record["preset"] == settings.preset
    assert result.feature_tokens_a is not None
    assert_frame_equal(pl.read_parquet(path / "feature_tokens_a.parquet"), result.feature_tokens_a)
    # the planted answer: every shared concept but the non-concept one is a kept pair
    kept = result.assignment.filter("kept")
    truth = {(int(a), int(b)) for a, b in planted.pairs[1:]}
    assert truth <= set(zip(kept["feature_a"], kept["feature_b"], strict=True))
    dropped = result.assignment.filter(pl.col("feature_a") == int(planted.pairs[0, 0]))
    assert dropped["reason"].to_list() == ["nonconcept_a"]
    assert result.summary["n_split_groups_a"] == len(planted.splits)


def _as_torch_sparse(codes) -> torch.Tensor:
    coo = codes.to_scipy().tocoo()
    return torch.sparse_coo_tensor(np.vstack([coo.row, coo.col]), coo.data, coo.shape, check_invariants=True)


@pytest.mark.parametrize("form", ["scipy", "numpy", "torch", "torch_sparse"])
def test_every_input_form_gives_the_same_matches(planted, form: str) -> None:
    convert = {
        "scipy": lambda c: sp.csr_matrix(c.to_scipy()),
        "numpy": lambda c: c.to_dense(),
        "torch": lambda c: torch.from_numpy(c.to_dense()),
        "torch_sparse": _as_torch_sparse,
    }[form]
    settings = MatchSettings(top_k=3)
    reference = core.match_codes(planted.codes_a, planted.codes_b, planted.docs, settings, device="cpu")
    other = core.match_codes(convert(planted.codes_a), convert(planted.codes_b), planted.docs, settings, device="cpu")
    assert_frame_equal(reference.matches, other.matches)
    assert_frame_equal(reference.assignment, other.assignment)


def test_without_decoders_cos_is_null_and_corr_matches_a_dense_reference(planted) -> None:
    result = core.match_codes(planted.codes_a.to_dense(), planted.codes_b.to_dense(), device="cpu")
    assert result.weight_matches is None
    assert result.feature_tokens_a is None and "token_overlap" not in result.matches.columns  # no unit_text
    assert result.matches["cos"].null_count() == result.matches.height
    r = dense_pearson(planted.codes_a, planted.codes_b)
    best = result.matches.filter((pl.col("direction") == "a->b") & (pl.col("rank") == 1))
    for fa, fb, corr in best.select("feature_a", "feature_b", "corr").iter_rows():
        assert corr == pytest.approx(r[fa, fb], abs=1e-6)
        assert fb == int(np.nanargmax(np.nan_to_num(r[fa], nan=-np.inf)))


def test_top_tokens_from_unit_text_drive_the_nonconcept_filter(planted) -> None:
    # every unit's text is "[CLS]": every live feature's top token is non-concept
    n = planted.codes_a.n_rows
    result = core.match_codes(planted.codes_a, planted.codes_b, unit_text=["[CLS]"] * n, device="cpu")
    assert result.summary["n_nonconcept_a"] > 0 and result.summary["n_nonconcept_b"] > 0
    assert not result.assignment["kept"].any()


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"docs": np.zeros(3, np.int64)}, "one integer document id per unit"),
        ({"decoder_a": np.zeros((2, 4), np.float32)}, "pass W_dec"),
        ({"features_a": [["x"]]}, "top tokens for 1 features"),
    ],
)
def test_bad_inputs_are_one_sentence_errors(planted, kwargs, fragment: str) -> None:
    with pytest.raises(MatchingError, match=fragment):
        core.match_codes(planted.codes_a, planted.codes_b, device="cpu", **kwargs)


def test_codes_of_different_lengths_are_refused(planted) -> None:
    with pytest.raises(MatchingError):
        core.match_codes(planted.codes_a.to_dense()[:-1], planted.codes_b, device="cpu")
