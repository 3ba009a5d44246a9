"""`gateway serve` as a real process: SIGTERM drains streams, saves state and exits 0.

The gateway runs as `python -m gateway serve --config <toml>` against an in-test simulator
whose tokens are slow, so a stream is surely in flight when the signal arrives. Also here:
every line the process writes to stderr is JSON, and a missing or invalid config is one line
and exit status 2.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import orjson
import pytest

from gateway.config.loader import load_config
from gateway.sim.options import Faults, SimOptions
from gateway.sim.testing import running_sim, wait_for
from gateway.sim.text import full_answer
from tests.harness import running_gateway
from tests.procs import child_env, running_gateway_process

PROMPT = "drain me gently"
TOKENS = 24
INPUT_PER_MTOK = 1000.0
OUTPUT_PER_MTOK = 2000.0


def write_config(folder: Path, sim_root: str, drain_secs: float) -> Path:
    path = folder / "gateway.toml"
    path.write_text(f"""
[server]
drain_timeout_secs = {drain_secs}

[state]
path = "state.db"

[[backends]]
name = "sim"
base_url = "{sim_root}/v1"
timeout_secs = 10

[[models]]
id = "slow"
backend = "sim"
input_per_mtok = {INPUT_PER_MTOK}
output_per_mtok = {OUTPUT_PER_MTOK}
""")
    return path


def refuses_connections(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
    except OSError:
        return True
    return False


def open_stream(port: int) -> tuple[httpx.Client, Iterator[str]]:
    client = httpx.Client(timeout=20)
    request = client.build_request(
        "POST", f"http://127.0.0.1:{port}/v1/chat/completions",
        json={"model": "slow", "messages": [{"role": "user", "content": PROMPT}],
              "stream": True, "stream_options": {"include_usage": True}},
    )
    response = client.send(request, stream=True)
    assert response.status_code == 200
    return client, (line for line in response.iter_lines() if line.startswith("data: "))


def test_sigterm_lets_the_stream_finish_saves_state_and_exits_0(tmp_path: Path) -> None:
    with running_sim(SimOptions(faults=Faults(token_delay_ms=60))) as sim:
        config = write_config(tmp_path, sim, drain_secs=20)
        with running_gateway_process(config, log_dir=tmp_path) as gateway:
            client, events = open_stream(gateway.port)
            received = [next(events)]
            gateway.process.send_signal(signal.SIGTERM)
            # Stops accepting at once, while the stream is still going.
            wait_for(lambda: refuses_connections(gateway.port), timeout=5.0, interval=0.05)
            assert gateway.running
            received += list(events)
            client.close()
            assert gateway.process.wait(timeout=15) == 0
        output = gateway.log_path.read_text()
    assert received[-1] == "data: [DONE]" and received.count("data: [DONE]") == 1
    chunks = [orjson.loads(line.removeprefix("data: ")) for line in received[:-1]]
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == full_answer(PROMPT, TOKENS)
    usage = chunks[-1]["usage"]
    cost = (usage["prompt_tokens"] * INPUT_PER_MTOK
            + usage["completion_tokens"] * OUTPUT_PER_MTOK) / 1_000_000

    entries = [orjson.loads(line) for line in output.splitlines() if line.strip()]  # all JSON
    served = [e for e in entries if e.get("event") == "request"]
    assert len(served) == 1
    assert served[0]["status"] == 200 and served[0]["stream_end"] == "complete"
    assert served[0]["model"] == "slow" and served[0]["cost_usd"] == pytest.approx(cost)
    assert PROMPT not in output
    assert any(e["level"] == "WARNING" and "no client keys" in e["msg"] for e in entries
               if "msg" in e)

    # The state file holds the stream's spend: a new gateway on it reports it.
    assert (tmp_path / "state.db").is_file()
    reloaded = load_config(config, env={})
    with running_gateway(reloaded, env={"GATEWAY_ADMIN_KEY": "adm"}) as root:
        status = httpx.get(f"{root}/admin/status",
                           headers={"Authorization": "Bearer adm"}).json()
    assert status["spend"]["global"]["daily"]["spent_usd"] == pytest.approx(cost, rel=1e-3)


def test_the_drain_is_bounded_by_drain_timeout_secs(tmp_path: Path) -> None:
    with running_sim(SimOptions(faults=Faults(token_delay_ms=500))) as sim:
        config = write_config(tmp_path, sim, drain_secs=0.5)
        with running_gateway_process(config, log_dir=tmp_path) as gateway:
            client, events = open_stream(gateway.port)
            received = [next(events)]
            signalled = time.monotonic()
            gateway.process.send_signal(signal.SIGTERM)
            assert gateway.process.wait(timeout=10) == 0
            elapsed = time.monotonic() - signalled
            with contextlib.suppress(httpx.HTTPError):
                received += list(events)
            client.close()
        output = gateway.log_path.read_text()
    # A 12 s stream was cut after the drain timeout (plus shutdown), not waited for.
    assert elapsed < 5.0
    assert "data: [DONE]" not in received
    # uvicorn's own complaint about the cut is a JSON line like every other.
    entries = [orjson.loads(line) for line in output.splitlines() if line.strip()]
    assert any(e["logger"].startswith("uvicorn") and e["level"] == "ERROR" for e in entries)


def test_missing_or_invalid_config_is_one_line_and_exit_2(tmp_path: Path) -> None:
    bad_port = tmp_path / "bad.toml"
    bad_port.write_text('[server]\nport = "eighty"\n')
    bad_level = tmp_path / "level.toml"
    bad_level.write_text('[server]\nlog_level = "LOUD"\n')
    cases = [
        (tmp_path / "missing.toml", "missing.toml"),
        (bad_port, "server.port"),
        (bad_level, "server.log_level"),
    ]
    for path, named in cases:
        done = subprocess.run(
            [sys.executable, "-m", "gateway", "serve", "--config", str(path)],
            cwd=tmp_path, env=child_env(), capture_output=True, timeout=30,
        )
        stderr = done.stderr.decode()
        assert done.returncode == 2, stderr
        assert len(stderr.strip().splitlines()) == 1, stderr
        assert str(path.name) in stderr and named in stderr
        assert "Traceback" not in stderr and done.stdout == b""
