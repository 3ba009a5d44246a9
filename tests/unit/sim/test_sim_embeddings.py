"""Deterministic embedding vectors and their base64 encoding (gateway.sim.embeddings)."""

from __future__ import annotations

import base64
import math
import struct

from gateway.sim.embeddings import decode_base64, embedding_vector, encode_base64, input_texts


def test_vector_is_deterministic_unit_and_16_wide() -> None:
    vector = embedding_vector("hello")
    assert vector == embedding_vector("hello")
    assert vector != embedding_vector("hello!")
    assert len(vector) == 16
    assert math.isclose(math.sqrt(sum(v * v for v in vector)), 1.0, rel_tol=1e-5)
    assert len(embedding_vector("hello", 100)) == 100


def test_base64_is_little_endian_float32() -> None:
    vector = embedding_vector("hello")
    encoded = encode_base64(vector)
    raw = base64.b64decode(encoded)
    assert len(raw) == 64
    assert list(struct.unpack("<16f", raw)) == vector
    assert decode_base64(encoded) == vector


def test_input_shapes() -> None:
    assert input_texts("a") == ["a"]
    assert input_texts(["a", "b"]) == ["a", "b"]
    assert input_texts([1, 2, 3]) == ["1 2 3"]
    assert input_texts([[1, 2], [3]]) == ["1 2", "3"]
    assert input_texts([]) is None
    assert input_texts(5) is None
    assert input_texts(["a", 1]) is None
