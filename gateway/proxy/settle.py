"""The end of a served attempt: bill it, release its key, publish it, and name it in headers."""

from __future__ import annotations

from gateway.outcome import Signal
from gateway.proxy.attempt import OpenAttempt, publish
from gateway.proxy.context import RequestContext
from gateway.spend.guard import cost_micros
from gateway.state import AppState


def finish_attempt(
    state: AppState,
    ctx: RequestContext,
    attempt: OpenAttempt,
    signal: Signal,
    prompt_tokens: int,
    completion_tokens: int,
    *,
    ttft_s: float | None,
    delivered: bool = False,
    malformed_events: int = 0,
) -> None:
    """Settle spend to what the client received, then publish; call once per opened attempt."""
    model = attempt.model
    attempt.lease.release()
    micros = cost_micros(model, prompt_tokens, completion_tokens)
    state.spend.settle(attempt.admitted.reservation, micros)
    ctx.cost_micros += micros
    ctx.prompt_tokens += prompt_tokens
    ctx.completion_tokens += completion_tokens
    if signal is Signal.SUCCESS:
        ctx.served_model = model.id
        ctx.served_backend = model.backend
    metrics = state.metrics
    if prompt_tokens:
        metrics.tokens.labels(model.id, "prompt").inc(prompt_tokens)
    if completion_tokens:
        metrics.tokens.labels(model.id, "completion").inc(completion_tokens)
    if micros:
        metrics.spend.labels(model.id).inc(micros / 1_000_000)
    publish(state, ctx, attempt.admitted, attempt.lease, signal, attempt.started,
            attempt.started_wall, status=attempt.response.status_code, ttft_s=ttft_s,
            prompt_tokens=prompt_tokens, completion_tokens=completion_tokens,
            delivered=delivered, malformed_events=malformed_events)


def response_headers(ctx: RequestContext, *, with_cost: bool) -> dict[str, str]:
    headers = {
        "x-request-id": ctx.request_id,
        "x-gateway-model": ctx.first_model or "none",
        "x-gateway-backend": ctx.served_backend or "none",
    }
    if with_cost:
        headers["x-gateway-failovers"] = str(ctx.failovers)
        headers["x-gateway-cost-usd"] = f"{ctx.cost_micros / 1_000_000:.6f}"
    return headers
