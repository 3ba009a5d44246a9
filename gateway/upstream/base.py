"""What the request path needs of a backend, and the one failure type it raises.

httpx's many exception classes are mapped here, at the upstream boundary, to a
`TransportFailure` with a `FailureKind`; nothing above this package catches httpx errors.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from enum import StrEnum
from typing import Protocol, runtime_checkable

import httpx


class FailureKind(StrEnum):
    CONNECT = "connect"  # refused, reset or closed before the response head
    TIMEOUT = "timeout"  # no response head, first token or chunk in time
    PROTOCOL = "protocol"  # the body broke off after the head


class TransportFailure(Exception):
    def __init__(self, kind: FailureKind, detail: str) -> None:
        super().__init__(f"{kind}: {detail}")
        self.kind = kind


class UpstreamBody(Protocol):
    """An upstream response whose head arrived: what the relays read (httpx.Response fits)."""

    @property
    def status_code(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]:
        """Lower-case names."""

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body as it arrives; a broken body raises OSError or httpx.HTTPError."""

    async def aclose(self) -> None: ...


@runtime_checkable
class DeadlineBody(Protocol):
    """A body whose reader sets a loop-time deadline instead of wrapping each read in
    asyncio.timeout (a wait past `read_deadline` raises TimeoutError), and that can keep its
    connection for reuse when the reader stops at the stream's last event (http1)."""

    read_deadline: float | None

    def body_done(self) -> None:
        """The reader has all it needs; what may still come is the message's framing."""


class Backend(Protocol):
    name: str

    async def open(self, path: str, body: bytes, api_key: str | None) -> UpstreamBody:
        """Send a POST and return once the response head arrived (body still streaming)."""

    async def aclose(self) -> None: ...


def map_transport_error(exc: Exception) -> TransportFailure:
    if isinstance(exc, httpx.TimeoutException | TimeoutError):
        return TransportFailure(FailureKind.TIMEOUT, type(exc).__name__)
    if isinstance(exc, httpx.ConnectError):
        return TransportFailure(FailureKind.CONNECT, type(exc).__name__)
    return TransportFailure(FailureKind.PROTOCOL, type(exc).__name__)
