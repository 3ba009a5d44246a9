"""KeyPool: leasing order, cooldowns, unusable marks, reload, shared records and statistics.

Runs the real pool over a real MemoryStore and WriteBehind, with an injected clock, so
cooldowns are exact and nothing sleeps.
"""

from __future__ import annotations

from pathlib import Path

from gateway.config.models import BackendConfig, Task
from gateway.keys.pool import COOLDOWN_KIND, UNUSABLE_KIND, KeyPool, fingerprint
from gateway.keys.resolve import KeyResolution, resolve_backend_keys
from gateway.outcome import AttemptOutcome, Signal
from gateway.secrets import Secret
from gateway.store.memory import MemoryStore
from gateway.store.writebehind import WriteBehind
from tests.unit.store.store_support import FakeClock

K0 = "sk-test-first-key-000000aaaa"
K1 = "sk-test-second-key-11111bbbb"


def resolutions(value: str = f"{K0},{K1}", var: str = "POOL_KEY") -> dict[str, KeyResolution]:
    backend = BackendConfig(name="b", base_url="http://x/v1", api_key_env=(var,))
    return {"b": resolve_backend_keys(backend, {var: value}, lambda s, u: None)}


def outcome(ref: str | None, signal: Signal = Signal.SUCCESS, **kw: object) -> AttemptOutcome:
    fields: dict[str, object] = {
        "request_id": "r", "client": None, "model": "m", "backend": "b", "key_ref": ref,
        "task": Task.GENERATE, "signal": signal, "status": 200, "error_kind": None,
        "started_at": 0.0, "latency_s": 0.1, "ttft_s": None, "prompt_tokens": 10,
        "completion_tokens": 20,
    }
    fields.update(kw)
    return AttemptOutcome(**fields)  # type: ignore[arg-type]


def make_pool(
    clock: FakeClock | None = None, value: str = f"{K0},{K1}"
) -> tuple[KeyPool, MemoryStore, WriteBehind, FakeClock]:
    clock = clock or FakeClock()
    store = MemoryStore(None, 5.0, clock)
    writes = WriteBehind()
    return KeyPool(resolutions(value), store, writes, clock), store, writes, clock


def serve(pool: KeyPool, signal: Signal = Signal.SUCCESS, **kw: object) -> str:
    lease = pool.lease("b")
    assert lease is not None and lease.ref is not None
    lease.release()
    pool.on_outcome(outcome(lease.ref, signal, **kw))
    return lease.ref


def test_refs_name_comma_separated_keys_by_index() -> None:
    pool, *_ = make_pool()
    assert [row["ref"] for row in pool.status()["b"]] == ["POOL_KEY[0]", "POOL_KEY[1]"]
    single, *_ = make_pool(value=K0)
    assert [row["ref"] for row in single.status()["b"]] == ["POOL_KEY"]


def test_cold_keys_take_turns_then_lowest_token_load_wins() -> None:
    pool, *_ = make_pool()
    first, second = pool.lease("b"), pool.lease("b")
    assert first is not None and second is not None
    assert (first.ref, second.ref) == ("POOL_KEY[0]", "POOL_KEY[1]")
    first.release()
    second.release()
    pool.on_outcome(outcome("POOL_KEY[0]", prompt_tokens=100, completion_tokens=100))
    pool.on_outcome(outcome("POOL_KEY[1]", prompt_tokens=5, completion_tokens=5))
    # Both have data now: the lighter key wins until its load (incl. in-flight) passes the other.
    leases = [pool.lease("b") for _ in range(3)]
    assert [lease.ref for lease in leases if lease] == ["POOL_KEY[1]"] * 3
    for lease in leases:
        assert lease is not None
        lease.release()


def test_ties_go_to_fewer_in_flight() -> None:
    pool, *_ = make_pool()
    serve(pool)
    serve(pool)
    refs: list[str] = []
    for _ in range(4):
        lease = pool.lease("b")
        assert lease is not None and lease.ref is not None
        refs.append(lease.ref)
    assert sorted(refs) == ["POOL_KEY[0]"] * 2 + ["POOL_KEY[1]"] * 2


