"""GET /admin/status: circuits, learned statistics, spend, key pools and failovers, as JSON."""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway import __version__
from gateway.api.deps import gateway_state
from gateway.config.models import SpendLimits
from gateway.spend.guard import GLOBAL
from gateway.state import AppState

router = APIRouter()


@router.get("/admin/status")
async def status(request: Request) -> Response:
    request.app.state.auth.check_admin(request)
    state = gateway_state(request)
    learning = request.app.state.runtime.learning
    breakers = state.breakers.snapshot()
    models = {
        m.id: {
            "backend": m.backend,
            "circuit": breakers[m.id].value,
            "stats": learning.status_of(m.id),
        }
        for m in state.models.values()
    }
    payload = {
        "version": __version__,
        "uptime_secs": round(state.clock() - state.started_at, 3),
        "models": models,
        "spend": await _spend(state),
        "keys": state.keys.status(),
        "failover": state.failover_log.status(),
    }
    return Response(orjson.dumps(payload), media_type="application/json")


async def _spend(state: AppState) -> dict[str, object]:
    clients: dict[str, object] = {}
    for client in state.config.auth.clients:
        clients[client.name] = await _windows(state, f"client:{client.name}", client.spend)
    return {"global": await _windows(state, GLOBAL, state.config.spend), "clients": clients}


async def _windows(state: AppState, scope: str, limits: SpendLimits) -> dict[str, object]:
    totals = await state.spend.totals(scope)

    def window(spent_micros: int, limit: float | None) -> dict[str, object]:
        spent = spent_micros / 1_000_000
        remaining = None if limit is None else max(0.0, limit - spent)
        return {"spent_usd": spent, "limit_usd": limit, "remaining_usd": remaining}

    return {
        "per_request_usd": limits.per_request_usd,
        "hourly": window(totals.hourly_micros, limits.hourly_usd),
        "daily": window(totals.daily_micros, limits.daily_usd),
    }
