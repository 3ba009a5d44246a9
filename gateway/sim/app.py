"""The simulated OpenAI-compatible upstream: app factory and the `/v1/*` routes.

`create_sim_app(options)` builds a fresh app whose `SimState` lives on `app.state.sim`;
nothing is created at import time. Every `/v1/*` request is recorded in the request log
before anything else happens, so tests see rejected requests too.

A request goes: record -> key check -> JSON body -> model profile -> shape checks -> fault
decision (consumes a script step) -> request checks that depend on faults (prefill, context
window) -> planned answer -> response. This module does the steps every endpoint shares;
endpoints.py the rest. Errors are `SimError`, rendered in one place (errors.py).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException as StarletteHTTPException

from gateway.sim import control, endpoints, wire
from gateway.sim.errors import SimError, error_response, json_response
from gateway.sim.options import SimModel, SimOptions
from gateway.sim.state import RequestRecord, SimState
from gateway.sim.stream import quiet_disconnects


def get_state(request: Request) -> SimState:
    return request.app.state.sim  # type: ignore[no-any-return]


StateDep = Annotated[SimState, Depends(get_state)]
Handler = Callable[[SimState, RequestRecord, dict[str, Any], SimModel], Awaitable[Response]]


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token.strip() else None


def _check_key(state: SimState, record: RequestRecord) -> None:
    if state.options.valid_keys and record.auth not in state.options.valid_keys:
        # Masked like OpenAI does: enough to recognise the key, never the whole of it.
        shown = f"{record.auth[:3]}…{record.auth[-4:]}" if record.auth else "none"
        raise SimError(401, f"Incorrect API key provided: {shown}.", code="invalid_api_key")


async def _json_body(request: Request) -> dict[str, Any]:
    try:
        body = orjson.loads(await request.body())
    except orjson.JSONDecodeError:
        raise SimError(400, "We could not parse the JSON body of your request.") from None
    if not isinstance(body, dict):
        raise SimError(400, "The request body must be a JSON object.")
    return body


def _profile(state: SimState, name: Any) -> SimModel:
    if not isinstance(name, str) or not name:
        raise SimError(400, "you must provide a model parameter", param="model")
    model = state.model_profile(name)
    if model is None:
        raise SimError(
            404,
            f"The model `{name}` does not exist or you do not have access to it.",
            code="model_not_found",
        )
    return model


async def _handle(request: Request, state: SimState, handler: Handler) -> Response:
    """The steps every inference endpoint shares, and the one place errors are answered."""
    record = state.new_record(request.url.path, request.method, _bearer(request))
    try:
        _check_key(state, record)
        body = await _json_body(request)
        record.body, record.model = body, body.get("model")
        record.stream = body.get("stream") is True
        model = _profile(state, body.get("model"))
        return await handler(state, record, body, model)
    except SimError as err:
        return error_response(record, err)


def _model_object(model: SimModel) -> dict[str, Any]:
    return wire.model_object(
        model.name,
        input_per_mtok=model.input_per_mtok,
        output_per_mtok=model.output_per_mtok,
        context_window=model.context_window,
        quality=dict(model.quality),
    )


async def _plain(request: Request, state: SimState, payload: Callable[[], Any]) -> Response:
    """A GET endpoint: logged and key-checked like the others, answered at once."""
    record = state.new_record(request.url.path, request.method, _bearer(request))
    try:
        _check_key(state, record)
        result = payload()
    except SimError as err:
        return error_response(record, err)
    record.status = 200
    return json_response(200, result, record)


def _add_v1_routes(app: FastAPI) -> None:
    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request, state: StateDep) -> Response:
        return await _handle(request, state, endpoints.chat)

    @app.post("/v1/completions")
    async def completions(request: Request, state: StateDep) -> Response:
        return await _handle(request, state, endpoints.completions)

    @app.post("/v1/embeddings")
    async def create_embeddings(request: Request, state: StateDep) -> Response:
        return await _handle(request, state, endpoints.create_embeddings)

    @app.get("/v1/models")
    async def list_models(request: Request, state: StateDep) -> Response:
        models = state.options.models or (SimModel(name="sim-default"),)
        return await _plain(
            request, state, lambda: {"object": "list", "data": [_model_object(m) for m in models]}
        )

    @app.get("/v1/models/{model_id:path}")
    async def retrieve_model(model_id: str, request: Request, state: StateDep) -> Response:
        return await _plain(request, state, lambda: _model_object(_profile(state, model_id)))


async def _not_found(request: Request, exc: Exception) -> Response:
    status = exc.status_code if isinstance(exc, StarletteHTTPException) else 500
    body = wire.error_body(status, f"Unknown request URL: {request.method} {request.url.path}")
    return Response(orjson.dumps(body), status_code=status, media_type="application/json")


def create_sim_app(options: SimOptions) -> FastAPI:
    """A new simulator app; its state is `app.state.sim` (a `SimState`)."""

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        with quiet_disconnects():
            yield

    app = FastAPI(
        title="gateway sim", lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None
    )
    app.state.sim = SimState(options)
    _add_v1_routes(app)
    control.add_routes(app, get_state)
    app.add_exception_handler(StarletteHTTPException, _not_found)
    return app
