"""MemoryStore specifics: SQLite persistence, refusal of foreign files, bounded memory."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.store import sqlite_snapshot
from gateway.store.base import SpendCheck, SpendTotals, StoreCorrupt, Window
from gateway.store.memory import MemoryStore
from tests.unit.store.store_support import FakeClock, eventually

T0 = 1_700_000_070.0


async def started(path: Path | None, clock: FakeClock, interval: float = 60.0) -> MemoryStore:
    store = MemoryStore(path, interval, clock)
    await store.start()
    return store


async def test_state_survives_close_and_start(tmp_path: Path) -> None:
    path, clock = tmp_path / "state.db", FakeClock(T0)
    store = await started(path, clock)
    check = SpendCheck("global", Window.HOURLY, 10_000)
    assert await store.reserve_spend(("global", "client:a"), (check,), 700, T0) is None
    await store.adjust_spend(("global",), -200, T0)
    await store.put_record("breaker", "m1", {"state": "open"})
    await store.put_record("cooldown", "k", {"until": 5}, ttl_secs=60)
    await store.add_counters("stats", "m1|code", {"alpha": 3.5})
    await store.claim("probe", "me", 30)
    await store.close()

    again = await started(path, clock)
    assert await again.spend_totals("global", T0 + 10) == SpendTotals(500, 500)
    assert await again.spend_totals("client:a", T0 + 10) == SpendTotals(700, 700)
    assert await again.get_record("breaker", "m1") == {"state": "open"}
    assert await again.get_record("cooldown", "k") == {"until": 5}
    assert await again.get_counters("stats") == {"m1|code": {"alpha": 3.5}}
    assert await again.claim("probe", "someone-else", 30) is True  # leases die with the process
    # Limits keep holding across the restart.
    assert await again.reserve_spend(("global",), (check,), 9_600, T0 + 10) == check
    await again.close()


async def test_later_changes_and_deletions_reach_the_file(tmp_path: Path) -> None:
    path, clock = tmp_path / "state.db", FakeClock(T0)
    store = await started(path, clock)
    await store.put_record("r", "short", {"v": 1}, ttl_secs=5)
    await store.put_record("r", "kept", {"v": 1})
    await store.add_counters("c", "n", {"x": 1})
    await store.save()
    await store.put_record("r", "kept", {"v": 2})
    await store.add_counters("c", "n", {"x": 1, "y": 2})
    clock.advance(10)
    store.sweep()
    await store.close()

    again = await started(path, clock)
    assert await again.get_records("r") == {"kept": {"v": 2}}
    assert await again.get_counters("c") == {"n": {"x": 2.0, "y": 2.0}}
    await again.close()


async def test_expired_records_are_not_loaded(tmp_path: Path) -> None:
    path, clock = tmp_path / "state.db", FakeClock(T0)
    store = await started(path, clock)
    await store.put_record("r", "short", {"v": 1}, ttl_secs=5)
    await store.close()
    clock.advance(6)
    again = await started(path, clock)
    assert await again.get_records("r") == {}
    await again.close()


async def test_snapshots_are_written_periodically(tmp_path: Path) -> None:
    path, clock = tmp_path / "state.db", FakeClock(T0)
    store = await started(path, clock, interval=0.05)
    await store.add_counters("c", "n", {"x": 1})

    async def on_disk() -> bool:
        snapshot = sqlite_snapshot.open_or_create(path, clock())
        return snapshot.counters == {("c", "n"): {"x": 1.0}}

    await eventually(on_disk, 3.0, "periodic snapshot")  # without close()
    await store.close()


async def test_an_empty_file_is_a_fresh_start(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.touch()
    store = await started(path, FakeClock(T0))
    await store.add_counters("c", "n", {"x": 1})
    await store.close()
    again = await started(path, FakeClock(T0))
    assert await again.get_counters("c") == {"n": {"x": 1.0}}
    await again.close()


async def test_a_corrupt_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is not a database at all\n" * 100)
    with pytest.raises(StoreCorrupt) as caught:
        await started(path, FakeClock(T0))
    assert str(path) in str(caught.value)
    assert path.read_bytes().startswith(b"this is not")  # untouched


async def test_a_damaged_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await started(path, FakeClock(T0))
    for i in range(300):
        await store.put_record("r", f"n{i}", {"v": "x" * 200})
    await store.close()
    data = bytearray(path.read_bytes())
    data[4096:8192] = b"\xff" * 4096  # scribble over a page
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorrupt, match=str(path)):
        await started(path, FakeClock(T0))


async def test_a_foreign_sqlite_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "someone-elses.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY, name TEXT)")
        conn.execute("INSERT INTO users (name) VALUES ('alice')")
    with pytest.raises(StoreCorrupt, match="without the gateway's schema") as caught:
        await started(path, FakeClock(T0))
    assert caught.value.path == path
    with sqlite3.connect(path) as conn:  # not reset
        assert conn.execute("SELECT name FROM users").fetchall() == [("alice",)]


async def test_a_file_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = await started(path, FakeClock(T0))
    await store.close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(StoreCorrupt, match="newer gateway"):
        await started(path, FakeClock(T0))


async def test_a_directory_is_refused(tmp_path: Path) -> None:
    with pytest.raises(StoreCorrupt, match="directory"):
        await started(tmp_path, FakeClock(T0))


async def test_spend_memory_stays_bounded(tmp_path: Path) -> None:
    clock = FakeClock(T0)
    store = await started(None, clock)
    for minute in range(3 * 24 * 60):  # three days of one reservation a minute
        await store.reserve_spend(("global",), (), 1, T0 + minute * 60)
    buckets = store._spend["global"]  # white-box: the bound is the point of this test
    assert len(buckets[Window.HOURLY]) <= 61
    assert len(buckets[Window.DAILY]) <= 25
    totals = await store.spend_totals("global", T0 + (3 * 24 * 60 - 1) * 60)
    assert totals.hourly_micros == 61 and 24 * 60 <= totals.daily_micros <= 25 * 60
    await store.close()


async def test_sweep_drops_expired_records_and_claims() -> None:
    clock = FakeClock(T0)
    store = await started(None, clock)
    for i in range(1_000):
        await store.put_record("feedback", f"req-{i}", {"model": "m"}, ttl_secs=60)
    await store.claim("probe", "me", 1)
    clock.advance(61)
    store.sweep()
    assert store._records == {} and store._claims == {}  # white-box: memory is released
    await store.close()


async def test_close_after_a_refused_start_leaves_the_file_alone(tmp_path: Path) -> None:
    path = tmp_path / "someone-elses.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE users (id INTEGER PRIMARY KEY)")
    before = path.read_bytes()
    store = MemoryStore(path, 60.0, FakeClock(T0))
    with pytest.raises(StoreCorrupt):
        await store.start()
    await store.add_counters("c", "n", {"x": 1})
    await store.close()
    assert path.read_bytes() == before
