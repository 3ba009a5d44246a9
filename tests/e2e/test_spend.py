"""Spend limits through the real HTTP path: reservations under concurrency, restarts, clients.

Requests go through uvicorn to the simulator; the windows are read back from `/admin/status`
and `/metrics`. Where an exact count matters the estimate equals the actual cost: prompts are
free (`input_per_mtok = 0`) and `max_tokens` equals the simulator's answer length, so every
reservation is exactly what settles and the admitted count is fixed by the budget alone.
"""

from __future__ import annotations

import asyncio
import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from gateway.config.models import (
    AuthConfig,
    ClientConfig,
    FailoverConfig,
    RoutingConfig,
    SpendConfig,
    SpendLimits,
)
from gateway.sim.options import Faults, SimOptions
from gateway.sim.testing import running_sim, sim_requests, sim_script, wait_for
from tests.harness import running_gateway, sim_config

ADMIN_KEY = "admin-spend-test-0001"
ENV = {"GATEWAY_ADMIN_KEY": ADMIN_KEY}
ANSWER_TOKENS = 24  # the simulator's default answer length
PER_REQUEST_MICROS = 24  # 24 completion tokens at $1 per million; prompts are free
HOURLY_USD = 0.001212  # room for 50.5 requests: exactly 50 fit
DECIMAL = re.compile(r"^\d+\.\d+$")


# -- helpers -------------------------------------------------------------------------------

