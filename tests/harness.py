"""Running the real gateway inside a test: uvicorn on a free loopback port, in a thread.

Same pattern as gateway/sim/testing.py: the socket is bound before the server starts, and the
helper returns once `/healthz` answers (polled, never a blind sleep).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from typing import Any

import httpx
import uvicorn

from gateway.app import create_app
from gateway.config.models import (
    BackendConfig,
    FailoverConfig,
    GatewayConfig,
    ModelConfig,
    StateConfig,
)

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def running_gateway(
    config: GatewayConfig, env: Mapping[str, str] | None = None
) -> Iterator[str]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    app = create_app(config, env=dict(env or {}))
    server = uvicorn.Server(uvicorn.Config(
        app, lifespan="on", log_level="warning", access_log=False, timeout_graceful_shutdown=3,
        timeout_keep_alive=30,
    ))
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"gateway-{port}", daemon=True)
    thread.start()
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(root, thread, failure)
        yield root
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5.0)
        sock.close()
    if failure:
        raise RuntimeError(f"gateway crashed: {failure[0]!r}")


def _wait_until_up(root: str, thread: threading.Thread, failure: list[BaseException]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"gateway failed to start: {failure[:1]!r}")
            try:
                if client.get(f"{root}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"gateway at {root} did not start within {START_TIMEOUT_S} s")


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
