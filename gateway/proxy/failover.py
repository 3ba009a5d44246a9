"""The candidate queue: which model to try next, and what to tell the client when none is left.

A candidate is skipped when its circuit does not admit it, its backend has no usable key,
every key is cooling after a 429, its spend estimate does not fit a limit, it timed out
earlier in this request (a silent model is not retried), or an earlier answer said the
context is too long and it has no larger context window. `max_retries` bounds the further
upstream attempts after the first, continuations included. A 429 cools only the key that got
it: while the backend has another ready key, the same model is offered again next.

When the queue runs dry after 429s whose Retry-After fits `failover.max_wait_secs`, it waits
for the earliest one once and scans again; otherwise `exhausted()` picks the contract's
status: 429 upstream_rate_limited, 503, 504 or 502.
"""

from __future__ import annotations

import asyncio

from gateway.config.models import ModelConfig
from gateway.errors import (
    GatewayError,
    NoBackendAvailable,
    SpendLimitExceeded,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from gateway.outcome import Signal
from gateway.proxy.attempt import Admitted, AttemptFailed
from gateway.proxy.context import RequestContext
from gateway.state import AppState


class CandidateQueue:
    def __init__(self, state: AppState, ctx: RequestContext, candidates: list[ModelConfig]):
        self._state = state
        self._ctx = ctx
        self._candidates = list(candidates)  # a model may be offered again (another key)
        self._position = 0
        self.attempts_left = 1 + state.config.failover.max_retries
        self.attempts_made = 0
        self._silent: set[str] = set()
        self._min_context = 0
        self._cooling_until: list[float] = []
        self._rate_limit_waits: list[float] = []
        self._failures: list[AttemptFailed] = []
        self._spend_error: SpendLimitExceeded | None = None
        self._waited = False

    async def next(self) -> Admitted | None:
        if self.attempts_left <= 0:
            return None
        while self._position < len(self._candidates):
            model = self._candidates[self._position]
            self._position += 1
            admitted = await self._admit(model)
            if admitted is not None:
                self.attempts_left -= 1
                self.attempts_made += 1
                return admitted
        if await self._wait_for_rate_limit():
            return await self.next()
        return None

    async def _admit(self, model: ModelConfig) -> Admitted | None:
        state = self._state
        if model.id in self._silent or model.context_window <= self._min_context:
            return None
        if not state.keys.has_usable_key(model.backend):
            return None
        cooling = state.keys.cooling_until(model.backend)
        if cooling is not None:
            self._cooling_until.append(cooling)
            return None
        admission = await state.breakers.admit(model.id)
        if admission is None:
            return None
        request = self._ctx.request
        estimate = state.spend.estimate(
            model, request.prompt_tokens_estimate, request.max_output_tokens
        )
        try:
            reservation = await state.spend.reserve(self._ctx.client, estimate)
        except SpendLimitExceeded as exceeded:
            state.breakers.abandon(admission)  # a probe admitted here must not wedge the circuit
            self._spend_error = self._spend_error or exceeded
            return None
        except BaseException:
            state.breakers.abandon(admission)
            raise
        return Admitted(model, admission, reservation)

    def failed(self, admitted: Admitted, failure: AttemptFailed) -> None:
        self._failures.append(failure)
        if failure.no_key:
            # Every key of the backend was rejected (401/403): not an attempt in the budget.
            self.attempts_left += 1
            self.attempts_made -= 1
        if failure.timed_out:
            self._silent.add(admitted.model.id)
        if failure.context_exceeded:
            self._min_context = max(self._min_context, admitted.model.context_window)
        if failure.signal is Signal.RATE_LIMITED:
            if self._state.keys.available_count(admitted.model.backend) > 0:
                # Only the key that answered 429 is cooling: the same model on another of
                # its backend's keys is the next candidate (an attempt in the budget).
                self._candidates.insert(self._position, admitted.model)
                return
            wait = 60.0 if failure.retry_after is None else failure.retry_after
            self._rate_limit_waits.append(wait)

    def has_larger_context(self) -> bool:
        return any(
            m.context_window > self._min_context for m in self._candidates[self._position:]
        )

    async def _wait_for_rate_limit(self) -> bool:
        if self._waited or self.attempts_left <= 0:
            return False
        now = self._state.clock()
        waits = self._rate_limit_waits + [until - now for until in self._cooling_until]
        max_wait = self._state.config.failover.max_wait_secs
        fitting = [w for w in waits if w <= max_wait]
        if not fitting:
            return False
        self._waited = True
        self._position = 0
        self._cooling_until.clear()
        self._rate_limit_waits.clear()
        await asyncio.sleep(max(0.0, min(fitting)) + 0.01)
        return True

    def exhausted(self) -> GatewayError:
        now = self._state.clock()
        last = self._failures[-1] if self._failures else None
        waits = [until - now for until in self._cooling_until]
        if last is not None and last.signal is Signal.RATE_LIMITED:
            waits += self._rate_limit_waits or [60.0]
        if waits and (last is None or last.signal is Signal.RATE_LIMITED):
            return UpstreamRateLimited(
                "every candidate is rate limited upstream", retry_after_secs=min(waits)
            )
        real_failures = [f for f in self._failures if not f.no_key]
        if not real_failures and last is None:
            if self._spend_error is not None:
                return self._spend_error
            return NoBackendAvailable("no backend is available for this request")
        if real_failures and all(f.timed_out for f in real_failures):
            return UpstreamTimeout("every candidate timed out")
        return UpstreamError("every candidate failed")
