"""The Ray engine: harvest shards on long-lived actors, the correlation reduce as row-block tasks.

Ray is an optional extra (``pip install -e '.[ray]'``), imported only when this engine starts.
What travels through Ray's object store is small: shard tasks (a shard's windows and text),
shard summaries (per-feature moments), feature moments and each block's top-k. Codes go to
shared storage: harvest workers write shard folders into the bundle's ``.work`` folder (temp
name, then rename), reduce tasks stream the bundle's codes files (``CodesFile``).

Scheduling choices, each from a trap met on a 2-core box (../shared/SCALEOUT.md):
- the harvest actors are killed as soon as the last shard is in, because an actor holds its
  CPUs for life and the reduce tasks after it would wait for them forever;
- the number of actors is capped by what the cluster's nodes can host, so no actor waits for
  resources that never come;
- the engine joins a Ray session that is already running (a test's shared cluster, or a job
  submitted to a cluster) and only shuts down a cluster it started itself.
"""

from __future__ import annotations

import logging
import math
import os
import socket
from collections import deque
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

import core
from core.bundle.codes import SparseCodes
from core.engine.settings import EngineSettings
from core.engine.worker import HarvestWorker, WorkerSide, block_task, first_line, moments_task
from core.errors import EngineError, UserError
from core.harvest.encode import HarvestSide
from core.harvest.identity import side_identity
from core.harvest.run import ShardRunner, ShardSummary, ShardTask
from core.harvest.specs import HarvestSettings
from core.matching.blocks import BlockTopK, Correlator, check_live, merge_blocks, split_rows
from core.matching.correlate import CorrelationResult, check_codes, check_top_k
from core.progress import ProgressFn, no_progress
from core.sides import SIDES

log = logging.getLogger(__name__)

INSTALL_HINT = "pip install -e '.[ray]' (or pip install 'ray[default]')"
# what a worker needs to find the same caches and to stay offline like the driver
PASSED_ENV = (
    "FEATUREBRIDGE_CACHE",
    "HF_HOME",
    "HF_HUB_OFFLINE",
    "TRANSFORMERS_OFFLINE",
    "WANDB_MODE",
    "TOKENIZERS_PARALLELISM",
)


def import_ray() -> Any:
    """Import Ray, or say in one sentence how to install it."""
    try:
        import ray
    except ImportError as exc:
        raise EngineError(
            f"--engine ray needs Ray, which is not installed here; install the extra with {INSTALL_HINT}."
        ) from exc
    return ray


def check_reachable(address: str | None, timeout_s: float = 5.0) -> None:
    """Refuse a ``host:port`` (or ``ray://host:port``) address nothing answers on, in seconds.

    ``ray.init`` retries an unreachable address for minutes before it gives up, so a typo in
    ``--address`` would look like a hang; a plain TCP connect says it at once.

    Args:
        address: the ``--address`` value (``None`` and ``auto`` are not checked here).
        timeout_s: how long to wait for the connection.
    """
    if address is None or address == "auto":
        return
    target = address.removeprefix("ray://")
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise EngineError(f"--address {address} is not host:port, ray://host:port or auto; check it.")
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise EngineError(
            f"Cannot reach a Ray cluster at {address} ({exc.strerror or exc.__class__.__name__}); start one there with "
            "'ray start --head', or check --address."
        ) from exc


