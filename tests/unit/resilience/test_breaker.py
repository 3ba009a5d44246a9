"""The circuit breaker of one replica: its transition table, driven by outcomes and a hand-set
clock (no sleeping), over a real in-memory store."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from gateway.config.models import CircuitBreakerConfig, Task
from gateway.outcome import AttemptOutcome, Signal
from gateway.resilience.breaker import (
    GAUGE_VALUE,
    TRANSITIONS,
    Admission,
    Breaker,
    BreakerBoard,
    CircuitState,
    Event,
)
from gateway.store.memory import MemoryStore
from gateway.store.writebehind import WriteBehind
from tests.unit.store.store_support import FakeClock as Clock

MODEL, OTHER = "m", "other"
COOLDOWN = 10.0
THRESHOLD = 3


@dataclass
class Rig:
    board: BreakerBoard
    clock: Clock
    writes: WriteBehind
    changes: list[tuple[str, CircuitState]] = field(default_factory=list)

    def report(self, signal: Signal, *, probe: bool = False, model: str = MODEL) -> None:
        self.board.on_outcome(AttemptOutcome(
            request_id="r", client=None, model=model, backend="b", key_ref=None,
            task=Task.GENERATE, signal=signal, status=None, error_kind=None, started_at=0.0,
            latency_s=0.01, ttft_s=None, prompt_tokens=0, completion_tokens=0, was_probe=probe,
        ))

    async def trip(self) -> None:
        for _ in range(THRESHOLD):
            self.report(Signal.SERVER_ERROR)
        assert self.board.state(MODEL) is CircuitState.OPEN
        await self.writes.drain()

    async def probe(self) -> Admission:
        admission = await self.board.admit(MODEL)
        assert admission is not None and admission.is_probe
        return admission


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    clock = Clock()
    store = MemoryStore(None, 60.0, clock)
    await store.start()
    writes = WriteBehind()  # drained by hand: the test decides when queued writes land
    config = CircuitBreakerConfig(failure_threshold=THRESHOLD, cooldown_secs=COOLDOWN)
    changes: list[tuple[str, CircuitState]] = []
    board = BreakerBoard(config, [MODEL, OTHER], store, writes, clock,
                         on_change=lambda m, s: changes.append((m, s)))
    made = Rig(board, clock, writes, changes)
    yield made
    await writes.close()
    await store.close()


@pytest.mark.parametrize("state, event", list(itertools.product(CircuitState, Event)))
def test_the_transition_table_is_complete_and_strict(state: CircuitState, event: Event) -> None:
    expected = {
        (CircuitState.CLOSED, Event.TRIP): CircuitState.OPEN,
        (CircuitState.OPEN, Event.PROBE): CircuitState.HALF_OPEN,
        (CircuitState.HALF_OPEN, Event.PROBE_OK): CircuitState.CLOSED,
        (CircuitState.HALF_OPEN, Event.PROBE_FAILED): CircuitState.OPEN,
    }
    assert TRANSITIONS == expected
    breaker = Breaker(state=state, failures=2)
    if (state, event) not in expected:
        with pytest.raises(KeyError):
            breaker.apply(event, 5.0)
        assert breaker.state is state
        return
    breaker.apply(event, 5.0)
    assert breaker.state is expected[(state, event)]
    assert breaker.failures == 0 and breaker.changed_at == 5.0
    if breaker.state is CircuitState.OPEN:
        assert breaker.opened_at == 5.0


def test_gauge_values_are_the_contract_ones() -> None:
    assert GAUGE_VALUE == {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1,
                           CircuitState.OPEN: 2}


async def test_consecutive_failures_open_and_a_success_resets_the_count(rig: Rig) -> None:
    for signal in (Signal.SERVER_ERROR, Signal.TIMEOUT, Signal.SUCCESS):
        rig.report(signal)
    for signal in (Signal.RATE_LIMITED, Signal.SERVER_ERROR):
        rig.report(signal)
    assert rig.board.state(MODEL) is CircuitState.CLOSED and rig.changes == []
    rig.report(Signal.TIMEOUT)
    assert rig.board.state(MODEL) is CircuitState.OPEN
    assert rig.changes == [(MODEL, CircuitState.OPEN)]
    assert rig.board.state(OTHER) is CircuitState.CLOSED  # per model


async def test_client_errors_never_trip_and_non_health_signals_do_not_count(rig: Rig) -> None:
    for _ in range(THRESHOLD + 2):
        rig.report(Signal.CLIENT_ERROR)
    assert rig.board.state(MODEL) is CircuitState.CLOSED
    # Cancelled, retried and malformed say nothing about health: the run of failures goes on.
    for signal in (Signal.SERVER_ERROR, Signal.CANCELLED, Signal.SERVER_ERROR, Signal.RETRIED,
                   Signal.MALFORMED):
        rig.report(signal)
    assert rig.board.state(MODEL) is CircuitState.CLOSED
    rig.report(Signal.SERVER_ERROR)
    assert rig.board.state(MODEL) is CircuitState.OPEN


async def test_open_refuses_until_the_cooldown_then_admits_exactly_one_probe(rig: Rig) -> None:
    await rig.trip()
    assert await rig.board.admit(MODEL) is None and rig.board.is_open(MODEL)
    rig.clock.now += COOLDOWN - 0.01
    assert await rig.board.admit(MODEL) is None
    rig.clock.now += 0.01
    assert not rig.board.is_open(MODEL)  # the router may offer it again: someone must probe
    admissions = await asyncio.gather(*(rig.board.admit(MODEL) for _ in range(20)))
    granted = [a for a in admissions if a is not None]
    assert len(granted) == 1 and granted[0].is_probe
    assert rig.board.state(MODEL) is CircuitState.HALF_OPEN and rig.board.is_open(MODEL)
    assert await rig.board.admit(MODEL) is None
    assert rig.changes[-1] == (MODEL, CircuitState.HALF_OPEN)


async def test_a_successful_probe_closes(rig: Rig) -> None:
    await rig.trip()
    rig.clock.now += COOLDOWN
    await rig.probe()
    rig.report(Signal.SUCCESS, probe=True)
    assert rig.board.state(MODEL) is CircuitState.CLOSED
    await rig.writes.drain()
    admission = await rig.board.admit(MODEL)
    assert admission is not None and not admission.is_probe
    assert [s for _, s in rig.changes] == [CircuitState.OPEN, CircuitState.HALF_OPEN,
                                           CircuitState.CLOSED]


async def test_a_failed_probe_reopens_with_a_fresh_cooldown(rig: Rig) -> None:
    await rig.trip()
    rig.clock.now += COOLDOWN
    await rig.probe()
    rig.clock.now += 2.0
    rig.report(Signal.TIMEOUT, probe=True)
    await rig.writes.drain()
    assert rig.board.state(MODEL) is CircuitState.OPEN
    rig.clock.now += COOLDOWN - 0.5  # past the old deadline, inside the fresh one
    assert await rig.board.admit(MODEL) is None
    rig.clock.now += 0.5
    await rig.probe()


async def test_late_outcomes_of_attempts_admitted_before_the_trip_do_not_move_it(
    rig: Rig,
) -> None:
    await rig.trip()
    rig.report(Signal.SUCCESS)  # admitted while it was still closed
    assert rig.board.state(MODEL) is CircuitState.OPEN
    rig.clock.now += COOLDOWN
    await rig.probe()
    rig.report(Signal.SUCCESS)  # not the probe
    rig.report(Signal.SERVER_ERROR)
    assert rig.board.state(MODEL) is CircuitState.HALF_OPEN


async def test_a_probe_that_proved_nothing_lets_the_next_request_probe(rig: Rig) -> None:
    await rig.trip()
    rig.clock.now += COOLDOWN
    await rig.probe()
    rig.report(Signal.CANCELLED, probe=True)  # the client went away during the probe
    await rig.writes.drain()
    assert rig.board.state(MODEL) is CircuitState.OPEN
    assert rig.changes[-1] == (MODEL, CircuitState.OPEN)  # the gauge follows
    await rig.probe()


async def test_a_probe_that_never_reports_is_replaced_after_its_lease(rig: Rig) -> None:
    await rig.trip()
    rig.clock.now += COOLDOWN
    await rig.probe()
    rig.clock.now += 29.0
    assert await rig.board.admit(MODEL) is None
    rig.clock.now += 1.5  # the probe lease (max(cooldown, 30 s)) has run out
    await rig.probe()
    assert await rig.board.admit(MODEL) is None