def test_release_is_idempotent() -> None:
    pool, *_ = make_pool()
    lease = pool.lease("b")
    assert lease is not None
    assert pool.status()["b"][0]["in_flight"] == 1
    lease.release()
    lease.release()
    assert pool.status()["b"][0]["in_flight"] == 0


def test_429_cools_only_that_key_for_retry_after_then_it_is_back() -> None:
    pool, _, _, clock = make_pool()
    serve(pool)
    serve(pool)
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.RATE_LIMITED, retry_after_secs=5.0,
                            prompt_tokens=0, completion_tokens=0))
    assert pool.available_count("b") == 1
    assert {serve(pool) for _ in range(3)} == {"POOL_KEY[1]"}
    clock.advance(5.0)
    assert pool.available_count("b") == 2  # no event needed: the cooldown simply ended
    assert serve(pool) == "POOL_KEY[0]"  # the lighter key again


def test_429_without_retry_after_cools_60_s_and_all_cooling_leases_nothing() -> None:
    pool, _, _, clock = make_pool()
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.RATE_LIMITED))
    pool.on_outcome(outcome("POOL_KEY[1]", Signal.RATE_LIMITED, retry_after_secs=90.0))
    assert pool.lease("b") is None
    assert pool.cooling_until("b") == clock.now + 60.0
    assert pool.has_usable_key("b")
    clock.advance(59.9)
    assert pool.lease("b") is None
    clock.advance(0.2)
    lease = pool.lease("b")
    assert lease is not None and lease.ref == "POOL_KEY[0]"


def test_401_marks_unusable_and_counts_a_failure() -> None:
    pool, *_ = make_pool()
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.CLIENT_ERROR, key_unusable=True, status=401))
    row = pool.status()["b"][0]
    assert row["unusable"] is True and row["available"] is False and row["failures"] == 1
    assert {serve(pool) for _ in range(3)} == {"POOL_KEY[1]"}
    pool.on_outcome(outcome("POOL_KEY[1]", Signal.CLIENT_ERROR, key_unusable=True, status=403))
    assert not pool.has_usable_key("b")
    assert pool.lease("b") is None
    assert pool.cooling_until("b") is None  # unusable is not cooling: no wait helps


def test_request_errors_and_cancellations_are_not_key_failures() -> None:
    pool, *_ = make_pool()
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.CLIENT_ERROR, status=400))
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.CANCELLED))
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.SERVER_ERROR, status=500))
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.RATE_LIMITED, retry_after_secs=1.0))
    row = pool.status()["b"][0]
    assert (row["requests"], row["successes"], row["failures"], row["rate_limits"]) == (4, 0, 1, 1)


async def test_statistics_persist_in_the_store_and_load_back(tmp_path: Path) -> None:
    clock = FakeClock()
    store = MemoryStore(tmp_path / "state.db", 5.0, clock)
    await store.start()
    writes = WriteBehind()
    pool = KeyPool(resolutions(), store, writes, clock)
    serve(pool, latency_s=0.2)
    serve(pool, Signal.SERVER_ERROR, latency_s=0.4, prompt_tokens=1, completion_tokens=0)
    await writes.drain()
    await store.close()

    reopened = MemoryStore(tmp_path / "state.db", 5.0, clock)
    await reopened.start()
    fresh = KeyPool(resolutions(), reopened, WriteBehind(), clock)
    fresh.load_counters(await reopened.get_counters("keys"))
    rows = {row["ref"]: row for row in fresh.status()["b"]}
    assert rows["POOL_KEY[0]"]["successes"] == 1 and rows["POOL_KEY[0]"]["tokens"] == 30
    assert rows["POOL_KEY[0]"]["avg_latency_ms"] == 200.0
    assert rows["POOL_KEY[1]"]["failures"] == 1 and rows["POOL_KEY[1]"]["tokens"] == 1
    await reopened.close()


