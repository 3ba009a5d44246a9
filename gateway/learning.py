"""Learned routing state in the running gateway: the StatsBook, its sync, and the router.

Outcomes of every attempt update the book; the router reads it to rank candidates. The book
is shared through the store as summed counters (alpha, beta and call increments) plus EMA
records (last writer wins), and the seed each (model, task) started from is kept as a record
too, so a restart rebuilds exactly the posterior it had: seed + every recorded increment.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable

from gateway.config.models import ClientConfig, GatewayConfig, Mode, ModelConfig, Task
from gateway.outcome import AttemptOutcome, Signal
from gateway.routing.priors import apply_priors, load_priors
from gateway.routing.scoring import ScoreInput, rank
from gateway.routing.stats import QualitySignal, StatsBook, parse_stats_key, stats_key
from gateway.routing.tasks import TaskEstimate
from gateway.spend.guard import cost_micros
from gateway.store.base import StateStore

log = logging.getLogger("gateway.routing")

_QUALITY = {
    Signal.SUCCESS: QualitySignal.SUCCESS,
    Signal.RATE_LIMITED: QualitySignal.RATE_LIMITED,
    Signal.SERVER_ERROR: QualitySignal.SERVER_ERROR,
    Signal.CLIENT_ERROR: QualitySignal.CLIENT_ERROR,
    Signal.TIMEOUT: QualitySignal.TIMEOUT,
    Signal.RETRIED: QualitySignal.RETRIED,
}


class Learning:
    def __init__(
        self, config: GatewayConfig, store: StateStore, clock: Callable[[], float]
    ) -> None:
        self._config = config
        self._store = store
        self._clock = clock
        self.book = StatsBook(models=[m.id for m in config.models])
        self.router = Router(self.book, random.Random())
        self._priors = load_priors(config.routing.priors_file)
        if config.routing.priors_file is not None and not self._priors:
            log.info("no benchmark priors loaded from %s", config.routing.priors_file)

    async def load(self) -> None:
        for name, base in (await self._store.get_records("stats_base")).items():
            key = parse_stats_key(name)
            if key is not None:
                self.book.set_base(*key, float(base["alpha"]), float(base["beta"]))  # type: ignore[arg-type]
        counters = await self._store.get_counters("stats")
        self.book.apply_remote(counters, await self._store.get_records("stats_ema"))
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
        for name, record in self.book.ema_records().items():
            await self._store.put_record("stats_ema", name, dict(record))
        counters = await self._store.get_counters("stats")
        self.book.apply_remote(counters, await self._store.get_records("stats_ema"))

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
        task = estimate.task
        book = self._book
        inputs = [
            ScoreInput.from_stats(
                m.id,
                book.get(m.id, task),
                cost_micros(m, prompt_tokens, max_output_tokens) / 1_000_000,
            )
            for m in models
        ]
        by_id = {m.id: m for m in models}
        return [by_id[i] for i in rank(inputs, mode, estimate.difficulty, self._rng)]
