"""What a replica wrote locally while Redis was unreachable, waiting to be replayed there.

The queue coalesces instead of logging every operation, which keeps it small and bounded by
distinct keys rather than by traffic:

- spend: (scope, minute bucket) -> summed delta. Replayed at the start of that minute, so it
  lands in the same hourly and daily buckets it would have reached live;
- counters: (kind, name) -> summed field deltas, replayed as increments (exact merge);
- records: (kind, name) -> last value and its absolute expiry (last writer wins); an entry
  whose expiry has passed by replay time is dropped.

Bounded: past `max_entries` distinct keys new keys are dropped and counted (`dropped`), so
an outage of any length cannot exhaust memory. A failed replay puts its batch back.
"""

from __future__ import annotations

from collections.abc import Container
from dataclasses import dataclass, field

import orjson

from gateway.store import windows
from gateway.store.base import Window

_SPEND_BUCKET = Window.HOURLY  # the finer of the two grids: it also fixes the hour bucket


@dataclass(slots=True)
class ReplayBatch:
    spend: dict[tuple[str, int], int] = field(default_factory=dict)
    counters: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    records: dict[tuple[str, str], tuple[dict[str, object], float | None]] = field(
        default_factory=dict
    )

    def __len__(self) -> int:
        return len(self.spend) + len(self.counters) + len(self.records)

    def spend_at(self) -> dict[tuple[str, float], int]:
        """Spend as (scope, at) -> delta, `at` being the start of the recorded minute."""
        secs = windows.spec(_SPEND_BUCKET).bucket_secs
        return {
            (scope, float(minute * secs)): delta for (scope, minute), delta in self.spend.items()
        }

    def records_with_ttl(
        self, now: float
    ) -> dict[tuple[str, str], tuple[dict[str, object], float | None]]:
        """Records as (value, remaining TTL secs or None), leaving out the expired ones."""
        live: dict[tuple[str, str], tuple[dict[str, object], float | None]] = {}
        for key, (value, expires_at) in self.records.items():
            if expires_at is None:
                live[key] = (value, None)
            elif expires_at > now:
                live[key] = (value, expires_at - now)
        return live


class ReplayQueue:
    def __init__(self, max_entries: int = 100_000) -> None:
        self._max = max_entries
        self._batch = ReplayBatch()
        self.dropped = 0

    def __len__(self) -> int:
        return len(self._batch)

    def _room_for(self, table: Container[object], key: object) -> bool:
        if key in table or len(self._batch) < self._max:
            return True
        self.dropped += 1
        return False

    def add_spend(self, scopes: tuple[str, ...], delta: int, at: float) -> None:
        minute = windows.bucket_id(_SPEND_BUCKET, at)
        for scope in scopes:
            key = (scope, minute)
            if self._room_for(self._batch.spend, key):
                self._batch.spend[key] = self._batch.spend.get(key, 0) + delta

    def add_counters(self, kind: str, name: str, deltas: dict[str, float]) -> None:
        key = (kind, name)
        if not self._room_for(self._batch.counters, key):
            return
        fields = self._batch.counters.setdefault(key, {})
        for field_name, delta in deltas.items():
            fields[field_name] = fields.get(field_name, 0.0) + delta

    def put_record(
        self, kind: str, name: str, value: dict[str, object], expires_at: float | None
    ) -> None:
        key = (kind, name)
        if self._room_for(self._batch.records, key):
            # A copy: the caller may keep mutating its dict; the replay must send this value.
            self._batch.records[key] = (orjson.loads(orjson.dumps(value)), expires_at)

    def take(self) -> ReplayBatch:
        """Everything queued, leaving the queue empty."""
        batch, self._batch = self._batch, ReplayBatch()
        return batch

    def put_back(self, batch: ReplayBatch) -> None:
        """Re-queue a batch whose replay failed, under anything queued since (newer wins)."""
        for key, micros in batch.spend.items():
            self._batch.spend[key] = self._batch.spend.get(key, 0) + micros
        for (kind, name), deltas in batch.counters.items():
            fields = self._batch.counters.setdefault((kind, name), {})
            for field_name, delta in deltas.items():
                fields[field_name] = fields.get(field_name, 0.0) + delta
        for record_key, record in batch.records.items():
            self._batch.records.setdefault(record_key, record)
