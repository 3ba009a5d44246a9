"""`load_config`: the one way from a TOML file, the environment and flags to a `GatewayConfig`.

Layers, lowest first: model defaults, the file, `GATEWAY_SECTION__KEY` variables, command-line
overrides. Every failure, whatever its cause, leaves as a single `ConfigError` naming the file,
the key and the problem; nothing else escapes. Relative paths in the result are already
resolved against the config file's folder, so no later reader depends on the working directory.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from gateway.config.crosscheck import problems
from gateway.config.errors import ConfigError
from gateway.config.explain import config_error
from gateway.config.models import GatewayConfig
from gateway.config.overrides import apply, cli_layer, environment_layer

CONFIG_ENV = "GATEWAY_CONFIG"
DEFAULT_CONFIG = Path("gateway.toml")

_TOML_POSITION = re.compile(r"^(?P<msg>.*) \(at line (?P<line>\d+), column (?P<column>\d+)\)$")
_TOML_AT_END = re.compile(r"^(?P<msg>.*) \(at end of document\)$")


def config_path(path: Path | str | None, environ: Mapping[str, str]) -> Path:
    """The argument, else `$GATEWAY_CONFIG`, else `./gateway.toml`."""
    if path is not None and str(path):
        return Path(path).expanduser()
    from_env = environ.get(CONFIG_ENV, "").strip()
    return Path(from_env).expanduser() if from_env else DEFAULT_CONFIG


def _toml_problem(exc: tomllib.TOMLDecodeError, text: str) -> str:
    message = str(exc)
    found = _TOML_POSITION.match(message)
    if found:
        line, column, detail = found["line"], found["column"], found["msg"]
    else:
        at_end = _TOML_AT_END.match(message)
        detail = at_end["msg"] if at_end else message
        lines = text.split("\n")
        line, column = str(len(lines)), str(len(lines[-1]) + 1)
    return f"invalid TOML at line {line}, column {column}: {detail[:1].lower()}{detail[1:]}"


def read_toml(file: Path) -> dict[str, Any]:
    try:
        data = file.read_bytes()
    except FileNotFoundError:
        raise ConfigError(file, "-", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(file, "-", "is a directory, not a config file") from None
    except OSError as exc:
        raise ConfigError(file, "-", f"cannot read the file: {exc.strerror or exc}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(file, "toml", f"not UTF-8 text (byte {exc.start})") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(file, "toml", _toml_problem(exc, text)) from None


def _against(folder: Path, path: Path) -> Path:
    path = path.expanduser()
    return path if path.is_absolute() else folder / path


def _resolve_paths(config: GatewayConfig, file: Path) -> GatewayConfig:
    folder = file.parent
    routing = config.routing
    if routing.priors_file is not None:
        routing = routing.model_copy(update={"priors_file": _against(folder, routing.priors_file)})
    state = config.state.model_copy(update={"path": _against(folder, config.state.path)})
    return config.model_copy(update={"routing": routing, "state": state})


def load_config(
    path: Path | str | None = None,
    *,
    env: Mapping[str, str] | None = None,
    cli_overrides: Mapping[str, object] | None = None,
) -> GatewayConfig:
    """Load, layer, validate and cross-check the config. Raises only `ConfigError`."""
    environ = os.environ if env is None else env
    file = config_path(path, environ)
    raw = read_toml(file)
    if "source" in raw:
        # `source` is a field the loader fills in, not a key of the file.
        raise ConfigError(file, "source", "unknown key")
    env_values, env_origins = environment_layer(environ, file)
    cli_values, cli_origins = cli_layer(cli_overrides or {}, file)
    merged = apply(raw, env_values, cli_values)
    absolute = file.resolve()
    try:
        config = GatewayConfig.model_validate({**merged, "source": absolute})
    except ValidationError as exc:
        raise config_error(exc, file, merged, {**env_origins, **cli_origins}) from None
    found = list(problems(config))
    if found:
        key, problem = found[0]
        more = len(found) - 1
        if more:
            problem += f"; and {more} more problem{'s' if more > 1 else ''}"
        raise ConfigError(file, key, problem)
    return _resolve_paths(config, absolute)
