"""A small HTTP/1.1 client for upstream calls: asyncio Protocol + httptools, pooled per origin.

Why not httpx: on one core, httpx/httpcore took ~60% of the gateway's CPU at 50 concurrent
requests (measured with py-spy). Its pool scans every connection on each request and on each
response close (`has_expired` polls each socket through anyio's typed attributes), so the
cost per request grows with the number of connections; there are also ~10 layers of async
wrappers per request. This client does what the gateway needs and nothing else: POST a
pre-encoded body, get the status and headers, stream the body as it arrives, keep the
connection alive for the next request.

Invariants:
- A connection is handed to one request at a time; it returns to the idle list (LIFO, so the
  warmest socket is reused) only after its response was read to the end and both sides
  allow keep-alive. A response closed early closes its connection.
- An idle connection that the server closed is dropped when the close arrives
  (`connection_lost`), and one idle longer than `KEEPALIVE_EXPIRY_SECS` is not reused, so a
  request is never sent on a socket known to be dead.
- Failures before the response head raise `TransportFailure` (CONNECT, TIMEOUT or PROTOCOL);
  a body that breaks off raises `BodyBroken`, an `OSError`, which the relays already treat
  like any socket error.
- Reading pauses when more than `_HIGH_WATER` bytes are buffered and the consumer is behind.
- A response closed before its end closes the socket at once (a client that left stops the
  upstream), except after `body_done()`: then only framing is missing, and the socket lingers
  up to LINGER_SECS for it so that the next request can reuse it.
"""

from __future__ import annotations

import asyncio
import ssl
import time
import zlib
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import httptools

from gateway.upstream.base import FailureKind, TransportFailure

# Below uvicorn's and most servers' 5 s keep-alive, so we never reuse a socket as it closes.
KEEPALIVE_EXPIRY_SECS = 4.0
# After the reader said it has all it needs (`body_done`), how long the end of the message
# (typically the chunked terminator after `data: [DONE]`) may take for the socket to be reused.
LINGER_SECS = 1.0
MAX_IDLE = 200
_HIGH_WATER = 256 * 1024


class BodyBroken(ConnectionError):
    """The response body ended before it was complete (socket closed or bad framing)."""


class _Connection(asyncio.Protocol):
    """One socket. Parses one response at a time into the `UpstreamResponse` it serves."""

    def __init__(self, pool: Pool) -> None:
        self.pool = pool
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.response: UpstreamResponse | None = None
        self.head_waiter: asyncio.Future[None] | None = None
        self.closed = False
        self.idle_since = 0.0
        self._header_names: list[bytes] = []
        self._header_values: list[bytes] = []

    # asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            self._fail(BodyBroken("unexpected protocol upgrade"))
        except httptools.HttpParserError as error:
            self._fail(BodyBroken(f"malformed HTTP response: {error}"))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.pool.forget(self)
        response = self.response
        if response is not None and response.head_done and not response.complete:
            if response.until_eof:
                self.on_message_complete()
                return
        self._fail(BodyBroken("upstream closed the connection"))

    # httptools callbacks
    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_names.append(name)
        self._header_values.append(value)

    def on_headers_complete(self) -> None:
        response = self.response
        if response is None:
            return
        headers: dict[str, str] = {}
        for name, value in zip(self._header_names, self._header_values, strict=True):
            key = name.decode("latin-1").lower()
            text = value.decode("latin-1")
            headers[key] = f"{headers[key]}, {text}" if key in headers else text
        self._header_names.clear()
        self._header_values.clear()
        response.start(self.parser.get_status_code(), headers)
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def on_body(self, body: bytes) -> None:
        if self.response is not None:
            self.response.feed(body)

    def on_message_complete(self) -> None:
        response = self.response
        if response is None or response.complete:
            return
        keep = not self.closed and self.parser.should_keep_alive()
        response.finish()
        if not keep:
            self.close()

    # used by the pool and the response
    def send(self, data: bytes, response: UpstreamResponse) -> asyncio.Future[None]:
        assert self.transport is not None
        self.response = response
        response.connection = self
        self.head_waiter = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self.head_waiter

    def release(self) -> None:
        """The response was read to its end: back to the pool if the socket may be reused."""
        response = self.response
        self.response = None
        self.head_waiter = None
        if self.closed or response is None or not response.complete or response.broken:
            self.close()
            return
        self.parser = httptools.HttpResponseParser(self)
        self.idle_since = time.monotonic()
        self.pool.put(self)

    def close(self) -> None:
        self.closed = True
        if self.transport is not None:
            self.transport.close()

    def _fail(self, error: Exception) -> None:
        waiter = self.head_waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(error)
        if self.response is not None:
            self.response.fail(error)
        self.close()


