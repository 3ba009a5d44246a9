"""Rules that span entries, checked on the validated config.

Each rule yields `(dotted key, problem)`; the loader reports the first. Keys name entries the
way validation errors do (`models[gpt-4o].fallbacks`), and a duplicate is reported on its
second occurrence, the one to rename or delete.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from gateway.config.models import GatewayConfig

ROUTER_ALIASES = ("auto", "auto:fast", "auto:best")

Problem = tuple[str, str]


def _duplicates(array: str, names: Iterable[str], what: str) -> Iterator[Problem]:
    seen: set[str] = set()
    field = "id" if array == "models" else "name"
    for name in names:
        if name in seen:
            yield f"{array}[{name}].{field}", f"duplicate {what} '{name}'"
        seen.add(name)


def _blank(array: str, names: Iterable[str], field: str) -> Iterator[Problem]:
    for index, name in enumerate(names):
        if not name.strip():
            yield f"{array}[{index}].{field}", "must not be empty"


def _known(names: Iterable[str]) -> str:
    listed = ", ".join(sorted(names))
    return f" (known: {listed})" if listed else " (none configured)"


def _backends(config: GatewayConfig) -> Iterator[Problem]:
    names = [backend.name for backend in config.backends]
    yield from _blank("backends", names, "name")
    yield from _duplicates("backends", names, "backend name")
    for backend in config.backends:
        if not backend.base_url.startswith(("http://", "https://")):
            yield f"backends[{backend.name}].base_url", "must start with http:// or https://"
        for index, variable in enumerate(backend.api_key_env):
            if not variable.strip():
                yield f"backends[{backend.name}].api_key_env[{index}]", "must not be empty"


def _models(config: GatewayConfig) -> Iterator[Problem]:
    ids = [model.id for model in config.models]
    yield from _blank("models", ids, "id")
    yield from _duplicates("models", ids, "model id")
    backends = {backend.name for backend in config.backends}
    known_ids = set(ids)
    for model in config.models:
        key = f"models[{model.id}]"
        if model.id in ROUTER_ALIASES:
            aliases = ", ".join(ROUTER_ALIASES)
            yield f"{key}.id", f"'{model.id}' is reserved for the router ({aliases})"
        if model.backend not in backends:
            yield f"{key}.backend", f"unknown backend '{model.backend}'" + _known(backends)
        for fallback in model.fallbacks:
            if fallback == model.id:
                yield f"{key}.fallbacks", "a model cannot fall back to itself"
            elif fallback not in known_ids:
                yield f"{key}.fallbacks", f"unknown model '{fallback}'" + _known(known_ids)


def _clients(config: GatewayConfig) -> Iterator[Problem]:
    names = [client.name for client in config.auth.clients]
    yield from _blank("auth.clients", names, "name")
    yield from _duplicates("auth.clients", names, "client name")
    known_ids = {model.id for model in config.models}
    for client in config.auth.clients:
        key = f"auth.clients[{client.name}]"
        if client.key_sha256 is None and not client.key_env:
            yield key, "needs key_sha256 or key_env"
        elif client.key_sha256 is not None and client.key_env:
            yield key, "set key_sha256 or key_env, not both"
        for model_id in client.models:
            if model_id == "*" or model_id in known_ids:
                continue
            if model_id in ROUTER_ALIASES:
                hint = 'list model ids or "*"; the aliases route among the models listed'
                yield f"{key}.models", f"'{model_id}' is a router alias: {hint}"
            else:
                yield f"{key}.models", f"unknown model '{model_id}'" + _known(known_ids)


def problems(config: GatewayConfig) -> Iterator[Problem]:
    yield from _backends(config)
    yield from _models(config)
    yield from _clients(config)
