"""The store the gateway uses with `state.backend = "redis"`: Redis first, local state when
Redis is unreachable, and a replay of the local writes once it answers again.

While Redis answers, every operation goes to Redis and is mirrored into the local memory
store (this replica's own writes, plus the last records and counters read from Redis), so
an outage falls back to a recent view instead of to nothing.

When Redis raises `StoreUnavailable` (or is already known to be down, so no request waits
on a timeout), the store is *degraded*:

- reads come from the local store;
- records and counters are written locally and queued (coalesced, bounded; replay.py);
- `reserve_spend` with limits to check: under fail_closed raises `StoreUnavailable` (the
  gateway answers 503 spend_store_unavailable); under fail_open reserves against the local
  windows and queues the spend with its bucket time. A reservation with no check is never
  refused: there is no limit Redis could enforce;
- `adjust_spend` is applied locally and queued in both modes: it settles a request that
  was already admitted, and refusing it would leave the estimate charged for good;
- claims use the local store: single-replica degraded mode, where another replica may take
  the same lease in its own local store (e.g. two half-open probes during an outage).

A background task pings Redis every `ping_down_secs` (1 s) while it is down and every
`ping_up_secs` (2 s) while up. When a ping answers after an outage it replays the queue
(in order: new writes keep queuing until the queue is empty), and only then reports
`healthy` again, so a queued write never lands after a newer direct one. `start()` never
fails because Redis is down: the gateway starts degraded and `/readyz` says 503 until Redis
answers.

A write that fails in flight is queued too, although Redis may have applied it (the reply
was lost, or a hung Redis executes the timed-out command when it wakes). Replay is therefore
at-least-once for the writes in flight at the moment Redis became unreachable: such spend
may count twice (over-enforcing, never under), such an increment may land twice. Writes
made once the outage is known are never sent before the replay, so they land exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Literal

from gateway.store.base import SpendCheck, SpendTotals, StoreUnavailable
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import RedisStore
from gateway.store.replay import ReplayBatch, ReplayQueue

_log = logging.getLogger(__name__)

OnRedisError = Literal["fail_closed", "fail_open"]


class ResilientStore:
    """StateStore over a RedisStore with a local MemoryStore fallback (see module docstring)."""

    def __init__(
        self,
        primary: RedisStore,
        local: MemoryStore,
        on_error: OnRedisError = "fail_closed",
        clock: Callable[[], float] = time.time,
        *,
        ping_up_secs: float = 2.0,
        ping_down_secs: float = 1.0,
        max_queued: int = 100_000,
        unmirrored_kinds: frozenset[str] = frozenset({"request"}),
    ) -> None:
        self._primary = primary
        # One record per served request would grow the local copy with traffic: while Redis
        # is up such records live only there (the feedback ledger keeps its own bounded view).
        self._unmirrored = unmirrored_kinds
        self._local = local
        self._on_error = on_error
        self._clock = clock
        self._ping_up = ping_up_secs
        self._ping_down = ping_down_secs
        self._queue = ReplayQueue(max_queued)
        self._healthy = False
        self._task: asyncio.Task[None] | None = None

    @property
    def healthy(self) -> bool:
        """Redis answered the last operation or ping and the replay queue has been flushed."""
        return self._healthy

    @property
    def pending_replay(self) -> int:
        """Distinct keys written locally and not yet replayed to Redis."""
        return len(self._queue)

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        await self._local.start()
        await self._primary.start()
        self._healthy = await self._primary.ping()
        if not self._healthy:
            _log.warning(
                "redis at %s is unreachable at start; serving from local state until it answers",
                self._primary.safe_url,
            )
        self._task = asyncio.create_task(self._monitor(), name="redis-health-monitor")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if len(self._queue) and await self._primary.ping():
            with contextlib.suppress(StoreUnavailable):
                await self._flush()
        if len(self._queue):
            _log.warning("closing with %d local writes never replayed to redis", len(self._queue))
        await self._primary.close()
        await self._local.close()

    async def ping(self) -> bool:
        return self._healthy

    # -- health -----------------------------------------------------------------------------

    def _mark_down(self, exc: StoreUnavailable | None) -> None:
        if self._healthy:
            _log.warning("redis unreachable, serving from local state: %s", exc or "no ping reply")
        self._healthy = False

    async def check_now(self) -> bool:
        """Ping Redis; after an outage replay the queue, then report healthy. True if healthy."""
        if not await self._primary.ping():
            self._mark_down(None)
            return False
        if not self._healthy or len(self._queue):
            try:
                await self._flush()
            except StoreUnavailable as exc:
                self._mark_down(exc)
                return False
            if not self._healthy:
                _log.info(
                    "redis at %s answers again; local writes replayed", self._primary.safe_url
                )
            # No await since the queue was found empty: nothing can slip in between.
            self._healthy = True
        return True

    async def _monitor(self) -> None:
        while True:
            await asyncio.sleep(self._ping_up if self._healthy else self._ping_down)
            try:
                await self.check_now()
            except Exception:  # this loop is readiness itself: it must not die of a bug
                _log.exception("redis health check failed unexpectedly")
                self._healthy = False

    async def _flush(self) -> None:
        while len(self._queue):
            batch = self._queue.take()
            try:
                await self._replay(batch)
            except BaseException:
                self._queue.put_back(batch)  # only the parts not yet replayed are left in it
                raise

    async def _replay(self, batch: ReplayBatch) -> None:
        await self._primary.apply_spend(batch.spend_at())
        batch.spend.clear()
        await self._primary.apply_counters(batch.counters)
        batch.counters.clear()
        await self._primary.apply_records(batch.records_with_ttl(self._clock()))
        batch.records.clear()

    # -- spend ------------------------------------------------------------------------------

    async def reserve_spend(
        self, scopes: tuple[str, ...], checks: tuple[SpendCheck, ...], micros: int, now: float
    ) -> SpendCheck | None:
        if self._healthy:
            try:
                failed = await self._primary.reserve_spend(scopes, checks, micros, now)
            except StoreUnavailable as exc:
                self._mark_down(exc)
            else:
                if failed is None:
                    await self._local.adjust_spend(scopes, micros, now)
                return failed
        if checks and self._on_error == "fail_closed":
            raise StoreUnavailable(
                f"redis at {self._primary.safe_url} is unreachable and "
                "state.on_redis_error = fail_closed: spend limits cannot be checked"
            )
        failed = await self._local.reserve_spend(scopes, checks, micros, now)
        if failed is None:
            self._queue.add_spend(scopes, micros, now)
        return failed

    async def adjust_spend(self, scopes: tuple[str, ...], delta_micros: int, at: float) -> None:
        if self._healthy:
            try:
                await self._primary.adjust_spend(scopes, delta_micros, at)
            except StoreUnavailable as exc:
                self._mark_down(exc)
            else:
                await self._local.adjust_spend(scopes, delta_micros, at)
                return
        await self._local.adjust_spend(scopes, delta_micros, at)
        self._queue.add_spend(scopes, delta_micros, at)

    async def spend_totals(self, scope: str, now: float) -> SpendTotals:
        if self._healthy:
            try:
                return await self._primary.spend_totals(scope, now)
            except StoreUnavailable as exc:
                self._mark_down(exc)
        return await self._local.spend_totals(scope, now)

    # -- records ----------------------------------------------------------------------------

    async def put_record(
        self, kind: str, name: str, value: dict[str, object], ttl_secs: float | None = None
    ) -> None:
        mirrored = kind not in self._unmirrored
        if mirrored:
            await self._local.put_record(kind, name, value, ttl_secs)
        if self._healthy:
            try:
                await self._primary.put_record(kind, name, value, ttl_secs)
                return
            except StoreUnavailable as exc:
                self._mark_down(exc)
        if not mirrored:
            await self._local.put_record(kind, name, value, ttl_secs)
        expires_at = None if ttl_secs is None else self._clock() + ttl_secs
        self._queue.put_record(kind, name, value, expires_at)

    async def get_record(self, kind: str, name: str) -> dict[str, object] | None:
        if self._healthy:
            try:
                return await self._primary.get_record(kind, name)
            except StoreUnavailable as exc:
                self._mark_down(exc)
        return await self._local.get_record(kind, name)

    async def get_records(self, kind: str) -> dict[str, dict[str, object]]:
        if self._healthy:
            try:
                found = await self._primary.records_with_ttl(kind)
            except StoreUnavailable as exc:
                self._mark_down(exc)
            else:
                self._local.replace_records(kind, found)
                return {name: value for name, (value, _) in found.items()}
        return await self._local.get_records(kind)

    # -- counters ---------------------------------------------------------------------------

    async def add_counters(self, kind: str, name: str, deltas: dict[str, float]) -> None:
        await self._local.add_counters(kind, name, deltas)
        if self._healthy:
            try:
                await self._primary.add_counters(kind, name, deltas)
                return
            except StoreUnavailable as exc:
                self._mark_down(exc)
        self._queue.add_counters(kind, name, deltas)

    async def get_counters(self, kind: str) -> dict[str, dict[str, float]]:
        if self._healthy:
            try:
                found = await self._primary.get_counters(kind)
            except StoreUnavailable as exc:
                self._mark_down(exc)
            else:
                self._local.replace_counters(kind, found)
                return found
        return await self._local.get_counters(kind)

    # -- claims -----------------------------------------------------------------------------

    async def claim(self, name: str, holder: str, ttl_secs: float) -> bool:
        if self._healthy:
            try:
                return await self._primary.claim(name, holder, ttl_secs)
            except StoreUnavailable as exc:
                self._mark_down(exc)
        return await self._local.claim(name, holder, ttl_secs)

    async def release(self, name: str, holder: str) -> None:
        await self._local.release(name, holder)
        if self._healthy:
            try:
                await self._primary.release(name, holder)
            except StoreUnavailable as exc:
                self._mark_down(exc)  # the lease then simply expires in Redis
