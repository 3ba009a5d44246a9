"""A minimal, fast OpenAI-compatible upstream for benchmarks (`python -m bench.upstream`).

The simulator (`gateway sim`) is a full FastAPI app with fault injection and a request log;
on one core it answers a few thousand requests a second, which would cap what a benchmark can
show of the gateway. This server is an asyncio Protocol on uvloop that parses just enough
HTTP/1.1 (request line, Content-Length, keep-alive, pipelining) and answers from byte
templates built once at start-up, so the direct-to-upstream ceiling is far above the gateway.

What it sends has the shape the sim sends: chat/legacy completions with `usage`, streams with
a role chunk, `tokens` content chunks, a finish chunk, a usage chunk when asked and
`data: [DONE]`. The response's `model` echoes the request's, and every response gets its own
`id`. Stream events are written one chunked-encoding frame at a time with a yield to the
event loop in between (a real upstream writes token by token), unless `--burst` is given;
`--gap-ms` spaces the events of a stream in time (a paced model: one event per read).

Invariants: no blocking work per request besides one orjson parse of the body; the templates
are the only per-model state and are built on first use (bounded by the models asked for).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
from collections.abc import Callable, Iterator

import orjson

_WORDS = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta")
_HEAD_JSON = (
    b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nconnection: keep-alive\r\n\r\n"
)
_HEAD_SSE = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\n"
    b"transfer-encoding: chunked\r\nconnection: keep-alive\r\n\r\n"
)
_NOT_FOUND = (
    b"HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: 2\r\n"
    b"connection: keep-alive\r\n\r\n{}"
)
_ID_MARK = b"@@ID@@"
_CREATED = 1700000000


def pieces(tokens: int) -> list[str]:
    return [("" if i == 0 else " ") + _WORDS[i % len(_WORDS)] for i in range(tokens)]


class Templates:
    """Response bodies per (endpoint, model), split around the response id."""

    def __init__(self, tokens: int) -> None:
        self.tokens = tokens
        self._unary: dict[tuple[bool, str], tuple[bytes, bytes]] = {}
        self._stream: dict[tuple[bool, str, bool], list[tuple[bytes, bytes]]] = {}

    def unary(self, chat: bool, model: str) -> tuple[bytes, bytes]:
        key = (chat, model)
        found = self._unary.get(key)
        if found is None:
            text = "".join(pieces(self.tokens))
            usage = {"prompt_tokens": 20, "completion_tokens": self.tokens,
                     "total_tokens": 20 + self.tokens}
            choice: dict[str, object]
            if chat:
                choice = {"index": 0, "message": {"role": "assistant", "content": text,
                                                  "refusal": None},
                          "logprobs": None, "finish_reason": "stop"}
            else:
                choice = {"text": text, "index": 0, "logprobs": None, "finish_reason": "stop"}
            body = orjson.dumps({
                "id": _ID_MARK.decode(), "object": "chat.completion" if chat else "text_completion",
                "created": _CREATED, "model": model, "system_fingerprint": None,
                "choices": [choice], "usage": usage,
            })
            before, _, after = body.partition(_ID_MARK)
            found = self._unary[key] = (before, after)
        return found

    def stream(self, chat: bool, model: str, usage: bool) -> list[tuple[bytes, bytes]]:
        key = (chat, model, usage)
        found = self._stream.get(key)
        if found is None:
            found = self._stream[key] = [
                _split(event) for event in _events(chat, model, usage, self.tokens)
            ]
        return found


def _events(chat: bool, model: str, usage: bool, tokens: int) -> list[bytes]:
    def chunk(choices: list[object], **extra: object) -> bytes:
        body: dict[str, object] = {
            "id": _ID_MARK.decode(),
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": _CREATED, "model": model, "system_fingerprint": None, "choices": choices,
        }
        if usage:
            body["usage"] = None
        body.update(extra)
        return b"data: " + orjson.dumps(body) + b"\n\n"

    def choice(piece: str | None, finish: str | None) -> dict[str, object]:
        if chat:
            delta = {} if piece is None else {"content": piece}
            return {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}
        return {"text": piece or "", "index": 0, "logprobs": None, "finish_reason": finish}

    events = []
    if chat:
        events.append(chunk([{"index": 0, "delta": {"role": "assistant", "content": ""},
                              "logprobs": None, "finish_reason": None}]))
    events += [chunk([choice(p, None)]) for p in pieces(tokens)]
    events.append(chunk([choice(None, "stop")]))
    if usage:
        events.append(chunk([], usage={"prompt_tokens": 20, "completion_tokens": tokens,
                                       "total_tokens": 20 + tokens}))
    events.append(b"data: [DONE]\n\n")
    return events


def _split(event: bytes) -> tuple[bytes, bytes]:
    before, mark, after = event.partition(_ID_MARK)
    return (before, after) if mark else (event, b"")


def _frame(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


class UpstreamProtocol(asyncio.Protocol):
    def __init__(self, templates: Templates, ids: itertools.count[int], burst: bool,
                 gap_s: float = 0.0) -> None:
        self.templates = templates
        self.ids = ids
        self.burst = burst
        self.gap_s = gap_s
        self.buffer = b""
        self.transport: asyncio.Transport | None = None
        self.streaming = False  # requests arriving during a stream wait for it (HTTP/1.1)
        self.loop = asyncio.get_running_loop()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        self._serve()

    def _serve(self) -> None:
        while not self.streaming and self.transport is not None:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end]
            length = _content_length(head)
            total = end + 4 + length
            if len(self.buffer) < total:
                return
            body = self.buffer[end + 4:total]
            self.buffer = self.buffer[total:]
            self._answer(head, body)

    def _answer(self, head: bytes, body: bytes) -> None:
        assert self.transport is not None
        path = head[: head.find(b"\r\n")].split(b" ")[1]
        chat = path.endswith(b"/chat/completions")
        if not (chat or path.endswith(b"/completions")):
            if path.endswith(b"/models") or path.endswith(b"/healthz"):
                payload = b'{"object":"list","data":[]}'
                self.transport.write(_HEAD_JSON % len(payload) + payload)
            else:
                self.transport.write(_NOT_FOUND)
            return
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = {}
        model = str(request.get("model") or "bench")
        rid = b"chatcmpl-b%x" % next(self.ids)
        if not request.get("stream"):
            before, after = self.templates.unary(chat, model)
            payload = before + rid + after
            self.transport.write(_HEAD_JSON % len(payload) + payload)
            return
        options = request.get("stream_options") or {}
        usage = bool(options.get("include_usage"))
        frames = [_frame(before + rid + after) if after else _frame(before)
                  for before, after in self.templates.stream(chat, model, usage)]
        frames.append(b"0\r\n\r\n")
        if self.burst:
            self.transport.write(_HEAD_SSE + b"".join(frames))
            return
        self.streaming = True
        self.transport.write(_HEAD_SSE)
        self._write_next(iter(frames))

    def _write_next(self, frames: Iterator[bytes]) -> None:
        frame = next(frames, None)
        if self.transport is None:
            return
        if frame is None:
            self.streaming = False
            self._serve()
            return
        self.transport.write(frame)
        if self.gap_s:
            self.loop.call_later(self.gap_s, self._write_next, frames)
        else:
            self.loop.call_soon(self._write_next, frames)


def _content_length(head: bytes) -> int:
    lower = head.lower()
    at = lower.find(b"\r\ncontent-length:")
    if at < 0:
        return 0
    end = lower.find(b"\r\n", at + 2)
    return int(lower[at + 17: end if end >= 0 else None].strip())


async def serve(host: str, port: int, tokens: int, burst: bool,
                ready: Callable[[int], None] | None = None, gap_s: float = 0.0) -> None:
    templates = Templates(tokens)
    ids = itertools.count(1)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(templates, ids, burst, gap_s), host, port, backlog=1024
    )
    if ready is not None:
        ready(server.sockets[0].getsockname()[1])
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9200)
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--burst", action="store_true", help="write a whole stream at once")
    parser.add_argument("--gap-ms", type=float, default=0.0, help="pause between stream events")
    args = parser.parse_args(argv)
    try:
        import uvloop
    except ImportError:
        runner: Callable[..., object] = asyncio.run
    else:
        runner = uvloop.run
    try:
        runner(serve(args.host, args.port, args.tokens, args.burst,
                     ready=lambda port: print(f"ready {port}", flush=True),
                     gap_s=args.gap_ms / 1000))
    except KeyboardInterrupt:
        pass
    os._exit(0)


if __name__ == "__main__":
    main()
