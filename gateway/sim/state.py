"""The mutable state of one simulator instance: script, fault override, request log, answers.

One `SimState` lives on `app.state.sim` and is only touched from the server's event loop, so
it needs no locks. Everything is bounded: the request log keeps the last `log_limit` records
and the answer book the last `ANSWER_LIMIT` decisions, so a long benchmark cannot grow them.
`reset()` restores the state right after start (same seed, empty script, log and answers);
ids keep counting so an id seen before a reset never names a different request after it.
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field
from typing import Any

from gateway.sim.faults import Step
from gateway.sim.options import Faults, SimModel, SimOptions, merge_faults

ANSWER_LIMIT = 100_000


@dataclass(slots=True)
class RequestRecord:
    """One request as the simulator saw it; updated while its response is being written."""

    seq: int
    at: float
    path: str
    method: str
    auth: str | None
    body: Any = None
    model: str | None = None
    stream: bool = False
    status: int | None = None
    # pending | streaming | ok | error | died | stalled | error_event | disconnected | aborted
    outcome: str = "pending"
    tokens_sent: int = 0
    id: str | None = None
    task: str | None = None
    correct: bool | None = None
    step: bool = False
    disconnected_at: float | None = None
    finished_at: float | None = None

    def finish(self, outcome: str | None = None) -> None:
        if outcome is not None:
            self.outcome = outcome
        if self.finished_at is None:
            self.finished_at = time.time()

    def client_gone(self) -> None:
        if self.disconnected_at is None:
            self.disconnected_at = time.time()
        if self.outcome in ("pending", "streaming"):
            self.outcome = "disconnected"
        self.finish()

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self.__slots__}


@dataclass(frozen=True)
class Answer:
    correct: bool
    model: str
    task: str

    def to_json(self) -> dict[str, Any]:
        return {"correct": self.correct, "model": self.model, "task": self.task}


@dataclass
class SimState:
    options: SimOptions
    rng: random.Random = field(init=False)
    faults_override: Faults | None = None
    # Steps per model name; None holds the steps for any model.
    script: dict[str | None, deque[Step]] = field(default_factory=dict)
    log: deque[RequestRecord] = field(init=False)
    answers: OrderedDict[str, Answer] = field(default_factory=OrderedDict)
    # Set when the server starts shutting down; open responses then end at once.
    closing: asyncio.Event = field(default_factory=asyncio.Event)
    _seq: itertools.count[int] = field(default_factory=lambda: itertools.count(1))
    _ids: itertools.count[int] = field(default_factory=lambda: itertools.count(1))

    def __post_init__(self) -> None:
        self.rng = random.Random(self.options.seed)
        self.log = deque(maxlen=self.options.log_limit)

    @property
    def global_faults(self) -> Faults:
        return self.faults_override if self.faults_override is not None else self.options.faults

    def model_profile(self, name: str) -> SimModel | None:
        """The model serving `name`: configured, a default profile, or None (strict: 404)."""
        model = self.options.find_model(name)
        if model is not None:
            return model
        if self.options.strict_models and self.options.models:
            return None
        return SimModel(name=name)

    def effective_faults(self, model: SimModel) -> Faults:
        return merge_faults(self.global_faults, model.faults)

    def set_script(self, steps: list[Step], model: str | None) -> None:
        self.script[model] = deque(steps)

    def next_step(self, model: str) -> Step | None:
        for key in (model, None):
            queue = self.script.get(key)
            if queue:
                return queue.popleft()
        return None

    def pending_steps(self) -> dict[str, int]:
        return {("*" if k is None else k): len(v) for k, v in self.script.items()}

    def new_record(self, path: str, method: str, auth: str | None) -> RequestRecord:
        record = RequestRecord(next(self._seq), time.time(), path, method, auth)
        self.log.append(record)
        return record

    def new_id(self, prefix: str) -> str:
        return f"{prefix}-sim-{next(self._ids)}"

    def remember(self, key: str, answer: Answer) -> None:
        self.answers[key] = answer
        self.answers.move_to_end(key)
        while len(self.answers) > ANSWER_LIMIT:
            self.answers.popitem(last=False)

    def reset(self) -> None:
        self.rng = random.Random(self.options.seed)
        self.faults_override = None
        self.script.clear()
        self.log.clear()
        self.answers.clear()
