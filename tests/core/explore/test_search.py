"""Search by feature id and by token, on a bundle with planted features and a known assignment."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from core.bundle.reader import open_bundle
from core.dashboards.settings import DashboardSettings
from core.dashboards.stage import build_dashboards
from core.errors import BundleError, DashboardError, SideError
from core.explore.search import TOKEN_RESULT_COLUMNS, feature_partners, search_feature, search_token
from core.tokens import normalize_token
from tests.core._tiny_bundle import ASSIGNMENT, COMET, write_bundle
from tests.core._tiny_bundle import planted_comet as _planted


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    texts, a, b = _planted()
    path = write_bundle(tmp_path_factory.mktemp("search") / "b", texts, a, b, doc_len=100, assignment=ASSIGNMENT)
    return build_dashboards(path, DashboardSettings(chunk_units=128))


@pytest.fixture(scope="module")
def bundle_without_assignment(tmp_path_factory):
    texts, a, b = _planted()
    path = write_bundle(tmp_path_factory.mktemp("search") / "b", texts, a, b, doc_len=100)
    return build_dashboards(path, DashboardSettings(chunk_units=128))


def test_token_search_ranks_by_mean_activation_over_occurrences(bundle):
    found = search_token(bundle, "comet")
    assert found.columns == list(TOKEN_RESULT_COLUMNS)
    # by hand: 6 occurrences; a3: 6 x 2.0 / 6 = 2.0; b2: 3 x 3.0 / 6 = 1.5; b4: 6 x 1.0 / 6 = 1.0
    assert list(zip(found["side"], found["feature"], strict=True)) == [("a", 3), ("b", 2), ("b", 4)]
    np.testing.assert_allclose(found["mean_act"], [2.0, 1.5, 1.0])
    np.testing.assert_allclose(found["mean_act_active"], [2.0, 3.0, 1.0])
    assert found["count"].to_list() == [6, 3, 6]
    assert found["token_occurrences"].to_list() == [6, 6, 6]
    np.testing.assert_allclose(found["coverage"], [1.0, 0.5, 1.0])
    assert found["in_top_tokens"].all() and found["in_top_examples"].all()
    # partners from the assignment, strongest first; b's partners point back to a
    assert found["partners"].to_list() == [[2, 4], [3], [3]]
    assert found["partner_corr"].to_list() == [[0.9, 0.7], [0.9], [0.7]]


def test_token_search_normalises_unless_exact(bundle):
    assert search_token(bundle, " Comet").height == 3
    assert search_token(bundle, "Ġcomet").height == 3
    assert search_token(bundle, " Comet", exact=True).height == 0
    assert search_token(bundle, "comet", sides=("b",))["side"].to_list() == ["b", "b"]
    assert search_token(bundle, "comet", limit=1).height == 1
    assert search_token(bundle, "zebra").height == 0
    assert normalize_token("##ing") == "ing" and normalize_token("▁The") == "the"


def test_search_without_assignment_has_empty_partners(bundle_without_assignment):
    found = search_token(bundle_without_assignment, "comet")
    assert found.height == 3
    assert found["partners"].to_list() == [[], [], []]
    assert feature_partners(bundle_without_assignment, "a").height == 0
    card = search_feature(bundle_without_assignment, "a", 3)
    assert card.partners.height == 0 and card.partners.columns == ["partner", "corr", "kept", "reason", "method"]


def test_feature_search_returns_its_card(bundle):
    card = search_feature(bundle, "b", 2)
    assert card.dashboard["count"] == 3 and card.dashboard["top_tokens_by_count"] == ["comet"]
    top = card.examples.filter(pl.col("kind") == "top")
    assert sorted(top["unit"].to_list()) == COMET[:3]
    assert card.partners.row(0, named=True) == {
        "partner": 3,
        "corr": 0.9,
        "kept": True,
        "reason": None,
        "method": "many_to_1",
    }
    assert card.hook == "blocks.1.hook_resid_post.b"
    dropped = search_feature(bundle, "a", 0).partners
    assert dropped["kept"].to_list() == [False] and dropped["reason"].to_list() == ["corr below threshold"]


def test_bad_searches_raise_user_errors(bundle, tmp_path):
    with pytest.raises(DashboardError, match="does not exist on side a"):
        search_feature(bundle, "a", 6)
    with pytest.raises(DashboardError, match="does not exist on side b"):
        search_feature(bundle, "b", -1)
    with pytest.raises(SideError, match="Side 'c'"):
        search_feature(bundle, "c", 0)
    with pytest.raises(DashboardError, match="empty"):
        search_token(bundle, "  ")
    texts, a, b = _planted()
    bare = open_bundle(write_bundle(tmp_path / "bare", texts, a, b))
    with pytest.raises(BundleError, match="no dashboards"):
        search_token(bare, "comet")
