"""Which engine runs the harvest and the correlation reduce, and how (torch-free, for forms and the manifest)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from core.errors import SpecError

ENGINES = ("local", "ray")
# settings that only the Ray engine reads, with the CLI flag that sets each
RAY_ONLY = {
    "address": "--address",
    "workers": "--workers",
    "gpus_per_worker": "--gpus-per-worker",
    "cpus_per_worker": "--cpus-per-worker",
    "row_blocks": "--row-blocks",
}


@dataclass(frozen=True)
class EngineSettings:
    """The engine of a run. ``local`` (the default) runs every step in this process, in order.

    Attributes:
        name: ``local`` or ``ray``.
        address: the Ray cluster to join: ``None`` starts a private one-machine cluster for
            the run, ``auto`` joins the cluster started on this machine (``ray start``), or
            ``host:port`` / ``ray://host:port``.
        workers: harvest actors (``None``: one per GPU the cluster has, else one per
            ``cpus_per_worker`` CPUs); each loads the models and SAEs once.
        gpus_per_worker: GPUs per harvest actor and per reduce task (``None``: 1 when the
            cluster has GPUs, else 0).
        cpus_per_worker: CPUs per harvest actor and per reduce task (``None``: 1).
        row_blocks: row blocks of the correlation reduce (``None``: one per worker; more are
            cut when a block would not fit the matching memory setting).
        max_retries: times a shard or a block is retried after its worker died.
    """

    name: str = "local"
    address: str | None = None
    workers: int | None = None
    gpus_per_worker: float | None = None
    cpus_per_worker: float | None = None
    row_blocks: int | None = None
    max_retries: int = 2

    def __post_init__(self) -> None:
        if self.name not in ENGINES:
            raise SpecError(f"Unknown engine {self.name!r}; choose one of {', '.join(ENGINES)}.")
        if self.name == "local":
            given = [flag for field, flag in RAY_ONLY.items() if getattr(self, field) is not None]
            if given:
                raise SpecError(f"{', '.join(given)} only apply to the Ray engine; add --engine ray or drop them.")
        if self.address is not None and not self.address.strip():
            raise SpecError("--address is empty; give auto, host:port or ray://host:port, or leave it out.")
        for field in ("workers", "row_blocks"):
            value = getattr(self, field)
            if value is not None and value < 1:
                raise SpecError(f"--{field.replace('_', '-')} must be at least 1, got {value}.")
        if self.gpus_per_worker is not None and self.gpus_per_worker < 0:
            raise SpecError(f"--gpus-per-worker must be 0 or more, got {self.gpus_per_worker}.")
        if self.cpus_per_worker is not None and self.cpus_per_worker <= 0:
            raise SpecError(f"--cpus-per-worker must be positive, got {self.cpus_per_worker}.")
        if self.max_retries < 0:
            raise SpecError(f"max_retries must be 0 or more, got {self.max_retries}.")

    def to_dict(self) -> dict[str, Any]:
        """The settings as a plain dict (for the manifest)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineSettings:
        """Rebuild settings recorded by :meth:`to_dict` (unknown keys are refused)."""
        unknown = set(data) - set(cls.__dataclass_fields__)
        if unknown:
            raise SpecError(
                f"Unknown engine setting(s) {sorted(unknown)}; allowed: {sorted(cls.__dataclass_fields__)}."
            )
        return cls(**data)
