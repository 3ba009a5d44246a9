"""One attempt of a stream: read its SSE body, rewrite each chunk, track what the client got.

The relay belongs to a StreamSession (stream.py), which owns what spans attempts (commit state,
text already sent, the stream id); the relay owns one upstream body. Invariants: every chunk it
lets through carries the session's id and created time and the served model's id; the
upstream's usage chunk is held back; the attempt is finished (billed, key released, outcome
published) exactly once, by `finish`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator
from typing import TYPE_CHECKING, Any

import httpx
import orjson

from gateway.outcome import Signal
from gateway.proxy.attempt import OpenAttempt
from gateway.proxy.settle import finish_attempt
from gateway.resilience.continuation import PrefixGate, strip_repeated_tool_headers
from gateway.upstream.base import DeadlineBody
from gateway.wire.sse import DONE, DONE_EVENT, SSEParser

if TYPE_CHECKING:
    from gateway.proxy.stream import StreamSession


class StreamBroke(Exception):
    def __init__(self, signal: Signal, detail: str) -> None:
        super().__init__(detail)
        self.signal = signal


class AttemptRelay:
    """Reads one attempt's SSE body, rewrites each chunk, and tracks what the client got."""

    def __init__(self, session: StreamSession, attempt: OpenAttempt) -> None:
        self.session = session
        self.attempt = attempt
        self.model = attempt.model
        self.gate: PrefixGate | None = None
        if session.committed and session.text:
            required = not session.include_prefix
            self.gate = PrefixGate(session.text, required=required)
        self.announced = frozenset(session.tool_headers)  # tool headers earlier attempts sent
        self.tokens = 0
        self.delivered_tokens = 0
        self.usage: tuple[int, int] | None = None
        self.malformed = 0
        self.finish_reason_seen = False
        self.ttft_s: float | None = None
        self.finished = False

    async def events(self) -> AsyncGenerator[bytes, None]:
        """The client's bytes, one piece per upstream read: the events parsed from one read
        go out in one write (fewer sends and syscalls, each event still sent at once)."""
        session = self.session
        loop = asyncio.get_running_loop()
        deadline = loop.time() + session.first_token_timeout(self.model)
        response = self.attempt.response
        # Our own client takes the deadline as a float per chunk; httpx needs a timeout scope.
        lazy = response if isinstance(response, DeadlineBody) else None
        chunks = response.aiter_bytes().__aiter__()
        parser = SSEParser()
        while True:
            try:
                if lazy is not None:
                    lazy.read_deadline = deadline
                    raw = await chunks.__anext__()
                else:
                    async with asyncio.timeout_at(deadline):
                        raw = await chunks.__anext__()
            except StopAsyncIteration:
                break
            except TimeoutError:
                raise StreamBroke(Signal.TIMEOUT, "no chunk in time") from None
            except (httpx.HTTPError, OSError) as exc:
                raise StreamBroke(Signal.SERVER_ERROR, type(exc).__name__) from None
            out: list[bytes] = []
            done = False
            try:
                for payload in parser.feed(raw):
                    if payload == DONE:
                        if lazy is not None:
                            lazy.body_done()  # the socket can be reused once the body ends
                        out += self._complete()
                        done = True
                        break
                    out += self._handle(payload)
            except Exception:
                if out:  # what the session counts as sent must reach the client first
                    yield b"".join(out)
                raise
            if out:
                yield out[0] if len(out) == 1 else b"".join(out)
            if done:
                return
            if self.tokens:
                deadline = loop.time() + session.idle_timeout
        for payload in parser.flush():
            if payload != DONE:
                for event in self._handle(payload):
                    yield event
        if not self.finish_reason_seen:
            raise StreamBroke(Signal.SERVER_ERROR, "stream ended without a finish_reason")
        for event in self._complete():
            yield event

    def _handle(self, payload: bytes) -> list[bytes]:
        chunk: object
        try:
            chunk = orjson.loads(payload)
        except orjson.JSONDecodeError:
            chunk = None
        if not isinstance(chunk, dict):
            self.malformed += 1
            return []
        if "error" in chunk:
            raise StreamBroke(Signal.SERVER_ERROR, "upstream sent an error event")
        out = self._rewrite(chunk)
        if out is None:
            return []
        session = self.session
        events = session.deliver(b"data: " + orjson.dumps(chunk) + b"\n\n")
        if not session.committed and self.tokens >= session.commit_after:
            events.append(session.commit(self.model))
        return events

    def _rewrite(self, chunk: dict[str, Any]) -> dict[str, Any] | None:
        session = self.session
        if session.stream_id is None:
            session.stream_id = chunk.get("id") or f"chatcmpl-{session.ctx.request_id}"
            session.created = chunk.get("created") or int(time.time())
        chunk["id"] = session.stream_id
        chunk["created"] = session.created
        chunk["model"] = self.model.id
        usage = chunk.pop("usage", None)
        if isinstance(usage, dict):
            self.usage = (_int(usage.get("prompt_tokens")), _int(usage.get("completion_tokens")))
        choices = chunk.get("choices")
        if not isinstance(choices, list) or not choices:
            return None
        choice = choices[0]
        if not isinstance(choice, dict):
            return None
        if choice.get("finish_reason"):
            self.finish_reason_seen = True
        if session.chat:
            return self._rewrite_delta(chunk, choice)
        text = choice.get("text")
        if isinstance(text, str) and text:
            text = self._gated(text)
            choice["text"] = text
            if not text and not choice.get("finish_reason"):
                return None
        return chunk

    def _rewrite_delta(
        self, chunk: dict[str, Any], choice: dict[str, Any]
    ) -> dict[str, Any] | None:
        session = self.session
        delta = choice.get("delta")
        if not isinstance(delta, dict):
            return chunk
        if "role" in delta:
            if session.role_sent:
                del delta["role"]
            session.role_sent = True
        calls = delta.get("tool_calls")
        if calls and isinstance(calls, list):
            self._count_token()
            # A restart must not repeat the id and name the client already has (SDKs would
            # concatenate them); only arguments make a tool call impossible to restart.
            if strip_repeated_tool_headers(calls, self.announced, session.tool_headers) and (
                session.committed or self.tokens >= session.commit_after
            ):
                session.tool_delivered = True
                self.delivered_tokens += 1
        content = delta.get("content")
        if isinstance(content, str) and content:
            delta["content"] = self._gated(content)
        if choice.get("finish_reason") or delta.get("content"):
            return chunk
        if any(value for key, value in delta.items() if key != "content"):
            return chunk
        return None  # nothing left to say: a repeated role, or an echo held back by the gate

    def _gated(self, text: str) -> str:
        self._count_token()
        if self.gate is not None:
            text = self.gate.feed(text)
        if text:
            self.delivered_tokens += 1
            self.session.text += text
            self.session.tokens_sent += 1
        return text

    def _count_token(self) -> None:
        self.tokens += 1
        if self.ttft_s is None:
            self.ttft_s = time.perf_counter() - self.attempt.started
            ctx = self.session.ctx
            if ctx.ttft_s is None:
                ctx.ttft_s = time.perf_counter() - ctx.started

    def _complete(self) -> list[bytes]:
        """The attempt ended well: flush held events, then usage (if asked) and [DONE]."""
        if self.gate is not None:
            self.gate.finish()
        session = self.session
        events: list[bytes] = []
        if not session.committed:
            events.append(session.commit(self.model))
        self.finish(Signal.SUCCESS)
        if session.ctx.request.include_usage:
            events.append(session.usage_event(self.model.id))
        events.append(DONE_EVENT)
        return events

    def finish(self, signal: Signal) -> None:
        if self.finished:
            return
        self.finished = True
        session = self.session
        delivered = session.committed and self.delivered_tokens > 0
        billable = signal is Signal.SUCCESS or delivered
        if self.usage is not None and signal is Signal.SUCCESS:
            prompt, completion = self.usage
        elif billable:
            prompt = session.ctx.request.prompt_tokens_estimate
            completion = self.delivered_tokens
        else:
            prompt, completion = 0, 0
        if signal is Signal.CANCELLED and self.usage is None:
            prompt = session.ctx.request.prompt_tokens_estimate if self.delivered_tokens else 0
        finish_attempt(
            session.state, session.ctx, self.attempt, signal, prompt, completion,
            ttft_s=self.ttft_s, delivered=delivered, malformed_events=self.malformed,
        )


def _int(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
