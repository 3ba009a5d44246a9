"""The end of every client request: one structured log record and the request-level metrics.

The record is a dict (gateway/logs.py renders it as one JSON line): request id, client name,
endpoint, model, backend, task, mode, status, failovers, tokens, cost, latency and time to
first token. Requests answered normally are logged at INFO, 5xx answers at WARNING, so
`server.log_level = "WARNING"` keeps only the failures.

Invariants: the record never holds a secret (no header is copied; `client` is the configured
name, not the key) and holds the prompt only when `server.log_prompts` is set. Streams are
accounted when their body ends or the client leaves, not when the head goes out; the metric
`status` is the HTTP status sent (a stream that later failed still sent 200), and the record
says how the stream ended. `model` in the metrics is a configured id or `none`, never a name
taken from the request body.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.proxy.context import RequestContext
from gateway.proxy.request import Endpoint

log = logging.getLogger("gateway.requests")

_PROMPT_FIELDS = ("messages", "prompt", "input")


class RequestLogger:
    def __init__(
        self,
        metrics: Metrics,
        log_prompts: bool,
        on_served: Callable[[RequestContext], None],
    ) -> None:
        self._metrics = metrics
        self._log_prompts = log_prompts
        self._on_served = on_served

    def finished(
        self,
        endpoint: Endpoint,
        ctx: RequestContext | None,
        status: int,
        started: float,
        *,
        error: GatewayError | None = None,
        request_id: str | None = None,
        client: str | None = None,
        stream_end: str | None = None,
    ) -> None:
        """Account one answered request; `request_id`/`client` matter when `ctx` is None."""
        duration = time.perf_counter() - started
        model = "none"
        if ctx is not None:
            model = ctx.served_model or ctx.first_model or ctx.planned_model or "none"
        metrics = self._metrics
        metrics.requests.labels(model, endpoint.value, str(status)).inc()
        metrics.duration.labels(model, endpoint.value).observe(duration)
        if ctx is not None and ctx.ttft_s is not None and ctx.served_model is not None:
            metrics.ttft.labels(ctx.served_model).observe(ctx.ttft_s)
        level = logging.WARNING if status >= 500 else logging.INFO
        if log.isEnabledFor(level):
            record = self._record(endpoint, ctx, status, duration, error, stream_end)
            if ctx is None:
                record["request_id"] = request_id
                record["client"] = client
            log.log(level, record)

    def wrap_stream(
        self,
        endpoint: Endpoint,
        ctx: RequestContext | None,
        started: float,
        body: AsyncIterable[str | bytes | memoryview],
    ) -> AsyncIterator[str | bytes | memoryview]:
        async def accounted() -> AsyncIterator[str | bytes | memoryview]:
            left = False
            try:
                async for event in body:
                    yield event
            except (GeneratorExit, asyncio.CancelledError):
                left = True
                raise
            finally:
                served = ctx is not None and ctx.served_model is not None
                if ctx is not None and served:
                    self._on_served(ctx)
                end = "client_left" if left else ("complete" if served else "failed")
                # The head went out as 200; that is the status the client saw.
                self.finished(endpoint, ctx, 200, started, stream_end=end)

        return accounted()

    def _record(
        self,
        endpoint: Endpoint,
        ctx: RequestContext | None,
        status: int,
        duration: float,
        error: GatewayError | None,
        stream_end: str | None,
    ) -> dict[str, object]:
        record: dict[str, object] = {
            "event": "request",
            "endpoint": endpoint.value,
            "status": status,
            "latency_ms": round(duration * 1000, 3),
        }
        if ctx is not None:
            record.update({
                "request_id": ctx.request_id,
                "client": ctx.client_name,
                "model": ctx.served_model or ctx.first_model,
                "first_model": ctx.first_model,
                "backend": ctx.served_backend,
                "task": ctx.task.value,
                "mode": ctx.mode.value if ctx.mode is not None else "explicit",
                "stream": ctx.request.stream,
                "failovers": ctx.failovers,
                "prompt_tokens": ctx.prompt_tokens,
                "completion_tokens": ctx.completion_tokens,
                "cost_usd": ctx.cost_micros / 1_000_000,
                "ttft_ms": None if ctx.ttft_s is None else round(ctx.ttft_s * 1000, 3),
            })
            if self._log_prompts:
                body = ctx.request.body
                record["prompt"] = next(
                    (body[f] for f in _PROMPT_FIELDS if body.get(f) is not None), None
                )
        if stream_end is not None:
            record["stream_end"] = stream_end
        if error is not None:
            record["error"] = error.code or error.error_type
        return record
