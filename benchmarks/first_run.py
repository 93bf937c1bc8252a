"""The first run of a fresh clone: how long until the app answers, until each page's part lands, until the demo is whole.

For each checkout (this branch, and the baseline: main at the commit this work started from) the
script clones the repository into a temp folder, empties every cache a first run fills (the demo
cache, converted models, numba's compiled kernels: ``FEATUREBRIDGE_CACHE`` and ``NUMBA_CACHE_DIR``
point at empty folders), pins everything to ``--cores`` CPU cores, and runs what ``make app`` runs
after set-up (set-up itself, the virtual environment, is not timed: the clone uses this
interpreter's environment):

* this branch: ``python -m components.builds demo`` (starts the demo build in the background),
  then ``streamlit run app.py`` with ``FEATUREBRIDGE_BUNDLE=demo``;
* the baseline: ``python -m core demo`` (the whole demo, SAE training included), then
  ``streamlit run app.py`` on the bundle it printed.

It then opens Home in headless Chromium and records when the app answered (Home drawn), when each
part of the demo bundle landed (the bundle opens, matching, similarity, dashboards, UMAP) and when
the whole demo was built. Goals (issue 12), on a 2-core machine: the app answering under 3 minutes
after set-up, the whole demo under 6 minutes.

    python benchmarks/first_run.py                    # this branch and the baseline
    python benchmarks/first_run.py --no-baseline      # this branch only
    python benchmarks/first_run.py --branch main --baseline e6336bc --cores 2
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.e2e.browser import Browser, find_chromium, free_port, wait_for_http  # noqa: E402

BASELINE = "e6336bc"
# the parts whose arrival lights up pages, in the order a build writes them
PARTS = ("opens", "assignment", "similarity", "dashboards", "umap")
HOME_DRAWN = (
    "!!(document.querySelector(\"[data-testid='stApp'][data-test-script-state='notRunning']\")"
    " && document.querySelector('h1'))"
)


def current_branch() -> str:
    out = subprocess.run(["git", "rev-parse", "--abbrev-ref", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    return out.stdout.strip() or "HEAD"


def clone(source: str, rev: str, into: Path) -> Path:
    """A fresh clone of ``source`` at ``rev`` (a branch, or any commit)."""
    subprocess.run(["git", "clone", "-q", "--no-checkout", source, str(into)], check=True)
    subprocess.run(["git", "checkout", "-q", rev], cwd=into, check=True)
    return into


def pinned(cores: int) -> list[str]:
    """A taskset prefix keeping a command (and its children) on the first ``cores`` CPUs."""
    if cores <= 0 or shutil.which("taskset") is None or cores >= (os.cpu_count() or 1):
        return []
    return ["taskset", "-c", f"0-{cores - 1}"]


def parts_landed(bundle: Path) -> dict[str, bool]:
    """Which parts of a bundle are there, read from its manifest (no import of the project)."""
    manifest = bundle / "manifest.json"
    if not manifest.is_file():
        return dict.fromkeys(PARTS, False)
    try:
        body = json.loads(manifest.read_text())
    except ValueError:
        return dict.fromkeys(PARTS, False)
    have = body.get("parts", {})
    return {"opens": True, **{p: bool(have.get(p)) for p in PARTS[1:]}}


def demo_bundle(checkout: Path, env: dict[str, str]) -> Path:
    """Where the checkout's demo bundle goes under the empty cache (asked of the checkout's own code)."""
    code = (
        "try:\n from core.demo.settings import demo_bundle_path\n"
        "except ImportError:\n from core.demo.spine import demo_bundle_path\n"
        "print(demo_bundle_path())"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=checkout, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr)
    return Path(out.stdout.strip().splitlines()[-1])


def run_first(checkout: Path, work: Path, cores: int, new_flow: bool, timeout: float) -> dict[str, float]:
    """Time one checkout's first run; returns seconds since start for each milestone."""
    cache, numba = work / "cache", work / "numba"
    cache.mkdir()
    numba.mkdir()
    env = {
        **os.environ,
        "FEATUREBRIDGE_CACHE": str(cache),
        "NUMBA_CACHE_DIR": str(numba),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "disabled",
    }
    env.pop("FEATUREBRIDGE_BUNDLE", None)
    bundle = demo_bundle(checkout, env)
    port = free_port()
    serve = [sys.executable, "-m", "streamlit", "run", "app.py", "--server.address", "127.0.0.1"]
    serve += ["--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"]
    log = open(work / "run.log", "w")  # noqa: SIM115  (closed at the end)
    prefix = pinned(cores)
    marks: dict[str, float] = {}
    processes: list[subprocess.Popen] = []
    t0 = time.perf_counter()
    try:
        if new_flow:
            subprocess.run(
                [*prefix, sys.executable, "-m", "components.builds", "demo"], cwd=checkout, env=env, check=True
            )
            server_env = {**env, "FEATUREBRIDGE_BUNDLE": "demo"}
        else:
            subprocess.run(
                [*prefix, sys.executable, "-m", "core", "demo"],
                cwd=checkout,
                env=env,
                check=True,
                stdout=log,
                stderr=log,
            )
            marks["whole demo"] = time.perf_counter() - t0
            server_env = {**env, "FEATUREBRIDGE_BUNDLE": str(bundle)}
        processes.append(
            subprocess.Popen([*prefix, *serve], cwd=checkout, env=server_env, stdout=log, stderr=subprocess.STDOUT)
        )
        wait_for_http(f"http://127.0.0.1:{port}/_stcore/health", timeout, "ok")
        chromium = find_chromium()
        assert chromium is not None, "Debian chromium is needed (apt-get install chromium)"
        browser = Browser(chromium)
        try:
            browser.navigate(f"http://127.0.0.1:{port}/")
            browser.wait_for(HOME_DRAWN, timeout, interval=0.1)
            marks["app answers"] = time.perf_counter() - t0
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and not all(parts_landed(bundle).values()):
                for part, there in parts_landed(bundle).items():
                    if there and part not in marks:
                        marks[part] = time.perf_counter() - t0
                time.sleep(1.0)
            for part, there in parts_landed(bundle).items():
                marks.setdefault(part, time.perf_counter() - t0 if there else float("nan"))
            status = cache / "builds" / "demo.json"
            while new_flow and time.monotonic() < deadline:
                body = json.loads(status.read_text()) if status.is_file() else {}
                if body.get("state") in ("done", "failed"):
                    if body["state"] == "failed":
                        raise RuntimeError(f"the demo build failed: {body.get('error')}")
                    break
                time.sleep(1.0)
            marks.setdefault("whole demo", time.perf_counter() - t0)
            # the app still answers with the whole demo open
            browser.navigate(f"http://127.0.0.1:{port}/pairs")
            browser.wait_for(HOME_DRAWN, timeout, interval=0.2)
        finally:
            browser.close()
    finally:
        for process in processes:
            process.terminate()
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
        # a build the new flow started in its own session stops with the measurement
        status = cache / "builds" / "demo.json"
        if status.is_file():
            pid = int(json.loads(status.read_text()).get("pid", 0) or 0)
            body = json.loads(status.read_text())
            if pid and body.get("state") == "running":
                try:
                    os.kill(pid, 15)
                except ProcessLookupError:
                    pass
        log.close()
    return marks


