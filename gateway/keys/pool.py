"""Per-backend pools of upstream API keys, leased to the least-loaded usable key.

Leasing: while some key has served nothing yet, keys take turns (round robin) so every key
gets data; after that the key with the lowest token load wins (tokens so far plus, for each
request in flight, that key's average tokens per request), ties to fewer in-flight requests.
A 429 cools a key for its Retry-After (default 60 s); an upstream 401/403 marks it unusable
until the keys are resolved again. A backend that needs no key (`api_key_env` empty, e.g. a
local server) gets one anonymous pooled entry, so its 429 cooldowns are honoured the same way.
Cooling and unusable keys are skipped; a backend whose keys are all cooling leases nothing,
so the model is skipped (the contract's rule).

Invariants: a lease is released exactly once (release is idempotent); key values live only in
`Secret`s and leave this module only through `KeyLease.api_key` for the upstream header.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from gateway.keys.resolve import KeyResolution, ResolvedKey
from gateway.outcome import AttemptOutcome, Signal
from gateway.secrets import Secret, mask
from gateway.store.base import StateStore
from gateway.store.writebehind import WriteBehind

DEFAULT_COOLDOWN_SECS = 60.0
ANONYMOUS_REF = "(no key)"


@dataclass(slots=True)
class PooledKey:
    key: ResolvedKey
    in_flight: int = 0
    requests: int = 0
    successes: int = 0
    failures: int = 0
    rate_limits: int = 0
    tokens: int = 0
    latency_ms_total: float = 0.0
    cooldown_until: float = 0.0
    unusable: bool = False

    def load(self) -> float:
        average = self.tokens / self.requests if self.requests else 0.0
        return self.tokens + self.in_flight * average


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
        on_available: Callable[[str, int], None] | None = None,
    ) -> None:
        self._store = store
        self._writes = writes
        self._clock = clock
        self._on_available = on_available
        self._backends: dict[str, BackendKeys] = {}
        self.load_resolutions(resolutions)

    def load_resolutions(self, resolutions: dict[str, KeyResolution]) -> None:
        """(Re)build the pools: at start and on reload, never per request."""
        previous = self._backends
        self._backends = {}
        for name, resolution in resolutions.items():
            old = {p.key.ref: p for p in previous.get(name, BackendKeys([], (), False)).keys}
            needs_key = bool(resolution.keys or resolution.missing)
            keys = resolution.keys if needs_key else (_anonymous(),)
            pooled = [_carry_over(old.get(k.ref), k) for k in keys]
            self._backends[name] = BackendKeys(pooled, resolution.missing, needs_key)
        for name in self._backends:
            self._report_available(name)

    def has_usable_key(self, backend: str) -> bool:
        return any(not p.unusable for p in self._backends[backend].keys)

    def lease(self, backend: str, exclude: frozenset[str] = frozenset()) -> KeyLease | None:
        pool = self._backends[backend]
        now = self._clock()
        ready = [
            p for p in pool.keys
            if not p.unusable and p.cooldown_until <= now and p.key.ref not in exclude
        ]
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
        deltas = {"requests": 1.0, "tokens": float(tokens)}
        pooled.requests += 1
        pooled.tokens += tokens
        pooled.latency_ms_total += outcome.latency_s * 1000
        deltas["latency_ms_total"] = outcome.latency_s * 1000
        if outcome.signal is Signal.SUCCESS:
            pooled.successes += 1
            deltas["successes"] = 1.0
        elif outcome.signal is Signal.RATE_LIMITED:
            pooled.rate_limits += 1
            deltas["rate_limits"] = 1.0
            wait = outcome.retry_after_secs
            until = self._clock() + (DEFAULT_COOLDOWN_SECS if wait is None else wait)
            pooled.cooldown_until = max(pooled.cooldown_until, until)
            self._share("key_cooldown", outcome.backend, pooled, {"until": pooled.cooldown_until})
        elif outcome.signal is not Signal.CLIENT_ERROR or outcome.key_unusable:
            pooled.failures += 1
            deltas["failures"] = 1.0
        if outcome.key_unusable and not pooled.unusable:
            pooled.unusable = True
            self._share("key_unusable", outcome.backend, pooled, {"unusable": True})
        name = f"{outcome.backend}/{pooled.key.ref}"
        self._writes.submit(lambda: self._store.add_counters("keys", name, deltas))
        self._report_available(outcome.backend)

    def apply_remote(self, cooldowns: dict[str, dict[str, object]], unusable: set[str]) -> None:
        """Adopt cooldowns and unusable marks other replicas recorded (names `backend/ref`)."""
        for backend, pool in self._backends.items():
            for pooled in pool.keys:
                name = f"{backend}/{pooled.key.ref}"
                record = cooldowns.get(name)
                if record is not None:
                    until = float(record.get("until", 0.0))  # type: ignore[arg-type]
                    pooled.cooldown_until = max(pooled.cooldown_until, until)
                if name in unusable:
                    pooled.unusable = True
            self._report_available(backend)

    def load_counters(self, counters: dict[str, dict[str, float]]) -> None:
        for backend, pool in self._backends.items():
            for pooled in pool.keys:
                saved = counters.get(f"{backend}/{pooled.key.ref}")
                if saved is None:
                    continue
                pooled.requests = int(saved.get("requests", 0))
                pooled.successes = int(saved.get("successes", 0))
                pooled.failures = int(saved.get("failures", 0))
                pooled.rate_limits = int(saved.get("rate_limits", 0))
                pooled.tokens = int(saved.get("tokens", 0))
                pooled.latency_ms_total = float(saved.get("latency_ms_total", 0.0))

    def status(self) -> dict[str, list[dict[str, object]]]:
        now = self._clock()
        result: dict[str, list[dict[str, object]]] = {}
        for backend, pool in self._backends.items():
            if not pool.needs_key:
                continue
            rows: list[dict[str, object]] = [_status_row(p, now) for p in pool.keys]
            rows += [{"ref": name, "masked": None, "available": False, "missing": True}
                     for name in pool.missing]
            result[backend] = rows
        return result

    def available_count(self, backend: str) -> int:
        now = self._clock()
        return sum(
            1 for p in self._backends[backend].keys
            if not p.unusable and p.cooldown_until <= now
        )

    def _find(self, backend: str, ref: str | None) -> PooledKey | None:
        pool = self._backends.get(backend)
        if pool is None or ref is None:
            return None
        return next((p for p in pool.keys if p.key.ref == ref), None)

    def _share(self, kind: str, backend: str, pooled: PooledKey, value: dict[str, object]) -> None:
        name = f"{backend}/{pooled.key.ref}"
        ttl = max(1.0, pooled.cooldown_until - self._clock()) if kind == "key_cooldown" else None
        self._writes.submit(lambda: self._store.put_record(kind, name, value, ttl))

    def _report_available(self, backend: str) -> None:
        if self._on_available is not None:
            self._on_available(backend, self.available_count(backend))


def _anonymous() -> ResolvedKey:
    return ResolvedKey(ref=ANONYMOUS_REF, secret=Secret(""), env_var="")


def _carry_over(old: PooledKey | None, key: ResolvedKey) -> PooledKey:
    if old is None or old.key.secret.reveal() != key.secret.reveal():
        return PooledKey(key)
    old.key = key
    old.unusable = False
    return old


def _status_row(p: PooledKey, now: float) -> dict[str, object]:
    cooldown = max(0.0, p.cooldown_until - now)
    return {
        "ref": p.key.ref,
        "masked": mask(p.key.secret.reveal()),
        "available": not p.unusable and cooldown == 0.0,
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
