"""The paper preset on the real demo bundle against an independent implementation of the six steps (slow).

The reference shares no code with core.matching: the correlation is scipy's sparse X^T Y, the
labels come from the harvest's own windowing of the corpus (each unit is a kept window token, in
order) decoded with the tokenizer, and the filters, the de-duplication and the threshold are
written out plainly below.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from core.bundle.reader import open_bundle
from core.matching.settings import MatchSettings

JUNK = {".", "\n", ",", "!", "?", "-", "<bos>", "<|endoftext|>", "<pad>", ""}


def _link_copy(src: Path, dst: Path) -> Path:
    dst.mkdir(parents=True)
    for f in src.iterdir():
        if f.is_file():
            try:
                os.link(f, dst / f.name)
            except OSError:
                dst.joinpath(f.name).write_bytes(f.read_bytes())
    # the stage rewrites these: never through a hard link into the cached demo
    for name in (
        "manifest.json",
        "matches.parquet",
        "assignment.parquet",
        "feature_tokens_a.parquet",
        "feature_tokens_b.parquet",
    ):
        if (dst / name).exists():
            data = (dst / name).read_bytes()
            (dst / name).unlink()
            (dst / name).write_bytes(data)
    return dst


def _unit_tokens(bundle) -> list[str]:
    from transformers import AutoTokenizer

    from core.harvest.loading import default_bert_tokenizer
    from core.harvest.specs import HarvestSettings
    from core.harvest.windows import tokenize_windows

    tokenizer = AutoTokenizer.from_pretrained(default_bert_tokenizer())
    docs = bundle.docs().sort("doc").collect()
    assert docs["doc"].to_list() == list(range(docs.height))
    harvest = bundle.manifest["settings"]["harvest"]
    windows = tokenize_windows(
        tokenizer,
        docs["text"].to_list(),
        HarvestSettings(max_tokens=bundle.n_units, max_len=harvest["max_len"], mask_special=harvest["mask_special"]),
    )
    ids = np.concatenate([w.input_ids[w.keep] for w in windows])
    assert ids.shape[0] == bundle.n_units
    vocab = {i: tokenizer.decode([int(i)]) for i in np.unique(ids)}
    return [vocab[int(i)] for i in ids]


def _reference(bundle) -> set[tuple[int, int]]:
    xa, xb = bundle.codes("a").to_scipy().tocsc(), bundle.codes("b").to_scipy().tocsc()
    n = xa.shape[0]
    s = (xa.T @ xb).toarray().astype(np.float64)
    mean_a, mean_b = np.asarray(xa.mean(0)).ravel(), np.asarray(xb.mean(0)).ravel()
    var_a = np.asarray(xa.multiply(xa).sum(0)).ravel() - n * mean_a**2
    var_b = np.asarray(xb.multiply(xb).sum(0)).ravel() - n * mean_b**2
    live_a, live_b = var_a > 1e-9, var_b > 1e-9
    r = (s - n * np.outer(mean_a, mean_b)) / np.sqrt(np.outer(np.where(live_a, var_a, 1), np.where(live_b, var_b, 1)))
    r[~live_a] = -np.inf
    tokens = _unit_tokens(bundle)

    def labels(m, f: int) -> list[str]:
        lo, hi = m.indptr[f], m.indptr[f + 1]
        units, vals = m.indices[lo:hi], m.data[lo:hi]
        order = np.lexsort((units, -vals))[:5]
        return [tokens[u] for u in units[order]]

    claimed, kept = set(), set()
    for b in np.flatnonzero(live_b):  # ascending B id: steps 1, 3, 4 and 5 in one walk
        a = int(np.argmax(r[:, b]))
        la, lb = labels(xa, a), labels(xb, int(b))
        if JUNK & (set(la) | set(lb)) or not set(la) & set(lb) or a in claimed:
            continue
        claimed.add(a)
        if r[a, b] > 0.1:
            kept.add((a, int(b)))
    return kept


@pytest.mark.slow
def test_paper_preset_on_the_demo_matches_the_independent_six_steps(tmp_path: Path) -> None:
    from core.demo.spine import build_demo
    from core.matching.stage import build_matching

    path = _link_copy(build_demo(), tmp_path / "demo")
    bundle = build_matching(path, MatchSettings.from_preset("paper"), device="cpu")
    kept = bundle.assignment().collect().filter("kept")
    ours = set(zip(kept["feature_a"].to_list(), kept["feature_b"].to_list(), strict=True))
    theirs = _reference(open_bundle(path))
    jaccard = len(ours & theirs) / len(ours | theirs)
    assert len(theirs) > 100
    assert jaccard >= 0.99, (len(ours), len(theirs), jaccard)
    labels = bundle.manifest["matching"]["labels"]
    assert labels["a"]["form"] == labels["b"]["form"] == "vocab" and labels["a"]["n_fallback"] == 0
    assert pl.Series(kept["method"]).unique().to_list() == ["greedy"]
