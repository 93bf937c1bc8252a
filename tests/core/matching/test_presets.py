"""The matching presets: the paper's six steps by hand and against an independent dense reimplementation,
featurebridge against planted ground truth, and what a preset fixes."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from core.bundle.codes import SparseCodes
from core.bundle.reader import open_bundle
from core.errors import SpecError
from core.matching.filters import SideFlags
from core.matching.labels import compute_top_units
from core.matching.presets import apply_pipeline
from core.matching.settings import PRESETS, MatchSettings
from core.matching.stage import build_matching
from tests.core import _tiny_bundle
from tests.core.planted import build_planted_config, make_planted, write_bundle

# the junk list, written out here independently of assets/paper_junk_tokens.txt
PAPER_JUNK = {".", "\n", ",", "!", "?", "-", "<bos>", "<|endoftext|>", "<pad>", ""}


def _flags(n: int, labels: dict[int, list[str]], always_on: tuple[int, ...] = ()) -> SideFlags:
    sets = tuple(frozenset(labels.get(i, [])) for i in range(n))
    nonconcept = np.array([bool(s & PAPER_JUNK) for s in sets])
    on = np.zeros(n, bool)
    on[list(always_on)] = True
    return SideFlags(np.zeros(n, bool), on, nonconcept, sets)


def test_paper_pipeline_hand_worked_example():
    # many-to-1 B -> A (step 1) with the label lists of step 2 given by hand:
    #   b0 -> a1 r 0.05  shares "cat"            step 4: claims a1;  step 5: dropped (r <= 0.1)
    #   b1 -> a1 r 0.80  shares "cat"            step 4: a1 already claimed by b0 -> duplicate_a
    #   b2 -> a0 r 0.50  b2's labels hold "."    step 3: dropped (junk), claims nothing
    #   b3 -> a0 r 0.30  no shared token         step 3: dropped, claims nothing
    #   b4 -> a0 r 0.40  shares "dog"            step 4: claims a0 -> kept
    #   b5 -> a2 r 0.10  shares "mat"            step 4: claims a2;  step 5: dropped (0.1 is not > 0.1)
    #   b6 -> a2 r 0.90  shares "mat"            step 4: duplicate of b5 -> dropped, although r = 0.9
    #   b7 -> a3 r 0.60  a3 fires everywhere     kept: the paper has no always-on filter (step 6)
    labels_a = {0: ["dog", "dog", "run"], 1: ["cat", "cat", "cat", "mat", "cat"], 2: ["mat"], 3: ["sun", "sun"]}
    labels_b = {
        0: ["cat"],
        1: ["cat", "hat"],
        2: ["dog", "."],
        3: ["fox"],
        4: ["dog"],
        5: ["mat", "mat"],
        6: ["mat"],
        7: ["sun"],
    }
    pairs = pl.DataFrame(
        {
            "feature_a": [1, 1, 0, 0, 0, 2, 2, 3],
            "feature_b": [0, 1, 2, 3, 4, 5, 6, 7],
            "corr": [0.05, 0.8, 0.5, 0.3, 0.4, 0.1, 0.9, 0.6],
        }
    )
    flags_a, flags_b = _flags(4, labels_a, always_on=(3,)), _flags(8, labels_b)
    out = apply_pipeline(pairs, flags_a, flags_b, MatchSettings.from_preset("paper")).sort("feature_b")
    assert out.filter("kept").select("feature_a", "feature_b").rows() == [(0, 4), (3, 7)]
    assert out["reason"].to_list() == [
        "below_threshold",
        "duplicate_a",
        "nonconcept_b",
        "no_shared_token",
        None,
        "below_threshold",
        "duplicate_a",
        None,
    ]
    # the featurebridge order drops b0 and b5 first, so b1 and b6 keep their A features, and a3 is always-on
    fb = MatchSettings.from_preset("custom", method="greedy", require_significant=False, require_shared_token=True)
    loose = apply_pipeline(pairs, flags_a, flags_b, fb).sort("feature_b")
    assert loose.filter("kept").select("feature_a", "feature_b").rows() == [(1, 1), (0, 4), (2, 6)]
    assert loose["reason"][7] == "always_on_a"


def test_top_units_by_hand():
    # feature 0 fires on units 0, 2, 3 with 1.0, 3.0, 3.0: the tie keeps the earlier unit first;
    # feature 1 on units 1..6 with 6 distinct values; feature 2 never fires
    dense = np.zeros((7, 3), np.float32)
    dense[[0, 2, 3], 0] = [1.0, 3.0, 3.0]
    dense[1:7, 1] = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    ptr, units = compute_top_units(SparseCodes.from_dense(dense), np.array([5, 5, 5]))
    assert ptr.tolist() == [0, 3, 8, 8]
    assert units[:3].tolist() == [2, 3, 0]
    assert units[3:8].tolist() == [3, 5, 1, 4, 6]


def _reference_paper_pairs(
    codes_a: SparseCodes, codes_b: SparseCodes, texts_a: list[str], texts_b: list[str]
) -> set[tuple[int, int]]:
    """The six published steps written out plainly with dense numpy (independent of core.matching)."""
    x = codes_a.to_dense().astype(np.float64)
    y = codes_b.to_dense().astype(np.float64)
    xc, yc = x - x.mean(0), y - y.mean(0)
    sx, sy = np.sqrt((xc * xc).sum(0)), np.sqrt((yc * yc).sum(0))
    live_a, live_b = sx > 1e-12, sy > 1e-12
    r = (xc.T @ yc) / np.outer(np.where(live_a, sx, 1.0), np.where(live_b, sy, 1.0))
    r[~live_a, :] = -np.inf

    def labels(m: np.ndarray, texts: list[str], f: int) -> list[str]:
        fired = np.flatnonzero(m[:, f] > 0)
        order = fired[np.lexsort((fired, -m[fired, f]))][:5]
        return [texts[u] for u in order]

    survivors = []
    for b in range(y.shape[1]):  # step 1: each live B with its best A
        if not live_b[b]:
            continue
        a = int(np.argmax(r[:, b]))
        la, lb = labels(x, texts_a, a), labels(y, texts_b, b)
        if PAPER_JUNK & (set(la) | set(lb)):  # step 3: junk in either list
            continue
        if not set(la) & set(lb):  # step 3: no shared label token
            continue
        survivors.append((a, b, r[a, b]))
    taken, kept = set(), set()
    for a, b, value in survivors:  # step 4: ascending B id, first claim wins
        if a in taken:
            continue
        taken.add(a)
        if value > 0.1:  # step 5: threshold only now
            kept.add((a, b))
    return kept


def _structured_codes(
    seed: int, n: int = 2400, n_a: int = 36, n_b: int = 44
) -> tuple[list[str], SparseCodes, SparseCodes]:
    """Features that prefer a word (so label lists share tokens), B partly noisy copies of A, some junk words."""
    rng = np.random.default_rng(seed)
    words = [*_tiny_bundle.WORDS, ".", ",", "Cat", "sun"]
    texts = [str(w) for w in rng.choice(words, n)]
    word_of = np.array([words.index(t) for t in texts])
    a = np.zeros((n, n_a), np.float32)
    for f in range(n_a):
        own = rng.integers(0, len(words))
        fire = ((word_of == own) & (rng.random(n) < 0.5)) | (rng.random(n) < 0.01)
        a[fire, f] = rng.exponential(1.0, fire.sum()) + 0.05
    b = np.zeros((n, n_b), np.float32)
    for f in range(n_b):
        if f < 30:
            src = rng.integers(0, n_a)
            keep = (a[:, src] > 0) & (rng.random(n) < rng.uniform(0.2, 0.9))
            b[keep, f] = a[keep, src] * rng.uniform(0.5, 1.5, keep.sum())
        noise = rng.random(n) < 0.01
        b[noise, f] = rng.exponential(1.0, noise.sum()) + 0.05
    a[:, n_a - 1] = 0.0  # a dead A feature
    b[:, n_b - 1] = 0.0  # a dead B feature
    return texts, SparseCodes.from_dense(a), SparseCodes.from_dense(b)


def _kept(bundle) -> set[tuple[int, int]]:
    kept = bundle.assignment().collect().filter("kept")
    return set(zip(kept["feature_a"].to_list(), kept["feature_b"].to_list(), strict=True))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_paper_preset_equals_the_independent_six_steps_on_the_tiny_bundle(tmp_path, seed):
    texts, codes_a, codes_b = _structured_codes(seed)
    path = _tiny_bundle.write_bundle(tmp_path / "tiny", texts, codes_a, codes_b, doc_len=60)
    bundle = build_matching(path, MatchSettings.from_preset("paper", top_k=5), device="cpu")
    expected = _reference_paper_pairs(codes_a, codes_b, texts, texts)
    assert len(expected) >= 5  # the example is not vacuous
    assert _kept(bundle) == expected
    record = open_bundle(path).manifest["matching"]
    assert record["preset"] == "paper" and record["settings"]["preset"] == "paper"
    # no tokenizer in this bundle: the labels say they are surface text, and why
    assert record["labels"]["a"]["form"] == "surface" and "no model" in record["labels"]["a"]["note"]


def test_paper_preset_equals_the_independent_six_steps_on_planted_data(tmp_path):
    planted = make_planted(build_planted_config(n_units=3000, n_orphans_a=10, n_orphans_b=10, seed=3))
    rng = np.random.default_rng(3)
    words, weights = ["red", "green", "blue", "x", "."], [0.3, 0.3, 0.3, 0.08, 0.02]
    texts = [str(w) for w in rng.choice(words, planted.codes_a.n_rows, p=weights)]
    path = write_bundle(
        tmp_path / "planted",
        planted.codes_a,
        planted.codes_b,
        planted.docs,
        planted.w_dec_a,
        planted.w_dec_b,
        texts=texts,
    )
    bundle = build_matching(path, MatchSettings.from_preset("paper", top_k=5), device="cpu")
    expected = _reference_paper_pairs(planted.codes_a, planted.codes_b, texts, texts)
    assert len(expected) >= 5
    assert _kept(bundle) == expected


def test_featurebridge_default_recovers_planted_pairs_and_leaves_rare_orphans_alone(tmp_path):
    # 200 planted pairs, 800 rare orphans (7-100 firings each: their chance co-firings reach r 0.1-0.2),
    # dead and always-on features on both sides
    cfg = build_planted_config(
        n_units=20000,
        n_docs=100,
        n_shared=200,
        n_split_hubs=0,
        n_orphans_a=400,
        n_orphans_b=400,
        orphan_fires=(7, 100),
        fire_prob=0.01,
        noise_prob=0.0005,
        seed=5,
    )
    planted = make_planted(cfg)
    path = write_bundle(
        tmp_path / "b", planted.codes_a, planted.codes_b, planted.docs, planted.w_dec_a, planted.w_dec_b
    )
    truth = {(int(a), int(b)) for a, b in planted.pairs}
    orphans_a, orphans_b = set(planted.orphans_a.tolist()), set(planted.orphans_b.tolist())

    def score(pairs: set[tuple[int, int]]) -> tuple[float, float, int]:
        hit = len(pairs & truth)
        paired = sum(a in orphans_a or b in orphans_b for a, b in pairs)
        return hit / len(truth), hit / max(len(pairs), 1), paired

    bundle = build_matching(path, device="cpu")
    assert open_bundle(path).manifest["matching"]["preset"] == "featurebridge"
    recall, precision, paired = score(_kept(bundle))
    assert recall >= 0.95 and precision >= 0.95
    assert paired <= 2
    # the same pairing without the significance rule pairs many orphans: the rule is what keeps them out
    loose = build_matching(path, MatchSettings(require_significant=False), device="cpu")
    assert score(_kept(loose))[2] >= 5
    for side in ("a", "b"):
        for feature in (*getattr(planted, f"dead_{side}"), *getattr(planted, f"always_on_{side}")):
            assert all(p[0 if side == "a" else 1] != feature for p in _kept(bundle))


def test_the_defaults_are_the_featurebridge_preset_and_every_preset_is_complete():
    assert MatchSettings().preset == "featurebridge"
    assert MatchSettings.from_preset("featurebridge") == MatchSettings()
    paper = MatchSettings.from_preset("paper")
    assert paper.preset == "paper"
    assert paper.method == "greedy" and paper.threshold_after_dedup and not paper.require_significant
    assert not paper.filter_always_on and paper.require_shared_token and paper.label_match == "exact"
    # free settings keep the preset; a fixed one changed makes it custom
    assert MatchSettings.from_preset("paper", memory_mb=64.0, top_k=3).preset == "paper"
    assert MatchSettings(method="mutual").preset == "custom"
    for name, fixed in PRESETS.items():
        built = MatchSettings.from_preset(name)
        assert all(getattr(built, k) == v for k, v in fixed.items())
        assert json.loads(json.dumps(built.to_dict()))["preset"] == name
        assert MatchSettings.from_dict(built.to_dict()) == built


def test_a_preset_with_a_contradicting_setting_says_which_setting_and_what_the_preset_fixes():
    with pytest.raises(SpecError, match=r"method='sparse' contradicts preset 'paper', which fixes method='greedy'"):
        MatchSettings.from_preset("paper", method="sparse")
    with pytest.raises(SpecError, match="Unknown matching preset 'papers'"):
        MatchSettings.from_preset("papers")
    with pytest.raises(SpecError, match="threshold_after_dedup"):
        MatchSettings(method="sparse", threshold_after_dedup=True)
