"""The end of every client request: one JSON log line and the request-level metrics.

The log line never holds a secret, and holds the prompt only when `server.log_prompts` is
set. Streams are accounted when their body ends (or the client leaves), not when the head
goes out.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable

import orjson

from gateway.errors import GatewayError
from gateway.metrics import Metrics
from gateway.proxy.context import RequestContext
from gateway.proxy.request import Endpoint

log = logging.getLogger("gateway.requests")


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
    ) -> None:
        duration = time.perf_counter() - started
        model = "none"
        if ctx is not None:
            model = ctx.served_model or ctx.first_model or "none"
        metrics = self._metrics
        metrics.requests.labels(model, endpoint.value, str(status)).inc()
        metrics.duration.labels(model, endpoint.value).observe(duration)
        if ctx is not None and ctx.ttft_s is not None and ctx.served_model is not None:
            metrics.ttft.labels(ctx.served_model).observe(ctx.ttft_s)
        if log.isEnabledFor(logging.INFO):
            log.info(self._line(endpoint, ctx, status, duration, error))

    def wrap_stream(
        self,
        endpoint: Endpoint,
        ctx: RequestContext | None,
        started: float,
        body: AsyncIterable[str | bytes | memoryview],
    ) -> AsyncIterator[str | bytes | memoryview]:
        async def accounted() -> AsyncIterator[str | bytes | memoryview]:
            try:
                async for event in body:
                    yield event
            finally:
                if ctx is not None and ctx.served_model is not None:
                    self._on_served(ctx)
                # The head went out as 200; that is the status the client saw.
                self.finished(endpoint, ctx, 200, started)

        return accounted()

    def _line(
        self,
        endpoint: Endpoint,
        ctx: RequestContext | None,
        status: int,
        duration: float,
        error: GatewayError | None,
    ) -> str:
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
                "backend": ctx.served_backend,
                "task": ctx.task.value,
                "mode": ctx.mode.value if ctx.mode is not None else "explicit",
                "failovers": ctx.failovers,
                "prompt_tokens": ctx.prompt_tokens,
                "completion_tokens": ctx.completion_tokens,
                "cost_usd": ctx.cost_micros / 1_000_000,
                "ttft_ms": None if ctx.ttft_s is None else round(ctx.ttft_s * 1000, 3),
            })
            if self._log_prompts:
                record["prompt"] = ctx.request.body.get("messages") or ctx.request.body.get(
                    "prompt"
                )
        if error is not None:
            record["error"] = error.code or error.error_type
        return orjson.dumps(record).decode()
