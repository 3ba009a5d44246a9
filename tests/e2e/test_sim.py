"""The simulator over real HTTP: uvicorn on loopback, driven by the official OpenAI SDK."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest

from gateway.sim.options import Faults, SimModel, SimOptions
from gateway.sim.testing import running_sim, sim_requests, sim_reset, sim_script, wait_for
from gateway.sim.text import full_answer

KEYS = ("sk-sim-alpha-1111", "sk-sim-beta-2222")


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    options = SimOptions(
        models=(
            SimModel(name="sim-a", quality={"code": 1.0}),
            SimModel(name="sim-small", context_window=10),
        ),
        valid_keys=KEYS,
        default_tokens=12,
    )
    with running_sim(options) as base_url:
        yield base_url


@pytest.fixture()
def base_url(sim: str) -> str:
    sim_reset(sim)
    return sim


def client(base_url: str, key: str = KEYS[0]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0)


def test_chat_non_stream(base_url: str) -> None:
    done = client(base_url).chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "hello [task:code]"}]
    )
    assert done.choices[0].message.content == full_answer("hello [task:code]", 12)
    assert done.choices[0].finish_reason == "stop"
    assert done.usage is not None and done.usage.completion_tokens == 12
    assert done.model == "sim-a" and done.id.startswith("chatcmpl-sim-")
    answer = httpx.get(f"{base_url}/_sim/answers/{done.id}").json()
    assert answer == {"correct": True, "model": "sim-a", "task": "code"}


def test_chat_stream_with_usage(base_url: str) -> None:
    stream = client(base_url).chat.completions.create(
        model="any-name",
        messages=[{"role": "user", "content": "stream me"}],
        stream=True,
        stream_options={"include_usage": True},
        max_tokens=5,
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full_answer("stream me", 5)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "length"
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 5
    assert len({c.id for c in chunks}) == 1


def test_completions_stream_and_continuation(base_url: str) -> None:
    sdk = client(base_url)
    whole = sdk.completions.create(model="sim-a", prompt="Once upon")
    assert whole.choices[0].text == full_answer("Once upon", 12)
    prefix = full_answer("Once upon", 4)
    stream = sdk.completions.create(model="sim-a", prompt="Once upon" + prefix, stream=True)
    rest = "".join(c.choices[0].text for c in stream if c.choices)
    assert prefix + rest == whole.choices[0].text


def test_embeddings_default_base64(base_url: str) -> None:
    sdk = client(base_url)
    result = sdk.embeddings.create(model="sim-a", input=["one", "two"])
    floats = sdk.embeddings.create(model="sim-a", input="one", encoding_format="float")
    assert len(result.data) == 2 and len(result.data[0].embedding) == 16
    assert result.data[0].embedding == floats.data[0].embedding
    assert result.data[0].embedding != result.data[1].embedding


def test_models_list_and_retrieve(base_url: str) -> None:
    sdk = client(base_url)
    assert [m.id for m in sdk.models.list()] == ["sim-a", "sim-small"]
    assert sdk.models.retrieve("sim-a").id == "sim-a"


def test_bad_key_is_401(base_url: str) -> None:
    with pytest.raises(openai.AuthenticationError):
        client(base_url, key="sk-wrong").models.list()


def test_context_window_exceeded(base_url: str) -> None:
    with pytest.raises(openai.BadRequestError) as info:
        client(base_url).chat.completions.create(
            model="sim-small", messages=[{"role": "user", "content": "x" * 200}]
        )
    assert info.value.code == "context_length_exceeded"


def test_scripted_429_with_retry_after(base_url: str) -> None:
    sim_script(base_url, [{"status": 429, "retry_after": 7}])
    with pytest.raises(openai.RateLimitError) as info:
        client(base_url).chat.completions.create(
            model="sim-a", messages=[{"role": "user", "content": "hi"}]
        )
    assert info.value.response.headers["retry-after"] == "7"
    assert info.value.code == "rate_limit_exceeded"
    # The script ran out: normal behaviour resumes.
    ok = client(base_url).chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "hi"}]
    )
    assert ok.choices[0].message.content == full_answer("hi", 12)


def test_die_after_tokens_breaks_the_stream(base_url: str) -> None:
    sim_script(base_url, [{"die_after_tokens": 3}])
    stream = client(base_url).chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "die"}], stream=True
    )
    received: list[str] = []
    with pytest.raises(openai.APIConnectionError) as info:
        for chunk in stream:
            received.append(chunk.choices[0].delta.content or "")
    assert "RemoteProtocolError" in type(info.value.__cause__).__name__
    assert "".join(received) == full_answer("die", 3)
    record = wait_for(lambda: [r for r in sim_requests(base_url) if r["outcome"] == "died"])[0]
    assert record["tokens_sent"] == 3


def test_die_is_a_protocol_error_for_httpx(base_url: str) -> None:
    sim_script(base_url, [{"die_after_tokens": 0}])
    body = {"model": "sim-a", "stream": True, "messages": [{"role": "user", "content": "d"}]}
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=base_url, headers=headers) as http:
        with pytest.raises(httpx.RemoteProtocolError):
            http.post("/v1/chat/completions", json=body).read()


def test_error_event_and_no_done(base_url: str) -> None:
    sim_script(base_url, [{"error_event_after_tokens": 2}, {"no_done": True}])
    body = {"model": "sim-a", "stream": True, "messages": [{"role": "user", "content": "e"}]}
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=base_url, headers=headers) as http:
        first = http.post("/v1/chat/completions", json=body).text
        second = http.post("/v1/chat/completions", json=body).text
    assert first.count("\n\ndata: ") == 3 and '"error"' in first and "[DONE]" not in first
    assert '"finish_reason":"stop"' in second and "[DONE]" not in second


def test_request_log_records_key_and_disconnect(base_url: str) -> None:
    sim_script(base_url, [{"stall_after_tokens": 2}])
    sdk = client(base_url, key=KEYS[1])
    stream = sdk.chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "stall"}], stream=True
    )
    iterator = iter(stream)
    for _ in range(3):  # the role chunk and two tokens
        next(iterator)
    closed_at = time.time()
    stream.close()
    record = wait_for(
        lambda: [r for r in sim_requests(base_url) if r["disconnected_at"] is not None], 1.0
    )[0]
    assert record["auth"] == KEYS[1]
    assert record["outcome"] == "stalled" and record["tokens_sent"] == 2
    assert record["disconnected_at"] - closed_at < 1.0


def test_headers_delay_and_ttft_non_stream(base_url: str) -> None:
    sim_script(base_url, [{"headers_delay_ms": 150, "ttft_ms": 100}])
    started = time.monotonic()
    client(base_url).chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "slow"}]
    )
    assert time.monotonic() - started >= 0.25


def test_global_faults_endpoint(base_url: str) -> None:
    httpx.post(f"{base_url}/_sim/faults", json={"error_rate": 1.0}).raise_for_status()
    with pytest.raises(openai.InternalServerError):
        client(base_url).chat.completions.create(
            model="sim-a", messages=[{"role": "user", "content": "x"}]
        )
    sim_reset(base_url)
    assert httpx.get(f"{base_url}/_sim/faults").json() == Faults().to_dict()


def test_stream_headers_go_out_before_the_first_token(base_url: str) -> None:
    sim_script(base_url, [{"ttft_ms": 300}])
    body = {"model": "sim-a", "stream": True, "messages": [{"role": "user", "content": "t"}]}
    headers = {"authorization": f"Bearer {KEYS[0]}"}
    with httpx.Client(base_url=base_url, headers=headers) as http:
        started = time.monotonic()
        with http.stream("POST", "/v1/chat/completions", json=body) as response:
            headers_after = time.monotonic() - started
            lines = response.iter_lines()
            assert '"role":"assistant"' in next(lines)  # the role chunk comes with the headers
            role_after = time.monotonic() - started
            assert [line for line in lines if line][-1] == "data: [DONE]"
            done_after = time.monotonic() - started
    assert headers_after < 0.2 and role_after < 0.2 and done_after >= 0.3


def test_sdk_tool_call_stream(base_url: str) -> None:
    tools: list[Any] = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    stream = client(base_url).chat.completions.create(
        model="sim-a",
        messages=[{"role": "user", "content": "call it [tool]"}],
        tools=tools,
        stream=True,
    )
    chunks = [c for c in stream if c.choices]
    calls = [c.choices[0].delta.tool_calls for c in chunks if c.choices[0].delta.tool_calls]
    assert calls[0][0].function is not None and calls[0][0].function.name == "lookup"
    arguments = "".join((c[0].function.arguments or "") for c in calls if c[0].function)
    assert arguments.startswith("{") and arguments.endswith("}")
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_disconnect_mid_stream_is_recorded(base_url: str) -> None:
    sim_script(base_url, [{"token_delay_ms": 50}])
    stream = client(base_url).chat.completions.create(
        model="sim-a", messages=[{"role": "user", "content": "slowly"}], stream=True
    )
    iterator = iter(stream)
    next(iterator)
    next(iterator)
    stream.close()
    record = wait_for(
        lambda: [r for r in sim_requests(base_url) if r["outcome"] == "disconnected"], 1.0
    )[0]
    assert record["disconnected_at"] is not None and 1 <= record["tokens_sent"] < 12
