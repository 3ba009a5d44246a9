"""The upstream HTTP/1.1 client against a raw loopback server that answers as each test says.

The server records every request it reads and counts the connections it accepted, so keep-alive
reuse (and its absence where reuse would be wrong) is observed on the wire, not assumed.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest

from gateway.upstream import http1
from gateway.upstream.base import FailureKind, TransportFailure

HEADERS = b"Content-Type: application/json\r\n"


@dataclass
class Server:
    port: int = 0
    connections: int = 0
    requests: list[bytes] = field(default_factory=list)


def chunked(*parts: bytes, end: bool = True) -> bytes:
    body = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts)
    return body + (b"0\r\n\r\n" if end else b"")


@asynccontextmanager
async def serving(answer: Callable[[asyncio.StreamWriter, bytes], object]) -> AsyncIterator[Server]:
    state = Server()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        state.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                request = head + await reader.readexactly(length)
                state.requests.append(request)
                result = answer(writer, request)
                if asyncio.iscoroutine(result):
                    await result
                await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()


def ok_json(writer: asyncio.StreamWriter, request: bytes) -> None:
    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n{\"ok\":true}")


async def read_all(response: http1.UpstreamResponse) -> bytes:
    return b"".join([chunk async for chunk in response.aiter_bytes()])


async def test_post_sends_one_request_with_host_length_and_headers_then_reuses_the_socket() -> None:
    async with serving(ok_json) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}/v1")
        for _ in range(3):
            response = await http1.post(pool, "/chat/completions", b'{"a":1}', HEADERS)
            assert response.status_code == 200
            assert response.headers["content-length"] == "11"
            assert await read_all(response) == b'{"ok":true}'
            await response.aclose()
        pool.close()
    assert server.connections == 1
    first = server.requests[0]
    assert first.startswith(b"POST /v1/chat/completions HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}\r\n".encode() in first
    assert b"Content-Length: 7\r\n" in first and first.endswith(b'\r\n\r\n{"a":1}')


async def test_a_chunked_stream_arrives_piece_by_piece_before_it_ends() -> None:
    release = asyncio.Event()

    async def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked(b"data: 1\n\n", end=False))
        await writer.drain()
        await release.wait()
        writer.write(chunked(b"data: 2\n\n"))

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        chunks = response.aiter_bytes().__aiter__()
        assert await chunks.__anext__() == b"data: 1\n\n"  # before the server sent the rest
        release.set()
        rest = b"".join([c async for c in chunks])
        assert rest == b"data: 2\n\n" and response.complete
        await response.aclose()
        pool.close()


async def test_a_body_cut_short_raises_an_oserror_and_the_socket_is_not_reused() -> None:
    def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked(b"data: 1\n\n", end=False))
        writer.close()

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        with pytest.raises(OSError):
            await read_all(response)
        await response.aclose()
        assert pool._idle == []
        pool.close()


async def test_a_body_without_length_is_read_until_the_server_closes() -> None:
    def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nall of it")
        writer.close()

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        assert await read_all(response) == b"all of it"
        pool.close()


async def test_gzip_bodies_are_decoded() -> None:
    packed = gzip.compress(b'{"zipped":true}')

    def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
                     % (len(packed), packed))

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        assert await read_all(response) == b'{"zipped":true}'
        pool.close()
    assert b"Accept-Encoding" not in server.requests[0]  # the caller's headers decide


async def test_closing_a_stream_early_closes_its_socket_so_the_upstream_stops() -> None:
    async def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked(b"data: 1\n\n", end=False))
        await writer.drain()
        await asyncio.sleep(3600)

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        await response.aiter_bytes().__anext__()
        await response.aclose()
        connection = response.connection
        assert connection is None and pool._idle == []
        again = await http1.post(pool, "/x", b"{}", HEADERS)
        await again.aclose()
        pool.close()
    assert server.connections == 2


async def test_after_body_done_the_socket_waits_for_the_terminator_and_is_reused() -> None:
    async def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                     + chunked(b"data: [DONE]\n\n", end=False))
        await writer.drain()
        await asyncio.sleep(0.05)
        writer.write(b"0\r\n\r\n")

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        assert await response.aiter_bytes().__anext__() == b"data: [DONE]\n\n"
        response.body_done()
        await response.aclose()
        for _ in range(100):
            if pool._idle:
                break
            await asyncio.sleep(0.01)
        assert len(pool._idle) == 1
        second = await http1.post(pool, "/x", b"{}", HEADERS)
        await second.aclose()
        pool.close()
    assert server.connections == 1


async def test_a_read_deadline_raises_timeout_without_a_timeout_per_chunk() -> None:
    async def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        await writer.drain()
        await asyncio.sleep(3600)

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        response = await http1.post(pool, "/x", b"{}", HEADERS)
        loop = asyncio.get_running_loop()
        response.read_deadline = loop.time() + 0.05
        started = loop.time()
        with pytest.raises(TimeoutError):
            await read_all(response)
        assert 0.04 <= loop.time() - started < 5
        await response.aclose()
        pool.close()


async def test_a_refused_connection_is_a_connect_failure() -> None:
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    pool = http1.Pool(f"http://127.0.0.1:{port}")
    with pytest.raises(TransportFailure) as failure:
        await http1.post(pool, "/x", b"{}", HEADERS)
    assert failure.value.kind is FailureKind.CONNECT


async def test_a_server_closing_before_the_head_is_a_protocol_failure() -> None:
    def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.close()

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        with pytest.raises(TransportFailure) as failure:
            await http1.post(pool, "/x", b"{}", HEADERS)
        assert failure.value.kind is FailureKind.PROTOCOL


async def test_an_idle_socket_the_server_closed_is_not_reused() -> None:
    def answer(writer: asyncio.StreamWriter, request: bytes) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
        writer.close()  # keep-alive by the headers, but the server hangs up right after

    async with serving(answer) as server:
        pool = http1.Pool(f"http://127.0.0.1:{server.port}")
        first = await http1.post(pool, "/x", b"{}", HEADERS)
        assert await read_all(first) == b"{}"
        for _ in range(100):
            if not pool._idle:
                break
            await asyncio.sleep(0.01)
        second = await http1.post(pool, "/x", b"{}", HEADERS)
        assert await read_all(second) == b"{}"
        pool.close()
    assert server.connections == 2


def test_base_url_path_and_default_ports_shape_the_request_line() -> None:
    pool = http1.Pool("https://api.example.com/v1/")
    assert (pool.host, pool.port, pool.tls, pool.prefix) == ("api.example.com", 443, True, "/v1")
    assert pool.host_line == b"Host: api.example.com\r\n"
    request = http1.encode_post(pool, "/embeddings", b"{}", b"")
    assert request.startswith(b"POST /v1/embeddings HTTP/1.1\r\nHost: api.example.com\r\n")
    with pytest.raises(ValueError):
        http1.Pool("ftp://example.com")
