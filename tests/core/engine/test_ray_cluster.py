"""Real cluster mode through the CLI, with every packet on loopback, and the engine's bad inputs.

The cluster test starts ``ray start --head``, runs ``python -m core compare --engine ray
--address auto`` against it, then submits the same comparison as a Ray job through its job
server (``python -m core submit``, what the app uses instead of joining the cluster) and follows
it to the end, all inside fresh network, PID and mount namespaces (``unshare``, root only): the
network namespace has only ``lo``, so Ray cannot advertise a routable address; the PID namespace
ends every Ray process of the test when its shell exits (``ray stop`` there sees only its own);
a tmpfs on /tmp/ray keeps the session files (and ``--address auto``'s lookup) away from any
other cluster on the machine.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from core.cli.main import main
from tests.core.builders import build_bert_folder, build_topk_sae_folder, write_corpus
from tests.core.engine.conftest import import_ray_or_skip

ROOT = Path(__file__).resolve().parents[3]
BYTE_EQUAL = ("codes_a.safetensors", "codes_b.safetensors", "units.parquet")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cluster")
    return {
        "model": build_bert_folder(root / "bert"),
        "sae_a": build_topk_sae_folder(root / "sae_a", hook_name="blocks.1.hook_resid_post", seed=1),
        "sae_b": build_topk_sae_folder(root / "sae_b", hook_name="blocks.2.hook_resid_post", seed=2),
        "corpus": write_corpus(root / "corpus.jsonl"),
    }


def _compare(inputs: dict[str, Path], out: Path, *extra: str) -> list[str]:
    return [
        "compare",
        *("--sae-a", str(inputs["sae_a"]), "--model-a", str(inputs["model"])),
        *("--sae-b", str(inputs["sae_b"]), "--model-b", str(inputs["model"])),
        *("--corpus", f"file:{inputs['corpus']}", "--out", str(out), "--device", "cpu"),
        *("--max-tokens", "600", "--max-len", "24", "--shard-units", "150", "--batch-tokens", "96"),
        *("--stages", "matching"),
        *extra,
    ]


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces (CI runs as root)"
    for tool in ("unshare", "ip", "mount"):
        if shutil.which(tool) is None:
            return f"needs the {tool} command"
    probe = subprocess.run(["unshare", "-n", "-p", "-f", "--mount-proc", "true"], capture_output=True)
    return None if probe.returncode == 0 else f"unshare failed here: {probe.stderr.decode().strip()}"


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_cli_on_a_started_cluster_stays_on_loopback_and_equals_local(inputs, tmp_path: Path) -> None:
    import_ray_or_skip()
    reason = _can_make_namespaces()
    if reason:
        pytest.skip(reason)
    local, clustered, jobbed = tmp_path / "local", tmp_path / "clustered", tmp_path / "jobbed"
    # one torch thread locally and one CPU per worker: the same kernels, so the same bytes
    assert main(["--threads", "1", *_compare(inputs, local)]) == 0
    bin_dir = Path(sys.executable).parent
    cli = " ".join([sys.executable, "-m", "core", *_compare(inputs, clustered, "--engine", "ray", "--address", "auto")])
    cli += " --workers 2 --cpus-per-worker 1 --row-blocks 3"
    # submit takes what follows `compare`
    job_args = " ".join(_compare(inputs, jobbed)[1:]) + " --workers 1 --cpus-per-worker 1 --row-blocks 2"
    submit = f"{sys.executable} -m core submit --address http://127.0.0.1:8265 --poll-s 1 -- {job_args}"
    script = f"""
set -u
ip link set lo up
mkdir -p /tmp/ray && mount -t tmpfs tmpfs /tmp/ray
export PATH={bin_dir}:$PATH
ray start --head --node-ip-address 127.0.0.1 --num-cpus 4 --dashboard-host 127.0.0.1 --dashboard-port 8265 \\
    --disable-usage-stats > {tmp_path / "ray-start.log"} 2>&1 || exit 97
{cli} || exit 98
{submit}
rc=$?
ray stop --force > /dev/null 2>&1
exit $rc
"""
    run = subprocess.run(
        ["unshare", "-n", "-p", "-f", "--mount-proc", "bash", "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=800,
    )
    assert run.returncode != 97, (tmp_path / "ray-start.log").read_text()[-2000:]
    assert run.returncode == 0, run.stderr[-3000:]
    for out, workers in ((clustered, 2), (jobbed, 1)):
        for name in BYTE_EQUAL:
            assert (out / name).read_bytes() == (local / name).read_bytes(), f"{out.name}: {name}"
        engine = json.loads((out / "manifest.json").read_text())["settings"]["engine"]
        assert engine["address"] == "auto" and engine["workers_used"] == workers and engine["nodes"] == 1
        assert all(ip.startswith("127.") for ip in engine["node_ips"]), engine["node_ips"]
    # the submitting side saw the job through to its end and printed the bundle the job wrote
    assert run.stdout.strip().splitlines()[-1] == str(jobbed)


def _last_error(capsys: pytest.CaptureFixture[str]) -> str:
    lines = capsys.readouterr().err.strip().splitlines()
    assert lines and "Traceback" not in "\n".join(lines)
    assert lines[-1].startswith("error: ")
    return lines[-1]


def test_engine_ray_without_the_extra_says_how_to_install_and_deletes_nothing(
    inputs, tmp_path: Path, capsys, monkeypatch
) -> None:
    out = tmp_path / "bundle"
    (out / ".work" / "shard_00000").mkdir(parents=True)
    (out / ".work" / "shard_00000" / "summary.json").write_text("{}")
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray now raises ImportError
    assert main(_compare(inputs, out, "--engine", "ray", "--resume")) == 2
    line = _last_error(capsys)
    assert "needs Ray" in line and "pip install -e '.[ray]'" in line
    assert (out / ".work" / "shard_00000" / "summary.json").is_file()


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_unreachable_address_is_one_sentence_at_once(inputs, tmp_path: Path) -> None:
    import_ray_or_skip()
    # a fresh process: the shared test cluster of this session must not be joined instead
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "core",
            *_compare(inputs, tmp_path / "b", "--engine", "ray", "--address", "127.0.0.1:9"),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=100,
    )
    assert run.returncode == 2
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("error: Cannot reach a Ray cluster at 127.0.0.1:9") and "ray start --head" in line
    assert not (tmp_path / "b").exists(), "nothing is created before the engine is reachable"


def test_ray_only_flags_on_the_local_engine_are_refused(inputs, tmp_path: Path, capsys) -> None:
    assert main(_compare(inputs, tmp_path / "b", "--workers", "2")) == 2
    assert "--workers only apply to the Ray engine" in _last_error(capsys)


def test_worker_without_ray_reports_what_it_cannot_load(tmp_path: Path) -> None:
    from core.engine.worker import HarvestWorker, WorkerSide
    from core.harvest.specs import HarvestSettings, ModelSpec, SAESpec

    missing = WorkerSide(
        ModelSpec("hf", str(tmp_path / "no-model")), SAESpec("local", str(tmp_path)), "blocks.0.hook_resid_post"
    )
    worker = HarvestWorker(3, {"a": missing, "b": missing}, HarvestSettings(device="cpu"))
    error = worker.ready()["error"]
    assert error.startswith("Harvest worker 3 on ") and f"side A's model hf:{tmp_path / 'no-model'}" in error
    assert "\n" not in error
