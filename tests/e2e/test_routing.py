"""Adaptive routing through the real HTTP path: modes, task override, `tasks`, visibility.

The priors file makes the posteriors nearly points (prior_weight 2000), so which model each
mode picks is decided by the scoring maths, not by the luck of a Thompson draw:
- strong: 0.95 everywhere, expensive; cheap: 0.85 on generate, 0.9 on classify, 0.4 on code
  and reasoning, 1000x cheaper; labeller: 0.99 everywhere and free, but it only serves
  `classify`; plain: no prior, serves only `embed`, so auto never sends it chat.
- code (a long prompt): auto and best take strong, fast takes cheap (55 points of quality
  weigh less than 10 cost doublings there); generate: auto and fast take cheap, best strong.
Margins: every pick asserted here wins by several standard deviations of the sampled loss,
also when the measured latencies (one sim serves all models, so they differ only by noise)
happen to favour the other model by a factor of six.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.models import RoutingConfig
from gateway.sim.testing import sim_requests, sim_script, wait_for
from tests.harness import running_gateway, sim_config
from tests.procs import child_env, free_port, start_gateway

ADMIN = {"GATEWAY_ADMIN_KEY": "adm"}
CODE_PROMPT = "[task:code] refactor this module " + "so it reads well " * 60
GENERATE_PROMPT = "Write a short note to a friend."
CLASSIFY_PROMPT = "Classify the sentiment of this review: great product."


def models() -> list[dict[str, Any]]:
    return [
        {"id": "strong", "backend": "a", "input_per_mtok": 10.0, "output_per_mtok": 30.0},
        {"id": "cheap", "backend": "a", "input_per_mtok": 0.01, "output_per_mtok": 0.03},
        {"id": "labeller", "backend": "a", "tasks": ["classify"]},
        {"id": "plain", "backend": "a", "tasks": ["embed"]},
    ]


def priors() -> list[dict[str, Any]]:
    def result(model: str, scores: dict[str, float], latency: float) -> dict[str, Any]:
        cases = [{"category": c, "score": s, "latency_ms": latency} for c, s in scores.items()]
        return {"model_id": model, "avg_latency_ms": latency, "cases": cases}

    every = ("generate", "coding", "reasoning", "classification")
    return [
        result("strong", dict.fromkeys(every, 0.95), 300.0),
        result("cheap", {"generate": 0.85, "coding": 0.4, "analysis": 0.4, "classify": 0.9}, 50.0),
        result("labeller", dict.fromkeys(every, 0.99), 50.0),
    ]


def routed_config(sim: str, tmp: Path, **routing: Any) -> Any:
    priors_file = tmp / "priors.json"
    priors_file.write_bytes(orjson.dumps(priors()))
    return sim_config(
        {"a": sim}, models(), state_path=tmp / "state.db",
        routing=RoutingConfig(priors_file=priors_file, prior_weight=2000, **routing),
    )


@pytest.fixture(scope="module")
def gateway(sim_a: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with running_gateway(routed_config(sim_a, tmp_path_factory.mktemp("routing")),
                         env=ADMIN) as root:
        yield root


@functools.cache
def sdk(root: str) -> openai.OpenAI:
    """One SDK client per gateway: building one costs ~0.2 s (its TLS context)."""
    return openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0, timeout=10)


def chat(root: str, model: str, prompt: str, headers: dict[str, str] | None = None) -> Any:
    return sdk(root).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], extra_headers=headers or {},
    )


def picks(
    root: str, model: str, prompt: str, n: int = 6, headers: dict[str, str] | None = None
) -> set[str]:
    """The models named in x-gateway-model over n requests (checked against the body). Each
    prompt gets a nonce: the same prompt again would count as a retry of the previous one."""
    chosen = set()
    for _ in range(n):
        raw = chat(root, model, f"{prompt} [nonce:{uuid.uuid4().hex}]", headers)
        assert raw.parse().model == raw.headers["x-gateway-model"]  # no failover happened
        chosen.add(raw.headers["x-gateway-model"])
    return chosen


def metric(root: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def status(root: str) -> dict[str, Any]:
    response = httpx.get(f"{root}/admin/status", headers={"authorization": "Bearer adm"})
    assert response.status_code == 200
    return dict(response.json())


def test_each_mode_picks_by_its_weights(gateway: str) -> None:
    assert picks(gateway, "auto", CODE_PROMPT) == {"strong"}
    assert picks(gateway, "auto:best", CODE_PROMPT) == {"strong"}
    assert picks(gateway, "auto:fast", CODE_PROMPT) == {"cheap"}
    assert picks(gateway, "auto", GENERATE_PROMPT) == {"cheap"}
    assert picks(gateway, "auto:fast", GENERATE_PROMPT) == {"cheap"}
    assert picks(gateway, "auto:best", GENERATE_PROMPT) == {"strong"}


def test_mode_header_overrides_the_alias(gateway: str) -> None:
    best, fast = {"X-Gateway-Mode": "best"}, {"X-Gateway-Mode": "fast"}
    assert picks(gateway, "auto", GENERATE_PROMPT, headers=best) == {"strong"}
    assert picks(gateway, "auto:best", CODE_PROMPT, headers=fast) == {"cheap"}
    # The header never turns an explicit model into a routed request.
    assert picks(gateway, "cheap", CODE_PROMPT, n=2, headers=best) == {"cheap"}


def test_task_header_overrides_the_inferred_task(gateway: str) -> None:
    note = GENERATE_PROMPT + " It should be warm." * 12  # prose: inferred `generate`
    before = metric(gateway, "gateway_routing_decisions_total", mode="auto", task="code",
                    model="strong")
    assert picks(gateway, "auto", note, n=4) == {"cheap"}
    assert picks(gateway, "auto", note, n=4, headers={"X-Gateway-Task": "code"}) == {"strong"}
    assert metric(gateway, "gateway_routing_decisions_total", mode="auto", task="code",
                  model="strong") == before + 4


def test_a_model_is_only_routed_the_tasks_it_serves(gateway: str) -> None:
    # The labeller's prior says 0.99 on code and it is free, but it serves only classify.
    assert "labeller" not in picks(gateway, "auto:fast", CODE_PROMPT, n=8)
    assert "labeller" not in picks(gateway, "auto:best", GENERATE_PROMPT, n=8)
    assert picks(gateway, "auto", CLASSIFY_PROMPT, n=4) == {"labeller"}
    # Asked for by name, it serves any task (`tasks` limits the router only).
    assert picks(gateway, "labeller", CODE_PROMPT, n=1) == {"labeller"}
    assert picks(gateway, "plain", GENERATE_PROMPT, n=1) == {"plain"}


def test_excluded_model_is_not_a_failover_candidate(sim_a: str, tmp_path: Path) -> None:
    with running_gateway(routed_config(sim_a, tmp_path), env=ADMIN) as root:
        for model in ("strong", "cheap"):
            sim_script(sim_a, [{"status": 500}], model=model)
        with pytest.raises(openai.InternalServerError):
            chat(root, "auto", CODE_PROMPT)
        served = {r["body"]["model"] for r in sim_requests(sim_a) if r["path"].startswith("/v1")}
        assert served == {"strong", "cheap"}


def test_decisions_are_counted_by_mode_task_and_model(gateway: str) -> None:
    def count(mode: str, task: str, model: str) -> float:
        return metric(gateway, "gateway_routing_decisions_total", mode=mode, task=task,
                      model=model)

    before = {
        "fast": count("fast", "generate", "cheap"),
        "best": count("best", "code", "strong"),
        "explicit": count("explicit", "classify", "strong"),
    }
    picks(gateway, "auto:fast", GENERATE_PROMPT, n=3)
    picks(gateway, "auto", CODE_PROMPT, n=2, headers={"X-Gateway-Mode": "best"})
    picks(gateway, "strong", CLASSIFY_PROMPT, n=2)
    assert count("fast", "generate", "cheap") == before["fast"] + 3
    assert count("best", "code", "strong") == before["best"] + 2
    assert count("explicit", "classify", "strong") == before["explicit"] + 2


def test_status_lists_only_observed_or_seeded_tasks(gateway: str) -> None:
    models = status(gateway)["models"]
    seeded = {"generate", "code", "reasoning", "classify"}
    assert set(models["strong"]["stats"]) == seeded  # every task the benchmark measured
    assert set(models["plain"]["stats"]) <= {"generate"}  # no prior: only what it served
    picks(gateway, "plain", GENERATE_PROMPT, n=1)
    plain = status(gateway)["models"]["plain"]["stats"]
    assert set(plain) == {"generate"}
    entry = plain["generate"]
    assert entry["calls"] >= 1 and 0.5 < entry["quality"] < 1.0
    assert entry["latency_ms"] > 0.0 and "ttft_ms" in entry
    strong = models["strong"]["stats"]["code"]
    assert strong["quality"] == pytest.approx(0.95, abs=0.01)  # seeded, and barely moved


# -- learned state across restarts of the real `gateway serve` process ---------------------


def write_config(tmp: Path, sim: str, *, priors_file: Path | None = None) -> Path:
    lines = [
        "[state]", f'path = "{tmp / "state.db"}"', "snapshot_interval_secs = 0.3",
        "[routing]", *([f'priors_file = "{priors_file}"'] if priors_file else []),
        "[[backends]]", 'name = "a"', f'base_url = "{sim}/v1"',
        "[[models]]", 'id = "plain"', 'backend = "a"',
    ]
    path = tmp / "gateway.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def persisted_calls(state: Path, name: str = "plain|generate") -> float:
    """What the state file holds now (read-only: the running gateway owns the file)."""
    with contextlib.closing(sqlite3.connect(f"file:{state}?mode=ro", uri=True)) as db:
        row = db.execute(
            "SELECT value FROM counters WHERE kind = 'stats' AND name = ? AND field = 'calls'",
            (name,),
        ).fetchone()
    return 0.0 if row is None else float(row[0])


def test_kill_9_keeps_what_the_last_snapshot_held(sim_a: str, tmp_path: Path) -> None:
    config_file = write_config(tmp_path, sim_a)
    gateway = start_gateway(config_file, env=ADMIN, log_dir=tmp_path)
    try:
        for _ in range(3):
            picks(gateway.root, "plain", GENERATE_PROMPT, n=1)
        wait_for(lambda: persisted_calls(tmp_path / "state.db") == 3, timeout=10.0)
        before = status(gateway.root)["models"]["plain"]["stats"]["generate"]
        for _ in range(2):  # after the last snapshot: these may be lost, nothing else
            picks(gateway.root, "plain", GENERATE_PROMPT, n=1)
        gateway.kill()
    finally:
        gateway.stop()
    gateway = start_gateway(config_file, env=ADMIN, log_dir=tmp_path)
    try:
        after = status(gateway.root)["models"]["plain"]["stats"]["generate"]
    finally:
        gateway.stop()
    assert 3 <= after["calls"] <= 5
    if after["calls"] == 3:
        assert after["quality"] == pytest.approx(before["quality"])
    assert after["quality"] >= before["quality"]  # only successes were added


def serve_once(config_file: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "gateway", "serve", "--config", str(config_file),
         "--port", str(free_port())],
        env=child_env(), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )


def test_bad_state_or_priors_file_is_one_line_and_exit_2(sim_a: str, tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    state.write_bytes(b"my notes, not a database\n" * 40)
    result = serve_once(write_config(tmp_path, sim_a))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and str(state) in lines[0], result.stderr
    assert "not an SQLite database" in lines[0]
    assert state.read_bytes().startswith(b"my notes")  # never reset

    state.unlink()
    with contextlib.closing(sqlite3.connect(state)) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
        db.commit()
    result = serve_once(write_config(tmp_path, sim_a))
    assert result.returncode == 2 and "schema" in result.stderr, result.stderr
    state.unlink()

    priors_file = tmp_path / "priors.json"
    priors_file.write_text('[{"model_id": "plain", "overall_score": "high"}]')
    result = serve_once(write_config(tmp_path, sim_a, priors_file=priors_file))
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "routing.priors_file" in lines[0], result.stderr
    assert "overall_score" in lines[0]
