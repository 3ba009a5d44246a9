"""Added latency of the Redis state backend against the memory backend.

    .venv/bin/python -m bench.redis_latency [--requests 400] [--json out.json]

One simulator process, one redis-server (tests/redis_server.py), and two gateway processes
(tests/procs.py) with the same config except `[state]`: `memory` and `redis`. Each gateway has
two clients: `free` (no spend limit: nothing on the request path touches the store) and
`limited` (an hourly limit far above what the run spends: every request reserves through the
store first, which for Redis is the one round trip on the critical path). Requests are
non-streaming chat completions, sent one at a time over keep-alive connections, interleaved
across the four (backend, client) pairs in a shuffled order each round, so that machine noise
and the cost of waking an idle process hit all of them alike; the simulator alone is measured
the same way, as the floor.

A second table times the store call itself, in one process: `reserve_spend` on a MemoryStore
and on a RedisStore (one EVALSHA over loopback).

Prints tables of medians and p99 in milliseconds; `--json` also writes the raw summary.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import orjson

from gateway.store.base import SpendCheck, StateStore, Window
from gateway.store.memory import MemoryStore
from gateway.store.redis_store import RedisStore
from tests.procs import child_env, free_port, start_gateway, wait_healthy
from tests.redis_server import RedisServer

CLIENT_KEYS = {"free": "sk-bench-free", "limited": "sk-bench-limited"}
BODY = {"model": "bench", "max_tokens": 16, "messages": [{"role": "user", "content": "hello"}]}


def config_text(sim: str, state: str) -> str:
    return f"""
[server]
log_level = "WARNING"

[[auth.clients]]
name = "free"
key_env = "BENCH_FREE_KEY"

[[auth.clients]]
name = "limited"
key_env = "BENCH_LIMITED_KEY"
spend = {{ hourly_usd = 1000000.0 }}

{state}

[[backends]]
name = "sim"
base_url = "{sim}/v1"

[[models]]
id = "bench"
backend = "sim"
upstream_model = "bench"
input_per_mtok = 0.15
output_per_mtok = 0.60
"""


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def summary(values: list[float]) -> dict[str, float]:
    return {"median_ms": statistics.median(values) * 1000,
            "p99_ms": percentile(values, 0.99) * 1000, "n": len(values)}


def start_sim(folder: Path) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    log = (folder / "sim.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT, env=child_env(), start_new_session=True,
    )
    root = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while True:
        try:
            if httpx.get(f"{root}/_sim/health", timeout=1).status_code == 200:
                return process, root
        except httpx.TransportError:
            pass
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"simulator did not start: {(folder / 'sim.log').read_text()}")
        time.sleep(0.05)


def measure_http(targets: dict[str, tuple[str, dict[str, str]]], requests: int,
                 warmup: int) -> dict[str, dict[str, float]]:
    clients = {name: httpx.Client(base_url=root, headers=headers, timeout=30)
               for name, (root, headers) in targets.items()}
    samples: dict[str, list[float]] = {name: [] for name in targets}
    order = list(clients)
    shuffle = random.Random(6).shuffle
    try:
        for i in range(warmup + requests):
            shuffle(order)  # no case always runs first in a round (a process just woken up)
            for name in order:
                client = clients[name]
                started = time.perf_counter()
                response = client.post("/v1/chat/completions", json=BODY)
                elapsed = time.perf_counter() - started
                if response.status_code != 200:
                    raise RuntimeError(f"{name}: {response.status_code} {response.text[:200]}")
                if i >= warmup:
                    samples[name].append(elapsed)
    finally:
        for client in clients.values():
            client.close()
    return {name: summary(values) for name, values in samples.items()}


async def measure_store(redis_url: str, calls: int) -> dict[str, dict[str, float]]:
    checks = tuple(SpendCheck("global", window, 10**15) for window in Window)
    stores: dict[str, StateStore] = {"memory reserve_spend": MemoryStore(None),
              "redis reserve_spend": RedisStore(redis_url, "bench-store:")}
    out: dict[str, dict[str, float]] = {}
    for name, store in stores.items():
        await store.start()
        samples = []
        for i in range(calls + 100):
            started = time.perf_counter()
            await store.reserve_spend(("global", "client:x"), checks, 100, time.time())
            if i >= 100:
                samples.append(time.perf_counter() - started)
        await store.close()
        out[name] = summary(samples)
    return out


def print_table(title: str, rows: dict[str, dict[str, float]], base: dict[str, str]) -> None:
    print(f"\n{title}")
    print(f"{'scenario':<30} {'median ms':>10} {'p99 ms':>10} {'+median':>9} {'+p99':>9}")
    for name, row in rows.items():
        ref = rows.get(base.get(name, ""))
        plus = f"{'':>9} {'':>9}"
        if ref is not None:
            plus = (f"{row['median_ms'] - ref['median_ms']:>+9.3f} "
                    f"{row['p99_ms'] - ref['p99_ms']:>+9.3f}")
        print(f"{name:<30} {row['median_ms']:>10.3f} {row['p99_ms']:>10.3f} {plus}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=400, help="measured requests per case")
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    binary = os.environ.get("GATEWAY_REDIS_SERVER") or shutil.which("redis-server")
    if binary is None:
        print("redis-server not found on PATH", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as tmp:
        folder = Path(tmp)
        redis_server = RedisServer(binary, folder)
        redis_server.start()
        sim, sim_root = start_sim(folder)
        env = {"BENCH_FREE_KEY": CLIENT_KEYS["free"], "BENCH_LIMITED_KEY": CLIENT_KEYS["limited"]}
        states = {
            "memory": f'[state]\nbackend = "memory"\npath = "{folder / "state.db"}"',
            "redis": f'[state]\nbackend = "redis"\nredis_url = "{redis_server.url}"',
        }
        gateways = {}
        try:
            for name, state in states.items():
                path = folder / f"{name}.toml"
                path.write_text(config_text(sim_root, state))
                gateways[name] = start_gateway(path, env=env, log_dir=folder, wait=False)
            for gateway in gateways.values():
                wait_healthy(gateway)
            targets: dict[str, tuple[str, dict[str, str]]] = {"sim directly": (sim_root, {})}
            for backend, gateway in gateways.items():
                for client, key in CLIENT_KEYS.items():
                    label = f"{backend}, {'hourly limit' if client == 'limited' else 'no limit'}"
                    targets[label] = (gateway.root, {"Authorization": f"Bearer {key}"})
            http = measure_http(targets, args.requests, args.warmup)
            store = asyncio.run(measure_store(redis_server.url, args.requests * 5))
        finally:
            for gateway in gateways.values():
                gateway.stop()
            sim.terminate()
            sim.wait(timeout=10)
            redis_server.stop()
    load = Path("/proc/loadavg").read_text().split()[:3] if Path("/proc/loadavg").exists() else []
    print(f"{args.requests} sequential non-streaming requests per case, keep-alive; "
          f"{os.cpu_count()} CPUs, load average {' '.join(load)}")
    base = {"redis, no limit": "memory, no limit", "redis, hourly limit": "memory, hourly limit",
            "memory, hourly limit": "memory, no limit"}
    print_table("End to end (client -> gateway -> sim)", http, base)
    print_table("Store call alone", store, {"redis reserve_spend": "memory reserve_spend"})
    if args.json is not None:
        args.json.write_bytes(orjson.dumps({"http": http, "store": store},
                                           option=orjson.OPT_INDENT_2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
