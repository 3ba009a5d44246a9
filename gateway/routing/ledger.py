"""Bounded memory of served requests: for explicit feedback and for retry detection.

Both maps are bounded in size and in age, whatever the request rate: the oldest entries go
first (insertion order is age order, so eviction is O(1) from the front).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any

import orjson

from gateway.config.models import Task


@dataclass(slots=True)
class ServedRequest:
    request_id: str
    client: str | None
    model: str
    task: Task
    success_recorded: bool
    at: float
    score: float | None = None


class RequestLedger:
    def __init__(self, max_entries: int = 100_000, max_age_secs: float = 86_400.0) -> None:
        self._entries: OrderedDict[str, ServedRequest] = OrderedDict()
        self._max_entries = max_entries
        self._max_age = max_age_secs

    def remember(self, served: ServedRequest) -> None:
        self._entries[served.request_id] = served
        self._entries.move_to_end(served.request_id)
        self._evict(served.at)

    def lookup(self, request_id: str, client: str | None) -> ServedRequest | None:
        """The request, if this client made it; None for unknown and foreign ids alike."""
        served = self._entries.get(request_id)
        if served is None or served.client != client:
            return None
        return served

    def _evict(self, now: float) -> None:
        entries = self._entries
        while len(entries) > self._max_entries:
            entries.popitem(last=False)
        while entries:
            oldest = next(iter(entries.values()))
            if now - oldest.at <= self._max_age:
                break
            entries.popitem(last=False)


class RetryDetector:
    """Same client, same prompt, within the window: the first answer did not satisfy."""

    def __init__(self, window_secs: float = 300.0, max_entries: int = 100_000) -> None:
        self._window = window_secs
        self._max_entries = max_entries
        self._seen: OrderedDict[tuple[str | None, bytes], ServedRequest] = OrderedDict()

    def check(
        self, client: str | None, fingerprint: bytes, request_id: str, now: float
    ) -> ServedRequest | None:
        earlier = self._seen.pop((client, fingerprint), None)
        if earlier is None or earlier.request_id == request_id or now - earlier.at > self._window:
            return None
        return earlier

    def served(self, client: str | None, fingerprint: bytes, served: ServedRequest) -> None:
        key = (client, fingerprint)
        self._seen[key] = served
        self._seen.move_to_end(key)
        while len(self._seen) > self._max_entries:
            self._seen.popitem(last=False)


def prompt_fingerprint(body: dict[str, Any]) -> bytes:
    prompt = body.get("messages") if "messages" in body else body.get("prompt")
    return hashlib.blake2b(orjson.dumps(prompt), digest_size=16).digest()
