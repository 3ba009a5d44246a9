"""Processes of a benchmark: start them pinned to a core, wait for them, read their cost.

Cost is read from /proc: CPU as utime+stime of the process (all its threads) in clock
ticks, memory as VmRSS (now) and VmHWM (peak). Pinning uses sched_setaffinity in the child
before exec, so every thread the process starts later inherits the core.

Invariant: every process started here is ended by `Service.stop()` (terminate, then kill
after a grace period) through its own pid, never by name.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def cores() -> tuple[set[int], set[int]]:
    """(the gateway's core, the upstream's and load generator's cores)."""
    available = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if len(available) < 2:
        return set(available), set(available)
    return {available[0]}, set(available[1:])


def pin_self(cpus: set[int]) -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, cpus)


@dataclass
class Service:
    name: str
    process: subprocess.Popen[bytes]
    port: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        # Fields 14 and 15 of stat (utime, stime) are at 11 and 12 after the command name.
        return (int(fields[11]) + int(fields[12])) / CLOCK_TICK

    def memory_kib(self, field: str = "VmRSS") -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
        return 0

    def tree_memory_kib(self) -> int:
        """RSS of the process and its children (LiteLLM runs its server in a child)."""
        total = self.memory_kib()
        for child in _children(self.pid):
            with contextlib.suppress(OSError):
                total += _rss_of(child)
        return total

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            text = Path(f"/proc/{pid}/task/{task}/children").read_text()
            found += [int(p) for p in text.split()]
    return found


def _rss_of(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start(
    name: str,
    argv: Sequence[str],
    port: int,
    cpus: set[int],
    log_dir: Path,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Service:
    log_path = log_dir / f"{name}.log"
    log = log_path.open("wb")

    def pin() -> None:  # runs in the child, before exec
        pin_self(cpus)

    process = subprocess.Popen(
        list(argv), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        env=env, cwd=cwd, preexec_fn=pin, start_new_session=True,
    )
    log.close()
    return Service(name, process, port, log_path)


def wait_http(service: Service, path: str, timeout: float = 120.0) -> None:
    """Wait until GET path answers < 500; raise with the log's tail if the process died."""
    deadline = time.monotonic() + timeout
    url = f"http://127.0.0.1:{service.port}{path}"
    while time.monotonic() < deadline:
        if service.process.poll() is not None:
            tail = service.log_path.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{service.name} exited ({service.process.returncode}):\n{tail}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status < 500:
                    return
        except urllib.error.HTTPError as error:
            if error.code < 500:
                return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{service.name} did not answer {url} within {timeout:.0f} s")


def machine() -> dict[str, object]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {"nproc": os.cpu_count(), "cpu_model": model, "kernel": os.uname().release}


def busy_processes(exclude: set[int], window: float = 1.0, limit: int = 6) -> list[str]:
    """Other processes using CPU over the next `window` seconds (the machine is shared)."""
    before = _all_cpu_ticks()
    time.sleep(window)
    after = _all_cpu_ticks()
    rows = []
    for pid, ticks in after.items():
        used = (ticks - before.get(pid, ticks)) / CLOCK_TICK / window
        if pid in exclude or pid == os.getpid() or used < 0.05:
            continue
        with contextlib.suppress(OSError):
            args = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            rows.append((used, f"{pid} {100 * used:.0f}% {args.strip()[:100]}"))
    return [row for _, row in sorted(rows, reverse=True)[:limit]]


def _all_cpu_ticks() -> dict[int, int]:
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            ticks[int(entry)] = int(fields[11]) + int(fields[12])
    return ticks


def loadavg() -> str:
    with contextlib.suppress(OSError):
        return " ".join(Path("/proc/loadavg").read_text().split()[:3])
    return "?"
