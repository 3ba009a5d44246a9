"""StatsBook: signal deltas, feedback replacement, seeding rules, health, merge, persistence."""

from __future__ import annotations

import orjson
import pytest

from gateway.config.models import Task
from gateway.routing.stats import (
    SIGNAL_DELTAS,
    QualitySignal,
    StatsBook,
    parse_stats_key,
    stats_key,
)

M, T = "model-a", Task.CODE


def book(**kwargs: object) -> StatsBook:
    return StatsBook(memory=None, **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("signal", "d_alpha", "d_beta"),
    [
        (QualitySignal.SUCCESS, 1.0, 0.0),
        (QualitySignal.RATE_LIMITED, 0.0, 0.3),
        (QualitySignal.SERVER_ERROR, 0.0, 0.8),
        (QualitySignal.CLIENT_ERROR, 0.0, 0.2),
        (QualitySignal.TIMEOUT, 0.0, 0.5),
        (QualitySignal.RETRIED, 0.0, 0.7),
    ],
)
def test_signal_deltas(signal: QualitySignal, d_alpha: float, d_beta: float) -> None:
    b = book()
    b.record(M, T, signal)
    entry = b.get(M, T)
    assert entry is not None
    assert (entry.alpha, entry.beta) == pytest.approx((1.0 + d_alpha, 1.0 + d_beta))
    assert SIGNAL_DELTAS[signal] == pytest.approx(d_alpha - d_beta)
    # `retried` judges an earlier attempt: evidence, but not a call.
    assert entry.calls == (0 if signal is QualitySignal.RETRIED else 1)


def test_unknown_entry_is_neutral() -> None:
    b = book()
    assert b.get(M, T) is None
    assert b.posterior(M, T) == (1.0, 1.0)
    assert b.posterior_mean(M, T) == 0.5


def test_rated_zero_after_success_is_a_failure() -> None:
    b = book()
    b.record(M, T, QualitySignal.SUCCESS)
    b.feedback(M, T, 0.0, replaces_success=True)
    assert b.posterior(M, T) == (1.0, 2.0)  # one failure, not half a success
    assert b.get(M, T).calls == 1  # type: ignore[union-attr]


def test_feedback_without_recorded_success_only_adds() -> None:
    b = book()
    b.feedback(M, T, 0.25, replaces_success=False)
    assert b.posterior(M, T) == (1.25, 1.75)


def test_rerating_replaces_the_previous_score() -> None:
    b = book()
    b.record(M, T, QualitySignal.SUCCESS)
    b.feedback(M, T, 0.0, replaces_success=True)
    b.feedback(M, T, 1.0, replaces_success=False, replaces_score=0.0)
    assert b.posterior(M, T) == (2.0, 1.0)


def test_feedback_takes_back_a_retry_penalty() -> None:
    b = book()
    b.record(M, T, QualitySignal.SUCCESS)
    b.record(M, T, QualitySignal.RETRIED)
    b.feedback(M, T, 1.0, replaces_success=True, replaces_retry=True)
    assert b.posterior(M, T) == pytest.approx((2.0, 1.0))


def test_feedback_score_must_be_a_unit_value() -> None:
    with pytest.raises(ValueError):
        book().feedback(M, T, 1.5, replaces_success=False)


def test_posterior_never_drops_below_the_flat_base() -> None:
    b = book()
    b.feedback(M, T, 1.0, replaces_success=True)  # nothing to take back: clamps
    alpha, beta = b.posterior(M, T)
    assert alpha >= 1.0 and beta >= 1.0


def test_seed_and_its_rules() -> None:
    b = book()
    assert b.seed(M, T, 0.9, 800.0, weight=20)
    entry = b.get(M, T)
    assert entry is not None and entry.seeded and entry.calls == 0
    assert (entry.alpha, entry.beta) == pytest.approx((19.0, 3.0))
    assert entry.latency_ms_ema == 800.0
    b.record(M, Task.GENERATE, QualitySignal.SUCCESS)  # any observed call of the model ...
    assert not b.seed(M, T, 0.1, None, weight=20)  # ... stops seeding all its tasks
    assert b.posterior(M, T) == pytest.approx((19.0, 3.0))


def test_forgetting_bounds_the_evidence() -> None:
    b = StatsBook(memory=50)
    for _ in range(2000):
        b.record(M, T, QualitySignal.SUCCESS)
    alpha, beta = b.posterior(M, T)
    assert alpha - 1.0 == pytest.approx(50.0, rel=0.01) and beta == 1.0
    for _ in range(100):  # the model starts failing: it loses its lead quickly
        b.record(M, T, QualitySignal.SERVER_ERROR)
    assert b.posterior_mean(M, T) < 0.3
    assert b.get(M, T).calls == 2100  # type: ignore[union-attr]


def test_latency_learned_from_successes_and_timeouts_only() -> None:
    b = StatsBook(ema_weight=0.5)
    b.record(M, T, QualitySignal.SUCCESS, latency_ms=1000.0, ttft_ms=200.0, output_tokens=80)
    b.record(M, T, QualitySignal.SERVER_ERROR, latency_ms=5.0)
    entry = b.get(M, T)
    assert entry is not None
    assert (entry.latency_ms_ema, entry.ttft_ms_ema) == (1000.0, 200.0)
    assert entry.tokens_per_sec_ema == pytest.approx(100.0)
    b.record(M, T, QualitySignal.TIMEOUT, latency_ms=3000.0)
    assert entry.latency_ms_ema == 2000.0