class RayEngine:
    """Runs the harvest and the correlation reduce on a Ray cluster.

    Args:
        settings: the engine settings (``name`` must be ``ray``).
        worker_class: the harvest actor's class (tests pass a subclass that fails on purpose).
    """

    name = "ray"

    def __init__(self, settings: EngineSettings, worker_class: type[HarvestWorker] = HarvestWorker) -> None:
        self.settings = settings
        self.worker_class = worker_class
        self._ray: Any = None
        self._owned = False
        self._nodes: list[dict[str, float]] = []
        self._node_ips: list[str] = []
        self._used: dict[str, Any] = {}

    # ------------------------------------------------------------------ session

    def start(self) -> None:
        """Join the cluster (or start a private one); fail in one sentence if that cannot be done."""
        if self._ray is not None:
            return
        ray = import_ray()
        if not ray.is_initialized():
            address = self.settings.address
            check_reachable(address)
            try:
                ray.init(address=address, include_dashboard=False, logging_level=logging.ERROR, log_to_driver=False)
            except Exception as exc:  # Ray raises ConnectionError, RuntimeError or its own types here
                if address == "auto" and isinstance(exc, ConnectionError):
                    raise EngineError(
                        "No Ray cluster is running on this machine for --address auto; start one with "
                        "'ray start --head', or leave --address out to start a private one."
                    ) from exc
                where = f"at {address}" if address else "on this machine"
                raise EngineError(
                    f"Cannot start or reach a Ray cluster {where} ({first_line(exc)}); start one with "
                    "'ray start --head' and pass --address auto, or check --address."
                ) from exc
            self._owned = True
        self._ray = ray
        alive = [n for n in ray.nodes() if n.get("Alive")]
        self._nodes = [n["Resources"] for n in alive]
        self._node_ips = sorted({str(n.get("NodeManagerAddress")) for n in alive})

    def close(self) -> None:
        """Shut down the cluster if this engine started it."""
        if self._ray is not None and self._owned:
            self._ray.shutdown()
        self._ray = None
        self._owned = False

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this engine and the cluster it ran on."""
        out: dict[str, Any] = {"name": self.name, **self.settings.to_dict(), **self._used}
        if self._ray is not None:
            out.update(
                ray_version=self._ray.__version__,
                nodes=len(self._nodes),
                node_ips=self._node_ips,
                cluster_cpus=sum(n.get("CPU", 0.0) for n in self._nodes),
                cluster_gpus=sum(n.get("GPU", 0.0) for n in self._nodes),
            )
        return out

    # ------------------------------------------------------------------ resources

    def _gpus(self) -> float:
        if self.settings.gpus_per_worker is not None:
            return self.settings.gpus_per_worker
        return 1.0 if any(n.get("GPU", 0.0) >= 1 for n in self._nodes) else 0.0

    def _cpus(self) -> float:
        return self.settings.cpus_per_worker or 1.0

    def _capacity(self) -> int:
        """How many workers of this shape the cluster's live nodes can host at once."""
        cpus, gpus = self._cpus(), self._gpus()
        total = 0
        for node in self._nodes:
            fit = math.floor(node.get("CPU", 0.0) / cpus + 1e-9)
            if gpus > 0:
                fit = min(fit, math.floor(node.get("GPU", 0.0) / gpus + 1e-9))
            total += max(0, fit)
        if total == 0:
            have = f"{sum(n.get('CPU', 0.0) for n in self._nodes):g} CPUs and {sum(n.get('GPU', 0.0) for n in self._nodes):g} GPUs"
            raise EngineError(
                f"No node of the Ray cluster can host a worker of {cpus:g} CPUs and {gpus:g} GPUs (the cluster has "
                f"{have}); lower --cpus-per-worker or --gpus-per-worker."
            )
        return total

    def _options(self) -> dict[str, Any]:
        env = {k: os.environ[k] for k in PASSED_ENV if k in os.environ}
        # workers import the driver's copy of the package when its folder is visible to them
        root = str(Path(core.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join(
            [root] + ([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])
        )
        return {"num_cpus": self._cpus(), "num_gpus": self._gpus(), "runtime_env": {"env_vars": env}}

    def n_workers(self) -> int:
        """Harvest actors to start: as asked (capped by what the cluster can host), else as many as fit."""
        capacity = self._capacity()
        asked = self.settings.workers
        if asked is not None and asked > capacity:
            log.warning(
                "The Ray cluster can host %d worker(s) of this shape, not %d; using %d.", capacity, asked, capacity
            )
        return min(asked or capacity, capacity)

    # ------------------------------------------------------------------ harvest

    def shard_runner(
        self, sides: dict[str, HarvestSide], settings: HarvestSettings, device: torch.device
    ) -> ShardRunner:
        """A runner that spreads shard tasks over harvest actors (each loads the models once).

        Args:
            sides: the driver's loaded sides (their specs and identities are what workers must load).
            settings: harvest settings.
            device: the driver's device (unused: a worker runs on the GPU Ray grants it, else on the CPU).

        Returns:
            A :data:`ShardRunner`.
        """
        self.start()
        specs = {s: WorkerSide(sides[s].model.spec, sides[s].sae.spec, sides[s].hook.name) for s in SIDES}
        expected = {s: side_identity(sides[s].model, sides[s].sae, sides[s].hook.name) for s in SIDES}

        def run(tasks: Sequence[ShardTask], progress: ProgressFn) -> Iterable[ShardSummary]:
            return self._run_shards(specs, expected, settings, tasks)

        return run

    def _run_shards(
        self,
        specs: dict[str, WorkerSide],
        expected: dict[str, dict[str, Any]],
        settings: HarvestSettings,
        tasks: Sequence[ShardTask],
    ) -> Iterator[ShardSummary]:
        if not tasks:
            return
        ray = self._ray
        n = min(self.n_workers(), len(tasks))
        retries = self.settings.max_retries
        options = {**self._options(), "max_restarts": retries, "max_task_retries": retries}
        actor_class = ray.remote(self.worker_class).options(**options)
        # --device is the driver's; a worker runs where the scheduler put it
        device = "cuda" if self._gpus() > 0 else "cpu"
        actors = [actor_class.remote(i, specs, settings, self._cpus(), expected, device) for i in range(n)]
        self._used.update(workers_used=n, gpus_used_per_worker=self._gpus(), cpus_used_per_worker=self._cpus())
        try:
            for report in ray.get([a.ready.remote() for a in actors]):
                if report["error"]:
                    raise EngineError(report["error"])
            # a small actor pool of our own (ray.util.ActorPool hides which shard a failure hit)
            queue, idle = deque(tasks), list(range(n))
            pending: dict[Any, tuple[int, ShardTask]] = {}
            while queue or pending:
                while queue and idle:
                    worker, task = idle.pop(0), queue.popleft()
                    pending[actors[worker].run.remote(task.portable())] = (worker, task)
                ready, _ = ray.wait(list(pending), num_returns=1)
                worker, task = pending.pop(ready[0])
                yield self._result(ready[0], worker, task)
                idle.append(worker)
        finally:
            # actors hold their CPUs for life: free them before anything else is scheduled
            for actor in actors:
                ray.kill(actor)

    def _result(self, ref: Any, worker: int, task: ShardTask) -> ShardSummary:
        ray = self._ray
        try:
            return ray.get(ref)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayActorError as exc:
            raise EngineError(
                f"Harvest worker {worker} died {self.settings.max_retries + 1} time(s) on shard {task.number} "
                f"(units {task.first_unit}-{task.first_unit + task.n_units - 1}): {first_line(exc)}; "
                "check the worker's memory (lower --batch-tokens or --shard-units) and the Ray logs."
            ) from exc

    # ------------------------------------------------------------------ reduce

    def correlator(self) -> Correlator:
        """The correlation reduce as row-block tasks over the bundle's codes files."""
        self.start()
        return self._correlate

    def _correlate(
        self,
        bundle_path: Path,
        codes_a: SparseCodes,
        codes_b: SparseCodes,
        *,
        top_k: int = 10,
        memory_mb: float = 1024,
        chunk_units: int = 1 << 20,
        device: torch.device | str = "cpu",
        keep_dense: bool = False,
        progress: ProgressFn | None = None,
        backend: str = "auto",
    ) -> CorrelationResult:
        ray = self._ray
        progress = progress or no_progress
        check_codes(codes_a, codes_b)
        check_top_k(top_k, codes_a.n_features, codes_b.n_features)
        if keep_dense and codes_a.n_features * codes_b.n_features * 4 > memory_mb * 2**20:
            keep_dense = False  # as compute_correlation does: the dense matrix must fit the memory setting
        paths = [str(Path(bundle_path).resolve() / f"codes_{s}.safetensors") for s in SIDES]
        retries = self.settings.max_retries
        options = {**self._options(), "max_retries": retries}
        cpus = self._cpus()
        moments_remote = ray.remote(moments_task).options(**options)
        block_remote = ray.remote(block_task).options(**options)
        moments_a, moments_b = self._get(ray.get, [moments_remote.remote(p, chunk_units, cpus) for p in paths])
        check_live(moments_a, "A")
        check_live(moments_b, "B")
        n_blocks = self.settings.row_blocks or self._capacity()
        rows = split_rows(codes_a.n_features, codes_b.n_features, n_blocks, memory_mb)
        self._used.update(row_blocks_used=len(rows))
        refs = (ray.put(moments_a), ray.put(moments_b))
        opts = {"top_k": top_k, "chunk_units": chunk_units, "memory_mb": memory_mb, "keep_dense": keep_dense}
        pending = [block_remote.remote(paths[0], paths[1], *refs, lo, hi, opts, cpus) for lo, hi in rows]
        blocks: list[BlockTopK] = []
        progress("correlate", 0, len(rows))
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            blocks.append(self._get(ray.get, ready[0]))
            progress("correlate", len(blocks), len(rows))
        return merge_blocks(blocks, moments_a, moments_b, top_k)

    def _get(self, get: Any, refs: Any) -> Any:
        ray = self._ray
        try:
            return get(refs)
        except ray.exceptions.RayTaskError as exc:
            if isinstance(exc.cause, UserError):
                raise exc.cause from None
            raise
        except ray.exceptions.RayError as exc:
            raise EngineError(
                f"A correlation task failed {self.settings.max_retries + 1} time(s) ({first_line(exc)}); "
                "check the workers' memory (lower --memory-mb or raise --row-blocks) and the Ray logs."
            ) from exc
