"""After a Redis restart, pooled sockets are dead: the first command on each must be retried on
a fresh connection, not surface as an outage (which would refuse spend-limited requests and
hold /readyz at 503 for as many seconds as the pool held sockets)."""

from __future__ import annotations

import asyncio
import time

from gateway.store.base import SpendCheck, Window
from gateway.store.redis_store import RedisStore
from tests.redis_server import running_redis


async def test_commands_after_a_restart_replace_dead_pooled_sockets() -> None:
    with running_redis() as server:
        store = RedisStore(server.url, "reconnect:")
        await store.start()
        check = SpendCheck("global", Window.HOURLY, 10**9)
        # Several connections in the pool at once, all idle when Redis dies.
        await asyncio.gather(*(store.reserve_spend(("global",), (check,), 1, time.time())
                               for _ in range(8)))
        server.restart()
        # Each call below takes one of the dead sockets first; none may fail for it.
        assert [await store.ping() for _ in range(4)] == [True] * 4
        for _ in range(4):
            assert await store.reserve_spend(("global",), (check,), 1, time.time()) is None
        assert (await store.spend_totals("global", time.time())).hourly_micros == 4
        await store.close()
