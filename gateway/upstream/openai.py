"""The OpenAI-compatible backend kind: one pooled HTTP/1.1 client per backend.

The response head must arrive within the backend's `timeout_secs`; after that the body is
read without a read timeout, because the stream relay enforces the first-token and idle
timeouts itself (they differ per model and per phase).

The client is gateway/upstream/http1.py (asyncio + httptools, measured several times cheaper
per request than httpx on the gateway's hot path). httpx stays as the fallback when httptools
is not installed, and when a caller hands in an httpx transport (tests, special set-ups).
Request headers are encoded once per key, not per request.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import httpx

from gateway import __version__
from gateway.config.models import BackendConfig
from gateway.upstream.base import UpstreamBody, map_transport_error

try:
    from gateway.upstream import http1
except ImportError:  # httptools is missing: httpx serves every request
    http1 = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from gateway.upstream.http1 import Pool

_JSON = "application/json"
_STATIC_HEADERS = (
    b"Content-Type: application/json\r\nAccept: */*\r\nAccept-Encoding: identity\r\n"
    b"User-Agent: llm-gateway/" + __version__.encode() + b"\r\n"
)


class OpenAIBackend:
    def __init__(self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.name = config.name
        self._timeout_secs = config.timeout_secs
        base_url = config.base_url.rstrip("/")
        self._pool: Pool | None = None
        self._client: httpx.AsyncClient | None = None
        # Bounded by the backend's keys; holds secrets, so it is never part of the repr.
        self._headers: dict[str | None, bytes] = {}
        if transport is None and http1 is not None:
            self._pool = http1.Pool(base_url)
        else:
            self._client = httpx.AsyncClient(
                base_url=base_url,
                timeout=httpx.Timeout(config.timeout_secs, read=None),
                # Expire idle connections before a typical 5 s server keep-alive closes them.
                limits=httpx.Limits(
                    max_connections=1000, max_keepalive_connections=200, keepalive_expiry=4.0
                ),
                transport=transport,
                trust_env=False,
            )

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.name!r})"

    async def open(self, path: str, body: bytes, api_key: str | None) -> UpstreamBody:
        if self._pool is None:
            return await self._open_httpx(path, body, api_key)
        headers = self._headers.get(api_key)
        if headers is None:
            auth = b"" if api_key is None else b"Authorization: Bearer %s\r\n" % api_key.encode()
            headers = self._headers[api_key] = _STATIC_HEADERS + auth
        try:
            async with asyncio.timeout(self._timeout_secs):
                return await http1.post(self._pool, path, body, headers)
        except TimeoutError as exc:
            raise map_transport_error(exc) from None

    async def _open_httpx(self, path: str, body: bytes, api_key: str | None) -> UpstreamBody:
        assert self._client is not None
        headers = {"content-type": _JSON, "accept": "*/*"}
        if api_key is not None:
            headers["authorization"] = "Bearer " + api_key
        request = self._client.build_request("POST", path, content=body, headers=headers)
        try:
            async with asyncio.timeout(self._timeout_secs):
                return await self._client.send(request, stream=True)
        except (httpx.HTTPError, TimeoutError, OSError) as exc:
            raise map_transport_error(exc) from None

    async def aclose(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._client is not None:
            await self._client.aclose()

