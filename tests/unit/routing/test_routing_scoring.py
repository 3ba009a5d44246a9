"""Scoring: properties of `rank`, and the in-process simulation the mode targets come from."""

from __future__ import annotations

import random
import statistics

import pytest

from gateway.config.models import Mode
from gateway.routing.scoring import MODE_WEIGHTS, ScoreInput, quality_gain, rank, scores
from tests.unit.routing.routing_sim import SimModel, baseline, simulate, typical_models

TIGHT = 20_000.0  # pseudo-counts that make a posterior nearly a point


def sure(model_id: str, quality: float, latency_ms: float | None, cost: float | None) -> ScoreInput:
    """A candidate whose quality is known almost exactly, so rankings are deterministic."""
    return ScoreInput(model_id, quality * TIGHT, (1 - quality) * TIGHT, latency_ms, cost)


STRONG = sure("strong", 0.92, 2500.0, 5.5e-3)
MID = sure("mid", 0.80, 1260.0, 5.5e-4)
CHEAP_CODER = sure("cheap", 0.45, 620.0, 1.1e-4)  # the cheap model on code


def top(candidates: list[ScoreInput], mode: Mode, difficulty: float = 0.5) -> str:
    return rank(candidates, mode, difficulty, random.Random(1))[0]


def test_weights_table_is_the_contract() -> None:
    assert [w[:3] for w in MODE_WEIGHTS.values()] == [
        (0.45, 0.40, 0.15),
        (0.15, 0.35, 0.50),
        (0.70, 0.20, 0.10),
    ]


def test_rank_is_a_permutation_and_reproducible() -> None:
    candidates = [STRONG, MID, CHEAP_CODER, ScoreInput("new", 1.0, 1.0, None, None)]
    first = rank(candidates, Mode.AUTO, 0.5, random.Random(3))
    assert sorted(first) == sorted(c.model_id for c in candidates)
    assert rank(candidates, Mode.AUTO, 0.5, random.Random(3)) == first
    assert rank([], Mode.AUTO, 0.5, random.Random(3)) == []
    assert rank([MID], Mode.BEST, 0.5, random.Random(3)) == ["mid"]


def test_the_cheapest_fastest_model_does_not_win_whatever_its_quality() -> None:
    # The literal reading (min-max terms) hands this to the cheap model; it is 35 points worse.
    for difficulty in (0.2, 0.5, 0.9):
        for mode in Mode:
            assert top([STRONG, MID, CHEAP_CODER], mode, difficulty) != "cheap"
    assert top([STRONG, MID, CHEAP_CODER], Mode.FAST) == "mid"
    assert top([STRONG, MID, CHEAP_CODER], Mode.BEST) == "strong"


def test_a_close_cheap_model_wins_auto_and_fast_but_not_a_hard_best() -> None:
    cheap_writer = sure("cheap", 0.90, 620.0, 1.1e-4)  # two points below strong
    assert top([STRONG, MID, cheap_writer], Mode.AUTO) == "cheap"
    assert top([STRONG, MID, cheap_writer], Mode.FAST) == "cheap"
    slightly_worse = sure("cheap", 0.86, 620.0, 1.1e-4)
    assert top([STRONG, slightly_worse], Mode.BEST) == "strong"


def test_auto_quality_weight_grows_with_difficulty() -> None:
    gains = [quality_gain(Mode.AUTO, d / 10) for d in range(11)]
    assert gains == sorted(gains) and gains[-1] > 30 * gains[0]
    assert quality_gain(Mode.BEST, 0.0) == quality_gain(Mode.BEST, 1.0)
    picks = [top([STRONG, MID], Mode.AUTO, d) for d in (0.1, 0.95)]
    assert picks == ["mid", "strong"]


def test_order_of_two_does_not_depend_on_a_third() -> None:
    a, b = sure("a", 0.85, 900.0, 1e-3), sure("b", 0.82, 700.0, 6e-4)
    outliers = [sure("luxury", 0.95, 20_000.0, 0.5), sure("free", 0.3, 60.0, 0.0)]
    for mode in Mode:
        alone = rank([a, b], mode, 0.5, random.Random(5))
        crowded = rank([a, b, *outliers], mode, 0.5, random.Random(5))
        assert [m for m in crowded if m in ("a", "b")] == alone


