"""AppState: every long-lived component of one gateway process, built once in the lifespan."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from gateway.config.models import ClientConfig, GatewayConfig, Mode, ModelConfig
from gateway.keys.pool import KeyPool
from gateway.metrics import Metrics
from gateway.outcome import OutcomeBus
from gateway.resilience.breaker import BreakerBoard
from gateway.resilience.failover_log import FailoverLog
from gateway.routing.tasks import TaskEstimate
from gateway.spend.guard import SpendGuard
from gateway.store.base import StateStore
from gateway.store.writebehind import WriteBehind
from gateway.upstream.base import Backend


class Router(Protocol):
    def rank(
        self,
        models: list[ModelConfig],
        mode: Mode,
        estimate: TaskEstimate,
        prompt_tokens: int,
        max_output_tokens: int,
        client: ClientConfig | None,
    ) -> list[ModelConfig]: ...


@dataclass(slots=True)
class AppState:
    config: GatewayConfig
    models: dict[str, ModelConfig]
    backends: dict[str, Backend]
    backend_timeouts: dict[str, float]
    bus: OutcomeBus
    breakers: BreakerBoard
    keys: KeyPool
    spend: SpendGuard
    router: Router
    metrics: Metrics
    store: StateStore
    writes: WriteBehind
    failover_log: FailoverLog
    clock: Callable[[], float]
    started_at: float
