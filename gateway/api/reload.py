"""POST /admin/reload: re-resolve the upstream keys (admin key only), answer the key status.

The same reload SIGHUP triggers: keys are looked up again (environment, then OS keyring),
unusable marks are cleared, statistics are kept; the answer lists every key masked, exactly
as `/admin/status` does under `keys`.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Request
from starlette.responses import Response

from gateway.keys.reload import KeyReloader

router = APIRouter()


@router.post("/admin/reload")
async def reload_keys(request: Request) -> Response:
    request.app.state.auth.check_admin(request)
    reloader: KeyReloader = request.app.state.key_reloader
    keys = await reloader.reload()
    payload = {"reloaded": True, "keys": keys}
    return Response(orjson.dumps(payload), media_type="application/json")
