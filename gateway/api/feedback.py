"""POST /v1/feedback: a client's explicit score for a request it made."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.errors import InvalidRequest

router = APIRouter()

_MAX_FEEDBACK_BYTES = 64 * 1024


@router.post("/v1/feedback")
async def feedback(request: Request) -> Response:
    client = request.app.state.auth.client_for(request)
    raw = await request.body()
    if len(raw) > _MAX_FEEDBACK_BYTES:
        raise InvalidRequest("feedback body is too large")
    try:
        body = orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise InvalidRequest("request body is not valid JSON") from None
    if not isinstance(body, dict):
        raise InvalidRequest("request body must be a JSON object")
    await request.app.state.feedback.rate(
        body.get("request_id"), body.get("score"), None if client is None else client.name
    )
    return Response(orjson.dumps({"status": "recorded"}), media_type="application/json")
