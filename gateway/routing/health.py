"""Per-model health: the expected share of attempts that end without an upstream fault.

Responsibility: pool fault evidence across a model's tasks. A 5xx, a timeout or a 429 says
something about the backend, not about the task the request happened to be, so one estimate
per model learns four to five times faster than the per-task posteriors could. The scorer
weighs a model's sampled quality by its reliability (cubed, see scoring.py), on top of the
fault's own delta in the task posterior. That second count is deliberate: every fault also
costs the client a failover (time, and a fresh chance to fail), which the task posterior, a
success rate, does not price.

Estimate: reliability = (ok + R0 * W0) / (ok + fault + W0), a Beta mean with a prior of
R0 = 0.99 worth W0 = 10 attempts (a new model is presumed healthy, but one early fault shows).
A success adds 1 to `ok`; a fault adds its weight (server error 0.8, timeout 0.5, rate limit
0.3, the magnitudes of the quality deltas). Client errors and `retried` are about the request
or the answer, not the backend, and leave health alone. Every attempt first shrinks both
counts by g = 1 - 1/memory (default memory 50 attempts), so a model that heals regains its
share within about that many attempts, and one that starts failing loses it as fast. 50, not
100: a model holding a quarter of the traffic makes 50 attempts in 200 requests, which is how
fast the routing benchmark needs a model that starts failing to lose its traffic; a healthy
model's single fault then costs it about 5% of its quality weight for a few dozen attempts.

Invariants: ok >= 0 and fault >= 0; reliability in (0, 1]; pending deltas hold the exact
change each local event made, so several replicas' deltas sum like the task counters do.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from gateway.routing.signals import QualitySignal

R0 = 0.99
W0 = 10.0

FAULT_WEIGHTS: Mapping[QualitySignal, float] = MappingProxyType(
    {
        QualitySignal.SERVER_ERROR: 0.8,
        QualitySignal.TIMEOUT: 0.5,
        QualitySignal.RATE_LIMITED: 0.3,
    }
)


@dataclass(slots=True)
class Health:
    ok: float = 0.0
    fault: float = 0.0

    @property
    def reliability(self) -> float:
        return (self.ok + R0 * W0) / (self.ok + self.fault + W0)


class HealthBook:
    """Health of every model of one replica; owned by a StatsBook, which feeds it."""

    def __init__(self, memory: float | None = 50.0) -> None:
        if memory is not None and memory < 1:
            raise ValueError("memory must be >= 1 attempt or None")
        self._keep = 1.0 if memory is None else 1.0 - 1.0 / memory
        self._health: dict[str, Health] = {}
        self._pending: dict[str, Health] = {}

    def reliability(self, model: str) -> float:
        health = self._health.get(model)
        return R0 if health is None else health.reliability

    def get(self, model: str) -> Health | None:
        return self._health.get(model)

    def record(self, model: str, signal: QualitySignal) -> None:
        if signal is not QualitySignal.SUCCESS and signal not in FAULT_WEIGHTS:
            return
        health = self._health.get(model)
        if health is None:
            health = self._health[model] = Health()
        old_ok, old_fault = health.ok, health.fault
        health.ok *= self._keep
        health.fault *= self._keep
        if signal is QualitySignal.SUCCESS:
            health.ok += 1.0
        else:
            health.fault += FAULT_WEIGHTS[signal]
        self._add(model, health.ok - old_ok, health.fault - old_fault)

    def _add(self, model: str, d_ok: float, d_fault: float) -> None:
        pending = self._pending.get(model)
        if pending is None:
            pending = self._pending[model] = Health()
        pending.ok += d_ok
        pending.fault += d_fault

    def retain(self, models: frozenset[str]) -> None:
        for model in [m for m in self._health if m not in models]:
            del self._health[model]
            self._pending.pop(model, None)

    def drain_deltas(self) -> dict[str, dict[str, float]]:
        out = {m: {"ok": d.ok, "fault": d.fault} for m, d in self._pending.items()}
        self._pending.clear()
        return out

    def requeue(self, model: str, delta: Mapping[str, float]) -> None:
        self._add(model, delta.get("ok", 0.0), delta.get("fault", 0.0))

    def apply_remote(self, model: str, total: Mapping[str, float]) -> None:
        """Adopt the cluster's summed increments for `model` (plus what is not drained yet)."""
        pending = self._pending.get(model) or Health()
        health = self._health.get(model)
        if health is None:
            health = self._health[model] = Health()
        health.ok = max(0.0, total.get("ok", 0.0) + pending.ok)
        health.fault = max(0.0, total.get("fault", 0.0) + pending.fault)

    def to_dict(self) -> dict[str, object]:
        return {
            "models": {m: {"ok": h.ok, "fault": h.fault} for m, h in self._health.items()},
            "pending": {m: {"ok": h.ok, "fault": h.fault} for m, h in self._pending.items()},
        }

    def load_dict(self, data: Mapping[str, object], models: frozenset[str] | None) -> None:
        self._health = _read(data.get("models", {}), models, "models")
        self._pending = _read(data.get("pending", {}), models, "pending")


def _read(raw: object, models: frozenset[str] | None, where: str) -> dict[str, Health]:
    if not isinstance(raw, dict):
        raise ValueError(f"health snapshot: {where!r} must be an object")
    out: dict[str, Health] = {}
    for model, value in raw.items():
        if not isinstance(value, dict):
            raise ValueError(f"health snapshot: bad {where} entry {model!r}")
        ok, fault = value.get("ok"), value.get("fault")
        for number in (ok, fault):
            if isinstance(number, bool) or not isinstance(number, int | float):
                raise ValueError(f"health snapshot: {where} entry {model!r} needs numbers")
        if models is None or model in models:
            out[model] = Health(float(ok), float(fault))  # type: ignore[arg-type]
    return out
