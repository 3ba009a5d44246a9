"""Feedback on served requests: explicit scores, and the implicit `retried` signal.

After a request is served, its id is remembered (bounded in size and age) with the client,
model and task, locally and in the store so any replica can take the score. A score replaces
the request's provisional success in the statistics. The same client sending the same prompt
again within `routing.retry_window_secs` is a `retried` signal against the model that served
the first one: the client did not like that answer.
"""

from __future__ import annotations

import time

from gateway.config.models import GatewayConfig, Task
from gateway.errors import InvalidRequest, RouteNotFound
from gateway.learning import Learning
from gateway.outcome import AttemptOutcome, Signal
from gateway.proxy.context import RequestContext
from gateway.proxy.request import Endpoint
from gateway.routing.ledger import RequestLedger, RetryDetector, ServedRequest, prompt_fingerprint
from gateway.state import AppState

_REQUEST_TTL_SECS = 24 * 3600


class FeedbackDesk:
    def __init__(self, config: GatewayConfig, state: AppState, learning: Learning) -> None:
        self._state = state
        self._learning = learning
        self._ledger = RequestLedger(max_age_secs=_REQUEST_TTL_SECS)
        self._retries = RetryDetector(window_secs=config.routing.retry_window_secs)

    def before_request(self, ctx: RequestContext) -> None:
        if ctx.request.endpoint is Endpoint.EMBEDDINGS:
            return
        fingerprint = prompt_fingerprint(ctx.request.body)
        earlier = self._retries.check(ctx.client_name, fingerprint, ctx.request_id,
                                      self._state.clock())
        if earlier is None:
            return
        self._state.bus.publish(AttemptOutcome(
            request_id=earlier.request_id, client=ctx.client_name, model=earlier.model,
            backend=self._state.models[earlier.model].backend, key_ref=None, task=earlier.task,
            signal=Signal.RETRIED, status=None, error_kind="retried", started_at=time.time(),
            latency_s=0.0, ttft_s=None, prompt_tokens=0, completion_tokens=0,
        ))

    def after_request(self, ctx: RequestContext | None) -> None:
        if ctx is None or ctx.served_model is None:
            return
        now = self._state.clock()
        served = ServedRequest(ctx.request_id, ctx.client_name, ctx.served_model, ctx.task,
                               success_recorded=True, at=now)
        self._ledger.remember(served)
        if ctx.request.endpoint is not Endpoint.EMBEDDINGS:
            self._retries.served(ctx.client_name, prompt_fingerprint(ctx.request.body), served)
        record: dict[str, object] = {
            "client": ctx.client_name, "model": ctx.served_model, "task": ctx.task.value,
            "at": now,
        }
        store = self._state.store
        self._state.writes.submit(
            lambda: store.put_record("request", ctx.request_id, record, _REQUEST_TTL_SECS)
        )

    async def rate(self, request_id: object, score: object, client: str | None) -> None:
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("'request_id' is required and must be a string",
                                 param="request_id")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidRequest("'score' must be a number from 0.0 to 1.0", param="score")
        served = await self._find(request_id, client)
        if served is None:
            raise RouteNotFound(f"no request '{request_id}' of this client to rate")
        previous = served.score
        self._learning.book.feedback(
            served.model, served.task, float(score),
            replaces_success=served.success_recorded and previous is None,
            replaces_score=previous,
        )
        served.score = float(score)

    async def _find(self, request_id: str, client: str | None) -> ServedRequest | None:
        served = self._ledger.lookup(request_id, client)
        if served is not None:
            return served
        record = await self._state.store.get_record("request", request_id)
        if record is None or record.get("client") != client:
            return None
        model = record.get("model")
        if not isinstance(model, str) or model not in self._state.models:
            return None
        served = ServedRequest(request_id, client, model, Task(str(record.get("task"))),
                               success_recorded=True, at=float(record.get("at", 0.0)))  # type: ignore[arg-type]
        self._ledger.remember(served)
        return served
