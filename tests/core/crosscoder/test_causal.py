"""The causal check: identical models give equivalence ~1; a zero B decoder gives no B shift, reported as such."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from core.crosscoder.causal import (
    CausalShifts,
    CrosscoderLatents,
    SAEPairs,
    _head,
    capture_replay,
    compute_equivalence,
    compute_shifts,
    draw_probes,
    replay,
)
from core.crosscoder.checkpoint import load_checkpoint
from core.crosscoder.model import Crosscoder, InputScaling
from core.crosscoder.settings import CausalSettings
from core.harvest.loading import load_model, load_sae
from core.harvest.specs import ModelSpec, SAESpec
from tests.core.builders import build_topk_sae_folder
from tests.core.crosscoder.synthetic import save_dictionary_learning

TEXTS = [
    "The cat sat on the mat while the dog barked at the moon.",
    "Seven ships sailed past the harbour before the storm arrived.",
    "Numbers such as 3.14 and 2.71 appear in every textbook on analysis.",
    "She wrote a letter to her brother in Paris about the weather.",
    "Time flies like an arrow, and fruit flies like a banana.",
    "The committee met on Tuesday to discuss the new library budget.",
    "A quiet river ran through the valley under the old stone bridge.",
    "He ordered coffee, opened his laptop and started to write code.",
]
SETTINGS = CausalSettings(n_probes=8, probe_len=16, min_active=3, n_perm=99, batch_latents=5)


def _identical_crosscoder(tmp_path: Path, d: int, f: int = 10, zero_b: int = 3) -> Crosscoder:
    g = torch.Generator().manual_seed(0)
    w_enc = torch.randn(d, f, generator=g) / d**0.5
    w_dec = torch.randn(f, d, generator=g) * 0.5
    w = {
        "W_enc": torch.stack([w_enc, w_enc]) * 0.5,
        "b_enc": torch.zeros(f),
        "W_dec": torch.stack([w_dec, w_dec]).clone(),
        "b_dec": torch.zeros(2, d),
    }
    w["W_dec"][1, zero_b] = 0.0  # this latent writes nothing into model B
    path = save_dictionary_learning(tmp_path / "same.safetensors", w)
    return Crosscoder(load_checkpoint(path), InputScaling((1.0, 1.0), ("given", "given")))


def _probes(model) -> list:
    return draw_probes(TEXTS, list(range(len(TEXTS))), {"a": model.tokenizer, "b": model.tokenizer}, SETTINGS)


@pytest.mark.parametrize("kind", ["bert", "llama"])
def test_identical_models_give_equivalence_one_and_a_zero_b_decoder_no_b_shift(
    kind: str, bert_folder: Path, llama_folder: Path, tmp_path: Path
) -> None:
    model = load_model(ModelSpec("hf", str(bert_folder if kind == "bert" else llama_folder)))
    hook = model.hook("blocks.0.hook_resid_post")
    cc = _identical_crosscoder(tmp_path, model.d_model)
    probes = _probes(model)
    shifts = compute_shifts(
        {"a": model, "b": model},
        {"a": hook, "b": hook},
        CrosscoderLatents(cc, range(10)),
        probes,
        SETTINGS,
        torch.device("cpu"),
    )
    assert shifts.measure == {"a": "kl" if kind == "llama" else "hidden_shift"} | {"b": shifts.measure["a"]}
    frame = compute_equivalence(shifts, SETTINGS)
    zero = frame.row(3, named=True)
    assert zero["status"] == "no_shift_b"
    assert zero["equivalence"] is None and zero["mean_shift_b"] == 0.0 and zero["mean_shift_a"] > 0
    ok = frame.filter(frame["status"] == "ok")
    assert ok.height >= 5
    assert np.allclose(ok["equivalence"].to_numpy(), 1.0, atol=1e-9)
    assert (ok["p_value"] <= 0.05).all()
    for i in range(10):
        if i != 3:
            assert np.array_equal(shifts.shift["a"][i], shifts.shift["b"][i])


def test_replay_reproduces_the_models_own_forward(bert_folder: Path, llama_folder: Path) -> None:
    for folder in (bert_folder, llama_folder):
        model = load_model(ModelSpec("hf", str(folder)))
        ids = torch.as_tensor(model.tokenizer("A quiet river ran through the valley.")["input_ids"])[None]
        for hook_name in ("blocks.0.hook_resid_pre", "blocks.1.hook_resid_post", "blocks.2.hook_resid_post"):
            run = capture_replay(model, model.hook(hook_name), ids, torch.device("cpu"))
            again = replay(model, run, run.acts[None], _head(model))[0]
            assert torch.allclose(again, run.reference, atol=1e-4), (folder.name, hook_name)


def test_sae_pairs_same_mechanism(bert_folder: Path, tmp_path: Path) -> None:
    model = load_model(ModelSpec("hf", str(bert_folder)))
    sae = load_sae(SAESpec("local", str(build_topk_sae_folder(tmp_path / "sae", d_in=32, d_sae=24, k=6))))
    hook = model.hook("blocks.1.hook_resid_post")
    pairs = SAEPairs({"a": sae, "b": sae}, {"a": list(range(24)), "b": list(range(24))})
    # a feature's contribution is its decoder row (TopK, no output normalisation)
    assert torch.allclose(pairs.directions["a"], sae.decoder(), atol=1e-6)
    shifts = compute_shifts(
        {"a": model, "b": model}, {"a": hook, "b": hook}, pairs, _probes(model), SETTINGS, torch.device("cpu")
    )
    frame = compute_equivalence(shifts, SETTINGS)
    ok = frame.filter(frame["status"] == "ok")
    assert ok.height >= 3
    assert np.allclose(ok["equivalence"].to_numpy(), 1.0, atol=1e-9)


def test_equivalence_statistics_against_numpy() -> None:
    rng = np.random.default_rng(1)
    n_probes = 40
    a = rng.exponential(1.0, (6, n_probes))
    b = a + rng.normal(0, 0.5, (6, n_probes))
    b[1] = rng.exponential(1.0, n_probes)  # unrelated
    b[2] = 0.0  # no B shift
    a[3] = 0.0
    b[3] = 0.0  # no shift at all
    b[4] = 2.0 * a[4]  # perfectly related
    active = np.ones((6, n_probes), bool)
    active[5, 3:] = False  # fires on 3 probes only
    settings = CausalSettings(min_active=5, n_perm=199, seed=4)
    frame = compute_equivalence(CausalShifts({"a": a, "b": b}, active, {"a": "kl", "b": "kl"}), settings)
    assert frame["status"].to_list() == ["ok", "ok", "no_shift_b", "no_shift", "ok", "few_probes"]
    for i in (0, 1, 4):
        assert frame["equivalence"][i] == pytest.approx(np.corrcoef(a[i], b[i])[0, 1], abs=1e-12)
    assert frame["p_value"][4] == pytest.approx(1 / 200)
    assert frame["p_value"][1] > 0.01
    # the reference null: the same seeded permutations, counted by hand
    ref_rng = np.random.default_rng([4, 23])
    for i in range(2):
        perms = ref_rng.permuted(np.broadcast_to(b[i], (199, n_probes)), axis=1)
        null = np.array([np.corrcoef(a[i], row)[0, 1] for row in perms])
        expect = (1 + np.sum(null >= frame["equivalence"][i] - 1e-12)) / 200
        assert frame["p_value"][i] == pytest.approx(expect)
    assert frame["n_active"][5] == 3 and frame["equivalence"][5] is None
