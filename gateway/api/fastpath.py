"""A direct ASGI route to the three proxied endpoints, ahead of FastAPI's router.

`POST /v1/chat/completions`, `/v1/completions` and `/v1/embeddings` are the hot path. Going
through FastAPI costs about as much CPU as proxying the request: route matching walks every
included router, then the exception middleware, the request-response wrapper and dependency
solving run for a handler that needs none of them (measured with py-spy: ~30% of a
non-stream request's CPU). This middleware sits inside `RequestIdMiddleware` (so request ids
and the in-flight gauge are unchanged) and hands exactly those three method+path pairs to
`proxy_routes.proxy`; every other request goes on to FastAPI, where the same three routes
stay registered.

Invariants: the same handler as the FastAPI routes; a `GatewayError` becomes the same
response the app's exception handler renders (`error_response`); any other exception
propagates to `RequestIdMiddleware`'s last-resort 500, as it does through FastAPI.

`GatewayFastAPI` goes one step further: FastAPI's own per-request layers (its telemetry
check, ServerErrorMiddleware, the body-limit and exception-telemetry middleware, each with a
`send` wrapper that every stream chunk passes through) run before any user middleware. The
subclass hands the three routes to `fast` (RequestIdMiddleware + ProxyFastPath, built by the
app factory) before those layers; every other request takes FastAPI's normal path. FastAPI's
native OpenTelemetry instrumentation therefore does not see the proxied routes (the gateway
has its own metrics); a `root_path` deployment takes the normal path.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from gateway.api.proxy_routes import proxy
from gateway.errors import GatewayError, error_json
from gateway.proxy.request import Endpoint

ROUTES = {
    "/v1/chat/completions": Endpoint.CHAT,
    "/v1/completions": Endpoint.COMPLETIONS,
    "/v1/embeddings": Endpoint.EMBEDDINGS,
}


def error_response(error: GatewayError) -> Response:
    return Response(
        error_json(error),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers(),
    )


class ProxyFastPath:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = ROUTES.get(scope["path"]) if scope["type"] == "http" else None
        if endpoint is None or scope["method"] != "POST" or scope.get("root_path"):
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive, send)
        try:
            response = await proxy(request, endpoint)
        except GatewayError as error:
            response = error_response(error)
        await response(scope, receive, send)


class GatewayFastAPI(FastAPI):
    """FastAPI that serves the proxied routes through `fast` ahead of its own layers."""

    fast: ASGIApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        fast = self.fast
        if (
            fast is not None
            and scope["type"] == "http"
            and scope["path"] in ROUTES
            and scope["method"] == "POST"
            and not self.root_path
            and not scope.get("root_path")
        ):
            scope["app"] = self  # what Starlette sets: handlers reach app.state through it
            await fast(scope, receive, send)
            return
        await super().__call__(scope, receive, send)

    async def normal_path(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own handling, whatever the route (the fast chain's fallback)."""
        await super().__call__(scope, receive, send)
