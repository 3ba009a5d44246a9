"""The demo's simulated model set: the one place its speeds, prices and qualities live.

The routing benchmark and the demo config read these values from `demo_models()` rather than
repeating them. The models are chosen so the router has real trade-offs to make: a strong but
slow and expensive model, a middle one, a cheap fast one that is poor at code and reasoning,
and a flaky one that fails often enough to exercise failover and the circuit breaker.
"""

from __future__ import annotations

from gateway.sim.options import TASKS, Faults, SimModel, SimOptions


def _uniform(quality: float) -> dict[str, float]:
    return {task: quality for task in TASKS}


def demo_models() -> tuple[SimModel, ...]:
    return (
        SimModel(
            name="sim-strong",
            quality=_uniform(0.92),
            input_per_mtok=5.0,
            output_per_mtok=15.0,
            ttft_ms=120.0,
            token_delay_ms=8.0,
            context_window=128_000,
        ),
        SimModel(
            name="sim-mid",
            quality=_uniform(0.8),
            input_per_mtok=0.5,
            output_per_mtok=1.5,
            ttft_ms=60.0,
            token_delay_ms=4.0,
            context_window=128_000,
        ),
        SimModel(
            name="sim-cheap",
            quality={
                "generate": 0.9,
                "classify": 0.9,
                "code": 0.45,
                "reasoning": 0.45,
                "embed": 0.8,
            },
            input_per_mtok=0.1,
            output_per_mtok=0.3,
            ttft_ms=20.0,
            token_delay_ms=2.0,
            # Smaller than the others so context_length_exceeded failover can be shown.
            context_window=16_000,
        ),
        SimModel(
            name="sim-flaky",
            quality=_uniform(0.8),
            input_per_mtok=0.3,
            output_per_mtok=0.9,
            ttft_ms=40.0,
            token_delay_ms=3.0,
            faults=Faults(error_rate=0.2, die_after_tokens=8, die_rate=0.2),
            context_window=128_000,
        ),
    )


def demo_sim_options(seed: int = 0) -> SimOptions:
    """Simulator options serving exactly the demo models (unknown names answer 404)."""
    return SimOptions(models=demo_models(), strict_models=True, seed=seed)
