"""A small REAL comparison bundle for the app tests: tiny BERT, tiny sae-lens TopK SAEs, every stage.

Shared by tests/pages (AppTest) and tests/e2e (browser): built once per pytest session under the
session's base temp folder, and reused when a second conftest asks for it.
"""

from __future__ import annotations

from pathlib import Path

from core.bundle.reader import open_bundle


def build_app_bundle(root: Path) -> Path:
    """Build (or reuse) the app-test bundle under ``root``: spine, matching, similarity, dashboards, UMAP.

    Args:
        root: a folder owned by the test session.

    Returns:
        The bundle folder.
    """
    from core.dashboards.settings import DashboardSettings
    from core.embedding.settings import UMAPSettings
    from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
    from core.matching.settings import MatchSettings
    from core.pipeline.compare import ComparisonSpec, build_comparison
    from core.pipeline.stages import STAGES
    from core.spaces.settings import SimilaritySettings
    from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus

    out = root / "bundle"
    if (out / "manifest.json").is_file() and open_bundle(out).has("umap"):
        return out
    root.mkdir(parents=True, exist_ok=True)
    model = build_bert_folder(root / "bert")
    sae_a = build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1)
    sae_b = build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2, d_sae=48, k=3)
    corpus = write_corpus(root / "corpus.jsonl")
    spec = ComparisonSpec(
        a=SideSpec(ModelSpec("hf", str(model)), SAESpec("local", str(sae_a)), label="tiny BERT · block 1"),
        b=SideSpec(ModelSpec("hf", str(model)), SAESpec("local", str(sae_b)), label="tiny BERT · block 2"),
        corpus=CorpusSpec("file", str(corpus)),
        harvest=HarvestSettings(
            max_tokens=600, max_len=24, shard_units=300, batch_tokens=96, sanity_tokens=64, device="cpu"
        ),
    )
    build_comparison(
        spec,
        out,
        overwrite=True,
        stages=STAGES,
        stage_settings={
            "matching": MatchSettings(),
            "similarity": SimilaritySettings(n_null=20, n_boot=20, n_null_concepts=10),
            "dashboards": DashboardSettings(chunk_units=256, threads=1),
            # the linear layout: real UMAP (seconds of numba compilation) is tested in tests/core/embedding
            "umap": UMAPSettings(method="pca"),
        },
    )
    return out


def build_spine_bundle(root: Path) -> Path:
    """A copy of the app bundle reduced to its required parts (to test the "not computed yet" paths)."""
    import json
    import shutil

    from core.bundle.schema import PART_FILES, REQUIRED_PARTS

    full = build_app_bundle(root)
    out = root / "spine"
    if (out / "manifest.json").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    keep = {f for p in REQUIRED_PARTS for f in PART_FILES[p]}
    for name in keep:
        shutil.copy2(full / name, out / name)
    manifest = json.loads((full / "manifest.json").read_text())
    manifest["parts"] = {p: p in REQUIRED_PARTS for p in PART_FILES}
    for key in ("matching", "similarity", "dashboards", "umap"):
        manifest.pop(key, None)
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


def build_crosscoder_app_bundle(root: Path) -> Path:
    """Build (or reuse) a tiny crosscoder bundle: tiny BERT at two blocks, a planted crosscoder, every stage and the causal check.

    The crosscoder's latents 0-3 write nothing into model B (A-only) and 4-7 almost nothing into
    model A (B-only); the rest are shared.

    Args:
        root: a folder owned by the test session.

    Returns:
        The bundle folder.
    """
    from core.crosscoder.settings import AnalysisSettings, CausalSettings, CrosscoderSpec
    from core.dashboards.settings import DashboardSettings
    from core.embedding.settings import UMAPSettings
    from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec
    from core.pipeline.crosscoder import CrosscoderComparisonSpec, build_crosscoder_comparison
    from core.pipeline.stages import CROSSCODER_STAGES
    from core.spaces.settings import SimilaritySettings
    from tests.core.builders import build_bert_folder, write_corpus
    from tests.core.crosscoder.synthetic import random_weights, save_dictionary_learning

    out = root / "crosscoder-bundle"
    if (out / "manifest.json").is_file() and open_bundle(out).has("causal"):
        return out
    root.mkdir(parents=True, exist_ok=True)
    model = root / "bert" if (root / "bert" / "config.json").is_file() else build_bert_folder(root / "bert")
    weights = random_weights(d=32, f=48, seed=7)
    weights["W_enc"] = weights["W_enc"] / 6
    weights["W_dec"][1, :4] = 0.0
    weights["W_dec"][0, 4:8] *= 0.02
    checkpoint = save_dictionary_learning(root / "crosscoder" / "ae.safetensors", weights, k=4, threshold=0.5)
    corpus = root / "corpus.jsonl" if (root / "corpus.jsonl").is_file() else write_corpus(root / "corpus.jsonl")
    spec = CrosscoderComparisonSpec(
        crosscoder=CrosscoderSpec(str(checkpoint)),
        model_a=ModelSpec("hf", str(model)),
        model_b=ModelSpec("hf", str(model)),
        corpus=CorpusSpec("file", str(corpus)),
        hook_a="blocks.1.hook_resid_post",
        hook_b="blocks.2.hook_resid_post",
        label_a="tiny BERT · block 1",
        label_b="tiny BERT · block 2",
        harvest=HarvestSettings(
            max_tokens=600, max_len=24, shard_units=300, batch_tokens=96, sanity_tokens=64, device="cpu"
        ),
    )
    build_crosscoder_comparison(
        spec,
        out,
        overwrite=True,
        stages=(*CROSSCODER_STAGES, "causal"),
        stage_settings={
            "analyses": AnalysisSettings(top_n=5),
            "similarity": SimilaritySettings(n_null=20, n_boot=20, n_null_concepts=10),
            "dashboards": DashboardSettings(chunk_units=256, threads=1),
            "umap": UMAPSettings(n_neighbors=8, n_epochs=30),
            "causal": CausalSettings(top_n=24, select="live", n_probes=30, probe_len=16, n_perm=99, device="cpu"),
        },
    )
    return out
