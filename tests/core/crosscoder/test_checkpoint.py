"""Loading both crosscoder layouts, and encode/decode against a hand computation."""

from __future__ import annotations

import collections

import numpy as np
import pytest
import torch

from core.crosscoder.checkpoint import load_checkpoint
from core.crosscoder.model import Crosscoder, InputScaling, estimate_scale
from core.errors import CrosscoderError
from tests.core.crosscoder.synthetic import hand_weights, random_weights, save_ckkissane, save_dictionary_learning

torch.set_num_threads(1)


def _same(a, b) -> None:
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(a, name), getattr(b, name)), name


def test_both_layouts_load_to_identical_weights(tmp_path) -> None:
    w = random_weights(d=6, f=10)
    dl = load_checkpoint(save_dictionary_learning(tmp_path / "dl" / "ae.safetensors", w))
    ck = load_checkpoint(save_ckkissane(tmp_path / "ck" / "version_0_1.pt", w))
    assert (dl.format, ck.format) == ("dictionary_learning", "ckkissane")
    _same(dl, ck)
    assert torch.equal(dl.W_dec, w["W_dec"])
    assert dl.architecture == ck.architecture == "relu"
    assert (dl.n_models, dl.d_model, dl.n_latents) == (2, 6, 10)
    # ckkissane's cfg.json sits beside it as <name>_cfg.json and is read as metadata
    assert ck.config["version_0_1_cfg.json"]["hook_point"] == "blocks.1.hook_resid_post"


def test_folder_pt_compiled_prefix_unknown_keys_and_config(tmp_path) -> None:
    w = random_weights(d=4, f=8, seed=3)
    cfg = {"trainer": {"dict_class": "BatchTopKCrossCoder", "activation_dim": 4, "dict_size": 8, "layer": 2}}
    save_dictionary_learning(
        tmp_path / "run" / "ae.pt",
        w,
        k=3,
        threshold=0.25,
        code_normalization_id=2,
        config=cfg,
        compiled=True,
        extra={"optimizer_step": torch.tensor(7)},
        as_pt=True,
    )
    loaded = load_checkpoint(tmp_path / "run")
    assert torch.equal(loaded.W_enc, w["W_enc"])
    assert loaded.architecture == "batchtopk" and loaded.k == 3
    assert float(loaded.threshold) == pytest.approx(0.25)
    assert loaded.code_normalization == "sae"
    assert loaded.unknown_keys == ("optimizer_step",)
    assert loaded.config["config.json"]["trainer"]["layer"] == 2
    assert not loaded.threshold_uncalibrated


def test_uncalibrated_threshold_and_missing_normalization_are_flagged(tmp_path) -> None:
    path = save_dictionary_learning(tmp_path / "ae.safetensors", random_weights(), k=4, threshold=-1.0)
    loaded = load_checkpoint(path)
    assert loaded.threshold_uncalibrated
    assert loaded.code_normalization == "crosscoder"
    assert any("CROSSCODER" in note for note in loaded.notes)
    assert loaded.describe()["threshold_uncalibrated"] is True


def test_square_checkpoint_is_refused_unless_the_format_is_named(tmp_path) -> None:
    w = random_weights(m=2, d=5, f=2, seed=1)
    dl = save_dictionary_learning(tmp_path / "dl.safetensors", w)
    ck = save_ckkissane(tmp_path / "ck" / "sq.pt", w)
    for path in (dl, ck):
        with pytest.raises(CrosscoderError, match="cannot tell the two layouts"):
            load_checkpoint(path)
    named_dl = load_checkpoint(dl, format="dictionary_learning")
    named_ck = load_checkpoint(ck, format="ckkissane")
    _same(named_dl, named_ck)
    assert torch.equal(named_dl.W_dec, w["W_dec"])


