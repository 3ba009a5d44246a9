"""Running the real gateway inside a test: uvicorn on a free loopback port, in a thread.

Same mechanism as the simulator's (gateway/sim/testing.py `serve_in_thread`): the socket is
bound before the server starts, and the helper returns once `/healthz` answers.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

import uvicorn

from gateway.app import create_app
from gateway.config.models import (
    BackendConfig,
    FailoverConfig,
    GatewayConfig,
    ModelConfig,
    StateConfig,
)
from gateway.sim.testing import loopback_socket, serve_in_thread

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def running_gateway(
    config: GatewayConfig, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    sock = loopback_socket()
    app = create_app(config, env=dict(env or {}))
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=3,
        # Longer than httpx's 5 s pool expiry, so a client never reuses a closing connection.
        timeout_keep_alive=30,
    ))
    with serve_in_thread(server, sock, "/healthz") as root:
        yield root


def sim_config(
    sims: Mapping[str, str],
    models: list[dict[str, Any]],
    *,
    state_path: Any,
    **sections: Any,
) -> GatewayConfig:
    """A config with one backend per simulator root URL (`{backend_name: root}`)."""
    backends = tuple(
        BackendConfig(name=name, base_url=f"{root}/v1", timeout_secs=5.0)
        for name, root in sims.items()
    )
    failover = sections.pop("failover", None) or FailoverConfig(
        first_token_timeout_secs=5.0, idle_timeout_secs=5.0
    )
    state = sections.pop("state", None) or StateConfig(path=state_path)
    return GatewayConfig(
        backends=backends,
        models=tuple(ModelConfig(**m) for m in models),
        failover=failover,
        state=state,
        **sections,
    )
