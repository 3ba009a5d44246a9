"""RedisStore specifics: key layout under the prefix, failing fast, script cache recovery."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from gateway.store.base import SpendCheck, SpendTotals, StoreUnavailable, Window
from gateway.store.redis_store import RedisStore
from tests.redis_server import RedisServer, free_port

T0 = 1_700_000_070.0


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
    yield client
    await client.aclose()


@pytest.fixture
async def store(redis_server: RedisServer, prefix: str) -> AsyncIterator[RedisStore]:
    redis_store = RedisStore(redis_server.url, prefix)
    await redis_store.start()
    yield redis_store
    await redis_store.close()


async def test_every_key_lives_under_the_prefix(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    before = set(await raw.keys("*"))
    check = SpendCheck("client:a", Window.DAILY, 10_000)
    await store.reserve_spend(("global", "client:a"), (check,), 10, T0)
    await store.adjust_spend(("global",), 5, T0)
    await store.put_record("breaker", "m", {"s": 1}, ttl_secs=30)
    await store.put_record("breaker", "n", {"s": 2})
    await store.add_counters("keys", "K", {"requests": 1})
    await store.claim("probe:m", "me", 30)
    created = set(await raw.keys("*")) - before
    assert created == {
        f"{prefix}spend:global:hourly",
        f"{prefix}spend:global:daily",
        f"{prefix}spend:client:a:hourly",
        f"{prefix}spend:client:a:daily",
        f"{prefix}rec:breaker:m",
        f"{prefix}rec:breaker:n",
        f"{prefix}recidx:breaker",
        f"{prefix}cnt:keys",
        f"{prefix}claim:probe:m",
    }
    assert 0 < await raw.pttl(f"{prefix}spend:global:hourly") <= 62 * 60_000
    assert 0 < await raw.pttl(f"{prefix}rec:breaker:m") <= 30_000
    assert await raw.pttl(f"{prefix}rec:breaker:n") == -1


async def test_prefixes_keep_gateways_apart(redis_server: RedisServer, store: RedisStore) -> None:
    other = RedisStore(redis_server.url, "other-gateway:")
    await other.start()
    await store.put_record("breaker", "m", {"mine": True})
    await store.adjust_spend(("global",), 100, T0)
    assert await other.get_record("breaker", "m") is None
    assert await other.spend_totals("global", T0) == SpendTotals(0, 0)
    await other.close()


async def test_stale_buckets_are_pruned_on_write(
    store: RedisStore, raw: aioredis.Redis, prefix: str
) -> None:
    for minute in range(150):
        await store.reserve_spend(("global",), (), 1, T0 + minute * 60)
    assert await raw.hlen(f"{prefix}spend:global:hourly") == 61
    assert (await store.spend_totals("global", T0 + 149 * 60)).hourly_micros == 61


async def test_a_dead_redis_fails_fast_as_store_unavailable() -> None:
    store = RedisStore(f"redis://:s3cret-pw@127.0.0.1:{free_port()}/0", "x:")
    await store.start()  # lazy: does not fail
    assert await store.ping() is False
    started = time.monotonic()
    with pytest.raises(StoreUnavailable) as caught:
        await store.reserve_spend(("global",), (), 1, T0)
    assert time.monotonic() - started < 1.5
    assert "s3cret-pw" not in str(caught.value)
    for call in (
        store.get_record("k", "n"),
        store.put_record("k", "n", {}),
        store.add_counters("k", "n", {"x": 1}),
        store.get_counters("k"),
        store.claim("c", "me", 1),
        store.spend_totals("global", T0),
    ):
        with pytest.raises(StoreUnavailable):
            await call
    await store.close()


async def test_scripts_are_reloaded_after_the_cache_is_flushed(
    store: RedisStore, raw: aioredis.Redis
) -> None:
    check = SpendCheck("global", Window.HOURLY, 100)
    assert await store.reserve_spend(("global",), (check,), 60, T0) is None
    await raw.script_flush()  # what a Redis restart does to EVALSHA
    assert await store.reserve_spend(("global",), (check,), 60, T0) == check
    assert await store.claim("p", "me", 5) is True


async def test_record_kinds_must_not_contain_a_colon(store: RedisStore) -> None:
    with pytest.raises(ValueError, match="must not contain"):
        await store.put_record("a:b", "n", {})


async def test_large_amounts_stay_exact(store: RedisStore) -> None:
    big = 4_000_000_000_000_000  # 4e15 micro-dollars, beyond what "%.14g" would print exactly
    check = SpendCheck("global", Window.DAILY, 2 * big)
    assert await store.reserve_spend(("global",), (check,), big, T0) is None
    assert await store.reserve_spend(("global",), (check,), big + 1, T0) == check
    assert await store.spend_totals("global", T0) == SpendTotals(big, big)
