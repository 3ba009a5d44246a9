"""The in-process state store (`state.backend = "memory"`), optionally persisted to SQLite.

Atomicity: everything runs on the event loop's single thread and no method awaits between
reading state and changing it (`reserve_spend` checks every window and adds to every scope
with no `await` in between). That is what makes a reservation atomic without a lock; keep it
so: an `await` inside a check-then-act section would let racing callers pass a limit.

Persistence (when `path` is set): the file is validated and loaded at `start()` (a foreign,
corrupt or newer file raises `StoreCorrupt`, never a silent reset), then every
`snapshot_interval_secs` and at `close()` the keys that changed are written in one SQLite
transaction in a worker thread, so the loop never blocks on disk. A kill -9 loses at most the
last interval. Claims are not persisted: a lease dies with the process that held it.

Memory stays bounded: spend keeps only buckets that can still count (per scope, at most
61 + 25), and a sweep every interval drops expired records and claims.

Records are kept as orjson bytes, so values come back as fresh JSON-shaped copies exactly as
they would from Redis (a caller mutating a returned dict never changes the store).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from gateway.store import sqlite_snapshot, windows
from gateway.store.base import SpendCheck, SpendTotals, Window

_log = logging.getLogger(__name__)

_Record = tuple[bytes, float | None]  # orjson value, expires_at on the store's clock


@dataclass(slots=True)
class _Dirty:
    """Keys changed since the last snapshot (tracked only when persisting)."""

    spend: set[str] = field(default_factory=set)
    records: set[tuple[str, str]] = field(default_factory=set)
    counters: set[tuple[str, str]] = field(default_factory=set)

    def merge(self, other: _Dirty) -> None:
        self.spend |= other.spend
        self.records |= other.records
        self.counters |= other.counters


class MemoryStore:
    """StateStore held in this process; see the module docstring for its guarantees."""

    def __init__(
        self,
        path: Path | None,
        snapshot_interval_secs: float = 5.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._path = path
        self._interval = snapshot_interval_secs
        self._clock = clock
        self._spend: dict[str, dict[Window, dict[int, int]]] = {}
        self._records: dict[str, dict[str, _Record]] = {}
        self._counters: dict[str, dict[str, dict[str, float]]] = {}
        self._claims: dict[str, tuple[str, float]] = {}
        self._latest_spend_at = -math.inf
        self._dirty = _Dirty()
        self._save_lock = asyncio.Lock()
        # Only a file that start() validated and loaded is ever written: a failed start must
        # not let close() scribble into someone else's database.
        self._loaded = False
        self._task: asyncio.Task[None] | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        if self._path is not None:
            snapshot = await asyncio.to_thread(
                sqlite_snapshot.open_or_create, self._path, self._clock()
            )
            self._load(snapshot)
            self._loaded = True
        self._task = asyncio.create_task(self._maintain(), name="memory-store-maintenance")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        await self.save()

    async def ping(self) -> bool:
        return True

    # -- spend ------------------------------------------------------------------------------

    async def reserve_spend(
        self, scopes: tuple[str, ...], checks: tuple[SpendCheck, ...], micros: int, now: float
    ) -> SpendCheck | None:
        if micros < 0:
            raise ValueError("a reservation cannot be negative; refund with adjust_spend")
        # Check and add with no await in between: this is the atomic section.
        for check in checks:
            if self._window_total(check.scope, check.window, now) + micros > check.limit_micros:
                return check
        self._add_spend(scopes, micros, now)
        return None

    async def adjust_spend(self, scopes: tuple[str, ...], delta_micros: int, at: float) -> None:
        self._add_spend(scopes, delta_micros, at)

    async def spend_totals(self, scope: str, now: float) -> SpendTotals:
        return SpendTotals(
            hourly_micros=self._window_total(scope, Window.HOURLY, now),
            daily_micros=self._window_total(scope, Window.DAILY, now),
        )

    def _window_total(self, scope: str, window: Window, now: float) -> int:
        buckets = self._spend.get(scope, {}).get(window)
        return windows.window_total(buckets, window, now) if buckets else 0

    def _add_spend(self, scopes: tuple[str, ...], delta: int, at: float) -> None:
        self._latest_spend_at = max(self._latest_spend_at, at)
        for scope in scopes:
            per_window = self._spend.setdefault(scope, {})
            for window in Window:
                buckets = per_window.setdefault(window, {})
                bucket = windows.bucket_id(window, at)
                buckets[bucket] = buckets.get(bucket, 0) + delta
            self._prune_scope(scope, self._latest_spend_at)
            self._mark(self._dirty.spend, scope)

    def _prune_scope(self, scope: str, now: float) -> bool:
        """Drop the scope's buckets that can no longer count; True when any went."""
        per_window = self._spend.get(scope, {})
        pruned = False
        for window, buckets in list(per_window.items()):
            for bucket in windows.stale_buckets(buckets, window, now):
                del buckets[bucket]
                pruned = True
            if not buckets:
                del per_window[window]
        if not per_window:
            self._spend.pop(scope, None)
        return pruned

    # -- records ----------------------------------------------------------------------------

    async def put_record(
        self, kind: str, name: str, value: dict[str, object], ttl_secs: float | None = None
    ) -> None:
        expires_at = None if ttl_secs is None else self._clock() + ttl_secs
        self._records.setdefault(kind, {})[name] = (orjson.dumps(value), expires_at)
        self._mark(self._dirty.records, (kind, name))

    async def get_record(self, kind: str, name: str) -> dict[str, object] | None:
        record = self._records.get(kind, {}).get(name)
        if record is None or _expired(record, self._clock()):
            return None
        return orjson.loads(record[0])  # type: ignore[no-any-return]

    async def get_records(self, kind: str) -> dict[str, dict[str, object]]:
        now = self._clock()
        return {
            name: orjson.loads(record[0])
            for name, record in self._records.get(kind, {}).items()
            if not _expired(record, now)
        }

    def records_with_ttl(self, kind: str) -> dict[str, tuple[dict[str, object], float | None]]:
        """Live records of `kind` with their remaining TTL in seconds (None = no expiry)."""
        now = self._clock()
        return {
            name: (orjson.loads(blob), None if expires_at is None else expires_at - now)
            for name, (blob, expires_at) in self._records.get(kind, {}).items()
            if not _expired((blob, expires_at), now)
        }

    def replace_records(
        self, kind: str, records: dict[str, tuple[dict[str, object], float | None]]
    ) -> None:
        """Make `kind` hold exactly `records` (value, TTL secs or None): a mirror's refresh."""
        now = self._clock()
        old = self._records.pop(kind, {})
        self._records[kind] = {
            name: (orjson.dumps(value), None if ttl is None else now + ttl)
            for name, (value, ttl) in records.items()
        }
        for name in old.keys() | records.keys():
            self._mark(self._dirty.records, (kind, name))

    # -- counters ---------------------------------------------------------------------------

    async def add_counters(self, kind: str, name: str, deltas: dict[str, float]) -> None:
        fields = self._counters.setdefault(kind, {}).setdefault(name, {})
        for key, delta in deltas.items():
            fields[key] = fields.get(key, 0.0) + float(delta)
        self._mark(self._dirty.counters, (kind, name))

    async def get_counters(self, kind: str) -> dict[str, dict[str, float]]:
        return {name: dict(fields) for name, fields in self._counters.get(kind, {}).items()}

    def replace_counters(self, kind: str, counters: dict[str, dict[str, float]]) -> None:
        """Make `kind` hold exactly `counters`: a mirror's refresh from the shared store."""
        old = self._counters.pop(kind, {})
        self._counters[kind] = {name: dict(fields) for name, fields in counters.items()}
        for name in old.keys() | counters.keys():
            self._mark(self._dirty.counters, (kind, name))

    # -- claims -----------------------------------------------------------------------------

    async def claim(self, name: str, holder: str, ttl_secs: float) -> bool:
        now = self._clock()
        current = self._claims.get(name)
        if current is not None and current[0] != holder and current[1] > now:
            return False
        self._claims[name] = (holder, now + ttl_secs)
        return True

    async def release(self, name: str, holder: str) -> None:
        current = self._claims.get(name)
        if current is not None and current[0] == holder:
            del self._claims[name]

    # -- persistence and sweeping -----------------------------------------------------------

    def _mark(self, dirty: set[tuple[str, str]] | set[str], key: object) -> None:
        # Without a file nothing is ever saved, so tracking would only grow without bound.
        if self._path is not None:
            dirty.add(key)  # type: ignore[arg-type]

    def _load(self, snapshot: sqlite_snapshot.Snapshot) -> None:
        for scope, window, bucket, micros in snapshot.spend:
            per_window = self._spend.setdefault(scope, {})
            per_window.setdefault(Window(window), {})[bucket] = micros
            self._latest_spend_at = max(
                self._latest_spend_at, bucket * windows.spec(Window(window)).bucket_secs
            )
        for kind, name, blob, expires_at in snapshot.records:
            self._records.setdefault(kind, {})[name] = (blob, expires_at)
        for (kind, name), fields in snapshot.counters.items():
            self._counters.setdefault(kind, {})[name] = dict(fields)

    async def save(self) -> None:
        """Write what changed since the last save (no-op without a file)."""
        if self._path is None or not self._loaded:
            return
        async with self._save_lock:
            dirty, self._dirty = self._dirty, _Dirty()
            changes = self._collect(dirty)
            if not changes:
                return
            try:
                await asyncio.to_thread(sqlite_snapshot.write, self._path, changes, self._clock())
            except BaseException:
                # Keys go back on the list, so the next save writes their content then.
                self._dirty.merge(dirty)
                raise

    def _collect(self, dirty: _Dirty) -> sqlite_snapshot.Changes:
        changes = sqlite_snapshot.Changes()
        for scope in dirty.spend:
            changes.spend[scope] = [
                (scope, window.value, bucket, micros)
                for window, buckets in self._spend.get(scope, {}).items()
                for bucket, micros in buckets.items()
            ]
        for kind, name in dirty.records:
            record = self._records.get(kind, {}).get(name)
            changes.records[(kind, name)] = None if record is None else (kind, name, *record)
        for kind, name in dirty.counters:
            changes.counters[(kind, name)] = dict(self._counters.get(kind, {}).get(name, {}))
        return changes

    def sweep(self) -> None:
        """Drop expired records and claims and spend buckets that can no longer count."""
        now = self._clock()
        for kind, records in list(self._records.items()):
            for name in [n for n, record in records.items() if _expired(record, now)]:
                del records[name]
                self._mark(self._dirty.records, (kind, name))
            if not records:
                del self._records[kind]
        for name in [n for n, (_, until) in self._claims.items() if until <= now]:
            del self._claims[name]
        for scope in list(self._spend):
            if self._prune_scope(scope, self._latest_spend_at):
                self._mark(self._dirty.spend, scope)

    async def _maintain(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.sweep()
            try:
                # Shielded: a close() arriving mid-write waits for it instead of racing it.
                await asyncio.shield(self.save())
            except (sqlite3.Error, OSError) as exc:
                _log.error("saving state to %s failed (will retry): %s", self._path, exc)


def _expired(record: _Record, now: float) -> bool:
    return record[1] is not None and record[1] <= now
