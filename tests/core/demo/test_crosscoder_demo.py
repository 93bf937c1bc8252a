"""The crosscoder demo's recipe: sae-lens's BatchTopK SAE over [x_A; x_B] is our crosscoder, exactly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from core.crosscoder.checkpoint import load_checkpoint
from core.demo.crosscoder import train_batchtopk_crosscoder
from core.demo.settings import DemoSettings


def test_saved_crosscoder_encodes_like_sae_lens_inference_model(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    n, d = 4000, 8
    dictionary = rng.normal(size=(48, 2 * d)).astype(np.float32)
    codes = (rng.random((n, 48)) < 0.05) * rng.exponential(1.0, (n, 48))
    joined = (codes @ dictionary).astype(np.float32)
    settings = DemoSettings(n_tokens=n, d_sae=24, k=4, epochs=2, batch_size=256)
    report = train_batchtopk_crosscoder(joined[:3500], joined[3500:], d, settings, tmp_path / "cc")
    # the dictionary_learning checkpoint read by our loader reconstructs as sae-lens's JumpReLU inference model
    assert report["sae_lens_reference_max_abs_diff"] < 1e-4
    assert report["sae_lens_reference_decisions_differing"] == 0
    weights = load_checkpoint(tmp_path / "cc")
    assert weights.format == "dictionary_learning" and weights.architecture == "batchtopk"
    assert weights.code_normalization == "sae" and weights.k == 4 and weights.n_latents == 24
    assert tuple(weights.W_dec.shape) == (2, 24, d)
    config = json.loads((tmp_path / "cc" / "config.json").read_text())
    assert config["trainer"]["dict_class"] == "BatchTopKCrossCoder"
    assert 0 < report["l0"] < 24
    assert all(0 < report[side]["held_out_explained_variance"] <= 1 for side in "ab")


@pytest.mark.slow
def test_crosscoder_demo_builds_from_an_empty_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """The issue's acceptance check: EV >= 0.7 per model, the taxonomy, the causal check of shared latents."""
    from core.bundle.reader import open_bundle
    from core.demo.crosscoder import build_crosscoder_demo, crosscoder_demo_bundle_path

    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path_factory.mktemp("cache")))
        path = build_crosscoder_demo(device="cpu")
        assert path == crosscoder_demo_bundle_path()
    bundle = open_bundle(path)
    m = bundle.manifest
    training = m["demo"]["training"]
    for side in ("a", "b"):
        assert training[side]["held_out_explained_variance"] >= 0.7
        assert m["crosscoder"]["explained_variance"][side] >= 0.7
    assert training["sae_lens_reference_tokens_differing"] < 0.01
    assert set(m["analyses"]["taxonomy"]) == {"shared", "dead", "unclassified", "base_only", "chat_only"}
    assert sum(m["analyses"]["taxonomy"].values()) == 2048
    causal = m["causal"]
    assert causal["select"] == "shared" and causal["n_checked"] == 200 and causal["n_probes"] == 256
    assert causal["median_equivalence_shared"] is not None
    for part in ("analyses", "causal", "similarity", "dashboards", "umap", "crosscoder"):
        assert bundle.has(part), part
