"""Bounded history of failover moves for /admin/status, plus its running totals."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Literal

MoveKind = Literal["retry", "continuation"]


class FailoverLog:
    def __init__(self, clock: Callable[[], float], size: int = 100) -> None:
        self._clock = clock
        self._recent: deque[dict[str, object]] = deque(maxlen=size)
        self.attempts = 0
        self.successes = 0

    def record(
        self, request_id: str, from_model: str, to_model: str, kind: MoveKind, succeeded: bool
    ) -> None:
        self.attempts += 1
        self.successes += succeeded
        self._recent.append({
            "at": self._clock(),
            "request_id": request_id,
            "from_model": from_model,
            "to_model": to_model,
            "kind": kind,
            "outcome": "success" if succeeded else "failure",
        })

    def status(self) -> dict[str, object]:
        recent = list(self._recent)
        return {"attempts": self.attempts, "successes": self.successes, "recent": recent}
