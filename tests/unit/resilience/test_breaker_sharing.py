"""Breakers of two replicas on one real Redis: one probe across both, and no second probe from
a replica whose view predates the first one's outcome.

Each "replica" is a BreakerBoard with its own RedisStore client and write-behind queue on the
same Redis and prefix, as in two gateway processes; the clock is shared and driven by hand.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest

from gateway.config.models import CircuitBreakerConfig, Task
from gateway.outcome import AttemptOutcome, Signal
from gateway.resilience.breaker import Admission, BreakerBoard, CircuitState
from gateway.store.redis_store import RedisStore
from gateway.store.writebehind import WriteBehind
from tests.redis_server import RedisServer, running_redis
from tests.unit.store.store_support import FakeClock as Clock

MODEL = "m"
COOLDOWN = 10.0


@dataclass
class Replica:
    board: BreakerBoard
    store: RedisStore
    writes: WriteBehind

    async def sync(self) -> None:
        """Flush this replica's writes, then pull everyone's records (the runtime's sync)."""
        await self.writes.drain()
        self.board.apply_remote(await self.store.get_records("breaker"))

    def report(self, signal: Signal, *, probe: bool) -> None:
        self.board.on_outcome(AttemptOutcome(
            request_id="r", client=None, model=MODEL, backend="b", key_ref=None,
            task=Task.GENERATE, signal=signal, status=None, error_kind=None, started_at=0.0,
            latency_s=0.01, ttft_s=None, prompt_tokens=0, completion_tokens=0, was_probe=probe,
        ))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture
async def replicas(redis_server: RedisServer) -> AsyncIterator[tuple[Replica, Replica, Clock]]:
    clock, prefix = Clock(), f"brk:{uuid.uuid4().hex[:8]}:"
    made = []
    for _ in range(2):
        store = RedisStore(redis_server.url, prefix)
        await store.start()
        writes = WriteBehind()  # drained by hand (not started): the test orders the writes
        config = CircuitBreakerConfig(failure_threshold=2, cooldown_secs=COOLDOWN)
        made.append(Replica(BreakerBoard(config, [MODEL], store, writes, clock), store, writes))
    a, b = made
    for _ in range(2):
        a.report(Signal.SERVER_ERROR, probe=False)
    await a.sync()
    await b.sync()
    assert a.board.state(MODEL) is b.board.state(MODEL) is CircuitState.OPEN
    clock.now += COOLDOWN + 1
    yield a, b, clock
    for replica in made:
        await replica.writes.close()
        await replica.store.close()


def probes(admissions: list[Admission | None]) -> int:
    assert all(a is None or a.is_probe for a in admissions)
    return sum(1 for a in admissions if a is not None)


async def test_concurrent_requests_on_both_replicas_take_one_probe(
    replicas: tuple[Replica, Replica, Clock],
) -> None:
    a, b, _ = replicas
    first = await asyncio.gather(*(r.board.admit(MODEL) for r in (a, b) * 5))
    await a.writes.drain()
    await b.writes.drain()
    later = [await r.board.admit(MODEL) for r in (b, a, b)]  # the probe is still in flight
    assert probes([*first, *later]) == 1


async def test_a_stale_replica_does_not_probe_again_after_a_failed_probe(
    replicas: tuple[Replica, Replica, Clock],
) -> None:
    a, b, clock = replicas
    admission = await a.board.admit(MODEL)
    assert admission is not None and admission.is_probe
    clock.now += 0.5
    a.report(Signal.SERVER_ERROR, probe=True)  # B has not synced since the trip
    await a.writes.drain()
    assert await b.board.admit(MODEL) is None
    assert b.board.state(MODEL) is CircuitState.OPEN  # it adopted the fresh opening instead
    clock.now += COOLDOWN + 1
    assert probes([await b.board.admit(MODEL), await a.board.admit(MODEL)]) == 1


async def test_a_stale_replica_admits_normally_after_a_successful_probe(
    replicas: tuple[Replica, Replica, Clock],
) -> None:
    a, b, clock = replicas
    assert probes([await a.board.admit(MODEL)]) == 1
    clock.now += 0.5
    a.report(Signal.SUCCESS, probe=True)
    await a.writes.drain()
    admission = await b.board.admit(MODEL)
    assert admission is not None and not admission.is_probe
    assert b.board.state(MODEL) is CircuitState.CLOSED


@pytest.mark.parametrize("how", ["cancelled", "abandoned"])
async def test_a_probe_that_proved_nothing_frees_the_circuit_everywhere(
    replicas: tuple[Replica, Replica, Clock], how: str
) -> None:
    a, b, clock = replicas
    admission = await a.board.admit(MODEL)
    assert admission is not None and admission.is_probe
    await a.sync()
    await b.sync()
    assert b.board.state(MODEL) is CircuitState.HALF_OPEN
    clock.now += 0.5
    if how == "cancelled":  # the client went away during the probe
        a.report(Signal.CANCELLED, probe=True)
    else:  # admitted, but its spend reservation failed: it never ran
        a.board.abandon(admission)
    await a.sync()  # A's own sync must not re-adopt the half-open record it wrote
    await b.sync()
    assert a.board.state(MODEL) is b.board.state(MODEL) is CircuitState.OPEN
    assert probes([await b.board.admit(MODEL), await a.board.admit(MODEL)]) == 1
