"""Typed options of the simulated upstream, and the `gateway sim` command-line flags.

Three frozen value classes describe a simulator: `Faults` (what goes wrong and how slow it is),
`SimModel` (one simulated model: quality per task, prices, latency, its own faults) and
`SimOptions` (the whole simulator). `faults_from_mapping` / `model_from_mapping` are the only
places that build them from untrusted input (a models file, a `/_sim/faults` body); they reject
unknown keys so a typo in a test is an error, not a silently healthy simulator.

Invariants: rates are fractions in [0, 1]; latency fields are `None` when not set, so that
combining a model's faults with the global ones (`merge_faults`) can tell "not set" from "0".
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import orjson

TASKS = ("generate", "code", "reasoning", "classify", "embed")
DEFAULT_QUALITY = 0.8
RATE_FIELDS = frozenset({"error_rate", "rate_limit_rate", "die_rate", "malformed_rate"})
_INT_FIELDS = frozenset({"die_after_tokens", "error_event_after_tokens", "stall_after_tokens"})
_FLOAT_FIELDS = frozenset({"retry_after", "ttft_ms", "headers_delay_ms", "token_delay_ms"})
_BOOL_FIELDS = frozenset({"no_done", "echo_prefix", "reject_prefill"})


@dataclass(frozen=True)
class Faults:
    """What goes wrong on a request. The defaults are a healthy upstream."""

    error_rate: float = 0.0
    rate_limit_rate: float = 0.0
    retry_after: float | None = None
    die_after_tokens: int | None = None
    die_rate: float | None = None  # None = 1.0 once die_after_tokens is set
    error_event_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    ttft_ms: float | None = None
    headers_delay_ms: float | None = None
    token_delay_ms: float | None = None
    malformed_rate: float = 0.0
    no_done: bool = False
    echo_prefix: bool = False
    reject_prefill: bool = False

    def __post_init__(self) -> None:
        for name in RATE_FIELDS:
            value = getattr(self, name)
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be between 0 and 1, got {value}")
        for name in _INT_FIELDS | _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is not None and value < 0:
                raise ValueError(f"{name} must not be negative, got {value}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True)
class SimModel:
    """One simulated model. Prices are informational (listed in /v1/models)."""

    name: str
    # Left out of the hash so a model stays hashable although the mapping is a dict.
    quality: Mapping[str, float] = field(default_factory=dict, hash=False)
    input_per_mtok: float = 0.0
    output_per_mtok: float = 0.0
    ttft_ms: float = 0.0
    token_delay_ms: float = 0.0
    faults: Faults = Faults()
    context_window: int = 128_000

    def quality_for(self, task: str) -> float:
        return float(self.quality.get(task, DEFAULT_QUALITY))


@dataclass(frozen=True)
class SimOptions:
    """The whole simulator. Empty `models` = any model name is served by a default profile."""

    models: tuple[SimModel, ...] = ()
    strict_models: bool = False
    default_tokens: int = 24
    faults: Faults = Faults()
    seed: int = 0
    valid_keys: tuple[str, ...] = ()
    # The request log is for tests and benchmarks; bounded so a long benchmark cannot grow it
    # without limit.
    log_limit: int = 10_000

    def find_model(self, name: str) -> SimModel | None:
        for model in self.models:
            if model.name == name:
                return model
        return None


def merge_faults(base: Faults, override: Faults) -> Faults:
    """`override` (a model's faults) on top of `base` (the global ones).

    Rates add (capped at 1) because both sources of trouble apply; values the override sets
    explicitly win; booleans are on if either side turns them on.
    """
    merged: dict[str, Any] = {}
    for f in fields(Faults):
        a, b = getattr(base, f.name), getattr(override, f.name)
        if f.name in RATE_FIELDS and f.name != "die_rate":
            merged[f.name] = min(1.0, a + b)
        elif f.name in _BOOL_FIELDS:
            merged[f.name] = a or b
        else:
            merged[f.name] = b if b is not None else a
    return Faults(**merged)


def faults_from_mapping(data: Mapping[str, Any], *, where: str = "faults") -> Faults:
    """Faults from JSON-like input; unknown keys and wrong types raise ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object")
    known = {f.name for f in fields(Faults)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    values: dict[str, Any] = {}
    for name, value in data.items():
        values[name] = _coerce(name, value, where)
    try:
        return Faults(**values)
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


def _coerce(name: str, value: Any, where: str) -> Any:
    if value is None and name not in _BOOL_FIELDS and name not in RATE_FIELDS - {"die_rate"}:
        return None
    if name in _BOOL_FIELDS:
        if not isinstance(value, bool):
            raise ValueError(f"{where}.{name}: expected true or false")
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}.{name}: expected a number")
    if name in _INT_FIELDS:
        if int(value) != value:
            raise ValueError(f"{where}.{name}: expected an integer")
        return int(value)
    return float(value)


def model_from_mapping(data: Mapping[str, Any], *, where: str = "model") -> SimModel:
    """A SimModel from JSON-like input (one entry of a models file)."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object")
    known = {f.name for f in fields(SimModel)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown field(s) {', '.join(unknown)}")
    name = data.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"{where}.name: expected a non-empty string")
    where = f"model {name!r}"
    quality = data.get("quality", {})
    if not isinstance(quality, Mapping) or not all(
        isinstance(v, int | float) and not isinstance(v, bool) and 0.0 <= v <= 1.0
        for v in quality.values()
    ):
        raise ValueError(f"{where}.quality: expected an object of task -> number in [0, 1]")
    numbers: dict[str, Any] = {}
    for key in ("input_per_mtok", "output_per_mtok", "ttft_ms", "token_delay_ms"):
        if key in data:
            value = data[key]
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ValueError(f"{where}.{key}: expected a non-negative number")
            numbers[key] = float(value)
    if "context_window" in data:
        window = data["context_window"]
        if isinstance(window, bool) or not isinstance(window, int) or window <= 0:
            raise ValueError(f"{where}.context_window: expected a positive integer")
        numbers["context_window"] = window
    faults = faults_from_mapping(data.get("faults", {}), where=f"{where}.faults")
    return SimModel(
        name=name, quality={k: float(v) for k, v in quality.items()}, faults=faults, **numbers
    )


def load_models_file(path: Path) -> tuple[SimModel, ...]:
    """Models from a JSON file holding a list of SimModel objects."""
    try:
        data = orjson.loads(path.read_bytes())
    except OSError as exc:
        raise ValueError(f"{path}: cannot read ({exc.strerror})") from None
    except orjson.JSONDecodeError as exc:
        raise ValueError(f"{path}: invalid JSON ({exc})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of models")
    models = tuple(
        model_from_mapping(item, where=f"{path}: model #{i}") for i, item in enumerate(data)
    )
    names = [m.name for m in models]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate model names")
    return models


def _rate(text: str) -> float:
    value = float(text)
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a fraction between 0 and 1, got {text}")
    return value


def _non_negative(kind: type[int] | type[float]) -> Any:
    def parse(text: str) -> int | float:
        value = kind(text)
        if value < 0:
            raise argparse.ArgumentTypeError(f"must not be negative, got {text}")
        return value

    parse.__name__ = kind.__name__  # argparse names the type in its error messages
    return parse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The fault and model flags of `gateway sim` (`--port`/`--host` belong to the caller)."""
    g = parser.add_argument_group("simulated faults (applied to every model)")
    g.add_argument("--error-rate", type=_rate, default=0.0, help="fraction answering 500")
    g.add_argument("--rate-limit-rate", type=_rate, default=0.0, help="fraction answering 429")
    g.add_argument("--retry-after", type=_non_negative(float), help="Retry-After seconds on 429s")
    g.add_argument(
        "--die-after-tokens", type=_non_negative(int), help="cut streams after N content tokens"
    )
    g.add_argument("--die-rate", type=_rate, help="fraction of streams that die (default 1.0)")
    g.add_argument(
        "--error-event-after-tokens",
        type=_non_negative(int),
        help="send an SSE error event after N tokens, then end the body",
    )
    g.add_argument(
        "--stall-after-tokens",
        type=_non_negative(int),
        help="stop sending after N tokens but keep the connection open",
    )
    g.add_argument("--ttft-ms", type=_non_negative(float), help="delay before the first token")
    g.add_argument(
        "--headers-delay-ms", type=_non_negative(float), help="delay before response headers"
    )
    g.add_argument("--token-delay-ms", type=_non_negative(float), help="delay between tokens")
    g.add_argument(
        "--malformed-rate", type=_rate, default=0.0, help="fraction of streams with a bad event"
    )
    g.add_argument("--no-done", action="store_true", help="end streams without data: [DONE]")
    g.add_argument(
        "--echo-prefix", action="store_true", help="repeat the prefix on continuation requests"
    )
    g.add_argument(
        "--reject-prefill", action="store_true", help="400 on a trailing assistant message"
    )
    m = parser.add_argument_group("simulated models")
    m.add_argument("--tokens", type=_non_negative(int), default=24, help="answer length in tokens")
    m.add_argument("--seed", type=int, default=0, help="seed of the fault random source")
    m.add_argument("--models-file", type=Path, help="JSON list of model objects")
    m.add_argument("--demo-models", action="store_true", help="serve the demo's model set")
    m.add_argument("--strict-models", action="store_true", help="404 for unknown model names")
    m.add_argument("--valid-keys", help="comma-separated API keys accepted (default: any)")


def options_from_args(ns: argparse.Namespace) -> SimOptions:
    """SimOptions from parsed flags. Raises ValueError (one line) for a bad models file."""
    faults = Faults(
        error_rate=ns.error_rate,
        rate_limit_rate=ns.rate_limit_rate,
        retry_after=ns.retry_after,
        die_after_tokens=ns.die_after_tokens,
        die_rate=ns.die_rate,
        error_event_after_tokens=ns.error_event_after_tokens,
        stall_after_tokens=ns.stall_after_tokens,
        ttft_ms=ns.ttft_ms,
        headers_delay_ms=ns.headers_delay_ms,
        token_delay_ms=ns.token_delay_ms,
        malformed_rate=ns.malformed_rate,
        no_done=ns.no_done,
        echo_prefix=ns.echo_prefix,
        reject_prefill=ns.reject_prefill,
    )
    models: tuple[SimModel, ...] = ()
    if ns.models_file is not None:
        models = load_models_file(ns.models_file)
    if ns.demo_models:
        # Imported here because demo.py builds on this module.
        from gateway.sim.demo import demo_models

        models = models + tuple(m for m in demo_models() if m.name not in {x.name for x in models})
    keys = tuple(k.strip() for k in (ns.valid_keys or "").split(",") if k.strip())
    return SimOptions(
        models=models,
        strict_models=ns.strict_models,
        default_tokens=ns.tokens,
        faults=faults,
        seed=ns.seed,
        valid_keys=keys,
    )
