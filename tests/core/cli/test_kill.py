"""A stage SIGKILLed at any point leaves the old bundle or the new one, never a mix, and blocks nothing.

`python -m core match` runs in a subprocess that kills itself (SIGKILL: no cleanup runs) just
before or just after its N-th file-system operation (tests/core/_killpoint.py). A first run
counts the operations, so kill points are chosen among all of them: the commit (the swap of the
two folders) in the fast lane, every one of them, before and after, in the slow lane. After each kill: the bundle opens, every listed part
reads in full, the manifest lists exactly the parts on disk, the files the stage rewrites are
all those of the old run or all those of the new one (whichever the manifest records), and the same command run again succeeds and leaves nothing beside the bundle.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from core.bundle.reader import open_bundle
from core.bundle.safety import staging_path
from core.cli.main import main
from tests.core.cli.test_writers import MATCH_FILES, ROOT, assert_whole, tiny_matched_bundle

ARGS = ("--top-k", "3", "--device", "cpu")


def _state(bundle: Path) -> tuple[int, dict[str, str]]:
    """The matching settings' top_k the manifest records, and the digests of the files a match run rewrites."""
    top_k = open_bundle(bundle).manifest["matching"]["settings"]["top_k"]
    return top_k, {n: hashlib.sha256((bundle / n).read_bytes()).hexdigest() for n in MATCH_FILES}


def _run_killed(bundle: Path, kill_at: int, when: str, tmp: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            *(sys.executable, "-m", "tests.core._killpoint", str(tmp / "count"), str(bundle.parent)),
            *(str(kill_at), when, "match", str(bundle), *ARGS),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "FEATUREBRIDGE_CACHE": str(tmp / "cache")},
    )


@pytest.fixture(scope="module")
def killable(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[str], dict[int, dict[str, str]]]:
    """The bundle to kill runs on, the file-system operations a whole `match` run makes (in order),
    and the old and the new state (top_k -> digests of the rewritten files)."""
    root = tmp_path_factory.mktemp("kill")
    bundle = tiny_matched_bundle(root / "bundle")
    trial = Path(shutil.copytree(bundle, root / "trial"))
    done = _run_killed(trial, 0, "before", root)
    assert done.returncode == 0, done.stderr
    operations = (root / "count").read_text().split()
    assert "_renameat2_exchange" in operations or "rename" in operations, operations
    states = dict([_state(bundle), _state(trial)])
    assert sorted(states) == [3, 10]
    return bundle, operations, states


def _check_kill(bundle: Path, states: dict[int, dict[str, str]], kill_at: int, when: str, tmp: Path) -> None:
    run = Path(shutil.copytree(bundle, tmp / f"b{kill_at}{when}"))
    done = _run_killed(run, kill_at, when, tmp)
    assert done.returncode == -signal.SIGKILL, (kill_at, when, done.returncode, done.stderr[-1500:])
    assert_whole(run)
    top_k, digests = _state(run)
    assert digests == states[top_k], f"killed {when} operation {kill_at}: the parts are not those of top_k={top_k}"
    assert main(["match", str(run), *ARGS]) == 0, "what the kill left behind does not block the re-run"
    assert open_bundle(run).manifest["matching"]["settings"]["top_k"] == 3
    assert_whole(run)
    left = [p.name for p in run.parent.iterdir() if p.name.startswith(f".{run.name}.")]
    assert left == [], f"left beside the bundle after the re-run: {left}"
    assert not staging_path(run, "next").exists() and not staging_path(run, "old").exists()


def test_a_stage_killed_at_its_commit_leaves_old_or_new(
    killable: tuple[Path, list[str], dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    bundle, operations, states = killable
    # right after the swap of the two folders, before the old copy is removed: the tightest point
    swap = 1 + next(i for i, name in enumerate(operations) if name in ("_renameat2_exchange", "rename"))
    _check_kill(bundle, states, swap, "after", tmp_path)


@pytest.mark.slow
def test_a_stage_killed_at_every_point_leaves_old_or_new(
    killable: tuple[Path, list[str], dict[int, dict[str, str]]], tmp_path: Path
) -> None:
    bundle, operations, states = killable
    for kill_at in range(1, len(operations) + 1):
        for when in ("before", "after"):
            _check_kill(bundle, states, kill_at, when, tmp_path)
