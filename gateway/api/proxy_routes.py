"""The proxied OpenAI endpoints: authenticate, read, plan, then hand over to proxy/."""

from __future__ import annotations

import time
import uuid

from fastapi import APIRouter, Request
from starlette.requests import ClientDisconnect
from starlette.responses import Response, StreamingResponse

from gateway.api.deps import gateway_state
from gateway.config.models import ClientConfig
from gateway.errors import GatewayError, InvalidRequest, RequestTooLarge
from gateway.proxy.context import RequestContext
from gateway.proxy.plan import plan_request
from gateway.proxy.request import Endpoint, parse_body
from gateway.proxy.stream import open_stream
from gateway.proxy.unary import run_unary
from gateway.requestlog import RequestLogger

router = APIRouter()


@router.post("/v1/chat/completions")
async def chat_completions(request: Request) -> Response:
    return await proxy(request, Endpoint.CHAT)


@router.post("/v1/completions")
async def completions(request: Request) -> Response:
    return await proxy(request, Endpoint.COMPLETIONS)


@router.post("/v1/embeddings")
async def embeddings(request: Request) -> Response:
    return await proxy(request, Endpoint.EMBEDDINGS)


def request_id_of(request: Request) -> str:
    rid = getattr(request.state, "request_id", None)
    if rid is None:
        rid = request.headers.get("x-request-id") or f"req-{uuid.uuid4().hex}"
        request.state.request_id = rid
    return rid


async def read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestTooLarge(f"request body is larger than {limit} bytes")
    body = bytearray()
    try:
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestTooLarge(f"request body is larger than {limit} bytes")
    except ClientDisconnect:
        # Nobody is left to answer; a typed error keeps it out of the unhandled-error path.
        raise InvalidRequest("the client disconnected before sending the whole body") from None
    return bytes(body)


async def proxy(request: Request, endpoint: Endpoint) -> Response:
    state = gateway_state(request)
    logger: RequestLogger = request.app.state.request_logger
    request_id = request_id_of(request)
    ctx: RequestContext | None = None
    client: ClientConfig | None = None
    started = time.perf_counter()
    try:
        client = request.app.state.auth.client_for(request)
        raw = await read_body(request, state.config.server.max_body_bytes)
        parsed = parse_body(endpoint, raw)
        plan = plan_request(
            state, client, parsed,
            request.headers.get("x-gateway-mode"), request.headers.get("x-gateway-task"),
        )
        ctx = RequestContext(request_id, client, parsed, plan.estimate.task, plan.mode,
                             started=started, planned_model=plan.candidates[0].id)
        if parsed.stream:
            response: Response = await open_stream(state, ctx, plan.candidates)
        else:
            response = await run_unary(state, ctx, plan.candidates)
    except GatewayError as error:
        logger.finished(endpoint, ctx, error.status_code, started, error=error,
                        request_id=request_id, client=None if client is None else client.name)
        raise
    if isinstance(response, StreamingResponse):
        response.body_iterator = logger.wrap_stream(endpoint, ctx, started, response.body_iterator)
    else:
        request.app.state.feedback.after_request(ctx)
        logger.finished(endpoint, ctx, response.status_code, started)
    return response
