"""The foundation through the real path: uvicorn gateway + sim, driven by the OpenAI SDK."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from gateway.sim.testing import sim_requests, sim_script
from gateway.sim.text import full_answer
from tests.harness import running_gateway, sim_config

MODELS = [
    {"id": "alpha", "backend": "a", "upstream_model": "up-alpha", "fallbacks": ["beta"],
     "input_per_mtok": 1.0, "output_per_mtok": 2.0},
    {"id": "beta", "backend": "b", "input_per_mtok": 0.5, "output_per_mtok": 1.0},
    {"id": "lonely", "backend": "a"},
]


@pytest.fixture(scope="module")
def gateway(sim_a: str, sim_b: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("state") / "state.db"
    config = sim_config({"a": sim_a, "b": sim_b}, MODELS, state_path=state)
    with running_gateway(config) as root:
        yield root


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="any", max_retries=0)


def test_chat_non_stream_relays_the_answer_and_headers(client: openai.OpenAI, sim_a: str) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="alpha", messages=[{"role": "user", "content": "hello there"}], seed=7
    )
    reply = raw.parse()
    assert reply.model == "alpha"
    assert reply.choices[0].message.content == full_answer("hello there", 24)
    assert raw.headers["x-gateway-model"] == "alpha"
    assert raw.headers["x-gateway-backend"] == "a"
    assert raw.headers["x-gateway-failovers"] == "0"
    cost = float(raw.headers["x-gateway-cost-usd"])
    usage = reply.usage
    assert usage is not None
    expected = (usage.prompt_tokens * 1.0 + usage.completion_tokens * 2.0) / 1e6
    assert cost == pytest.approx(expected, abs=2e-6)
    assert raw.headers["x-request-id"]
    seen = sim_requests(sim_a)[-1]
    assert seen["body"]["model"] == "up-alpha"
    assert seen["body"]["seed"] == 7  # fields the gateway does not use pass through


def test_client_request_id_is_echoed(client: openai.OpenAI) -> None:
    raw = client.chat.completions.with_raw_response.create(
        model="alpha", messages=[{"role": "user", "content": "x"}],
        extra_headers={"x-request-id": "my-own-id"},
    )
    assert raw.headers["x-request-id"] == "my-own-id"


def test_chat_stream_is_relayed_chunk_by_chunk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="alpha", messages=[{"role": "user", "content": "stream me"}], stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == full_answer("stream me", 24)
    assert {c.id for c in chunks} == {chunks[0].id}
    assert {c.model for c in chunks} == {"alpha"}
    usage_chunks = [c for c in chunks if c.usage is not None]
    assert len(usage_chunks) == 1 and usage_chunks[0].usage.completion_tokens == 24


def test_stream_wire_format_is_data_lines_and_one_done(gateway: str) -> None:
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json={
        "model": "alpha", "stream": True, "messages": [{"role": "user", "content": "wire"}],
    }) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["x-gateway-model"] == "alpha"
        assert response.headers["x-gateway-backend"] == "a"
        assert "x-gateway-cost-usd" not in response.headers
        body = response.read().decode()
    events = body.split("\n\n")
    assert events[-1] == ""
    assert all(e.startswith("data: ") and "\n" not in e for e in events[:-1])
    assert events[-2] == "data: [DONE]"
    assert body.count("[DONE]") == 1
    assert "\r" not in body


def test_async_client_stream_and_non_stream(gateway: str) -> None:
    async def run() -> tuple[str, str]:
        client = openai.AsyncOpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0)
        reply = await client.chat.completions.create(
            model="beta", messages=[{"role": "user", "content": "async"}]
        )
        stream = await client.chat.completions.create(
            model="beta", messages=[{"role": "user", "content": "async"}], stream=True
        )
        text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        await client.close()
        return reply.choices[0].message.content or "", text

    unary, streamed = asyncio.run(run())
    assert unary == streamed == full_answer("async", 24)


def test_legacy_completions_stream_and_non_stream(client: openai.OpenAI) -> None:
    reply = client.completions.create(model="alpha", prompt="Once upon")
    assert reply.choices[0].text == full_answer("Once upon", 24)
    assert reply.model == "alpha"
    stream = client.completions.create(model="alpha", prompt="Once upon", stream=True)
    assert "".join(c.choices[0].text for c in stream if c.choices) == full_answer("Once upon", 24)


def test_embeddings_default_base64_and_float(client: openai.OpenAI) -> None:
    default = client.embeddings.create(model="alpha", input="vector me")
    floats = client.embeddings.create(model="alpha", input="vector me", encoding_format="float")
    assert len(default.data[0].embedding) == 16
    assert default.data[0].embedding == pytest.approx(floats.data[0].embedding, rel=1e-6)


def test_models_list_and_retrieve(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert ids == {"alpha", "beta", "lonely", "auto", "auto:fast", "auto:best"}
    assert client.models.retrieve("beta").id == "beta"
    with pytest.raises(openai.NotFoundError) as raised:
        client.models.retrieve("nope")
    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_unknown_model_is_404_model_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert raised.value.body["code"] == "model_not_found"  # type: ignore[index]


def test_upstream_404_and_500_surface_as_typed_errors(client: openai.OpenAI, sim_a: str) -> None:
    sim_script(sim_a, [{"status": 404, "code": "model_not_found", "message": "no such model"}])
    with pytest.raises(openai.NotFoundError) as raised:
        client.chat.completions.create(model="lonely", messages=[{"role": "user", "content": "x"}])
    assert raised.value.body["message"] == "no such model"  # type: ignore[index]
    sim_script(sim_a, [{"status": 500}, {"status": 500}, {"status": 500}])
    with pytest.raises(openai.InternalServerError) as failed:
        client.chat.completions.create(model="lonely", messages=[{"role": "user", "content": "x"}])
    assert failed.value.status_code == 502
    assert failed.value.body["type"] == "upstream_error"  # type: ignore[index]


def test_upstream_timeout_is_504(gateway: str, sim_a: str, tmp_path: Path) -> None:
    sim_script(sim_a, [{"headers_delay_ms": 8000}] * 3)
    client = openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0, timeout=30)
    with pytest.raises(openai.APIStatusError) as raised:
        client.chat.completions.create(model="lonely", messages=[{"role": "user", "content": "x"}])
    assert raised.value.status_code == 504
    assert raised.value.body["type"] == "upstream_timeout"  # type: ignore[index]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        (b"{not json", None),
        (b'{"model": 5, "messages": []}', "model"),
        (b'{"model": "alpha"}', "messages"),
        (b'{"model": "alpha", "messages": "hi"}', "messages"),
        (b'{"model": "alpha", "messages": [{"role": "user", "content": "x"}], "stream": "yes"}',
         "stream"),
        (b'{"model": "alpha", "messages": [{"role": "user"}], "max_tokens": "many"}', "max_tokens"),
        (b"\xff\xfe not utf-8", None),
        (b"[1, 2]", None),
    ],
)
def test_bad_input_is_400_in_the_openai_shape(gateway: str, body: bytes, param: str | None) -> None:
    response = httpx.post(f"{gateway}/v1/chat/completions", content=body,
                          headers={"content-type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert set(error) == {"message", "type", "param", "code"}
    assert response.headers["x-request-id"]
    assert response.headers["x-should-retry"] == "false"


def test_body_over_the_limit_is_413(sim_a: str, tmp_path: Path) -> None:
    config = sim_config({"a": sim_a}, [MODELS[2]], state_path=tmp_path / "s.db",
                        server={"max_body_bytes": 1000})
    with running_gateway(config) as root:
        big = b'{"model": "lonely", "messages": [{"role": "user", "content": "%s"}]}' % (
            b"x" * 2000
        )
        response = httpx.post(f"{root}/v1/chat/completions", content=big)
        assert response.status_code == 413
        assert response.json()["error"]["code"] == "request_too_large"


def test_unknown_route_is_404_in_openai_shape(gateway: str) -> None:
    response = httpx.get(f"{gateway}/v1/nothing-here")
    assert response.status_code == 404
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"]


def test_health_and_readiness(gateway: str) -> None:
    assert httpx.get(f"{gateway}/healthz").status_code == 200
    assert httpx.get(f"{gateway}/readyz").status_code == 200