def test_unknown_latency_and_cost_are_neutral() -> None:
    known = [sure("x", 0.8, 400.0, 1e-4), sure("y", 0.8, 1600.0, 4e-4)]
    unknown = sure("u", 0.8, None, None)
    loss = scores([*known, unknown], Mode.AUTO, 0.5, random.Random(2))
    # Unknown terms take the mean log of the known ones: here exactly between x and y.
    assert loss[0] < loss[2] < loss[1]
    assert loss[2] == pytest.approx((loss[0] + loss[1]) / 2, abs=0.05)
    all_unknown = [sure("p", 0.9, None, None), sure("q", 0.7, None, None)]
    assert rank(all_unknown, Mode.FAST, 0.5, random.Random(2)) == ["p", "q"]


def test_free_and_instant_models_count_as_the_floor() -> None:
    # Posteriors that are points, so the draw cannot blur the comparison of the other terms.
    point = 1e9
    candidates = [
        ScoreInput("z", 0.8 * point, 0.2 * point, 0.0, 0.0),
        ScoreInput("f", 0.8 * point, 0.2 * point, 1.0, 1e-9),
    ]
    loss = scores(candidates, Mode.FAST, 0.5, random.Random(2))
    assert loss[0] == pytest.approx(loss[1], abs=0.01)


def test_unreliable_model_loses_its_place() -> None:
    flaky = sure("flaky", 0.80, 940.0, 3.3e-4)._replace(reliability=0.8)
    assert top([MID, flaky], Mode.AUTO) == "mid"
    assert top([MID, flaky._replace(reliability=1.0)], Mode.AUTO) == "flaky"


def test_thompson_sampling_explores_an_unknown_model() -> None:
    rng = random.Random(11)
    fresh = ScoreInput("fresh", 1.0, 1.0, 900.0, 5e-4)
    picks = [rank([MID, fresh], Mode.AUTO, 0.5, rng)[0] for _ in range(400)]
    assert 0.02 < picks.count("fresh") / len(picks) < 0.5


# -- the simulation ----------------------------------------------------------------------

SEEDS = (7, 8, 9)


def _mode_results(models: list[SimModel], mode: Mode) -> tuple[float, float]:
    """Mean (quality, cost) relative to sending everything to the strong model."""
    q_strong, c_strong = baseline(models, "sim-strong")
    runs = [simulate(models, mode, requests=2000, seed=seed) for seed in SEEDS]
    quality = statistics.mean(r.mean_quality() for r in runs) / q_strong
    cost = statistics.mean(r.mean_cost() for r in runs) / c_strong
    return quality, cost


def test_modes_reach_their_targets_in_simulation() -> None:
    models = typical_models()
    auto_q, auto_c = _mode_results(models, Mode.AUTO)
    best_q, best_c = _mode_results(models, Mode.BEST)
    fast_q, fast_c = _mode_results(models, Mode.FAST)
    assert auto_q >= 0.95 and auto_c <= 0.40, (auto_q, auto_c)
    assert best_q >= 0.97, best_q
    assert fast_c < 0.5 * auto_c and fast_c < best_c, (fast_c, auto_c, best_c)
    assert fast_q > 0.8, fast_q  # cheap, but not the 0.45 model on code


def test_flaky_model_drops_below_five_percent_within_200_requests() -> None:
    models = typical_models()
    shares = [
        simulate(models, Mode.AUTO, requests=800, seed=seed).share("sim-flaky", 200, 800)
        for seed in SEEDS
    ]
    assert statistics.mean(shares) < 0.05, shares


def test_model_that_starts_failing_loses_its_traffic() -> None:
    """Healthy for 400 requests (cheaper than mid at the same quality, so it gets plenty),
    then 20% errors: 200 requests later it serves under 5%."""
    models = typical_models()

    def errors(model: SimModel, n: int) -> float:
        return model.error_rate if n >= 400 else 0.0

    runs = [
        simulate(models, Mode.AUTO, requests=1000, seed=seed, error_rate_at=errors)
        for seed in SEEDS
    ]
    before = statistics.mean(r.share("sim-flaky", 200, 400) for r in runs)
    after = statistics.mean(r.share("sim-flaky", 600, 1000) for r in runs)
    assert before > 0.1, before
    assert after < 0.05, after
