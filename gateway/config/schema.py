"""What the config's shape is, read from the models so it can never drift from them.

A *section* is a top-level table (`[server]`, `[auth]`, ...); its *scalar keys* are the ones the
environment may override; everything held in a tuple is an *array table* (`[[backends]]`,
`[[models]]`, `[[auth.clients]]`) that only the file can set.
"""

from __future__ import annotations

import types
from collections.abc import Iterable, Mapping
from functools import cache
from types import MappingProxyType
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel

from gateway.config.models import GatewayConfig


def model_of(annotation: Any) -> type[BaseModel] | None:
    """The model class an annotation holds, looking through `X | None` and `tuple[X, ...]`."""
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, tuple):
        for arg in get_args(annotation):
            found = model_of(arg)
            if found is not None:
                return found
        return None
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _is_tuple(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin is tuple:
        return True
    if origin in (Union, types.UnionType):
        return any(_is_tuple(arg) for arg in get_args(annotation))
    return False


@cache
def sections() -> Mapping[str, frozenset[str]]:
    """Section name -> its scalar keys. Cached (read-only): the models are fixed at import."""
    result: dict[str, frozenset[str]] = {}
    for name, field in GatewayConfig.model_fields.items():
        section = model_of(field.annotation)
        if section is None or _is_tuple(field.annotation):
            continue
        result[name] = frozenset(
            key
            for key, sub in section.model_fields.items()
            if model_of(sub.annotation) is None and not _is_tuple(sub.annotation)
        )
    return MappingProxyType(result)


def is_array_table(section: str, key: str) -> bool:
    model = model_of(GatewayConfig.model_fields[section].annotation)
    field = model.model_fields.get(key) if model is not None else None
    return field is not None and _is_tuple(field.annotation)


def model_at(loc: Iterable[str | int]) -> type[BaseModel] | None:
    """The model that validates the table found at `loc` (list indexes are skipped)."""
    model: type[BaseModel] | None = GatewayConfig
    for item in loc:
        if isinstance(item, int):
            continue
        if model is None or item not in model.model_fields:
            return None
        model = model_of(model.model_fields[item].annotation)
    return model


def user_keys(model: type[BaseModel]) -> list[str]:
    """The keys a user may write in that table (GatewayConfig.source is set by the loader)."""
    return [name for name, field in model.model_fields.items() if not field.exclude]
