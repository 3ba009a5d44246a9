"""Running a simulator inside a test: `running_sim(options)` and small control helpers.

`running_sim` starts uvicorn on a free loopback port in a background thread with its own
event loop, returns once the server answers `GET /_sim/health` (polled, never a blind sleep)
and stops it on exit. The port is bound before the thread starts and handed to uvicorn as a
socket, so two simulators started at once can never race for the same port.

The yielded value is the server's root URL (`http://127.0.0.1:<port>`): the OpenAI API is at
`<root>/v1`, the control endpoints at `<root>/_sim/...`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import uvicorn

from gateway.sim.options import SimOptions
from gateway.sim.server import build_sim_server

START_TIMEOUT_S = 10.0


def loopback_socket() -> socket.socket:
    """A bound loopback socket on a free port, ready to hand to uvicorn."""
    # proto must be IPPROTO_TCP explicitly: asyncio only sets TCP_NODELAY on accepted sockets
    # whose proto says TCP, and without it Nagle's algorithm adds ~40 ms to every response.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@contextlib.contextmanager
def serve_in_thread(
    server: uvicorn.Server, sock: socket.socket, health_path: str
) -> Iterator[str]:
    """Run `server` on `sock` in a thread with its own loop until the block ends; yields the
    root URL once `health_path` answers 200 (polled, never a blind sleep)."""
    port = sock.getsockname()[1]
    failure: list[BaseException] = []

    def run() -> None:
        try:
            asyncio.run(server.serve(sockets=[sock]))
        except BaseException as exc:  # reported to the test thread below
            failure.append(exc)

    thread = threading.Thread(target=run, name=f"server-{port}", daemon=True)
    thread.start()
    root = f"http://127.0.0.1:{port}"
    try:
        _wait_until_up(f"{root}{health_path}", thread, failure)
        yield root
    finally:
        server.should_exit = True
        thread.join(timeout=10.0)
        if thread.is_alive():
            server.force_exit = True
            thread.join(timeout=5.0)
        sock.close()
    if failure:
        raise RuntimeError(f"server at {root} crashed: {failure[0]!r}")


@contextlib.contextmanager
def running_sim(options: SimOptions | None = None) -> Iterator[str]:
    """A running simulator for the duration of the block; yields its root URL."""
    sock = loopback_socket()
    server = build_sim_server(options or SimOptions(), "127.0.0.1", sock.getsockname()[1])
    with serve_in_thread(server, sock, "/_sim/health") as root:
        yield root


def _wait_until_up(url: str, thread: threading.Thread, failure: list[BaseException]) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    with httpx.Client(timeout=1.0) as client:
        while time.monotonic() < deadline:
            if not thread.is_alive():
                raise RuntimeError(f"server failed to start: {failure[:1]}")
            try:
                if client.get(url).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.02)
    raise RuntimeError(f"server at {url} did not start within {START_TIMEOUT_S} s")


def sim_script(base_url: str, steps: list[dict[str, Any]], model: str | None = None) -> None:
    """Script the next requests (for `model`, or any model); see control.py for step keys."""
    body: dict[str, Any] = {"steps": steps}
    if model is not None:
        body["model"] = model
    httpx.post(f"{base_url}/_sim/script", json=body).raise_for_status()


def sim_faults(base_url: str, **faults: Any) -> None:
    """Replace the simulator's global faults (Faults field names as keywords)."""
    httpx.post(f"{base_url}/_sim/faults", json=faults).raise_for_status()


def sim_reset(base_url: str) -> None:
    httpx.post(f"{base_url}/_sim/reset").raise_for_status()


def sim_requests(base_url: str, since: int = 0) -> list[dict[str, Any]]:
    """The simulator's request log (records with seq > since)."""
    response = httpx.get(f"{base_url}/_sim/requests", params={"since": since})
    response.raise_for_status()
    return list(response.json())


def wait_for(predicate: Any, timeout: float = 2.0, interval: float = 0.02) -> Any:
    """Poll `predicate()` until it returns something truthy; that value, or raise on timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"condition not met within {timeout} s")
        time.sleep(interval)
