"""A pure, in-process routing simulation: the router learns from Bernoulli outcomes.

No HTTP, no clock: each request draws a task (uniform over generate, code, reasoning,
classify) and a prompt length, the real `rank` orders the candidates, attempts fail with the
model's error rate (failover to the next, at most `max_attempts`), and a served answer is good
with the model's per-task quality. The client rates a served answer with probability
`feedback_rate` (score 1.0 good, 0.0 bad), which replaces the provisional success.
Quality is accounted as the served model's true expected quality (0 if nothing served), so
the numbers are not blurred by the Bernoulli draw; cost assumes 200 prompt and 300 output
tokens, and failed attempts cost nothing.

Run it directly for a table: `python -m tests.unit.routing.routing_sim`.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from gateway.config.models import Mode, ModelConfig, Task
from gateway.routing.priors import ModelPrior, apply_priors, parse_priors
from gateway.routing.scoring import ScoreInput, rank
from gateway.routing.stats import QualitySignal, StatsBook
from gateway.routing.tasks import difficulty_for

PROMPT_TOKENS = 200
OUTPUT_TOKENS = 300
SIM_TASKS = (Task.GENERATE, Task.CODE, Task.REASONING, Task.CLASSIFY)


@dataclass(frozen=True)
class SimModel:
    id: str
    input_per_mtok: float
    output_per_mtok: float
    quality: Mapping[Task, float]
    latency_ms: float
    error_rate: float = 0.0

    @property
    def cost(self) -> float:
        return (PROMPT_TOKENS * self.input_per_mtok + OUTPUT_TOKENS * self.output_per_mtok) / 1e6


def _flat(q: float) -> dict[Task, float]:
    return {t: q for t in SIM_TASKS}


def typical_models(strong_latency_ms: float = 2520.0) -> list[SimModel]:
    """The demo set (gateway/sim/demo.py): latency = ttft + 300 tokens x token delay."""
    return [
        SimModel("sim-strong", 5.0, 15.0, _flat(0.92), strong_latency_ms),
        SimModel("sim-mid", 0.5, 1.5, _flat(0.80), 1260.0),
        SimModel(
            "sim-cheap",
            0.1,
            0.3,
            {Task.CLASSIFY: 0.9, Task.GENERATE: 0.9, Task.CODE: 0.45, Task.REASONING: 0.45},
            620.0,
        ),
        SimModel("sim-flaky", 0.3, 0.9, _flat(0.80), 940.0, error_rate=0.2),
    ]


def benchmark_priors(models: Sequence[SimModel]) -> dict[str, ModelPrior]:
    """What a benchmark run would report: true quality, no sign of flakiness."""
    return parse_priors(
        [
            {
                "model_id": m.id,
                "overall_score": sum(m.quality.values()) / len(m.quality),
                "avg_latency_ms": m.latency_ms,
                "cases": [
                    {"category": t.value, "score": q, "latency_ms": m.latency_ms}
                    for t, q in m.quality.items()
                ],
            }
            for m in models
        ]
    )


@dataclass
class SimResult:
    served: list[str | None] = field(default_factory=list)  # model that answered, per request
    quality: list[float] = field(default_factory=list)
    cost: list[float] = field(default_factory=list)

    def mean_quality(self, start: int = 0) -> float:
        q = self.quality[start:]
        return sum(q) / len(q)

    def mean_cost(self, start: int = 0) -> float:
        c = self.cost[start:]
        return sum(c) / len(c)

    def share(self, model_id: str, start: int, stop: int) -> float:
        window = self.served[start:stop]
        return sum(1 for m in window if m == model_id) / len(window)


def simulate(
    models: Sequence[SimModel],
    mode: Mode,
    requests: int = 2000,
    seed: int = 7,
    feedback_rate: float = 1.0,
    prior_weight: float = 20.0,
    max_attempts: int = 3,
    error_rate_at: Callable[[SimModel, int], float] | None = None,
    prompt_chars: tuple[int, int] = (40, 1200),
) -> SimResult:
    rng = random.Random(seed)
    world = random.Random(seed + 1)  # outcomes draw from their own stream
    book = StatsBook(models=[m.id for m in models])
    configs = [ModelConfig(id=m.id, backend="sim") for m in models]
    apply_priors(book, benchmark_priors(models), configs, prior_weight)
    by_id = {m.id: m for m in models}
    result = SimResult()
    for n in range(requests):
        task = SIM_TASKS[world.randrange(len(SIM_TASKS))]
        chars = int(math.exp(world.uniform(math.log(prompt_chars[0]), math.log(prompt_chars[1]))))
        difficulty = difficulty_for(task, chars)
        candidates = [
            ScoreInput.from_stats(m.id, book.get(m.id, task), m.cost, book.reliability(m.id))
            for m in models
        ]
        served: SimModel | None = None
        cost = 0.0
        for model_id in rank(candidates, mode, difficulty, rng)[:max_attempts]:
            m = by_id[model_id]
            errors = m.error_rate if error_rate_at is None else error_rate_at(m, n)
            if world.random() < errors:
                book.record(m.id, task, QualitySignal.SERVER_ERROR, latency_ms=50.0)
                continue
            latency = m.latency_ms * world.uniform(0.8, 1.2)
            book.record(
                m.id,
                task,
                QualitySignal.SUCCESS,
                latency_ms=latency,
                output_tokens=OUTPUT_TOKENS,
            )
            if world.random() < feedback_rate:
                good = world.random() < m.quality[task]
                book.feedback(m.id, task, 1.0 if good else 0.0, replaces_success=True)
            served, cost = m, m.cost
            break
        result.served.append(served.id if served else None)
        result.quality.append(served.quality[task] if served else 0.0)
        result.cost.append(cost)
    return result


def baseline(models: Sequence[SimModel], model_id: str) -> tuple[float, float]:
    """(mean quality, cost) of sending every request to one model, over the sim's task mix."""
    m = next(m for m in models if m.id == model_id)
    return sum(m.quality[t] for t in SIM_TASKS) / len(SIM_TASKS), m.cost


def report(models: Sequence[SimModel], seed: int = 7, feedback_rate: float = 1.0) -> str:
    q_strong, c_strong = baseline(models, "sim-strong")
    lines = [f"strong alone: quality {q_strong:.3f}, cost ${c_strong:.6f}"]
    for mode in Mode:
        r = simulate(models, mode, seed=seed, feedback_rate=feedback_rate)
        shares = {m.id: r.share(m.id, 0, len(r.served)) for m in models}
        lines.append(
            f"{mode.value:>4}: quality {r.mean_quality() / q_strong:6.1%} of strong, "
            f"cost {r.mean_cost() / c_strong:6.1%}; shares "
            + ", ".join(f"{k[4:]} {v:.0%}" for k, v in shares.items())
        )
    return "\n".join(lines)


if __name__ == "__main__":
    for latency in (1800.0, 2520.0, 3500.0):
        for rate in (1.0, 0.5):
            print(f"-- strong latency {latency:.0f} ms, feedback rate {rate}")
            print(report(typical_models(latency), feedback_rate=rate))
