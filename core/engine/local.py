"""The local engine: every shard and the whole reduce in this process, in order (the default and the reference)."""

from __future__ import annotations

from typing import Any

import torch

from core.engine.settings import EngineSettings
from core.harvest.encode import HarvestSide
from core.harvest.run import ShardRunner, run_shards_locally
from core.harvest.specs import HarvestSettings
from core.matching.blocks import Correlator


class LocalEngine:
    """Plain loops: :func:`harvest_shard` shard after shard, then ``compute_correlation``.

    Args:
        settings: the engine settings (``name`` ``local``).
    """

    name = "local"

    def __init__(self, settings: EngineSettings | None = None) -> None:
        self.settings = settings or EngineSettings()

    def start(self) -> None:
        """Nothing to start."""

    def close(self) -> None:
        """Nothing to stop."""

    def describe(self) -> dict[str, Any]:
        """What the manifest records about this engine."""
        return {"name": self.name, **self.settings.to_dict()}

    def shard_runner(
        self, sides: dict[str, HarvestSide], settings: HarvestSettings, device: torch.device
    ) -> ShardRunner:
        """The in-process shard loop."""
        return run_shards_locally(sides, settings, device)

    def correlator(self) -> Correlator | None:
        """``None``: the matching stage runs ``compute_correlation`` itself."""
        return None
