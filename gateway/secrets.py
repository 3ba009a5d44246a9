"""Secret values and the only ways to show, compare and hash them.

Invariant: a `Secret` never renders its value. `str`, `repr` and f-strings give the masked
form (`sk-…a1b2`), so a key that slips into a log line, an exception or `/admin/status` is
still unreadable; only `.reveal()` returns the value, at the one place that sends it upstream.
"""

from __future__ import annotations

import hashlib
import hmac

ELLIPSIS = "\u2026"
_SHORT_KEY = 8
_HEAD = 3
_TAIL = 4
_SHORT_TAIL = 2


def mask(value: str) -> str:
    """First 3 characters, `…`, last 4; a key of 8 characters or fewer shows only `…` + last 2.

    Short keys get less so the head and tail together never cover the whole key.
    """
    if len(value) > _SHORT_KEY:
        return f"{value[:_HEAD]}{ELLIPSIS}{value[-_TAIL:]}"
    # Below 5 characters even the last 2 would be most of the key.
    if len(value) > 2 * _SHORT_TAIL:
        return f"{ELLIPSIS}{value[-_SHORT_TAIL:]}"
    return ELLIPSIS


def _as_bytes(value: str | bytes | Secret) -> bytes:
    if isinstance(value, Secret):
        value = value.reveal()
    # compare_digest refuses non-ASCII str, so compare the UTF-8 bytes instead.
    return value.encode("utf-8") if isinstance(value, str) else value


def matches(a: str | bytes | Secret, b: str | bytes | Secret) -> bool:
    """Constant-time equality, so response timing does not leak how much of a key was right."""
    return hmac.compare_digest(_as_bytes(a), _as_bytes(b))


def sha256_hex(token: str | bytes | Secret) -> str:
    """Hex SHA-256 of a token, the form `auth.clients[].key_sha256` stores."""
    return hashlib.sha256(_as_bytes(token)).hexdigest()


class Secret:
    """A string that shows only its masked form."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        if not isinstance(value, str):
            raise TypeError("Secret holds a str")
        self._value = value

    def reveal(self) -> str:
        return self._value

    @property
    def masked(self) -> str:
        return mask(self._value)

    def __str__(self) -> str:
        return self.masked

    def __repr__(self) -> str:
        return f"Secret({self.masked!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Secret):
            return NotImplemented
        return matches(self._value, other._value)

    def __hash__(self) -> int:
        return hash((Secret, self._value))

    def __bool__(self) -> bool:
        return bool(self._value)

    def __copy__(self) -> Secret:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> Secret:
        return self

    def __reduce__(self) -> tuple[object, ...]:
        # Pickling would write the value out in clear; nothing in the gateway needs it.
        raise TypeError("a Secret cannot be pickled")
