"""Per-feature stats: planted values, the non-concept flag and top tokens."""

from __future__ import annotations

import numpy as np

from core.bundle.codes import SparseCodes
from core.harvest.features import compute_feature_frame, top_tokens_per_feature
from core.harvest.run import feature_moments


def test_feature_frame_on_planted_codes() -> None:
    # feature 0 fires on "cat" (3.0) and "." (1.0); feature 1 on "," only; feature 2 never; 3 always
    dense = np.array([[3.0, 0, 0, 1], [0, 2.0, 0, 1], [1.0, 0, 0, 1], [0, 0, 0, 1]], dtype=np.float32)
    text = ["cat", ",", ".", "dog"]
    codes = SparseCodes.from_dense(dense)
    tops = top_tokens_per_feature(codes, text)
    assert tops == [["cat", "."], [","], [], ["cat", ",", ".", "dog"]]
    frame = compute_feature_frame(feature_moments(codes), 4, tops)
    np.testing.assert_allclose(frame["freq"].to_numpy(), [0.5, 0.25, 0.0, 1.0])
    np.testing.assert_allclose(frame["mean"].to_numpy(), dense.mean(0))
    np.testing.assert_allclose(frame["std"].to_numpy(), dense.std(0), atol=1e-7)
    assert frame["is_dead"].to_list() == [False, False, True, False]
    assert frame["is_dense"].to_list() == [True, False, False, True]
    # "." and "," are in the shipped non-concept list; a dead feature has no top token to judge
    assert frame["is_nonconcept"].to_list() == [True, True, False, True]
