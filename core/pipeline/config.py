"""One configuration object per run: the harvest settings, every stage's settings, which stages run.

:class:`ComparisonConfig` is what ``core.compare``, ``python -m core compare`` and the app's
build form all build from; each default is written once, in its settings dataclass (the CLI
and the form read them with :func:`field_default`). The manifest records the config piecewise,
where each stage writes its own record (``settings.harvest`` and ``<stage>.settings``), so a
stage rerun with new settings keeps it current; :meth:`ComparisonConfig.from_manifest`
reassembles it. Torch-free: the app's form and the manifest readers import it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from core.dashboards.settings import DashboardSettings
from core.embedding.settings import UMAPSettings
from core.errors import SpecError
from core.harvest.specs import HarvestSettings
from core.matching.settings import MatchSettings
from core.pipeline.stages import STAGES, check_stage_names
from core.spaces.settings import SimilaritySettings

# the layer x layer sweep runs on fewer tokens and two metrics per cell (``python -m core sweep``)
SWEEP_MAX_TOKENS = 50_000
SWEEP_METRICS = ("svcca", "rsa")

# stage name -> the settings class of the config field of the same name
STAGE_SETTINGS: dict[str, type] = {
    "matching": MatchSettings,
    "similarity": SimilaritySettings,
    "dashboards": DashboardSettings,
    "umap": UMAPSettings,
}

T = TypeVar("T")


def field_default(cls: type, name: str) -> Any:
    """The default of one field of a settings dataclass (what the CLI and the app's form show).

    Args:
        cls: a dataclass.
        name: one of its field names.

    Returns:
        The field's default value.
    """
    for f in dataclasses.fields(cls):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            if f.default_factory is not dataclasses.MISSING:
                return f.default_factory()
            raise ValueError(f"{cls.__name__}.{name} has no default")
    raise ValueError(f"{cls.__name__} has no field {name!r}")


def settings_to_dict(settings: Any) -> dict[str, Any]:
    """A settings dataclass as a JSON-ready dict (tuples become lists)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(settings).items()}


def settings_from_dict(cls: type[T], body: Mapping[str, Any], strict: bool = True) -> T:
    """Rebuild a settings dataclass from its :func:`settings_to_dict` form.

    Args:
        cls: the settings class.
        body: field name -> value (missing fields take their defaults).
        strict: refuse unknown keys (False drops them: a record written by another version).

    Returns:
        The validated settings object.
    """
    if not isinstance(body, Mapping):
        raise SpecError(f"{cls.__name__} settings must be a mapping of field names to values, got {body!r}.")
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(body) - names)
    if unknown and strict:
        raise SpecError(f"{cls.__name__} has no setting(s) {', '.join(unknown)}; known: {', '.join(sorted(names))}.")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in body.items() if k in names}
    return cls(**values)


def parse_stages(stages: str | Iterable[str]) -> tuple[str, ...]:
    """Stage names in run order, from ``"all"``, ``"none"``, ``"matching,similarity"`` or a sequence.

    Args:
        stages: the stages to run.

    Returns:
        The stages, deduplicated, in ``STAGES`` order.
    """
    if isinstance(stages, str):
        if stages.strip() in ("", "none"):
            return ()
        if stages.strip() == "all":
            return STAGES
        stages = [t.strip() for t in stages.split(",") if t.strip()]
    return check_stage_names(list(stages))


@dataclass(frozen=True)
class ComparisonConfig:
    """How one comparison runs: harvest, every stage's settings, and which stages run after the harvest.

    Attributes:
        harvest: how the models are run over the corpus.
        matching: the matching stage (correlation, significance, filters, pairing).
        similarity: the similarity stage (SVCCA, RSA, CKA, Procrustes with nulls).
        dashboards: the dashboards stage (examples, histograms, top tokens, logit effects).
        umap: the UMAP stage (maps of decoder directions).
        stages: the stages run after the harvest, a subset of ``STAGES`` (kept in run order;
            ``"all"``, ``"none"`` or ``"matching,similarity"`` are accepted too).
    """

    harvest: HarvestSettings = field(default_factory=HarvestSettings)
    matching: MatchSettings = field(default_factory=MatchSettings)
    similarity: SimilaritySettings = field(default_factory=SimilaritySettings)
    dashboards: DashboardSettings = field(default_factory=DashboardSettings)
    umap: UMAPSettings = field(default_factory=UMAPSettings)
    stages: tuple[str, ...] = STAGES

    def __post_init__(self) -> None:
        for name, cls in (("harvest", HarvestSettings), *STAGE_SETTINGS.items()):
            value = getattr(self, name)
            if not isinstance(value, cls):
                raise SpecError(f"ComparisonConfig.{name} must be a {cls.__name__}, got {type(value).__name__}.")
        object.__setattr__(self, "stages", parse_stages(self.stages))
        if "similarity" in self.stages and "matching" not in self.stages:
            raise SpecError("The similarity stage compares matched pairs: add the matching stage, or drop similarity.")

    def stage_settings(self) -> dict[str, Any]:
        """Stage name -> its settings object, for every stage in ``STAGES``."""
        return {name: getattr(self, name) for name in STAGES}

    def to_dict(self) -> dict[str, Any]:
        """The config as a JSON-ready dict; :meth:`from_dict` reads it back to an equal config."""
        body: dict[str, Any] = {"harvest": settings_to_dict(self.harvest)}
        body.update({name: settings_to_dict(getattr(self, name)) for name in STAGE_SETTINGS})
        body["stages"] = list(self.stages)
        return body

    @classmethod
    def from_dict(cls, body: Mapping[str, Any]) -> ComparisonConfig:
        """Rebuild a config from :meth:`to_dict`'s form (missing parts take their defaults).

        Args:
            body: ``harvest``, ``matching``, ``similarity``, ``dashboards``, ``umap``, ``stages``.

        Returns:
            The validated config.
        """
        known = {"harvest", "stages", *STAGE_SETTINGS}
        unknown = sorted(set(body) - known)
        if unknown:
            raise SpecError(f"ComparisonConfig has no part(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}.")
        parts: dict[str, Any] = {}
        if "harvest" in body:
            parts["harvest"] = settings_from_dict(HarvestSettings, body["harvest"])
        for name, settings_cls in STAGE_SETTINGS.items():
            if name in body:
                parts[name] = settings_from_dict(settings_cls, body[name])
        if "stages" in body:
            parts["stages"] = body["stages"]
        return cls(**parts)

    @classmethod
    def from_manifest(cls, manifest: Mapping[str, Any]) -> ComparisonConfig:
        """The config a bundle was built with, from the records its manifest holds.

        The harvest settings come from ``settings.harvest``, each stage's from ``<stage>.settings``
        (kept current by stage reruns); ``stages`` lists the stages that have run, and a stage
        that has not run reads back with its defaults. Keys another version wrote and this one
        does not know are dropped.

        Args:
            manifest: a bundle's parsed manifest.json.

        Returns:
            The config.
        """
        parts: dict[str, Any] = {}
        harvest = (manifest.get("settings") or {}).get("harvest")
        if harvest is not None:
            parts["harvest"] = settings_from_dict(HarvestSettings, harvest, strict=False)
        ran = []
        for name, settings_cls in STAGE_SETTINGS.items():
            record = manifest.get(name)
            if isinstance(record, Mapping) and isinstance(record.get("settings"), Mapping):
                parts[name] = settings_from_dict(settings_cls, record["settings"], strict=False)
                ran.append(name)
        return cls(**parts, stages=tuple(ran))
