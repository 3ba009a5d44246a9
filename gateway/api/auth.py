"""Client and admin authentication by bearer token, in constant time.

Client keys are kept only as sha256 digests (`key_sha256` as configured, `key_env` hashed at
start). A presented token (empty when there is no `Authorization: Bearer` header) is hashed
once and compared with every client's digest, without stopping at a match and with the same
number of comparisons whatever the token, so the time taken tells neither whether a client
exists nor which one it is. Comparing fixed-length digests also hides the token's length.

Admin routes: the key is the value of the variable named by `auth.admin_key_env` (env, then
the OS keyring, like every other key). Not set: the admin routes do not exist (404); set:
a missing or wrong bearer token is a 401. Secrets are never logged, only variable names.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable, Mapping

from starlette.requests import Request

from gateway.config.models import ClientConfig, GatewayConfig
from gateway.errors import AuthenticationFailed, RouteNotFound
from gateway.keys.resolve import KeyringLookup, resolve_client_key, resolve_secret

log = logging.getLogger("gateway.auth")

Compare = Callable[[bytes, bytes], bool]


class Authenticator:
    def __init__(
        self,
        config: GatewayConfig,
        env: Mapping[str, str],
        *,
        compare: Compare = hmac.compare_digest,
        keyring_lookup: KeyringLookup | None = None,
    ) -> None:
        self._compare = compare
        self._clients: list[tuple[bytes, ClientConfig]] = []
        for client in config.auth.clients:
            digest = resolve_client_key(client, env, keyring_lookup)
            if digest is None:
                log.warning("client %s: key variable %s is not set (env or keyring); "
                            "that client cannot authenticate", client.name, client.key_env)
                continue
            self._clients.append((bytes.fromhex(digest), client))
        self.open = not config.auth.clients
        admin = resolve_secret(config.auth.admin_key_env, env, keyring_lookup)
        self._admin_digest = (
            hashlib.sha256(admin.reveal().encode()).digest() if admin is not None else None
        )

    def client_for(self, request: Request) -> ClientConfig | None:
        """The client the bearer token belongs to; None on an open gateway; else 401."""
        if self.open:
            return None
        digest = hashlib.sha256(_bearer(request).encode()).digest()
        found: ClientConfig | None = None
        for known, client in self._clients:
            # Every digest is compared, and the comparison comes first, so a match early in
            # the list costs exactly what a miss costs.
            if self._compare(known, digest) and found is None:
                found = client
        if found is None:
            raise AuthenticationFailed("missing or invalid API key")
        return found

    def check_admin(self, request: Request) -> None:
        if self._admin_digest is None:
            raise RouteNotFound(f"no route {request.method} {request.url.path}")
        digest = hashlib.sha256(_bearer(request).encode()).digest()
        if not self._compare(self._admin_digest, digest):
            raise AuthenticationFailed("missing or invalid admin key")


def _bearer(request: Request) -> str:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""