async def test_reload_clears_unusable_marks_for_good_and_keeps_statistics() -> None:
    pool, store, writes, _ = make_pool()
    serve(pool)
    pool.on_outcome(outcome("POOL_KEY[1]", Signal.CLIENT_ERROR, key_unusable=True, status=401))
    await writes.drain()
    assert (await store.get_records(UNUSABLE_KIND))["b/POOL_KEY[1]"]["unusable"] is True

    pool.load_resolutions(resolutions())
    await writes.drain()
    # The periodic sync pulls the shared records again: the reload must not be undone.
    pool.apply_remote(await store.get_records(COOLDOWN_KIND),
                      await store.get_records(UNUSABLE_KIND))
    rows = pool.status()["b"]
    assert [row["unusable"] for row in rows] == [False, False]
    assert rows[0]["successes"] == 1 and rows[1]["failures"] == 1


async def test_remote_marks_apply_only_to_the_same_key_value() -> None:
    pool, store, writes, clock = make_pool()
    await store.put_record(UNUSABLE_KIND, "b/POOL_KEY[0]",
                           {"unusable": True, "fp": fingerprint(Secret(K0))})
    await store.put_record(COOLDOWN_KIND, "b/POOL_KEY[1]",
                           {"until": clock.now + 30, "fp": fingerprint(Secret("other-value"))})
    pool.apply_remote(await store.get_records(COOLDOWN_KIND),
                      await store.get_records(UNUSABLE_KIND))
    rows = pool.status()["b"]
    assert rows[0]["unusable"] is True
    assert rows[1]["cooldown_secs"] == 0.0  # recorded for another value of that variable


def test_reload_with_a_new_value_resets_its_cooldown() -> None:
    pool, _, _, _ = make_pool()
    pool.on_outcome(outcome("POOL_KEY[0]", Signal.RATE_LIMITED, retry_after_secs=30.0))
    pool.load_resolutions(resolutions())
    assert pool.status()["b"][0]["cooldown_secs"] == 30.0  # same key: still cooling
    pool.load_resolutions(resolutions(f"sk-a-brand-new-key-9999,{K1}"))
    assert pool.status()["b"][0]["cooldown_secs"] == 0.0


def test_missing_variables_are_listed_with_the_same_row_shape() -> None:
    backend = BackendConfig(name="b", base_url="http://x/v1", api_key_env=("SET_KEY", "GONE"))
    found = resolve_backend_keys(backend, {"SET_KEY": K0}, lambda s, u: None)
    pool = KeyPool({"b": found}, MemoryStore(None), WriteBehind(), FakeClock())
    rows = pool.status()["b"]
    assert rows[1]["ref"] == "GONE" and rows[1]["missing"] is True
    assert set(rows[0]) == set(rows[1])
    assert pool.missing() == {"b": ("GONE",)}


def test_backend_without_keys_is_unusable_and_keyless_backend_is_anonymous() -> None:
    nothing = BackendConfig(name="b", base_url="http://x/v1", api_key_env=("GONE",))
    keyless = BackendConfig(name="local", base_url="http://x/v1")
    pool = KeyPool(
        {"b": resolve_backend_keys(nothing, {}, lambda s, u: None),
         "local": resolve_backend_keys(keyless, {}, lambda s, u: None)},
        MemoryStore(None), WriteBehind(), FakeClock(),
    )
    assert not pool.has_usable_key("b") and pool.available_count("b") == 0
    assert pool.has_usable_key("local") and pool.available_count("local") == 1
    lease = pool.lease("local")
    assert lease is not None and lease.api_key is None
    assert "local" not in pool.status()


def test_no_key_value_in_status_or_reprs() -> None:
    pool, *_ = make_pool()
    lease = pool.lease("b")
    shown = repr(lease) + repr(pool.status()) + repr(pool._backends)  # noqa: SLF001
    for value in (K0, K1):
        assert value not in shown
        assert value[3:-4] not in shown
    assert pool.status()["b"][0]["masked"] == "sk-…aaaa"
