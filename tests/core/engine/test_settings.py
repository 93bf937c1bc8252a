"""Engine settings: validated once, Ray-only options refused on the local engine, round-tripped."""

from __future__ import annotations

import pytest

from core.engine.settings import EngineSettings
from core.errors import SpecError


def test_defaults_are_local_and_round_trip() -> None:
    assert EngineSettings().name == "local"
    ray = EngineSettings(name="ray", address="auto", workers=3, gpus_per_worker=0.5, row_blocks=4)
    assert EngineSettings.from_dict(ray.to_dict()) == ray


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"name": "spark"}, "Unknown engine 'spark'"),
        ({"workers": 2}, "--workers only apply to the Ray engine"),
        ({"address": "auto", "row_blocks": 2}, "--address, --row-blocks only apply"),
        ({"name": "ray", "workers": 0}, "--workers must be at least 1"),
        ({"name": "ray", "row_blocks": 0}, "--row-blocks must be at least 1"),
        ({"name": "ray", "gpus_per_worker": -1}, "--gpus-per-worker must be 0 or more"),
        ({"name": "ray", "cpus_per_worker": 0}, "--cpus-per-worker must be positive"),
        ({"name": "ray", "address": " "}, "--address is empty"),
    ],
)
def test_bad_settings_are_one_sentence(kwargs: dict, fragment: str) -> None:
    with pytest.raises(SpecError, match=fragment.replace("(", r"\(")):
        EngineSettings(**kwargs)


def test_unknown_keys_are_refused() -> None:
    with pytest.raises(SpecError, match="Unknown engine setting"):
        EngineSettings.from_dict({"name": "ray", "nodes": 3})
