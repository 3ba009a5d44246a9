"""Fixtures for the store tests: one real redis-server per session, a fresh key prefix per
test, and a `Harness` that runs the same contract against each StateStore implementation."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Iterator

import pytest

from gateway.store.base import StateStore
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import RedisStore
from gateway.store.resilient import ResilientStore
from tests.redis_server import RedisServer, free_port, running_redis
from tests.unit.store.store_support import FakeClock, Harness


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
def prefix() -> str:
    return f"test:{uuid.uuid4().hex[:10]}:"


@pytest.fixture(params=["memory", "redis", "resilient", "resilient-degraded"])
async def harness(request: pytest.FixtureRequest, prefix: str) -> AsyncIterator[Harness]:
    """Each implementation; "resilient-degraded" is a ResilientStore whose Redis never
    answers (fail_open), so the contract holds for what it serves from local state too."""
    if request.param in ("memory", "resilient-degraded"):
        clock = FakeClock()
        local = MemoryStore(None, 5.0, clock)
        store: StateStore = local
        if request.param == "resilient-degraded":
            dead = RedisStore(f"redis://127.0.0.1:{free_port()}/0", prefix)
            store = ResilientStore(dead, local, on_error="fail_open", clock=clock)
        await store.start()
        yield Harness(store, clock, degraded=request.param == "resilient-degraded")
        await store.close()
        return
    server: RedisServer = request.getfixturevalue("redis_server")
    redis_store = RedisStore(server.url, prefix)
    store = redis_store
    if request.param == "resilient":
        store = ResilientStore(redis_store, MemoryStore(None), on_error="fail_closed")
    await store.start()
    yield Harness(store)
    await store.close()
