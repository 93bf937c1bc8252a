"""The engine interface the pipeline schedules through, and ``open_engine`` that picks one."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Protocol

from core.engine.settings import EngineSettings

if TYPE_CHECKING:
    import torch

    from core.harvest.encode import HarvestSide
    from core.harvest.run import ShardRunner
    from core.harvest.specs import HarvestSettings
    from core.matching.blocks import Correlator


class Engine(Protocol):
    """What the pipeline asks of an engine."""

    name: str
    settings: EngineSettings

    def start(self) -> None:
        """Connect (or fail in one sentence) before anything is built or deleted."""
        ...

    def close(self) -> None:
        """Release what :meth:`start` took."""
        ...

    def describe(self) -> dict[str, Any]:
        """The engine and its resources, for the manifest."""
        ...

    def shard_runner(
        self, sides: dict[str, HarvestSide], settings: HarvestSettings, device: torch.device
    ) -> ShardRunner:
        """The scheduler of the harvest's shard tasks."""
        ...

    def correlator(self) -> Correlator | None:
        """The scheduler of the correlation reduce (``None``: in process)."""
        ...


def make_engine(settings: EngineSettings | None = None) -> Engine:
    """The engine the settings name, not started yet.

    Args:
        settings: engine settings (``None``: local).

    Returns:
        A :class:`LocalEngine` or a :class:`RayEngine`.
    """
    settings = settings or EngineSettings()
    if settings.name == "ray":
        from core.engine.ray_engine import RayEngine

        return RayEngine(settings)
    from core.engine.local import LocalEngine

    return LocalEngine(settings)


@contextmanager
def open_engine(settings: EngineSettings | Engine | None = None) -> Iterator[Engine]:
    """Start an engine for the length of a ``with`` block and close it afterwards.

    Args:
        settings: engine settings, or an engine built already (it is started and closed too).

    Yields:
        The started engine.
    """
    engine = settings if settings is not None and not isinstance(settings, EngineSettings) else make_engine(settings)
    engine.start()
    try:
        yield engine
    finally:
        engine.close()
