"""Prometheus instruments, created once per app on their own registry and injected.

Label values come only from the config (model ids, backend names) or from small fixed sets
(endpoint, status, signal, mode, task, outcome), never from request bodies, so cardinality
is bounded by the config.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

# LLM latencies span a cached 5 ms answer to a two-minute reasoning stream.
LATENCY_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0,
)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.requests = Counter(
            "gateway_requests_total", "Client requests answered.",
            ["model", "endpoint", "status"], registry=r,
        )
        self.duration = Histogram(
            "gateway_request_duration_seconds", "Time from request to last byte.",
            ["model", "endpoint"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.ttft = Histogram(
            "gateway_time_to_first_token_seconds", "Time from request to first content token.",
            ["model"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.tokens = Counter(
            "gateway_tokens_total", "Tokens billed.", ["model", "kind"], registry=r,
        )
        self.spend = Counter(
            "gateway_spend_usd_total", "Actual spend in US dollars.", ["model"], registry=r,
        )
        self.circuit = Gauge(
            "gateway_circuit_state", "Circuit state: 0 closed, 1 half-open, 2 open.",
            ["model"], registry=r,
        )
        self.failovers = Counter(
            "gateway_failovers_total", "Moves to another candidate.",
            ["from_model", "to_model", "outcome"], registry=r,
        )
        self.signals = Counter(
            "gateway_upstream_signals_total", "Outcome signals of upstream attempts.",
            ["model", "signal"], registry=r,
        )
        self.routing = Counter(
            "gateway_routing_decisions_total", "Routing decisions.",
            ["mode", "task", "model"], registry=r,
        )
        self.keys_available = Gauge(
            "gateway_key_pool_available_keys", "Resolved keys neither cooling nor unusable.",
            ["backend"], registry=r,
        )
        self.in_flight = Gauge(
            "gateway_in_flight_requests", "Client /v1 requests in flight.", registry=r,
        )

    def render(self) -> bytes:
        return generate_latest(self.registry)
