"""`/metrics` after real traffic: every contract series moves as it should, and nothing else.

One gateway for the module, fronting two simulators; each test reads the exposition before
and after its own traffic (parsed with prometheus_client's parser) and checks the deltas, so
the tests do not depend on each other's order. Prompts are distinct per request so the
router's retry detection never turns one test's request into another's `retried` signal.
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.models import CircuitBreakerConfig
from gateway.logs import JsonFormatter
from gateway.metrics import CONTRACT, LATENCY_BUCKETS, Family, Metrics
from gateway.sim.testing import sim_script
from tests.harness import running_gateway, sim_config

Series = dict[tuple[str, frozenset[tuple[str, str]]], float]

MODELS: list[dict[str, Any]] = [
    {"id": "primary", "backend": "a", "fallbacks": ["secondary"],
     "input_per_mtok": 1.0, "output_per_mtok": 2.0},
    {"id": "secondary", "backend": "b", "input_per_mtok": 0.5, "output_per_mtok": 1.0},
    {"id": "limited", "backend": "c"},
    {"id": "fragile", "backend": "d"},
]


@pytest.fixture(scope="module")
def gateway(sim_a: str, sim_b: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # c and d are the same simulators under their own backend names: separate key pools.
    config = sim_config(
        {"a": sim_a, "b": sim_b, "c": sim_a, "d": sim_b}, MODELS,
        state_path=tmp_path_factory.mktemp("metrics") / "s.db",
        circuit_breaker=CircuitBreakerConfig(failure_threshold=2, cooldown_secs=600),
    )
    with running_gateway(config) as root:
        yield root


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0, timeout=20)


def scrape(root: str) -> Series:
    text = httpx.get(f"{root}/metrics").text
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            series[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return series


def value(series: Series, name: str, **labels: str) -> float:
    return series.get((name, frozenset(labels.items())), 0.0)


def total(series: Series, name: str, **labels: str) -> float:
    """Sum over every series of `name` whose labels include `labels`."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in series.items() if n == name and wanted <= ls)


def delta(before: Series, after: Series, name: str, **labels: str) -> float:
    return total(after, name, **labels) - total(before, name, **labels)


def chat(client: openai.OpenAI, model: str, prompt: str, **extra: Any) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], **extra
    )


def test_every_contract_metric_has_its_name_type_labels_and_buckets(gateway: str) -> None:
    text = httpx.get(f"{gateway}/metrics").text
    families = {f.name: f for f in text_string_to_metric_families(text)}
    for name, (kind, labels) in CONTRACT.items():
        family_name = name.removesuffix("_total") if kind == "counter" else name
        assert family_name in families, name
        family = families[family_name]
        assert family.type == kind, name
        for sample in family.samples:
            extra = {"le"} if sample.name.endswith("_bucket") else set()
            assert set(sample.labels) == set(labels) | extra, (name, sample)
    # Gauges describe state from the first scrape on: every model closed, every key there.
    series = scrape(gateway)
    for model in MODELS:
        assert value(series, "gateway_circuit_state", model=model["id"]) == 0
    assert value(series, "gateway_key_pool_available_keys", backend="c") == 1
    assert value(series, "gateway_in_flight_requests") == 0
    # Buckets from 5 ms to 120 s, checked on a histogram that has a series.
    chat(openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0), "secondary",
         "bucket probe")
    buckets = {
        dict(ls)["le"] for (n, ls) in scrape(gateway)
        if n == "gateway_request_duration_seconds_bucket"
    }
    assert {float(b) for b in buckets} == {*LATENCY_BUCKETS, float("inf")}
    assert min(LATENCY_BUCKETS) == 0.005 and max(LATENCY_BUCKETS) == 120.0


def test_a_success_counts_request_duration_tokens_spend_signal_and_decision(
    gateway: str, client: openai.OpenAI
) -> None:
    before = scrape(gateway)
    reply = chat(client, "primary", "count me")
    after = scrape(gateway)
    assert reply.model == "primary"
    labels = {"model": "primary", "endpoint": "chat"}
    assert delta(before, after, "gateway_requests_total", status="200", **labels) == 1
    assert delta(before, after, "gateway_request_duration_seconds_count", **labels) == 1
    assert delta(before, after, "gateway_request_duration_seconds_sum", **labels) > 0
    prompt = delta(before, after, "gateway_tokens_total", model="primary", kind="prompt")
    completion = delta(before, after, "gateway_tokens_total", model="primary", kind="completion")
    assert (prompt, completion) == (reply.usage.prompt_tokens, reply.usage.completion_tokens)
    expected_cost = (prompt * 1.0 + completion * 2.0) / 1_000_000
    spend = delta(before, after, "gateway_spend_usd_total", model="primary")
    assert spend == pytest.approx(expected_cost, rel=1e-6)
    assert delta(before, after, "gateway_upstream_signals_total",
                 model="primary", signal="success") == 1
    assert delta(before, after, "gateway_routing_decisions_total",
                 mode="explicit", model="primary") == 1
    assert delta(before, after, "gateway_failovers_total") == 0


