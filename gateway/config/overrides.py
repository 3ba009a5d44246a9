"""The two layers above the file: environment variables and command-line flags.

Both produce the same thing: `{section: {key: value}}` plus, for every dotted key they set, where
the value came from (so an error can name `GATEWAY_SERVER__PORT` rather than a key the file does
not contain). Both reach only the scalar keys of sections; array tables are the file's alone.
Environment values stay strings here: `GatewayConfig` coerces them, so a bad value is reported
by the same validation, in the same words, as a bad value in the file.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

from pydantic import Field, create_model
from pydantic_settings import BaseSettings, EnvSettingsSource, SettingsConfigDict

from gateway.config.errors import ConfigError
from gateway.config.schema import is_array_table, sections

ENV_PREFIX = "GATEWAY_"
ENV_DELIMITER = "__"

Layer = dict[str, dict[str, Any]]
Origins = dict[str, str]


def env_var_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}{ENV_DELIMITER}{key}".upper()


@cache
def _env_settings() -> type[BaseSettings]:
    # Each section is read as a plain dict so that unknown keys reach us and can be named,
    # instead of being dropped silently by a typed model.
    fields: dict[str, Any] = {
        name: (dict[str, Any], Field(default_factory=dict)) for name in sections()
    }
    return create_model(  # type: ignore[call-overload, no-any-return]
        "GatewayEnvironment",
        __base__=BaseSettings,
        __config__=SettingsConfigDict(
            env_prefix=ENV_PREFIX,
            env_nested_delimiter=ENV_DELIMITER,
            case_sensitive=False,
            extra="ignore",
        ),
        **fields,
    )


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source, reading a given mapping instead of os.environ."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        # Only the documented `GATEWAY_SECTION__KEY` form: a bare `GATEWAY_SERVER` would be
        # parsed as JSON by pydantic-settings, and `GATEWAY_CONFIG` or `GATEWAY_ADMIN_KEY`
        # are not overrides at all. Empty values count as unset.
        prefix = ENV_PREFIX.lower()
        return {
            name.lower(): value
            for name, value in self._environ.items()
            if name.lower().startswith(prefix) and ENV_DELIMITER in name[len(prefix) :] and value
        }


def environment_layer(environ: Mapping[str, str], file: Path | str) -> tuple[Layer, Origins]:
    raw = _MappingEnvSource(_env_settings(), environ)()
    layer: Layer = {}
    origins: Origins = {}
    for section, values in raw.items():
        for key, value in values.items():
            variable = env_var_name(section, key)
            if is_array_table(section, key):
                continue  # array tables are set by the file only (contract)
            if key not in sections()[section] or not isinstance(value, str):
                # A dict means deeper nesting (GATEWAY_SERVER__PORT__X); no scalar key has it.
                shown = variable if isinstance(value, str) else f"{variable}__..."
                raise ConfigError(file, f"{section}.{key}", f"unknown key (from {shown})")
            layer.setdefault(section, {})[key] = value
            origins[f"{section}.{key}"] = variable
    return layer, origins


def cli_layer(overrides: Mapping[str, object], file: Path | str) -> tuple[Layer, Origins]:
    """Dotted keys (`server.port`) to a layer; a value of None means the flag was not given."""
    layer: Layer = {}
    origins: Origins = {}
    for dotted, value in overrides.items():
        if value is None:
            continue
        section, _, key = dotted.partition(".")
        if key not in sections().get(section, frozenset()):
            raise ConfigError(file, dotted, "unknown key (from the command line)")
        layer.setdefault(section, {})[key] = value
        origins[dotted] = "the command line"
    return layer, origins


def apply(raw: dict[str, Any], *layers: Layer) -> dict[str, Any]:
    """A copy of the file's tables with each layer laid over it, later layers winning."""
    merged = dict(raw)
    for layer in layers:
        for section, values in layer.items():
            table = merged.get(section, {})
            if not isinstance(table, dict):
                continue  # the file's own value is wrong; validation reports that, not this
            merged[section] = {**table, **values}
    return merged
