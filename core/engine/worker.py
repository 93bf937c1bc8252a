"""What runs on a remote worker: the harvest actor's body and the reduce tasks (no Ray import here).

These are plain Python, so the local tests can run them without a cluster; the Ray engine wraps
them with ``ray.remote`` when it starts. Errors a user can cause come back as one sentence that
names the worker, its host and the spec it could not load.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from core.bundle.stream import CodesFile
from core.device import resolve_device
from core.errors import UserError
from core.harvest.encode import HarvestSide
from core.harvest.identity import side_identity
from core.harvest.loading import LoadedModel, load_model, load_sae
from core.harvest.run import ShardSummary, ShardTask, harvest_shard
from core.harvest.specs import HarvestSettings, ModelSpec, SAESpec
from core.matching.blocks import BlockTopK, coact_block, correlation_moments
from core.matching.moments import FeatureMoments
from core.sides import SIDES


@dataclass(frozen=True)
class WorkerSide:
    """One side as a worker loads it: the model, the SAE and the resolved hook name."""

    model: ModelSpec
    sae: SAESpec
    hook: str


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (library errors can run to pages)."""
    text = str(exc).strip().splitlines()
    return text[0].strip() if text else exc.__class__.__name__


def set_threads(cpus: float | None) -> None:
    """Give torch and numba the CPUs the scheduler granted this process (at least one)."""
    n = max(1, int(cpus or 1))
    torch.set_num_threads(n)
    import numba

    numba.set_num_threads(min(n, int(getattr(numba.config, "NUMBA_NUM_THREADS", n))))


class HarvestWorker:
    """A long-lived harvest worker: loads both sides' models and SAEs once, then runs shards.

    Loading errors are kept, not raised, so that :meth:`ready` can report them as one sentence
    (a Ray actor whose constructor raises only says that it died).

    Args:
        index: the worker's number (named in its errors).
        sides: side -> what to load.
        settings: harvest settings (batch size, pooling; its device is the driver's).
        cpus: the CPUs granted to the worker (torch and numba threads).
        device: ``cuda`` when the scheduler grants the worker a GPU, else ``cpu``.
        expected: side -> the driver's :func:`side_identity`; a worker that loads something
            else (another file at the same path on its node) refuses to run.
    """

    def __init__(
        self,
        index: int,
        sides: dict[str, WorkerSide],
        settings: HarvestSettings,
        cpus: float | None = None,
        expected: dict[str, dict[str, Any]] | None = None,
        device: str = "cpu",
    ) -> None:
        self.index = index
        self.host = socket.gethostname()
        self.settings = settings
        self.error: str | None = None
        self.sides: dict[str, HarvestSide] = {}
        self.device = torch.device("cpu")
        try:
            set_threads(cpus)
            self.device = resolve_device(device)
        except UserError as exc:
            self.error = f"{self.name} cannot use device {device}: {exc}"
            return
        models: dict[ModelSpec, LoadedModel] = {}
        for s in SIDES:
            side = sides[s]
            what = f"side {s.upper()}'s model {side.model.label()}"
            try:
                if side.model not in models:
                    models[side.model] = load_model(side.model, self.device)
                model = models[side.model]
                what = f"side {s.upper()}'s SAE {side.sae.label()}"
                sae = load_sae(side.sae, self.device)
                self.sides[s] = HarvestSide(model, sae, model.hook(side.hook))
                if expected is not None:
                    mine = side_identity(model, sae, side.hook)
                    differ = [
                        f"side {s.upper()}'s {what} {spec}"
                        for key, what, spec in (
                            ("model_digest", "model", side.model.label()),
                            ("sae_digest", "SAE", side.sae.label()),
                        )
                        if mine[key] != expected[s][key]
                    ]
                    if differ:
                        self.error = (
                            f"{self.name} loaded other weights than the driver for {' and '.join(differ)}; "
                            "give every node the same files."
                        )
                        return
            except Exception as exc:  # any failure to load is reported as this worker's sentence
                self.error = f"{self.name} cannot load {what}: {first_line(exc)}"
                return

    @property
    def name(self) -> str:
        """How errors name this worker."""
        return f"Harvest worker {self.index} on {self.host}"

    def ready(self) -> dict[str, Any]:
        """Whether the worker loaded everything: ``{"error", "host", "device"}``."""
        return {"error": self.error, "host": self.host, "device": str(self.device)}

    def run(self, task: ShardTask) -> ShardSummary:
        """Harvest one shard into the shared work folder and return its summary."""
        if self.error is not None:
            raise UserError(self.error)
        return harvest_shard(self.sides, task, self.settings, self.device)


def task_device() -> torch.device:
    """A reduce task's device: the GPU the scheduler granted it, else the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def moments_task(path: str, chunk_units: int, cpus: float | None = None) -> FeatureMoments:
    """The correlation moments of one side, streamed from its codes file."""
    set_threads(cpus)
    return correlation_moments(CodesFile(path), chunk_units)


def block_task(
    path_a: str,
    path_b: str,
    moments_a: FeatureMoments,
    moments_b: FeatureMoments,
    lo: int,
    hi: int,
    options: dict[str, Any],
    cpus: float | None = None,
) -> BlockTopK:
    """One row block of the reduce, streamed from both codes files (see :func:`coact_block`).

    Args:
        path_a: side A's codes file.
        path_b: side B's codes file.
        moments_a: side A's correlation moments.
        moments_b: side B's.
        lo: first A feature.
        hi: one past the last.
        options: ``top_k``, ``chunk_units``, ``memory_mb``, ``keep_dense``.
        cpus: the CPUs granted to the task.

    Returns:
        The block's top-k and B-side candidates.
    """
    set_threads(cpus)
    return coact_block(
        CodesFile(Path(path_a)),
        CodesFile(Path(path_b)),
        moments_a,
        moments_b,
        lo,
        hi,
        options["top_k"],
        options["chunk_units"],
        task_device(),
        "auto",
        options["memory_mb"],
        options["keep_dense"],
    )
