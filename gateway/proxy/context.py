"""What one client request carries through the proxy: identity, routing decision, tallies."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from gateway.config.models import ClientConfig, Mode, Task
from gateway.proxy.request import ClientRequest


@dataclass(slots=True)
class RequestContext:
    request_id: str
    client: ClientConfig | None
    request: ClientRequest
    task: Task
    mode: Mode | None
    started: float = field(default_factory=time.perf_counter)
    first_model: str | None = None
    # The head of the candidate list: the metrics label when no attempt could be made.
    planned_model: str | None = None
    served_model: str | None = None
    served_backend: str | None = None
    failovers: int = 0
    cost_micros: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    ttft_s: float | None = None
    status: int = 200

    @property
    def client_name(self) -> str | None:
        return None if self.client is None else self.client.name
