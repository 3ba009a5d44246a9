"""Streaming requests: relay SSE event by event, fail over invisibly, continue mid-stream.

Phases of one client stream:
1. Before commit: events of the current attempt are held back until `commit_after_tokens`
   content tokens (or tool-call deltas) arrived. A failure here is retried from scratch on the
   next candidate and the client sees nothing of it; if every candidate fails, the client gets
   a plain HTTP error (the response has not started).
2. After commit: every event goes out as soon as it is parsed. A failure (cut connection,
   upstream error event, idle timeout, truncated body) continues the answer on the next
   candidate from the text already sent (see resilience/continuation.py); the client sees
   one stream with one `id`, one `created`, the served model's id in `model`, and exactly one
   `data: [DONE]`. Only when candidates are exhausted it gets one SSE error event, no [DONE].

Invariants: a truncated answer never ends with [DONE]; a tool call whose arguments reached the
client is never spliced (the stream ends with an error event instead); the upstream's usage
chunk is held back and replaced by one summing every attempt the client received text from;
each opened attempt is finished (billed, key released, outcome published) exactly once, also
when the client disconnects, which closes the upstream connection at once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from typing import Any

import httpx
import orjson
from starlette.responses import StreamingResponse

from gateway.config.models import ModelConfig
from gateway.errors import GatewayError, UpstreamError, sse_error_event
from gateway.outcome import Signal
from gateway.proxy.attempt import Admitted, AttemptFailed, OpenAttempt, open_attempt
from gateway.proxy.context import RequestContext
from gateway.proxy.failover import CandidateQueue
from gateway.proxy.request import Endpoint
from gateway.proxy.settle import finish_attempt, response_headers
from gateway.resilience.continuation import (
    Form,
    PrefixGate,
    PrefixMismatch,
    continuation_body,
    other_form,
    remaining_tokens,
    strip_repeated_tool_headers,
)
from gateway.resilience.failover_log import MoveKind
from gateway.state import AppState
from gateway.upstream.base import DeadlineBody
from gateway.wire.sse import DONE, DONE_EVENT, EventStreamResponse, SSEParser

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


class _StreamBroke(Exception):
    def __init__(self, signal: Signal, detail: str) -> None:
        super().__init__(detail)
        self.signal = signal


class StreamSession:
    def __init__(self, state: AppState, ctx: RequestContext, candidates: list[ModelConfig]):
        self.state = state
        self.ctx = ctx
        self.queue = CandidateQueue(state, ctx, candidates)
        self.chat = ctx.request.endpoint is Endpoint.CHAT
        self.committed = False
        self.stream_id: str | None = None
        self.created: int | None = None
        self.text = ""  # text the client has (or, before commit, will get at commit)
        self.tokens_sent = 0  # content tokens in `text`, for the continuation's max_tokens
        self.tool_delivered = False  # some tool-call arguments reached the client
        self.tool_headers: set[int] = set()  # tool-call indexes whose id/name went out
        self.role_sent = False
        self.pending: list[bytes] = []
        self.failure: AttemptFailed | _StreamBroke | PrefixMismatch | None = None
        failover = state.config.failover
        self.commit_after = failover.commit_after_tokens
        self.idle_timeout = failover.idle_timeout_secs
        self.default_first_token = failover.first_token_timeout_secs
        self.include_prefix = failover.include_prefix

    async def run(self) -> AsyncGenerator[bytes, None]:
        previous: str | None = None
        while True:
            try:
                admitted = await self.queue.next()
            except GatewayError as refused:
                if not self.committed:
                    raise
                yield sse_error_event(refused)
                return
            if admitted is None:
                if not self.committed:
                    raise self.queue.exhausted()
                yield sse_error_event(UpstreamError("the stream failed and no candidate is left"))
                return
            if self.ctx.first_model is None:
                self.ctx.first_model = admitted.model.id
            # Decided before the attempt: a retry that commits is still a retry.
            kind: MoveKind = "continuation" if self.committed else "retry"
            attempt = await self._open(admitted)
            if attempt is not None:
                self.failure = None
                async with aclosing(self._relay(attempt)) as relayed:
                    async for event in relayed:
                        yield event
            self._record_move(previous, admitted.model.id, kind, succeeded=self.failure is None)
            if self.failure is None:
                return
            # Every failure counts for the exhaustion status (a stream cut before the first
            # byte on every candidate is a 502, not "no backend available").
            self.queue.failed(admitted, _as_attempt_failure(self.failure))
            if self.committed and (self.tool_delivered or isinstance(self.failure, PrefixMismatch)):
                yield sse_error_event(UpstreamError(_cannot_continue(self.failure)))
                return
            if self.committed and remaining_tokens(self.ctx.request, self.tokens_sent) == 0:
                # Cut right after the last allowed token: the answer is complete at its limit.
                yield self.length_event(admitted.model.id)
                if self.ctx.request.include_usage:
                    yield self.usage_event(admitted.model.id)
                yield DONE_EVENT
                return
            previous = admitted.model.id

    async def _open(self, admitted: Admitted) -> OpenAttempt | None:
        """Open an attempt, retrying a rejected continuation once in the other form."""
        form = self._form(admitted.model)
        retried = False
        while True:
            body = self._body(admitted.model, form)
            try:
                return await open_attempt(self.state, self.ctx, admitted, body)
            except AttemptFailed as failure:
                self.state.spend.settle(admitted.reservation, 0)
                self.failure = failure
                client_error = failure.client_error
                if client_error is None:
                    return None
                if not self.committed:
                    if failure.context_exceeded and self.queue.has_larger_context():
                        return None
                    raise client_error from None
                # A 4xx to our own continuation request is never the client's error.
                form = other_form(form) if form is not None and not retried else None
                retried = True
                if form is None or self.queue.attempts_left <= 0:
                    failure.client_error = None
                    return None
                self.queue.attempts_left -= 1
                try:
                    admitted.reservation = await self.state.spend.reserve(
                        self.ctx.client, admitted.reservation.micros
                    )
                except GatewayError:
                    failure.client_error = None
                    return None

    def _form(self, model: ModelConfig) -> Form | None:
        if not self.committed or not self.text:
            return None  # nothing to continue from (e.g. a restarted tool call): start over
        if not self.include_prefix:
            return "original"
        if self.chat:
            return model.prefill
        return "none"

    def _body(self, model: ModelConfig, form: Form | None) -> bytes:
        request = self.ctx.request
        if form is None:
            body = request.body
        else:
            body = continuation_body(request, form, self.text, self.tokens_sent)
        body = {**body, "model": model.upstream_name}
        # Ask for usage always: spend is settled from it even when the client did not ask.
        options = body.get("stream_options")
        body["stream_options"] = {**(options or {}), "include_usage": True}
        return orjson.dumps(body)

    async def _relay(self, attempt: OpenAttempt) -> AsyncGenerator[bytes, None]:
        relay = _AttemptRelay(self, attempt)
        signal = Signal.SUCCESS
        try:
            async with aclosing(relay.events()) as events:
                async for event in events:
                    yield event
        except _StreamBroke as broke:
            self.failure, signal = broke, broke.signal
        except PrefixMismatch as mismatch:
            self.failure, signal = mismatch, Signal.SERVER_ERROR
        except (GeneratorExit, asyncio.CancelledError):
            signal = Signal.CANCELLED
            raise
        finally:
            await attempt.response.aclose()
            relay.finish(signal)
        if self.failure is not None and not self.committed:
            self._reset_uncommitted()

    def _reset_uncommitted(self) -> None:
        self.pending.clear()
        self.text = ""
        self.tokens_sent = 0
        self.role_sent = False
        self.tool_delivered = False
        self.tool_headers.clear()

    def deliver(self, event: bytes) -> list[bytes]:
        """Queue or release an event; returns what to send to the client now."""
        if self.committed:
            return [event]
        self.pending.append(event)
        return []

    def commit(self, model: ModelConfig) -> bytes:
        self.committed = True
        # The head goes out now, naming the backend that is answering at this moment.
        self.ctx.served_backend = model.backend
        out = b"".join(self.pending)
        self.pending.clear()
        return out

    def first_token_timeout(self, model: ModelConfig) -> float:
        return model.first_token_timeout_secs or self.default_first_token

    def _record_move(
        self, previous: str | None, to_model: str, kind: MoveKind, *, succeeded: bool
    ) -> None:
        if previous is None:
            return
        self.ctx.failovers += 1
        self.state.failover_log.record(self.ctx.request_id, previous, to_model, kind, succeeded)
        self.state.metrics.failovers.labels(
            previous, to_model, "success" if succeeded else "failure"
        ).inc()

    def length_event(self, model_id: str) -> bytes:
        """The finish chunk of an answer cut right at its max_tokens (nothing left to ask)."""
        text: dict[str, object] = {"delta": {}} if self.chat else {"text": ""}
        return self._event(model_id, choices=[{"index": 0, **text, "finish_reason": "length"}])

    def usage_event(self, model_id: str) -> bytes:
        ctx = self.ctx
        usage = {
            "prompt_tokens": ctx.prompt_tokens,
            "completion_tokens": ctx.completion_tokens,
            "total_tokens": ctx.prompt_tokens + ctx.completion_tokens,
        }
        return self._event(model_id, choices=[], usage=usage)

    def _event(self, model_id: str, **fields: object) -> bytes:
        chunk: dict[str, object] = {
            "id": self.stream_id,
            "object": "chat.completion.chunk" if self.chat else "text_completion",
            "created": self.created,
            "model": model_id,
            **fields,
        }
        return b"data: " + orjson.dumps(chunk) + b"\n\n"


class _AttemptRelay:
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
                raise _StreamBroke(Signal.TIMEOUT, "no chunk in time") from None
            except (httpx.HTTPError, OSError) as exc:
                raise _StreamBroke(Signal.SERVER_ERROR, type(exc).__name__) from None
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
            raise _StreamBroke(Signal.SERVER_ERROR, "stream ended without a finish_reason")
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
            raise _StreamBroke(Signal.SERVER_ERROR, "upstream sent an error event")
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


def _as_attempt_failure(failure: AttemptFailed | _StreamBroke | PrefixMismatch) -> AttemptFailed:
    if isinstance(failure, AttemptFailed):
        return failure
    signal = failure.signal if isinstance(failure, _StreamBroke) else Signal.SERVER_ERROR
    return AttemptFailed(signal, str(failure))


def _cannot_continue(failure: object) -> str:
    if isinstance(failure, PrefixMismatch):
        return "the stream failed and the restarted answer did not match the text already sent"
    return "the stream failed inside a tool call and cannot be continued safely"


async def open_stream(
    state: AppState, ctx: RequestContext, candidates: list[ModelConfig]
) -> StreamingResponse:
    """Run the stream up to its commit point; errors before it raise GatewayError."""
    session = StreamSession(state, ctx, candidates)
    events = session.run()
    try:
        first = await events.__anext__()
    except StopAsyncIteration:
        raise UpstreamError("the upstream stream ended before any event") from None
    except GatewayError:
        await events.aclose()
        raise

    async def body() -> AsyncIterator[bytes]:
        try:
            yield first
            async for event in events:
                yield event
        finally:
            await events.aclose()

    headers = {**response_headers(ctx, with_cost=False), **_SSE_HEADERS}
    return EventStreamResponse(body(), media_type="text/event-stream", headers=headers)
