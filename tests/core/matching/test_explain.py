"""explain_pair against dense references, and the parsing of feature names."""

from __future__ import annotations

import numpy as np
import pytest

from core.bundle.reader import open_bundle
from core.errors import SpecError
from core.matching.explain import explain_pair, parse_pair
from tests.core.planted import build_planted_config, make_planted, write_bundle


def test_explain_equals_dense_numpy(tmp_path):
    planted = make_planted(build_planted_config(n_units=2500, seed=4))
    path = write_bundle(
        tmp_path / "b", planted.codes_a, planted.codes_b, planted.docs, planted.w_dec_a, planted.w_dec_b
    )
    bundle = open_bundle(path)
    x, y = planted.codes_a.to_dense().astype(np.float64), planted.codes_b.to_dense().astype(np.float64)
    for a, b in [tuple(planted.pairs[0]), (0, 1), (int(planted.pairs[3, 0]), int(planted.pairs[5, 1]))]:
        ev = explain_pair(bundle, int(a), int(b))
        assert ev.corr == pytest.approx(np.corrcoef(x[:, a], y[:, b])[0, 1], abs=1e-9)
        fire_a, fire_b = x[:, a] > 0, y[:, b] > 0
        assert ev.n_coactive == int((fire_a & fire_b).sum())
        assert ev.n_a == int(fire_a.sum()) and ev.n_b == int(fire_b.sum())
        # mu = sum_d c_a(d) c_b(d) / L_d
        mu = sum(
            fire_a[planted.docs == d].sum() * fire_b[planted.docs == d].sum() / (planted.docs == d).sum()
            for d in np.unique(planted.docs)
        )
        assert ev.mu == pytest.approx(mu)
        w_a, w_b = planted.w_dec_a[a], planted.w_dec_b[b]
        assert ev.cos == pytest.approx(float(w_a @ w_b / np.linalg.norm(w_a) / np.linalg.norm(w_b)), abs=1e-5)
        assert ev.combined_score == pytest.approx(0.4 * ev.token_overlap + 0.6 * ev.corr)
        assert ev.assignment is None and ev.q is None  # no matching stage ran on this bundle


@pytest.mark.parametrize(
    ("first", "second", "pair"),
    [("a12", "b40", (12, 40)), ("b40", "a12", (12, 40)), ("12", "40", (12, 40)), ("B7", "3", (3, 7))],
)
def test_parse_pair(first, second, pair):
    assert parse_pair(first, second) == pair


def test_parse_pair_refuses_two_features_of_one_side():
    with pytest.raises(SpecError, match="Both features are on side B"):
        parse_pair("b1", "b2")
