"""`gateway check-config PATH`: validate a config and show what it resolves to.

Exit 2 with the one-line `ConfigError` on stderr when the config is invalid; else exit 0 and a
report on stdout: models, backends with their keys, clients, then a `warning:` line for every
key variable that resolves to nothing (a warning, not an error: keys may be provided later, e.g.
by the keyring of the machine that will run the gateway). Key values appear only masked.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TextIO

from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.config.models import GatewayConfig, ModelConfig
from gateway.keys.resolve import (
    KeyringLookup,
    lookup_variable,
    resolve_backend_keys,
    resolve_client_key,
)

EXIT_OK = 0
EXIT_INVALID = 2


def _price(value: float) -> str:
    # Cents where they suffice ($2.50), full precision for sub-cent prices ($0.075).
    return f"${value:.2f}" if round(value, 2) == value else f"${value:g}"


def _model_line(model: ModelConfig, width: int) -> str:
    tasks = ",".join(task.value for task in model.tasks) or "(explicit requests only)"
    fallbacks = " -> ".join(model.fallbacks) if model.fallbacks else "-"
    differs = model.upstream_model and model.upstream_model != model.id
    upstream = f" upstream={model.upstream_model}" if differs else ""
    return (
        f"  {model.id:<{width}}  backend={model.backend}{upstream}"
        f"  in={_price(model.input_per_mtok)}/Mtok  out={_price(model.output_per_mtok)}/Mtok"
        f"  tasks={tasks}  fallbacks={fallbacks}"
    )


def _models(config: GatewayConfig, out: TextIO) -> None:
    print(f"models ({len(config.models)}):", file=out)
    width = max((len(model.id) for model in config.models), default=0)
    for model in config.models:
        print(_model_line(model, width), file=out)


def _backends(
    config: GatewayConfig,
    env: Mapping[str, str] | None,
    keyring_lookup: KeyringLookup | None,
    out: TextIO,
) -> list[str]:
    warnings: list[str] = []
    print(f"backends ({len(config.backends)}):", file=out)
    for backend in config.backends:
        print(f"  {backend.name}  {backend.base_url}  (kind {backend.kind})", file=out)
        if not backend.api_key_env:
            print("    no key (api_key_env is empty)", file=out)
            continue
        resolution = resolve_backend_keys(backend, env, keyring_lookup)
        for key in resolution.keys:
            via = "  (keyring)" if key.source == "keyring" else ""
            print(f"    {key.ref}  {key.secret.masked}{via}", file=out)
        for variable in resolution.missing:
            print(f"    {variable}  (not set)", file=out)
            warnings.append(f"warning: {variable} is not set (env or keyring)")
        if not resolution.keys:
            warnings.append(
                f"warning: backend {backend.name} has no key; its models cannot be served"
            )
    return warnings


def _auth(
    config: GatewayConfig,
    env: Mapping[str, str] | None,
    keyring_lookup: KeyringLookup | None,
    out: TextIO,
) -> list[str]:
    warnings: list[str] = []
    auth = config.auth
    admin = lookup_variable(auth.admin_key_env, env, keyring_lookup) if auth.admin_key_env else None
    state = "set" if admin else "not set: /admin/* answers 404"
    print(f"admin key: {auth.admin_key_env or '-'} ({state})", file=out)
    if not auth.clients:
        print("clients: none (open gateway: no client keys)", file=out)
        warnings.append("warning: no [[auth.clients]]: the gateway is open (no client keys)")
        return warnings
    print(f"clients ({len(auth.clients)}):", file=out)
    for client in auth.clients:
        key = f"key_env={client.key_env}" if client.key_env else "key_sha256"
        models = ",".join(client.models)
        print(f"  {client.name}  {key}  models={models}", file=out)
        if resolve_client_key(client, env, keyring_lookup) is None:
            warnings.append(
                f"warning: {client.key_env} is not set (env or keyring): "
                f"client {client.name} cannot authenticate"
            )
    return warnings


def _files(config: GatewayConfig) -> list[str]:
    priors = config.routing.priors_file
    if priors is not None and not priors.is_file():
        return [f"warning: routing.priors_file {priors} does not exist (no benchmark priors)"]
    return []


def check_config(
    path: Path | str,
    out: TextIO | None = None,
    err: TextIO | None = None,
    env: Mapping[str, str] | None = None,
    *,
    keyring_lookup: KeyringLookup | None = None,
) -> int:
    """Validate `path` and report; returns the exit code (0 valid, 2 invalid)."""
    # Looked up at call time, so redirected or captured streams are honoured.
    out = out if out is not None else sys.stdout
    err = err if err is not None else sys.stderr
    try:
        config = load_config(Path(path), env=env)
    except ConfigError as exc:
        print(str(exc), file=err)
        return EXIT_INVALID
    print(f"config: {config.source} (valid)", file=out)
    _models(config, out)
    warnings = _backends(config, env, keyring_lookup, out)
    warnings += _auth(config, env, keyring_lookup, out)
    warnings += _files(config)
    for line in warnings:
        print(line, file=out)
    out.flush()
    return EXIT_OK
