"""The simulator app in-process (httpx ASGITransport): wire shapes, faults, script, log."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import orjson
import pytest

from gateway.sim.app import create_sim_app
from gateway.sim.options import Faults, SimModel, SimOptions
from gateway.sim.text import full_answer

OPTIONS = SimOptions(
    models=(
        SimModel(name="good", quality={"code": 1.0}, input_per_mtok=1.0, output_per_mtok=2.0),
        SimModel(name="bad", quality={"code": 0.0}, faults=Faults(reject_prefill=True)),
    ),
    strict_models=True,
    default_tokens=8,
)


@pytest.fixture()
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_sim_app(OPTIONS)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://sim") as client:
        yield client


def events(body: str) -> list[Any]:
    """The SSE events of a body: parsed JSON, or the raw text when it is not JSON."""
    assert "\r" not in body
    out: list[Any] = []
    for block in body.split("\n\n"):
        if not block:
            continue
        assert block.startswith("data: ") and "\n" not in block
        data = block[len("data: ") :]
        try:
            out.append(orjson.loads(data))
        except orjson.JSONDecodeError:
            out.append(data)
    return out


def chat(content: str = "hi", model: str = "good", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": content}], **extra}


async def test_stream_wire_format(http: httpx.AsyncClient) -> None:
    r = await http.post(
        "/v1/chat/completions",
        json=chat(stream=True, stream_options={"include_usage": True}),
    )
    assert r.headers["content-type"].startswith("text/event-stream")
    evs = events(r.text)
    assert evs[-1] == "[DONE]"
    chunks = evs[:-1]
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    tokens = [c["choices"][0]["delta"]["content"] for c in chunks[1:9]]
    assert "".join(tokens) == full_answer("hi", 8)
    assert chunks[9]["choices"][0] == {
        "index": 0,
        "delta": {},
        "logprobs": None,
        "finish_reason": "stop",
    }
    assert chunks[10]["choices"] == [] and chunks[10]["usage"]["completion_tokens"] == 8
    assert {c["id"] for c in chunks} == {chunks[0]["id"]}
    assert {c["model"] for c in chunks} == {"good"}
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}
    assert {c["created"] for c in chunks} == {chunks[0]["created"]}


async def test_answer_does_not_depend_on_the_model(http: httpx.AsyncClient) -> None:
    a = (await http.post("/v1/chat/completions", json=chat("same"))).json()
    b = (await http.post("/v1/chat/completions", json=chat("same", model="bad"))).json()
    assert a["choices"][0]["message"]["content"] == b["choices"][0]["message"]["content"]


async def test_correctness_headers_and_answers(http: httpx.AsyncClient) -> None:
    good = await http.post("/v1/chat/completions", json=chat("x [task:code] [nonce:1]"))
    bad = await http.post("/v1/chat/completions", json=chat("x [task:code]", model="bad"))
    assert good.headers["x-sim-correct"] == "true" and good.headers["x-sim-task"] == "code"
    assert bad.headers["x-sim-correct"] == "false"
    answer = (await http.get(f"/_sim/answers/{good.json()['id']}")).json()
    assert answer == {"correct": True, "model": "good", "task": "code"}
    assert (await http.get("/_sim/answers/nonce:1")).json()["model"] == "good"
    assert (await http.get("/_sim/answers/nope")).status_code == 404


async def test_errors_are_openai_shaped(http: httpx.AsyncClient) -> None:
    unknown = await http.post("/v1/chat/completions", json=chat(model="nope"))
    assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    broken = await http.post("/v1/chat/completions", content=b"{not json")
    assert broken.status_code == 400
    assert broken.json()["error"]["type"] == "invalid_request_error"
    no_messages = await http.post("/v1/chat/completions", json={"model": "good"})
    assert no_messages.status_code == 400
    route = await http.get("/v2/nothing")
    assert route.status_code == 404 and "error" in route.json()


async def test_reject_prefill_is_per_model(http: httpx.AsyncClient) -> None:
    body = chat()
    body["messages"].append({"role": "assistant", "content": full_answer("hi", 2)})
    assert (
        await http.post("/v1/chat/completions", json={**body, "model": "bad"})
    ).status_code == 400
    ok = await http.post("/v1/chat/completions", json=body)
    assert (
        ok.json()["choices"][0]["message"]["content"]
        == full_answer("hi", 8)[len(full_answer("hi", 2)) :]
    )


async def test_scripted_faults_in_order(http: httpx.AsyncClient) -> None:
    steps = [
        {"status": 500},
        {"status": 400, "code": "context_length_exceeded", "message": "too long"},
        {"malformed": True, "no_done": True},
        {"error_event_after_tokens": 1},
    ]
    r = await http.post("/_sim/script", json={"steps": steps, "model": "good"})
    assert r.json() == {"pending": {"good": 4}}
    other = await http.post("/v1/chat/completions", json=chat(model="bad"))
    assert other.status_code == 200  # the script is for "good" only
    first = await http.post("/v1/chat/completions", json=chat())
    assert first.status_code == 500 and first.json()["error"]["type"] == "server_error"
    second = await http.post("/v1/chat/completions", json=chat())
    assert second.json()["error"] == {
        "message": "too long",
        "type": "invalid_request_error",
        "param": None,
        "code": "context_length_exceeded",
    }
    third = events((await http.post("/v1/chat/completions", json=chat(stream=True))).text)
    assert third[2] == "{not json" and third[-1] != "[DONE]"
    assert third[-1]["choices"][0]["finish_reason"] == "stop"
    fourth = events((await http.post("/v1/chat/completions", json=chat(stream=True))).text)
    assert "error" in fourth[-1] and len(fourth) == 3
    assert (await http.post("/v1/chat/completions", json=chat())).status_code == 200
    outcomes = [r["outcome"] for r in (await http.get("/_sim/requests")).json()]
    assert outcomes == ["ok", "error", "error", "ok", "error_event", "ok"]


async def test_bad_script_is_rejected(http: httpx.AsyncClient) -> None:
    r = await http.post("/_sim/script", json={"steps": [{"stauts": 500}]})
    assert r.status_code == 400 and "stauts" in r.json()["error"]["message"]


async def test_faults_override_and_reset(http: httpx.AsyncClient) -> None:
    await http.post("/_sim/faults", json={"rate_limit_rate": 1.0, "retry_after": 0.5})
    limited = await http.post("/v1/chat/completions", json=chat())
    assert limited.status_code == 429 and limited.headers["retry-after"] == "0.5"
    assert limited.json()["error"]["code"] == "rate_limit_exceeded"
    await http.post("/_sim/reset")
    assert (await http.post("/v1/chat/completions", json=chat())).status_code == 200
    log = (await http.get("/_sim/requests")).json()
    assert len(log) == 1 and log[0]["body"]["model"] == "good"


async def test_tool_call_stream(http: httpx.AsyncClient) -> None:
    tools = [{"type": "function", "function": {"name": "lookup", "parameters": {}}}]
    r = await http.post("/v1/chat/completions", json=chat("go [tool]", stream=True, tools=tools))
    chunks = events(r.text)[:-1]
    head = chunks[0]["choices"][0]["delta"]["tool_calls"][0]
    assert head["function"] == {"name": "lookup", "arguments": ""} and head["id"]
    pieces = [
        c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] for c in chunks[1:-1]
    ]
    assert len(pieces) > 2 and orjson.loads("".join(pieces))
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"
    whole = (await http.post("/v1/chat/completions", json=chat("go [tool]", tools=tools))).json()
    call = whole["choices"][0]["message"]["tool_calls"][0]
    assert call["function"]["arguments"] == "".join(pieces)


async def test_legacy_completions(http: httpx.AsyncClient) -> None:
    whole = (await http.post("/v1/completions", json={"model": "good", "prompt": "p"})).json()
    assert whole["object"] == "text_completion"
    assert whole["choices"][0]["text"] == full_answer("p", 8)
    r = await http.post("/v1/completions", json={"model": "good", "prompt": "p", "stream": True})
    chunks = events(r.text)
    assert chunks[-1] == "[DONE]"
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == full_answer("p", 8)


async def test_echo_prefix_on_completion_continuation(http: httpx.AsyncClient) -> None:
    await http.post("/_sim/faults", json={"echo_prefix": True})
    prefix = full_answer("p", 3)
    r = await http.post("/v1/completions", json={"model": "good", "prompt": "p" + prefix})
    assert r.json()["choices"][0]["text"] == full_answer("p", 8)
    assert r.json()["usage"]["completion_tokens"] == 8


async def test_embeddings_and_models(http: httpx.AsyncClient) -> None:
    r = await http.post("/v1/embeddings", json={"model": "good", "input": ["a", "b"]})
    assert [d["index"] for d in r.json()["data"]] == [0, 1]
    assert len(r.json()["data"][0]["embedding"]) == 16
    models = (await http.get("/v1/models")).json()
    assert [m["id"] for m in models["data"]] == ["good", "bad"]
    assert models["data"][0]["output_per_mtok"] == 2.0
    assert (await http.get("/v1/models/good")).json()["object"] == "model"
    assert (await http.get("/v1/models/nope")).status_code == 404


async def test_valid_keys() -> None:
    app = create_sim_app(SimOptions(valid_keys=("sk-good-1234",)))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://s") as c:
        bad = await c.post(
            "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer x"}
        )
        assert bad.status_code == 401 and bad.json()["error"]["code"] == "invalid_api_key"
        ok = await c.post(
            "/v1/chat/completions", json=chat(), headers={"authorization": "Bearer sk-good-1234"}
        )
        assert ok.status_code == 200
        log = (await c.get("/_sim/requests")).json()
        assert [(r["auth"], r["status"]) for r in log] == [("x", 401), ("sk-good-1234", 200)]
