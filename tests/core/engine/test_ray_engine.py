"""The Ray engine writes the same bundle as the local engine, survives a dying worker and resumes exactly.

The equivalence test runs the demo's real models (all-MiniLM-L6-v2 block 3 against
paraphrase-MiniLM-L3-v2 block 1) with TopK SAEs of the demo's shape (2048 latents, k 32; random
weights, since training the demo's own SAEs takes minutes) on 800 units of the demo corpus in
4 shards; the fault and resume tests run a tiny random BERT (their subject is the scheduling,
and each Ray build costs its workers' start-up). Every Ray build is compared with a local build
of the same inputs: codes and units byte for byte, matches and assignment equal, similarity to
1e-6, for several worker and block counts.

Byte equality of the codes needs the same torch thread count on both sides (MKL splits some
small products by thread count), so the local build runs with THREADS threads and every Ray
worker is given THREADS CPUs; then 2 workers take all 4 logical CPUs of the test cluster, which
makes every test here also a regression test of the actor/reduce deadlock.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.bundle.reader import open_bundle
from core.bundle.safety import staging_path
from core.demo.settings import DEMO_HOOK_A, DEMO_HOOK_B, DEMO_MODEL_A, DEMO_MODEL_B
from core.engine.local import LocalEngine
from core.engine.settings import EngineSettings
from core.engine.worker import HarvestWorker
from core.errors import EngineError
from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
from core.pipeline.compare import ComparisonSpec, build_comparison
from core.spaces.settings import SimilaritySettings
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus
from tests.core.engine.conftest import TEST_CPUS

pytestmark = [pytest.mark.slow, pytest.mark.ray, pytest.mark.timeout(900)]

STAGES = ("matching", "similarity")
STAGE_SETTINGS = {"similarity": SimilaritySettings(metrics=("svcca", "rsa"), n_null=20, n_boot=0)}
BYTE_EQUAL = ("codes_a.safetensors", "codes_b.safetensors", "units.parquet")
THREADS = 2


class _Stop(Exception):
    pass


@contextmanager
def _local_threads() -> Iterator[None]:
    """Run a local build with THREADS torch threads, as every Ray worker gets (other test modules set 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@pytest.fixture(scope="module")
def demo_spec(tmp_path_factory: pytest.TempPathFactory) -> ComparisonSpec:
    root = tmp_path_factory.mktemp("demo-saes")
    sae_a = build_topk_sae_folder(root / "sae_a", d_in=384, d_sae=2048, k=32, hook_name=DEMO_HOOK_A, seed=1)
    sae_b = build_topk_sae_folder(root / "sae_b", d_in=384, d_sae=2048, k=32, hook_name=DEMO_HOOK_B, seed=2)
    return ComparisonSpec(
        a=SideSpec(DEMO_MODEL_A, SAESpec("local", str(sae_a))),
        b=SideSpec(DEMO_MODEL_B, SAESpec("local", str(sae_b))),
        corpus=CorpusSpec("fortunes", max_docs=400),
        harvest=HarvestSettings(
            max_tokens=800, max_len=64, shard_units=200, batch_tokens=2048, sanity_tokens=256, device="cpu"
        ),
    )


@pytest.fixture(scope="module")
def local_bundle(demo_spec: ComparisonSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("local") / "bundle"
    with _local_threads():
        return build_comparison(demo_spec, out, stages=STAGES, stage_settings=STAGE_SETTINGS)


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory: pytest.TempPathFactory) -> ComparisonSpec:
    root = tmp_path_factory.mktemp("tiny")
    model = ModelSpec("hf", str(build_bert_folder(root / "bert")))
    return ComparisonSpec(
        a=SideSpec(
            model,
            SAESpec("local", str(build_topk_sae_folder(root / "a", hook_name="blocks.1.hook_resid_post", seed=1))),
        ),
        b=SideSpec(
            model,
            SAESpec("local", str(build_topk_sae_folder(root / "b", hook_name="blocks.2.hook_resid_post", seed=2))),
        ),
        corpus=CorpusSpec("file", str(write_corpus(root / "corpus.jsonl"))),
        harvest=HarvestSettings(
            max_tokens=600, max_len=24, shard_units=150, batch_tokens=96, sanity_tokens=64, device="cpu"
        ),
    )


@pytest.fixture(scope="module")
def tiny_local(tiny_spec: ComparisonSpec, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("tiny-local") / "bundle"
    with _local_threads():
        return build_comparison(tiny_spec, out, stages=("matching",))


def _ray(demo_spec: ComparisonSpec, **settings: Any) -> ComparisonSpec:
    return replace(demo_spec, engine=EngineSettings(name="ray", cpus_per_worker=THREADS, **settings))


def _assert_same_bundle(got: Path, want: Path, similarity: bool = False) -> None:
    for name in BYTE_EQUAL:
        assert (got / name).read_bytes() == (want / name).read_bytes(), f"{name} differs from the local engine's"
    g, w = open_bundle(got), open_bundle(want)
    assert g.matches().collect().equals(w.matches().collect())
    assert g.assignment().collect().equals(w.assignment().collect())
    for side in ("a", "b"):
        assert g.features(side).collect().equals(w.features(side).collect())
    if similarity:
        metrics_g = {m["metric"]: m for m in _metrics(g.similarity_json())}
        metrics_w = {m["metric"]: m for m in _metrics(w.similarity_json())}
        assert metrics_g.keys() == metrics_w.keys() and metrics_g
        for name, row in metrics_w.items():
            assert metrics_g[name]["value"] == pytest.approx(row["value"], abs=1e-6)


def _metrics(similarity: dict[str, Any]) -> list[dict[str, Any]]:
    rows = similarity.get("metrics", similarity)
    if isinstance(rows, dict):
        return [{"metric": k, **v} for k, v in rows.items() if isinstance(v, dict) and "value" in v]
    return [r for r in rows if isinstance(r, dict) and "value" in r]


def test_ray_equals_local_while_the_actors_hold_every_cpu(ray_cluster, demo_spec, local_bundle, tmp_path) -> None:
    # deadlock regression: 2 actors x 2 CPUs take all 4 logical CPUs of the test cluster, and the
    # reduce's 2-CPU block tasks can only run once the actors are gone
    spec = _ray(demo_spec, workers=2, row_blocks=3)
    out = build_comparison(spec, tmp_path / "ray", stages=STAGES, stage_settings=STAGE_SETTINGS)
    _assert_same_bundle(out, local_bundle, similarity=True)
    manifest = open_bundle(out).manifest
    engine = manifest["settings"]["engine"]
    assert engine["name"] == "ray" and engine["workers_used"] == 2 and engine["cpus_used_per_worker"] == 2
    assert manifest["matching"]["n_blocks"] == 3
    assert manifest["harvest"]["n_shards"] == 4
    assert _cpus_freed(ray_cluster), "the engine left resources taken"


def _cpus_freed(ray: Any, wait_s: float = 30.0) -> bool:
    """Whether every CPU of the test cluster is free again (killed actors release theirs within seconds)."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if ray.available_resources().get("CPU", 0) >= TEST_CPUS:
            return True
        time.sleep(0.5)
    return False


def _flaky_worker(marker: Path) -> type[HarvestWorker]:
    class FlakyWorker(HarvestWorker):
        """Dies (the whole process, as an OOM kill would) on its first attempt at shard 1."""

        def run(self, task):  # type: ignore[no-untyped-def]
            if task.number == 1 and not marker.exists():
                marker.write_text(str(os.getpid()))
                os._exit(1)
            return super().run(task)

    return FlakyWorker


def test_a_worker_dying_on_its_first_attempt_still_gives_the_identical_bundle(
    ray_cluster, tiny_spec, tiny_local, tmp_path
) -> None:
    from core.engine.ray_engine import RayEngine

    marker = tmp_path / "died-once"
    spec = _ray(tiny_spec, workers=2)
    engine = RayEngine(spec.engine, worker_class=_flaky_worker(marker))
    out = build_comparison(spec, tmp_path / "ray", stages=("matching",), engine=engine)
    assert marker.exists(), "the planted failure must have happened"
    _assert_same_bundle(out, tiny_local)
    assert not staging_path(tmp_path / "ray", "partial").exists(), "the shards go once the bundle is whole"


def _recording_worker(log_dir: Path) -> type[HarvestWorker]:
    class RecordingWorker(HarvestWorker):
        """Notes every shard it runs (on the shared filesystem)."""

        def run(self, task):  # type: ignore[no-untyped-def]
            (log_dir / f"shard_{task.number}").touch()
            return super().run(task)

    return RecordingWorker


def test_resume_on_ray_recomputes_only_the_deleted_shards(ray_cluster, tiny_spec, tiny_local, tmp_path) -> None:
    from core.engine.ray_engine import RayEngine

    out = tmp_path / "bundle"

    def stop_after_harvest(stage: str, done: int, total: int) -> None:
        # after the harvest the build writes the codes and features (a step of the harvest phase)
        if stage.endswith("writing codes and features"):
            raise _Stop

    # the first run is the local engine's: --resume works across engines (its shards are compared byte for byte
    # with tiny_local's, so it gets the same thread count; the full suite runs with 1 thread set by other modules)
    with _local_threads(), pytest.raises(_Stop):
        build_comparison(tiny_spec, out, progress=stop_after_harvest, stages=(), engine=LocalEngine())
    shards = sorted((staging_path(out, "partial") / ".work").glob("shard_*"))
    assert len(shards) == 4
    for shard in shards[1::2]:
        shutil.rmtree(shard)
    log_dir = tmp_path / "ran"
    log_dir.mkdir()
    spec = _ray(tiny_spec, workers=1, row_blocks=5)
    engine = RayEngine(spec.engine, worker_class=_recording_worker(log_dir))
    build_comparison(spec, out, stages=("matching",), resume=True, engine=engine)
    assert sorted(p.name for p in log_dir.iterdir()) == ["shard_1", "shard_3"]
    assert json.loads((out / "manifest.json").read_text())["harvest"]["resumed_shards"] == 2
    _assert_same_bundle(out, tiny_local)


def _broken_worker() -> type[HarvestWorker]:
    class BrokenWorker(HarvestWorker):
        """A worker whose node lacks side A's SAE folder."""

        def __init__(self, index, sides, *args, **kwargs):  # type: ignore[no-untyped-def]
            sides = {**sides, "a": replace(sides["a"], sae=SAESpec("local", "/nonexistent/sae_a"))}
            super().__init__(index, sides, *args, **kwargs)

    return BrokenWorker


def test_a_worker_that_cannot_load_names_itself_and_the_spec(ray_cluster, tiny_spec, tmp_path) -> None:
    from core.engine.ray_engine import RayEngine

    spec = _ray(tiny_spec, workers=1)
    engine = RayEngine(spec.engine, worker_class=_broken_worker())
    with pytest.raises(EngineError) as caught:
        build_comparison(spec, tmp_path / "bundle", stages=(), engine=engine)
    message = str(caught.value)
    assert message.startswith("Harvest worker 0 on ") and "local:/nonexistent/sae_a" in message
    assert "does not exist" in message and "\n" not in message
    assert _cpus_freed(ray_cluster), "the engine left resources taken"


def test_reduce_tasks_read_codes_files_not_the_object_store(ray_cluster, local_bundle) -> None:
    from core.engine.ray_engine import RayEngine
    from core.matching.correlate import compute_correlation

    bundle = open_bundle(local_bundle)
    codes_a, codes_b = bundle.codes("a"), bundle.codes("b")
    engine = RayEngine(EngineSettings(name="ray", row_blocks=7, cpus_per_worker=1))
    engine.start()
    result = engine.correlator()(local_bundle, codes_a, codes_b, top_k=5, chunk_units=333)
    want = compute_correlation(codes_a, codes_b, top_k=5, chunk_units=333)
    assert result.n_blocks == 7
    for got, ref in ((result.ab, want.ab), (result.ba, want.ba)):
        np.testing.assert_array_equal(got.index, ref.index)
        np.testing.assert_array_equal(got.score, ref.score)
