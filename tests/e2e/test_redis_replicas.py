"""Several gateway processes on one Redis behave as one gateway.

Real processes only: `redis-server` (tests/redis_server.py), `python -m gateway serve`
(tests/procs.py) and a simulator (running_sim). Replica A and B share one config except for
the upstream key of backend "sim" (`SIM_KEY`), which tells in the simulator's request log
which replica sent a request. The models of the tests are distinct, so one pair serves them all.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
import redis

from gateway.cli import main
from gateway.sim.options import SimOptions
from gateway.sim.testing import running_sim, sim_requests, sim_script, wait_for
from tests.procs import GatewayProcess, start_gateway, wait_healthy, worker_pids
from tests.redis_server import RedisServer, free_port, redis_binary, running_redis

ADMIN = "admin-replicas-key"
KEYS = {"limited": "sk-client-limited", "free": "sk-client-free", "outage": "sk-client-outage"}
BASE_ENV = {
    "GATEWAY_ADMIN_KEY": ADMIN,
    "LIMITED_KEY": KEYS["limited"], "FREE_KEY": KEYS["free"], "OUTAGE_KEY": KEYS["outage"],
    "KEYED_KEYS": "sk-keyed-one-1111,sk-keyed-two-2222",
}
COST_USD = 0.024  # 24 output tokens at $1000 per million: every request costs exactly this
COOLDOWN_SECS = 3.0
STALENESS_SECS = 2.0  # the documented bound (sync every 1 s: a record in <= 1 s, stats <= 2 s)


def config_text(
    sim: str, redis_url: str, prefix: str, on_error: str = "fail_closed", hourly: float = 1.21
) -> str:
    models = "".join(
        f'[[models]]\nid = "{mid}"\nbackend = "{backend}"\nupstream_model = "{mid}-up"\n'
        f"output_per_mtok = 1000.0\n\n"
        for mid, backend in (("spend", "sim"), ("flaky", "sim"), ("keyed", "keyed"),
                             ("stats", "sim"), ("outage", "sim"))
    )
    return f"""
[server]
log_level = "WARNING"
drain_timeout_secs = 2

[[auth.clients]]
name = "limited"
key_env = "LIMITED_KEY"
spend = {{ hourly_usd = {hourly} }}

[[auth.clients]]
name = "free"
key_env = "FREE_KEY"

[[auth.clients]]
name = "outage"
key_env = "OUTAGE_KEY"

[circuit_breaker]
failure_threshold = 3
cooldown_secs = {COOLDOWN_SECS}

[failover]
max_wait_secs = 0

[state]
backend = "redis"
redis_url = "{redis_url}"
redis_prefix = "{prefix}"
on_redis_error = "{on_error}"

[[backends]]
name = "sim"
base_url = "{sim}/v1"
api_key_env = ["SIM_KEY"]
timeout_secs = 10

[[backends]]
name = "keyed"
base_url = "{sim}/v1"
api_key_env = ["KEYED_KEYS"]
timeout_secs = 10

