"""Non-streaming requests: try candidates in order until one answers, relay its JSON.

The whole upstream exchange of an attempt (head and body) is bounded by the backend's
`timeout_secs`. A 2xx whose body is not a JSON object counts as a server error (the upstream
is broken), so the request moves on; the client never sees half an answer.
"""

from __future__ import annotations

import asyncio

import httpx
import orjson
from starlette.responses import Response

from gateway.config.models import ModelConfig
from gateway.outcome import Signal
from gateway.proxy.attempt import AttemptFailed, OpenAttempt, open_attempt, publish
from gateway.proxy.context import RequestContext
from gateway.proxy.failover import CandidateQueue
from gateway.proxy.settle import finish_attempt, response_headers
from gateway.state import AppState

_MAX_UPSTREAM_BODY = 64 * 1024 * 1024


async def run_unary(
    state: AppState, ctx: RequestContext, candidates: list[ModelConfig]
) -> Response:
    queue = CandidateQueue(state, ctx, candidates)
    previous: str | None = None
    while True:
        admitted = await queue.next()
        if admitted is None:
            raise queue.exhausted()
        if ctx.first_model is None:
            ctx.first_model = admitted.model.id
        body = orjson.dumps({**ctx.request.body, "model": admitted.model.upstream_name})
        timeout = state.backend_timeouts[admitted.model.backend]
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            attempt = await open_attempt(state, ctx, admitted, body)
            payload = await _read_json(state, ctx, attempt, deadline)
        except AttemptFailed as failure:
            state.spend.settle(admitted.reservation, 0)
            if failure.client_error is not None and not (
                failure.context_exceeded and queue.has_larger_context()
            ):
                raise failure.client_error from None
            _record_move(state, ctx, previous, admitted.model.id, False)
            queue.failed(admitted, failure)
            previous = admitted.model.id
            continue
        _record_move(state, ctx, previous, admitted.model.id, True)
        payload["model"] = admitted.model.id
        prompt, completion = _billed_tokens(ctx, payload)
        finish_attempt(state, ctx, attempt, Signal.SUCCESS, prompt, completion, ttft_s=None)
        return Response(
            orjson.dumps(payload),
            status_code=200,
            media_type="application/json",
            headers=response_headers(ctx, with_cost=True),
        )


async def _read_json(
    state: AppState, ctx: RequestContext, attempt: OpenAttempt, deadline: float
) -> dict:
    response = attempt.response
    try:
        raw = bytearray()
        async with asyncio.timeout_at(deadline):
            async for chunk in response.aiter_bytes():
                raw += chunk
                if len(raw) > _MAX_UPSTREAM_BODY:
                    break
    except asyncio.CancelledError:
        # Nobody waits for this answer any more: free the key and refund the reservation.
        attempt.lease.release()
        state.spend.settle(attempt.admitted.reservation, 0)
        publish(state, ctx, attempt.admitted, attempt.lease, Signal.CANCELLED,
                attempt.started, attempt.started_wall, status=response.status_code)
        raise
    except TimeoutError:
        attempt.lease.release()
        publish(state, ctx, attempt.admitted, attempt.lease, Signal.TIMEOUT,
                attempt.started, attempt.started_wall, status=response.status_code,
                error_kind="timeout")
        raise AttemptFailed(Signal.TIMEOUT, "upstream did not answer in time") from None
    except (httpx.HTTPError, OSError):
        attempt.lease.release()
        publish(state, ctx, attempt.admitted, attempt.lease, Signal.SERVER_ERROR,
                attempt.started, attempt.started_wall, status=response.status_code,
                error_kind="body_broken")
        raise AttemptFailed(Signal.SERVER_ERROR, "upstream body broke off") from None
    finally:
        await response.aclose()
    try:
        payload = orjson.loads(raw)
    except orjson.JSONDecodeError:
        payload = None
    if not isinstance(payload, dict):
        attempt.lease.release()
        publish(state, ctx, attempt.admitted, attempt.lease, Signal.SERVER_ERROR,
                attempt.started, attempt.started_wall, status=response.status_code,
                error_kind="malformed_json", malformed_events=1)
        raise AttemptFailed(Signal.SERVER_ERROR, "upstream answered malformed JSON")
    return payload


def _billed_tokens(ctx: RequestContext, payload: dict) -> tuple[int, int]:
    """The upstream's usage; without one, tokens counted by the gateway (spend must not be 0)."""
    usage = payload.get("usage")
    if isinstance(usage, dict) and isinstance(usage.get("prompt_tokens"), int):
        return _usage_tokens(usage)
    texts: list[str] = []
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else []:
        if not isinstance(choice, dict):
            continue
        message = choice.get("message")
        content = message.get("content") if isinstance(message, dict) else choice.get("text")
        if isinstance(content, str):
            texts.append(content)
        calls = message.get("tool_calls") if isinstance(message, dict) else None
        for call in calls if isinstance(calls, list) else []:
            function = call.get("function") if isinstance(call, dict) else None
            arguments = function.get("arguments") if isinstance(function, dict) else None
            if isinstance(arguments, str):
                texts.append(arguments)
    # About four characters a token, the same rule the prompt estimate uses.
    return ctx.request.prompt_tokens_estimate, sum(-(-len(t) // 4) for t in texts)


def _usage_tokens(usage: object) -> tuple[int, int]:
    if not isinstance(usage, dict):
        return 0, 0
    prompt = usage.get("prompt_tokens")
    completion = usage.get("completion_tokens")
    return (
        prompt if isinstance(prompt, int) else 0,
        completion if isinstance(completion, int) else 0,
    )


def _record_move(
    state: AppState, ctx: RequestContext, previous: str | None, to_model: str, succeeded: bool
) -> None:
    if previous is None:
        return
    ctx.failovers += 1
    state.failover_log.record(ctx.request_id, previous, to_model, "retry", succeeded)
    state.metrics.failovers.labels(previous, to_model, "success" if succeeded else "failure").inc()
