"""Pydantic's validation errors, said as one `ConfigError` line a person can act on.

The key is dotted and names array entries by their id or name where they have one
(`models[gpt-4o].input_per_mtok`, `auth.clients[team-a].key_env`), else by 0-based index
(`models[1]`), the same indexing as key refs (`VAR[1]`). Values are echoed only for errors about
numbers, booleans and choices, never for strings that could be a pasted secret.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from pydantic_core import ErrorDetails

from gateway.config.errors import ConfigError
from gateway.config.schema import model_at, user_keys

_TYPE_PROBLEMS = {
    "missing": "required key is missing",
    "extra_forbidden": "unknown key",
    "string_type": "must be a string",
    "int_type": "must be an integer",
    "int_parsing": "must be an integer",
    "int_from_float": "must be a whole number",
    "float_type": "must be a number",
    "float_parsing": "must be a number",
    "bool_type": "must be true or false",
    "bool_parsing": "must be true or false",
    "model_type": "must be a table",
    "model_attributes_type": "must be a table",
    "dict_type": "must be a table",
    "tuple_type": "must be an array",
    "list_type": "must be an array",
    "path_type": "must be a path (a string)",
}
_BOUNDS = {
    "greater_than_equal": (">=", "ge"),
    "greater_than": (">", "gt"),
    "less_than_equal": ("<=", "le"),
    "less_than": ("<", "lt"),
}
# Only these echo the offending value: they concern numbers, booleans and fixed choices.
_ECHO = {"int_parsing", "int_from_float", "float_parsing", "bool_parsing", "enum", "literal_error"}
_ECHO.update(_BOUNDS)
_NAMED_ARRAYS = {"models": "id", "backends": "name", "clients": "name"}


def dotted_key(loc: tuple[str | int, ...], raw: Any) -> str:
    """`('models', 1, 'tasks', 0)` -> `models[gpt-4o].tasks[0]`, looking names up in `raw`."""
    parts: list[str] = []
    node = raw
    array = ""
    for item in loc:
        if isinstance(item, str):
            parts.append(item)
            array = item
            node = node.get(item) if isinstance(node, dict) else None
            continue
        entry = node[item] if isinstance(node, list) and 0 <= item < len(node) else None
        name_key = _NAMED_ARRAYS.get(array)
        label = entry.get(name_key) if name_key and isinstance(entry, dict) else None
        label = label if isinstance(label, str) and label else str(item)
        parts[-1:] = [f"{parts[-1] if parts else ''}[{label}]"]
        node = entry
    return ".".join(parts) or "-"


def _echo(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def problem(error: ErrorDetails) -> str:
    kind = error["type"]
    ctx = error.get("ctx") or {}
    loc = tuple(error["loc"])
    if kind in _BOUNDS:
        symbol, name = _BOUNDS[kind]
        text = f"must be {symbol} {_number(ctx.get(name))}"
    elif kind in ("enum", "literal_error"):
        text = f"must be {ctx.get('expected')}"
    elif kind == "extra_forbidden":
        text = "unknown key"
        model = model_at(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), user_keys(model), n=1) if model else []
        if close:
            text += f" (did you mean '{close[0]}'?)"
    elif kind == "tuple_type" and model_at(loc) is not None:
        text = f"must be an array of tables ([[{'.'.join(str(p) for p in loc)}]])"
    elif kind == "value_error":
        text = str(error["msg"]).removeprefix("Value error, ")
    else:
        text = _TYPE_PROBLEMS.get(kind) or _lower_first(str(error["msg"]))
    return text


def _number(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _lower_first(text: str) -> str:
    return text[:1].lower() + text[1:]


def _plain_key(loc: tuple[str | int, ...]) -> str:
    return ".".join(str(part) for part in loc)


def config_error(
    exc: ValidationError, file: Path | str, raw: Any, origins: Mapping[str, str]
) -> ConfigError:
    errors = exc.errors(include_url=False)
    first = errors[0]
    loc = tuple(first["loc"])
    text = problem(first)
    details = []
    if first["type"] in _ECHO:
        details.append(f"got {_echo(first['input'])}")
    origin = origins.get(_plain_key(loc))
    if origin:
        details.append(f"from {origin}")
    if details:
        text += f" ({', '.join(details)})"
    if len(errors) > 1:
        more = len(errors) - 1
        text += f"; and {more} more problem{'s' if more > 1 else ''}"
    return ConfigError(file, dotted_key(loc, raw), text)
