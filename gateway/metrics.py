"""Prometheus instruments, created once per app on their own registry and injected.

Invariants:
- Names, types and label names are exactly the contract's table; `CONTRACT` below restates it
  and a test holds the registry to it.
- Label values come only from the config (model ids, backend names) or from small fixed sets
  (endpoint, status, signal, mode, task, outcome, kind), never from request bodies, so the
  number of series is bounded by the config and every cache below is bounded too.
- The hot path pays a dict lookup per update: `labels()` on a `Family` hands back a child
  created once per label tuple (prometheus_client's own `labels()` validates and locks on
  every call; measured ~2.4 µs per counter update vs ~1.0 µs cached).
"""

from __future__ import annotations

from typing import Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.metrics import MetricWrapperBase

# LLM latencies span a cached 5 ms answer to a two-minute reasoning stream.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)

# name -> (type, label names): the contract's metric table.
CONTRACT: dict[str, tuple[str, tuple[str, ...]]] = {
    "gateway_requests_total": ("counter", ("model", "endpoint", "status")),
    "gateway_request_duration_seconds": ("histogram", ("model", "endpoint")),
    "gateway_time_to_first_token_seconds": ("histogram", ("model",)),
    "gateway_tokens_total": ("counter", ("model", "kind")),
    "gateway_spend_usd_total": ("counter", ("model",)),
    "gateway_circuit_state": ("gauge", ("model",)),
    "gateway_failovers_total": ("counter", ("from_model", "to_model", "outcome")),
    "gateway_upstream_signals_total": ("counter", ("model", "signal")),
    "gateway_routing_decisions_total": ("counter", ("mode", "task", "model")),
    "gateway_key_pool_available_keys": ("gauge", ("backend",)),
    "gateway_in_flight_requests": ("gauge", ()),
}

M = TypeVar("M", bound=MetricWrapperBase)


class Family(Generic[M]):
    """A labelled metric whose children are created once per label tuple, then looked up."""

    __slots__ = ("metric", "_children")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def labels(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            # A race between two threads creates the same child twice: prometheus_client
            # returns the one it already holds, so both end up updating the same series.
            child = self._children[values] = self.metric.labels(*values)
        return child


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Family(Counter(
            "gateway_requests_total", "Client requests answered, by the HTTP status sent.",
            ["model", "endpoint", "status"], registry=r,
        ))
        self.duration = Family(Histogram(
            "gateway_request_duration_seconds", "Time from request to last byte.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        ))
        self.ttft = Family(Histogram(
            "gateway_time_to_first_token_seconds", "Time from request to first content token.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        ))
        self.tokens = Family(Counter(
            "gateway_tokens_total", "Tokens billed.", ["model", "kind"], registry=r,
        ))
        self.spend = Family(Counter(
            "gateway_spend_usd_total", "Actual spend in US dollars.", ["model"], registry=r,
        ))
        self.circuit = Family(Gauge(
            "gateway_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open.",
            ["model"], registry=r,
        ))
        self.failovers = Family(Counter(
            "gateway_failovers_total", "Moves to another candidate, by the new attempt's outcome.",
            ["from_model", "to_model", "outcome"], registry=r,
        ))
        self.signals = Family(Counter(
            "gateway_upstream_signals_total", "Outcome signals of upstream attempts.",
            ["model", "signal"], registry=r,
        ))
        self.routing = Family(Counter(
            "gateway_routing_decisions_total", "Routing decisions (mode explicit: a named model).",
            ["mode", "task", "model"], registry=r,
        ))
        self.keys_available = Family(Gauge(
            "gateway_key_pool_available_keys", "Resolved keys neither cooling nor unusable.",
            ["backend"], registry=r,
        ))
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Client /v1 requests in flight.", registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
