from __future__ import annotations

from collections.abc import Iterator

import pytest

from gateway.sim.options import SimOptions
from gateway.sim.testing import running_sim, sim_reset


@pytest.fixture(scope="module")
def sim_a() -> Iterator[str]:
    with running_sim(SimOptions(seed=1)) as root:
        yield root


@pytest.fixture(scope="module")
def sim_b() -> Iterator[str]:
    with running_sim(SimOptions(seed=2)) as root:
        yield root


@pytest.fixture(autouse=True)
def _clean_sims(request: pytest.FixtureRequest) -> None:
    for name in ("sim_a", "sim_b"):
        if name in request.fixturenames:
            sim_reset(request.getfixturevalue(name))
