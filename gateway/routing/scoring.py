"""Rank candidate models for one `auto*` request: a Thompson-sampled, mode-weighted loss.

Responsibility: order candidates best first (the order is also the failover order). Pure and
I/O-free; the caller filters candidates (permissions, open circuits, spend limits, `tasks`)
and supplies each one's posterior, reliability, expected latency and estimated cost.

The maths. Candidate i has a task posterior Beta(a_i, b_i), reliability r_i (health.py),
expected latency L_i in ms and estimated cost C_i in USD for this request. Draw
q_i ~ Beta(a_i, b_i) and rank by the loss (lower wins)

    loss_i = K * (q_ref - r_i**3 * q_i) + w_lat * log2(L_i / L_min) + w_cost * log2(C_i / C_min)
    K      = w_q * gain_m(d) / Q_UNIT,        Q_UNIT = 0.06
    gain_auto(d) = 2 ** (6 * (d~ - 0.46)),   d~ ~ Normal(d, 0.1)   gain_fast = 2.5, gain_best = 3

(w_q, w_lat, w_cost) are the mode's weights and gain/slope its quality stance (`MODE_WEIGHTS`,
the one table); q_ref is the best expected quality among the candidates, L_min and C_min the
fastest latency and the lowest cost.

Why this normalisation, not min-max: each term has a unit a user can reason about, and no term
depends on which other models happen to be candidates.
- Quality is the loss in points against the best candidate. Q_UNIT = 0.06: at equal weights, six
  points of success rate weigh as much as one doubling of latency or of cost.
- Latency and cost count doublings (log2 ratios). A 10x price gap is 3.3 doublings whatever the
  prices, so a cheap model's small absolute edge is not blown up to the full range the way
  min-max normalisation does, and `fast` still prefers the cheaper of two cheap models.
- q_ref, L_min and C_min shift every loss by the same amount, so the order of two candidates
  never depends on a third (adding a model, or its circuit opening, does not reshuffle the
  others). The implementation drops them.
What one doubling is worth, in points of quality (auto at the pivot difficulty):
    mode   cost doubling   latency doubling
    auto   2.0             5.3              (x 1/8 at d = 0, x 8 at d = 1)
    fast   8.0             5.6
    best   0.3             0.6
So `best` gives up a point only for about three doublings of cost; `fast` pays a 5x price for a
model that is 20+ points better but not for one that is 5 points better. In `auto`, the quality
weight grows with difficulty: on easy prompts models differ little and the cheap, fast one is
right; on hard ones quality dominates as in `best`. The difficulty is a heuristic guess, so it is
sampled too (d~), as Thompson sampling does with every unknown: near the break-even the traffic
splits smoothly instead of all-or-nothing.

Calibration (tests/unit/routing/routing_sim.py: the demo's strong/mid/cheap/flaky set, 2000
mixed-task requests, every answer rated): `auto` reaches 96% of the strong model's quality at
34% of its cost, `best` 98.5% at 63%, `fast` 90% at 5%. Unrated answers count as provisional
successes (+1.0), which flatten the quality differences: with half the answers rated `auto` is
near 95% at 25% of the cost, with none rated near 93% at 8%.

Reliability r (the share of attempts without an upstream fault, pooled over the model's tasks)
enters cubed (FAULT_EXPONENT): 5% faults cost 14% of the quality weight, 20% cost half. A fault
hurts far more than its missing answer: the client waits through a failover, the breaker
churns, a stream may need a continuation. The faults also count once in the task posterior
(their signal deltas); health.py says why the second count is deliberate. Calibration: a
20%-fault model falls below 5% of traffic within 200 requests of starting to fail, even after
it had taken a quarter of the traffic while healthy.

Latencies below LATENCY_FLOOR_MS and costs below COST_FLOOR_USD count as the floor: nobody feels
20 ms against 40 ms, and a tenth of a micro-dollar is no saving worth quality. An unknown latency
or cost takes the mean log of the known ones (neutral on that term); with none known the term
drops out.

Cost. Drawing from the Beta is the one expensive step: `random.Random.betavariate` takes two
gamma draws, 2-4 us in CPython 3.11, which made 50 candidates cost 0.2 ms. A posterior with at
least NORMAL_MIN pseudo-counts on both sides (every model after a few dozen calls, or seeded by
a benchmark) is drawn from the normal with the Beta's mean and variance instead, and the normal
deviate is the centred sum of four uniforms (Irwin-Hall, scaled to unit variance: 0.35 us).
That is the Gaussian approximation of Thompson sampling; its tails end at 3.5 sd, far past
where a draw could still reorder two candidates. Fresh and nearly fresh posteriors, where the
Beta's shape matters, keep the exact draw. The rest is two log2 and a few multiplications per
candidate in one pass, then one sort: about 60 us for 50 candidates here. Measure with:
    python -m timeit -s "import random; from gateway.config.models import Mode;
      from gateway.routing.scoring import ScoreInput, rank; r = random.Random(1);
      c = [ScoreInput(f'm{i}', 20.0 + i, 5.0 + i % 7, 300.0 + 40 * i, 1e-4 * (1 + i))
           for i in range(50)]" "rank(c, Mode.AUTO, 0.5, r)"
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from types import MappingProxyType
from typing import NamedTuple

from gateway.config.models import Mode
from gateway.routing.stats import TaskStats

Q_UNIT = 0.06
DIFFICULTY_PIVOT = 0.46
DIFFICULTY_SD = 0.1
LATENCY_FLOOR_MS = 50.0
COST_FLOOR_USD = 1e-7
FAULT_EXPONENT = 3
NORMAL_MIN = 10.0  # pseudo-counts on each side from which the normal approximation is used
_IRWIN_HALL_SCALE = math.sqrt(3.0)  # sum of 4 uniforms has variance 4/12; this makes it 1


class ModeWeights(NamedTuple):
    quality: float
    latency: float
    cost: float
    gain: float  # quality's multiplier (at the pivot difficulty, when slope > 0)
    slope: float  # doublings of that multiplier per unit of difficulty; 0 = ignore difficulty


MODE_WEIGHTS: Mapping[Mode, ModeWeights] = MappingProxyType(
    {
        Mode.AUTO: ModeWeights(0.45, 0.40, 0.15, gain=1.0, slope=6.0),
        Mode.FAST: ModeWeights(0.15, 0.35, 0.50, gain=2.5, slope=0.0),
        Mode.BEST: ModeWeights(0.70, 0.20, 0.10, gain=3.0, slope=0.0),
    }
)


class ScoreInput(NamedTuple):
    """One candidate. A NamedTuple: the caller builds one per candidate per request."""

    model_id: str
    alpha: float
    beta: float
    latency_ms: float | None  # expected: learned EMA, else benchmark prior, else None
    cost_usd: float | None  # estimated cost of this request on this model
    reliability: float = 1.0  # expected share of attempts without an upstream fault

    @classmethod
    def from_stats(
        cls,
        model_id: str,
        stats: TaskStats | None,
        cost_usd: float | None,
        reliability: float = 1.0,
    ) -> ScoreInput:
        """From a book entry; a missing one is the neutral Beta(1, 1) with unknown latency."""
        if stats is None:
            return cls(model_id, 1.0, 1.0, None, cost_usd, reliability)
        return cls(model_id, stats.alpha, stats.beta, stats.latency_ms_ema, cost_usd, reliability)


def quality_gain(mode: Mode, difficulty: float) -> float:
    """How much more than its bare weight quality counts in `mode` at this difficulty."""
    w = MODE_WEIGHTS[mode]
    if not w.slope:
        return w.gain
    d = 0.0 if difficulty < 0.0 else 1.0 if difficulty > 1.0 else difficulty
    return w.gain * 2.0 ** (w.slope * (d - DIFFICULTY_PIVOT))


def scores(
    candidates: Sequence[ScoreInput], mode: Mode, difficulty: float, rng: random.Random
) -> list[float]:
    """The sampled loss of each candidate, in input order, up to a shared constant."""
    w = MODE_WEIGHTS[mode]
    if w.slope:
        difficulty = rng.gauss(difficulty, DIFFICULTY_SD)
    k = w.quality * quality_gain(mode, difficulty) / Q_UNIT
    w_lat, w_cost = w.latency, w.cost
    lat_floor, cost_floor, fault_exp = LATENCY_FLOOR_MS, COST_FLOOR_USD, FAULT_EXPONENT
    log2, beta, uniform, sqrt = math.log2, rng.betavariate, rng.random, math.sqrt
    normal_min, ih_scale = NORMAL_MIN, _IRWIN_HALL_SCALE
    loss: list[float] = []
    lat_sum = cost_sum = 0.0
    lat_missing = cost_missing = 0
    for _, a, b, lat, cost, rel in candidates:
        if a < normal_min or b < normal_min:
            q = beta(a, b)
        else:
            n = a + b
            z = (uniform() + uniform() + uniform() + uniform() - 2.0) * ih_scale
            q = a / n + sqrt(a * b / (n * n * (n + 1.0))) * z
        x = -k * rel**fault_exp * q
        if lat is None:
            lat_missing += 1
        else:
            v = log2(lat if lat > lat_floor else lat_floor)
            lat_sum += v
            x += w_lat * v
        if cost is None:
            cost_missing += 1
        else:
            v = log2(cost if cost > cost_floor else cost_floor)
            cost_sum += v
            x += w_cost * v
        loss.append(x)
    if lat_missing or cost_missing:
        n = len(candidates)
        lat_fill = w_lat * lat_sum / (n - lat_missing) if n > lat_missing else 0.0
        cost_fill = w_cost * cost_sum / (n - cost_missing) if n > cost_missing else 0.0
        for i, c in enumerate(candidates):
            if c.latency_ms is None:
                loss[i] += lat_fill
            if c.cost_usd is None:
                loss[i] += cost_fill
    return loss


def rank(
    candidates: Sequence[ScoreInput], mode: Mode, difficulty: float, rng: random.Random
) -> list[str]:
    """Model ids, best first; the list is also the failover order."""
    if len(candidates) <= 1:
        return [c.model_id for c in candidates]
    loss = scores(candidates, mode, difficulty, rng)
    order = sorted(range(len(candidates)), key=loss.__getitem__)
    return [candidates[i].model_id for i in order]
