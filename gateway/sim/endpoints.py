"""The inference endpoints' logic: chat completions, legacy completions and embeddings.

Each handler gets a request whose key, JSON body and model profile have been checked (see
app.py), validates the body's shape, asks `_fault_gate` for the fault decision (this consumes a
script step, so a request rejected for its shape never uses one up), plans the answer and
returns the response. Any problem is raised as `SimError`.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable
from typing import Any

from fastapi.responses import Response

from gateway.sim import answers, embeddings, text, wire
from gateway.sim.answers import Planned
from gateway.sim.errors import SimError, json_response
from gateway.sim.faults import Decision, decide
from gateway.sim.options import SimModel
from gateway.sim.state import Answer, RequestRecord, SimState
from gateway.sim.stream import SimResponse, StreamPlan, stream_events


def _fault_gate(state: SimState, record: RequestRecord, model: SimModel) -> Decision:
    """Consume a script step, decide the faults, and raise the error they call for."""
    step = state.next_step(model.name)
    record.step = step is not None
    d = decide(state.effective_faults(model), model, step, state.rng)
    if d.error_status is not None:
        raise SimError(
            d.error_status,
            d.error_message,
            code=d.error_code,
            type_=d.error_type,
            param=d.error_param,
            retry_after=d.retry_after,
            delay_s=d.headers_delay_s,
        )
    return d


def _limit(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SimError(400, f"{name} must be a non-negative integer", param=name)
        return value
    return None


def _check_context(model: SimModel, planned: Planned) -> None:
    if planned.prompt_tokens > model.context_window:
        raise SimError(
            400,
            f"This model's maximum context length is {model.context_window} tokens. However, "
            f"your messages resulted in {planned.prompt_tokens} tokens.",
            code="context_length_exceeded",
            param="messages",
        )


def _judge(
    state: SimState, record: RequestRecord, model: SimModel, planned: Planned
) -> dict[str, str]:
    """Decide correctness, remember it, and return the x-sim-* headers."""
    quality = model.quality_for(planned.task)
    correct = answers.is_correct(planned.prompt_key, model.name, planned.nonce, quality)
    record.task, record.correct = planned.task, correct
    answer = Answer(correct=correct, model=model.name, task=planned.task)
    if record.id is not None:
        state.remember(record.id, answer)
    if planned.nonce is not None:
        state.remember(f"nonce:{planned.nonce}", answer)
    return {
        "x-sim-correct": "true" if correct else "false",
        "x-sim-task": planned.task,
        "x-sim-seq": str(record.seq),
    }


def _respond(
    record: RequestRecord,
    d: Decision,
    planned: Planned,
    writer: wire.ChunkWriter,
    whole: Callable[[], dict[str, Any]],
    headers: dict[str, str],
    include_usage: bool,
) -> SimResponse:
    record.status = 200
    if not record.stream:
        record.tokens_sent = len(planned.pieces)
        delay = d.headers_delay_s + d.ttft_s + d.token_delay_s * len(planned.pieces)
        return json_response(200, whole(), record, headers=headers, delay_s=delay)
    plan = StreamPlan(planned.pieces, planned.finish_reason, planned.prompt_tokens, include_usage)
    events: AsyncGenerator[bytes, None] = stream_events(writer, plan, d, record)
    return SimResponse(
        status_code=200,
        body=events,
        record=record,
        media_type="text/event-stream",
        headers={**headers, "cache-control": "no-cache"},
        delay_s=d.headers_delay_s,
    )


def _include_usage(body: dict[str, Any]) -> bool:
    options = body.get("stream_options")
    return isinstance(options, dict) and options.get("include_usage") is True


async def chat(
    state: SimState, record: RequestRecord, body: dict[str, Any], model: SimModel
) -> Response:
    messages = body.get("messages")
    if (
        not isinstance(messages, list)
        or not messages
        or not all(isinstance(m, dict) and isinstance(m.get("role"), str) for m in messages)
    ):
        raise SimError(400, "messages must be a non-empty list of messages", param="messages")
    limit = _limit(body)
    d = _fault_gate(state, record, model)
    if d.reject_prefill and messages[-1].get("role") == "assistant":
        raise SimError(
            400,
            "This model does not support assistant message prefill. "
            "The conversation must end with a user message.",
            param="messages",
        )
    planned = answers.plan_chat(
        body, default_tokens=state.options.default_tokens, limit=limit, echo_prefix=d.echo_prefix
    )
    _check_context(model, planned)
    record.id = state.new_id("chatcmpl")
    headers = _judge(state, record, model, planned)
    env = wire.Envelope(record.id, int(record.at), model.name, _include_usage(body))
    tool = (
        wire.ToolCall(f"call_sim_{record.seq}", planned.tool.name, planned.tool.arguments)
        if planned.tool is not None
        else None
    )
    return _respond(
        record,
        d,
        planned,
        wire.ChatChunks(env, tool),
        lambda: wire.chat_response(
            env,
            planned.text,
            planned.finish_reason,
            planned.prompt_tokens,
            len(planned.pieces),
            tool,
        ),
        headers,
        env.include_usage,
    )


def _prompt_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return value[0]  # a batch: the simulator answers the first prompt only
    if isinstance(value, list) and all(isinstance(v, int) for v in value):
        return " ".join(map(str, value))
    raise SimError(400, "prompt must be a string, a list of strings or tokens", param="prompt")


async def completions(
    state: SimState, record: RequestRecord, body: dict[str, Any], model: SimModel
) -> Response:
    if "prompt" not in body:
        raise SimError(400, "you must provide a prompt parameter", param="prompt")
    prompt = _prompt_text(body["prompt"])
    limit = _limit(body)
    d = _fault_gate(state, record, model)
    planned = answers.plan_completion(
        prompt, default_tokens=state.options.default_tokens, limit=limit, echo_prefix=d.echo_prefix
    )
    _check_context(model, planned)
    record.id = state.new_id("cmpl")
    headers = _judge(state, record, model, planned)
    env = wire.Envelope(record.id, int(record.at), model.name, _include_usage(body))
    return _respond(
        record,
        d,
        planned,
        wire.CompletionChunks(env),
        lambda: wire.completion_response(
            env, planned.text, planned.finish_reason, planned.prompt_tokens, len(planned.pieces)
        ),
        headers,
        env.include_usage,
    )


async def create_embeddings(
    state: SimState, record: RequestRecord, body: dict[str, Any], model: SimModel
) -> Response:
    texts = embeddings.input_texts(body.get("input"))
    if texts is None:
        raise SimError(400, "input must be a string or a list of strings or tokens", param="input")
    encoding = body.get("encoding_format", "float")
    if encoding not in ("float", "base64"):
        raise SimError(400, "encoding_format must be 'float' or 'base64'", param="encoding_format")
    dims = body.get("dimensions", embeddings.DIMENSIONS)
    if isinstance(dims, bool) or not isinstance(dims, int) or not 1 <= dims <= 4096:
        raise SimError(400, "dimensions must be an integer in 1..4096", param="dimensions")
    record.stream = False
    d = _fault_gate(state, record, model)
    prompt_tokens = sum(max(1, text.estimate_tokens(t)) for t in texts)
    nonce = text.tags("\n".join(texts)).get("nonce")
    planned = Planned(texts[0], (), "stop", prompt_tokens, "embed", nonce)
    _check_context(model, planned)
    headers = _judge(state, record, model, planned)
    data = []
    for i, item in enumerate(texts):
        vector = embeddings.embedding_vector(item, dims)
        value: Any = embeddings.encode_base64(vector) if encoding == "base64" else vector
        data.append({"object": "embedding", "index": i, "embedding": value})
    payload = {
        "object": "list",
        "data": data,
        "model": model.name,
        "usage": {"prompt_tokens": planned.prompt_tokens, "total_tokens": planned.prompt_tokens},
    }
    record.status = 200
    delay = d.headers_delay_s + d.ttft_s
    return json_response(200, payload, record, headers=headers, delay_s=delay)
