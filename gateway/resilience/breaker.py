"""Per-model circuit breakers: an enum, a transition table and a board that applies outcomes.

    CLOSED    --failure_threshold consecutive failures-->  OPEN
    OPEN      --cooldown over, one caller claims probe-->  HALF_OPEN
    HALF_OPEN --probe succeeds------------------------->  CLOSED
    HALF_OPEN --probe fails---------------------------->  OPEN (fresh cooldown)

Invariants: while HALF_OPEN exactly one probe is in flight (the claim goes through the state
store, so this holds across replicas); only rate_limited, server_error and timeout count as
failures, a client error is neutral; outcomes of attempts admitted before the circuit opened
do not move an open circuit. The clock is injected so tests drive cooldowns without sleeping.

Sharing across replicas: every transition is written as a `breaker` record (state, opened_at,
changed_at) and other replicas adopt records newer than their own state on their next sync
(`apply_remote`), so a trip seen by one replica stops traffic on all within the sync interval.
The probe lease is taken per probe (a fresh holder id), at most one request of a replica asks
the store for it at a time, and after taking it the board re-reads the model's record: a
replica whose view is older than another's finished probe (the lease released, the record
already written, since a record is always written before its lease is released) then adopts
that outcome instead of probing again. Transition times from different replicas are compared,
so replicas need clocks in step (NTP) to well under a cooldown.
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
    # The store lease of this replica's probe in flight, released when its outcome arrives.
    probe_holder: str | None = None
    # A request of this replica is asking the store for the lease: others need not ask too.
    claiming: bool = False

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
        if breaker.claiming or not self._probe_due(breaker, self._clock()):
            return None
        breaker.claiming = True
        try:
            return await self._claim_probe(model, breaker)
        finally:
            breaker.claiming = False

    def _probe_due(self, breaker: Breaker, now: float) -> bool:
        if breaker.state is CircuitState.OPEN:
            return now >= breaker.opened_at + self._cooldown
        # A probe that never reported (client gone, process killed) must not wedge the circuit.
        stuck_since = breaker.changed_at + self._probe_ttl
        return breaker.state is CircuitState.HALF_OPEN and now >= stuck_since

    async def _claim_probe(self, model: str, breaker: Breaker) -> Admission | None:
        holder = uuid.uuid4().hex  # per probe: a second request can never extend or free it
        if not await self._store.claim(_probe_name(model), holder, self._probe_ttl):
            return None
        # Our view may predate another replica's finished probe (it released the lease after
        # writing its record): the record says whether a probe is still due.
        record = await self._store.get_record("breaker", model)
        if record is not None:
            self._adopt(model, breaker, record)
        now = self._clock()
        if breaker.state is CircuitState.CLOSED or not self._probe_due(breaker, now):
            await self._store.release(_probe_name(model), holder)
            closed = breaker.state is CircuitState.CLOSED
            return Admission(model, is_probe=False) if closed else None
        breaker.probe_holder = holder
        if breaker.state is CircuitState.OPEN:
            self._transition(model, breaker, Event.PROBE, now)
        else:  # a stuck probe is replaced: restart the half-open window
            breaker.changed_at = now
            self._share(model, breaker)
        return Admission(model, is_probe=True)

    def abandon(self, admission: Admission) -> None:
        """An admitted attempt that never reached the upstream (e.g. its spend reservation
        failed): a probe that will not run gives the next request the chance to probe."""
        if admission.is_probe:
            self._cancel_probe(admission.model)

    def on_outcome(self, outcome: AttemptOutcome) -> None:
        breaker = self._breakers.get(outcome.model)
        if breaker is None:
            return
        if outcome.signal in _NOT_ABOUT_HEALTH:
            if outcome.was_probe:
                self._cancel_probe(outcome.model)  # the probe proved nothing
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

    def _cancel_probe(self, model: str) -> None:
        """Back to OPEN with the old opening time (so a probe is due at once), shared so that
        no replica, this one included, keeps waiting on a half-open window nobody probes."""
        breaker = self._breakers[model]
        if breaker.state is CircuitState.HALF_OPEN:
            breaker.state, breaker.changed_at = CircuitState.OPEN, self._clock()
            self._share(model, breaker)
            if self._on_change is not None:
                self._on_change(model, breaker.state)
        self._release_probe(model)

    def _release_probe(self, model: str) -> None:
        breaker = self._breakers[model]
        holder, breaker.probe_holder = breaker.probe_holder, None
        if holder is not None:
            # Queued after the record of the probe's outcome: never released before it lands.
            self._writes.submit(lambda: self._store.release(_probe_name(model), holder))

    def _transition(self, model: str, breaker: Breaker, event: Event, now: float) -> None:
        breaker.apply(event, now)
        self._share(model, breaker)
        if self._on_change is not None:
            self._on_change(model, breaker.state)

    def _share(self, model: str, breaker: Breaker) -> None:
        record: dict[str, object] = {
            "state": breaker.state.value,
            "opened_at": breaker.opened_at,
            "changed_at": breaker.changed_at,
        }
        self._writes.submit(lambda: self._store.put_record("breaker", model, record))

    def apply_remote(self, records: dict[str, dict[str, object]]) -> None:
        """Adopt transitions other replicas made more recently than ours."""
        for model, record in records.items():
            breaker = self._breakers.get(model)
            if breaker is not None:
                self._adopt(model, breaker, record)

    def _adopt(self, model: str, breaker: Breaker, record: dict[str, object]) -> None:
        changed_at = float(record.get("changed_at", 0.0))  # type: ignore[arg-type]
        if changed_at <= breaker.changed_at:
            return
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
