"""Writing a response with the decided faults, and noticing when the client goes away.

`SimResponse` is a small ASGI response that (1) waits `headers_delay` before any byte, (2)
sends a body that is either bytes or an async iterator of SSE events, and (3) listens for
`http.disconnect` the whole time, so a client that leaves (even during a stall or a header
delay, when nothing is being sent) is recorded at once in the request log. When the simulator
shuts down (`SimState.closing`), open responses are cut at once instead of holding it up.

`stream_events` yields one stream's SSE events and applies the in-stream faults. A cut
connection is `SimulatedDisconnect` raised out of the ASGI app: uvicorn then closes the socket
with the chunked body unterminated, which a client sees as a protocol error, not a clean end.
`quiet_disconnects` keeps these deliberate cuts out of uvicorn's error log.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from gateway.sim import wire
from gateway.sim.faults import Decision
from gateway.sim.state import RequestRecord


class SimulatedDisconnect(Exception):
    """Raised inside a stream to make the server drop the connection mid-body."""


class _DropSimulatedDisconnects(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, SimulatedDisconnect)


@contextlib.contextmanager
def quiet_disconnects() -> Iterator[None]:
    """While active, uvicorn does not log a traceback for each simulated connection cut."""
    logger = logging.getLogger("uvicorn.error")
    log_filter = _DropSimulatedDisconnects()
    logger.addFilter(log_filter)
    try:
        yield
    finally:
        logger.removeFilter(log_filter)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


async def _server_closing(scope: Scope) -> None:
    """Returns once the simulator serving this request starts shutting down."""
    app = scope.get("app")
    state = getattr(getattr(app, "state", None), "sim", None)
    closing = getattr(state, "closing", None)
    if isinstance(closing, asyncio.Event):
        try:
            await closing.wait()
            return
        except RuntimeError:
            pass  # the app was first served in another event loop; nobody will close this one
    await asyncio.Event().wait()  # never closing


class SimResponse(Response):
    """Status, headers and body sent after `delay_s`, with disconnects recorded in `record`."""

    def __init__(
        self,
        *,
        status_code: int,
        body: bytes | AsyncGenerator[bytes, None],
        record: RequestRecord,
        headers: Mapping[str, str] | None = None,
        media_type: str = "application/json",
        delay_s: float = 0.0,
        outcome: str = "ok",
    ) -> None:
        self.status_code = status_code
        self.media_type = media_type
        self.background = None
        self._record = record
        self._delay_s = delay_s
        self._outcome = outcome  # recorded once a bytes body is sent (streams record their own)
        if isinstance(body, bytes):
            self.body = body
            self._events: AsyncGenerator[bytes, None] | None = None
        else:
            self._events = body
        self.init_headers(headers)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        pump = asyncio.ensure_future(self._pump(send))
        listener = asyncio.ensure_future(_wait_for_disconnect(receive))
        closer = asyncio.ensure_future(_server_closing(scope))
        try:
            await asyncio.wait({pump, listener, closer}, return_when=asyncio.FIRST_COMPLETED)
            if pump.done():
                pump.result()  # re-raises SimulatedDisconnect for the server to cut the socket
                return
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            if listener.done():
                self._record.client_gone()
                return
            # The server is stopping: drop the connection rather than keep shutdown waiting
            # on a stall or a long delay.
            if self._record.outcome in ("pending", "streaming"):
                self._record.outcome = "aborted"
            raise SimulatedDisconnect("simulator shutting down")
        finally:
            for task in (pump, listener, closer):
                task.cancel()
            if self._events is not None:
                with contextlib.suppress(Exception):
                    await self._events.aclose()
            self._record.finish()

    async def _pump(self, send: Send) -> None:
        if self._delay_s > 0:
            await asyncio.sleep(self._delay_s)
        await send(
            {"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers}
        )
        if self._events is None:
            await send({"type": "http.response.body", "body": self.body, "more_body": False})
            self._record.finish(self._outcome)
            return
        async for event in self._events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})
        self._record.finish()


@dataclass(frozen=True)
class StreamPlan:
    """One stream's content: the pieces to send and how it ends when nothing goes wrong."""

    pieces: Sequence[str]
    finish_reason: str
    prompt_tokens: int
    include_usage: bool


async def _pause(seconds: float) -> None:
    if seconds > 0:
        await asyncio.sleep(seconds)


async def _after(sent: int, d: Decision, record: RequestRecord) -> AsyncIterator[bytes]:
    """The fault due once `sent` tokens are out, if any (die beats error event beats stall)."""
    if d.die_after_tokens == sent:
        record.finish("died")
        raise SimulatedDisconnect(f"simulated connection cut after {sent} tokens")
    if d.error_event_after_tokens == sent:
        record.finish("error_event")
        yield wire.sse(wire.error_body(500, "simulated upstream error during the stream"))
        return
    if d.stall_after_tokens == sent:
        record.outcome = "stalled"
        # Nothing will ever set this event: the stream stays open until the client leaves.
        await asyncio.Event().wait()


async def stream_events(
    writer: wire.ChunkWriter, plan: StreamPlan, d: Decision, record: RequestRecord
) -> AsyncGenerator[bytes, None]:
    """The SSE events of one stream, with the decided faults applied."""
    record.outcome = "streaming"
    for chunk in writer.opening():
        yield wire.sse(chunk)
    await _pause(d.ttft_s)
    sent = 0
    for piece in [None, *plan.pieces]:
        if piece is not None:
            if sent > 0:
                await _pause(d.token_delay_s)
            yield wire.sse(writer.token(piece))
            sent += 1
            record.tokens_sent = sent
            if d.malformed and sent == 1:
                yield wire.MALFORMED
        ended = False
        async for event in _after(sent, d, record):
            ended = True
            yield event
        if ended:
            return
    yield wire.sse(writer.finish(plan.finish_reason))
    if plan.include_usage:
        yield wire.sse(writer.usage(plan.prompt_tokens, sent))
    if not d.no_done:
        yield wire.DONE
    record.finish("ok")
