"""Costs said up front: settings that cannot fit are refused with the largest that would, long steps announce themselves.

Memory is given as a number (``free=``) so the refusals are exact and do not depend on the
machine; time goes through a fake clock, so nothing here depends on how fast the machine is.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

import core.progress
import core.spaces.nulls as nulls
from core.cli.main import main
from core.errors import SpecError
from core.matching.settings import MatchSettings
from core.pipeline.costs import (
    CostWatcher,
    check_matching_fits,
    check_similarity_fits,
    check_stage_costs,
    matching_memory,
    similarity_memory,
)
from core.progress import announce_estimate, format_seconds
from core.spaces.compute import compute_similarity
from core.spaces.settings import SimilaritySettings
from tests.core._guard import one_sentence, tree_hash
from tests.core._notes import note_lines
from tests.core.cli.test_writers import tiny_matched_bundle


def test_a_null_count_that_cannot_fit_is_refused_with_the_largest_that_fits() -> None:
    settings = SimilaritySettings(n_null=10_000_000, metrics=("svcca", "cka"))
    need = similarity_memory(500, 10_000_000, 2, settings.chunk)
    assert need == 16 * 10_000_000 * 2 + 8 * settings.chunk * 500
    free = need // 2
    with pytest.raises(SpecError, match="--n-null 10,000,000 needs about") as refused:
        check_similarity_fits(500, settings, free=free)
    largest = int(str(refused.value).rsplit("--n-null ", 1)[1].rstrip(".").replace(",", ""))
    budget = int(free * 0.8)
    assert (
        similarity_memory(500, largest, 2, settings.chunk)
        <= budget
        < similarity_memory(500, largest + 1, 2, settings.chunk)
    ), "the largest value named is exactly the largest that fits"
    check_similarity_fits(500, SimilaritySettings(n_null=largest, metrics=("svcca", "cka")), free=free)


def test_a_memory_bound_or_top_k_that_cannot_fit_is_refused() -> None:
    with pytest.raises(SpecError, match=r"--memory-mb 4,096 needs about .*the largest that fits is --memory-mb 409\b"):
        check_matching_fits(100, 100, MatchSettings(memory_mb=4096), free=1024 * 2**20)
    n = 2_000_000
    need = matching_memory(n, n, 5000, 64)
    with pytest.raises(SpecError, match="--top-k 5,000 needs about") as refused:
        check_matching_fits(n, n, MatchSettings(top_k=5000, memory_mb=64), free=need // 3)
    largest = int(str(refused.value).rsplit("--top-k ", 1)[1].rstrip(".").replace(",", ""))
    assert matching_memory(n, n, largest, 64) <= int(need // 3 * 0.8) < matching_memory(n, n, largest + 1, 64)
    check_stage_costs({"matching": MatchSettings(top_k=largest, memory_mb=64)}, n, n, free=need // 3)


def test_the_cli_refuses_a_null_count_no_machine_holds_and_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = tiny_matched_bundle(tmp_path / "bundle")
    before = tree_hash(tmp_path)
    assert main(["similarity", str(bundle), "--n-null", "1000000000000", "--device", "cpu"]) == 2
    one_sentence(capsys.readouterr().err, "--n-null 1,000,000,000,000", "needs about", "the largest that fits is")
    assert tree_hash(tmp_path) == before


@contextmanager
def notices() -> Iterator[list[str]]:
    """The warnings the ``core`` logger emits meanwhile (the CLI may have turned its propagation off)."""
    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    logger, handler = logging.getLogger("core"), Collect(logging.WARNING)
    logger.addHandler(handler)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)


class FakeClock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_the_watcher_announces_a_long_step_once_from_its_measured_rate() -> None:
    clock, seen = FakeClock(), []
    watch = CostWatcher(lambda *report: seen.append(report), notice_after_s=180, clock=clock)
    with notices() as said:
        watch("null", 0, 10_000)
        clock.now = 2.0
        watch("null", 10, 10_000)  # under MEASURE_S: no projection yet
        clock.now = 4.0
        watch("null", 20, 10_000)  # 20 done in 4 s: 9,980 left is about 33 min
        clock.now = 6.0
        watch("null", 30, 10_000)  # said once
        watch("short", 0, 100)
        clock.now = 10.0
        watch("short", 99, 100)  # 1 left: nothing to say
    assert len(seen) == 6, "every report is passed on"
    assert watch.notices == [
        "null: about 33 min left at the current rate (20 of 10,000 done); --n-null sizes it; Ctrl-C stops it."
    ]
    assert said == watch.notices


def test_an_estimate_is_said_only_when_long() -> None:
    assert announce_estimate("x", 100.0, "--n-null 10", "basis") is None
    message = announce_estimate("similarity null", 4000.0, "--n-null 1,000,000", "4 ms per sample")
    assert message == (
        "similarity null: about 1 h 6 min with --n-null 1,000,000 (4 ms per sample); lower it for a quicker run, "
        "or Ctrl-C stops it."
    )
    assert [format_seconds(s) for s in (5, 300, 7300, 200_000)] == ["5 s", "5 min", "2 h 1 min", "2.3 days"]


def test_the_null_estimate_is_the_probed_cost_per_sample_times_the_count(monkeypatch: pytest.MonkeyPatch) -> None:
    ticks = iter(np.arange(0, 1000, 0.5))  # every clock read is 0.5 s after the previous one
    monkeypatch.setattr(nulls.time, "perf_counter", lambda: float(next(ticks)))
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((60, 6)), rng.standard_normal((60, 5))
    prep = nulls.prepare_pairs(x, y, ("svcca", "rsa"), device="cpu")
    # each timed call reads the clock twice: 0.5 s per probe; gram probe of 8 samples, rsa probe of 32
    assert nulls.estimate_permutation_null_s(prep, ("svcca", "rsa"), 10_000, chunk=8) == pytest.approx(
        0.5 / 8 * 10_000 + 0.5 / 32 * 10_000
    )


def test_a_large_null_count_announces_its_estimate_before_the_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(core.progress, "NOTICE_AFTER_S", 0.0)  # every estimate counts as long here
    order: list[str] = []
    real = nulls.compute_permutation_nulls
    monkeypatch.setattr(
        "core.spaces.compute.compute_permutation_nulls",
        lambda *a, **k: order.append("samples") or real(*a, **k),
    )
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((40, 6)), rng.standard_normal((40, 5))
    with notices() as said:
        compute_similarity(x, y, SimilaritySettings(metrics=("svcca",), n_null=nulls.ESTIMATE_FROM - 1), "cpu")
        assert said == [] and order == ["samples"], "a small null count is not probed"
        monkeypatch.setattr(core.progress.LOG, "warning", lambda message: order.append(message))
        compute_similarity(x, y, SimilaritySettings(metrics=("svcca",), n_null=nulls.ESTIMATE_FROM), "cpu")
    assert len(order) == 3 and order[1].startswith("similarity null: about ") and order[2] == "samples"
    assert f"--n-null {nulls.ESTIMATE_FROM:,}" in order[1] and "per sample measured on 40 pairs" in order[1]


def test_the_cli_prints_the_estimate_as_a_note(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(core.progress, "NOTICE_AFTER_S", 0.0)
    bundle = tiny_matched_bundle(tmp_path / "bundle")
    assert main(["similarity", str(bundle), "--n-null", str(nulls.ESTIMATE_FROM), "--device", "cpu"]) == 0
    notes = note_lines(capsys.readouterr().err)
    assert len(notes) == 1 and notes[0].startswith("note: similarity null: about "), notes
