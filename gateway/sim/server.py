"""Running the simulator under uvicorn, programmatically.

`build_sim_server` returns a configured `uvicorn.Server` without starting it, so the demo can
run it in the same event loop as the gateway (`await server.serve()`); `serve_sim` is the
whole `gateway sim` command. A stalled stream never ends by itself, so the server tells the
app it is closing before uvicorn waits for open connections: they are cut at once.
"""

from __future__ import annotations

import socket

import uvicorn

from gateway.sim.app import create_sim_app
from gateway.sim.options import SimOptions
from gateway.sim.state import SimState

# Only a backstop now that open responses are cut on shutdown.
GRACEFUL_SHUTDOWN_S = 2


class _SimServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config, state: SimState) -> None:
        super().__init__(config)
        self._state = state

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        self._state.closing.set()
        await super().shutdown(sockets)


def build_sim_server(options: SimOptions, host: str, port: int) -> uvicorn.Server:
    app = create_sim_app(options)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_level="warning",
        access_log=False,
        ws="none",  # no websockets: the simulator speaks HTTP and SSE only
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S,
    )
    return _SimServer(config, app.state.sim)


async def serve_sim(options: SimOptions, host: str, port: int) -> None:
    await build_sim_server(options, host, port).serve()
