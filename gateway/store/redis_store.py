"""The shared state store on Redis (redis-py asyncio client, one blocking connection pool).

Key layout (every key starts with `prefix`, default "gateway:"):

    {p}spend:{scope}:hourly       hash   minute bucket id -> micro-dollars   (PEXPIRE 62 min)
    {p}spend:{scope}:daily        hash   hour bucket id   -> micro-dollars   (PEXPIRE 25 h 1 min)
    {p}rec:{kind}:{name}          string orjson record                      (PX ttl, if any)
    {p}recidx:{kind}              zset   name -> expiry ms on Redis's clock (+inf: none)
    {p}cnt:{kind}                 hash   orjson [name, field] -> float
    {p}claim:{name}               string holder                             (PX ttl)

Invariants:
- `reserve_spend` is one Lua script (EVALSHA, cached via `register_script`): it sums the live
  buckets of every check, compares, and only then increments the current buckets of every
  scope, so racing replicas can never pass a limit together. Bucket ids come from the
  caller's `now` (see windows.py); key expiries (a window's retention plus a minute) only
  let idle windows vanish.
- Record expiry follows Redis's clock (PX and the index score use the server's TIME), so a
  record and its index entry expire together; the index prunes itself on every put.
- Every connection failure or timeout surfaces as `StoreUnavailable`, and only those: a
  script or type error is a bug and propagates. Socket timeouts are short (0.5 s) so a dead
  Redis fails fast, with one immediate retry that replaces a pooled socket killed by a
  Redis restart.
- `kind` must not contain ':' (it would make record keys ambiguous); names and scopes may.
- Single Redis node or primary (Sentinel-style): the scripts touch several keys, which a
  Redis Cluster would need in one hash slot.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import orjson
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry  # the asyncio one: the sync Retry never retries a coroutine
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError, ReadOnlyError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gateway.store import windows
from gateway.store.base import SpendCheck, SpendTotals, StoreUnavailable, Window
from gateway.store.redis_scripts import CLAIM, PUT_RECORD, RELEASE, RESERVE

# Besides dead sockets: a replica demoted mid-failover answers READONLY and a full Redis
# (maxmemory, noeviction) answers OOM; both mean "cannot take our writes now".
_UNAVAILABLE = (RedisConnectionError, RedisTimeoutError, ReadOnlyError, OutOfMemoryError, OSError)
_EXPIRY_MARGIN_SECS = 60  # a key outlives its last countable bucket by this, against skew


def _safe_url(url: str) -> str:
    """The URL without credentials, fit for a log line or an error message."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


class _Keys:
    def __init__(self, prefix: str) -> None:
        self.prefix = prefix

    def spend(self, scope: str, window: Window) -> str:
        return f"{self.prefix}spend:{scope}:{window.value}"

    def record(self, kind: str, name: str) -> str:
        if ":" in kind:
            raise ValueError(f"record kind {kind!r} must not contain ':'")
        return f"{self.prefix}rec:{kind}:{name}"

    def record_index(self, kind: str) -> str:
        return f"{self.prefix}recidx:{kind}"

    def counters(self, kind: str) -> str:
        return f"{self.prefix}cnt:{kind}"

    def claim(self, name: str) -> str:
        return f"{self.prefix}claim:{name}"


def _ttl_ms(window: Window) -> int:
    return (windows.spec(window).retention_secs + _EXPIRY_MARGIN_SECS) * 1000