def main() -> None:
    """Clone, run the first run of this branch (and of the baseline), print the milestones side by side."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", default=str(ROOT), help="repository to clone (default: this one)")
    parser.add_argument("--branch", default=current_branch(), help="revision to measure (default: %(default)s)")
    parser.add_argument("--baseline", default=BASELINE, help="baseline revision (default: %(default)s)")
    parser.add_argument("--no-baseline", action="store_true", help="measure the branch only")
    parser.add_argument("--cores", type=int, default=2, help="CPU cores to pin to (0: no pinning)")
    parser.add_argument("--timeout", type=float, default=3600.0)
    parser.add_argument("--keep", action="store_true", help="keep the temp folder (clones, caches, logs)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fb-first-run-"))
    results: dict[str, dict[str, float]] = {}
    try:
        print(f"cpus: {os.cpu_count()} (pinned to {args.cores or 'all'}), load average before: {os.getloadavg()}")
        runs = [("new", args.branch, True)] + ([] if args.no_baseline else [("baseline", args.baseline, False)])
        for name, rev, new_flow in runs:
            folder = work / name
            folder.mkdir()
            checkout = clone(args.source, rev, folder / "clone")
            print(f"{name}: {rev} cloned into {checkout}", flush=True)
            results[name] = run_first(checkout, folder, args.cores, new_flow, args.timeout)
            print(f"{name}: {json.dumps({k: round(v, 1) for k, v in results[name].items()})}", flush=True)
        print(f"load average after: {os.getloadavg()}")
        order = ["app answers", *PARTS, "whole demo"]
        labels = {"opens": "harvest landed (bundle opens)", "assignment": "matching landed"}
        new, base = results["new"], results.get("baseline", {})
        print(f"\n{'seconds from the start of `make app` (after set-up)':<52}{'baseline':>10}{'new':>10}{'ratio':>8}")
        for key in order:
            b, n = base.get(key, float("nan")), new.get(key, float("nan"))
            ratio = f"{b / n:.1f}x" if base and n == n and n > 0 else ""
            print(f"{labels.get(key, key + ' landed' if key in PARTS else key):<52}{b:>10.0f}{n:>10.0f}{ratio:>8}")
        print("goals: the app answering under 180 s, the whole demo under 360 s (2 idle cores)")
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
