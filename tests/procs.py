"""Real gateway processes for tests and benchmarks: `python -m gateway serve` in a subprocess.

`running_gateway_process(config_path, env=...)` starts `python -m gateway serve --config X
--host 127.0.0.1 --port P` on a free loopback port, returns once `GET /healthz` answers 200
(polled, never a blind sleep) and stops it afterwards (SIGTERM, then SIGKILL after a grace
period). `start_gateway` / `GatewayProcess.stop()` do the same without a `with` block, for a
test that kills or restarts a replica itself.

Invariants: a process is only ever signalled through the pid this module started it with (its
own session, so `--workers` children are reached through its process group, never by name);
the child's environment is the caller's `env` on top of this process's environment minus every
`GATEWAY_*` variable, so a developer's own settings never leak into a test; output goes to a
log file whose tail is in every error raised here.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx

START_TIMEOUT_SECS = 30.0
STOP_GRACE_SECS = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def child_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """This process's environment without `GATEWAY_*` variables, plus `env`."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("GATEWAY_")}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY"):
        base.pop(name, None)
    base["PYTHONUNBUFFERED"] = "1"
    return {**base, **(env or {})}


@dataclass
class GatewayProcess:
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def root(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def running(self) -> bool:
        return self.process.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no log)"

    def stop(self, grace_secs: float = STOP_GRACE_SECS) -> int:
        """SIGTERM (graceful drain), then SIGKILL of its process group after `grace_secs`."""
        if self.running:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=grace_secs)
            except subprocess.TimeoutExpired:
                self.kill()
        self._kill_group()  # workers left behind by a killed supervisor
        return int(self.process.returncode)

    def kill(self) -> None:
        """SIGKILL, like a crash: no drain, no final sync."""
        if self.running:
            self.process.kill()
            self.process.wait(timeout=5)
        self._kill_group()

    def _kill_group(self) -> None:
        # The process leads its own session, so its group id is its pid: only our tree.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)


def start_gateway(
    config_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    port: int | None = None,
    log_dir: Path | None = None,
    wait: bool = True,
) -> GatewayProcess:
    """Start `gateway serve`; with `wait`, return once /healthz is 200 (else raise)."""
    port = port or free_port()
    folder = log_dir or Path(tempfile.mkdtemp(prefix="gateway-proc-"))
    log_path = folder / f"gateway-{port}.log"
    argv = [
        sys.executable, "-m", "gateway", "serve", "--config", str(config_path),
        "--host", "127.0.0.1", "--port", str(port), *args,
    ]
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env=child_env(env), start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
    gateway = GatewayProcess(process, port, log_path)
    if wait:
        try:
            wait_healthy(gateway)
        except BaseException:
            gateway.stop(grace_secs=2.0)
            raise
    return gateway


def wait_healthy(gateway: GatewayProcess, timeout: float = START_TIMEOUT_SECS) -> None:
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if not gateway.running:
                raise RuntimeError(
                    f"gateway exited with {gateway.process.returncode}:\n{gateway.log_tail()}"
                )
            try:
                if client.get(f"{gateway.root}/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"gateway at {gateway.root} not healthy within {timeout} s:\n"
                    f"{gateway.log_tail()}"
                )
            time.sleep(0.05)  # polling interval, not a wait for readiness


@contextlib.contextmanager
def running_gateway_process(
    config_path: Path,
    *,
    env: Mapping[str, str] | None = None,
    args: Sequence[str] = (),
    log_dir: Path | None = None,
) -> Iterator[GatewayProcess]:
    gateway = start_gateway(config_path, env=env, args=args, log_dir=log_dir)
    try:
        yield gateway
    finally:
        gateway.stop()


def worker_pids(gateway: GatewayProcess) -> list[int]:
    """Pids of the uvicorn worker processes under a `--workers N` supervisor."""
    found: list[int] = []
    for child in _children(gateway.pid):
        with contextlib.suppress(OSError):
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ")
            if b"multiprocessing" in cmdline and b"resource_tracker" not in cmdline:
                found.append(child)
    return found


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(p) for p in text.split()]
    return found
