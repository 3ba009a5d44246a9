"""Learned outcome statistics per (model, task): a Beta posterior of quality plus latency EMAs.

Responsibility: turn upstream outcomes and explicit feedback into the numbers the scorer reads,
and expose them in forms a store can persist (`to_dict`/`load_dict`) or merge across replicas
(`drain_deltas`/`apply_remote`). Per-model health (health.py) is fed from the same calls.

The quality model. Each (model, task) holds Beta(alpha, beta) over "this model answers this
task well". A signal carries a delta d (`SIGNAL_DELTAS`): d > 0 adds d to alpha, d < 0 adds |d|
to beta. Explicit feedback with score s adds s to alpha and 1 - s to beta, and takes back the
request's automatic evidence (the provisional +1.0 of its success, the penalty of a `retried`,
an earlier score when re-rated), so a wrong answer rated 0.0 nets out as one failure.

Priors. Every entry starts from a flat Beta(1, 1) base, which keeps the posterior proper when a
benchmark says 0.0 or 1.0. `seed` adds a benchmark result as `weight` pseudo-observations
(alpha = 1 + q*w, beta = 1 + (1-q)*w), and only while the model has no observed calls at all.
An entry never seeded or observed does not exist; readers treat it as Beta(1, 1) (mean 0.5,
wide), so Thompson sampling tries an unknown model now and then.

Forgetting. Upstreams change (a model starts failing, a provider ships a new version), so every
observed attempt first shrinks the evidence towards the flat base: alpha <- 1 + g*(alpha - 1),
same for beta, with g = 1 - 1/memory: a posterior holds at most about `memory` pseudo-
observations, so a model that turns bad loses its lead within tens of its own requests, not
thousands. The prior fades like a real observation ("a prior weighs as prior_weight observed
calls"). `memory=None` turns forgetting off.

Invariants:
- alpha >= 1 and beta >= 1 always (the flat base is never removed).
- `calls` counts observed attempts, failed ones included; prior pseudo-calls, feedback and
  `retried` (which judges an earlier, already counted attempt) do not add to it.
- At most one entry per (model, Task); with `models` given, only those models get entries.
- Cluster view = seed + every replica's drained deltas + this replica's pending deltas. A delta
  is the exact change a local event made (forgetting included), so the shared store only ever
  sums increments; feedback's delta is its full change even where the local view clamps at
  the flat base, since the evidence it takes back may sit in another replica's increments.
  EMAs merge as last writer wins.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, fields
from types import MappingProxyType

from gateway.config.models import Task
from gateway.routing.health import HealthBook
from gateway.routing.signals import SIGNAL_DELTAS, QualitySignal  # re-exported: the API

_SEP = "|"  # task values never contain it; model ids may, so names split on the last one
_HEALTH = "health"  # the name suffix of a model's health counters in the shared store
_TASKS: Mapping[str, Task] = MappingProxyType({t.value: t for t in Task})


@dataclass(slots=True)
class TaskStats:
    alpha: float = 1.0
    beta: float = 1.0
    calls: int = 0
    quality_ema: float | None = None
    latency_ms_ema: float | None = None
    ttft_ms_ema: float | None = None
    tokens_per_sec_ema: float | None = None
    seeded: bool = False
    # The seed this entry started from; the cluster merge rebuilds alpha/beta on top of it.
    base_alpha: float = 1.0
    base_beta: float = 1.0

    @property
    def mean(self) -> float:
        return self.alpha / (self.alpha + self.beta)


@dataclass(slots=True)
class _Delta:
    alpha: float = 0.0
    beta: float = 0.0
    calls: float = 0.0


_FIELDS = tuple(f.name for f in fields(TaskStats))
_EMAS = ("quality_ema", "latency_ms_ema", "ttft_ms_ema", "tokens_per_sec_ema")


def stats_key(model: str, task: Task) -> str:
    """The store name of one (model, task): `"<model>|<task>"`; health is `"<model>|health"`."""
    return f"{model}{_SEP}{task.value}"


def parse_stats_key(name: str) -> tuple[str, Task] | None:
    """The (model, task) of a `stats_key` name; None for health names and garbage."""
    model, suffix = _split(name)
    return (model, _TASKS[suffix]) if model and suffix in _TASKS else None


def _split(name: str) -> tuple[str, str]:
    model, _, suffix = name.rpartition(_SEP)
    return model, suffix


def _ema(old: float | None, value: float, weight: float) -> float:
    return value if old is None else old + weight * (value - old)


class StatsBook:
    """All (model, task) statistics of one replica; not thread-safe (one event loop owns it)."""

    def __init__(
        self,
        memory: float | None = 200.0,
        ema_weight: float = 0.2,
        models: Iterable[str] | None = None,
        health_memory: float | None = 50.0,
    ) -> None:
        if memory is not None and memory < 1:
            raise ValueError("memory must be >= 1 observation or None")
        self._keep = 1.0 if memory is None else 1.0 - 1.0 / memory
        self._ema_weight = ema_weight
        self._models = frozenset(models) if models is not None else None
        self._entries: dict[tuple[str, Task], TaskStats] = {}
        self._pending: dict[tuple[str, Task], _Delta] = {}
        self.health = HealthBook(health_memory)

    # -- reading ---------------------------------------------------------------------------

    def get(self, model: str, task: Task) -> TaskStats | None:
        return self._entries.get((model, task))

    def posterior(self, model: str, task: Task) -> tuple[float, float]:
        entry = self._entries.get((model, task))
        return (1.0, 1.0) if entry is None else (entry.alpha, entry.beta)

    def posterior_mean(self, model: str, task: Task) -> float:
        alpha, beta = self.posterior(model, task)
        return alpha / (alpha + beta)

    def reliability(self, model: str) -> float:
        return self.health.reliability(model)

    def model_calls(self, model: str) -> int:
        return sum(e.calls for (m, _), e in self._entries.items() if m == model)

    def items(self) -> Iterator[tuple[str, Task, TaskStats]]:
        return ((m, t, e) for (m, t), e in self._entries.items())

    def __len__(self) -> int:
        return len(self._entries)

    # -- writing ---------------------------------------------------------------------------

    def _known(self, model: str) -> bool:
        return self._models is None or model in self._models

    def _entry(self, model: str, task: Task) -> TaskStats | None:
        entry = self._entries.get((model, task))
        if entry is None and self._known(model):
            entry = self._entries[(model, task)] = TaskStats()
        return entry

    def _add(self, key: tuple[str, Task], d_alpha: float, d_beta: float, d_calls: float) -> None:
        delta = self._pending.get(key)
        if delta is None:
            delta = self._pending[key] = _Delta()
        delta.alpha += d_alpha
        delta.beta += d_beta
        delta.calls += d_calls

    def record(
        self,
        model: str,
        task: Task,
        signal: QualitySignal,
        latency_ms: float | None = None,
        ttft_ms: float | None = None,
        output_tokens: int = 0,
    ) -> None:
        """One upstream outcome. Latency is learned from successes and timeouts only: a fast
        error says nothing about how long an answer takes; a timeout is a lower bound."""
        entry = self._entry(model, task)
        if entry is None:
            return
        self.health.record(model, signal)
        old_alpha, old_beta = entry.alpha, entry.beta
        attempt = signal is not QualitySignal.RETRIED
        if attempt:
            entry.calls += 1
            entry.alpha = 1.0 + self._keep * (old_alpha - 1.0)
            entry.beta = 1.0 + self._keep * (old_beta - 1.0)
        d = SIGNAL_DELTAS[signal]
        if d > 0:
            entry.alpha += d
        else:
            entry.beta -= d
        self._add((model, task), entry.alpha - old_alpha, entry.beta - old_beta, int(attempt))
        w = self._ema_weight
        if signal is QualitySignal.SUCCESS:
            entry.quality_ema = _ema(entry.quality_ema, 1.0, w)
            if ttft_ms is not None:
                entry.ttft_ms_ema = _ema(entry.ttft_ms_ema, ttft_ms, w)
            gen_ms = (latency_ms or 0.0) - (ttft_ms or 0.0)
            if output_tokens > 0 and gen_ms > 0:
                tps = output_tokens * 1000.0 / gen_ms
                entry.tokens_per_sec_ema = _ema(entry.tokens_per_sec_ema, tps, w)
        elif signal is not QualitySignal.RATE_LIMITED:
            # A 429 is about capacity, not about the answers this model gives.
            entry.quality_ema = _ema(entry.quality_ema, 0.0, w)
        if latency_ms is not None and signal in (QualitySignal.SUCCESS, QualitySignal.TIMEOUT):
            entry.latency_ms_ema = _ema(entry.latency_ms_ema, latency_ms, w)

    def feedback(
        self,
        model: str,
        task: Task,
        score: float,
        replaces_success: bool,
        replaces_score: float | None = None,
        replaces_retry: bool = False,
    ) -> None:
        """Explicit score in 0..1 for one served request, replacing its automatic evidence:
        the provisional success (`replaces_success`), an earlier score when the client
        re-rates (`replaces_score`), a `retried` penalty (`replaces_retry`). With forgetting
        on, the replaced +1.0 may have faded a little already; taking back the full amount errs
        towards the client's verdict, and the flat base bounds it."""
        if not 0.0 <= score <= 1.0:
            raise ValueError("score must be within 0..1")
        entry = self._entry(model, task)
        if entry is None:
            return
        old_alpha, old_beta = entry.alpha, entry.beta
        alpha, beta = old_alpha + score, old_beta + (1.0 - score)
        if replaces_success:
            alpha -= SIGNAL_DELTAS[QualitySignal.SUCCESS]
        if replaces_score is not None:
            alpha -= replaces_score
            beta -= 1.0 - replaces_score
        if replaces_retry:
            beta += SIGNAL_DELTAS[QualitySignal.RETRIED]  # negative: takes the penalty back
        # The shared counters get the full change, the local view is clamped to the flat base:
        # a replica that has not merged the replaced success yet (another replica recorded
        # it) must not shrink the take-back to what its own view can absorb.
        self._add((model, task), alpha - old_alpha, beta - old_beta, 0)
        entry.alpha, entry.beta = max(1.0, alpha), max(1.0, beta)
        entry.quality_ema = _ema(entry.quality_ema, score, self._ema_weight)

    def seed(
        self, model: str, task: Task, quality: float, latency_ms: float | None, weight: float
    ) -> bool:
        """Seed one (model, task) from a benchmark; False (nothing changed) once the model has
        any observed call, so a restart or a reload never overwrites what was learned."""
        if not 0.0 <= quality <= 1.0 or weight < 0:
            raise ValueError("quality must be within 0..1 and weight >= 0")
        if self.model_calls(model) > 0:
            return False
        entry = self._entry(model, task)
        if entry is None:
            return False
        self._pending.pop((model, task), None)  # nothing observed yet, so nothing to merge
        entry.alpha = entry.base_alpha = 1.0 + quality * weight
        entry.beta = entry.base_beta = 1.0 + (1.0 - quality) * weight
        entry.seeded = True
        if latency_ms is not None:
            entry.latency_ms_ema = float(latency_ms)
        return True

    def set_base(self, model: str, task: Task, alpha: float, beta: float) -> None:
        """Restore the seed an entry started from (the caller persisted it), keeping whatever
        evidence sits on top; `apply_remote` then rebuilds alpha/beta on this base."""
        if alpha < 1.0 or beta < 1.0:
            raise ValueError("a base includes the flat Beta(1, 1): alpha, beta >= 1")
        entry = self._entry(model, task)
        if entry is None:
            return
        entry.alpha = max(1.0, entry.alpha - entry.base_alpha + alpha)
        entry.beta = max(1.0, entry.beta - entry.base_beta + beta)
        entry.base_alpha, entry.base_beta, entry.seeded = alpha, beta, True

    def retain(self, models: Iterable[str]) -> None:
        """Drop models no longer configured (after a reload) and accept only these from now."""
        self._models = keep = frozenset(models)
        for key in [k for k in self._entries if k[0] not in keep]:
            del self._entries[key]
            self._pending.pop(key, None)
        self.health.retain(keep)

    # -- merging across replicas -----------------------------------------------------------

    def drain_deltas(self) -> dict[str, dict[str, float]]:
        """Increments since the last drain, by store name: `{alpha, beta, calls}` per
        (model, task) and `{ok, fault}` per `"<model>|health"`. The caller adds them to the
        shared counters, and hands them back with `requeue_deltas` if that fails."""
        out = {
            stats_key(m, t): {"alpha": d.alpha, "beta": d.beta, "calls": d.calls}
            for (m, t), d in self._pending.items()
        }
        self._pending.clear()
        for model, delta in self.health.drain_deltas().items():
            out[f"{model}{_SEP}{_HEALTH}"] = delta
        return out

    def requeue_deltas(self, deltas: Mapping[str, Mapping[str, float]]) -> None:
        for name, d in deltas.items():
            model, suffix = _split(name)
            if suffix == _HEALTH:
                self.health.requeue(model, d)
            elif suffix in _TASKS:
                key = (model, _TASKS[suffix])
                self._add(key, d.get("alpha", 0.0), d.get("beta", 0.0), d.get("calls", 0.0))

    def ema_records(self) -> dict[str, dict[str, float | None]]:
        """The EMAs by store name, for last-writer-wins records."""
        return {
            stats_key(m, t): {f: getattr(e, f) for f in _EMAS}
            for (m, t), e in self._entries.items()
        }

    def apply_remote(
        self,
        counters: Mapping[str, Mapping[str, float]],
        emas: Mapping[str, Mapping[str, object]] | None = None,
    ) -> None:
        """Adopt the cluster view: `counters` are the summed increments of every replica (this
        one's drained deltas included), `emas` the last written EMA records."""
        for name, total in counters.items():
            model, suffix = _split(name)
            if not self._known(model):
                continue
            if suffix == _HEALTH:
                self.health.apply_remote(model, total)
                continue
            entry = self._entry(model, _TASKS[suffix]) if suffix in _TASKS else None
            if entry is None:
                continue
            pending = self._pending.get((model, _TASKS[suffix])) or _Delta()
            entry.alpha = max(1.0, entry.base_alpha + total.get("alpha", 0.0) + pending.alpha)
            entry.beta = max(1.0, entry.base_beta + total.get("beta", 0.0) + pending.beta)
            entry.calls = int(round(total.get("calls", 0.0) + pending.calls))
        for name, record in (emas or {}).items():
            model, suffix = _split(name)
            entry = self._entry(model, _TASKS[suffix]) if suffix in _TASKS else None
            for f in _EMAS if entry is not None else ():
                value = record.get(f)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    setattr(entry, f, float(value))

    # -- persistence -----------------------------------------------------------------------

    def to_dict(self) -> dict[str, object]:
        """JSON-safe snapshot; `load_dict(to_dict())` restores the book exactly."""
        return {
            "version": 1,
            "entries": {
                stats_key(m, t): {f: getattr(e, f) for f in _FIELDS}
                for (m, t), e in self._entries.items()
            },
            "pending": {
                stats_key(m, t): {"alpha": d.alpha, "beta": d.beta, "calls": d.calls}
                for (m, t), d in self._pending.items()
            },
            "health": self.health.to_dict(),
        }

    def load_dict(self, data: Mapping[str, object]) -> None:
        """Replace the contents with a snapshot; ValueError if it is not a valid one."""
        entries, pending = data.get("entries"), data.get("pending", {})
        health = data.get("health", {})
        if data.get("version") != 1 or not isinstance(entries, dict):
            raise ValueError("not a version-1 stats snapshot")
        if not isinstance(pending, dict) or not isinstance(health, dict):
            raise ValueError("stats snapshot: 'pending' and 'health' must be objects")
        loaded = {key: _stats_from(name, raw) for name, raw, key in _keyed(entries, self._known)}
        deltas = {
            key: _Delta(*(_number(raw, f, name) for f in ("alpha", "beta", "calls")))
            for name, raw, key in _keyed(pending, self._known)
            if key in loaded
        }
        self.health.load_dict(health, self._models)
        self._entries, self._pending = loaded, deltas


