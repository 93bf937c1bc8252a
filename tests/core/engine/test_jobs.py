"""Cluster jobs: the entrypoint a job runs, progress read from its log, an unreachable job server."""

from __future__ import annotations

import pytest

from core.engine.jobs import compare_entrypoint, parse_state
from core.errors import EngineError


def test_entrypoint_joins_the_cluster_and_quotes_paths() -> None:
    line = compare_entrypoint(["--sae-a", "/data/my saes/a", "--out", "/data/b"])
    assert line == "python -m core compare --sae-a '/data/my saes/a' --out /data/b --engine ray --address auto"
    with pytest.raises(EngineError, match="Leave --engine out"):
        compare_entrypoint(["--engine", "local"])


def test_progress_is_the_last_bar_of_the_log() -> None:
    log = (
        "loading side a: 0it [00:00, ?it/s]\rhook sanity a: 0it\n"
        "harvest:  45%|####5     | 1234/2700 [00:01<00:02]\rharvest:  50%|#####     | 1350/2700 [00:02<00:02]\n"
    )
    state = parse_state("job-1", "RUNNING", log)
    assert (state.stage, state.done, state.total) == ("harvest", 1350, 2700)
    assert not state.finished
    done = parse_state("job-1", "SUCCEEDED", log + "correlate: 100%|##########| 3/3 [00:01<00:00]\n/data/b\n")
    assert done.finished and done.last_line == "/data/b" and done.stage == "correlate"
    assert parse_state("job-2", "PENDING", "").stage == ""


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_unreachable_job_server_is_one_sentence(capsys) -> None:
    pytest.importorskip("ray", reason="ray is not installed (the optional extra): pip install -e '.[ray]'")
    from core.cli.main import main

    assert main(["submit", "--address", "http://127.0.0.1:9", "--", "--sae-a", "x"]) == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert line.startswith("error: Cannot reach the Ray job server at http://127.0.0.1:9")
