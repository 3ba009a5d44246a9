"""Turn a request into its ordered list of candidate models: the one place that decides.

Explicit model id: that model, then its `fallbacks` (those the client may use). Router alias
(`auto`, `auto:fast`, `auto:best`, or `X-Gateway-Mode`): the router ranks the models the
client may use that serve the task, whose circuit is not open, that have a usable key and
whose estimated cost fits the per-request limits (and, while any other is left, whose keys
are not all cooling after 429s); the ranking is the failover order. Window limits (hourly,
daily) are checked per candidate when the queue reserves, so one that does not fit is skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config.models import ClientConfig, Mode, ModelConfig, Task
from gateway.errors import ModelNotAllowed, ModelNotFound, NoBackendAvailable
from gateway.proxy.request import ClientRequest, Endpoint
from gateway.routing.tasks import TaskEstimate, infer_task, parse_mode, parse_task_header
from gateway.state import AppState


@dataclass(frozen=True, slots=True)
class Plan:
    candidates: list[ModelConfig]
    mode: Mode | None
    estimate: TaskEstimate


def plan_request(
    state: AppState,
    client: ClientConfig | None,
    request: ClientRequest,
    mode_header: str | None,
    task_header: str | None,
) -> Plan:
    estimate = _estimate(request, task_header)
    mode = parse_mode(request.model, mode_header, state.config.routing.default_mode)
    if mode is None:
        candidates = _explicit(state, client, request.model)
    else:
        candidates = _routed(state, client, request, mode, estimate)
    state.metrics.routing.labels(
        "explicit" if mode is None else mode.value, estimate.task.value, candidates[0].id
    ).inc()
    return Plan(candidates, mode, estimate)


def _estimate(request: ClientRequest, task_header: str | None) -> TaskEstimate:
    if request.endpoint is Endpoint.EMBEDDINGS:
        return TaskEstimate(Task.EMBED, 0.0)
    # A forced task (X-Gateway-Task) gets that task's difficulty, not the guessed one's.
    return infer_task(request.endpoint.value, request.body, forced=parse_task_header(task_header))


def _explicit(state: AppState, client: ClientConfig | None, model_id: str) -> list[ModelConfig]:
    model = state.models.get(model_id)
    if model is None:
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    if client is not None and not client.allows(model.id):
        raise ModelNotAllowed(f"this API key may not use the model '{model_id}'", param="model")
    chain = [model]
    for fallback in model.fallbacks:
        if client is None or client.allows(fallback):
            chain.append(state.models[fallback])
    return chain


def _routed(
    state: AppState,
    client: ClientConfig | None,
    request: ClientRequest,
    mode: Mode,
    estimate: TaskEstimate,
) -> list[ModelConfig]:
    max_output = request.max_output_tokens
    if max_output is None:
        max_output = state.spend.default_output_tokens
    usable = [
        m for m in state.models.values()
        if estimate.task in m.tasks
        and (client is None or client.allows(m.id))
        and not state.breakers.is_open(m.id)
        and state.keys.has_usable_key(m.backend)
    ]
    if not usable:
        raise NoBackendAvailable(f"no model is available for the task '{estimate.task.value}'")
    eligible = [
        m for m in usable
        if state.spend.fits_per_request(
            client, state.spend.estimate(m, request.prompt_tokens_estimate, max_output)
        )
    ]
    if not eligible:
        cheapest = min(
            state.spend.estimate(m, request.prompt_tokens_estimate, max_output) for m in usable
        )
        state.spend.check_per_request(client, cheapest)
    # A model whose keys are all cooling would only be skipped by the queue: rank the others,
    # unless none is left (then the queue answers 429 with the earliest Retry-After).
    ready = [m for m in eligible if state.keys.cooling_until(m.backend) is None]
    return state.router.rank(
        ready or eligible, mode, estimate, request.prompt_tokens_estimate, max_output, client
    )
