"""Feature Bridge: which features of two SAEs correspond, whether each match is real, how similar the spaces are.

The Python front door; the CLI (``python -m core``) and the app are thin layers over it::

    import core
    bundle = core.compare("sae_a/", "gpt2", "sae_b/", "gpt2", "fortunes")   # harvest + every stage
    bundle.pairs()                       # the chosen 1-1 pairing (polars)
    bundle.similarity().metric("svcca")  # SVCCA with its permutation null and p-value

``core.match_codes`` matches two code matrices in memory, ``core.similarity`` compares
paired rows, ``core.open_bundle`` reads a bundle, ``core.run_stage`` reruns one stage.
Names load on first use (PEP 562), so ``import core`` itself loads no torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# public name -> the module that defines it
_EXPORTS: dict[str, str] = {
    # functions
    "compare": "core.pipeline.api",
    "match_codes": "core.pipeline.api",
    "similarity": "core.pipeline.api",
    "open_bundle": "core.bundle.reader",
    "run_stage": "core.pipeline.stages",
    "run_stages": "core.pipeline.stages",
    # results
    "Bundle": "core.bundle.reader",
    "MatchResult": "core.matching.stage",
    "PairStats": "core.bundle.results",
    "SimilarityReport": "core.bundle.results",
    "MetricSummary": "core.bundle.results",
    "SparseCodes": "core.bundle.codes",
    # configuration
    "ComparisonConfig": "core.pipeline.config",
    "HarvestSettings": "core.harvest.specs",
    "MatchSettings": "core.matching.settings",
    "SimilaritySettings": "core.spaces.settings",
    "DashboardSettings": "core.dashboards.settings",
    "UMAPSettings": "core.embedding.settings",
    "ModelSpec": "core.harvest.specs",
    "SAESpec": "core.harvest.specs",
    "CorpusSpec": "core.harvest.specs",
    "STAGES": "core.pipeline.stages",
    # errors
    "UserError": "core.errors",
}

__all__ = sorted(_EXPORTS)

if TYPE_CHECKING:  # for type checkers and IDEs; `X as X` marks a re-export
    from core.bundle.codes import SparseCodes as SparseCodes
    from core.bundle.reader import Bundle as Bundle
    from core.bundle.reader import open_bundle as open_bundle
    from core.bundle.results import MetricSummary as MetricSummary
    from core.bundle.results import PairStats as PairStats
    from core.bundle.results import SimilarityReport as SimilarityReport
    from core.dashboards.settings import DashboardSettings as DashboardSettings
    from core.embedding.settings import UMAPSettings as UMAPSettings
    from core.errors import UserError as UserError
    from core.harvest.specs import CorpusSpec as CorpusSpec
    from core.harvest.specs import HarvestSettings as HarvestSettings
    from core.harvest.specs import ModelSpec as ModelSpec
    from core.harvest.specs import SAESpec as SAESpec
    from core.matching.settings import MatchSettings as MatchSettings
    from core.matching.stage import MatchResult as MatchResult
    from core.pipeline.api import compare as compare
    from core.pipeline.api import match_codes as match_codes
    from core.pipeline.api import similarity as similarity
    from core.pipeline.config import ComparisonConfig as ComparisonConfig
    from core.pipeline.stages import STAGES as STAGES
    from core.pipeline.stages import run_stage as run_stage
    from core.pipeline.stages import run_stages as run_stages
    from core.spaces.settings import SimilaritySettings as SimilaritySettings


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'core' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
