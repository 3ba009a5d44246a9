"""The simulator's error answers: `SimError` and its one rendering in the OpenAI shape.

Any check on the request path raises `SimError`; `error_response` is the only place that turns
it into a response (status, OpenAI error JSON, `Retry-After` on 429/503) and marks the request
log record as an error.
"""

from __future__ import annotations

from typing import Any

import orjson

from gateway.sim import wire
from gateway.sim.state import RequestRecord
from gateway.sim.stream import SimResponse


class SimError(Exception):
    """An OpenAI-shaped error answer (status, message, code, ...), sent after `delay_s`."""

    def __init__(
        self,
        status: int,
        message: str | None = None,
        *,
        code: str | None = None,
        type_: str | None = None,
        param: str | None = None,
        retry_after: float | None = None,
        delay_s: float = 0.0,
    ) -> None:
        super().__init__(message or str(status))
        self.status, self.message, self.code = status, message, code
        self.type_, self.param, self.retry_after, self.delay_s = type_, param, retry_after, delay_s


def json_response(status: int, payload: Any, record: RequestRecord, **kw: Any) -> SimResponse:
    return SimResponse(status_code=status, body=orjson.dumps(payload), record=record, **kw)


def _retry_after_header(seconds: float) -> str:
    return str(int(seconds)) if float(seconds).is_integer() else f"{seconds:g}"


def error_response(record: RequestRecord, err: SimError) -> SimResponse:
    record.status = err.status
    headers: dict[str, str] = {}
    if err.retry_after is not None and err.status in (429, 503):
        headers["retry-after"] = _retry_after_header(err.retry_after)
    body = wire.error_body(err.status, err.message, type_=err.type_, code=err.code, param=err.param)
    return json_response(
        err.status, body, record, headers=headers, delay_s=err.delay_s, outcome="error"
    )