def test_health_pools_faults_across_tasks() -> None:
    b = StatsBook()
    assert b.reliability(M) == pytest.approx(0.99)
    for task in (Task.CODE, Task.REASONING, Task.GENERATE):
        for _ in range(10):
            b.record(M, task, QualitySignal.SUCCESS)
        b.record(M, task, QualitySignal.SERVER_ERROR)
        b.record(M, task, QualitySignal.CLIENT_ERROR)  # the request's fault: no health change
    assert 0.9 < b.reliability(M) < 0.95
    assert b.reliability("other") == pytest.approx(0.99)


def test_configured_models_bound_the_book() -> None:
    b = StatsBook(models=["a"])
    for task in Task:
        b.record("a", task, QualitySignal.SUCCESS)
        b.record("stranger", task, QualitySignal.SUCCESS)
    assert len(b) == len(Task)
    assert b.get("stranger", Task.CODE) is None
    b.retain([])
    assert len(b) == 0


def test_keys_round_trip_with_odd_model_ids() -> None:
    for model in ("gpt-4o", "org/model|v2", "a:b"):
        assert parse_stats_key(stats_key(model, Task.CODE)) == (model, Task.CODE)
    assert parse_stats_key("model|health") is None
    assert parse_stats_key("no-separator") is None


def _busy_book() -> StatsBook:
    b = StatsBook(models=["a", "b|x"])
    b.seed("a", Task.CODE, 0.8, 900.0, weight=20)
    for i in range(30):
        b.record("a", Task.CODE, QualitySignal.SUCCESS, latency_ms=100.0 + i, ttft_ms=10.0)
        b.record("b|x", Task.REASONING, QualitySignal.TIMEOUT, latency_ms=3e4)
    b.feedback("a", Task.CODE, 0.3, replaces_success=True)
    return b


def test_persistence_round_trip_is_exact() -> None:
    b = _busy_book()
    snapshot = orjson.loads(orjson.dumps(b.to_dict()))
    restored = StatsBook(models=["a", "b|x"])
    restored.load_dict(snapshot)
    assert restored.to_dict() == b.to_dict()
    assert restored.reliability("b|x") == b.reliability("b|x")
    assert restored.drain_deltas() == b.drain_deltas()


def test_load_rejects_garbage() -> None:
    for bad in ({}, {"version": 2, "entries": {}}, {"version": 1, "entries": {"x": {}}}):
        with pytest.raises(ValueError):
            StatsBook().load_dict(bad)
    entry = {"alpha": 0.5, "beta": 1.0, "calls": 0}
    with pytest.raises(ValueError):
        StatsBook().load_dict({"version": 1, "entries": {"a|code": entry}})


def test_replicas_merge_by_summing_increments() -> None:
    """Two replicas, one shared counter store: each ends with the sum of both's evidence."""
    shared: dict[str, dict[str, float]] = {}

    def push(replica: StatsBook) -> None:
        for name, delta in replica.drain_deltas().items():
            slot = shared.setdefault(name, {})
            for field, value in delta.items():
                slot[field] = slot.get(field, 0.0) + value

    one, two = StatsBook(memory=None), StatsBook(memory=None)
    for replica in (one, two):
        replica.seed("a", T, 0.5, None, weight=10)
    for _ in range(3):
        one.record("a", T, QualitySignal.SUCCESS)
    two.record("a", T, QualitySignal.SERVER_ERROR)
    push(one)
    push(two)
    two.record("a", T, QualitySignal.SUCCESS)  # not pushed yet: stays on top locally
    for replica in (one, two):
        replica.apply_remote(shared, two.ema_records())
    assert one.posterior("a", T) == pytest.approx((6.0 + 3.0, 6.0 + 0.8))
    assert two.posterior("a", T) == pytest.approx((6.0 + 4.0, 6.0 + 0.8))
    assert one.get("a", T).calls == 4  # type: ignore[union-attr]
    # Health merges the same way: both see the shared fault; two also its unpushed success.
    assert one.reliability("a") < two.reliability("a") < 0.99


def test_failed_push_is_requeued() -> None:
    b = StatsBook(memory=None)
    b.record(M, T, QualitySignal.SUCCESS)
    deltas = b.drain_deltas()
    assert b.drain_deltas() == {}
    b.requeue_deltas(deltas)
    assert b.drain_deltas() == deltas


def test_set_base_keeps_evidence_on_top() -> None:
    b = StatsBook(memory=None)
    b.record(M, T, QualitySignal.SUCCESS)
    b.set_base(M, T, 9.0, 3.0)
    assert b.posterior(M, T) == (10.0, 3.0)
    b.apply_remote({stats_key(M, T): {"alpha": 2.0, "beta": 0.0, "calls": 2.0}})
    assert b.posterior(M, T) == (12.0, 3.0)  # base + remote totals + pending (the success)
