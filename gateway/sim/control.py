"""The simulator's control endpoints under `/_sim/` (tests and benchmarks; no auth, not logged).

- `POST /_sim/script` `{"steps": [...], "model": optional}`: replaces the script of that model
  (or of "any model"); each later inference request for it consumes one step.
- `POST /_sim/faults` `{<Faults fields>}`: replaces the global faults until reset.
- `GET /_sim/faults`: the global faults in force.
- `POST /_sim/reset`: clears script, faults override, request log and answers; re-seeds.
- `GET /_sim/requests?since=<seq>`: the request log (records with seq > since).
- `GET /_sim/answers/{key}`: `{"correct", "model", "task"}` by completion id or `nonce:<n>`.
- `GET /_sim/health`: 200 once the server accepts connections.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import orjson
from fastapi import FastAPI, Request
from fastapi.responses import Response

from gateway.sim import wire
from gateway.sim.faults import step_from_mapping
from gateway.sim.options import faults_from_mapping
from gateway.sim.state import SimState


def _ok(payload: Any, status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status_code=status, media_type="application/json")


def _bad(message: str) -> Response:
    return _ok(wire.error_body(400, message), 400)


async def _body(request: Request) -> Any:
    raw = await request.body()
    return orjson.loads(raw) if raw.strip() else {}


def add_routes(app: FastAPI, get_state: Callable[[Request], SimState]) -> None:
    @app.post("/_sim/script")
    async def set_script(request: Request) -> Response:
        state = get_state(request)
        try:
            data = await _body(request)
            if not isinstance(data, dict) or not isinstance(data.get("steps"), list):
                raise ValueError('expected {"steps": [...], "model": optional}')
            unknown = set(data) - {"steps", "model"}
            if unknown:
                raise ValueError(f"unknown field(s) {', '.join(sorted(unknown))}")
            model = data.get("model")
            if model is not None and not isinstance(model, str):
                raise ValueError("model: expected a string")
            steps = [step_from_mapping(s, where=f"steps[{i}]") for i, s in enumerate(data["steps"])]
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _bad(str(exc))
        state.set_script(steps, model)
        return _ok({"pending": state.pending_steps()})

    @app.post("/_sim/faults")
    async def set_faults(request: Request) -> Response:
        state = get_state(request)
        try:
            state.faults_override = faults_from_mapping(await _body(request))
        except (ValueError, orjson.JSONDecodeError) as exc:
            return _bad(str(exc))
        return _ok(state.global_faults.to_dict())

    @app.get("/_sim/faults")
    async def get_faults(request: Request) -> Response:
        return _ok(get_state(request).global_faults.to_dict())

    @app.post("/_sim/reset")
    async def reset(request: Request) -> Response:
        get_state(request).reset()
        return _ok({"reset": True})

    @app.get("/_sim/requests")
    async def requests(request: Request, since: int = 0) -> Response:
        log = get_state(request).log
        return _ok([r.to_json() for r in log if r.seq > since])

    @app.get("/_sim/answers/{key:path}")
    async def answer(key: str, request: Request) -> Response:
        found = get_state(request).answers.get(key)
        if found is None:
            body = wire.error_body(404, f"no answer recorded for {key!r}", code="not_found")
            return _ok(body, 404)
        return _ok(found.to_json())

    @app.get("/_sim/health")
    async def health() -> Response:
        return _ok({"ok": True})
