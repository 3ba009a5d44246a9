"""Plain ASGI middleware: request ids, the in-flight gauge, and the last-resort error shape.

Pure ASGI (not BaseHTTPMiddleware) so streamed bodies pass through untouched and unbuffered.
Every response gets `x-request-id`; an exception nobody handled becomes an OpenAI-shaped 500
before the response started, and is only logged after (an error cannot be sent mid-body).
"""

from __future__ import annotations

import logging
import uuid

from prometheus_client import Gauge
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from gateway.errors import GatewayError, error_json

log = logging.getLogger("gateway.http")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp, in_flight: Gauge) -> None:
        self.app = app
        self.in_flight = in_flight

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _header(scope, b"x-request-id") or f"req-{uuid.uuid4().hex}"
        scope.setdefault("state", {})["request_id"] = request_id
        encoded = request_id.encode("latin-1", "replace")
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                headers = [(k, v) for k, v in message.get("headers", []) if k != b"x-request-id"]
                headers.append((b"x-request-id", encoded))
                message["headers"] = headers
            await send(message)

        counted = scope["path"].startswith("/v1/")
        if counted:
            self.in_flight.inc()
        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            log.exception("unhandled error on %s", scope["path"])
            if started:
                return
            body = error_json(GatewayError("internal gateway error"))
            await send_with_id({
                "type": "http.response.start",
                "status": 500,
                "headers": [(b"content-type", b"application/json")],
            })
            await send_with_id({"type": "http.response.body", "body": body})
        finally:
            if counted:
                self.in_flight.dec()


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope["headers"]:
        if key == name:
            decoded: str = value.decode("latin-1")
            return decoded[:200] or None
    return None
