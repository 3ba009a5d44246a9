"""Validation of the few body fields the gateway itself uses; everything else passes through.

Only `model`, `messages`/`prompt`/`input`, `stream`, `stream_options`, `max_tokens` and
`max_completion_tokens` are checked, and only for the types the gateway relies on; a full
pydantic model of the body would cost more per request and reject fields the upstream knows.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from gateway.errors import InvalidRequest


class Endpoint(StrEnum):
    CHAT = "chat"
    COMPLETIONS = "completions"
    EMBEDDINGS = "embeddings"


UPSTREAM_PATH = {
    Endpoint.CHAT: "/chat/completions",
    Endpoint.COMPLETIONS: "/completions",
    Endpoint.EMBEDDINGS: "/embeddings",
}


@dataclass(slots=True)
class ClientRequest:
    endpoint: Endpoint
    body: dict[str, Any]
    model: str
    stream: bool
    include_usage: bool
    max_output_tokens: int | None
    prompt_tokens_estimate: int


def parse_body(endpoint: Endpoint, raw: bytes) -> ClientRequest:
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON (UTF-8)") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequest("'model' is required and must be a string", param="model")
    _check_input(endpoint, body)
    stream = body.get("stream", False)
    if stream is None:
        stream = False
    if not isinstance(stream, bool):
        raise InvalidRequest("'stream' must be a boolean", param="stream")
    if endpoint is Endpoint.EMBEDDINGS:
        stream = False
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise InvalidRequest("'stream_options' must be an object", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return ClientRequest(
        endpoint=endpoint,
        body=body,
        model=model,
        stream=stream,
        include_usage=include_usage,
        # An embedding has no output tokens; the default output estimate would overcharge it.
        max_output_tokens=0 if endpoint is Endpoint.EMBEDDINGS else _max_tokens(body),
        # About four bytes per token; JSON overhead makes this a slight overestimate,
        # which is the safe side for spend reservations.
        prompt_tokens_estimate=len(raw) // 4 + 1,
    )


def _check_input(endpoint: Endpoint, body: dict[str, Any]) -> None:
    if endpoint is Endpoint.CHAT:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise InvalidRequest(
                "'messages' is required and must be a non-empty array", param="messages"
            )
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("role"), str):
                raise InvalidRequest(
                    f"messages[{i}] must be an object with a string 'role'", param="messages"
                )
    elif endpoint is Endpoint.COMPLETIONS:
        prompt = body.get("prompt")
        if not isinstance(prompt, str | list):
            raise InvalidRequest("'prompt' is required (string or array)", param="prompt")
    else:
        value = body.get("input")
        if not isinstance(value, str | list) or not value:
            raise InvalidRequest("'input' is required (string or array)", param="input")


def _max_tokens(body: dict[str, Any]) -> int | None:
    for field in ("max_completion_tokens", "max_tokens"):
        value = body.get(field)
        if value is None:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise InvalidRequest(f"'{field}' must be a non-negative integer", param=field)
        return value
    return None
