"""Turns the key variable names a config holds into key values, without ever showing them.

For each variable: its value in the environment; if unset or empty, the OS keyring (service
`gateway`, username = the variable's name). A machine without a usable keyring skips that step
silently: the variable is then reported `missing`, which callers warn about and never treat as
a config error. Values hold comma-separated keys; `ref` names each one `VAR` (a single key) or
`VAR[i]` (0-based), the names `/admin/status` and `check-config` show next to the masked key.
Values live only inside `Secret`s.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Literal

from gateway.config.models import BackendConfig, ClientConfig
from gateway.secrets import Secret, sha256_hex

KEYRING_SERVICE = "gateway"

KeyringLookup = Callable[[str, str], str | None]
"""Same shape as `keyring.get_password(service, username)`."""

Source = Literal["env", "keyring"]


@dataclass(frozen=True, slots=True)
class ResolvedKey:
    ref: str
    secret: Secret
    env_var: str
    source: Source = "env"


@dataclass(frozen=True, slots=True)
class KeyResolution:
    backend: str
    keys: tuple[ResolvedKey, ...]
    missing: tuple[str, ...]


def keyring_password(service: str, username: str) -> str | None:
    """The OS keyring's entry, or None when there is none or no usable keyring at all."""
    # Imported here: choosing a keyring backend reads config files and may probe D-Bus,
    # which has no place at import time.
    import keyring
    from keyring.backends import fail
    from keyring.errors import KeyringError

    try:
        backend = keyring.get_keyring()
        if isinstance(backend, fail.Keyring):
            return None
        return backend.get_password(service, username)
    except (KeyringError, OSError, ImportError):
        # Headless servers and containers routinely have no keyring (or a misconfigured one,
        # naming a backend that is not installed); env vars are the norm there.
        return None


def lookup_variable(
    name: str,
    env: Mapping[str, str] | None = None,
    keyring_lookup: KeyringLookup | None = None,
) -> tuple[str, Source] | None:
    """The raw value of a key variable and where it came from, or None if it resolves to nothing."""
    environ = os.environ if env is None else env
    value = environ.get(name, "")
    if value.strip(", \t\r\n"):
        return value, "env"
    lookup = keyring_lookup or keyring_password
    stored = lookup(KEYRING_SERVICE, name)
    if stored and stored.strip(", \t\r\n"):
        return stored, "keyring"
    return None


def split_keys(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def resolve_backend_keys(
    backend: BackendConfig,
    env: Mapping[str, str] | None = None,
    keyring_lookup: KeyringLookup | None = None,
) -> KeyResolution:
    keys: list[ResolvedKey] = []
    missing: list[str] = []
    seen: set[str] = set()
    for variable in backend.api_key_env:
        found = lookup_variable(variable, env, keyring_lookup)
        if found is None:
            missing.append(variable)
            continue
        value, source = found
        parts = split_keys(value)
        for index, part in enumerate(parts):
            if part in seen:
                continue  # one key listed twice would get two cooldowns and double its share
            seen.add(part)
            ref = variable if len(parts) == 1 else f"{variable}[{index}]"
            keys.append(ResolvedKey(ref, Secret(part), variable, source))
    return KeyResolution(backend.name, tuple(keys), tuple(missing))


def resolve_client_key(
    client: ClientConfig,
    env: Mapping[str, str] | None = None,
    keyring_lookup: KeyringLookup | None = None,
) -> str | None:
    """The sha256 hex digest a client's bearer token must hash to, or None if unresolved."""
    if client.key_sha256 is not None:
        return client.key_sha256
    if not client.key_env:
        return None
    found = lookup_variable(client.key_env, env, keyring_lookup)
    return sha256_hex(found[0].strip()) if found else None


def resolve_secret(
    name: str,
    env: Mapping[str, str] | None = None,
    keyring_lookup: KeyringLookup | None = None,
) -> Secret | None:
    """A single secret variable (e.g. the admin key) through the same env-then-keyring path."""
    found = lookup_variable(name, env, keyring_lookup)
    return Secret(found[0].strip()) if found else None