{models}"""


@dataclass
class Replica:
    name: str
    process: GatewayProcess
    _clients: dict[str, openai.OpenAI] = field(default_factory=dict)

    @property
    def root(self) -> str:
        return self.process.root

    def sdk(self, client: str) -> openai.OpenAI:
        if client not in self._clients:
            self._clients[client] = openai.OpenAI(
                base_url=f"{self.root}/v1", api_key=KEYS[client], max_retries=0, timeout=20
            )
        return self._clients[client]

    def call(self, model: str, client: str = "free") -> tuple[int, str | None]:
        try:
            self.sdk(client).chat.completions.create(
                model=model, max_tokens=24, messages=[{"role": "user", "content": "hello"}],
                extra_headers={"X-Gateway-Task": "generate"},
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.code
        return 200, None

    def status(self) -> dict[str, Any]:
        response = httpx.get(f"{self.root}/admin/status",
                             headers={"Authorization": f"Bearer {ADMIN}"}, timeout=5)
        response.raise_for_status()
        return dict(response.json())

    def circuit(self, model: str) -> str:
        return str(self.status()["models"][model]["circuit"])

    def ready(self) -> int:
        return httpx.get(f"{self.root}/readyz", timeout=5).status_code


def start_replicas(
    folder: Path, configs: dict[str, Path], sim_keys: dict[str, str]
) -> dict[str, Replica]:
    """Start every replica at once (they boot in parallel), then wait for each /healthz."""
    procs = {
        name: start_gateway(path, env={**BASE_ENV, "SIM_KEY": sim_keys[name]},
                            log_dir=folder, wait=False)
        for name, path in configs.items()
    }
    try:
        for proc in procs.values():
            wait_healthy(proc)
    except BaseException:
        for proc in procs.values():
            proc.stop(grace_secs=2)
        raise
    return {name: Replica(name, proc) for name, proc in procs.items()}


def last_seq(sim: str) -> int:
    log = sim_requests(sim)
    return int(log[-1]["seq"]) if log else 0


def upstream_calls(sim: str, since: int, model: str) -> list[dict[str, Any]]:
    return [r for r in sim_requests(sim, since) if r["model"] == f"{model}-up"]


def redis_spend_micros(url: str, prefix: str, scope: str) -> int:
    with redis.Redis.from_url(url) as raw:
        return sum(int(v) for v in raw.hgetall(f"{prefix}spend:{scope}:hourly").values())


def hourly_spent(replica: Replica, client: str) -> float:
    return float(replica.status()["spend"]["clients"][client]["hourly"]["spent_usd"])


def timed(what: str, since: float, predicate: Any, timeout: float) -> None:
    """wait_for, and print how long after `since` (monotonic) the condition held (-s shows it)."""
    wait_for(predicate, timeout=max(0.05, since + timeout - time.monotonic()))
    print(f"\n{what}: {time.monotonic() - since:.2f} s (bound {timeout:g} s)")


# -- one Redis, one simulator, two replicas for the sharing tests ----------------------------

@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    with running_redis() as server:
        yield server


@pytest.fixture(scope="module")
def sim() -> Iterator[str]:
    with running_sim(SimOptions(seed=7)) as root:
        yield root


@pytest.fixture(scope="module")
def pair(
    sim: str, redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Replica]]:
    folder = tmp_path_factory.mktemp("replicas")
    path = folder / "gateway.toml"
    path.write_text(config_text(sim, redis_server.url, "rep:"))
    replicas = start_replicas(folder, {"A": path, "B": path},
                              {"A": "sk-replica-aaaa", "B": "sk-replica-bbbb"})
    yield replicas
    for replica in replicas.values():
        replica.process.stop()


def test_hourly_limit_holds_across_replicas_under_200_concurrent_requests(
    pair: dict[str, Replica], redis_server: RedisServer
) -> None:
    async def one(client: openai.AsyncOpenAI) -> tuple[int, str | None]:
        try:
            await client.chat.completions.create(
                model="spend", max_tokens=24, messages=[{"role": "user", "content": "hi"}]
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc.code
        return 200, None

    async def burst() -> list[tuple[int, str | None]]:
        clients = [openai.AsyncOpenAI(base_url=f"{r.root}/v1", api_key=KEYS["limited"],
                                      max_retries=0, timeout=30) for r in pair.values()]
        results = await asyncio.gather(*(one(c) for c in clients * 100))
        for client in clients:
            await client.close()
        return results

    results = asyncio.run(burst())
    admitted = results.count((200, None))
    refused = results.count((429, "spend_limit_exceeded"))
    assert (admitted, refused) == (50, 150), results  # $1.21 holds 50 requests of $0.024
    micros = redis_spend_micros(redis_server.url, "rep:", "client:limited")
    assert micros == 50 * 24_000 <= 1_210_000
    for replica in pair.values():  # each replica reports the cluster's window, not its own
        assert hourly_spent(replica, "limited") == pytest.approx(50 * COST_USD)


def test_breaker_trip_reaches_the_other_replica_and_one_probe_runs_across_both(
    pair: dict[str, Replica], sim: str
) -> None:
    a, b = pair["A"], pair["B"]
    sim_script(sim, [{"status": 500}] * 3, model="flaky-up")
    assert [a.call("flaky")[0] for _ in range(3)] == [502, 502, 502]
    tripped = time.monotonic()
    timed("B sees A's trip", tripped, lambda: b.circuit("flaky") == "open", STALENESS_SECS)
    since = last_seq(sim)
    assert b.call("flaky") == (503, "no_backend_available")
    assert upstream_calls(sim, since, "flaky") == []  # B skipped the model

    # After the cooldown a slow probe holds the half-open window while both replicas are asked.
    sim_script(sim, [{"headers_delay_ms": 800}], model="flaky-up")
    time.sleep(max(0.0, tripped + COOLDOWN_SECS + 0.2 - time.monotonic()))  # a clock, not a state
    since = last_seq(sim)

    async def ask_both() -> list[tuple[int, str | None]]:
        calls = [asyncio.to_thread(r.call, "flaky") for r in (a, b) * 8]
        return await asyncio.gather(*calls)

    results = asyncio.run(ask_both())
    assert len(upstream_calls(sim, since, "flaky")) == 1, results
    assert results.count((200, None)) == 1
    wait_for(lambda: a.circuit("flaky") == b.circuit("flaky") == "closed", timeout=STALENESS_SECS)

    # A failed probe re-opens the circuit everywhere: B, whose view may still be from before
    # the probe, must not send a second one during the fresh cooldown.
    sim_script(sim, [{"status": 500}] * 4, model="flaky-up")
    assert [a.call("flaky")[0] for _ in range(3)] == [502, 502, 502]
    tripped = time.monotonic()
    wait_for(lambda: b.circuit("flaky") == "open", timeout=STALENESS_SECS)
    time.sleep(max(0.0, tripped + COOLDOWN_SECS + 0.2 - time.monotonic()))
    since = last_seq(sim)
    assert a.call("flaky")[0] == 502  # the probe, and it fails
    until = time.monotonic() + 1.2
    while time.monotonic() < until:
        assert b.call("flaky") == (503, "no_backend_available")
    assert len(upstream_calls(sim, since, "flaky")) == 1
    assert b.circuit("flaky") == "open"


def test_key_cooled_by_a_429_on_one_replica_is_skipped_by_the_other(
    pair: dict[str, Replica], sim: str
) -> None:
    a, b = pair["A"], pair["B"]
    since = last_seq(sim)
    sim_script(sim, [{"status": 429, "retry_after": 30}], model="keyed-up")
    assert a.call("keyed") == (200, None)  # A moves to its other key at once
    cooled = time.monotonic()
    first, second = upstream_calls(sim, since, "keyed")
    assert (first["status"], second["status"]) == (429, 200)
    cooling, other = first["auth"], second["auth"]
    assert cooling != other
    ref = next(row["ref"] for row in a.status()["keys"]["keyed"] if row["cooldown_secs"] > 0)

    def b_sees_cooldown() -> bool:
        rows = {row["ref"]: row for row in b.status()["keys"]["keyed"]}
        return rows[ref]["cooldown_secs"] > 20 and not rows[ref]["available"]

    timed("B sees A's key cooldown", cooled, b_sees_cooldown, STALENESS_SECS)
    since = last_seq(sim)
    assert [b.call("keyed") for _ in range(6)] == [(200, None)] * 6
    assert {r["auth"] for r in upstream_calls(sim, since, "keyed")} == {other}

    def key_stats(replica: Replica) -> dict[str, tuple[int, int]]:
        rows = replica.status()["keys"]["keyed"]
        return {row["ref"]: (row["requests"], row["rate_limits"]) for row in rows}

    # Key load is cluster-wide too: B counts the 429 it never got itself, A counts B's calls.
    wait_for(lambda: key_stats(a) == key_stats(b), timeout=STALENESS_SECS)
    assert key_stats(b)[ref] == (1, 1)
    assert sum(requests for requests, _ in key_stats(a).values()) == 8


def test_learned_statistics_are_cluster_wide(pair: dict[str, Replica]) -> None:
    a, b = pair["A"], pair["B"]
    assert [a.call("stats") for _ in range(5)] == [(200, None)] * 5
    done = time.monotonic()

    def calls(replica: Replica) -> int:
        stats = replica.status()["models"]["stats"]["stats"]
        return int(stats.get("generate", {}).get("calls", 0))

    timed("B counts A's calls", done, lambda: calls(b) == 5, STALENESS_SECS)
    assert calls(a) == 5


def test_workers_share_state_through_redis(
    sim: str, redis_server: RedisServer, tmp_path: Path
) -> None:
    path = tmp_path / "workers.toml"
    path.write_text(config_text(sim, redis_server.url, "workers:"))
    gateway = start_gateway(path, env={**BASE_ENV, "SIM_KEY": "sk-workers"},
                            args=["--workers", "2"], log_dir=tmp_path)
    try:
        wait_for(lambda: len(worker_pids(gateway)) == 2, timeout=20)
        wait_for(lambda: _ready_on_fresh_connections(gateway), timeout=20)
        n = 24

        # A connection per request, so that the kernel spreads them over the workers.
        with httpx.Client(limits=httpx.Limits(max_keepalive_connections=0)) as http:

            async def spread() -> list[int]:
                return await asyncio.gather(*(asyncio.to_thread(_fresh_call, http, gateway)
                                              for _ in range(n)))

            assert asyncio.run(spread()) == [200] * n

        def all_report_every_call() -> list[tuple[float, int]] | None:
            views = [_worker_view(gateway) for _ in range(10)]
            return views if all(calls == n for _, calls in views) else None

        # Whichever worker answers reports the calls of both, synced through Redis ...
        views = wait_for(all_report_every_call, timeout=2 * STALENESS_SECS)
        # ... including a worker that served fewer of them itself (its own request counter).
        assert any(served < n for served, _ in views), views
    finally:
        assert gateway.stop() == 0, gateway.log_tail()



def _fresh_call(http: httpx.Client, gateway: GatewayProcess) -> int:
    body = {"model": "stats", "max_tokens": 24, "messages": [{"role": "user", "content": "w"}]}
    headers = {"Authorization": f"Bearer {KEYS['free']}", "X-Gateway-Task": "generate"}
    return http.post(f"{gateway.root}/v1/chat/completions", json=body, headers=headers,
                     timeout=20).status_code


def _ready_on_fresh_connections(gateway: GatewayProcess) -> bool:
    return all(httpx.get(f"{gateway.root}/readyz", headers={"Connection": "close"},
                         timeout=5).status_code == 200 for _ in range(6))


def _worker_view(gateway: GatewayProcess) -> tuple[float, int]:
    """(requests this worker served itself, calls it reports), over one connection = one
    worker."""
    with httpx.Client(base_url=gateway.root, timeout=5,
                      headers={"Authorization": f"Bearer {ADMIN}"}) as client:
        metrics = client.get("/metrics").text
        stats = client.get("/admin/status").json()["models"]["stats"]["stats"]
    served = sum(float(line.rsplit(" ", 1)[1]) for line in metrics.splitlines()
                 if line.startswith('gateway_requests_total{') and 'model="stats"' in line)
    return served, int(stats.get("generate", {}).get("calls", 0))


def test_workers_refuse_the_memory_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "memory.toml"
    path.write_text('[state]\nbackend = "memory"\n')
    assert main(["serve", "--config", str(path), "--workers", "2"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "state.backend" in lines[0] and str(path) in lines[0], lines


# -- Redis down: at start, and killed mid-load ------------------------------------------------

@dataclass
class Load:
    """Requests sent in a loop from background threads until stopped: (replica, client, result)."""

    replicas: dict[str, Replica]
    results: list[tuple[str, str, tuple[int, str | None]]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for replica in self.replicas.values():
            for client in ("free", "limited"):
                thread = threading.Thread(target=self._loop, args=(replica, client), daemon=True)
                thread.start()
                self._threads.append(thread)

    def _loop(self, replica: Replica, client: str) -> None:
        while not self._stop.is_set():
            self.results.append((replica.name, client, replica.call("outage", client)))

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)

    def of(self, replica: str, client: str) -> list[tuple[int, str | None]]:
        return [r for name, c, r in self.results if (name, c) == (replica, client)]


def test_redis_down_at_start_and_killed_mid_load(sim: str, tmp_path: Path) -> None:
    closed, opened = tmp_path / "closed.toml", tmp_path / "open.toml"
    server = RedisServer(redis_binary(), tmp_path, free_port())  # not started yet
    closed.write_text(config_text(sim, server.url, "out:", "fail_closed", hourly=1000.0))
    opened.write_text(config_text(sim, server.url, "out:", "fail_open", hourly=1000.0))
    replicas = start_replicas(tmp_path, {"C": closed, "O": opened},
                              {"C": "sk-replica-cccc", "O": "sk-replica-oooo"})
    c, o = replicas["C"], replicas["O"]
    refused = (503, "spend_store_unavailable")
    try:
        # Started with Redis down: alive, not ready; spend per policy; unlimited traffic served.
        assert (c.ready(), o.ready()) == (503, 503)
        assert c.call("outage", "limited") == refused
        assert o.call("outage", "limited") == (200, None)
        assert (c.call("outage", "free"), o.call("outage", "free")) == ((200, None),) * 2

        server.start()
        back = time.monotonic()
        timed("ready after Redis came up", back, lambda: c.ready() == o.ready() == 200, 5)
        # What the fail_open replica recorded locally reached Redis.
        timed("spend recorded while down is in Redis", back,
              lambda: hourly_spent(c, "limited") == pytest.approx(COST_USD), 10)

        load = Load(replicas)
        load.start()
        wait_for(lambda: len(load.results) >= 20, timeout=10)
        server.stop()  # kill -9, mid-load
        killed = time.monotonic()
        timed("not ready after the kill", killed, lambda: c.ready() == o.ready() == 503, 5)
        # Known outage: this client's spend lands in Redis only by replay.
        outage = [r.call("outage", "outage") for r in (c, o) * 5]
        assert outage == [(200, None)] * 10
        assert (c.ready(), o.ready()) == (503, 503)

        server.start()  # same port, empty dataset
        back = time.monotonic()
        timed("ready after the restart", back, lambda: c.ready() == o.ready() == 200, 5)
        load.stop()
        timed("outage spend replayed", back, lambda: redis_spend_micros(
            server.url, "out:", "client:outage") == 10 * 24_000, 10)
        assert hourly_spent(o, "outage") == pytest.approx(10 * COST_USD)
    finally:
        for replica in replicas.values():
            replica.process.stop()
        server.stop()

    for name in ("C", "O"):  # unlimited traffic never failed because of Redis
        assert set(load.of(name, "free")) == {(200, None)}
    assert set(load.of("O", "limited")) == {(200, None)}  # fail_open admits
    assert set(load.of("C", "limited")) == {(200, None), refused}  # fail_closed refuses
