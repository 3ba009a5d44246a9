"""Per-model circuit breakers: an enum, a transition table and a board that applies outcomes.

    CLOSED    --failure_threshold consecutive failures-->  OPEN
    OPEN      --cooldown over, one caller claims probe-->  HALF_OPEN
    HALF_OPEN --probe succeeds------------------------->  CLOSED
    HALF_OPEN --probe fails---------------------------->  OPEN (fresh cooldown)

Invariants: while HALF_OPEN exactly one probe is in flight (the claim goes through the state
store, so this holds across replicas); only rate_limited, server_error and timeout count as
failures, a client error is neutral; outcomes of attempts admitted before the circuit opened
do not move an open circuit. The clock is injected so tests drive cooldowns without sleeping.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.config.models import CircuitBreakerConfig
from gateway.outcome import BREAKER_FAILURES, AttemptOutcome, Signal
from gateway.store.base import StateStore
from gateway.store.writebehind import WriteBehind


class CircuitState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half_open"
    OPEN = "open"


GAUGE_VALUE = {CircuitState.CLOSED: 0, CircuitState.HALF_OPEN: 1, CircuitState.OPEN: 2}


class Event(StrEnum):
    TRIP = "trip"
    PROBE = "probe"
    PROBE_OK = "probe_ok"
    PROBE_FAILED = "probe_failed"


TRANSITIONS: dict[tuple[CircuitState, Event], CircuitState] = {
    (CircuitState.CLOSED, Event.TRIP): CircuitState.OPEN,
    (CircuitState.OPEN, Event.PROBE): CircuitState.HALF_OPEN,
    (CircuitState.HALF_OPEN, Event.PROBE_OK): CircuitState.CLOSED,
    (CircuitState.HALF_OPEN, Event.PROBE_FAILED): CircuitState.OPEN,
}


@dataclass(slots=True)
class Breaker:
    state: CircuitState = CircuitState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    changed_at: float = 0.0

    def apply(self, event: Event, now: float) -> None:
        self.state = TRANSITIONS[(self.state, event)]
        self.changed_at = now
        if self.state is CircuitState.OPEN:
            self.opened_at = now
        self.failures = 0


@dataclass(frozen=True, slots=True)
class Admission:
    model: str
    is_probe: bool


# A client re-sending a prompt speaks of answer quality, not of whether the backend is up.
_NOT_ABOUT_HEALTH = frozenset({Signal.RETRIED, Signal.MALFORMED, Signal.CANCELLED})

ChangeHook = Callable[[str, CircuitState], None]


class BreakerBoard:
    def __init__(
        self,
        config: CircuitBreakerConfig,
        models: list[str],
        store: StateStore,
        writes: WriteBehind,
        clock: Callable[[], float],
        on_change: ChangeHook | None = None,
    ) -> None:
        self._threshold = config.failure_threshold
        self._cooldown = config.cooldown_secs
        self._breakers = {model: Breaker() for model in models}
        self._store = store
        self._writes = writes
        self._clock = clock
        self._on_change = on_change
        self._holder = uuid.uuid4().hex
        # A probe that never reports (client gone, process killed) must not wedge the circuit.
        self._probe_ttl = max(self._cooldown, 30.0)

    def state(self, model: str) -> CircuitState:
        return self._breakers[model].state

    def is_open(self, model: str) -> bool:
        """True when the router should not consider the model right now."""
        breaker = self._breakers[model]
        if breaker.state is CircuitState.CLOSED:
            return False
        if breaker.state is CircuitState.HALF_OPEN:
            return True
        return self._clock() < breaker.opened_at + self._cooldown

    async def admit(self, model: str) -> Admission | None:
        breaker = self._breakers[model]
        if breaker.state is CircuitState.CLOSED:
            return Admission(model, is_probe=False)
        now = self._clock()
        if breaker.state is CircuitState.OPEN and now >= breaker.opened_at + self._cooldown:
            if not await self._store.claim(_probe_name(model), self._holder, self._probe_ttl):
                return None
            if breaker.state is not CircuitState.OPEN:  # another request got there during await
                await self._store.release(_probe_name(model), self._holder)
                return None
            self._transition(model, breaker, Event.PROBE, now)
            return Admission(model, is_probe=True)
        if breaker.state is CircuitState.HALF_OPEN and now >= breaker.changed_at + self._probe_ttl:
            breaker.changed_at = now
            return Admission(model, is_probe=True)
        return None

    def on_outcome(self, outcome: AttemptOutcome) -> None:
        breaker = self._breakers.get(outcome.model)
        if breaker is None:
            return
        if outcome.signal in _NOT_ABOUT_HEALTH:
            if outcome.was_probe and breaker.state is CircuitState.HALF_OPEN:
                # The probe proved nothing: give the next request the chance to probe.
                breaker.state, breaker.changed_at = CircuitState.OPEN, breaker.opened_at
                self._release_probe(outcome.model)
            return
        failed = outcome.signal in BREAKER_FAILURES
        now = self._clock()
        if outcome.was_probe:
            if breaker.state is CircuitState.HALF_OPEN:
                event = Event.PROBE_FAILED if failed else Event.PROBE_OK
                self._transition(outcome.model, breaker, event, now)
            self._release_probe(outcome.model)
            return
        if breaker.state is not CircuitState.CLOSED:
            return
        if not failed:
            breaker.failures = 0
            return
        breaker.failures += 1
        if breaker.failures >= self._threshold:
            self._transition(outcome.model, breaker, Event.TRIP, now)

    def _release_probe(self, model: str) -> None:
        self._writes.submit(lambda: self._store.release(_probe_name(model), self._holder))

    def _transition(self, model: str, breaker: Breaker, event: Event, now: float) -> None:
        breaker.apply(event, now)
        record: dict[str, object] = {
            "state": breaker.state.value, "opened_at": breaker.opened_at, "changed_at": now,
        }
        self._writes.submit(lambda: self._store.put_record("breaker", model, record))
        if self._on_change is not None:
            self._on_change(model, breaker.state)

    def apply_remote(self, records: dict[str, dict[str, object]]) -> None:
        """Adopt transitions other replicas made more recently than ours."""
        for model, record in records.items():
            breaker = self._breakers.get(model)
            changed_at = float(record.get("changed_at", 0.0))  # type: ignore[arg-type]
            if breaker is None or changed_at <= breaker.changed_at:
                continue
            breaker.state = CircuitState(str(record["state"]))
            breaker.opened_at = float(record.get("opened_at", 0.0))  # type: ignore[arg-type]
            breaker.changed_at = changed_at
            breaker.failures = 0
            if self._on_change is not None:
                self._on_change(model, breaker.state)

    def snapshot(self) -> dict[str, CircuitState]:
        return {model: breaker.state for model, breaker in self._breakers.items()}


def _probe_name(model: str) -> str:
    return f"probe:{model}"
