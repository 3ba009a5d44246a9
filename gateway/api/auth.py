"""Client and admin authentication by bearer token, in constant time.

Client keys are kept only as sha256 digests. A presented token is hashed once and compared
with every client's digest without stopping at a match, so the time taken does not tell
whether, or which, client exists.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from starlette.requests import Request

from gateway.config.models import ClientConfig, GatewayConfig
from gateway.errors import AuthenticationFailed, RouteNotFound
from gateway.keys.resolve import resolve_client_key


class Authenticator:
    def __init__(self, config: GatewayConfig, env: Mapping[str, str]) -> None:
        self._clients: list[tuple[bytes, ClientConfig]] = []
        for client in config.auth.clients:
            digest = resolve_client_key(client, env)
            if digest is not None:
                self._clients.append((bytes.fromhex(digest), client))
        self.open = not config.auth.clients
        admin = env.get(config.auth.admin_key_env)
        self._admin_digest = hashlib.sha256(admin.encode()).digest() if admin else None

    def client_for(self, request: Request) -> ClientConfig | None:
        if self.open:
            return None
        digest = hashlib.sha256(_bearer(request).encode()).digest()
        found: ClientConfig | None = None
        for known, client in self._clients:
            if hmac.compare_digest(known, digest) and found is None:
                found = client
        if found is None:
            raise AuthenticationFailed("missing or invalid API key")
        return found

    def check_admin(self, request: Request) -> None:
        if self._admin_digest is None:
            raise RouteNotFound("not found")
        digest = hashlib.sha256(_bearer(request).encode()).digest()
        if not hmac.compare_digest(self._admin_digest, digest):
            raise AuthenticationFailed("missing or invalid admin key")


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
