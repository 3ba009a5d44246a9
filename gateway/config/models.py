"""Typed, frozen runtime configuration.

Field names are the contract's TOML keys, so a key in the file, an environment override
(`GATEWAY_SECTION__KEY`) and an attribute here always spell the same thing. Every section has
defaults; `load_config` (loader.py) is the only place that builds these from raw input.
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Task(StrEnum):
    GENERATE = "generate"
    CODE = "code"
    REASONING = "reasoning"
    CLASSIFY = "classify"
    EMBED = "embed"


class Mode(StrEnum):
    AUTO = "auto"
    FAST = "fast"
    BEST = "best"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class ServerConfig(_Frozen):
    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    max_body_bytes: int = Field(default=10 * 1024 * 1024, gt=0)
    log_level: str = "INFO"
    log_prompts: bool = False
    drain_timeout_secs: float = Field(default=30.0, ge=0)

    @field_validator("log_level")
    @classmethod
    def _known_level(cls, value: str) -> str:
        # Checked here so a typo is a config error (exit 2), not a traceback from logging.
        level = value.strip().upper()
        if level not in ("CRITICAL", "ERROR", "WARNING", "INFO", "DEBUG"):
            raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
        return level


class SpendLimits(_Frozen):
    per_request_usd: float | None = Field(default=None, ge=0)
    hourly_usd: float | None = Field(default=None, ge=0)
    daily_usd: float | None = Field(default=None, ge=0)


class ClientConfig(_Frozen):
    name: str
    key_sha256: str | None = None
    key_env: str | None = None
    models: tuple[str, ...] = ("*",)
    spend: SpendLimits = SpendLimits()

    @field_validator("key_sha256")
    @classmethod
    def _hex_digest(cls, value: str | None) -> str | None:
        if value is None:
            return None
        digest = value.strip().lower()
        if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
            raise ValueError("must be 64 hex characters (sha256 of the bearer token)")
        return digest

    def allows(self, model_id: str) -> bool:
        return "*" in self.models or model_id in self.models


class AuthConfig(_Frozen):
    admin_key_env: str = "GATEWAY_ADMIN_KEY"
    clients: tuple[ClientConfig, ...] = ()


class RoutingConfig(_Frozen):
    default_mode: Mode = Mode.AUTO
    priors_file: Path | None = None
    prior_weight: float = Field(default=20.0, ge=0)
    retry_window_secs: float = Field(default=300.0, ge=0)

    @field_validator("default_mode", mode="before")
    @classmethod
    def _alias_spelling(cls, value: object) -> object:
        # Users copy the router alias (`auto:fast`) into the file; it names the mode `fast`.
        if isinstance(value, str) and value.startswith("auto:"):
            return value.removeprefix("auto:")
        return value


class CircuitBreakerConfig(_Frozen):
    failure_threshold: int = Field(default=3, ge=1)
    cooldown_secs: float = Field(default=60.0, ge=0)


class SpendConfig(SpendLimits):
    default_output_tokens: int = Field(default=1024, ge=0)


class FailoverConfig(_Frozen):
    max_retries: int = Field(default=2, ge=0)
    commit_after_tokens: int = Field(default=1, ge=0)
    include_prefix: bool = True
    first_token_timeout_secs: float = Field(default=30.0, gt=0)
    idle_timeout_secs: float = Field(default=30.0, gt=0)
    max_wait_secs: float = Field(default=10.0, ge=0)


class StateConfig(_Frozen):
    backend: Literal["memory", "redis"] = "memory"
    path: Path = Path("gateway-state.db")
    redis_url: str = "redis://127.0.0.1:6379/0"
    on_redis_error: Literal["fail_closed", "fail_open"] = "fail_closed"
    redis_prefix: str = "gateway:"
    snapshot_interval_secs: float = Field(default=5.0, gt=0)


class BackendConfig(_Frozen):
    name: str
    kind: Literal["openai"] = "openai"
    base_url: str
    api_key_env: tuple[str, ...] = ()
    timeout_secs: float = Field(default=60.0, gt=0)

    @field_validator("api_key_env", mode="before")
    @classmethod
    def _one_or_many(cls, value: object) -> object:
        return (value,) if isinstance(value, str) else value


class ModelConfig(_Frozen):
    id: str
    backend: str
    upstream_model: str | None = None
    input_per_mtok: float = Field(default=0.0, ge=0)
    output_per_mtok: float = Field(default=0.0, ge=0)
    tasks: tuple[Task, ...] = (Task.GENERATE, Task.CODE, Task.REASONING, Task.CLASSIFY)
    fallbacks: tuple[str, ...] = ()
    context_window: int = Field(default=128_000, gt=0)
    prefill: Literal["none", "assistant"] = "none"
    first_token_timeout_secs: float | None = Field(default=None, gt=0)

    @property
    def upstream_name(self) -> str:
        return self.upstream_model or self.id


class GatewayConfig(_Frozen):
    server: ServerConfig = ServerConfig()
    auth: AuthConfig = AuthConfig()
    routing: RoutingConfig = RoutingConfig()
    circuit_breaker: CircuitBreakerConfig = CircuitBreakerConfig()
    spend: SpendConfig = SpendConfig()
    failover: FailoverConfig = FailoverConfig()
    state: StateConfig = StateConfig()
    backends: tuple[BackendConfig, ...] = ()
    models: tuple[ModelConfig, ...] = ()
    source: Path | None = Field(default=None, exclude=True)
