"""The routing benchmark's world: simulated models, their processes, and the gateway's config.

The four models are the demo set (gateway/sim/demo.py: sim-strong, sim-mid, sim-cheap,
sim-flaky) with the demo's per-task quality, prices and latencies. The flaky model runs on its
own `gateway sim` process, healthy at first: the benchmark makes it fail by switching that
process's global faults (`POST /_sim/faults`), which touches no other model. The gateway gets
the demo's benchmark priors (gateway/sim/demo_priors.json), which say nothing about flakiness.

Invariant: every process started here is stopped through its own pid (`Process.stop`).
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import orjson

from gateway.demo import DEMO_PRIORS
from gateway.sim.demo import demo_models
from gateway.sim.options import Faults, SimModel

TASKS = ("generate", "code", "reasoning", "classify")
FLAKY = "sim-flaky"
# What "starts failing" means: the demo's flaky model's error rate (its stream cuts do not
# apply to this benchmark's non-streaming requests).
FAILING = {"error_rate": 0.2}
START_TIMEOUT_SECS = 30.0


def models() -> tuple[SimModel, ...]:
    """The demo models, the flaky one healthy (the benchmark turns its faults on later)."""
    return tuple(
        dataclasses.replace(m, faults=Faults()) if m.name == FLAKY else m for m in demo_models()
    )


def true_quality(model: SimModel) -> float:
    """Expected fraction correct over the benchmark's uniform task mix."""
    return sum(model.quality_for(t) for t in TASKS) / len(TASKS)


@dataclass
class Process:
    name: str
    popen: subprocess.Popen[bytes]
    root: str

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=5)


def start_sim(name: str, sims: tuple[SimModel, ...], port: int, folder: Path) -> Process:
    """`gateway sim` serving exactly `sims`, on `port`; returns once /_sim/health answers."""
    models_file = folder / f"{name}-models.json"
    models_file.write_bytes(orjson.dumps([_model_dict(m) for m in sims]))
    log = (folder / f"{name}.log").open("ab")
    popen = subprocess.Popen(
        [sys.executable, "-m", "gateway", "sim", "--host", "127.0.0.1", "--port", str(port),
         "--models-file", str(models_file), "--strict-models", "--seed", "1"],
        stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
    )
    process = Process(name, popen, f"http://127.0.0.1:{port}")
    _wait_up(process, "/_sim/health")
    return process


def _model_dict(model: SimModel) -> dict[str, object]:
    data = dataclasses.asdict(model)
    data["quality"] = dict(model.quality)
    return data


def _wait_up(process: Process, path: str) -> None:
    deadline = time.monotonic() + START_TIMEOUT_SECS
    with httpx.Client(timeout=1.0, trust_env=False) as client:
        while True:
            if process.popen.poll() is not None:
                raise RuntimeError(f"{process.name} exited with {process.popen.returncode}")
            try:
                if client.get(process.root + path).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{process.name} did not start within {START_TIMEOUT_SECS} s")
            time.sleep(0.05)  # polling interval, not a wait for readiness


def gateway_config(folder: Path, arm: str, main_sim: str, flaky_sim: str, priors: bool) -> Path:
    """The gateway's TOML for one arm: a fresh state file, no fallbacks (a single-model arm
    must be that model alone), the demo priors unless `priors` is off."""
    lines = [
        "[server]", 'log_level = "WARNING"',
        "[routing]", *([f'priors_file = "{DEMO_PRIORS}"'] if priors else []),
        "[spend]", "default_output_tokens = 64",
        "[state]", f'path = "{folder / f"{arm}-state.db"}"',
        "[[backends]]", 'name = "main"', f'base_url = "{main_sim}/v1"', "timeout_secs = 10",
        "[[backends]]", 'name = "flaky"', f'base_url = "{flaky_sim}/v1"', "timeout_secs = 10",
    ]
    for model in models():
        lines += [
            "[[models]]", f'id = "{model.name}"',
            f'backend = "{"flaky" if model.name == FLAKY else "main"}"',
            f"input_per_mtok = {model.input_per_mtok}",
            f"output_per_mtok = {model.output_per_mtok}",
            f"tasks = {list(TASKS)!r}".replace("'", '"'),
        ]
    path = folder / f"{arm}.toml"
    path.write_text("\n".join(lines) + "\n")
    return path
