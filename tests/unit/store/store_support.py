"""Helpers shared by the store tests: a settable clock, condition polling, the harness."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import pytest

from gateway.store.base import StateStore


class FakeClock:
    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, secs: float) -> None:
        self.now += secs


async def eventually(
    condition: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> float:
    """Poll `condition` until true; returns the seconds it took, fails after `timeout`."""
    start = time.monotonic()
    while not await condition():
        if time.monotonic() - start > timeout:
            pytest.fail(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.02)
    return time.monotonic() - start


@dataclass
class Harness:
    """A started store plus a way to let its TTL clock pass: the fake clock of a memory store
    jumps; Redis's own clock is real, so callers then poll with `eventually`."""

    store: StateStore
    clock: FakeClock | None = None
    degraded: bool = False  # serving from local state: ping() says False

    def let_pass(self, secs: float) -> None:
        if self.clock is not None:
            self.clock.advance(secs)
