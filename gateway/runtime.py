"""Runtime: builds every long-lived component once, wires the outcome bus, runs the sync loop.

Start order matters: the store loads what was persisted before anything reads it; key
counters, breaker states and learned statistics are then loaded from it, and priors seed only
models that have no observed calls. The sync loop pushes this replica's statistic increments to
the store and pulls what other replicas recorded (breakers, cooldowns, statistics, key
counters) every SYNC_INTERVAL_SECS on a fixed cadence; with the
memory store that round trip is local and only feeds the periodic snapshot. Stop drains queued
writes and closes the store, which persists its snapshot.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable, Mapping

from fastapi import FastAPI

from gateway.api.auth import Authenticator
from gateway.config.models import GatewayConfig
from gateway.feedback import FeedbackDesk
from gateway.keys.pool import KeyPool
from gateway.keys.reload import resolve_all, warn_missing
from gateway.learning import Learning
from gateway.metrics import Metrics
from gateway.outcome import AttemptOutcome, OutcomeBus, Signal
from gateway.requestlog import RequestLogger
from gateway.resilience.breaker import GAUGE_VALUE, BreakerBoard, CircuitState
from gateway.resilience.failover_log import FailoverLog
from gateway.spend.guard import SpendGuard
from gateway.state import AppState
from gateway.store.factory import create_store, store_is_healthy
from gateway.store.writebehind import WriteBehind
from gateway.upstream.base import Backend
from gateway.upstream.openai import OpenAIBackend

log = logging.getLogger("gateway")

SYNC_INTERVAL_SECS = 1.0


class Runtime:
    def __init__(
        self,
        state: AppState,
        auth: Authenticator,
        learning: Learning,
        feedback: FeedbackDesk,
        env: Mapping[str, str],
    ) -> None:
        self.state = state
        self.auth = auth
        self.learning = learning
        self.feedback = feedback
        self.env = env
        self._sync_task: asyncio.Task[None] | None = None

    @classmethod
    async def start(
        cls,
        config: GatewayConfig,
        env: Mapping[str, str],
        clock: Callable[[], float],
        metrics: Metrics,
    ) -> Runtime:
        store = create_store(config.state, clock)
        await store.start()
        writes = WriteBehind()
        writes.start()
        bus = OutcomeBus()

        def set_circuit(model: str, circuit: CircuitState) -> None:
            metrics.circuit.labels(model).set(GAUGE_VALUE[circuit])

        model_ids = [m.id for m in config.models]
        breakers = BreakerBoard(
            config.circuit_breaker, model_ids, store, writes, clock, on_change=set_circuit
        )
        for model_id in model_ids:
            set_circuit(model_id, CircuitState.CLOSED)
        resolutions = resolve_all(config.backends, env)
        keys = KeyPool(resolutions, store, writes, clock)
        warn_missing(resolutions)
        for b in config.backends:
            # Read at scrape time: a cooldown that simply expires is reflected without an event.
            metrics.keys_available.labels(b.name).set_function(
                functools.partial(keys.available_count, b.name)
            )
        learning = Learning(config, store, clock)
        backends: dict[str, Backend] = {b.name: OpenAIBackend(b) for b in config.backends}
        state = AppState(
            config=config,
            models={m.id: m for m in config.models},
            backends=backends,
            backend_timeouts={b.name: b.timeout_secs for b in config.backends},
            bus=bus,
            breakers=breakers,
            keys=keys,
            spend=SpendGuard(config, store, writes, clock),
            router=learning.router,
            metrics=metrics,
            store=store,
            writes=writes,
            failover_log=FailoverLog(clock),
            clock=clock,
            started_at=clock(),
        )
        bus.subscribe(breakers.on_outcome)
        bus.subscribe(keys.on_outcome)
        bus.subscribe(learning.on_outcome)
        bus.subscribe(_signal_counter(metrics))
        feedback = FeedbackDesk(config, state, learning)
        runtime = cls(state, Authenticator(config, env), learning, feedback, env)
        await runtime._load()
        runtime._sync_task = asyncio.get_running_loop().create_task(runtime._sync_forever())
        if runtime.auth.open:
            log.warning("open gateway: no client keys are configured ([[auth.clients]]); "
                        "anyone who can reach it may use it")
        return runtime

    def install(self, app: FastAPI) -> None:
        app.state.runtime = self
        app.state.gateway = self.state
        app.state.auth = self.auth
        app.state.feedback = self.feedback
        app.state.request_logger = RequestLogger(
            self.state.metrics, self.state.config.server.log_prompts, self.feedback.after_request
        )

    async def _load(self) -> None:
        store = self.state.store
        self.state.keys.load_counters(await store.get_counters("keys"))
        await self._pull()
        await self.learning.load()

    async def _pull(self) -> None:
        store = self.state.store
        self.state.breakers.apply_remote(await store.get_records("breaker"))
        cooldowns = await store.get_records("key_cooldown")
        unusable = await store.get_records("key_unusable")
        self.state.keys.apply_remote(cooldowns, unusable)
        self.state.keys.merge_counters(await store.get_counters("keys"))

    async def _sync_forever(self) -> None:
        # A fixed cadence, not "sleep after each round": the staleness bound other replicas
        # see (one interval for records, two for statistics) must not drift with store latency.
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due = max(due + SYNC_INTERVAL_SECS, loop.time())
            await asyncio.sleep(due - loop.time())
            try:
                await self.learning.sync()
                await self._pull()
            except Exception:  # the store logs details; the next round retries
                log.warning("state sync failed", exc_info=True)

    def store_healthy(self) -> bool:
        return store_is_healthy(self.state.store)

    def any_backend_usable(self) -> bool:
        keys = self.state.keys
        return any(keys.has_usable_key(b.name) for b in self.state.config.backends)

    async def stop(self) -> None:
        if self._sync_task is not None:
            self._sync_task.cancel()
            await asyncio.gather(self._sync_task, return_exceptions=True)
        try:
            await self.learning.sync()
        except Exception:
            log.warning("final statistics sync failed", exc_info=True)
        await self.state.writes.close()
        await self.state.store.close()
        for backend in self.state.backends.values():
            await backend.aclose()



def _signal_counter(metrics: Metrics) -> Callable[[AttemptOutcome], None]:
    signals = metrics.signals

    def count(outcome: AttemptOutcome) -> None:
        if outcome.signal is not Signal.CANCELLED:
            signals.labels(outcome.model, outcome.signal.value).inc()
        if outcome.malformed_events:
            signals.labels(outcome.model, Signal.MALFORMED.value).inc(outcome.malformed_events)

    return count
