"""Benchmark priors: read the contract's results file and seed the statistics book with it.

File format (one result object, or a list of them):
    {"model_id": str, "overall_score": 0..1, "avg_latency_ms": num?,
     "cases": [{"category": str, "score": 0..1, "latency_ms": num?}]}
Categories map to tasks case-insensitively (`CATEGORY_TASKS`); unknown categories are ignored,
so a newer benchmark with extra categories still loads. Several cases of one task are averaged;
a task with no case gets `overall_score` (and `avg_latency_ms`). `overall_score` may be left out
when cases exist; it is then their mean.

Invariants: a missing file is no priors ({}), the caller logs it; anything else wrong raises
ConfigError naming the file, `routing.priors_file` and the problem. Loading does no seeding;
`apply_priors` seeds configured models only, and the book refuses to seed a model that already
has observed calls, so learned statistics always win over a benchmark.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import orjson

from gateway.config.errors import ConfigError
from gateway.config.models import ModelConfig, Task
from gateway.routing.stats import StatsBook

CONFIG_KEY = "routing.priors_file"

CATEGORY_TASKS: Mapping[str, Task] = MappingProxyType(
    {
        "basic": Task.GENERATE,
        "generate": Task.GENERATE,
        "tool_use": Task.GENERATE,
        "vision": Task.GENERATE,
        "code": Task.CODE,
        "coding": Task.CODE,
        "reasoning": Task.REASONING,
        "analysis": Task.REASONING,
        "classify": Task.CLASSIFY,
        "classification": Task.CLASSIFY,
        "embed": Task.EMBED,
        "embedding": Task.EMBED,
    }
)


@dataclass(frozen=True, slots=True)
class ModelPrior:
    model_id: str
    overall: float
    avg_latency_ms: float | None
    task_quality: Mapping[Task, float]  # every Task; overall where no case measured it
    task_latency_ms: Mapping[Task, float | None]
    measured: frozenset[Task]  # tasks that had at least one case

    def quality(self, task: Task) -> float:
        return self.task_quality[task]

    def latency_ms(self, task: Task) -> float | None:
        return self.task_latency_ms[task]


class _Bad(Exception):
    """A problem in the file's content; turned into ConfigError at the one boundary below."""


def _number(value: object, where: str, *, unit: bool) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Bad(f"{where} must be a number, got {type(value).__name__}")
    number = float(value)
    if unit and not 0.0 <= number <= 1.0:
        raise _Bad(f"{where} must be within 0..1, got {number:g}")
    if not unit and not 0.0 <= number < float("inf"):
        raise _Bad(f"{where} must be a non-negative number, got {number:g}")
    return number


def _mean(values: list[float]) -> float:
    return sum(values) / len(values)


def _parse_result(raw: object, where: str) -> ModelPrior:
    if not isinstance(raw, dict):
        raise _Bad(f"{where} must be an object")
    model_id = raw.get("model_id")
    if not isinstance(model_id, str) or not model_id:
        raise _Bad(f"{where}.model_id is missing or not a string")
    cases = raw.get("cases", [])
    if not isinstance(cases, list):
        raise _Bad(f"{where}.cases must be a list")
    scores: dict[Task, list[float]] = {}
    latencies: dict[Task, list[float]] = {}
    all_scores: list[float] = []
    for i, case in enumerate(cases):
        at = f"{where}.cases[{i}]"
        if not isinstance(case, dict):
            raise _Bad(f"{at} must be an object")
        category = case.get("category")
        if not isinstance(category, str):
            raise _Bad(f"{at}.category is missing or not a string")
        score = _number(case.get("score"), f"{at}.score", unit=True)
        latency = case.get("latency_ms")
        latency_ms = None if latency is None else _number(latency, f"{at}.latency_ms", unit=False)
        all_scores.append(score)
        task = CATEGORY_TASKS.get(category.strip().lower())
        if task is None:
            continue
        scores.setdefault(task, []).append(score)
        if latency_ms is not None:
            latencies.setdefault(task, []).append(latency_ms)
    if "overall_score" in raw:
        overall = _number(raw["overall_score"], f"{where}.overall_score", unit=True)
    elif all_scores:
        overall = _mean(all_scores)
    else:
        raise _Bad(f"{where}.overall_score is missing and there are no cases")
    avg = raw.get("avg_latency_ms")
    avg_latency = None if avg is None else _number(avg, f"{where}.avg_latency_ms", unit=False)
    return ModelPrior(
        model_id=model_id,
        overall=overall,
        avg_latency_ms=avg_latency,
        task_quality=MappingProxyType(
            {t: _mean(scores[t]) if t in scores else overall for t in Task}
        ),
        task_latency_ms=MappingProxyType(
            {t: _mean(latencies[t]) if t in latencies else avg_latency for t in Task}
        ),
        measured=frozenset(scores),
    )


def parse_priors(data: object) -> dict[str, ModelPrior]:
    """Priors from already-decoded JSON; raises ValueError with the problem."""
    results = data if isinstance(data, list) else [data]
    out: dict[str, ModelPrior] = {}
    for i, raw in enumerate(results):
        where = f"[{i}]" if isinstance(data, list) else "result"
        try:
            prior = _parse_result(raw, where)
        except _Bad as exc:
            raise ValueError(str(exc)) from None
        if prior.model_id in out:
            raise ValueError(f"{where}: duplicate model_id {prior.model_id!r}")
        out[prior.model_id] = prior
    return out


def load_priors(path: Path | None) -> dict[str, ModelPrior]:
    """The priors in `path`; {} when no file is configured or it does not exist."""
    if path is None:
        return {}
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return {}
    except OSError as exc:
        raise ConfigError(path, CONFIG_KEY, f"cannot read: {exc.strerror or exc}") from None
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ConfigError(path, CONFIG_KEY, f"not valid JSON: {exc}") from None
    try:
        return parse_priors(data)
    except ValueError as exc:
        raise ConfigError(path, CONFIG_KEY, str(exc)) from None


def apply_priors(
    book: StatsBook,
    priors: Mapping[str, ModelPrior],
    models: Iterable[ModelConfig],
    weight: float,
) -> list[str]:
    """Seed each configured model that has a prior, for its configured tasks plus any task the
    benchmark measured (explicit requests may send it those). Returns the seeded model ids;
    a model with observed calls is left alone by the book."""
    seeded: list[str] = []
    for model in models:
        prior = priors.get(model.id)
        if prior is None:
            continue
        tasks = [t for t in Task if t in model.tasks or t in prior.measured]
        done = [
            book.seed(model.id, t, prior.quality(t), prior.latency_ms(t), weight) for t in tasks
        ]
        if any(done):
            seeded.append(model.id)
    return seeded
