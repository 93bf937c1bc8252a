"""Run a comparison on a Ray cluster as a job and follow it, without joining the cluster.

This is how a long-lived process that must not hold Ray's global state (the Streamlit app,
whose reruns would fight ``ray.init``) starts a cluster build: it talks to the cluster's job
server over HTTP (``ray.job_submission.JobSubmissionClient``; the head's dashboard port,
8265 by default), submits ``python -m core compare ... --engine ray --address auto`` as the
job's entrypoint (so the job's driver joins the cluster from inside it), and polls the job's
status and log for progress. Only Ray's HTTP client is imported here, never ``ray.init``.
"""

from __future__ import annotations

import os
import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.engine.ray_engine import import_ray
from core.errors import EngineError

TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
# a tqdm bar as the CLI draws it: "harvest:  45%|####      | 1234/2700 [...]"
_BAR = re.compile(r"([^\r\n|:]+?):\s+\d+%\|[^|]*\|\s*(\d+)/(\d+)")


@dataclass(frozen=True)
class JobState:
    """Where a submitted comparison stands.

    Attributes:
        job_id: the cluster's id of the job.
        status: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED.
        stage: the progress stage last drawn in the job's log ("" before the first).
        done: items done in that stage.
        total: items in that stage (0 when unknown).
        last_line: the log's last non-empty line (the error sentence when the job failed).
    """

    job_id: str
    status: str
    stage: str
    done: int
    total: int
    last_line: str

    @property
    def finished(self) -> bool:
        """The job will not change any more."""
        return self.status in TERMINAL


def auth_headers() -> dict[str, str]:
    """The bearer token of a cluster with token authentication (Ray's default since 2.60), if one is at hand.

    Ray's client only sends its token when the submitting process itself runs in token mode,
    which a plain client process does not; the token is where ``ray start`` put it, so it is
    read from the same places: ``RAY_AUTH_TOKEN``, the file ``RAY_AUTH_TOKEN_PATH`` names, or
    ``~/.ray/auth_token``.

    Returns:
        ``{"Authorization": "Bearer ..."}``, or nothing when no token is found.
    """
    token = os.environ.get("RAY_AUTH_TOKEN", "").strip()
    if not token:
        path = Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or Path.home() / ".ray" / "auth_token")
        token = path.read_text().strip() if path.is_file() else ""
    return {"Authorization": f"Bearer {token}"} if token else {}


def _client(address: str) -> Any:
    import_ray()
    from ray.job_submission import JobSubmissionClient

    try:
        return JobSubmissionClient(address, headers=auth_headers())
    except Exception as exc:  # ConnectionError, or ValueError for a malformed address
        raise EngineError(
            f"Cannot reach the Ray job server at {address} ({str(exc).splitlines()[0][:200]}); give the head's "
            "dashboard address, for example http://HEAD:8265."
        ) from exc


def compare_entrypoint(compare_args: Sequence[str], python: str = "python") -> str:
    """The job's command line: ``compare`` with the given arguments, on the Ray engine, joining the cluster.

    Args:
        compare_args: what follows ``python -m core compare`` (no engine flags).
        python: the Python the cluster's nodes run (the environment holding this package).

    Returns:
        A shell command line.
    """
    for flag in ("--engine", "--address"):
        if flag in compare_args:
            raise EngineError(f"Leave {flag} out of a submitted comparison; the job runs --engine ray --address auto.")
    return shlex.join([python, "-m", "core", "compare", *compare_args, "--engine", "ray", "--address", "auto"])


def submit_compare(
    address: str, compare_args: Sequence[str], working_dir: str | None = None, python: str = "python"
) -> str:
    """Submit a comparison to a Ray cluster as a job.

    Args:
        address: the job server, ``http://HEAD:8265``.
        compare_args: the ``compare`` arguments (paths as the cluster's nodes see them).
        working_dir: a folder uploaded with the job and made its working folder (a checkout
            of this package, when the nodes do not have it installed).
        python: the Python the job runs.

    Returns:
        The job id.
    """
    client = _client(address)
    runtime_env = {"working_dir": working_dir} if working_dir else None
    return str(client.submit_job(entrypoint=compare_entrypoint(compare_args, python), runtime_env=runtime_env))


def job_state(address: str, job_id: str) -> JobState:
    """Poll a submitted job: its status and the progress its log shows.

    Args:
        address: the job server.
        job_id: what :func:`submit_compare` returned.

    Returns:
        The job's state.
    """
    client = _client(address)
    try:
        status = str(getattr(client.get_job_status(job_id), "value", client.get_job_status(job_id)))
        logs = client.get_job_logs(job_id)
    except RuntimeError as exc:
        raise EngineError(f"The Ray job server at {address} knows no job {job_id} ({exc}); check the id.") from exc
    return parse_state(job_id, status, logs)


def parse_state(job_id: str, status: str, logs: str) -> JobState:
    """Read a job's progress from its log (the CLI's progress bars and its last line).

    Args:
        job_id: the job's id.
        status: its status.
        logs: its log so far.

    Returns:
        The job's state.
    """
    bars = _BAR.findall(logs)
    stage, done, total = (bars[-1][0].strip(), int(bars[-1][1]), int(bars[-1][2])) if bars else ("", 0, 0)
    lines = [line.strip() for line in re.split(r"[\r\n]+", logs) if line.strip()]
    return JobState(job_id, status, stage, done, total, lines[-1] if lines else "")
