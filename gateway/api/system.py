"""Liveness, readiness, metrics and the model list."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.responses import Response

from gateway.api.deps import gateway_state
from gateway.errors import ModelNotFound

router = APIRouter()

ROUTER_ALIASES = ("auto", "auto:fast", "auto:best")


def _json(payload: object, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


@router.get("/healthz")
async def healthz() -> Response:
    return _json({"status": "ok"})


@router.get("/readyz")
async def readyz(request: Request) -> Response:
    runtime = request.app.state.runtime
    ready = runtime.store_healthy() and runtime.any_backend_usable()
    return _json({"status": "ready" if ready else "not_ready"}, 200 if ready else 503)


@router.get("/metrics")
async def metrics(request: Request) -> Response:
    return Response(gateway_state(request).metrics.render(), media_type=CONTENT_TYPE_LATEST)


def _model_object(model_id: str, created: int, owner: str) -> dict[str, object]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


def _visible_ids(request: Request) -> list[tuple[str, str]]:
    state = gateway_state(request)
    client = request.app.state.auth.client_for(request)
    ids = [
        (m.id, m.backend) for m in state.models.values()
        if client is None or client.allows(m.id)
    ]
    return ids + [(alias, "gateway") for alias in ROUTER_ALIASES]


@router.get("/v1/models")
async def list_models(request: Request) -> Response:
    created = int(gateway_state(request).started_at)
    data = [_model_object(i, created, owner) for i, owner in _visible_ids(request)]
    return _json({"object": "list", "data": data})


@router.get("/v1/models/{model_id:path}")
async def retrieve_model(model_id: str, request: Request) -> Response:
    created = int(gateway_state(request).started_at)
    for visible, owner in _visible_ids(request):
        if visible == model_id:
            return _json(_model_object(visible, created, owner))
    raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