class RedisStore:
    """StateStore on one Redis; see the module docstring for the key layout and guarantees."""

    def __init__(
        self,
        url: str,
        prefix: str = "gateway:",
        *,
        socket_timeout_secs: float = 0.5,
        connect_timeout_secs: float = 0.5,
        max_connections: int = 64,
        pool_timeout_secs: float = 5.0,
    ) -> None:
        self._url = url
        self.safe_url = _safe_url(url)
        self._keys = _Keys(prefix)
        self._pool_options = {
            "socket_timeout": socket_timeout_secs,
            "socket_connect_timeout": connect_timeout_secs,
            "max_connections": max_connections,
            "timeout": pool_timeout_secs,
            "retry": Retry(NoBackoff(), 1),
        }
        self._client: aioredis.Redis | None = None

    # -- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Build the pool and scripts. Connecting is lazy, so this never fails on a down
        Redis; `ping()` says whether it answers."""
        pool = aioredis.BlockingConnectionPool.from_url(self._url, **self._pool_options)
        client = aioredis.Redis(connection_pool=pool)
        self._client = client
        self._reserve = client.register_script(RESERVE)
        self._put_record = client.register_script(PUT_RECORD)
        self._claim = client.register_script(CLAIM)
        self._release = client.register_script(RELEASE)

    async def close(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            await self._client.connection_pool.disconnect()
            self._client = None

    async def ping(self) -> bool:
        try:
            with self._mapped():
                return bool(await self._redis.ping())
        except StoreUnavailable:
            return False

    @property
    def _redis(self) -> aioredis.Redis:
        if self._client is None:
            raise RuntimeError("RedisStore used before start()")
        return self._client

    @contextlib.contextmanager
    def _mapped(self) -> Iterator[None]:
        """The one place where redis-py's connection errors become StoreUnavailable."""
        try:
            yield
        except _UNAVAILABLE as exc:
            raise StoreUnavailable(f"redis at {self.safe_url}: {exc}") from exc

    # -- spend ------------------------------------------------------------------------------

    async def reserve_spend(
        self, scopes: tuple[str, ...], checks: tuple[SpendCheck, ...], micros: int, now: float
    ) -> SpendCheck | None:
        if micros < 0:
            raise ValueError("a reservation cannot be negative; refund with adjust_spend")
        keys: list[str] = []
        index: dict[str, int] = {}

        def key_no(scope: str, window: Window) -> int:  # 1-based, as Lua's KEYS
            key = self._keys.spend(scope, window)
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
            return index[key]

        args: list[int | str] = [micros, len(checks)]
        for check in checks:
            oldest = windows.oldest_live_bucket(check.window, now)
            args += [key_no(check.scope, check.window), oldest, check.limit_micros]
        args.append(len(scopes) * len(Window))
        for scope in scopes:
            for window in Window:
                bucket = windows.bucket_id(window, now)
                oldest = windows.oldest_live_bucket(window, now)
                args += [key_no(scope, window), bucket, oldest, _ttl_ms(window)]
        with self._mapped():
            failed = int(await self._reserve(keys=keys, args=args))
        return None if failed == 0 else checks[failed - 1]

    async def adjust_spend(self, scopes: tuple[str, ...], delta_micros: int, at: float) -> None:
        await self.apply_spend({(scope, at): delta_micros for scope in scopes})

    async def apply_spend(self, deltas: dict[tuple[str, float], int]) -> None:
        """Add each (scope, at) -> micro-dollars to the buckets holding `at`, one transaction."""
        if not deltas:
            return
        pipe = self._redis.pipeline(transaction=True)
        for (scope, at), delta in deltas.items():
            for window in Window:
                key = self._keys.spend(scope, window)
                pipe.hincrby(key, str(windows.bucket_id(window, at)), delta)
                pipe.pexpire(key, _ttl_ms(window))
        with self._mapped():
            await pipe.execute()

    async def spend_totals(self, scope: str, now: float) -> SpendTotals:
        pipe = self._redis.pipeline(transaction=False)
        for window in (Window.HOURLY, Window.DAILY):
            pipe.hgetall(self._keys.spend(scope, window))
        with self._mapped():
            hourly, daily = await pipe.execute()
        return SpendTotals(
            hourly_micros=windows.window_total(_int_map(hourly), Window.HOURLY, now),
            daily_micros=windows.window_total(_int_map(daily), Window.DAILY, now),
        )

    # -- records ----------------------------------------------------------------------------

    async def put_record(
        self, kind: str, name: str, value: dict[str, object], ttl_secs: float | None = None
    ) -> None:
        keys, args = self._record_call(kind, name, value, ttl_secs)
        with self._mapped():
            await self._put_record(keys=keys, args=args)

    def _record_call(
        self, kind: str, name: str, value: dict[str, object], ttl_secs: float | None
    ) -> tuple[list[str], list[str | bytes]]:
        ttl = "" if ttl_secs is None else str(max(1, round(ttl_secs * 1000)))
        keys = [self._keys.record(kind, name), self._keys.record_index(kind)]
        return keys, [name, orjson.dumps(value), ttl]

    async def apply_records(
        self, records: dict[tuple[str, str], tuple[dict[str, object], float | None]]
    ) -> None:
        """Put each (kind, name) -> (value, TTL secs or None), pipelined in one round trip."""
        if not records:
            return
        pipe = self._redis.pipeline(transaction=False)
        for (kind, name), (value, ttl_secs) in records.items():
            keys, args = self._record_call(kind, name, value, ttl_secs)
            await self._put_record(keys=keys, args=args, client=pipe)  # queued, not sent
        with self._mapped():
            await pipe.execute()

    async def get_record(self, kind: str, name: str) -> dict[str, object] | None:
        with self._mapped():
            raw = await self._redis.get(self._keys.record(kind, name))
        return None if raw is None else orjson.loads(raw)  # type: ignore[no-any-return]

    async def get_records(self, kind: str) -> dict[str, dict[str, object]]:
        return {name: value for name, (value, _) in (await self.records_with_ttl(kind)).items()}

    async def records_with_ttl(
        self, kind: str
    ) -> dict[str, tuple[dict[str, object], float | None]]:
        """Live records of `kind` with their remaining TTL in seconds (None = no expiry)."""
        with self._mapped():
            raw_names = await self._redis.zrange(self._keys.record_index(kind), 0, -1)
            names = [_text(raw) for raw in raw_names]
            if not names:
                return {}
            pipe = self._redis.pipeline(transaction=False)
            for name in names:
                pipe.get(self._keys.record(kind, name))
                pipe.pttl(self._keys.record(kind, name))
            replies = await pipe.execute()
        found: dict[str, tuple[dict[str, object], float | None]] = {}
        for i, name in enumerate(names):
            raw, pttl = replies[2 * i], replies[2 * i + 1]
            if raw is not None:  # gone: expired, its index entry not yet pruned
                found[name] = (orjson.loads(raw), None if pttl < 0 else pttl / 1000)
        return found

    # -- counters ---------------------------------------------------------------------------

    async def add_counters(self, kind: str, name: str, deltas: dict[str, float]) -> None:
        await self.apply_counters({(kind, name): deltas})

    async def apply_counters(self, deltas: dict[tuple[str, str], dict[str, float]]) -> None:
        """Increment every (kind, name) field by its delta, in one transaction."""
        pipe = self._redis.pipeline(transaction=True)
        queued = 0
        for (kind, name), fields in deltas.items():
            for field_name, delta in fields.items():
                pipe.hincrbyfloat(
                    self._keys.counters(kind), _counter_field(name, field_name), delta
                )
                queued += 1
        if not queued:
            return
        with self._mapped():
            await pipe.execute()

    async def get_counters(self, kind: str) -> dict[str, dict[str, float]]:
        with self._mapped():
            raw = await self._redis.hgetall(self._keys.counters(kind))
        counters: dict[str, dict[str, float]] = {}
        for packed, value in raw.items():
            name, field_name = orjson.loads(packed)
            counters.setdefault(name, {})[field_name] = float(value)
        return counters

    # -- claims -----------------------------------------------------------------------------

    async def claim(self, name: str, holder: str, ttl_secs: float) -> bool:
        ttl_ms = max(1, round(ttl_secs * 1000))
        with self._mapped():
            return bool(await self._claim(keys=[self._keys.claim(name)], args=[holder, ttl_ms]))

    async def release(self, name: str, holder: str) -> None:
        with self._mapped():
            await self._release(keys=[self._keys.claim(name)], args=[holder])


def _text(raw: object) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def _int_map(raw: dict[bytes, bytes]) -> dict[int, int]:
    return {int(bucket): int(micros) for bucket, micros in raw.items()}


def _counter_field(name: str, field_name: str) -> bytes:
    # A JSON pair cannot be ambiguous, whatever characters a name holds.
    return orjson.dumps([name, field_name])
