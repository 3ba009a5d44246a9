"""A real, throwaway redis-server for tests.

`running_redis()` starts `redis-server` on a free loopback port in a temporary directory with
persistence off, waits until it answers PING (polling, no blind sleep), yields a
`RedisServer` (`.url`, `.stop()` = kill -9, `.start()`/`.restart()` on the same port,
`.pause()`/`.resume()` for a hung Redis) and kills it afterwards.

No redis-server binary: the test fails, unless `GATEWAY_ALLOW_NO_REDIS=1` says skipping is
acceptable (CI installs Redis, so there a missing binary is an error, not a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

_READY_TIMEOUT_SECS = 10.0


def redis_binary() -> str:
    """Path of redis-server, or skip/fail the calling test as described above."""
    found = os.environ.get("GATEWAY_REDIS_SERVER") or shutil.which("redis-server")
    if found:
        return found
    if os.environ.get("GATEWAY_ALLOW_NO_REDIS") == "1":
        pytest.skip("redis-server not installed (GATEWAY_ALLOW_NO_REDIS=1)")
    pytest.fail("redis-server not found on PATH; install Redis or set GATEWAY_ALLOW_NO_REDIS=1")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers_ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    def __init__(self, binary: str, workdir: Path, port: int | None = None) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self) -> None:
        args = f"--port {self.port} --bind 127.0.0.1 --appendonly no --daemonize no".split()
        args += ["--save", "", "--dir", str(self.workdir)]  # no snapshots: a restart is empty
        log = (self.workdir / "redis.log").open("ab")
        self._process = subprocess.Popen(
            [self.binary, *args], stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir
        )
        log.close()
        deadline = time.monotonic() + _READY_TIMEOUT_SECS
        while not _answers_ping(self.port):
            if self._process.poll() is not None:
                raise RuntimeError(f"redis-server exited early: {self._log_tail()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self._log_tail()}")
            time.sleep(0.01)  # polling interval, not a wait for readiness

    def stop(self) -> None:
        """Kill -9: no shutdown save, no goodbye to clients, like a crash."""
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)  # a paused server must die too
            self._process.kill()
            self._process.wait(timeout=5)
            self._process = None

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung Redis or
        a partition: clients hit their timeouts, and the data survives for `resume()`)."""
        if self._process is not None:
            self._process.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGCONT)

    def restart(self) -> None:
        """Stop (if running) and start again on the same port, with an empty dataset."""
        self.stop()
        self.start()

    def _log_tail(self) -> str:
        try:
            return (self.workdir / "redis.log").read_text(errors="replace")[-800:]
        except OSError:
            return "(no log)"


@contextmanager
def running_redis() -> Iterator[RedisServer]:
    binary = redis_binary()
    with tempfile.TemporaryDirectory(prefix="gateway-redis-") as workdir:
        server = RedisServer(binary, Path(workdir))
        server.start()
        try:
            yield server
        finally:
            server.stop()
