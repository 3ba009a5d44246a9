"""Per-backend pools of upstream API keys, leased to the least-loaded usable key.

Leasing: while some key has served nothing yet, keys take turns (round robin) so every key
gets data; after that the key with the lowest token load wins (tokens so far plus, for each
request in flight, that key's average tokens per request), ties to fewer in-flight requests.
A 429 cools a key for its Retry-After (default 60 s); an upstream 401/403 marks it unusable
until the keys are resolved again (reload). A backend that needs no key (`api_key_env` empty,
e.g. a local server) gets one anonymous pooled entry, so its 429 cooldowns are honoured the
same way. Cooling and unusable keys are skipped; a backend whose keys are all cooling leases
nothing, so the model is skipped (the contract's rule).

Cooldowns and unusable marks are shared through the store (records named `backend/ref`) with
a fingerprint of the key value, so a mark recorded for an old value of a variable never sticks
to the new value after a reload, and a reload's "try this key again" overwrites the shared mark
instead of being undone by the next sync.

Invariants: a lease is released exactly once (release is idempotent); key values live only in
`Secret`s and leave this module only through `KeyLease.api_key` for the upstream header (the
fingerprint is a truncated SHA-256, which does not reveal the key).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.keys.resolve import KeyResolution, ResolvedKey
from gateway.outcome import AttemptOutcome, Signal
from gateway.secrets import Secret, mask, sha256_hex
from gateway.store.base import StateStore
from gateway.store.writebehind import WriteBehind

DEFAULT_COOLDOWN_SECS = 60.0
ANONYMOUS_REF = "(no key)"
COOLDOWN_KIND = "key_cooldown"
UNUSABLE_KIND = "key_unusable"
COUNTER_KIND = "keys"
_FINGERPRINT_CHARS = 16

Record = dict[str, object]


def fingerprint(secret: Secret) -> str:
    """Tells two values of one key variable apart in shared records without revealing them."""
    return sha256_hex(secret)[:_FINGERPRINT_CHARS]


@dataclass(slots=True)
class PooledKey:
    key: ResolvedKey
    fp: str = ""
    in_flight: int = 0
    requests: int = 0
    successes: int = 0
    failures: int = 0
    rate_limits: int = 0
    tokens: int = 0
    latency_ms_total: float = 0.0
    cooldown_until: float = 0.0
    unusable: bool = False

    def __post_init__(self) -> None:
        self.fp = fingerprint(self.key.secret)

    def load(self) -> float:
        average = self.tokens / self.requests if self.requests else 0.0
        return self.tokens + self.in_flight * average

    def ready(self, now: float) -> bool:
        return not self.unusable and self.cooldown_until <= now


@dataclass(slots=True)
class KeyLease:
    backend: str
    ref: str | None
    api_key: str | None = field(repr=False)
    _pooled: PooledKey | None = field(default=None, repr=False)
    _released: bool = False

    def release(self) -> None:
        if self._released:
            return
        self._released = True
        if self._pooled is not None:
            self._pooled.in_flight -= 1


@dataclass(slots=True)
class BackendKeys:
    keys: list[PooledKey]
    missing: tuple[str, ...]
    needs_key: bool
    turn: int = 0


class KeyPool:
    def __init__(
        self,
        resolutions: dict[str, KeyResolution],
        store: StateStore,
        writes: WriteBehind,
        clock: Callable[[], float],
    ) -> None:
        self._store = store
        self._writes = writes
        self._clock = clock
        self._backends: dict[str, BackendKeys] = {}
        self.load_resolutions(resolutions)

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self._backends)

    def load_resolutions(self, resolutions: dict[str, KeyResolution]) -> None:
        """(Re)build the pools: at start and on reload, never per request.

        A key keeps its statistics and in-flight count by `ref` (the store counts by ref too);
        its unusable mark is cleared, here and in the store, because a reload is the operator
        saying "try the keys again"; a cooldown survives unless the key's value changed.
        """
        previous = self._backends
        self._backends = {}
        for name, resolution in resolutions.items():
            old = {p.key.ref: p for p in previous.get(name, BackendKeys([], (), False)).keys}
            needs_key = bool(resolution.keys or resolution.missing)
            keys = resolution.keys if needs_key else (_anonymous(),)
            pooled = [self._carry_over(name, old.get(k.ref), k) for k in keys]
            self._backends[name] = BackendKeys(pooled, resolution.missing, needs_key)

    def _carry_over(self, backend: str, old: PooledKey | None, key: ResolvedKey) -> PooledKey:
        if old is None:
            return PooledKey(key)
        changed = old.fp != fingerprint(key.secret)
        old.key = key
        old.fp = fingerprint(key.secret)
        if changed:
            old.cooldown_until = 0.0
        if old.unusable or changed:
            old.unusable = False
            self._share(UNUSABLE_KIND, backend, old, {"unusable": False})
        return old

    def has_usable_key(self, backend: str) -> bool:
        return any(not p.unusable for p in self._backends[backend].keys)

    def lease(self, backend: str, exclude: frozenset[str] = frozenset()) -> KeyLease | None:
        pool = self._backends[backend]
        now = self._clock()
        ready = [p for p in pool.keys if p.ready(now) and p.key.ref not in exclude]
        if not ready:
            return None
        cold = [p for p in ready if p.requests == 0 and p.in_flight == 0]
        if cold:
            chosen = cold[pool.turn % len(cold)]
            pool.turn += 1
        else:
            chosen = min(ready, key=lambda p: (p.load(), p.in_flight))
        chosen.in_flight += 1
        api_key = chosen.key.secret.reveal() if pool.needs_key else None
        return KeyLease(backend, chosen.key.ref, api_key, chosen)

    def cooling_until(self, backend: str) -> float | None:
        """When the earliest cooldown ends, if every usable key of the backend is cooling."""
        pool = self._backends[backend]
        usable = [p for p in pool.keys if not p.unusable]
        now = self._clock()
        if not usable or any(p.cooldown_until <= now for p in usable):
            return None
        return min(p.cooldown_until for p in usable)

    def on_outcome(self, outcome: AttemptOutcome) -> None:
        pooled = self._find(outcome.backend, outcome.key_ref)
        if pooled is None:
            return
        tokens = outcome.prompt_tokens + outcome.completion_tokens
        latency_ms = outcome.latency_s * 1000
        deltas = {"requests": 1.0, "tokens": float(tokens), "latency_ms_total": latency_ms}
        pooled.requests += 1
        pooled.tokens += tokens
        pooled.latency_ms_total += latency_ms
        signal = outcome.signal
        if signal is Signal.SUCCESS:
            pooled.successes += 1
            deltas["successes"] = 1.0
        elif signal is Signal.RATE_LIMITED:
            pooled.rate_limits += 1
            deltas["rate_limits"] = 1.0
            wait = outcome.retry_after_secs
            until = self._clock() + (DEFAULT_COOLDOWN_SECS if wait is None else wait)
            pooled.cooldown_until = max(pooled.cooldown_until, until)
            self._share(COOLDOWN_KIND, outcome.backend, pooled, {"until": pooled.cooldown_until})
        elif outcome.key_unusable or signal not in (Signal.CLIENT_ERROR, Signal.CANCELLED):
            # A request's own 4xx and a client that went away say nothing about the key.
            pooled.failures += 1
            deltas["failures"] = 1.0
        if outcome.key_unusable and not pooled.unusable:
            pooled.unusable = True
            self._share(UNUSABLE_KIND, outcome.backend, pooled, {"unusable": True})
        name = _name(outcome.backend, pooled)
        self._writes.submit(lambda: self._store.add_counters(COUNTER_KIND, name, deltas))

    def apply_remote(self, cooldowns: dict[str, Record], unusable: dict[str, Record]) -> None:
        """Adopt cooldowns and unusable marks other replicas recorded for the same key value."""
        for backend, pool in self._backends.items():
            for pooled in pool.keys:
                name = _name(backend, pooled)
                cooldown = cooldowns.get(name)
                if cooldown is not None and _same_key(cooldown, pooled):
                    until = float(cooldown.get("until", 0.0))  # type: ignore[arg-type]
                    pooled.cooldown_until = max(pooled.cooldown_until, until)
                mark = unusable.get(name)
                if mark is not None and mark.get("unusable") is True and _same_key(mark, pooled):
                    pooled.unusable = True

    def load_counters(self, counters: dict[str, dict[str, float]]) -> None:
        for backend, pool in self._backends.items():
            for pooled in pool.keys:
                saved = counters.get(_name(backend, pooled))
                if saved is None:
                    continue
                pooled.requests = int(saved.get("requests", 0))
                pooled.successes = int(saved.get("successes", 0))
                pooled.failures = int(saved.get("failures", 0))
                pooled.rate_limits = int(saved.get("rate_limits", 0))
                pooled.tokens = int(saved.get("tokens", 0))
                pooled.latency_ms_total = float(saved.get("latency_ms_total", 0.0))

    def merge_counters(self, counters: dict[str, dict[str, float]]) -> None:
        """Adopt the cluster's key statistics (every replica's increments, summed in the store)
        on each sync, so load balancing and /admin/status see the load of all replicas. Each
        counter only grows: the larger of the local value (which may hold increments still on
        their way to the store) and the shared one is the newer, and never above the truth."""
        for backend, pool in self._backends.items():
            for pooled in pool.keys:
                shared = counters.get(_name(backend, pooled))
                if shared is None:
                    continue
                pooled.requests = max(pooled.requests, int(shared.get("requests", 0)))
                pooled.successes = max(pooled.successes, int(shared.get("successes", 0)))
                pooled.failures = max(pooled.failures, int(shared.get("failures", 0)))
                pooled.rate_limits = max(pooled.rate_limits, int(shared.get("rate_limits", 0)))
                pooled.tokens = max(pooled.tokens, int(shared.get("tokens", 0)))
                pooled.latency_ms_total = max(
                    pooled.latency_ms_total, float(shared.get("latency_ms_total", 0.0))
                )

    def status(self) -> dict[str, list[dict[str, object]]]:
        """Per backend that needs keys: one row per key (masked) and per missing variable."""
        now = self._clock()
        result: dict[str, list[dict[str, object]]] = {}
        for backend, pool in self._backends.items():
            if not pool.needs_key:
                continue
            rows: list[dict[str, object]] = [_status_row(p, now) for p in pool.keys]
            rows += [_missing_row(variable) for variable in pool.missing]
            result[backend] = rows
        return result

    def missing(self) -> dict[str, tuple[str, ...]]:
        """Key variables that resolved to nothing, per backend that has any."""
        return {b: pool.missing for b, pool in self._backends.items() if pool.missing}

    def available_count(self, backend: str) -> int:
        """Resolved keys neither cooling nor unusable, now (the gauge reads this at scrape).

        A backend that needs no key counts its anonymous entry, so "0" always means "this
        backend cannot be served right now", whatever kind of backend it is.
        """
        pool = self._backends.get(backend)
        if pool is None:
            return 0
        now = self._clock()
        return sum(1 for p in pool.keys if p.ready(now))

    def _find(self, backend: str, ref: str | None) -> PooledKey | None:
        pool = self._backends.get(backend)
        if pool is None or ref is None:
            return None
        return next((p for p in pool.keys if p.key.ref == ref), None)

    def _share(self, kind: str, backend: str, pooled: PooledKey, value: Record) -> None:
        name = _name(backend, pooled)
        record = {**value, "fp": pooled.fp}
        ttl = max(1.0, pooled.cooldown_until - self._clock()) if kind == COOLDOWN_KIND else None
        self._writes.submit(lambda: self._store.put_record(kind, name, record, ttl))


def _name(backend: str, pooled: PooledKey) -> str:
    return f"{backend}/{pooled.key.ref}"


def _same_key(record: Record, pooled: PooledKey) -> bool:
    # Records written before fingerprints existed carry none: they apply to the ref.
    fp = record.get("fp")
    return fp is None or fp == pooled.fp


def _anonymous() -> ResolvedKey:
    return ResolvedKey(ref=ANONYMOUS_REF, secret=Secret(""), env_var="")


def _status_row(p: PooledKey, now: float) -> dict[str, object]:
    cooldown = max(0.0, p.cooldown_until - now)
    return {
        "ref": p.key.ref,
        "env": p.key.env_var,
        "source": p.key.source,
        "masked": mask(p.key.secret.reveal()),
        "available": p.ready(now),
        "missing": False,
        "unusable": p.unusable,
        "cooldown_secs": round(cooldown, 3),
        "in_flight": p.in_flight,
        "requests": p.requests,
        "successes": p.successes,
        "failures": p.failures,
        "rate_limits": p.rate_limits,
        "tokens": p.tokens,
        "avg_latency_ms": round(p.latency_ms_total / p.requests, 3) if p.requests else 0.0,
    }


def _missing_row(variable: str) -> dict[str, object]:
    """Same shape as a key's row, so a dashboard needs no special case for a missing key."""
    return {
        "ref": variable, "env": variable, "source": None, "masked": None, "available": False,
        "missing": True, "unusable": False, "cooldown_secs": 0.0, "in_flight": 0,
        "requests": 0, "successes": 0, "failures": 0, "rate_limits": 0, "tokens": 0,
        "avg_latency_ms": 0.0,
    }