def _keyed(
    raw: dict[str, object], known: Callable[[str], bool]
) -> Iterator[tuple[str, dict[str, object], tuple[str, Task]]]:
    for name, value in raw.items():
        model, suffix = _split(name)
        if not model or suffix not in _TASKS or not isinstance(value, dict):
            raise ValueError(f"stats snapshot: bad entry {name!r}")
        if known(model):
            yield name, value, (model, _TASKS[suffix])


def _number(raw: Mapping[str, object], field: str, name: str) -> float:
    value = raw.get(field)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"stats snapshot: {name!r}.{field} must be a number")
    return float(value)


def _stats_from(name: str, raw: Mapping[str, object]) -> TaskStats:
    try:
        stats = TaskStats(**{f: raw[f] for f in _FIELDS if f in raw})  # type: ignore[arg-type]
    except TypeError as exc:
        raise ValueError(f"stats snapshot: bad entry {name!r}: {exc}") from None
    for f in ("alpha", "beta", "base_alpha", "base_beta"):
        value = _number(raw, f, name) if f in raw else 1.0
        if value < 1.0:
            raise ValueError(f"stats snapshot: {name!r}.{f} must be >= 1")
        setattr(stats, f, value)
    if not isinstance(stats.calls, int) or isinstance(stats.calls, bool) or stats.calls < 0:
        raise ValueError(f"stats snapshot: {name!r}.calls must be a count")
    return stats
