"""Options, their JSON forms and the `gateway sim` flags (gateway.sim.options, demo)."""

from __future__ import annotations

import argparse
from pathlib import Path

import orjson
import pytest

from gateway.sim.demo import demo_models, demo_sim_options
from gateway.sim.options import (
    Faults,
    SimModel,
    add_arguments,
    faults_from_mapping,
    load_models_file,
    merge_faults,
    model_from_mapping,
    options_from_args,
)


def test_merge_adds_rates_and_lets_the_model_override() -> None:
    merged = merge_faults(
        Faults(error_rate=0.2, ttft_ms=50, no_done=True, retry_after=3),
        Faults(error_rate=0.9, ttft_ms=10, die_after_tokens=4),
    )
    assert merged.error_rate == 1.0  # capped
    assert merged.ttft_ms == 10 and merged.retry_after == 3
    assert merged.die_after_tokens == 4 and merged.no_done


def test_faults_validation() -> None:
    with pytest.raises(ValueError, match="error_rate"):
        Faults(error_rate=1.5)
    with pytest.raises(ValueError, match="unknown"):
        faults_from_mapping({"eror_rate": 0.1})
    with pytest.raises(ValueError, match="true or false"):
        faults_from_mapping({"no_done": 1})
    with pytest.raises(ValueError, match="integer"):
        faults_from_mapping({"die_after_tokens": 2.5})
    assert faults_from_mapping({"die_after_tokens": 3, "ttft_ms": 5}) == Faults(
        die_after_tokens=3, ttft_ms=5.0
    )


def test_model_from_mapping() -> None:
    model = model_from_mapping(
        {"name": "x", "quality": {"code": 0.4}, "ttft_ms": 10, "faults": {"error_rate": 0.1}}
    )
    assert model.quality_for("code") == 0.4
    assert model.quality_for("generate") == 0.8
    assert model.faults.error_rate == 0.1
    hash(model)  # usable in sets and as dict keys
    with pytest.raises(ValueError, match="unknown"):
        model_from_mapping({"name": "x", "speed": 1})
    with pytest.raises(ValueError, match="quality"):
        model_from_mapping({"name": "x", "quality": {"code": 2}})


def test_models_file(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_bytes(orjson.dumps([{"name": "a"}, {"name": "b", "context_window": 100}]))
    assert [m.name for m in load_models_file(path)] == ["a", "b"]
    path.write_bytes(b"{")
    with pytest.raises(ValueError, match="invalid JSON"):
        load_models_file(path)


def _parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    return parser.parse_args(argv)


def test_cli_flags(tmp_path: Path) -> None:
    path = tmp_path / "models.json"
    path.write_bytes(orjson.dumps([{"name": "mine"}]))
    options = options_from_args(
        _parse(
            "--error-rate",
            "0.1",
            "--rate-limit-rate",
            "0.2",
            "--retry-after",
            "2",
            "--die-after-tokens",
            "5",
            "--die-rate",
            "0.5",
            "--ttft-ms",
            "30",
            "--token-delay-ms",
            "2",
            "--no-done",
            "--echo-prefix",
            "--reject-prefill",
            "--tokens",
            "10",
            "--seed",
            "7",
            "--models-file",
            str(path),
            "--strict-models",
            "--valid-keys",
            "k1, k2",
        )
    )
    assert options.faults.error_rate == 0.1 and options.faults.retry_after == 2.0
    assert options.faults.die_after_tokens == 5 and options.faults.die_rate == 0.5
    assert options.faults.no_done and options.faults.echo_prefix and options.faults.reject_prefill
    assert options.default_tokens == 10 and options.seed == 7
    assert [m.name for m in options.models] == ["mine"] and options.strict_models
    assert options.valid_keys == ("k1", "k2")
    defaults = options_from_args(_parse())
    assert defaults.faults == Faults() and defaults.models == () and defaults.valid_keys == ()
    with pytest.raises(SystemExit):
        _parse("--error-rate", "2")


def test_demo_models_differ_and_one_is_flaky() -> None:
    models = demo_models()
    assert len(models) >= 4 and len({m.name for m in models}) == len(models)
    assert len({m.output_per_mtok for m in models}) == len(models)
    assert len({m.ttft_ms for m in models}) == len(models)
    assert any(m.faults.error_rate > 0 and m.faults.die_after_tokens for m in models)
    cheap = next(m for m in models if m.name == "sim-cheap")
    assert cheap.quality_for("code") < cheap.quality_for("classify")
    assert all(isinstance(m, SimModel) for m in demo_sim_options().models)
    assert [m.name for m in options_from_args(_parse("--demo-models")).models] == [
        m.name for m in models
    ]
