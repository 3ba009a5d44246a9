"""A minimal keep-alive HTTP/1.1 JSON client for the benchmark's own traffic.

Why not httpx: the benchmark makes three calls per request (completion, verdict, feedback)
and httpx's async stack spends about 5 ms of CPU per call, which on a small machine cost more
than the gateway and the sims together and made the run CPU-bound on the client. This one
writes the request bytes itself and reads `Content-Length` or chunked bodies: about 0.2 ms.

One `Connection` per (worker, server); it reconnects once when the server closed an idle
connection. Not a general client: no TLS, no redirects, no streaming, JSON only.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import orjson


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return orjson.loads(self.body)


class Connection:
    def __init__(self, root: str) -> None:
        parts = urlsplit(root)
        self._host, self._port = parts.hostname or "127.0.0.1", parts.port or 80
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def request(self, method: str, path: str, body: Any = None) -> Reply:
        payload = b"" if body is None else orjson.dumps(body)
        head = (
            f"{method} {path} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n\r\n"
        ).encode()
        for attempt in (1, 2):
            fresh = self._writer is None
            try:
                reader, writer = await self._open()
                writer.write(head + payload)
                return await _read_reply(reader)
            except (ConnectionError, asyncio.IncompleteReadError):
                await self.close()
                if fresh or attempt == 2:  # a new connection failing is a real failure
                    raise
        raise AssertionError("unreachable")

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if self._reader is None or self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self._host, self._port)
        return self._reader, self._writer

    async def close(self) -> None:
        writer, self._reader, self._writer = self._writer, None, None
        if writer is not None:
            writer.close()
            try:
                await writer.wait_closed()
            except ConnectionError:
                pass


async def _read_reply(reader: asyncio.StreamReader) -> Reply:
    raw = await reader.readuntil(b"\r\n\r\n")
    lines = raw.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = bytearray()
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";")[0], 16)
            chunk = await reader.readexactly(size + 2)
            if size == 0:
                break
            body += chunk[:-2]
        return Reply(status, headers, bytes(body))
    length = int(headers.get("content-length", "0"))
    return Reply(status, headers, await reader.readexactly(length) if length else b"")
