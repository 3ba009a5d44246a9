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
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing

import orjson
from starlette.responses import StreamingResponse

from gateway.config.models import ModelConfig
from gateway.errors import GatewayError, UpstreamError, sse_error_event
from gateway.outcome import Signal
from gateway.proxy.attempt import Admitted, AttemptFailed, OpenAttempt, open_attempt
from gateway.proxy.context import RequestContext
from gateway.proxy.failover import CandidateQueue
from gateway.proxy.relay import AttemptRelay, StreamBroke
from gateway.proxy.request import Endpoint
from gateway.proxy.settle import response_headers
from gateway.resilience.continuation import (
    Form,
    PrefixMismatch,
    continuation_body,
    other_form,
    remaining_tokens,
)
from gateway.resilience.failover_log import MoveKind
from gateway.state import AppState
from gateway.wire.sse import DONE_EVENT, EventStreamResponse

_SSE_HEADERS = {"cache-control": "no-cache", "x-accel-buffering": "no"}


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
        self.failure: AttemptFailed | StreamBroke | PrefixMismatch | None = None
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
        relay = AttemptRelay(self, attempt)
        signal = Signal.SUCCESS
        try:
            async with aclosing(relay.events()) as events:
                async for event in events:
                    yield event
        except StreamBroke as broke:
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


def _as_attempt_failure(failure: AttemptFailed | StreamBroke | PrefixMismatch) -> AttemptFailed:
    if isinstance(failure, AttemptFailed):
        return failure
    signal = failure.signal if isinstance(failure, StreamBroke) else Signal.SERVER_ERROR
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
