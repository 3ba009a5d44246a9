"""Learning over the real MemoryStore + SQLite file: restarts, priors on restart, start checks.

A "restart" here is what the runtime does: close the store (its final snapshot), then a new
MemoryStore on the same file and a new Learning that loads from it.
"""

from __future__ import annotations

import logging
import random
import sqlite3
from pathlib import Path

import orjson
import pytest

from gateway.config.errors import ConfigError
from gateway.config.models import (
    BackendConfig,
    GatewayConfig,
    Mode,
    ModelConfig,
    RoutingConfig,
    StateConfig,
    Task,
)
from gateway.learning import Learning, Router, check_learned_state
from gateway.outcome import AttemptOutcome, Signal
from gateway.routing.stats import QualitySignal, StatsBook
from gateway.routing.tasks import TaskEstimate
from gateway.sim.demo import demo_models
from gateway.store.base import StoreCorrupt
from gateway.store.memory import MemoryStore

NOW = 1_700_000_000.0


def clock() -> float:
    return NOW


def config(tmp: Path, priors: object | None = None, name: str = "priors.json") -> GatewayConfig:
    priors_file = None
    if priors is not None:
        priors_file = tmp / name
        priors_file.write_bytes(orjson.dumps(priors))
    return GatewayConfig(
        backends=(BackendConfig(name="b", base_url="http://127.0.0.1:9/v1"),),
        models=(ModelConfig(id="seen", backend="b"), ModelConfig(id="unseen", backend="b")),
        state=StateConfig(path=tmp / "state.db"),
        routing=RoutingConfig(priors_file=priors_file, prior_weight=20),
    )


def outcome(model: str, task: Task, signal: Signal, latency_s: float = 0.4) -> AttemptOutcome:
    return AttemptOutcome(
        request_id="r", client=None, model=model, backend="b", key_ref=None, task=task,
        signal=signal, status=200, error_kind=None, started_at=NOW, latency_s=latency_s,
        ttft_s=0.1, prompt_tokens=10, completion_tokens=30,
    )


async def started(cfg: GatewayConfig) -> tuple[MemoryStore, Learning]:
    store = MemoryStore(cfg.state.path, 60.0, clock)
    await store.start()
    learning = Learning(cfg, store, clock)
    await learning.load()
    return store, learning


def snapshot(book: StatsBook) -> dict[str, float]:
    """Every number of every entry, flat (pytest.approx compares flat mappings)."""
    out: dict[str, float] = {}
    for m, t, e in book.items():
        for field in ("alpha", "beta", "calls", "latency_ms_ema", "ttft_ms_ema", "quality_ema",
                      "base_alpha", "base_beta"):
            out[f"{m}|{t.value}.{field}"] = float(getattr(e, field) or 0.0)
    return out


def entry_of(book: StatsBook, model: str, task: Task) -> dict[str, float]:
    prefix = f"{model}|{task.value}."
    return {k: v for k, v in snapshot(book).items() if k.startswith(prefix)}


