"""One test per row of the contract's fault table, real gateway against scripted sims.

Each test checks what the client receives, which upstream saw how many attempts and when,
and that a healthy request succeeds right after.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest

from gateway.config.models import FailoverConfig
from gateway.sim.testing import sim_requests, sim_script, wait_for
from gateway.sim.text import full_answer
from tests.harness import running_gateway, sim_config

FAST_FAILOVER = FailoverConfig(
    first_token_timeout_secs=1.0, idle_timeout_secs=0.5, max_wait_secs=3.0, max_retries=2
)


def models() -> list[dict[str, Any]]:
    return [
        {"id": "primary", "backend": "a", "fallbacks": ["secondary"], "context_window": 8000},
        {"id": "secondary", "backend": "b", "context_window": 64000},
        {"id": "solo", "backend": "c"},
    ]


def backends(sim_a: str, sim_b: str) -> dict[str, str]:
    # "c" is sim_a again under its own backend name: its key pool (and cooldowns) are separate.
    return {"a": sim_a, "b": sim_b, "c": sim_a}


@contextlib.contextmanager
def fresh_gateway(sim_a: str, sim_b: str, tmp: Path) -> Iterator[openai.OpenAI]:
    config = sim_config(backends(sim_a, sim_b), models(), state_path=tmp / "s.db",
                        failover=FAST_FAILOVER)
    with running_gateway(config) as root:
        yield openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0, timeout=20)


@pytest.fixture(scope="module")
def gateway(sim_a: str, sim_b: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    # Breakers are tested on their own; here they must not carry one test's faults to the next.
    config = sim_config(
        backends(sim_a, sim_b), models(),
        state_path=tmp_path_factory.mktemp("s") / "s.db", failover=FAST_FAILOVER,
        circuit_breaker={"failure_threshold": 1000},
    )
    with running_gateway(config) as root:
        yield root


@pytest.fixture
def client(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="k", max_retries=0, timeout=20)


def ask(client: openai.OpenAI, model: str, prompt: str = "hi", **extra: Any) -> Any:
    return client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}], **extra
    )


def stream_text(client: openai.OpenAI, model: str, prompt: str) -> tuple[str, list[Any]]:
    chunks = list(client.chat.completions.create(
        model=model, messages=[{"role": "user", "content": prompt}], stream=True
    ))
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices), chunks


def attempts(root: str, model: str | None = None) -> list[dict[str, Any]]:
    return [r for r in sim_requests(root) if model is None or r["model"] == model]


def test_429_with_retry_after_moves_on_and_respects_the_cooldown(
    sim_a: str, sim_b: str, tmp_path: Path
) -> None:
    with fresh_gateway(sim_a, sim_b, tmp_path) as client:
        _check_retry_after_cooldown(client, sim_a)


def _check_retry_after_cooldown(client: openai.OpenAI, sim_a: str) -> None:
    sim_script(sim_a, [{"status": 429, "retry_after": 1}], model="primary")
    first = ask(client, "primary", "rl one")
    limited_at = attempts(sim_a, "primary")[-1]["at"]
    assert first.parse().model == "secondary"
    assert first.headers["x-gateway-failovers"] == "1"
    # Within the Retry-After the key is cooling: the model is skipped, not asked again.
    assert ask(client, "primary", "rl two").parse().model == "secondary"
    assert len(attempts(sim_a, "primary")) == 1
    served = wait_for(lambda: ask(client, "primary", "rl three").parse().model == "primary",
                      timeout=5.0, interval=0.1)
    assert served
    later = attempts(sim_a, "primary")
    assert len(later) == 2 and later[1]["at"] - limited_at >= 1.0


def test_429_without_retry_after_cools_for_60s(sim_a: str, sim_b: str, tmp_path: Path) -> None:
    with fresh_gateway(sim_a, sim_b, tmp_path) as client:
        sim_script(sim_a, [{"status": 429}], model="solo")
        with pytest.raises(openai.RateLimitError) as raised:
            ask(client, "solo", "no header")
        assert raised.value.body["code"] == "upstream_rate_limited"  # type: ignore[index]
        assert 55 <= int(raised.value.response.headers["retry-after"]) <= 60
        with pytest.raises(openai.RateLimitError):
            ask(client, "solo", "still cooling")
        assert len(attempts(sim_a, "solo")) == 1  # never a tight loop on a cooling key


def test_429_with_no_candidate_left_waits_when_retry_after_fits(
    tmp_path: Path, sim_a: str
) -> None:
    config = sim_config({"a": sim_a}, [{"id": "solo", "backend": "a"}], state_path=tmp_path / "s",
                        failover=FAST_FAILOVER)
    with running_gateway(config) as root:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0)
        sim_script(sim_a, [{"status": 429, "retry_after": 1}])
        started = time.monotonic()
        reply = ask(client, "solo", "wait for me").parse()
        assert reply.choices[0].message.content == full_answer("wait for me", 24)
        assert time.monotonic() - started >= 1.0
        seen = attempts(sim_a)
        assert len(seen) == 2 and seen[1]["at"] - seen[0]["at"] >= 1.0
        sim_script(sim_a, [{"status": 429, "retry_after": 30}])
        with pytest.raises(openai.RateLimitError) as raised:
            ask(client, "solo", "too long to wait")
        assert raised.value.body["type"] == "rate_limit_error"  # type: ignore[index]
        assert 25 <= int(raised.value.response.headers["retry-after"]) <= 30


def test_500_moves_to_the_next_candidate(client: openai.OpenAI, sim_a: str, sim_b: str) -> None:
    sim_script(sim_a, [{"status": 500}], model="primary")
    raw = ask(client, "primary", "five hundred")
    assert raw.parse().model == "secondary"
    assert raw.parse().choices[0].message.content == full_answer("five hundred", 24)
    assert len(attempts(sim_a)) == 1 and len(attempts(sim_b)) == 1
    assert ask(client, "primary", "healthy").parse().model == "primary"


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_connection_refused_moves_on(tmp_path: Path, sim_b: str) -> None:
    dead = f"http://127.0.0.1:{_closed_port()}"
    config = sim_config({"a": dead, "b": sim_b}, models(), state_path=tmp_path / "s",
                        failover=FAST_FAILOVER)
    with running_gateway(config) as root:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0)
        reply = ask(client, "primary", "refused").parse()
        assert reply.model == "secondary"
        text, _ = stream_text(client, "primary", "refused stream")
        assert text == full_answer("refused stream", 24)


def test_reset_before_any_token_is_retried_invisibly(
    client: openai.OpenAI, sim_a: str, sim_b: str
) -> None:
    sim_script(sim_a, [{"die_after_tokens": 0}], model="primary")
    text, chunks = stream_text(client, "primary", "reset early")
    assert text == full_answer("reset early", 24)
    assert {c.model for c in chunks} == {"secondary"}


def test_no_headers_in_time_moves_on_and_skips_the_silent_model(
    tmp_path: Path, sim_a: str, sim_b: str
) -> None:
    config = sim_config({"a": sim_a, "b": sim_b}, models(), state_path=tmp_path / "s",
                        failover=FAST_FAILOVER)
    config = config.model_copy(update={"backends": tuple(
        b.model_copy(update={"timeout_secs": 0.5}) for b in config.backends
    )})
    with running_gateway(config) as root:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0)
        sim_script(sim_a, [{"headers_delay_ms": 3000}], model="primary")
        raw = ask(client, "primary", "slow head")
        assert raw.parse().model == "secondary"
        assert len(attempts(sim_a, "primary")) == 1


def test_no_first_token_in_time_moves_on(client: openai.OpenAI, sim_a: str) -> None:
    sim_script(sim_a, [{"ttft_ms": 3000}], model="primary")
    started = time.monotonic()
    text, chunks = stream_text(client, "primary", "slow first token")
    assert text == full_answer("slow first token", 24)
    assert {c.model for c in chunks} == {"secondary"}
    assert time.monotonic() - started < 2.5
    assert len(attempts(sim_a, "primary")) == 1


@pytest.mark.parametrize(
    "step",
    [{"die_after_tokens": 5}, {"error_event_after_tokens": 5}, {"stall_after_tokens": 5}],
    ids=["cut", "error-event", "idle"],
)
def test_mid_stream_failure_continues_on_the_next_candidate(
    client: openai.OpenAI, sim_a: str, sim_b: str, gateway: str, step: dict[str, Any]
) -> None:
    prompt = f"continue after {next(iter(step))}"
    sim_script(sim_a, [step], model="primary")
    with httpx.stream("POST", f"{gateway}/v1/chat/completions", json={
        "model": "primary", "stream": True, "stream_options": {"include_usage": True},
        "messages": [{"role": "user", "content": prompt}],
    }, timeout=20) as response:
        body = response.read().decode()
    assert body.count("data: [DONE]") == 1 and body.endswith("data: [DONE]\n\n")
    chunks = [orjson.loads(e[6:]) for e in body.split("\n\n") if e and e != "data: [DONE]"]
    text = "".join(
        c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"]
    )
    assert text == full_answer(prompt, 24)
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    models_seen = [c["model"] for c in chunks if c["choices"]]
    assert models_seen[0] == "primary" and models_seen[-1] == "secondary"
    usage = [c["usage"] for c in chunks if c.get("usage")]
    assert len(usage) == 1
    continuation = attempts(sim_b, "secondary")[-1]["body"]["messages"]
    assert continuation[-1]["role"] == "user" and full_answer(prompt, 5) in continuation[-1][
        "content"]


def test_malformed_event_is_skipped_and_counted(
    client: openai.OpenAI, gateway: str, sim_a: str
) -> None:
    sim_script(sim_a, [{"malformed": True}], model="primary")
    text, chunks = stream_text(client, "primary", "malformed")
    assert text == full_answer("malformed", 24)
    assert {c.model for c in chunks} == {"primary"}
    metrics = httpx.get(f"{gateway}/metrics").text
    assert 'gateway_upstream_signals_total{model="primary",signal="malformed"} 1.0' in metrics


def test_clean_end_without_done_is_finished_at_once(client: openai.OpenAI, sim_a: str) -> None:
    sim_script(sim_a, [{"no_done": True}], model="primary")
    started = time.monotonic()
    text, chunks = stream_text(client, "primary", "no done")
    assert text == full_answer("no done", 24)
    assert {c.model for c in chunks} == {"primary"}
    assert time.monotonic() - started < 1.0


def test_context_length_exceeded_goes_to_a_larger_window(
    client: openai.OpenAI, sim_a: str, sim_b: str
) -> None:
    sim_script(sim_a, [{"status": 400, "code": "context_length_exceeded",
                        "message": "too long"}], model="primary")
    assert ask(client, "primary", "long").parse().model == "secondary"
    sim_script(sim_a, [{"status": 400, "code": "context_length_exceeded",
                        "message": "too long"}], model="solo")
    with pytest.raises(openai.BadRequestError) as raised:
        ask(client, "solo", "long solo")
    assert raised.value.body["code"] == "context_length_exceeded"  # type: ignore[index]
    assert len(attempts(sim_a, "solo")) == 1


def test_request_caused_4xx_is_passed_on_not_retried(
    client: openai.OpenAI, sim_a: str, sim_b: str
) -> None:
    sim_script(sim_a, [{"status": 422, "code": "bad_param", "message": "temperature too hot"}],
               model="primary")
    with pytest.raises(openai.UnprocessableEntityError) as raised:
        ask(client, "primary", "bad params")
    assert raised.value.body == {  # type: ignore[comparison-overlap]
        "message": "temperature too hot", "type": "invalid_request_error", "param": None,
        "code": "bad_param",
    }
    assert raised.value.response.headers["x-should-retry"] == "false"
    assert attempts(sim_b) == []
    sim_script(sim_a, [{"status": 400, "message": "bad"}], model="primary")
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(
            model="primary", messages=[{"role": "user", "content": "x"}], stream=True
        )
    assert attempts(sim_b) == []
    assert ask(client, "primary", "fine now").parse().model == "primary"
