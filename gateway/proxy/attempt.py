"""One upstream attempt: lease a key, send, and classify the response head.

Every attempt that reaches the upstream ends in exactly one published AttemptOutcome; this
module publishes the outcomes of attempts that fail at the head, the relays publish the rest.
An upstream 401/403 marks the key unusable and the attempt moves to the backend's next key
inside this call, which the contract does not count as a retry.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

import httpx
import orjson

from gateway.config.models import ModelConfig
from gateway.errors import UpstreamClientError
from gateway.keys.pool import KeyLease
from gateway.outcome import AttemptOutcome, Signal
from gateway.proxy.context import RequestContext
from gateway.proxy.request import UPSTREAM_PATH
from gateway.resilience.breaker import Admission
from gateway.secrets import mask
from gateway.spend.guard import Reservation
from gateway.state import AppState
from gateway.upstream.base import FailureKind, TransportFailure, UpstreamBody

_ERROR_BODY_LIMIT = 64 * 1024


@dataclass(slots=True)
class Admitted:
    model: ModelConfig
    admission: Admission
    reservation: Reservation


class AttemptFailed(Exception):
    def __init__(
        self,
        signal: Signal,
        detail: str,
        *,
        retry_after: float | None = None,
        context_exceeded: bool = False,
        client_error: UpstreamClientError | None = None,
        no_key: bool = False,
    ) -> None:
        super().__init__(detail)
        self.signal = signal
        self.retry_after = retry_after
        self.context_exceeded = context_exceeded
        self.client_error = client_error
        self.no_key = no_key

    @property
    def timed_out(self) -> bool:
        return self.signal is Signal.TIMEOUT


@dataclass(slots=True)
class OpenAttempt:
    admitted: Admitted
    lease: KeyLease
    response: UpstreamBody
    started: float
    started_wall: float

    @property
    def model(self) -> ModelConfig:
        return self.admitted.model


def publish(
    state: AppState,
    ctx: RequestContext,
    admitted: Admitted,
    lease: KeyLease | None,
    signal: Signal,
    started: float,
    started_wall: float,
    *,
    status: int | None = None,
    error_kind: str | None = None,
    ttft_s: float | None = None,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    retry_after: float | None = None,
    key_unusable: bool = False,
    delivered: bool = False,
    malformed_events: int = 0,
) -> None:
    state.bus.publish(AttemptOutcome(
        request_id=ctx.request_id,
        client=ctx.client_name,
        model=admitted.model.id,
        backend=admitted.model.backend,
        key_ref=None if lease is None else lease.ref,
        task=ctx.task,
        signal=signal,
        status=status,
        error_kind=error_kind,
        started_at=started_wall,
        latency_s=time.perf_counter() - started,
        ttft_s=ttft_s,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        retry_after_secs=retry_after,
        was_probe=admitted.admission.is_probe,
        key_unusable=key_unusable,
        delivered=delivered,
        malformed_events=malformed_events,
    ))


async def open_attempt(
    state: AppState, ctx: RequestContext, admitted: Admitted, body: bytes
) -> OpenAttempt:
    model = admitted.model
    rejected: frozenset[str] = frozenset()
    while True:
        lease = state.keys.lease(model.backend, rejected)
        if lease is None:
            raise AttemptFailed(Signal.SERVER_ERROR, "no usable key", no_key=True)
        started, started_wall = time.perf_counter(), time.time()
        try:
            opened = await _send(state, ctx, admitted, lease, body, started, started_wall)
        except asyncio.CancelledError:
            # The client left (or the server stops) before the head was handled: the key and
            # the reservation must not stay held by a request that no longer exists.
            lease.release()
            state.spend.settle(admitted.reservation, 0)
            publish(state, ctx, admitted, lease, Signal.CANCELLED, started, started_wall)
            raise
        if opened is not None:
            return opened
        rejected = rejected | {lease.ref or ""}


async def _send(
    state: AppState,
    ctx: RequestContext,
    admitted: Admitted,
    lease: KeyLease,
    body: bytes,
    started: float,
    started_wall: float,
) -> OpenAttempt | None:
    """The attempt on one key; None when the upstream rejected that key (401/403)."""
    backend = state.backends[admitted.model.backend]
    try:
        response = await backend.open(UPSTREAM_PATH[ctx.request.endpoint], body, lease.api_key)
    except TransportFailure as broken:
        lease.release()
        signal = Signal.TIMEOUT if broken.kind is FailureKind.TIMEOUT else Signal.SERVER_ERROR
        publish(state, ctx, admitted, lease, signal, started, started_wall,
                error_kind=broken.kind.value)
        raise AttemptFailed(signal, str(broken)) from None
    if response.status_code < 300:
        return OpenAttempt(admitted, lease, response, started, started_wall)
    failure = await _classify(response, lease.api_key)
    lease.release()
    key_rejected = response.status_code in (401, 403)
    publish(state, ctx, admitted, lease, failure.signal, started, started_wall,
            status=response.status_code, retry_after=failure.retry_after,
            key_unusable=key_rejected)
    if key_rejected and lease.ref is not None:
        return None
    raise failure


async def _classify(response: UpstreamBody, api_key: str | None) -> AttemptFailed:
    status = response.status_code
    try:
        raw = await _read_bounded(response)
    except (httpx.HTTPError, OSError):
        raw = b""
    finally:
        await response.aclose()
    message, code, error_type = _error_fields(raw)
    if api_key:
        # An upstream that echoes the key in its error text must not hand it to the client.
        message = message.replace(api_key, mask(api_key))
    if status == 429:
        return AttemptFailed(Signal.RATE_LIMITED, "upstream rate limited",
                             retry_after=parse_retry_after(response.headers.get("retry-after")))
    if status in (401, 403):
        return AttemptFailed(Signal.CLIENT_ERROR, "upstream rejected the gateway's key")
    if 400 <= status < 500:
        error = UpstreamClientError(status, message or f"upstream answered {status}", code,
                                    error_type)
        exceeded = code == "context_length_exceeded" or "context length" in message.lower()
        return AttemptFailed(Signal.CLIENT_ERROR, message, client_error=error,
                             context_exceeded=exceeded)
    return AttemptFailed(Signal.SERVER_ERROR, f"upstream answered {status}")


async def _read_bounded(response: UpstreamBody) -> bytes:
    raw = b""
    async for chunk in response.aiter_bytes():
        raw += chunk
        if len(raw) > _ERROR_BODY_LIMIT:
            break
    return raw


def _error_fields(raw: bytes) -> tuple[str, str | None, str | None]:
    try:
        error = orjson.loads(raw).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        return "", None, None
    if not isinstance(error, dict):
        return (error if isinstance(error, str) else ""), None, None
    message = error.get("message")
    code = error.get("code")
    kind = error.get("type")
    return (
        message if isinstance(message, str) else "",
        code if isinstance(code, str) else None,
        kind if isinstance(kind, str) else None,
    )


def parse_retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None
