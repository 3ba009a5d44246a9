"""OpenAI wire shapes the simulator writes: errors, SSE events, chunks and full responses.

Pure builders of plain dicts and bytes, nothing else. A stream is written by a `ChunkWriter`
(chat or legacy completions) so the fault logic in stream.py is shared by both endpoints.
SSE framing is the real one: `data: <json>\\n\\n`, LF only, no `event:`/`id:` fields.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import orjson

DONE = b"data: [DONE]\n\n"
MALFORMED = b"data: {not json\n\n"

_ERROR_TYPES = {
    400: "invalid_request_error",
    401: "invalid_request_error",
    403: "permission_error",
    404: "invalid_request_error",
    409: "invalid_request_error",
    413: "invalid_request_error",
    422: "invalid_request_error",
    429: "rate_limit_error",
}


def error_body(
    status: int,
    message: str | None = None,
    *,
    type_: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """OpenAI error JSON; the type follows from the status unless given."""
    default_type = _ERROR_TYPES.get(status, "server_error" if status >= 500 else "api_error")
    if code is None and status == 429:
        code = "rate_limit_exceeded"
    default_message = {
        429: "simulated rate limit reached",
        500: "simulated server error",
    }.get(status, f"simulated error {status}")
    return {
        "error": {
            "message": message or default_message,
            "type": type_ or default_type,
            "param": param,
            "code": code,
        }
    }


def sse(payload: dict[str, Any]) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass(frozen=True)
class ToolCall:
    id: str
    name: str
    arguments: str


@dataclass(frozen=True)
class Envelope:
    """What every chunk of one response repeats."""

    id: str
    created: int
    model: str
    include_usage: bool = False


class ChunkWriter(Protocol):
    def opening(self) -> list[dict[str, Any]]: ...
    def token(self, piece: str) -> dict[str, Any]: ...
    def finish(self, reason: str) -> dict[str, Any]: ...
    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]: ...


@dataclass(frozen=True)
class ChatChunks:
    env: Envelope
    tool_call: ToolCall | None = None

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.env.id,
            "object": "chat.completion.chunk",
            "created": self.env.created,
            "model": self.env.model,
            "system_fingerprint": None,
            "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        }
        if self.env.include_usage:
            # As OpenAI does: every chunk but the last carries usage: null.
            chunk["usage"] = None
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        if self.tool_call is None:
            return [self._chunk({"role": "assistant", "content": ""})]
        call = {
            "index": 0,
            "id": self.tool_call.id,
            "type": "function",
            "function": {"name": self.tool_call.name, "arguments": ""},
        }
        return [self._chunk({"role": "assistant", "content": None, "tool_calls": [call]})]

    def token(self, piece: str) -> dict[str, Any]:
        if self.tool_call is None:
            return self._chunk({"content": piece})
        return self._chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})

    def finish(self, reason: str) -> dict[str, Any]:
        return self._chunk({}, reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        chunk = self._chunk({})
        chunk["choices"] = []
        chunk["usage"] = usage(prompt_tokens, completion_tokens)
        return chunk


@dataclass(frozen=True)
class CompletionChunks:
    env: Envelope

    def _chunk(self, text: str, finish: str | None = None) -> dict[str, Any]:
        chunk: dict[str, Any] = {
            "id": self.env.id,
            "object": "text_completion",
            "created": self.env.created,
            "model": self.env.model,
            "system_fingerprint": None,
            "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish}],
        }
        if self.env.include_usage:
            chunk["usage"] = None
        return chunk

    def opening(self) -> list[dict[str, Any]]:
        return []  # legacy completions have no role chunk

    def token(self, piece: str) -> dict[str, Any]:
        return self._chunk(piece)

    def finish(self, reason: str) -> dict[str, Any]:
        return self._chunk("", reason)

    def usage(self, prompt_tokens: int, completion_tokens: int) -> dict[str, Any]:
        chunk = self._chunk("")
        chunk["choices"] = []
        chunk["usage"] = usage(prompt_tokens, completion_tokens)
        return chunk


def chat_response(
    env: Envelope,
    text: str,
    finish_reason: str,
    prompt_tokens: int,
    completion_tokens: int,
    tool_call: ToolCall | None = None,
) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if tool_call is not None:
        message["content"] = None
        message["tool_calls"] = [
            {
                "id": tool_call.id,
                "type": "function",
                "function": {"name": tool_call.name, "arguments": tool_call.arguments},
            }
        ]
    return {
        "id": env.id,
        "object": "chat.completion",
        "created": env.created,
        "model": env.model,
        "system_fingerprint": None,
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
        ],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def completion_response(
    env: Envelope, text: str, finish_reason: str, prompt_tokens: int, completion_tokens: int
) -> dict[str, Any]:
    return {
        "id": env.id,
        "object": "text_completion",
        "created": env.created,
        "model": env.model,
        "system_fingerprint": None,
        "choices": [{"text": text, "index": 0, "logprobs": None, "finish_reason": finish_reason}],
        "usage": usage(prompt_tokens, completion_tokens),
    }


def model_object(
    name: str,
    *,
    input_per_mtok: float,
    output_per_mtok: float,
    context_window: int,
    quality: dict[str, float],
) -> dict[str, Any]:
    return {
        "id": name,
        "object": "model",
        "created": 1700000000,
        "owned_by": "sim",
        "input_per_mtok": input_per_mtok,
        "output_per_mtok": output_per_mtok,
        "context_window": context_window,
        "quality": quality,
    }
