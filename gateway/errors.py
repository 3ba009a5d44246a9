"""Typed gateway errors and the one place that renders them as OpenAI-shaped JSON or SSE.

    GatewayError                      status  type / code
    ├── InvalidRequest                400     invalid_request_error
    │   ├── RequestTooLarge           413     invalid_request_error / request_too_large
    │   ├── ModelNotFound             404     invalid_request_error / model_not_found
    │   └── RouteNotFound             404     invalid_request_error / not_found
    ├── AuthenticationFailed          401     authentication_error / invalid_api_key
    ├── ModelNotAllowed               403     permission_error / model_not_allowed
    ├── SpendLimitExceeded            429     insufficient_quota / spend_limit_exceeded
    ├── UpstreamRateLimited           429     rate_limit_error / upstream_rate_limited
    ├── UpstreamClientError           4xx     the upstream's own status, message and code
    ├── UpstreamError                 502     upstream_error
    ├── NoBackendAvailable            503     service_unavailable / no_backend_available
    ├── SpendStoreUnavailable         503     service_unavailable / spend_store_unavailable
    └── UpstreamTimeout               504     upstream_timeout

Messages are written by the gateway; an upstream's error text reaches the client only through
UpstreamClientError (status, message, code), never its headers or keys.
"""

from __future__ import annotations

import math

import orjson


class GatewayError(Exception):
    status_code = 500
    error_type = "server_error"
    code: str | None = None
    should_retry = True

    def __init__(self, message: str, *, param: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param

    def headers(self) -> dict[str, str]:
        return {} if self.should_retry else {"x-should-retry": "false"}

    def body(self) -> dict[str, object]:
        return {
            "error": {
                "message": self.message,
                "type": self.error_type,
                "param": self.param,
                "code": self.code,
            }
        }


class InvalidRequest(GatewayError):
    status_code = 400
    error_type = "invalid_request_error"
    should_retry = False


class RequestTooLarge(InvalidRequest):
    status_code = 413
    code = "request_too_large"


class ModelNotFound(InvalidRequest):
    status_code = 404
    code = "model_not_found"


class RouteNotFound(InvalidRequest):
    status_code = 404
    code = "not_found"


class AuthenticationFailed(GatewayError):
    status_code = 401
    error_type = "authentication_error"
    code = "invalid_api_key"
    should_retry = False


class ModelNotAllowed(GatewayError):
    status_code = 403
    error_type = "permission_error"
    code = "model_not_allowed"
    should_retry = False


class SpendLimitExceeded(GatewayError):
    status_code = 429
    error_type = "insufficient_quota"
    code = "spend_limit_exceeded"
    should_retry = False


class UpstreamRateLimited(GatewayError):
    status_code = 429
    error_type = "rate_limit_error"
    code = "upstream_rate_limited"

    def __init__(self, message: str, *, retry_after_secs: float) -> None:
        super().__init__(message)
        self.retry_after_secs = retry_after_secs

    def headers(self) -> dict[str, str]:
        return {"retry-after": str(max(1, math.ceil(self.retry_after_secs)))}


class UpstreamClientError(GatewayError):
    """A 4xx the upstream gave because of the request itself: passed on, never retried."""

    error_type = "invalid_request_error"
    should_retry = False

    def __init__(
        self, status_code: int, message: str, code: str | None, error_type: str | None = None
    ) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.code = code
        if error_type:
            self.error_type = error_type


class UpstreamError(GatewayError):
    status_code = 502
    error_type = "upstream_error"
    code = "upstream_error"


class NoBackendAvailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "no_backend_available"


class SpendStoreUnavailable(GatewayError):
    status_code = 503
    error_type = "service_unavailable"
    code = "spend_store_unavailable"


class UpstreamTimeout(GatewayError):
    status_code = 504
    error_type = "upstream_timeout"
    code = "upstream_timeout"


def error_json(error: GatewayError) -> bytes:
    return orjson.dumps(error.body())


def sse_error_event(error: GatewayError) -> bytes:
    return b"data: " + orjson.dumps(error.body()) + b"\n\n"
