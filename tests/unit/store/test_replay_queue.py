"""The coalescing, bounded queue of writes waiting for Redis."""

from __future__ import annotations

from gateway.store.replay import ReplayQueue


def test_spend_coalesces_per_scope_and_minute_and_keeps_its_bucket_time() -> None:
    queue = ReplayQueue()
    queue.add_spend(("global", "client:a"), 100, 6_030.0)
    queue.add_spend(("global",), -40, 6_059.0)
    queue.add_spend(("global",), 7, 6_061.0)
    assert queue.take().spend_at() == {
        ("global", 6_000.0): 60,
        ("client:a", 6_000.0): 100,
        ("global", 6_060.0): 7,
    }
    assert len(queue) == 0


def test_counters_add_up_and_records_keep_the_last_value() -> None:
    queue = ReplayQueue()
    queue.add_counters("keys", "K", {"requests": 1})
    queue.add_counters("keys", "K", {"requests": 1, "tokens": 5})
    value: dict[str, object] = {"v": 1}
    queue.put_record("breaker", "m", value, None)
    value["v"] = 99  # the caller's later mutation does not leak into the queue
    queue.put_record("cooldown", "k", {"v": 2}, expires_at=100.0)
    queue.put_record("cooldown", "gone", {"v": 3}, expires_at=10.0)
    batch = queue.take()
    assert batch.counters == {("keys", "K"): {"requests": 2, "tokens": 5}}
    assert batch.records_with_ttl(now=40.0) == {
        ("breaker", "m"): ({"v": 1}, None),
        ("cooldown", "k"): ({"v": 2}, 60.0),
    }


def test_the_queue_is_bounded_by_distinct_keys() -> None:
    queue = ReplayQueue(max_entries=3)
    for i in range(10):
        queue.add_counters("stats", f"m{i}", {"alpha": 1})
    queue.add_counters("stats", "m0", {"alpha": 1})  # an existing key still coalesces
    assert len(queue) == 3 and queue.dropped == 7
    assert queue.take().counters[("stats", "m0")] == {"alpha": 2}


def test_a_failed_batch_goes_back_under_newer_writes() -> None:
    queue = ReplayQueue()
    queue.add_spend(("global",), 10, 60.0)
    queue.add_counters("c", "n", {"x": 1})
    queue.put_record("r", "n", {"v": "old"}, None)
    batch = queue.take()
    queue.add_spend(("global",), 5, 61.0)
    queue.add_counters("c", "n", {"x": 2})
    queue.put_record("r", "n", {"v": "new"}, None)
    queue.put_back(batch)
    merged = queue.take()
    assert merged.spend_at() == {("global", 60.0): 15}
    assert merged.counters == {("c", "n"): {"x": 3}}
    assert merged.records_with_ttl(0.0) == {("r", "n"): ({"v": "new"}, None)}
