"""POST /v1/feedback and retry detection through the real gateway (two client keys, a sim).

What is checked: a client rates its own request (200) and moves that model's statistics; an
unknown or another client's request id is 404; bad bodies are 400; a 0.0 after a success nets
out as a failure; the same client sending the same prompt again within the retry window is a
`retried` signal against the model that served the first one; and a rating given on one
replica is found by another replica through the shared store.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.models import AuthConfig, ClientConfig, StateConfig
from gateway.sim.testing import wait_for
from tests.harness import running_gateway, sim_config
from tests.redis_server import running_redis

KEYS = {"TEAM_A_KEY": "key-of-team-a", "TEAM_B_KEY": "key-of-team-b", "GATEWAY_ADMIN_KEY": "adm"}
MODELS = [
    {"id": "judged", "backend": "a"},
    {"id": "first", "backend": "a"},
    {"id": "second", "backend": "a"},
]
AUTH = AuthConfig(clients=(
    ClientConfig(name="team-a", key_env="TEAM_A_KEY"),
    ClientConfig(name="team-b", key_sha256=hashlib.sha256(b"key-of-team-b").hexdigest()),
))


@pytest.fixture(scope="module")
def gateway(sim_a: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    state = tmp_path_factory.mktemp("feedback") / "state.db"
    config = sim_config({"a": sim_a}, MODELS, state_path=state, auth=AUTH)
    with running_gateway(config, env=KEYS) as root:
        yield root


@functools.cache
def client(root: str, key: str = "key-of-team-a") -> openai.OpenAI:
    """One SDK client per gateway and key: building one costs ~0.2 s (its TLS context)."""
    return openai.OpenAI(base_url=f"{root}/v1", api_key=key, max_retries=0, timeout=10)


def served(root: str, model: str, prompt: str, key: str = "key-of-team-a") -> str:
    raw = client(root, key).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )
    return raw.headers["x-request-id"]


def rate(root: str, body: Any, key: str = "key-of-team-a") -> httpx.Response:
    content = body if isinstance(body, bytes) else None
    return httpx.post(
        f"{root}/v1/feedback", json=None if content is not None else body, content=content,
        headers={"authorization": f"Bearer {key}", "content-type": "application/json"},
    )


def stats(root: str, model: str) -> dict[str, Any]:
    status = httpx.get(f"{root}/admin/status", headers={"authorization": "Bearer adm"})
    assert status.status_code == 200
    return dict(status.json()["models"][model]["stats"])


def metric(root: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return 0.0


def test_a_client_rates_its_own_request(gateway: str) -> None:
    request_id = served(gateway, "judged", "rate me, please")
    response = rate(gateway, {"request_id": request_id, "score": 1})
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "recorded"}
    assert response.headers["x-request-id"]


def test_unknown_and_foreign_request_ids_are_404(gateway: str) -> None:
    mine = served(gateway, "judged", "team a asked this")
    unknown = rate(gateway, {"request_id": "req-never-sent", "score": 0.5})
    foreign = rate(gateway, {"request_id": mine, "score": 0.0}, key="key-of-team-b")
    for response in (unknown, foreign):
        assert response.status_code == 404, response.text
        assert response.json()["error"]["type"] == "invalid_request_error"
    # Same answer for both: a foreign id does not reveal that the request exists.
    assert unknown.json()["error"]["code"] == foreign.json()["error"]["code"]
    assert rate(gateway, {"request_id": mine, "score": 0.5}).status_code == 200


@pytest.mark.parametrize("body", [
    {"request_id": "x", "score": 1.5},
    {"request_id": "x", "score": -0.1},
    {"request_id": "x", "score": "0.5"},
    {"request_id": "x", "score": True},
    {"request_id": "x", "score": None},
    {"request_id": "x"},
    {"score": 0.5},
    {"request_id": 12, "score": 0.5},
    {"request_id": "", "score": 0.5},
    ["request_id", "x"],
    b"{not json",
    b"",
])
def test_bad_feedback_bodies_are_400(gateway: str, body: Any) -> None:
    response = rate(gateway, body)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["message"]


def test_feedback_needs_a_client_key(gateway: str) -> None:
    response = httpx.post(f"{gateway}/v1/feedback", json={"request_id": "x", "score": 1.0})
    assert response.status_code == 401
    assert response.json()["error"]["code"] == "invalid_api_key"


def test_a_zero_after_a_success_nets_out_as_a_failure(
    sim_a: str, tmp_path: Path
) -> None:
    config = sim_config({"a": sim_a}, MODELS, state_path=tmp_path / "s.db", auth=AUTH)
    with running_gateway(config, env=KEYS) as root:
        request_id = served(root, "judged", "a wrong answer")
        after_success = stats(root, "judged")["generate"]
        assert after_success["calls"] == 1
        assert rate(root, {"request_id": request_id, "score": 0.0}).status_code == 200
        after_zero = stats(root, "judged")["generate"]
        # Beta(1, 1) + one success = 2/3; rated 0.0 it is one failure (1/3), not half a
        # success on top of the provisional one (2/4).
        assert after_success["quality"] == pytest.approx(2 / 3, abs=1e-3)
        assert after_zero["quality"] == pytest.approx(1 / 3, abs=1e-3)
        assert after_zero["calls"] == 1  # a score is not another call
        # Rating again replaces the score rather than adding another one.
        assert rate(root, {"request_id": request_id, "score": 1.0}).status_code == 200
        assert stats(root, "judged")["generate"]["quality"] == pytest.approx(2 / 3, abs=1e-3)


def test_the_same_prompt_again_is_a_retry_against_the_first_model(gateway: str) -> None:
    before_first = metric(gateway, "gateway_upstream_signals_total", model="first",
                          signal="retried")
    before_second = metric(gateway, "gateway_upstream_signals_total", model="second",
                           signal="retried")
    quality_before = stats(gateway, "first").get("reasoning", {}).get("quality")
    prompt = "why is the sky blue? explain step by step"
    served(gateway, "first", prompt)
    served(gateway, "judged", prompt, key="key-of-team-b")  # another client: not a retry
    assert metric(gateway, "gateway_upstream_signals_total", model="first",
                  signal="retried") == before_first
    served(gateway, "second", prompt)  # team a again, through another model
    assert metric(gateway, "gateway_upstream_signals_total", model="first",
                  signal="retried") == before_first + 1
    assert metric(gateway, "gateway_upstream_signals_total", model="second",
                  signal="retried") == before_second
    first = stats(gateway, "first")["reasoning"]
    assert quality_before is None or first["quality"] < quality_before
    assert first["quality"] < 2 / 3  # one success, then the retry's -0.7


def test_a_rating_reaches_another_replica(sim_a: str) -> None:
    with running_redis() as redis:
        state = StateConfig(backend="redis", redis_url=redis.url)
        config = sim_config({"a": sim_a}, MODELS, state_path=None, auth=AUTH, state=state)
        with running_gateway(config, env=KEYS) as one, running_gateway(config, env=KEYS) as two:
            request_id = served(one, "judged", "served by replica one")
            # The request record is written behind the response: rate until replica two has it.
            assert _rate_until_found(two, request_id, 0.0) == 200
            assert rate(two, {"request_id": request_id, "score": 0.0},
                          key="key-of-team-b").status_code == 404
            # Re-rated on replica one: it replaces replica two's score instead of adding to it.
            assert rate(one, {"request_id": request_id, "score": 1.0}).status_code == 200
            _wait_for_quality(one, "judged", 2 / 3)
            _wait_for_quality(two, "judged", 2 / 3)


def _rate_until_found(root: str, request_id: str, score: float) -> int:
    def attempt() -> int | None:
        status = rate(root, {"request_id": request_id, "score": score}).status_code
        return status if status != 404 else None

    return int(wait_for(attempt, timeout=5.0))


def _wait_for_quality(root: str, model: str, expected: float) -> None:
    wait_for(
        lambda: abs(stats(root, model).get("generate", {}).get("quality", -1) - expected) < 1e-3,
        timeout=5.0,
    )
