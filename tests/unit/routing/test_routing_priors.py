"""Benchmark priors: both file shapes, category mapping, averaging, errors, seeding rules."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from gateway.config.errors import ConfigError
from gateway.config.models import ModelConfig, Task
from gateway.routing.priors import apply_priors, load_priors, parse_priors
from gateway.routing.stats import QualitySignal, StatsBook

RESULT = {
    "model_id": "m1",
    "overall_score": 0.7,
    "avg_latency_ms": 500,
    "cases": [
        {"category": "Coding", "score": 0.9, "latency_ms": 800},
        {"category": "code", "score": 0.5, "latency_ms": 1200},
        {"category": "tool_use", "score": 0.6, "latency_ms": 400},
        {"category": "vision", "score": 0.8, "latency_ms": 600},
        {"category": "analysis", "score": 0.4, "latency_ms": 2000},
        {"category": "classification", "score": 1.0, "latency_ms": 100},
        {"category": "haiku-writing", "score": 0.0, "latency_ms": 1},
    ],
}


def write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "bench.json"
    path.write_bytes(data if isinstance(data, bytes) else orjson.dumps(data))
    return path


def test_one_result_object(tmp_path: Path) -> None:
    prior = load_priors(write(tmp_path, RESULT))["m1"]
    assert prior.overall == 0.7
    assert prior.quality(Task.CODE) == pytest.approx(0.7)  # two cases averaged
    assert prior.latency_ms(Task.CODE) == pytest.approx(1000.0)
    assert prior.quality(Task.GENERATE) == pytest.approx(0.7)  # tool_use + vision
    assert prior.quality(Task.REASONING) == pytest.approx(0.4)
    assert prior.quality(Task.CLASSIFY) == 1.0
    assert prior.quality(Task.EMBED) == 0.7  # no case: the overall score
    assert prior.latency_ms(Task.EMBED) == 500.0
    assert prior.measured == {Task.CODE, Task.GENERATE, Task.REASONING, Task.CLASSIFY}


def test_list_of_results(tmp_path: Path) -> None:
    other = {"model_id": "m2", "cases": [{"category": "embedding", "score": 0.6}]}
    priors = load_priors(write(tmp_path, [RESULT, other]))
    assert set(priors) == {"m1", "m2"}
    m2 = priors["m2"]
    assert m2.overall == 0.6  # no overall_score: the mean of the cases
    assert m2.quality(Task.EMBED) == 0.6
    assert m2.latency_ms(Task.CODE) is None


def test_missing_file_is_no_priors(tmp_path: Path) -> None:
    assert load_priors(tmp_path / "absent.json") == {}
    assert load_priors(None) == {}


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"{not json", "not valid JSON"),
        ({"overall_score": 0.5}, "model_id"),
        ({"model_id": 3, "overall_score": 0.5}, "model_id"),
        ({"model_id": "m", "overall_score": 1.5}, "within 0..1"),
        ({"model_id": "m", "overall_score": True}, "must be a number"),
        ({"model_id": "m", "overall_score": "0.5"}, "must be a number"),
        ({"model_id": "m"}, "overall_score is missing"),
        ({"model_id": "m", "overall_score": 0.5, "cases": {}}, "cases must be a list"),
        (
            {"model_id": "m", "overall_score": 0.5, "cases": [{"category": "code", "score": -1}]},
            "cases[0].score",
        ),
        (
            {"model_id": "m", "overall_score": 0.5, "cases": [{"score": 0.5}]},
            "cases[0].category",
        ),
        ([RESULT, RESULT], "duplicate model_id"),
        ("just a string", "must be an object"),
    ],
)
def test_malformed_file_names_file_key_and_problem(
    tmp_path: Path, content: object, problem: str
) -> None:
    path = write(tmp_path, content)
    with pytest.raises(ConfigError) as caught:
        load_priors(path)
    assert caught.value.key == "routing.priors_file"
    assert caught.value.file == str(path)
    assert problem in caught.value.problem


def test_apply_seeds_configured_models_and_their_tasks() -> None:
    priors = {"m1": parse_priors(RESULT)["m1"]}
    book = StatsBook()
    model = ModelConfig(id="m1", backend="b", tasks=(Task.CODE, Task.GENERATE))
    stranger = ModelConfig(id="m9", backend="b")
    assert apply_priors(book, priors, [model, stranger], weight=10) == ["m1"]
    code = book.get("m1", Task.CODE)
    assert code is not None and code.seeded
    assert code.mean == pytest.approx((1 + 7) / 12)
    assert book.get("m1", Task.EMBED) is None  # not configured, not measured
    assert book.get("m1", Task.CLASSIFY) is not None  # measured: explicit requests use it
    assert book.get("m9", Task.CODE) is None


def test_apply_never_overwrites_observed_data() -> None:
    priors = parse_priors(RESULT)
    book = StatsBook()
    book.record("m1", Task.GENERATE, QualitySignal.SERVER_ERROR)
    models = [ModelConfig(id="m1", backend="b")]
    assert apply_priors(book, priors, models, weight=20) == []
    assert book.get("m1", Task.CODE) is None
    assert book.posterior("m1", Task.GENERATE) == pytest.approx((1.0, 1.8))