def test_bad_checkpoints_say_what_is_wrong(tmp_path) -> None:
    from safetensors.torch import save_file

    save_file({"weight": torch.zeros(2, 2), "bias": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(CrosscoderError, match=r"neither .* it holds \['bias', 'weight'\]"):
        load_checkpoint(tmp_path / "other.safetensors")
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    with pytest.raises(CrosscoderError, match="only unpickling could read"):
        load_checkpoint(tmp_path / "module.pt")
    torch.save({"W_enc": collections.Counter()}, tmp_path / "objects.pt")
    with pytest.raises(CrosscoderError, match="state dict of tensors"):
        load_checkpoint(tmp_path / "objects.pt")
    w = random_weights()
    w["W_dec"][1, 3, 0] = float("nan")
    with pytest.raises(CrosscoderError, match="decoder of .* NaN"):
        load_checkpoint(save_dictionary_learning(tmp_path / "nan.safetensors", w))
    w = random_weights()
    bad = {**w, "W_dec": w["W_dec"].permute(1, 0, 2).contiguous()}  # ckkissane orientation under dl names
    with pytest.raises(CrosscoderError, match="mixes layouts"):
        load_checkpoint(save_dictionary_learning(tmp_path / "mixed.safetensors", bad))
    with pytest.raises(CrosscoderError, match="does not exist"):
        load_checkpoint(tmp_path / "absent.pt")


def _hand(threshold: float | list[float] | None, normalization: int | None, tmp_path) -> Crosscoder:
    k = None if threshold is None else 1
    path = save_dictionary_learning(
        tmp_path / f"h{normalization}.safetensors",
        hand_weights(),
        k=k,
        threshold=threshold,
        code_normalization_id=normalization,
    )
    return Crosscoder(load_checkpoint(path), InputScaling((2.0, 0.5), ("given", "given")))


def test_encode_decode_match_a_hand_computation(tmp_path) -> None:
    # raw x_A = [0.5, 1], x_B = [6, 1]; scaled by (2, 0.5): x_A = [1, 2], x_B = [3, 0.5]
    # sum_l x_l W_enc[l] = [1, 2, 0] + [0.5, 0, 3] = [1.5, 2, 3]; + b_enc [0, -0.5, 0] -> pre = [1.5, 1.5, 3]
    # norms n_A = [1, 2, 0], n_B = [1, 0, 5]
    raw = torch.tensor([[[0.5, 1.0], [6.0, 1.0]]])
    relu = _hand(None, None, tmp_path)
    x = relu.normalise(raw)
    assert torch.allclose(x, torch.tensor([[[1.0, 2.0], [3.0, 0.5]]]))
    f = relu.encode(x)
    assert torch.allclose(f, torch.tensor([[1.5, 1.5, 3.0]]))
    # x_hat_A = 1.5 [1, 0] + 1.5 [0, 2] + [0.1, 0.2] = [1.6, 3.2]; x_hat_B = 1.5 [0, 1] + 3 [3, 4] = [9, 13.5]
    assert torch.allclose(relu.decode(f), torch.tensor([[[1.6, 3.2], [9.0, 13.5]]]))
    assert torch.allclose(relu.side_code(f, 0), torch.tensor([[1.5, 3.0, 0.0]]))
    assert torch.allclose(relu.side_code(f, 1), torch.tensor([[1.5, 0.0, 15.0]]))
    # a unit of latent 2 adds d_{B,2} / s_B = [3, 4] / 0.5 = [6, 8] to B's raw activation
    assert torch.allclose(relu.contribution_directions(1, [2]), torch.tensor([[6.0, 8.0]]))

    # BatchTopK, CROSSCODER normaliser c = n_A + n_B = [2, 2, 5]: pre * c = [3, 3, 15] > 2.5 keeps all
    cc = _hand(2.5, 1, tmp_path)
    assert torch.allclose(cc.encode(x), torch.tensor([[1.5, 1.5, 3.0]]))
    # SAE normaliser c = ||concat d|| = [sqrt 2, 2, 5]: pre * c = [2.12, 3, 15] > 2.5 drops latent 0
    sae = _hand(2.5, 2, tmp_path)
    f_sae = sae.encode(x)
    assert torch.allclose(f_sae, torch.tensor([[0.0, 1.5, 3.0]]))
    # x_hat_A = 1.5 [0, 2] + [0.1, 0.2] = [0.1, 3.2]; x_hat_B = 3 [3, 4] = [9, 12]
    assert torch.allclose(sae.decode(f_sae), torch.tensor([[[0.1, 3.2], [9.0, 12.0]]]))
    # DECOUPLED: per model c_l = n_l; A: pre * n_A = [1.5, 3, 0] -> keeps latent 1; B: [1.5, 0, 15] -> latent 2
    dec = _hand([2.5, 2.5], 5, tmp_path)
    f_dec = dec.encode(x)
    assert torch.allclose(f_dec, torch.tensor([[[0.0, 1.5, 0.0], [0.0, 0.0, 3.0]]]))
    assert torch.allclose(dec.decode(f_dec), torch.tensor([[[0.1, 3.2], [9.0, 12.0]]]))
    assert torch.allclose(dec.side_code(f_dec, 1), torch.tensor([[0.0, 0.0, 15.0]]))


def test_checkpoint_normaliser_and_scale_estimate(tmp_path) -> None:
    w = hand_weights()
    extra = {
        "activation_mean": torch.tensor([[1.0, 1.0], [0.0, 0.0]]),
        "activation_std": torch.ones(2, 2),
        "target_rms": torch.tensor(1.0),
        "activation_global_scale": torch.tensor([2.0, 0.5]),
    }
    loaded = load_checkpoint(save_dictionary_learning(tmp_path / "n.safetensors", w, extra=extra))
    assert loaded.normaliser_scale.tolist() == [2.0, 0.5]
    cc = Crosscoder(loaded, InputScaling((2.0, 0.5), ("checkpoint", "checkpoint"), loaded.normaliser_mean))
    # (x - mean) * s: A [1.5, 2] -> [1, 2]
    assert torch.allclose(
        cc.normalise(torch.tensor([[[1.5, 2.0], [6.0, 1.0]]])), torch.tensor([[[1.0, 2.0], [3.0, 0.5]]])
    )
    # sqrt(d) / E||x||: rows of norm 2 and 4 in d = 4 -> 2 / 3
    acts = np.array([[2.0, 0, 0, 0], [0, 4.0, 0, 0]])
    assert estimate_scale(acts) == pytest.approx(2.0 / 3.0)