class UpstreamResponse:
    """Status, lower-cased headers, and the body as an async iterator of byte chunks."""

    __slots__ = ("status_code", "headers", "connection", "head_done", "complete", "broken",
                 "until_eof", "read_deadline", "_chunks", "_buffered", "_waiter", "_error",
                 "_decoder", "_paused", "_timer", "_done_reading", "_linger")

    def __init__(self) -> None:
        self.status_code = 0
        self.headers: dict[str, str] = {}
        self.connection: _Connection | None = None
        self.head_done = False
        self.complete = False
        self.broken = False
        self.until_eof = False
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._waiter: asyncio.Future[None] | None = None
        self._error: Exception | None = None
        self._decoder: zlib._Decompress | None = None
        self._paused = False
        # Loop time by which body bytes must arrive while the reader waits (None: no bound).
        # The reader moves it forward per chunk with one float store; a single timer per
        # response re-arms itself lazily, instead of one asyncio.timeout per chunk (~5 µs).
        self.read_deadline: float | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._done_reading = False
        self._linger: asyncio.TimerHandle | None = None

    def start(self, status: int, headers: dict[str, str]) -> None:
        self.status_code, self.headers, self.head_done = status, headers, True
        self.until_eof = "content-length" not in headers and "transfer-encoding" not in headers
        encoding = headers.get("content-encoding", "identity").strip().lower()
        if encoding in ("gzip", "x-gzip"):
            self._decoder = zlib.decompressobj(16 + zlib.MAX_WBITS)
        elif encoding == "deflate":
            self._decoder = zlib.decompressobj()

    def feed(self, data: bytes) -> None:
        if self._linger is not None:
            return  # closed by the reader: only the message's end is awaited
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER and not self._paused and self.connection is not None:
            transport = self.connection.transport
            if transport is not None:
                transport.pause_reading()
                self._paused = True
        self._wake()

    def finish(self) -> None:
        self.complete = True
        if self._linger is not None:
            self._release()  # the message ended after its reader left: reuse the socket
            return
        self._wake()

    def fail(self, error: Exception) -> None:
        if not self.complete:
            self.broken = True
            self._error = error
            if self._linger is not None:
                self._release()
                return
            self._wake()

    def body_done(self) -> None:
        """The reader has every byte it needs (a stream's last event): once it closes the
        response, the socket waits up to LINGER_SECS for the message's end to be reused."""
        self._done_reading = True

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _resume(self) -> None:
        if self._paused and self.connection is not None:
            self._paused = False
            transport = self.connection.transport
            if transport is not None and not transport.is_closing():
                transport.resume_reading()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        while True:
            if self._chunks:
                data = self._chunks[0] if len(self._chunks) == 1 else b"".join(self._chunks)
                self._chunks.clear()
                self._buffered = 0
                self._resume()
                if self._decoder is not None:
                    data = self._decoder.decompress(data)
                if data:
                    yield data
                continue
            if self.complete:
                if self._decoder is not None:
                    tail = self._decoder.flush()
                    self._decoder = None
                    if tail:
                        yield tail
                self._release()
                return
            if self._error is not None:
                raise self._error
            loop = asyncio.get_running_loop()
            self._waiter = loop.create_future()
            deadline = self.read_deadline
            if deadline is not None:
                timer = self._timer
                if timer is not None and timer.when() > deadline:
                    timer.cancel()
                    timer = None
                if timer is None:
                    self._timer = loop.call_at(deadline, self._on_deadline)
            try:
                await self._waiter
            finally:
                self._waiter = None

    def _on_deadline(self) -> None:
        self._timer = None
        waiter, deadline = self._waiter, self.read_deadline
        if waiter is None or waiter.done() or deadline is None:
            return  # data came in time; the next wait arms a new timer
        loop = asyncio.get_running_loop()
        # uvloop's timers have millisecond resolution and may fire a little early.
        if loop.time() >= deadline - 0.001:
            waiter.set_exception(TimeoutError("no upstream data before the deadline"))
        else:
            self._timer = loop.call_at(deadline, self._on_deadline)

    async def aclose(self) -> None:
        """Done with the response: reuse the socket if the body was read to its end (or, after
        `body_done`, once it ends soon); otherwise close it, which stops the upstream."""
        connection = self.connection
        if (not self.complete and self._done_reading and not self.broken
                and connection is not None and not connection.closed):
            if self._linger is None:
                self._chunks.clear()
                self._linger = asyncio.get_running_loop().call_later(LINGER_SECS, self._give_up)
            return
        if not self.complete:
            self.broken = True
        self._release()

    def _give_up(self) -> None:
        self.broken = True
        self._release()

    def _release(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.release()


class Pool:
    """Idle keep-alive connections to one origin, and how to open new ones."""

    def __init__(self, base_url: str) -> None:
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"unsupported upstream URL {base_url!r}")
        self.host = parts.hostname
        self.tls = parts.scheme == "https"
        self.port = parts.port or (443 if self.tls else 80)
        default_port = self.port == (443 if self.tls else 80)
        host_header = self.host if default_port else f"{self.host}:{self.port}"
        if ":" in self.host and default_port:  # an IPv6 literal
            host_header = f"[{self.host}]"
        elif ":" in self.host:
            host_header = f"[{self.host}]:{self.port}"
        self.prefix = parts.path.rstrip("/")
        self.host_line = b"Host: " + host_header.encode("idna") + b"\r\n"
        self._ssl: ssl.SSLContext | None = _tls_context() if self.tls else None
        self._idle: list[_Connection] = []

    def forget(self, connection: _Connection) -> None:
        if connection in self._idle:
            self._idle.remove(connection)

    def put(self, connection: _Connection) -> None:
        if len(self._idle) >= MAX_IDLE:
            connection.close()
            return
        self._idle.append(connection)

    async def acquire(self) -> _Connection:
        now = time.monotonic()
        while self._idle:
            connection = self._idle.pop()
            transport = connection.transport
            if (not connection.closed and transport is not None and not transport.is_closing()
                    and now - connection.idle_since < KEEPALIVE_EXPIRY_SECS):
                return connection
            connection.close()
        loop = asyncio.get_running_loop()
        try:
            _, connection = await loop.create_connection(
                lambda: _Connection(self), self.host, self.port, ssl=self._ssl,
                server_hostname=self.host if self.tls else None,
            )
        except ssl.SSLError as error:
            raise TransportFailure(FailureKind.CONNECT, type(error).__name__) from None
        except OSError as error:
            raise TransportFailure(FailureKind.CONNECT, type(error).__name__) from None
        return connection

    def close(self) -> None:
        for connection in self._idle:
            connection.close()
        self._idle.clear()


def _tls_context() -> ssl.SSLContext:
    try:
        import certifi
    except ImportError:  # the system store, then
        context = ssl.create_default_context()
    else:
        context = ssl.create_default_context(cafile=certifi.where())
    context.set_alpn_protocols(["http/1.1"])
    return context


def encode_post(pool: Pool, path: str, body: bytes, headers: bytes) -> bytes:
    """The whole request as bytes: one write, so head and body leave in one segment."""
    return b"".join((
        b"POST ", (pool.prefix + path).encode("latin-1"), b" HTTP/1.1\r\n", pool.host_line,
        headers, b"Content-Length: ", str(len(body)).encode(), b"\r\n\r\n", body,
    ))


async def post(pool: Pool, path: str, body: bytes, headers: bytes) -> UpstreamResponse:
    """Send a POST and return once the response head arrived (the body still streaming)."""
    connection = await pool.acquire()
    response = UpstreamResponse()
    try:
        await connection.send(encode_post(pool, path, body, headers), response)
    except BodyBroken as error:
        connection.close()
        raise TransportFailure(FailureKind.PROTOCOL, str(error)) from None
    except BaseException:  # cancelled or timed out: the socket is in an unknown state
        connection.close()
        raise
    return response
