"""The outcome record every upstream attempt ends in, and the bus that hands it to consumers.

Routing statistics, circuit breakers, the key pool, spend and metrics subscribe here instead
of being called one by one from the request path. Subscribers are synchronous and cheap; a
subscriber that must reach the state store queues the write itself, so publishing never
blocks the stream that produced the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from gateway.config.models import Task

log = logging.getLogger("gateway.outcome")


class Signal(StrEnum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    TIMEOUT = "timeout"
    RETRIED = "retried"
    MALFORMED = "malformed"
    # The client went away mid-stream: says nothing about the model, so consumers skip it.
    CANCELLED = "cancelled"


BREAKER_FAILURES = frozenset({Signal.RATE_LIMITED, Signal.SERVER_ERROR, Signal.TIMEOUT})


@dataclass(slots=True)
class AttemptOutcome:
    request_id: str
    client: str | None
    model: str
    backend: str
    key_ref: str | None
    task: Task
    signal: Signal
    status: int | None
    error_kind: str | None
    started_at: float
    latency_s: float
    ttft_s: float | None
    prompt_tokens: int
    completion_tokens: int
    retry_after_secs: float | None = None
    was_probe: bool = False
    key_unusable: bool = False
    # A mid-stream failure after text reached the client: the attempt failed, but its
    # delivered text is billed and it is not a quality failure of the model's answer.
    delivered: bool = False
    malformed_events: int = 0


Subscriber = Callable[[AttemptOutcome], None]


class OutcomeBus:
    def __init__(self) -> None:
        self._subscribers: list[Subscriber] = []

    def subscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.append(subscriber)

    def publish(self, outcome: AttemptOutcome) -> None:
        for subscriber in self._subscribers:
            try:
                subscriber(outcome)
            except Exception:  # one broken consumer must not break the request or the others
                log.exception("outcome subscriber %r failed", subscriber)