async def test_statistics_survive_a_restart(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    store, learning = await started(cfg)
    for signal in (Signal.SUCCESS, Signal.SUCCESS, Signal.SERVER_ERROR, Signal.TIMEOUT):
        learning.on_outcome(outcome("seen", Task.CODE, signal))
    learning.on_outcome(outcome("seen", Task.GENERATE, Signal.SUCCESS, latency_s=0.9))
    learning.book.feedback("seen", Task.CODE, 0.0, replaces_success=True)
    await learning.sync()
    before = snapshot(learning.book)
    reliability = learning.book.reliability("seen")
    status = learning.status_of("seen")
    await store.close()

    store, again = await started(cfg)
    try:
        assert snapshot(again.book) == pytest.approx(before)
        assert again.book.reliability("seen") == pytest.approx(reliability)
        assert again.status_of("seen") == status
        assert status["code"]["calls"] == 4 and set(status) == {"code", "generate"}
    finally:
        await store.close()


async def test_unsynced_outcomes_are_saved_at_shutdown_by_the_runtime_order(
    tmp_path: Path,
) -> None:
    """The runtime's stop runs a last sync before closing the store: nothing is lost."""
    cfg = config(tmp_path)
    store, learning = await started(cfg)
    learning.on_outcome(outcome("seen", Task.REASONING, Signal.SUCCESS))
    await learning.sync()
    await store.close()
    with sqlite3.connect(tmp_path / "state.db") as db:
        rows = db.execute(
            "SELECT value FROM counters WHERE kind = 'stats' AND name = 'seen|reasoning' "
            "AND field = 'calls'"
        ).fetchall()
    assert rows == [(1.0,)]


async def test_priors_seed_only_models_without_observed_calls(tmp_path: Path) -> None:
    first = [{"model_id": "seen", "overall_score": 0.9}, {"model_id": "unseen",
                                                          "overall_score": 0.9}]
    store, learning = await started(config(tmp_path, first))
    assert learning.book.posterior_mean("seen", Task.CODE) == pytest.approx(19 / 22)
    learning.on_outcome(outcome("seen", Task.CODE, Signal.SUCCESS))
    await learning.sync()
    learned = entry_of(learning.book, "seen", Task.CODE)
    await store.close()

    # A restart with a very different benchmark: "seen" keeps what it learned (seed + one
    # success), "unseen" (never served) takes the new prior.
    second = [{"model_id": "seen", "overall_score": 0.1}, {"model_id": "unseen",
                                                           "overall_score": 0.2}]
    store, again = await started(config(tmp_path, second, name="other.json"))
    try:
        assert entry_of(again.book, "seen", Task.CODE) == pytest.approx(learned)
        assert again.book.posterior_mean("unseen", Task.CODE) == pytest.approx(5 / 22)
        status = again.status_of("unseen")
        assert status["code"]["calls"] == 0  # seeded: listed, with no observed calls
    finally:
        await store.close()


async def test_missing_priors_file_is_a_log_line_not_an_error(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = config(tmp_path).model_copy(
        update={"routing": RoutingConfig(priors_file=tmp_path / "nope.json")}
    )
    with caplog.at_level(logging.INFO, logger="gateway.routing"):
        store, learning = await started(cfg)
    await store.close()
    assert any("nope.json" in r.getMessage() and "priors" in r.getMessage()
               for r in caplog.records)
    assert learning.status_of("seen") == {}
    check_learned_state(cfg)  # missing is fine at start too


def test_start_check_rejects_malformed_priors(tmp_path: Path) -> None:
    bad = tmp_path / "priors.json"
    for content in (b"{not json", orjson.dumps({"model_id": "seen", "overall_score": 3})):
        bad.write_bytes(content)
        cfg = config(tmp_path).model_copy(update={"routing": RoutingConfig(priors_file=bad)})
        with pytest.raises(ConfigError) as caught:
            check_learned_state(cfg)
        assert "routing.priors_file" in str(caught.value)
        assert "\n" not in str(caught.value)


def test_start_check_rejects_corrupt_and_foreign_state_files(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    state = cfg.state.path
    state.write_bytes(b"this is not a database, it is a shopping list\n" * 20)
    with pytest.raises(StoreCorrupt, match="not an SQLite database"):
        check_learned_state(cfg)
    assert state.read_bytes().startswith(b"this is not a database")  # never reset
    state.unlink()
    with sqlite3.connect(state) as db:
        db.execute("CREATE TABLE invoices (id INTEGER)")
    with pytest.raises(StoreCorrupt, match="schema"):
        check_learned_state(cfg)
    state.unlink()
    check_learned_state(cfg)  # absent: a fresh file with our schema
    check_learned_state(cfg)  # and that one is accepted


def test_router_passes_reliability_and_keeps_every_candidate() -> None:
    models = [ModelConfig(id=m, backend="b", input_per_mtok=1.0, output_per_mtok=1.0)
              for m in ("steady", "flaky")]
    book = StatsBook(models=["steady", "flaky"])
    for m in ("steady", "flaky"):
        book.seed(m, Task.CODE, 0.8, 500.0, weight=500)
    for _ in range(30):
        book.record("flaky", Task.GENERATE, QualitySignal.SERVER_ERROR)  # another task
    router = Router(book, random.Random(4))
    estimate = TaskEstimate(Task.CODE, 0.5)
    firsts = [router.rank(models, Mode.AUTO, estimate, 100, 100, None)[0].id for _ in range(50)]
    # Its code posterior is untouched; the pooled health is what sends it down.
    assert firsts.count("steady") == 50
    assert sorted(m.id for m in router.rank(models, Mode.BEST, estimate, 1, 1, None)) == [
        "flaky", "steady"
    ]


def test_demo_priors_describe_the_demo_models() -> None:
    from gateway.demo import DEMO_PRIORS
    from gateway.routing.priors import load_priors

    priors = load_priors(DEMO_PRIORS)
    for model in demo_models():
        prior = priors[model.name]
        for task in Task:
            assert prior.quality(task) == pytest.approx(model.quality_for(task.value))
