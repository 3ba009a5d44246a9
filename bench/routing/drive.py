"""Send one arm's requests through the gateway and feed back the sim's verdict on each answer.

The workload is the same for every arm: request i has a task drawn from the benchmark's mix, a
prompt of log-uniform length tagged `[task:<t>]` (the gateway's task heuristic reads the tag,
the sim judges by it) and `[nonce:<i>]` (so the sim's correctness draw is per request, and the
same question gets the same verdict from the same model in every arm).

Per request: the chat completion (non-streaming, so it carries `x-gateway-cost-usd`), then the
sim's verdict by completion id (`GET /_sim/answers/{id}` on the sim of the model that served
it: the gateway does not forward upstream headers), then `POST /v1/feedback` with 1.0 for a
correct answer and 0.0 for a wrong one. A request the gateway could not serve counts as wrong
and costs nothing. At request `flip_at` the flaky model's sim starts failing.
"""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import Mapping
from dataclasses import dataclass

from bench.routing.http import Connection
from bench.routing.world import FAILING, TASKS

FILLER = (
    "The quarterly report lists revenue, churn and the open support tickets by region. "
)


@dataclass(frozen=True, slots=True)
class Request:
    index: int
    task: str
    prompt: str


@dataclass(frozen=True, slots=True)
class Result:
    index: int
    task: str
    served: str | None  # the model that produced the answer; None when nothing could
    correct: bool
    cost_usd: float


def workload(count: int, seed: int = 11) -> list[Request]:
    rng = random.Random(seed)
    out = []
    for i in range(count):
        task = TASKS[rng.randrange(len(TASKS))]
        chars = int(math.exp(rng.uniform(math.log(40), math.log(1500))))
        body = (FILLER * (chars // len(FILLER) + 1))[:chars]
        out.append(Request(i, task, f"[task:{task}] {body} [nonce:{i}]"))
    return out


async def run_arm(
    gateway: str,
    model: str,
    requests: list[Request],
    sims: Mapping[str, str],
    flaky_sim: str,
    flip_at: int | None,
    concurrency: int,
) -> list[Result]:
    """Results in request order; `sims` maps a model id to the root of the sim serving it."""
    results: list[Result | None] = [None] * len(requests)
    queue = iter(requests)
    flipped = asyncio.Event()

    async def worker() -> None:
        conns = {root: Connection(root) for root in {gateway, flaky_sim, *sims.values()}}
        try:
            for request in queue:
                if flip_at is not None and request.index == flip_at:
                    flip = await conns[flaky_sim].request("POST", "/_sim/faults", FAILING)
                    assert flip.status == 200, flip.body
                    flipped.set()
                elif flip_at is not None and request.index > flip_at:
                    await flipped.wait()
                results[request.index] = await _one(conns, gateway, model, request, sims)
        finally:
            for conn in conns.values():
                await conn.close()

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return [r for r in results if r is not None]


async def _one(
    conns: Mapping[str, Connection], gateway: str, model: str, request: Request,
    sims: Mapping[str, str],
) -> Result:
    response = await conns[gateway].request("POST", "/v1/chat/completions", {
        "model": model, "max_tokens": 64,
        "messages": [{"role": "user", "content": request.prompt}],
    })
    if response.status != 200:
        return Result(request.index, request.task, None, False, 0.0)
    body = response.json()
    served = str(body["model"])
    verdict = await conns[sims[served]].request("GET", f"/_sim/answers/{body['id']}")
    assert verdict.status == 200, verdict.body
    correct = bool(verdict.json()["correct"])
    rated = await conns[gateway].request("POST", "/v1/feedback", {
        "request_id": response.headers["x-request-id"], "score": 1.0 if correct else 0.0,
    })
    assert rated.status == 200, rated.body
    cost = float(response.headers["x-gateway-cost-usd"])
    return Result(request.index, request.task, served, correct, cost)
