"""The app factory: builds the FastAPI app for one config; state is built in the lifespan."""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from gateway import __version__
from gateway.api import admin, feedback, proxy_routes, reload, system
from gateway.api.fastpath import GatewayFastAPI, ProxyFastPath
from gateway.api.middleware import RequestIdMiddleware
from gateway.config.models import GatewayConfig
from gateway.errors import (
    AuthenticationFailed,
    GatewayError,
    InvalidRequest,
    RouteNotFound,
    error_json,
)
from gateway.keys.reload import KeyReloader
from gateway.metrics import Metrics
from gateway.runtime import Runtime

log = logging.getLogger("gateway")


def create_app(
    config: GatewayConfig,
    *,
    env: Mapping[str, str] | None = None,
    clock: Callable[[], float] = time.time,
) -> FastAPI:
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        runtime = await Runtime.start(config, os.environ if env is None else env, clock, metrics)
        runtime.install(app)
        reloader = KeyReloader(config.backends, runtime.env, runtime.state.keys)
        app.state.key_reloader = reloader
        uninstall_sighup = reloader.install_sighup(asyncio.get_running_loop())
        try:
            yield
        finally:
            uninstall_sighup()
            await runtime.stop()

    app = GatewayFastAPI(
        title="LLM gateway", version=__version__, lifespan=lifespan,
        docs_url=None, redoc_url=None, openapi_url=None,
    )
    app.add_middleware(RequestIdMiddleware, in_flight=metrics.in_flight)
    # The proxied routes skip FastAPI's per-request layers (see gateway/api/fastpath.py).
    app.fast = RequestIdMiddleware(ProxyFastPath(app.normal_path), in_flight=metrics.in_flight)
    app.add_exception_handler(GatewayError, _gateway_error)  # type: ignore[arg-type]
    app.add_exception_handler(HTTPException, _http_error)  # type: ignore[arg-type]
    for module in (proxy_routes, system, admin, reload, feedback):
        app.include_router(module.router)
    return app


async def _gateway_error(request: Request, error: GatewayError) -> Response:
    return Response(
        error_json(error),
        status_code=error.status_code,
        media_type="application/json",
        headers=error.headers(),
    )


async def _http_error(request: Request, error: HTTPException) -> Response:
    if request.url.path.startswith("/v1/") and error.status_code in (404, 405):
        # Every /v1/* route needs a client key: without one, a stranger learns nothing,
        # not even which routes exist.
        try:
            request.app.state.auth.client_for(request)
        except AuthenticationFailed as failed:
            return await _gateway_error(request, failed)
    if error.status_code == 404:
        mapped: GatewayError = RouteNotFound(f"no route {request.method} {request.url.path}")
    elif error.status_code == 405:
        mapped = InvalidRequest(f"method {request.method} is not allowed here")
        mapped.status_code = 405
    else:
        mapped = InvalidRequest(str(error.detail))
        mapped.status_code = error.status_code
    return await _gateway_error(request, mapped)
