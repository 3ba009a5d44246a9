"""Builds the configured state store; the one place that maps `[state]` onto store classes.

- `backend = "memory"`: a MemoryStore persisted to `state.path` (already resolved against
  the config file's folder by the loader).
- `backend = "redis"`: a ResilientStore over a RedisStore at `state.redis_url` (keys under
  `state.redis_prefix`) with an unpersisted MemoryStore as its degraded-mode fallback, and
  `state.on_redis_error` deciding whether spend reservations fail closed or open.

Nothing connects here; `await store.start()` does (and never fails on a down Redis).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol, runtime_checkable

from gateway.config.models import StateConfig
from gateway.store.base import StateStore
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import RedisStore
from gateway.store.resilient import ResilientStore


@runtime_checkable
class ReportsHealth(Protocol):
    @property
    def healthy(self) -> bool: ...


def create_store(config: StateConfig, clock: Callable[[], float] = time.time) -> StateStore:
    if config.backend == "memory":
        return MemoryStore(config.path, config.snapshot_interval_secs, clock)
    return ResilientStore(
        RedisStore(config.redis_url, config.redis_prefix),
        MemoryStore(None, config.snapshot_interval_secs, clock),
        on_error=config.on_redis_error,
        clock=clock,
    )


def store_is_healthy(store: StateStore) -> bool:
    """For /readyz: a store that tracks a remote's health reports it; local ones are always up."""
    return store.healthy if isinstance(store, ReportsHealth) else True
