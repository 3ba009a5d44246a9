"""What happens to one request: script steps and the per-request fault decision (pure).

`decide` turns the effective faults (global + model, see `merge_faults`), the model's base
latency and an optional script step into a `Decision`: a frozen record that the response code
follows without further thought. All randomness comes from the injected `random.Random`, and
`decide` draws the same number of values for every request, so one seed gives one sequence of
outcomes whatever the configuration.

A script step makes its request deterministic: its own rate fields are ignored, and of the
random faults only the certain ones (rate 1, or die_after_tokens with no die_rate) still apply.
The other settings (latency, no_done, ...) apply unless the step sets them itself.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.sim.options import RATE_FIELDS, Faults, SimModel, faults_from_mapping

_STEP_KEYS = frozenset({"status", "code", "message", "type", "param", "malformed"})


@dataclass(frozen=True)
class Step:
    """One scripted request: an error status, or faults applied to that request only."""

    status: int | None = None
    code: str | None = None
    message: str | None = None
    type: str | None = None
    param: str | None = None
    malformed: bool = False
    faults: Faults = Faults()


def step_from_mapping(data: Mapping[str, Any], *, where: str = "step") -> Step:
    """A Step from a `/_sim/script` entry; unknown keys raise ValueError."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object")
    status = data.get("status")
    if status is not None and (isinstance(status, bool) or not isinstance(status, int)):
        raise ValueError(f"{where}.status: expected an integer")
    if status is not None and not 100 <= status <= 599:
        raise ValueError(f"{where}.status: expected an HTTP status, got {status}")
    texts = {}
    for key in ("code", "message", "type", "param"):
        value = data.get(key)
        if value is not None and not isinstance(value, str):
            raise ValueError(f"{where}.{key}: expected a string")
        texts[key] = value
    malformed = data.get("malformed", False)
    if not isinstance(malformed, bool):
        raise ValueError(f"{where}.malformed: expected true or false")
    # Rates make no sense for a single request; they are accepted and ignored.
    fault_fields = {k: v for k, v in data.items() if k not in _STEP_KEYS and k not in RATE_FIELDS}
    faults = faults_from_mapping(fault_fields, where=where)
    # A status below 400 is not an error: the step then only carries faults.
    error_status = status if status is not None and status >= 400 else None
    return Step(status=error_status, malformed=malformed, faults=faults, **texts)


@dataclass(frozen=True)
class Decision:
    """Everything the response code needs to know about one request's faults."""

    error_status: int | None = None  # answer with this OpenAI-shaped error instead
    error_code: str | None = None
    error_message: str | None = None
    error_type: str | None = None
    error_param: str | None = None
    retry_after: float | None = None
    headers_delay_s: float = 0.0
    ttft_s: float = 0.0
    token_delay_s: float = 0.0
    die_after_tokens: int | None = None
    error_event_after_tokens: int | None = None
    stall_after_tokens: int | None = None
    malformed: bool = False
    no_done: bool = False
    echo_prefix: bool = False
    reject_prefill: bool = False


def _overlay(base: Faults, step: Faults) -> Faults:
    """The step's explicitly set fields over `base` (booleans only switch on)."""
    changes = {}
    for f in dataclasses.fields(Faults):
        value = getattr(step, f.name)
        if f.name in RATE_FIELDS:
            continue
        if isinstance(value, bool):
            if value:
                changes[f.name] = True
        elif value is not None:
            changes[f.name] = value
    return dataclasses.replace(base, **changes)


def _ms(value: float | None, default: float) -> float:
    return (value if value is not None else default) / 1000.0


def decide(faults: Faults, model: SimModel, step: Step | None, rng: random.Random) -> Decision:
    """The fault decision for one request (see the module docstring for the rules)."""
    # Always four draws, in this order, so the outcome sequence depends only on the seed.
    draw_error, draw_limit, draw_die, draw_malformed = (rng.random() for _ in range(4))

    def happens(rate: float, draw: float) -> bool:
        # Under a step only certain faults (rate 1) apply: the scripted request is exact.
        return rate >= 1.0 if step is not None else draw < rate

    if step is not None:
        faults = _overlay(faults, step.faults)
    status: int | None = None
    if step is not None and step.status is not None:
        status = step.status
    elif happens(faults.error_rate, draw_error):
        status = 500
    elif happens(faults.rate_limit_rate, draw_limit):
        status = 429
    die_after = faults.die_after_tokens
    scripted_die = step is not None and step.faults.die_after_tokens is not None
    die_rate = 1.0 if faults.die_rate is None else faults.die_rate
    if die_after is not None and not scripted_die and not happens(die_rate, draw_die):
        die_after = None
    malformed = (step is not None and step.malformed) or happens(
        faults.malformed_rate, draw_malformed
    )
    return Decision(
        error_status=status,
        error_code=step.code if step is not None else None,
        error_message=step.message if step is not None else None,
        error_type=step.type if step is not None else None,
        error_param=step.param if step is not None else None,
        retry_after=faults.retry_after,
        headers_delay_s=_ms(faults.headers_delay_ms, 0.0),
        ttft_s=_ms(faults.ttft_ms, model.ttft_ms),
        token_delay_s=_ms(faults.token_delay_ms, model.token_delay_ms),
        die_after_tokens=die_after,
        error_event_after_tokens=faults.error_event_after_tokens,
        stall_after_tokens=faults.stall_after_tokens,
        malformed=malformed,
        no_done=faults.no_done,
        echo_prefix=faults.echo_prefix,
        reject_prefill=faults.reject_prefill,
    )
