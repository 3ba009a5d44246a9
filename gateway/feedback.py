"""Feedback on served requests in the running gateway: explicit scores and `retried` signals.

Responsibility: glue between the request path, the shared store and the pure rules in
gateway/routing/feedback.py (RequestLedger, RetryDetector, apply_feedback, penalise_retry).
- After a request is served (`after_request`), its id is remembered with the client, model and
  task: in this replica's bounded ledger and, through the write-behind queue, as a `request`
  record in the store (TTL = the ledger's age bound), so any replica can take the score.
- The same client sending the same prompt again within `routing.retry_window_secs` is a
  `retried` signal against the model that served the first one (the client did not like that
  answer). It is published on the outcome bus, so `gateway_upstream_signals_total` counts it;
  the statistics take it from `penalise_retry` here (Learning ignores it on the bus), which
  knows whether the request was rated or penalised already.
- `rate` (POST /v1/feedback) replaces the request's provisional success with the score.

Invariants: a client can only rate its own requests (a foreign id is answered like an unknown
one, 404); a rating is written to the store before it is acknowledged, so a re-rating on
another replica replaces it instead of counting twice; nothing here blocks the request path
(after_request only queues store writes).
"""

from __future__ import annotations

import logging
import time

from gateway.config.models import GatewayConfig
from gateway.errors import InvalidRequest, RouteNotFound
from gateway.learning import Learning
from gateway.outcome import AttemptOutcome, Signal
from gateway.proxy.context import RequestContext
from gateway.proxy.request import Endpoint
from gateway.routing.feedback import (
    DEFAULT_MAX_AGE_SECS,
    PriorAttempt,
    RequestLedger,
    RetryDetector,
    ServedRequest,
    apply_feedback,
    merge_served,
    penalise_retry,
    prompt_fingerprint,
)
from gateway.state import AppState

log = logging.getLogger("gateway.feedback")

RECORD_KIND = "request"


class FeedbackDesk:
    def __init__(self, config: GatewayConfig, state: AppState, learning: Learning) -> None:
        self._state = state
        self._book = learning.book
        self._max_age = DEFAULT_MAX_AGE_SECS
        self._ledger = RequestLedger(max_age_secs=self._max_age)
        self._retries = RetryDetector(window_secs=config.routing.retry_window_secs)
        # Only replicas need the map in the store; alone, the bounded ledger is the whole truth
        # and a record per request would grow the memory store (and its snapshot) with traffic.
        self._shared = config.state.backend == "redis"

    def after_request(self, ctx: RequestContext | None) -> None:
        """A request was served: remember it, and judge the earlier one if this is a retry."""
        if ctx is None or ctx.served_model is None:
            return
        now = self._state.clock()
        self._ledger.remember(
            ctx.request_id, ctx.client_name, ctx.served_model, ctx.task, True, now
        )
        self._save(ctx.request_id)
        if ctx.request.endpoint is Endpoint.EMBEDDINGS:
            return  # an embedding asked again is a cache miss, not a complaint
        earlier = self._retries.check(
            ctx.client_name, prompt_fingerprint(ctx.request.body), ctx.request_id,
            ctx.served_model, ctx.task, now,
        )
        if earlier is not None and earlier.model in self._state.models:
            self._penalise(ctx, earlier)

    def _penalise(self, ctx: RequestContext, earlier: PriorAttempt) -> None:
        if not penalise_retry(self._ledger, self._book, earlier):
            return
        self._save(earlier.request_id)
        self._state.bus.publish(AttemptOutcome(
            request_id=earlier.request_id, client=ctx.client_name, model=earlier.model,
            backend=self._state.models[earlier.model].backend, key_ref=None, task=earlier.task,
            signal=Signal.RETRIED, status=None, error_kind="retried", started_at=time.time(),
            latency_s=0.0, ttft_s=None, prompt_tokens=0, completion_tokens=0,
        ))

    def _save(self, request_id: str) -> None:
        """Queue the entry's store record. The write takes the entry as it is when it runs,
        so a queued write never overwrites a newer state (a rating) with an older one."""
        if not self._shared:
            return

        async def write() -> None:
            served = self._ledger.peek(request_id)
            if served is not None and self._ttl(served) > 0:
                await self._state.store.put_record(
                    RECORD_KIND, request_id, served.to_dict(), self._ttl(served)
                )

        self._state.writes.submit(write)

    def _ttl(self, served: ServedRequest) -> float:
        return self._max_age - (self._state.clock() - served.at)

    async def rate(self, request_id: object, score: object, client: str | None) -> None:
        """Apply a client's score; InvalidRequest (400) for bad input, RouteNotFound (404) for
        an id this client did not send (or that expired)."""
        if not isinstance(request_id, str) or not request_id:
            raise InvalidRequest("'request_id' is required and must be a non-empty string",
                                 param="request_id")
        if isinstance(score, bool) or not isinstance(score, int | float) or not 0 <= score <= 1:
            raise InvalidRequest("'score' must be a number from 0.0 to 1.0", param="score")
        now = self._state.clock()
        stored = await self._stored(request_id)
        view = merge_served(self._ledger.peek(request_id), stored)
        if view is not None and view is not self._ledger.peek(request_id):
            self._ledger.adopt(view, now)
        served = apply_feedback(self._ledger, self._book, request_id, client, float(score), now)
        if served is None:
            raise RouteNotFound(f"no request '{request_id}' of this client to rate")
        rated = self._ledger.peek(request_id)
        if self._shared and rated is not None and self._ttl(rated) > 0:
            await self._state.store.put_record(
                RECORD_KIND, request_id, rated.to_dict(), self._ttl(rated)
            )

    async def _stored(self, request_id: str) -> ServedRequest | None:
        if not self._shared:
            return None
        record = await self._state.store.get_record(RECORD_KIND, request_id)
        if record is None:
            return None
        try:
            served = ServedRequest.from_dict(record)
        except (KeyError, TypeError, ValueError):
            log.warning("ignoring an unreadable feedback record %r", request_id)
            return None
        return served if served.model in self._state.models else None
