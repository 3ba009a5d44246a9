"""The state store interface: everything several replicas must agree on goes through it.

The interface is deliberately small and domain-light, so a memory and a Redis implementation
stay easy to compare line by line:

- **spend**: rolling-window money in integer micro-dollars. `reserve_spend` checks every
  window that applies and adds the amount to all of them in one atomic step, or to none;
  `adjust_spend` later moves a reservation to the actual cost (or back to zero).
- **records**: small JSON-safe dicts by (kind, name), last writer wins, optional TTL
  (breaker states, key cooldowns, unusable keys, EMAs, the feedback request map).
- **counters**: per (kind, name) float fields that only ever get increments, so the sums from
  several replicas merge exactly (key statistics, Beta posterior pseudo-counts).
- **claims**: a named lease held by at most one caller until released or expired
  (the single half-open probe across replicas).

Invariants every implementation keeps (tests/unit/store/ runs one suite against each):
a reservation never lets the spent total of any checked window pass its limit, however many
callers race; increments are never lost; a claim is held by at most one caller at a time.
Times are seconds on the caller's clock (`now`), so tests drive them without sleeping.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol


class Window(StrEnum):
    HOURLY = "hourly"
    DAILY = "daily"


WINDOW_SECS = {Window.HOURLY: 3600, Window.DAILY: 86400}


@dataclass(frozen=True, slots=True)
class SpendCheck:
    """One limit a reservation must fit: `scope` is "global" or "client:<name>"."""

    scope: str
    window: Window
    limit_micros: int


@dataclass(frozen=True, slots=True)
class SpendTotals:
    hourly_micros: int
    daily_micros: int


class StoreUnavailable(Exception):
    """The shared store cannot be reached; callers decide between local state and refusal."""


class StateStore(Protocol):
    async def start(self) -> None:
        """Connect and load what was persisted; safe to call once at startup."""

    async def close(self) -> None:
        """Persist what must survive a restart and release connections."""

    async def ping(self) -> bool:
        """True when the store answers (readiness)."""

    async def reserve_spend(
        self, scopes: tuple[str, ...], checks: tuple[SpendCheck, ...], micros: int, now: float
    ) -> SpendCheck | None:
        """Atomically: if every check fits `micros` more, add `micros` at `now` to every scope
        in `scopes` and return None; otherwise add nothing and return the first check that
        does not fit."""

    async def adjust_spend(self, scopes: tuple[str, ...], delta_micros: int, at: float) -> None:
        """Add `delta_micros` (may be negative) to every scope, in the buckets holding `at`."""

    async def spend_totals(self, scope: str, now: float) -> SpendTotals:
        """Spent micro-dollars of `scope` in the rolling hour and rolling day ending at `now`."""

    async def put_record(
        self, kind: str, name: str, value: dict[str, object], ttl_secs: float | None = None
    ) -> None: ...

    async def get_record(self, kind: str, name: str) -> dict[str, object] | None: ...

    async def get_records(self, kind: str) -> dict[str, dict[str, object]]: ...

    async def add_counters(self, kind: str, name: str, deltas: dict[str, float]) -> None: ...

    async def get_counters(self, kind: str) -> dict[str, dict[str, float]]: ...

    async def claim(self, name: str, holder: str, ttl_secs: float) -> bool:
        """Take the named lease if free (or expired); True when `holder` now holds it."""

    async def release(self, name: str, holder: str) -> None:
        """Release the lease if `holder` holds it."""


class StoreCorrupt(Exception):
    """The persisted state file cannot be used as it is: not SQLite, not ours, written by a
    newer gateway, or unreadable. Raised instead of starting empty, so learned state is never
    silently reset; the operator decides (move the file away, fix the path)."""

    def __init__(self, path: object, reason: str) -> None:
        super().__init__(f"state file {path}: {reason}")
        self.path = path
        self.reason = reason
