"""Server-sent events: an incremental parser for upstream bodies and the writer for clients.

The parser never buffers a whole body: it yields each event's `data` payload as soon as the
blank line that ends it arrives. The writer emits exactly `data: <json>\\n\\n` per event (LF
line endings, no `event:` or `id:` fields), which is what OpenAI SDKs expect.
"""

from __future__ import annotations

import orjson

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
