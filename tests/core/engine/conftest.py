"""One Ray test cluster per session, started with more logical CPUs than the box has.

Starting and stopping a cluster costs seconds (SCALEOUT.md), so every Ray test shares this one;
a test that needs Ray and finds the extra missing is skipped with the reason.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import pytest

RAY_MISSING = "ray is not installed (the optional extra): pip install -e '.[ray]'"
# 4 logical CPUs on a 2-core box: 2 harvest actors and the reduce tasks after them can all be placed
TEST_CPUS = 4


def import_ray_or_skip() -> Any:
    """The ray module, or skip the calling test saying how to install it."""
    return pytest.importorskip("ray", reason=RAY_MISSING)


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    """A started local Ray cluster of ``TEST_CPUS`` logical CPUs (joined if one is running in this process)."""
    ray = import_ray_or_skip()
    if ray.is_initialized():
        yield ray
        return
    ray.init(num_cpus=TEST_CPUS, include_dashboard=False, log_to_driver=False, logging_level=logging.ERROR)
    try:
        yield ray
    finally:
        ray.shutdown()
