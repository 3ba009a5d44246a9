"""Script steps and the per-request fault decision (gateway.sim.faults)."""

from __future__ import annotations

import random

import pytest

from gateway.sim.faults import decide, step_from_mapping
from gateway.sim.options import Faults, SimModel

MODEL = SimModel(name="m", ttft_ms=40, token_delay_ms=5)


def test_healthy_decision_uses_the_model_latency() -> None:
    d = decide(Faults(), MODEL, None, random.Random(0))
    assert d.error_status is None and d.die_after_tokens is None and not d.malformed
    assert (d.ttft_s, d.token_delay_s, d.headers_delay_s) == (0.04, 0.005, 0.0)
    assert decide(Faults(ttft_ms=100), MODEL, None, random.Random(0)).ttft_s == 0.1


def test_rates_follow_the_seed() -> None:
    faults = Faults(error_rate=0.3, rate_limit_rate=0.3, retry_after=2)
    runs = [
        [decide(faults, MODEL, None, rng).error_status for _ in range(200)]
        for rng in (random.Random(5), random.Random(5))
    ]
    assert runs[0] == runs[1]
    assert 30 < runs[0].count(500) < 90 and 20 < runs[0].count(429) < 70


def test_die_rate_defaults_to_always() -> None:
    rng = random.Random(1)
    assert all(
        decide(Faults(die_after_tokens=3), MODEL, None, rng).die_after_tokens == 3
        for _ in range(20)
    )
    never = Faults(die_after_tokens=3, die_rate=0.0)
    assert decide(never, MODEL, None, rng).die_after_tokens is None


def test_step_is_exact() -> None:
    rng = random.Random(0)
    step = step_from_mapping({"status": 429, "retry_after": 1.5, "code": "slow_down"})
    d = decide(Faults(), MODEL, step, rng)
    assert (d.error_status, d.retry_after, d.error_code) == (429, 1.5, "slow_down")
    # Rates are ignored for a scripted request, certain faults still apply.
    quiet = step_from_mapping({"error_rate": 1.0, "no_done": True})
    assert decide(Faults(error_rate=0.5), MODEL, quiet, rng).error_status is None
    assert decide(Faults(error_rate=1.0), MODEL, quiet, rng).error_status == 500
    assert decide(Faults(), MODEL, quiet, rng).no_done
    flaky = Faults(die_after_tokens=2, die_rate=0.5)
    assert decide(flaky, MODEL, quiet, rng).die_after_tokens is None
    die = step_from_mapping({"die_after_tokens": 3, "malformed": True})
    d = decide(flaky, MODEL, die, rng)
    assert d.die_after_tokens == 3 and d.malformed


def test_step_validation() -> None:
    with pytest.raises(ValueError, match="unknown"):
        step_from_mapping({"stauts": 500})
    with pytest.raises(ValueError, match="status"):
        step_from_mapping({"status": "500"})
    assert step_from_mapping({"status": 200}).status is None
    assert step_from_mapping({"headers_delay_ms": 5000}).faults.headers_delay_ms == 5000
