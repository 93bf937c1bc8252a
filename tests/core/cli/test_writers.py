"""Writers of one bundle: a second writer is told who holds it, two at once never mix, a full disk loses nothing.

The bundle is tiny and model-free (tests/core/_tiny_bundle.py), so `match` runs in a second or two.
The full disk is simulated: the write that would fill it writes part of its file, then raises ENOSPC
as the kernel would.
"""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import polars as pl
import pytest

from core.bundle.lock import BundleBusyError, bundle_lock, lock_path
from core.bundle.reader import open_bundle
from core.bundle.schema import _present_parts
from core.cli.main import main
from core.matching.settings import MatchSettings
from core.pipeline.stages import run_stage
from tests.core._guard import one_sentence, tree_hash
from tests.core._tiny_bundle import WORDS, random_codes, write_bundle

ROOT = Path(__file__).resolve().parents[3]
# the files a match run rewrites, which must change together or not at all
MATCH_FILES = ("matches.parquet", "weight_matches.parquet", "assignment.parquet")


def tiny_matched_bundle(path: Path, seed: int = 0) -> Path:
    """A model-free bundle (300 units, 24 x 20 features) with its matching parts (top_k 10)."""
    texts = [WORDS[i % len(WORDS)] for i in range(300)]
    bundle = write_bundle(path, texts, random_codes(300, 24, 0.2, seed), random_codes(300, 20, 0.2, seed + 1))
    # random codes: nothing is significant, so the test keeps the pairs that pass the threshold alone
    run_stage("matching", bundle, MatchSettings(top_k=10, require_significant=False), device="cpu")
    return bundle


@pytest.fixture(scope="module")
def matched(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tiny_matched_bundle(tmp_path_factory.mktemp("writers") / "bundle")


def copy_bundle(src: Path, dst: Path) -> Path:
    return Path(shutil.copytree(src, dst))


def assert_whole(bundle: Path) -> None:
    """The bundle opens, every listed part reads in full, and the manifest lists exactly the parts on disk."""
    from core.bundle.check import check_parts

    opened = open_bundle(bundle)
    assert opened.broken == {} and check_parts(opened) == {}
    assert opened.manifest["parts"] == _present_parts(bundle)


def _holder(bundle: Path) -> subprocess.Popen[str]:
    code = (
        "import sys; from core.bundle.lock import bundle_lock\n"
        "with bundle_lock(sys.argv[1]):\n"
        "    print('locked', flush=True); sys.stdin.read()\n"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(bundle)], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_told_who_holds_the_bundle(
    matched: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = copy_bundle(matched, tmp_path / "bundle")
    holder = _holder(bundle)
    try:
        before = tree_hash(tmp_path)
        for argv in (["match", str(bundle), "--top-k", "3"], ["similarity", str(bundle), "--n-null", "5"]):
            assert main([*argv, "--device", "cpu"]) == 2
            line = one_sentence(capsys.readouterr().err, "Another run is writing", str(bundle), f"pid {holder.pid}")
            assert " since " in line and "wait for it to finish" in line
        assert tree_hash(tmp_path) == before, "the refused writer touched nothing (the holder's lock file included)"
    finally:
        assert holder.stdin is not None
        holder.stdin.close()
        holder.wait(timeout=60)
    assert main(["match", str(bundle), "--top-k", "3", "--device", "cpu"]) == 0, "a released lock blocks nothing"
    assert not lock_path(bundle).exists()
    assert_whole(bundle)


def test_another_thread_of_the_same_process_is_refused_too(tmp_path: Path) -> None:
    bundle = tmp_path / "bundle"
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with bundle_lock(bundle):
            held.set()
            release.wait(30)

    thread = threading.Thread(target=hold)
    thread.start()
    try:
        assert held.wait(30)
        with pytest.raises(BundleBusyError, match="in this process"):
            with bundle_lock(bundle):
                pass
        with bundle_lock(tmp_path / "other"):  # another bundle is free
            pass
    finally:
        release.set()
        thread.join()
    with bundle_lock(bundle), bundle_lock(bundle):  # re-entrant within one thread (a build runs its stages)
        pass


@pytest.mark.slow  # two subprocesses importing torch; the lock's sentence is tested above without them
def test_two_match_runs_at_once_leave_one_whole_result(matched: Path, tmp_path: Path) -> None:
    references = {}
    for k in (3, 5):
        ref = copy_bundle(matched, tmp_path / f"ref{k}")
        run_stage("matching", ref, MatchSettings(top_k=k), device="cpu")
        references[k] = {name: pl.read_parquet(ref / name) for name in MATCH_FILES}
    bundle = copy_bundle(matched, tmp_path / "bundle")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "core", "match", str(bundle), "--top-k", str(k), "--device", "cpu"],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "FEATUREBRIDGE_CACHE": str(tmp_path / "cache")},
        )
        for k in (3, 5)
    ]
    results = [(p.wait(timeout=300), p.stderr.read() if p.stderr else "") for p in procs]
    for status, err in results:
        assert status in (0, 2), err
        if status == 2:
            one_sentence(err, "Another run is writing", str(bundle))
    assert any(status == 0 for status, _ in results)
    assert_whole(bundle)
    top_k = open_bundle(bundle).manifest["matching"]["settings"]["top_k"]
    assert top_k in (3, 5)
    for name in MATCH_FILES:
        assert pl.read_parquet(bundle / name).equals(references[top_k][name]), (
            f"{name} is not from the top_k={top_k} run"
        )


def _fill_the_disk(monkeypatch: pytest.MonkeyPatch, victim: str) -> None:
    real = pl.DataFrame.write_parquet

    def write_parquet(self: pl.DataFrame, file: object, *args: object, **kwargs: object) -> None:
        if victim in str(file):
            Path(str(file)).write_bytes(b"PAR1 half a file")  # what a filling disk leaves
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real(self, file, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pl.DataFrame, "write_parquet", write_parquet)


def test_a_full_disk_during_a_stage_is_one_sentence_and_loses_nothing(
    matched: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = copy_bundle(matched, tmp_path / "bundle")
    before = tree_hash(tmp_path)
    _fill_the_disk(monkeypatch, "assignment.parquet")
    assert main(["match", str(bundle), "--top-k", "3", "--device", "cpu"]) == 2
    line = one_sentence(capsys.readouterr().err, str(bundle / "assignment.parquet"), "disk is full", "free there")
    assert ".next" not in line and ".tmp" not in line, "the sentence names the user's file, not our temp names"
    assert tree_hash(tmp_path) == before, "no half-written file, no staging copy, the old parts whole"
    assert_whole(bundle)
    monkeypatch.undo()
    assert main(["match", str(bundle), "--top-k", "3", "--device", "cpu"]) == 0, "the same command then works"
    assert open_bundle(bundle).manifest["matching"]["settings"]["top_k"] == 3
    assert_whole(bundle)