def test_a_failover_counts_the_move_the_failed_attempt_and_the_serving_model(
    gateway: str, client: openai.OpenAI, sim_a: str
) -> None:
    sim_script(sim_a, [{"status": 500}], model="primary")
    before = scrape(gateway)
    reply = chat(client, "primary", "fail over please")
    after = scrape(gateway)
    assert reply.model == "secondary"
    assert delta(before, after, "gateway_failovers_total",
                 from_model="primary", to_model="secondary", outcome="success") == 1
    assert delta(before, after, "gateway_failovers_total", outcome="failure") == 0
    assert delta(before, after, "gateway_upstream_signals_total",
                 model="primary", signal="server_error") == 1
    assert delta(before, after, "gateway_upstream_signals_total",
                 model="secondary", signal="success") == 1
    # The request is counted once, under the model that served it.
    assert delta(before, after, "gateway_requests_total") == 1
    assert delta(before, after, "gateway_requests_total",
                 model="secondary", endpoint="chat", status="200") == 1
    assert delta(before, after, "gateway_tokens_total", model="primary") == 0


def test_a_429_counts_status_signal_and_the_cooling_key(
    gateway: str, client: openai.OpenAI, sim_a: str
) -> None:
    sim_script(sim_a, [{"status": 429, "retry_after": 300}], model="limited")
    before = scrape(gateway)
    with pytest.raises(openai.RateLimitError):
        chat(client, "limited", "too many")
    after = scrape(gateway)
    assert delta(before, after, "gateway_requests_total",
                 model="limited", endpoint="chat", status="429") == 1
    assert delta(before, after, "gateway_upstream_signals_total",
                 model="limited", signal="rate_limited") == 1
    assert value(before, "gateway_key_pool_available_keys", backend="c") == 1
    assert value(after, "gateway_key_pool_available_keys", backend="c") == 0
    assert value(after, "gateway_key_pool_available_keys", backend="a") == 1


def test_a_stream_counts_ttft_and_is_in_flight_until_it_ends(
    gateway: str, client: openai.OpenAI, sim_b: str
) -> None:
    # Slow enough that the scrape after the first chunk surely lands while it still runs.
    sim_script(sim_b, [{"token_delay_ms": 20}], model="secondary")
    before = scrape(gateway)
    stream = chat(client, "secondary", "stream me", stream=True,
                  stream_options={"include_usage": True})
    chunks = [next(stream)]
    during = scrape(gateway)
    chunks += list(stream)
    after = scrape(gateway)
    assert value(during, "gateway_in_flight_requests") == 1
    assert value(after, "gateway_in_flight_requests") == 0
    usage = chunks[-1].usage
    labels = {"model": "secondary"}
    assert delta(before, after, "gateway_time_to_first_token_seconds_count", **labels) == 1
    ttft = delta(before, after, "gateway_time_to_first_token_seconds_sum", **labels)
    duration = delta(before, after, "gateway_request_duration_seconds_sum",
                     endpoint="chat", **labels)
    assert 0 < ttft < duration
    assert delta(before, after, "gateway_requests_total",
                 endpoint="chat", status="200", **labels) == 1
    assert delta(before, after, "gateway_tokens_total",
                 kind="completion", **labels) == usage.completion_tokens


def test_auto_and_explicit_decisions_are_counted_by_mode(
    gateway: str, client: openai.OpenAI
) -> None:
    before = scrape(gateway)
    auto = client.chat.completions.with_raw_response.create(
        model="auto", messages=[{"role": "user", "content": "route me somewhere"}]
    )
    chat(client, "auto:best", "route me to the best")
    chat(client, "secondary", "no routing needed")
    after = scrape(gateway)
    # The decision is the router's first choice, the model the x-gateway-model header names.
    chosen = auto.headers["x-gateway-model"]
    assert delta(before, after, "gateway_routing_decisions_total",
                 mode="auto", model=chosen) == 1
    assert delta(before, after, "gateway_routing_decisions_total", mode="auto") == 1
    assert delta(before, after, "gateway_routing_decisions_total", mode="best") == 1
    assert delta(before, after, "gateway_routing_decisions_total",
                 mode="explicit", model="secondary") == 1


