"""`gateway demo`: the gateway and the simulated demo models in one process, no keys needed.

The demo routes with benchmark priors (sim/demo_priors.json: each demo model's per-task
quality and latency, in the contract's priors format), so `auto` sends code to the strong
model and classification to the cheap one from the first request instead of exploring.
"""

from __future__ import annotations

import asyncio
import socket
from pathlib import Path

import uvicorn

from gateway.config.models import (
    BackendConfig,
    FailoverConfig,
    GatewayConfig,
    ModelConfig,
    RoutingConfig,
    ServerConfig,
    StateConfig,
    Task,
)
from gateway.sim.demo import demo_models, demo_sim_options
from gateway.sim.server import build_sim_server

DEMO_PRIORS = Path(__file__).parent / "sim" / "demo_priors.json"

SNIPPET = """\
from openai import OpenAI

client = OpenAI(base_url="{base_url}", api_key="demo")
reply = client.chat.completions.create(
    model="auto",
    messages=[{{"role": "user", "content": "Write a haiku about failover."}}],
)
print(reply.model, reply.choices[0].message.content)
"""


def demo_config(sim_base_url: str, host: str = "127.0.0.1", port: int = 8080) -> GatewayConfig:
    sims = demo_models()
    names = [sim.name for sim in sims]
    models = []
    for sim in sims:
        tasks = tuple(Task(t) for t, _ in sim.quality.items() if t != Task.EMBED.value)
        models.append(ModelConfig(
            id=sim.name,
            backend="sim",
            input_per_mtok=sim.input_per_mtok,
            output_per_mtok=sim.output_per_mtok,
            tasks=tasks + (Task.EMBED,) if sim.name == "sim-cheap" else tasks,
            fallbacks=tuple(n for n in names if n != sim.name),
            context_window=sim.context_window,
            first_token_timeout_secs=5.0,
        ))
    return GatewayConfig(
        server=ServerConfig(host=host, port=port),
        routing=RoutingConfig(priors_file=DEMO_PRIORS),
        failover=FailoverConfig(max_retries=3, first_token_timeout_secs=5.0, idle_timeout_secs=5.0),
        state=StateConfig(path=Path("gateway-demo-state.db")),
        backends=(BackendConfig(name="sim", base_url=sim_base_url, timeout_secs=10.0),),
        models=tuple(models),
    )


def _free_port(host: str) -> int:
    with socket.socket() as probe:
        probe.bind((host, 0))
        port: int = probe.getsockname()[1]
        return port


async def run_demo(host: str, port: int) -> None:
    from gateway.app import create_app
    from gateway.cli import server_config

    sim_port = _free_port(host)
    sim = build_sim_server(demo_sim_options(), host, sim_port)
    config = demo_config(f"http://{host}:{sim_port}/v1", host, port)
    gateway = uvicorn.Server(server_config(create_app(config, env={}), config, host, port))
    base_url = f"http://{host}:{port}/v1"
    models = ", ".join(m.id for m in config.models)
    print(f"gateway demo: {base_url}  (models: {models}, plus auto, auto:fast, auto:best)")
    print("paste into Python:\n")
    print(SNIPPET.format(base_url=base_url), flush=True)
    await asyncio.gather(sim.serve(), gateway.serve())
