"""Server-sent events: an incremental parser for upstream bodies and the writer for clients.

The parser never buffers a whole body: it yields each event's `data` payload as soon as the
blank line that ends it arrives. The writer emits exactly `data: <json>\\n\\n` per event (LF
line endings, no `event:` or `id:` fields), which is what OpenAI SDKs expect.
`EventStreamResponse` sends such a stream to the client (see its docstring for why it is not
Starlette's StreamingResponse as is).
"""

from __future__ import annotations

import asyncio

import orjson
from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

DONE = b"[DONE]"
DONE_EVENT = b"data: [DONE]\n\n"


class SSEParser:
    """Feed raw bytes, get complete `data` payloads back (joined with LF when multi-line)."""

    __slots__ = ("_buffer",)

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        buffer = self._buffer + chunk
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n")
        events: list[bytes] = []
        start = 0
        while True:
            end = buffer.find(b"\n\n", start)
            if end < 0:
                break
            payload = _data_of(buffer[start:end])
            if payload is not None:
                events.append(payload)
            start = end + 2
        self._buffer = buffer[start:]
        return events

    def flush(self) -> list[bytes]:
        """Whatever complete-looking event remains when the body ends without a blank line."""
        rest, self._buffer = self._buffer, b""
        payload = _data_of(rest.rstrip(b"\n"))
        return [payload] if payload is not None else []


def _data_of(block: bytes) -> bytes | None:
    if block.startswith(b"data:") and b"\n" not in block:
        return block[5:].lstrip(b" ")
    parts = [line[5:].lstrip(b" ") for line in block.split(b"\n") if line.startswith(b"data:")]
    return b"\n".join(parts) if parts else None


def encode_event(payload: object) -> bytes:
    return b"data: " + orjson.dumps(payload) + b"\n\n"


class EventStreamResponse(StreamingResponse):
    """A StreamingResponse that sends its body from the calling task.

    Starlette's StreamingResponse, under an ASGI server older than spec 2.4 (uvicorn says
    2.3), opens an anyio task group per response (two tasks and a cancel scope) so that a
    client leaving cancels the body; that cost ~5% of a stream's CPU and an event-loop turn
    before the first byte. Here the body is streamed by the current task and one plain
    asyncio task waits for `http.disconnect` and cancels it: the same effect (the body
    iterator is closed at once when the client leaves, and the relay closes the upstream).
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        task = asyncio.current_task()
        if scope["type"] != "http" or task is None:
            await super().__call__(scope, receive, send)
            return
        state = {"streaming": True, "gone": False}

        async def watch() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass
            if state["streaming"]:
                state["gone"] = True
                task.cancel()

        watcher = asyncio.get_running_loop().create_task(watch())
        try:
            await self.stream_response(send)
        except asyncio.CancelledError:
            # Our own cancel (the client left) ends the response quietly; any other is not ours.
            if not state["gone"] or task.uncancel() > 0:
                raise
        finally:
            state["streaming"] = False
            watcher.cancel()
        if self.background is not None:
            await self.background()
