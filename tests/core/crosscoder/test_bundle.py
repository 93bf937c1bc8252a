"""`compare --crosscoder` end to end on a tiny BERT: side codes, identity pairing, manifest, and bad input."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import save_file

from core.bundle.reader import open_bundle
from core.cli.main import main
from core.crosscoder.checkpoint import load_checkpoint
from core.crosscoder.model import Crosscoder, InputScaling
from core.harvest.encode import collect_activations
from core.harvest.loading import load_model
from core.harvest.specs import HarvestSettings, ModelSpec
from core.harvest.windows import tokenize_windows
from tests.core.crosscoder.synthetic import random_weights, save_ckkissane, save_dictionary_learning

HOOKS = ("blocks.1.hook_resid_post", "blocks.2.hook_resid_post")


def _args(checkpoint: Path, model: Path, corpus: Path, out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        "--crosscoder",
        str(checkpoint),
        "--model-a",
        str(model),
        "--model-b",
        str(model),
        "--hook-a",
        HOOKS[0],
        "--hook-b",
        HOOKS[1],
        "--corpus",
        f"file:{corpus}",
        "--max-tokens",
        "400",
        "--max-len",
        "24",
        "--batch-tokens",
        "96",
        "--device",
        "cpu",
        "--out",
        str(out),
        *extra,
    ]


def _weights() -> dict[str, torch.Tensor]:
    w = random_weights(d=32, f=40, seed=5)
    w["W_enc"] = w["W_enc"] / 8
    w["W_dec"][1, :4] = 0.0  # four latents write nothing into model B
    return w


@pytest.fixture(scope="module")
def built(bert_folder: Path, corpus_file: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("cc-bundle")
    checkpoint = save_dictionary_learning(root / "ckpt" / "ae.safetensors", _weights(), k=4, threshold=0.5)
    out = root / "bundle"
    assert main(_args(checkpoint, bert_folder, corpus_file, out, "--stages", "analyses", "--scale-a", "0.5")) == 0
    return out, checkpoint


def test_side_codes_are_the_code_times_each_models_decoder_norm(built, bert_folder: Path, corpus_file: Path) -> None:
    out, checkpoint = built
    bundle = open_bundle(out)
    m = bundle.manifest
    assert m["crosscoder"]["scaling"]["a"] == {"scale": 0.5, "source": "given", "centred": False}
    assert m["crosscoder"]["scaling"]["b"]["source"] == "estimated"
    # the dense reference: the same windows, each model's activations, the crosscoder by hand
    model = load_model(ModelSpec("hf", str(bert_folder)))
    settings = HarvestSettings(**m["settings"]["harvest"])
    docs = [json.loads(line)["text"] for line in corpus_file.read_text().splitlines()]
    windows = tokenize_windows(model.tokenizer, docs, settings)
    acts = [collect_activations(model, model.hook(h), windows, settings, torch.device("cpu")) for h in HOOKS]
    scale = (0.5, m["crosscoder"]["scaling"]["b"]["scale"])
    assert scale[1] == pytest.approx(np.sqrt(32) / np.linalg.norm(acts[1][:32_768], axis=1).mean(), rel=1e-6)
    cc = Crosscoder(load_checkpoint(checkpoint), InputScaling(scale, ("given", "estimated")))
    x = torch.stack([torch.from_numpy(a) for a in acts], dim=1) * torch.tensor(scale)[None, :, None]
    f = cc.encode(x)
    x_hat = cc.decode(f)
    norms = cc.W_dec.norm(dim=2)
    for index, side in enumerate("ab"):
        dense = bundle.codes(side).to_dense()
        assert np.allclose(dense, (f * norms[index]).numpy(), atol=1e-5)
        total = ((x[:, index] - x[:, index].mean(dim=0)) ** 2).sum()
        ev = 1 - ((x[:, index] - x_hat[:, index]) ** 2).sum() / total
        assert m["crosscoder"]["explained_variance"][side] == pytest.approx(float(ev), rel=1e-4)
        assert np.allclose(bundle.decoder(side), cc.W_dec[index].numpy())
    assert m["crosscoder"]["l0"] == pytest.approx(float((f > 0).sum(dim=1).double().mean()))
    assert m["sides"]["a"]["d_sae"] == 40 and m["unit_kind"] == "token"


def test_identity_pairing_and_analyses(built) -> None:
    out, _ = built
    bundle = open_bundle(out)
    assignment = bundle.assignment().collect()
    assert assignment["feature_a"].to_list() == assignment["feature_b"].to_list() == list(range(40))
    assert set(assignment["method"]) == {"identity"}
    assert assignment.filter(pl.col("feature_a") < 4)["reason"].to_list() == ["no_decoder_b"] * 4
    assert assignment.filter(pl.col("feature_a") < 4)["cos"].null_count() == 4
    live = assignment.filter(pl.col("kept"))
    assert np.allclose(live["corr"].to_numpy(), 1.0, atol=1e-5)  # one code, two positive scales
    assert np.allclose(live["score"].to_numpy(), live["cos"].to_numpy())
    analyses = bundle.scan("analyses.parquet").collect()
    assert analyses.filter(pl.col("latent") < 4)["tag_threshold"].cast(pl.String).to_list() == ["a_only"] * 4
    assert set(json.loads((out / "analyses.json").read_text())["taxonomy"]) == {
        "shared",
        "dead",
        "unclassified",
        "base_only",
        "chat_only",
    }
    assert bundle.manifest["sides"]["a"]["hook_sanity_verdict"]["configured_hook"] == HOOKS[0]


def test_ckkissane_layout_builds_the_same_codes(built, bert_folder: Path, corpus_file: Path, tmp_path: Path) -> None:
    out, _ = built
    checkpoint = save_ckkissane(tmp_path / "ck" / "version_0.pt", _weights())
    # the dl checkpoint's threshold makes it BatchTopK; compare the ReLU encodings of both layouts instead
    relu = save_dictionary_learning(tmp_path / "dl" / "ae.safetensors", _weights())
    scale = ("--scale-a", "0.5", "--scale-b", "0.7", "--stages", "none")
    assert main(_args(checkpoint, bert_folder, corpus_file, tmp_path / "ck-bundle", *scale)) == 0
    assert main(_args(relu, bert_folder, corpus_file, tmp_path / "dl-bundle", *scale)) == 0
    for side in "ab":
        a = open_bundle(tmp_path / "ck-bundle").codes(side).to_dense()
        b = open_bundle(tmp_path / "dl-bundle").codes(side).to_dense()
        assert np.array_equal(a, b)


def test_matching_is_refused_and_info_reports_the_crosscoder(built, capsys) -> None:
    out, _ = built
    assert main(["match", str(out)]) == 2
    assert "identity pairing" in capsys.readouterr().err
    assert main(["info", str(out)]) == 0
    text = capsys.readouterr().out
    assert "crosscoder" in text and "EV A" in text and "taxonomy" in text


def _bad_checkpoints(root: Path) -> dict[str, tuple[Path, str]]:
    root.mkdir(parents=True, exist_ok=True)
    save_file({"weight": torch.zeros(3, 3)}, str(root / "other.safetensors"))
    three = random_weights(m=3, d=32, f=8)
    wide = random_weights(d=16, f=8)
    nan = random_weights(d=32, f=8)
    nan["W_enc"][0, 0, 0] = float("nan")
    torch.save(torch.nn.Linear(2, 2), root / "pickled.pt")
    return {
        "layout": (root / "other.safetensors", "neither a dictionary_learning crosscoder"),
        "models": (save_dictionary_learning(root / "m3" / "ae.safetensors", three), "reads M=3 models"),
        "width": (save_dictionary_learning(root / "d16" / "ae.safetensors", wide), "has width 32"),
        "pickle": (root / "pickled.pt", "only unpickling could read"),
        "nan": (save_dictionary_learning(root / "nan" / "ae.safetensors", nan), "NaN"),
    }


def test_bad_input_is_one_sentence_exit_2_and_nothing_written(
    bert_folder: Path, corpus_file: Path, tmp_path: Path, capsys
) -> None:
    for name, (checkpoint, message) in _bad_checkpoints(tmp_path / "bad").items():
        out = tmp_path / f"out-{name}"
        assert main(_args(checkpoint, bert_folder, corpus_file, out)) == 2, name
        err = capsys.readouterr().err.strip().splitlines()
        errors = [line for line in err if line.startswith("error: ")]
        assert errors == [err[-1]] and message in err[-1] and "Traceback" not in "\n".join(err), (name, err)
        assert err[-1].count(". ") == 0 and err[-1].endswith("."), err[-1]  # one sentence
        assert not out.exists(), name
    assert main(["compare", "--model-a", "x", "--model-b", "y", "--out", str(tmp_path / "o")]) == 2
    assert "--crosscoder" in capsys.readouterr().err


def test_crosscoder_harvest_resumes_to_the_same_sums(bert_folder: Path, corpus_file: Path, tmp_path: Path) -> None:
    import shutil as _shutil

    from core.crosscoder.harvest import CrosscoderSides, crosscoder_encoder
    from core.harvest.corpus import load_corpus
    from core.harvest.run import harvest
    from core.harvest.specs import CorpusSpec

    model = load_model(ModelSpec("hf", str(bert_folder)))
    cc = Crosscoder(
        load_checkpoint(save_dictionary_learning(tmp_path / "ck.safetensors", _weights())),
        InputScaling((0.5, 0.7), ("given", "given")),
    )
    sides = CrosscoderSides({"a": model, "b": model}, {s: model.hook(h) for s, h in zip("ab", HOOKS, strict=True)}, cc)
    docs = load_corpus(CorpusSpec("file", str(corpus_file)))
    settings = HarvestSettings(max_tokens=400, max_len=24, shard_units=120, batch_tokens=96, device="cpu")
    whole = harvest(
        {}, docs, settings, tmp_path / "w1", torch.device("cpu"), encoder=crosscoder_encoder(sides, {"k": 1})
    )
    assert whole.n_shards >= 3 and set(whole.extra) >= {"n_tokens", "q_a", "p_b", "sse_a"}
    # a killed run: its later shards were never finished
    _shutil.copytree(tmp_path / "w1", tmp_path / "w2")
    for shard in sorted((tmp_path / "w2").glob("shard_*"))[1:]:
        (shard / "summary.json").unlink()
    again = harvest(
        {}, docs, settings, tmp_path / "w2", torch.device("cpu"), encoder=crosscoder_encoder(sides, {"k": 1})
    )
    assert again.resumed_shards == 1
    for key, value in whole.extra.items():
        assert np.allclose(again.extra[key], value, rtol=1e-12), key
    assert np.array_equal(again.codes["b"].to_dense(), whole.codes["b"].to_dense())
    assert int(whole.extra["n_tokens"][0]) == whole.units.height
