"""Resilience through the real HTTP path: breakers, disconnects, billing, tool calls,
continuation forms, exhaustion and the signals they leave in /metrics and /admin/status.

Every test runs a real gateway (uvicorn in a thread) against real simulators and checks what
the client received, what each simulator saw (its request log) and what the gateway reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.models import FailoverConfig
from gateway.sim.options import Faults, SimOptions
from gateway.sim.testing import running_sim, sim_faults, sim_requests, sim_script, wait_for
from gateway.sim.text import full_answer, tool_arguments
from gateway.spend.guard import cost_micros
from tests.harness import running_gateway, sim_config

ADMIN_KEY = "admin-test-key"
ENV = {"GATEWAY_ADMIN_KEY": ADMIN_KEY, "SIM_A_KEY": "sk-sim-a-0123456789"}
FAST = FailoverConfig(first_token_timeout_secs=1.0, idle_timeout_secs=0.5, max_wait_secs=2.0,
                      max_retries=3)
TOOLS: list[Any] = [{"type": "function", "function": {
    "name": "lookup", "parameters": {"type": "object", "properties": {}},
}}]


# -- helpers -------------------------------------------------------------------------------

def admin_status(root: str) -> dict[str, Any]:
    response = httpx.get(f"{root}/admin/status",
                         headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def metric(root: str, name: str, **labels: str) -> float:
    """The value of one sample of /metrics (0.0 when the labelled series does not exist)."""
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def circuit(root: str, model: str) -> str:
    state: str = admin_status(root)["models"][model]["circuit"]
    return state


def chat_body(prompt: str, model: str, **extra: Any) -> dict[str, Any]:
    return {"model": model, "stream": True, "messages": [{"role": "user", "content": prompt}],
            **extra}


def raw_stream(root: str, body: dict[str, Any], path: str = "chat/completions") -> str:
    """The whole SSE body of a streamed request, read with plain httpx."""
    with httpx.stream("POST", f"{root}/v1/{path}", json=body, timeout=20) as response:
        assert response.status_code == 200, response.read()
        return response.read().decode()


def events_of(body: str) -> list[Any]:
    """Every `data:` payload: parsed JSON, or the string "[DONE]"."""
    assert body.endswith("\n\n") or body == ""
    out: list[Any] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ") and "\n" not in block, block
        payload = block[6:]
        out.append(payload if payload == "[DONE]" else orjson.loads(payload))
    return out


def chunks_of(events: list[Any]) -> list[dict[str, Any]]:
    return [e for e in events if isinstance(e, dict)]


def chat_text(events: list[Any]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or ""
                   for c in chunks_of(events) if c.get("choices"))


def completion_text(events: list[Any]) -> str:
    return "".join(c["choices"][0].get("text") or "" for c in chunks_of(events) if c.get("choices"))


def assert_one_clean_stream(events: list[Any]) -> None:
    """One id, one created, exactly one [DONE] and it is last, no error event."""
    assert events.count("[DONE]") == 1 and events[-1] == "[DONE]"
    chunks = chunks_of(events)
    assert not [c for c in chunks if "error" in c]
    assert len({c["id"] for c in chunks}) == 1
    assert len({c["created"] for c in chunks}) == 1


def attempts(root: str, model: str | None = None) -> list[dict[str, Any]]:
    return [r for r in sim_requests(root) if model is None or r["model"] == model]


@contextlib.contextmanager
def gateway_for(sims: dict[str, str], models: list[dict[str, Any]], tmp: Path,
                **sections: Any) -> Iterator[str]:
    sections.setdefault("failover", FAST)
    config = sim_config(sims, models, state_path=tmp / "state.db", **sections)
    with running_gateway(config, env=ENV) as root:
        yield root


def sdk(root: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0, timeout=20)


# -- 3. client disconnect ------------------------------------------------------------------

def test_client_disconnect_closes_upstream_releases_the_key_and_settles_spend(
    tmp_path: Path,
) -> None:
    slow = SimOptions(default_tokens=400, faults=Faults(token_delay_ms=20))
    with running_sim(slow) as sim:
        config = sim_config(
            {"a": sim},
            [{"id": "m", "backend": "a", "input_per_mtok": 3.0, "output_per_mtok": 500.0}],
            state_path=tmp_path / "s.db", failover=FAST,
            spend={"hourly_usd": 100.0, "default_output_tokens": 1024},
        )
        config = config.model_copy(update={"backends": tuple(
            b.model_copy(update={"api_key_env": ("SIM_A_KEY",)}) for b in config.backends
        )})
        with running_gateway(config, env=ENV) as root:
            read = 0
            with httpx.stream("POST", f"{root}/v1/chat/completions",
                              json=chat_body("leave early", "m"), timeout=20) as response:
                lines = response.iter_lines()  # kept referenced: dropping it closes the socket
                while read < 5:
                    read += '"content":" ' in next(lines)
                # Mid-stream: the key is leased and the reservation holds the estimate.
                keys = admin_status(root)["keys"]["a"]
                assert keys[0]["in_flight"] == 1 and keys[0]["ref"] == "SIM_A_KEY"
            left_at = time.time()
            record = wait_for(lambda: next(
                (r for r in attempts(sim) if r["disconnected_at"] is not None), None
            ), timeout=2.0)
            assert record["disconnected_at"] - left_at < 1.0
            assert record["outcome"] == "disconnected" and record["tokens_sent"] < 400
            wait_for(lambda: admin_status(root)["keys"]["a"][0]["in_flight"] == 0, timeout=2.0)
            prompt = metric(root, "gateway_tokens_total", model="m", kind="prompt")
            completion = metric(root, "gateway_tokens_total", model="m", kind="completion")
            assert read <= completion <= record["tokens_sent"]
            expected = cost_micros(config.models[0], int(prompt), int(completion)) / 1e6

            def settled() -> bool:
                spent = admin_status(root)["spend"]["global"]["hourly"]["spent_usd"]
                return bool(spent == pytest.approx(expected, abs=1e-6))

            wait_for(settled, timeout=2.0)
            # A disconnect says nothing about the model: no signal, circuit untouched.
            assert metric(root, "gateway_upstream_signals_total", model="m",
                          signal="server_error") == 0.0
            assert circuit(root, "m") == "closed"


# -- 7. exhaustion -------------------------------------------------------------------------

THREE: list[dict[str, Any]] = [
    {"id": "one", "backend": "a", "fallbacks": ["two", "three"]},
    {"id": "two", "backend": "b"},
    {"id": "three", "backend": "c"},
]


@pytest.fixture(scope="module")
def sims3() -> Iterator[dict[str, str]]:
    with running_sim(SimOptions(seed=11)) as a, running_sim(SimOptions(seed=12)) as b, \
            running_sim(SimOptions(seed=13)) as c:
        yield {"a": a, "b": b, "c": c}


@pytest.fixture
def gw3(sims3: dict[str, str], tmp_path: Path) -> Iterator[str]:
    for root in sims3.values():
        httpx.post(f"{root}/_sim/reset").raise_for_status()
    with gateway_for(sims3, THREE, tmp_path,
                     circuit_breaker={"failure_threshold": 1000}) as root:
        yield root


def test_every_candidate_cut_mid_stream_is_one_error_event_and_no_done(
    gw3: str, sims3: dict[str, str]
) -> None:
    for root in sims3.values():
        sim_script(root, [{"die_after_tokens": 4}])
    body = raw_stream(gw3, chat_body("all cut", "one"))
    events = events_of(body)
    assert "[DONE]" not in events
    errors = [e for e in chunks_of(events) if "error" in e]
    assert len(errors) == 1 and events[-1] is errors[0]
    assert set(errors[0]["error"]) >= {"message", "type", "code"}
    # What the client got before the error is a true prefix of the answer, never spliced.
    text = chat_text(events)
    assert full_answer("all cut", 24).startswith(text) and len(text) > 0
    assert [len(attempts(r)) for r in sims3.values()] == [1, 1, 1]


def test_every_candidate_failing_before_the_first_byte_is_502(
    gw3: str, sims3: dict[str, str]
) -> None:
    for root in sims3.values():
        sim_script(root, [{"die_after_tokens": 0}])
    with httpx.stream("POST", f"{gw3}/v1/chat/completions",
                      json=chat_body("all reset", "one"), timeout=20) as response:
        response.read()
    assert response.status_code == 502
    assert response.json()["error"]["code"] == "upstream_error"
    for root in sims3.values():
        sim_script(root, [{"status": 500}])
    with pytest.raises(openai.InternalServerError) as raised:
        sdk(gw3).chat.completions.create(model="one", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 502


def test_every_candidate_timing_out_before_the_first_token_is_504(
    gw3: str, sims3: dict[str, str]
) -> None:
    for root in sims3.values():
        sim_script(root, [{"ttft_ms": 3000}])
    started = time.monotonic()
    with httpx.stream("POST", f"{gw3}/v1/chat/completions",
                      json=chat_body("all silent", "one"), timeout=20) as response:
        response.read()
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "upstream_timeout"
    assert time.monotonic() - started < 5.0


# -- 2. circuit breaker --------------------------------------------------------------------

BREAKER_MODELS: list[dict[str, Any]] = [
    {"id": "flaky", "backend": "a", "fallbacks": ["steady"]},
    {"id": "steady", "backend": "b"},
    {"id": "alone", "backend": "c"},
]
COOLDOWN = 1.0


def ask(client: openai.OpenAI, model: str, prompt: str) -> Any:
    return client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )


async def _burst_during_probe(
    root: str, sim: str, model: str, n: int
) -> tuple[str, list[str], str]:
    """Send one request (the probe), then `n` at once while the sim still holds the probe."""
    async with openai.AsyncOpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0,
                                  timeout=20) as client, httpx.AsyncClient() as plain:

        def ask_async(prompt: str) -> Any:
            return client.chat.completions.create(
                model=model, messages=[{"role": "user", "content": prompt}])

        seen = len(sim_requests(sim))
        probe = asyncio.ensure_future(ask_async("probe"))
        while len((await plain.get(f"{sim}/_sim/requests")).json()) == seen:
            await asyncio.sleep(0.01)
        state = (await plain.get(f"{root}/admin/status", headers={
            "Authorization": f"Bearer {ADMIN_KEY}"})).json()["models"][model]["circuit"]
        burst = await asyncio.gather(*(ask_async(f"burst {i}") for i in range(n)))
        assert not probe.done(), "the probe ended before the burst: the test proves nothing"
        return (await probe).model, [r.model for r in burst], state


def _wait_cooldown(opened_at: float) -> None:
    # The cooldown is a span of time: waiting for it is waiting on the clock itself.
    time.sleep(max(0.0, opened_at + COOLDOWN - time.monotonic()) + 0.05)


def test_breaker_opens_stops_traffic_probes_once_and_closes(tmp_path: Path) -> None:
    with running_sim(SimOptions(seed=21)) as bad, running_sim(SimOptions(seed=22)) as good:
        sims = {"a": bad, "b": good, "c": bad}
        with gateway_for(sims, BREAKER_MODELS, tmp_path, circuit_breaker={
            "failure_threshold": 3, "cooldown_secs": COOLDOWN,
        }) as root:
            client = sdk(root)
            assert metric(root, "gateway_circuit_state", model="flaky") == 0
            sim_faults(bad, error_rate=1.0)
            for i in range(3):
                assert circuit(root, "flaky") == "closed"
                assert ask(client, "flaky", f"fail {i}").model == "steady"
            opened_at = time.monotonic()
            assert circuit(root, "flaky") == "open"
            assert metric(root, "gateway_circuit_state", model="flaky") == 2
            assert len(attempts(bad, "flaky")) == 3
            # Open: no traffic reaches the failing sim, requests go to the fallback at once.
            for i in range(5):
                assert ask(client, "flaky", f"while open {i}").model == "steady"
            assert len(attempts(bad, "flaky")) == 3

            # A failed probe re-opens the circuit with a fresh cooldown.
            _wait_cooldown(opened_at)
            assert ask(client, "flaky", "probe one").model == "steady"
            reopened_at = time.monotonic()
            assert len(attempts(bad, "flaky")) == 4
            assert circuit(root, "flaky") == "open"
            assert ask(client, "flaky", "fresh cooldown").model == "steady"
            assert len(attempts(bad, "flaky")) == 4

            # Recovered, and slow enough that a burst arrives while the probe is in flight.
            sim_faults(bad)
            sim_script(bad, [{"headers_delay_ms": 1500}], model="flaky")
            _wait_cooldown(reopened_at)
            probe, burst, during = asyncio.run(_burst_during_probe(root, bad, "flaky", 20))
            assert during == "half_open"
            assert probe == "flaky"
            assert burst == ["steady"] * 20
            assert len(attempts(bad, "flaky")) == 5  # exactly one probe
            assert circuit(root, "flaky") == "closed"
            assert metric(root, "gateway_circuit_state", model="flaky") == 0
            assert ask(client, "flaky", "closed again").model == "flaky"


def test_open_circuit_without_fallbacks_is_503_no_backend_available(tmp_path: Path) -> None:
    with running_sim(SimOptions(seed=23)) as bad, running_sim(SimOptions(seed=24)) as good:
        sims = {"a": bad, "b": good, "c": bad}
        with gateway_for(sims, BREAKER_MODELS, tmp_path, circuit_breaker={
            "failure_threshold": 2, "cooldown_secs": 60,
        }) as root:
            client = sdk(root)
            sim_script(bad, [{"status": 500}] * 2, model="alone")
            for _ in range(2):
                with pytest.raises(openai.InternalServerError):
                    ask(client, "alone", "down")
            assert circuit(root, "alone") == "open"
            for stream in (False, True):
                response = httpx.post(f"{root}/v1/chat/completions", json={
                    **chat_body("still down", "alone"), "stream": stream})
                assert response.status_code == 503
                assert response.json()["error"]["code"] == "no_backend_available"
            assert len(attempts(bad, "alone")) == 2
            # The breaker counts attempts per model: "flaky" on the same sim is untouched.
            assert circuit(root, "flaky") == "closed"


# -- 4. served model and usage -------------------------------------------------------------

PRICED: list[dict[str, Any]] = [
    {"id": "one", "backend": "a", "fallbacks": ["two", "three"],
     "input_per_mtok": 1.0, "output_per_mtok": 10.0},
    {"id": "two", "backend": "b", "input_per_mtok": 2.0, "output_per_mtok": 20.0},
    {"id": "three", "backend": "c", "prefill": "assistant"},
]


def test_non_stream_names_and_bills_only_the_served_model(
    sims3: dict[str, str], tmp_path: Path
) -> None:
    for root in sims3.values():
        httpx.post(f"{root}/_sim/reset").raise_for_status()
    with gateway_for(sims3, PRICED, tmp_path) as root:
        sim_script(sims3["a"], [{"status": 500}])
        raw = sdk(root).chat.completions.with_raw_response.create(
            model="one", messages=[{"role": "user", "content": "bill me once"}])
        reply = raw.parse()
        assert reply.model == "two" and raw.headers["x-gateway-model"] == "one"
        assert raw.headers["x-gateway-failovers"] == "1"
        assert reply.choices[0].message.content == full_answer("bill me once", 24)
        # The sim's own usage of the served attempt (3 prompt tokens by its count), nothing
        # of the failed one: not in usage, not in the cost, not in the token metrics.
        assert reply.usage is not None
        assert (reply.usage.prompt_tokens, reply.usage.completion_tokens) == (3, 24)
        assert float(raw.headers["x-gateway-cost-usd"]) == pytest.approx(
            (3 * 2.0 + 24 * 20.0) / 1e6, abs=1e-6)
        assert metric(root, "gateway_tokens_total", model="one", kind="prompt") == 0
        assert metric(root, "gateway_tokens_total", model="two", kind="completion") == 24


def test_stream_after_continuation_names_the_served_model_and_sums_usage(
    sims3: dict[str, str], tmp_path: Path
) -> None:
    for root in sims3.values():
        httpx.post(f"{root}/_sim/reset").raise_for_status()
    with gateway_for(sims3, PRICED, tmp_path) as root:
        sim_script(sims3["a"], [{"die_after_tokens": 7}])
        sim_script(sims3["b"], [{"error_event_after_tokens": 5}])
        body = raw_stream(root, chat_body("three hands", "one",
                                          stream_options={"include_usage": True}))
        events = events_of(body)
        assert_one_clean_stream(events)
        assert chat_text(events) == full_answer("three hands", 24)
        chunks = chunks_of(events)
        content = [c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]
        assert [c["model"] for c in content] == ["one"] * 7 + ["two"] * 5 + ["three"] * 12
        # Every chunk after the last move names the model that produced it, usage included.
        assert all(c["model"] == "three" for c in chunks[chunks.index(content[12]):])
        usage = [c["usage"] for c in chunks if c.get("usage")]
        assert len(usage) == 1
        last_usage = attempts(sims3["c"])[-1]
        assert last_usage["tokens_sent"] == 12
        assert usage[0]["completion_tokens"] == 7 + 5 + 12
        assert usage[0]["total_tokens"] == usage[0]["prompt_tokens"] + 24
        # Spend and token metrics agree with what the client was told.
        billed = sum(metric(root, "gateway_tokens_total", model=m, kind="completion")
                     for m in ("one", "two", "three"))
        assert billed == 24
        status = admin_status(root)["failover"]
        kinds = [(m["from_model"], m["to_model"], m["kind"], m["outcome"])
                 for m in status["recent"]]
        assert kinds == [("one", "two", "continuation", "failure"),
                         ("two", "three", "continuation", "success")]


# -- 5. tool calls -------------------------------------------------------------------------

def tool_calls_of(events: list[Any]) -> list[dict[str, Any]]:
    return [call for c in chunks_of(events) if c.get("choices")
            for call in c["choices"][0]["delta"].get("tool_calls") or []]


def test_stream_broken_inside_tool_arguments_ends_with_an_error_event(
    gw3: str, sims3: dict[str, str]
) -> None:
    sim_script(sims3["a"], [{"die_after_tokens": 2}])
    body = raw_stream(gw3, chat_body("[tool] weather", "one", tools=TOOLS))
    events = events_of(body)
    assert "[DONE]" not in events
    assert "error" in events[-1] and len([e for e in chunks_of(events) if "error" in e]) == 1
    calls = tool_calls_of(events)
    # Only the broken attempt's call reached the client: one header, its first two pieces.
    assert len([c for c in calls if c.get("id")]) == 1
    arguments = "".join(c["function"].get("arguments") or "" for c in calls)
    assert tool_arguments("[tool] weather").startswith(arguments) and len(arguments) == 12
    assert attempts(sims3["b"]) == [] and attempts(sims3["c"]) == []


@pytest.mark.parametrize("die_after", [0, None], ids=["after-header", "before-header"])
def test_tool_call_restarts_on_the_next_candidate_when_no_arguments_reached_the_client(
    gw3: str, sims3: dict[str, str], die_after: int | None
) -> None:
    prompt = f"[tool] restart {die_after}"
    sim_script(sims3["a"], [{"die_after_tokens": 0}] if die_after == 0 else [{"status": 500}])
    stream = sdk(gw3).chat.completions.create(
        model="one", messages=[{"role": "user", "content": prompt}], tools=TOOLS, stream=True)
    chunks: list[Any] = list(stream)
    calls = [call for c in chunks if c.choices for call in c.choices[0].delta.tool_calls or []]
    headers = [c for c in calls if c.id]
    assert len(headers) == 1 and headers[0].function.name == "lookup"  # type: ignore[union-attr]
    arguments = "".join(c.function.arguments or "" for c in calls)  # type: ignore[union-attr]
    assert orjson.loads(arguments) == orjson.loads(tool_arguments(prompt))
    assert chunks[-1].choices[0].finish_reason == "tool_calls"
    assert len({c.id for c in chunks}) == 1
    assert len(attempts(sims3["a"])) == 1
    # The restart is the original request (nothing to continue from), not a continuation.
    restart = attempts(sims3["b"])[-1]["body"]["messages"]
    assert restart == [{"role": "user", "content": prompt}]


# -- 6. continuation forms -----------------------------------------------------------------

FORMS: list[dict[str, Any]] = [
    {"id": "to-asst", "backend": "a", "fallbacks": ["asst", "tail"]},
    {"id": "to-none", "backend": "a", "fallbacks": ["none", "tail"]},
    {"id": "asst", "backend": "b", "prefill": "assistant"},
    {"id": "none", "backend": "b"},
    {"id": "tail", "backend": "c"},
]


@pytest.fixture(scope="module")
def forms_gw(sims3: dict[str, str], tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with gateway_for(sims3, FORMS, tmp_path_factory.mktemp("forms"),
                     circuit_breaker={"failure_threshold": 1000}) as root:
        yield root


@pytest.fixture
def forms(forms_gw: str, sims3: dict[str, str]) -> str:
    for root in sims3.values():
        httpx.post(f"{root}/_sim/reset").raise_for_status()
    return forms_gw


def continued(root: str, sims3: dict[str, str], model: str, prompt: str, cut: int = 5,
              **extra: Any) -> list[Any]:
    sim_script(sims3["a"], [{"die_after_tokens": cut}])
    events = events_of(raw_stream(root, chat_body(prompt, model, **extra)))
    assert_one_clean_stream(events)
    return events


def test_prefill_assistant_continues_a_trailing_assistant_message(
    forms: str, sims3: dict[str, str]
) -> None:
    events = continued(forms, sims3, "to-asst", "prefill form")
    assert chat_text(events) == full_answer("prefill form", 24)
    sent = attempts(sims3["b"])[-1]["body"]
    assert sent["model"] == "asst"
    assert sent["messages"] == [{"role": "user", "content": "prefill form"},
                                {"role": "assistant", "content": full_answer("prefill form", 5)}]


def test_prefill_none_quotes_the_text_in_a_final_user_message(
    forms: str, sims3: dict[str, str]
) -> None:
    events = continued(forms, sims3, "to-none", "quote form")
    assert chat_text(events) == full_answer("quote form", 24)
    messages = attempts(sims3["b"])[-1]["body"]["messages"]
    assert len(messages) == 2 and messages[0] == {"role": "user", "content": "quote form"}
    assert messages[1]["role"] == "user"
    assert full_answer("quote form", 5) in messages[1]["content"]


def test_echoed_prefix_is_stripped(forms: str, sims3: dict[str, str]) -> None:
    sim_script(sims3["b"], [{"echo_prefix": True}])
    events = continued(forms, sims3, "to-none", "echo echo")
    assert chat_text(events) == full_answer("echo echo", 24)
    assert attempts(sims3["b"])[-1]["tokens_sent"] == 24  # the sim did repeat the 5 tokens


@pytest.mark.parametrize("model, rejected, retried", [
    ("to-asst", {"reject_prefill": True}, "user"),
    ("to-none", {"status": 400, "message": "no quoting here"}, "assistant"),
], ids=["assistant-rejected", "quote-rejected"])
def test_rejected_continuation_is_retried_once_in_the_other_form(
    forms: str, sims3: dict[str, str], model: str, rejected: dict[str, Any], retried: str
) -> None:
    sim_script(sims3["b"], [rejected])
    prompt = f"rejected {retried}"
    events = continued(forms, sims3, model, prompt)
    assert chat_text(events) == full_answer(prompt, 24)
    seen = attempts(sims3["b"])
    assert [r["status"] for r in seen] == [400, 200]
    assert seen[1]["body"]["messages"][-1]["role"] == retried
    assert attempts(sims3["c"]) == []


def test_continuation_rejected_in_both_forms_moves_to_the_next_candidate(
    forms: str, sims3: dict[str, str]
) -> None:
    sim_script(sims3["b"], [{"status": 400}, {"status": 422}])
    events = continued(forms, sims3, "to-asst", "rejected twice")
    assert chat_text(events) == full_answer("rejected twice", 24)
    assert [r["status"] for r in attempts(sims3["b"])] == [400, 422]
    assert len(attempts(sims3["c"])) == 1
    assert {c["model"] for c in chunks_of(events)[-3:]} == {"tail"}


@pytest.mark.parametrize("model", ["to-asst", "to-none"])
def test_continuation_asks_only_for_the_tokens_still_allowed(
    forms: str, sims3: dict[str, str], model: str
) -> None:
    prompt = f"limited {model}"
    events = continued(forms, sims3, model, prompt, max_tokens=15)
    assert chat_text(events) == full_answer(prompt, 15)
    assert attempts(sims3["a"])[-1]["body"]["max_tokens"] == 15
    assert attempts(sims3["b"])[-1]["body"]["max_tokens"] == 10
    finish = [c["choices"][0]["finish_reason"] for c in chunks_of(events) if c["choices"]]
    assert finish[-1] == "length"


def test_legacy_completions_continue_with_the_prompt_extended(
    forms: str, sims3: dict[str, str]
) -> None:
    sim_script(sims3["a"], [{"die_after_tokens": 6}])
    prompt = "Once upon a time"
    for limit in (None, 20):
        extra = {} if limit is None else {"max_tokens": limit}
        body = {"model": "to-none", "prompt": prompt, "stream": True, **extra}
        sim_script(sims3["a"], [{"die_after_tokens": 6}])
        events = events_of(raw_stream(forms, body, path="completions"))
        assert_one_clean_stream(events)
        assert completion_text(events) == full_answer(prompt, limit or 24)
        sent = attempts(sims3["b"])[-1]["body"]
        assert sent["prompt"] == prompt + full_answer(prompt, 6)
        assert sent.get("max_tokens") == (None if limit is None else limit - 6)


def test_include_prefix_false_resends_the_original_and_relays_past_the_prefix(
    sims3: dict[str, str], tmp_path: Path
) -> None:
    for root in sims3.values():
        httpx.post(f"{root}/_sim/reset").raise_for_status()
    no_prefix = FAST.model_copy(update={"include_prefix": False})
    with gateway_for(sims3, FORMS, tmp_path, failover=no_prefix) as root:
        for model in ("to-asst", "to-none"):
            prompt = f"original again {model}"
            request = chat_body(prompt, model, max_tokens=18, temperature=0)
            events = continued(root, sims3, model, prompt, cut=7, max_tokens=18, temperature=0)
            assert chat_text(events) == full_answer(prompt, 18)
            sent = attempts(sims3["b"])[-1]
            assert sent["body"] == {**request, "model": model.removeprefix("to-"),
                                    "stream_options": {"include_usage": True}}
            assert sent["tokens_sent"] == 18  # the whole answer again; 7 of it held back


# -- 8. signals and failover accounting ----------------------------------------------------

def test_outcomes_are_counted_as_signals_and_moves(gw3: str, sims3: dict[str, str]) -> None:
    a, b = sims3["a"], sims3["b"]
    client = sdk(gw3)

    def chat(rid: str, prompt: str, stream: bool = False) -> str:
        if stream:
            with httpx.stream("POST", f"{gw3}/v1/chat/completions", json=chat_body(prompt, "one"),
                              headers={"x-request-id": rid}, timeout=20) as response:
                body = response.read().decode()
            assert_one_clean_stream(events_of(body))
            return chat_text(events_of(body))
        reply = client.chat.completions.create(
            model="one", messages=[{"role": "user", "content": prompt}],
            extra_headers={"x-request-id": rid})
        assert reply.choices[0].message.content is not None
        return reply.choices[0].message.content

    assert chat("r-ok", "fine") == full_answer("fine", 24)
    sim_script(a, [{"status": 500}])
    chat("r-500", "five hundred")
    sim_script(a, [{"ttft_ms": 3000}])
    chat("r-slow", "silent", stream=True)
    sim_script(a, [{"die_after_tokens": 5}])
    assert chat("r-cut", "cut mid", stream=True) == full_answer("cut mid", 24)
    sim_script(a, [{"die_after_tokens": 0}])
    assert chat("r-reset", "reset early", stream=True) == full_answer("reset early", 24)
    sim_script(a, [{"status": 500}])
    sim_script(b, [{"status": 502}])
    chat("r-two-down", "two down")
    sim_script(a, [{"status": 400, "message": "bad request"}])
    with pytest.raises(openai.BadRequestError):
        chat("r-400", "bad")
    sim_script(a, [{"status": 429, "retry_after": 30}])
    chat("r-429", "limited")

    def signals(model: str) -> dict[str, float]:
        names = ("success", "server_error", "rate_limited", "timeout", "client_error")
        return {s: metric(gw3, "gateway_upstream_signals_total", model=model, signal=s)
                for s in names}

    assert signals("one") == {"success": 1, "server_error": 4, "rate_limited": 1,
                              "timeout": 1, "client_error": 1}
    assert signals("two") == {"success": 5, "server_error": 1, "rate_limited": 0,
                              "timeout": 0, "client_error": 0}
    assert signals("three")["success"] == 1
    moves = {(f, t, o): metric(gw3, "gateway_failovers_total", from_model=f, to_model=t,
                               outcome=o)
             for f, t in (("one", "two"), ("two", "three")) for o in ("success", "failure")}
    assert moves == {("one", "two", "success"): 5, ("one", "two", "failure"): 1,
                     ("two", "three", "success"): 1, ("two", "three", "failure"): 0}
    failover = admin_status(gw3)["failover"]
    assert (failover["attempts"], failover["successes"]) == (7, 6)
    recent = [(m["request_id"], m["from_model"], m["to_model"], m["kind"], m["outcome"])
              for m in failover["recent"]]
    assert recent == [
        ("r-500", "one", "two", "retry", "success"),
        ("r-slow", "one", "two", "retry", "success"),
        ("r-cut", "one", "two", "continuation", "success"),
        ("r-reset", "one", "two", "retry", "success"),  # cut before the first byte: a retry
        ("r-two-down", "one", "two", "retry", "failure"),
        ("r-two-down", "two", "three", "retry", "success"),
        ("r-429", "one", "two", "retry", "success"),
    ]
    assert all(isinstance(m["at"], float) for m in failover["recent"])


def test_a_stream_cut_right_at_its_limit_is_finished_by_the_gateway(
    forms: str, sims3: dict[str, str]
) -> None:
    events = continued(forms, sims3, "to-none", "exactly ten", cut=10, max_tokens=10,
                       stream_options={"include_usage": True})
    assert chat_text(events) == full_answer("exactly ten", 10)
    chunks = chunks_of(events)
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 10
    assert attempts(sims3["b"]) == []  # nothing was left to ask anyone for
