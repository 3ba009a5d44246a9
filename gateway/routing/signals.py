"""Outcome signals the routing statistics learn from, and how much each one counts.

A positive delta is evidence of a good outcome (added to a Beta's alpha), a negative one of a
bad outcome (its magnitude added to beta). The magnitudes say how sure each signal is: a 200
is provisional evidence of a good answer (+1.0, which explicit feedback later replaces); a 5xx
is nearly a full failure; a 429 is mostly about capacity; a client error is mostly the
request's fault; a `retried` (the client sent the same prompt again soon after) is a strong
hint that the answer was wrong.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType


class QualitySignal(StrEnum):
    SUCCESS = "success"
    RATE_LIMITED = "rate_limited"
    SERVER_ERROR = "server_error"
    CLIENT_ERROR = "client_error"
    TIMEOUT = "timeout"
    RETRIED = "retried"


SIGNAL_DELTAS: Mapping[QualitySignal, float] = MappingProxyType(
    {
        QualitySignal.SUCCESS: 1.0,
        QualitySignal.RATE_LIMITED: -0.3,
        QualitySignal.SERVER_ERROR: -0.8,
        QualitySignal.CLIENT_ERROR: -0.2,
        QualitySignal.TIMEOUT: -0.5,
        QualitySignal.RETRIED: -0.7,
    }
)