def test_embeddings_are_their_own_endpoint(gateway: str, client: openai.OpenAI) -> None:
    before = scrape(gateway)
    client.embeddings.create(model="secondary", input="embed me")
    after = scrape(gateway)
    labels = {"model": "secondary", "endpoint": "embeddings"}
    assert delta(before, after, "gateway_requests_total", status="200", **labels) == 1
    assert delta(before, after, "gateway_request_duration_seconds_count", **labels) == 1
    assert delta(before, after, "gateway_routing_decisions_total",
                 mode="explicit", task="embed", model="secondary") == 1


def test_requests_that_never_resolve_a_model_count_as_none(
    gateway: str, client: openai.OpenAI
) -> None:
    before = scrape(gateway)
    with pytest.raises(openai.NotFoundError):
        chat(client, "no-such-model", "who?")
    bad = httpx.post(f"{gateway}/v1/completions", content=b"{not json")
    after = scrape(gateway)
    assert bad.status_code == 400
    assert delta(before, after, "gateway_requests_total",
                 model="none", endpoint="chat", status="404") == 1
    assert delta(before, after, "gateway_requests_total",
                 model="none", endpoint="completions", status="400") == 1
    # The name the client sent never becomes a label value.
    assert not any("no-such-model" in str(labels) for _, labels in after)


def test_failures_open_the_circuit_and_the_gauge_says_so(
    gateway: str, client: openai.OpenAI, sim_b: str
) -> None:
    sim_script(sim_b, [{"status": 500}, {"status": 500}], model="fragile")
    before = scrape(gateway)
    for prompt in ("break one", "break two"):
        with pytest.raises(openai.InternalServerError):
            chat(client, "fragile", prompt)
    after = scrape(gateway)
    assert value(before, "gateway_circuit_state", model="fragile") == 0
    assert value(after, "gateway_circuit_state", model="fragile") == 2
    assert delta(before, after, "gateway_requests_total",
                 model="fragile", endpoint="chat", status="502") == 2
    assert delta(before, after, "gateway_upstream_signals_total",
                 model="fragile", signal="server_error") == 2


def test_request_log_records_are_one_json_line_without_secrets_or_prompts(
    gateway: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.requests")
    secret = "sk-never-log-me-0123456789"
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key=secret, max_retries=0)
    reply = chat(client, "secondary", "a prompt that must stay private",
                 extra_headers={"x-request-id": "log-me-1"})
    records = [r for r in caplog.records if r.name == "gateway.requests"]
    mine = [r for r in records if isinstance(r.msg, dict) and r.msg["request_id"] == "log-me-1"]
    assert len(mine) == 1
    line = JsonFormatter().format(mine[0])
    assert "\n" not in line and secret not in line and "must stay private" not in line
    entry = orjson.loads(line)
    assert entry["level"] == "INFO" and entry["logger"] == "gateway.requests"
    assert entry["model"] == "secondary" == reply.model and entry["status"] == 200
    assert entry["prompt_tokens"] == reply.usage.prompt_tokens
    assert entry["completion_tokens"] == reply.usage.completion_tokens
    for key in ("client", "backend", "task", "mode", "failovers", "cost_usd",
                "latency_ms", "ttft_ms", "endpoint"):
        assert key in entry, key
    assert entry["mode"] == "explicit" and entry["backend"] == "b"


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_exposition(gateway: str, client: openai.OpenAI) -> None:
    chat(client, "secondary", "something to expose")
    text = httpx.get(f"{gateway}/metrics").text
    checked = subprocess.run(
        ["promtool", "check", "metrics"], input=text, capture_output=True, text=True, timeout=30
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.strip() == "" and checked.stderr.strip() == ""


def test_label_children_are_created_once_and_updates_cost_microseconds() -> None:
    metrics = Metrics()
    family: Family[Any] = metrics.requests
    assert family.labels("m", "chat", "200") is family.labels("m", "chat", "200")
    rounds = 20_000
    started = time.perf_counter()
    for _ in range(rounds):
        # Everything one request updates.
        metrics.requests.labels("m", "chat", "200").inc()
        metrics.duration.labels("m", "chat").observe(0.3)
        metrics.ttft.labels("m").observe(0.1)
        metrics.tokens.labels("m", "prompt").inc(10)
        metrics.tokens.labels("m", "completion").inc(20)
        metrics.spend.labels("m").inc(0.0001)
        metrics.routing.labels("auto", "generate", "m").inc()
        metrics.signals.labels("m", "success").inc()
        metrics.in_flight.inc()
        metrics.in_flight.dec()
    per_request_us = (time.perf_counter() - started) / rounds * 1e6
    # ~12 µs measured; the bound only catches an order-of-magnitude regression.
    assert per_request_us < 200
