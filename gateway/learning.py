"""Learned routing state in the running gateway: the StatsBook, its sync, and the router.

Outcomes of every attempt update the book; the router reads it to rank candidates. The book
is shared through the store as summed counters (alpha, beta and call increments) plus EMA
records (last writer wins), and the seed each (model, task) started from is kept as a record
too, so a restart rebuilds exactly the posterior it had: seed + every recorded increment.

Persistence with `state.backend = "memory"`: `sync` (every second) moves the increments into
the memory store, which snapshots to `state.path` every `state.snapshot_interval_secs` and at
shutdown, so a kill -9 loses at most one sync plus one snapshot interval of statistics.
`check_learned_state` opens and validates the priors file and the state file before the
server starts, so `gateway serve` reports a bad one as one line (exit 2): a corrupt or foreign
state file is an error, never a silent reset.

Priors seed a model only while it has no observed calls (StatsBook.seed), so a restart with
the same or another priors file never overwrites what was learned.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable

from gateway.config.models import ClientConfig, GatewayConfig, Mode, ModelConfig, Task
from gateway.outcome import AttemptOutcome, Signal
from gateway.routing.priors import apply_priors, load_priors
from gateway.routing.scoring import ScoreInput, rank
from gateway.routing.stats import QualitySignal, StatsBook, parse_stats_key, stats_key
from gateway.routing.tasks import TaskEstimate
from gateway.store import sqlite_snapshot
from gateway.store.base import StateStore

log = logging.getLogger("gateway.routing")

_QUALITY = {
    Signal.SUCCESS: QualitySignal.SUCCESS,
    Signal.RATE_LIMITED: QualitySignal.RATE_LIMITED,
    Signal.SERVER_ERROR: QualitySignal.SERVER_ERROR,
    Signal.CLIENT_ERROR: QualitySignal.CLIENT_ERROR,
    Signal.TIMEOUT: QualitySignal.TIMEOUT,
}


def check_learned_state(config: GatewayConfig, now: float | None = None) -> None:
    """Validate what `Learning` will load, before the server starts: the priors file (a
    malformed one raises ConfigError; a missing one is no priors) and, for the memory store,
    the state file (StoreCorrupt unless it is empty, new or ours). Blocking: call it at start."""
    load_priors(config.routing.priors_file)
    if config.state.backend == "memory":
        sqlite_snapshot.open_or_create(config.state.path, time.time() if now is None else now)


class Learning:
    def __init__(
        self, config: GatewayConfig, store: StateStore, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.book = StatsBook(models=[m.id for m in config.models])
        self.router = Router(self.book, random.Random())
        self._ema_synced: dict[str, dict[str, float | None]] = {}
        self._priors = load_priors(config.routing.priors_file)
        priors_file = config.routing.priors_file
        if priors_file is not None and not priors_file.exists():
            log.info("routing.priors_file %s does not exist: routing starts without benchmark "
                     "priors", priors_file)
        elif priors_file is not None and not self._priors:
            log.info("routing.priors_file %s holds no results", priors_file)

    async def load(self) -> None:
        for name, base in (await self._store.get_records("stats_base")).items():
            key = parse_stats_key(name)
            if key is not None:
                self.book.set_base(*key, float(base["alpha"]), float(base["beta"]))  # type: ignore[arg-type]
        counters = await self._store.get_counters("stats")
        self.book.apply_remote(counters, await self._store.get_records("stats_ema"))
        self._ema_synced = self.book.ema_records()
        seeded = apply_priors(
            self.book, self._priors, self._config.models, self._config.routing.prior_weight
        )
        for model_id in seeded:
            for task in Task:
                entry = self.book.get(model_id, task)
                if entry is not None and entry.seeded:
                    await self._store.put_record(
                        "stats_base", stats_key(model_id, task),
                        {"alpha": entry.base_alpha, "beta": entry.base_beta},
                    )

    def on_outcome(self, outcome: AttemptOutcome) -> None:
        """One attempt's outcome into the book. `retried` is skipped here: FeedbackDesk
        records it through `penalise_retry`, which knows whether the request was rated or
        penalised already, and publishes it only for the metrics."""
        signal = _QUALITY.get(outcome.signal)
        if signal is None:
            return
        self.book.record(
            outcome.model,
            outcome.task,
            signal,
            latency_ms=outcome.latency_s * 1000,
            ttft_ms=None if outcome.ttft_s is None else outcome.ttft_s * 1000,
            output_tokens=outcome.completion_tokens,
        )

    async def sync(self) -> None:
        """Push this replica's increments, then adopt the cluster's totals."""
        deltas = list(self.book.drain_deltas().items())
        pushed = 0
        try:
            for name, delta in deltas:
                await self._store.add_counters("stats", name, delta)
                pushed += 1
        except Exception:
            self.book.requeue_deltas(dict(deltas[pushed:]))
            raise
        # Only EMAs that moved here since the last round: re-sending an unchanged (possibly
        # adopted) value would overwrite a newer one another replica just wrote.
        for name, record in self.book.ema_records().items():
            if self._ema_synced.get(name) != record:
                await self._store.put_record("stats_ema", name, dict(record))
        counters = await self._store.get_counters("stats")
        self.book.apply_remote(counters, await self._store.get_records("stats_ema"))
        self._ema_synced = self.book.ema_records()

    def status_of(self, model_id: str) -> dict[str, dict[str, object]]:
        out: dict[str, dict[str, object]] = {}
        for task in Task:
            entry = self.book.get(model_id, task)
            if entry is None or (entry.calls == 0 and not entry.seeded):
                continue
            out[task.value] = {
                "calls": entry.calls,
                "quality": round(entry.mean, 6),
                "latency_ms": round(entry.latency_ms_ema or 0.0, 3),
                "ttft_ms": round(entry.ttft_ms_ema or 0.0, 3),
                "tokens_per_sec": round(entry.tokens_per_sec_ema or 0.0, 3),
                "quality_ema": entry.quality_ema,
            }
        return out


class Router:
    """Ranks eligible models for one request from the book; microseconds per call."""

    def __init__(self, book: StatsBook, rng: random.Random) -> None:
        self._book = book
        self._rng = rng

    def rank(
        self,
        models: list[ModelConfig],
        mode: Mode,
        estimate: TaskEstimate,
        prompt_tokens: int,
        max_output_tokens: int,
        client: ClientConfig | None,
    ) -> list[ModelConfig]:
        if len(models) <= 1:
            return list(models)
        task = estimate.task
        get, reliability = self._book.get, self._book.health.reliability
        # tuple.__new__ builds the NamedTuple in C: its Python-level __new__ was a third of
        # the cost of ranking 50 models. Nothing per (model, task) is worth caching: the
        # posterior and latency change with every outcome, the price term is two products.
        new = tuple.__new__
        inputs: list[ScoreInput] = []
        for m in models:
            entry = get(m.id, task)
            # USD as a float: the scorer compares ratios, so no rounding to micro-dollars.
            cost = (prompt_tokens * m.input_per_mtok + max_output_tokens * m.output_per_mtok) / 1e6
            if entry is None:
                values: tuple[object, ...] = (m.id, 1.0, 1.0, None, cost, reliability(m.id))
            else:
                values = (m.id, entry.alpha, entry.beta, entry.latency_ms_ema, cost,
                          reliability(m.id))
            inputs.append(new(ScoreInput, values))
        by_id = {m.id: m for m in models}
        return [by_id[i] for i in rank(inputs, mode, estimate.difficulty, self._rng)]
