"""Deterministic embedding vectors and their two wire encodings (pure functions).

A vector is a function of the input text only: unit length, float32 values, derived from a
hash. Values are rounded to float32 before they are returned, so the float list and the base64
encoding (little-endian float32, what the OpenAI SDKs request by default) decode identically.
"""

from __future__ import annotations

import base64
import hashlib
import math
import struct
from typing import Any

DIMENSIONS = 16


def embedding_vector(text: str, dimensions: int = DIMENSIONS) -> list[float]:
    """A unit vector of `dimensions` float32 values derived from `text`."""
    raw = b""
    block = 0
    while len(raw) < 4 * dimensions:
        raw += hashlib.blake2b(f"{block}\x1f{text}".encode(), digest_size=64).digest()
        block += 1
    ints = struct.unpack(f">{dimensions}I", raw[: 4 * dimensions])
    values = [i / 2**31 - 1.0 for i in ints]
    norm = math.sqrt(sum(v * v for v in values)) or 1.0
    packed = struct.pack(f"<{dimensions}f", *(v / norm for v in values))
    return list(struct.unpack(f"<{dimensions}f", packed))


def encode_base64(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode("ascii")


def decode_base64(data: str) -> list[float]:
    raw = base64.b64decode(data)
    return list(struct.unpack(f"<{len(raw) // 4}f", raw))


def input_texts(value: Any) -> list[str] | None:
    """The inputs of an embeddings request as texts (token arrays become their digits).

    None when the shape is not one the API accepts.
    """
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value:
        if all(isinstance(v, str) for v in value):
            return list(value)
        if all(isinstance(v, int) and not isinstance(v, bool) for v in value):
            return [" ".join(map(str, value))]
        if all(isinstance(v, list) and all(isinstance(t, int) for t in v) for v in value):
            return [" ".join(map(str, v)) for v in value]
    return None
