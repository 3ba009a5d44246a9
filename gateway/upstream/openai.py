"""The OpenAI-compatible backend kind: one pooled httpx client per backend.

The response head must arrive within the backend's `timeout_secs`; after that the body is
read without an httpx read timeout, because the stream relay enforces the first-token and
idle timeouts itself (they differ per model and per phase).
"""

from __future__ import annotations

import asyncio

import httpx

from gateway.config.models import BackendConfig
from gateway.upstream.base import map_transport_error

_JSON = "application/json"


class OpenAIBackend:
    def __init__(self, config: BackendConfig, transport: httpx.AsyncBaseTransport | None = None):
        self.name = config.name
        self._timeout_secs = config.timeout_secs
        self._client = httpx.AsyncClient(
            base_url=config.base_url.rstrip("/"),
            timeout=httpx.Timeout(config.timeout_secs, read=None),
            limits=httpx.Limits(max_connections=1000, max_keepalive_connections=200),
            transport=transport,
            trust_env=False,
        )

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.name!r})"

    async def open(self, path: str, body: bytes, api_key: str | None) -> httpx.Response:
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
        await self._client.aclose()