def admin_status(root: str) -> dict[str, Any]:
    response = httpx.get(f"{root}/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def hourly(root: str, client: str | None = None) -> dict[str, Any]:
    spend = admin_status(root)["spend"]
    window: dict[str, Any] = (spend["global"] if client is None
                              else spend["clients"][client])["hourly"]
    return window


def spend_metric(root: str, model: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            if sample.name == "gateway_spend_usd_total" and sample.labels.get("model") == model:
                return float(sample.value)
    return 0.0


def chat_body(model: str, prompt: str = "count me", **extra: Any) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": prompt}], **extra}


@pytest.fixture(scope="module")
def slow_sim() -> Iterator[str]:
    # Answers take a moment, so admitted requests really hold their reservations while the
    # others race for the rest of the budget.
    with running_sim(SimOptions(faults=Faults(headers_delay_ms=150), seed=5)) as root:
        yield root


# -- the must-show: concurrency and restart ------------------------------------------------

def test_200_concurrent_requests_never_pass_the_hourly_limit_and_it_survives_a_restart(
    slow_sim: str, tmp_path: Path
) -> None:
    cfg = sim_config(
        {"a": slow_sim},
        [{"id": "metered", "backend": "a", "input_per_mtok": 0.0, "output_per_mtok": 1.0}],
        state_path=tmp_path / "state.db", spend=SpendConfig(hourly_usd=HOURLY_USD),
    )
    # On a loaded test machine 50 upstream calls at once can be slow; a timeout would refund
    # a reservation and let one more request in, which is correct but not this test's point.
    cfg = cfg.model_copy(update={
        "backends": tuple(b.model_copy(update={"timeout_secs": 60.0}) for b in cfg.backends)})
    limit_micros = round(HOURLY_USD * 1_000_000)
    budget = limit_micros // PER_REQUEST_MICROS
    with running_gateway(cfg, ENV) as root:
        responses, observed = asyncio.run(_burst(root, 200))
        admitted = [r for r in responses if r.status_code == 200]
        refused = [r for r in responses if r.status_code != 200]
        assert abs(len(admitted) - budget) <= 1
        assert len(admitted) == budget  # estimate == actual: no slack to explain away
        assert len([r for r in sim_requests(slow_sim) if r["path"] == "/v1/chat/completions"]) \
            == len(admitted)
        for response in refused:
            assert response.status_code == 429
            error = response.json()["error"]
            assert (error["type"], error["code"]) == ("insufficient_quota", "spend_limit_exceeded")
            assert "hourly" in error["message"] and "global" in error["message"]
            assert response.headers["x-should-retry"] == "false"
        costs = [r.headers["x-gateway-cost-usd"] for r in admitted]
        assert all(DECIMAL.match(cost) for cost in costs)
        assert sum(round(float(c) * 1e6) for c in costs) == budget * PER_REQUEST_MICROS
        assert max(observed) <= HOURLY_USD
        window = hourly(root)
        assert window["spent_usd"] == pytest.approx(budget * PER_REQUEST_MICROS / 1e6, abs=1e-12)
        assert window["spent_usd"] <= window["limit_usd"] == HOURLY_USD
        assert window["remaining_usd"] == pytest.approx(HOURLY_USD - window["spent_usd"])
        assert spend_metric(root, "metered") == pytest.approx(window["spent_usd"], abs=1e-12)
    with running_gateway(cfg, ENV) as root:
        assert hourly(root)["spent_usd"] == pytest.approx(budget * PER_REQUEST_MICROS / 1e6)
        late = httpx.post(f"{root}/v1/chat/completions",
                          json=chat_body("metered", max_tokens=ANSWER_TOKENS))
        assert late.status_code == 429 and "hourly" in late.json()["error"]["message"]
        # Small enough to fit what is left: the window is the one from before the restart.
        fits = httpx.post(f"{root}/v1/chat/completions", json=chat_body("metered", max_tokens=4))
        assert fits.status_code == 200


async def _burst(root: str, count: int) -> tuple[list[httpx.Response], list[float]]:
    """`count` simultaneous requests, with /admin/status sampled while they run."""
    observed: list[float] = []
    done = asyncio.Event()
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=count + 10)
    async with httpx.AsyncClient(base_url=root, timeout=30, limits=limits) as client:

        async def sample() -> None:
            while not done.is_set():
                response = await client.get(
                    "/admin/status", headers={"Authorization": f"Bearer {ADMIN_KEY}"})
                observed.append(response.json()["spend"]["global"]["hourly"]["spent_usd"])
                await asyncio.sleep(0.01)

        sampler = asyncio.create_task(sample())
        body = orjson.dumps(chat_body("metered", max_tokens=ANSWER_TOKENS))
        responses = await asyncio.gather(*(
            client.post("/v1/chat/completions", content=body,
                        headers={"content-type": "application/json"})
            for _ in range(count)
        ))
        done.set()
        await sampler
    assert len(observed) >= 2
    return list(responses), observed


# -- clients, auto routing and per-request limits -------------------------------------------

TOKENS = {"rich": "tok-rich-0001", "capped": "tok-capped-0002", "hourly": "tok-hourly-0003"}
PRICEY = {"id": "pricey", "backend": "a", "input_per_mtok": 0.0, "output_per_mtok": 100.0}
CHEAP = {"id": "cheap", "backend": "a", "input_per_mtok": 0.0, "output_per_mtok": 1.0}


def _clients() -> AuthConfig:
    def sha(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    return AuthConfig(clients=(
        ClientConfig(name="rich", key_sha256=sha(TOKENS["rich"])),
        ClientConfig(name="capped", key_env="CAPPED_KEY",
                     spend=SpendLimits(per_request_usd=0.001)),
        ClientConfig(name="hourly", key_sha256=sha(TOKENS["hourly"]),
                     spend=SpendLimits(hourly_usd=0.002, daily_usd=0.01)),
    ))


@pytest.fixture(scope="module")
def client_gateway(sim_a: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    folder = tmp_path_factory.mktemp("spend-clients")
    priors = folder / "priors.json"
    # The benchmark says pricey is far better: unconstrained, auto:best sends everything there.
    priors.write_bytes(orjson.dumps([
        {"model_id": "pricey", "overall_score": 0.97}, {"model_id": "cheap", "overall_score": 0.2},
    ]))
    cfg = sim_config(
        {"a": sim_a}, [PRICEY, CHEAP], state_path=folder / "state.db",
        auth=_clients(), routing=RoutingConfig(priors_file=priors, prior_weight=1000),
        spend=SpendConfig(default_output_tokens=2000),
        failover=FailoverConfig(max_retries=0, first_token_timeout_secs=5, idle_timeout_secs=5),
    )
    with running_gateway(cfg, {**ENV, "CAPPED_KEY": TOKENS["capped"]}) as root:
        yield root


def _sdk(root: str, who: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{root}/v1", api_key=TOKENS[who], max_retries=0, timeout=10)


def _ask(root: str, who: str, model: str, **extra: Any) -> Any:
    return _sdk(root, who).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": "which model?"}], **extra
    )


def test_auto_drops_candidates_that_cannot_fit_a_per_request_limit(client_gateway: str) -> None:
    root = client_gateway
    # 24 tokens: pricey costs $0.0024, over capped's $0.001 per request; cheap costs $0.000024.
    for _ in range(3):
        assert _ask(root, "rich", "auto:best", max_tokens=ANSWER_TOKENS).parse().model == "pricey"
        assert _ask(root, "capped", "auto:best", max_tokens=ANSWER_TOKENS).parse().model == "cheap"
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(root, "capped", "pricey", max_tokens=ANSWER_TOKENS)
    error = refused.value
    assert error.code == "spend_limit_exceeded"
    assert "per_request" in error.message and "client 'capped'" in error.message
    assert error.response.headers["x-should-retry"] == "false"
    # Without max_tokens the estimate uses spend.default_output_tokens (2000): $0.002 > $0.001.
    with pytest.raises(openai.RateLimitError, match="per_request"):
        _ask(root, "capped", "cheap")


def test_auto_drops_candidates_that_cannot_fit_a_window_then_names_the_window(
    client_gateway: str,
) -> None:
    root = client_gateway
    # pricey's $0.0024 never fits hourly's $0.002 window; cheap's $0.000024 does.
    for _ in range(3):
        raw = _ask(root, "hourly", "auto:best", max_tokens=ANSWER_TOKENS)
        assert raw.parse().model == "cheap"
    wait_for(lambda: hourly(root, "hourly")["spent_usd"] == pytest.approx(3 * 24e-6), timeout=2)
    with pytest.raises(openai.RateLimitError) as refused:
        _ask(root, "hourly", "pricey", max_tokens=ANSWER_TOKENS)
    assert "hourly spend limit of client 'hourly'" in refused.value.message
    status = admin_status(root)["spend"]
    mine = status["clients"]["hourly"]
    assert mine["hourly"]["limit_usd"] == 0.002 and mine["daily"]["limit_usd"] == 0.01
    assert mine["hourly"]["remaining_usd"] == pytest.approx(0.002 - 3 * 24e-6)
    assert mine["daily"]["spent_usd"] == pytest.approx(3 * 24e-6)
    assert status["clients"]["capped"]["per_request_usd"] == 0.001
    assert status["clients"]["capped"]["hourly"]["limit_usd"] is None
    # Every client's spend counts in the global window too.
    assert status["global"]["hourly"]["spent_usd"] >= mine["hourly"]["spent_usd"]


def test_a_wrong_client_key_is_refused_before_any_spend(client_gateway: str) -> None:
    response = httpx.post(f"{client_gateway}/v1/chat/completions", json=chat_body("cheap"),
                          headers={"Authorization": "Bearer not-a-client"})
    assert response.status_code == 401


# -- settlement ------------------------------------------------------------------------------

def test_windows_hold_the_actual_cost_and_failed_attempts_are_refunded(
    sim_a: str, tmp_path: Path
) -> None:
    cfg = sim_config(
        {"a": sim_a},
        [{"id": "priced", "backend": "a", "input_per_mtok": 3.0, "output_per_mtok": 7.0}],
        state_path=tmp_path / "state.db", spend=SpendConfig(hourly_usd=1.0),
        failover=FailoverConfig(max_retries=0),
    )
    with running_gateway(cfg, ENV) as root:
        client = openai.OpenAI(base_url=f"{root}/v1", api_key="k", max_retries=0, timeout=10)
        raw = client.chat.completions.with_raw_response.create(
            model="priced", max_tokens=500,  # reserves far more than the 24-token answer
            messages=[{"role": "user", "content": "an answer shorter than the reservation"}],
        )
        usage = raw.parse().usage
        assert usage is not None
        actual = usage.prompt_tokens * 3 + usage.completion_tokens * 7
        assert round(float(raw.headers["x-gateway-cost-usd"]) * 1e6) == actual
        wait_for(lambda: hourly(root)["spent_usd"] == pytest.approx(actual / 1e6), timeout=2)

        sim_script(sim_a, [{"status": 500}])
        with pytest.raises(openai.InternalServerError):
            client.chat.completions.create(
                model="priced", messages=[{"role": "user", "content": "fails"}], max_tokens=500)
        stream = client.chat.completions.create(
            model="priced", messages=[{"role": "user", "content": "streamed"}], stream=True,
            stream_options={"include_usage": True}, max_tokens=500,
        )
        streamed = [c.usage for c in stream if c.usage is not None][0]
        total = actual + streamed.prompt_tokens * 3 + streamed.completion_tokens * 7
        wait_for(lambda: hourly(root)["spent_usd"] == pytest.approx(total / 1e6), timeout=2)
        assert spend_metric(root, "priced") == pytest.approx(total / 1e6)
        with httpx.stream("POST", f"{root}/v1/chat/completions",
                          json=chat_body("priced", stream=True)) as response:
            response.read()
            assert "x-gateway-cost-usd" not in response.headers
