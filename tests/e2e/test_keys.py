"""The upstream key pool through the real HTTP path: gateway (uvicorn) + simulators + SDK.

The simulator logs the bearer it saw for every request (`sim_requests(root)[i]["auth"]`) and,
with `valid_keys`, answers 401 to any other key, so each test checks which key really went
upstream, not what the gateway says it did.
"""

from __future__ import annotations

import contextlib
import io
import logging
import signal
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx
import keyring
import openai
import pytest
from keyrings.alt.file import PlaintextKeyring
from prometheus_client.parser import text_string_to_metric_families

from gateway.checkconfig import check_config
from gateway.config.models import (
    BackendConfig,
    FailoverConfig,
    GatewayConfig,
    ModelConfig,
    StateConfig,
)
from gateway.sim.options import SimOptions
from gateway.sim.testing import running_sim, sim_requests, sim_script, wait_for
from tests.harness import running_gateway
from tests.procs import running_gateway_process

ADMIN_KEY = "admin-keys-test-0001"
K0 = "sk-pool-first-0000000000aaaa"
K1 = "sk-pool-second-111111111bbbb"
BAD = "sk-revoked-22222222222cccc"
FAILOVER = FailoverConfig(first_token_timeout_secs=2.0, idle_timeout_secs=2.0, max_wait_secs=0.0)


# -- helpers -------------------------------------------------------------------------------

def config(
    backends: Mapping[str, tuple[str, tuple[str, ...]]],
    models: list[dict[str, Any]],
    state_path: Path,
    **sections: Any,
) -> GatewayConfig:
    """Backends as `{name: (sim root, key variables)}`."""
    return GatewayConfig(
        backends=tuple(
            BackendConfig(name=name, base_url=f"{root}/v1", api_key_env=variables,
                          timeout_secs=5.0)
            for name, (root, variables) in backends.items()
        ),
        models=tuple(ModelConfig(**m) for m in models),
        failover=sections.pop("failover", FAILOVER),
        state=StateConfig(path=state_path),
        **sections,
    )


def sdk(root: str, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{root}/v1", api_key="client", max_retries=0, timeout=10,
                         **kw)


def ask(root: str, model: str, prompt: str = "hello") -> Any:
    return sdk(root).chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": prompt}]
    )


def admin(root: str, path: str = "/admin/status", method: str = "GET") -> dict[str, Any]:
    response = httpx.request(method, f"{root}{path}",
                             headers={"Authorization": f"Bearer {ADMIN_KEY}"})
    response.raise_for_status()
    body: dict[str, Any] = response.json()
    return body


def key_rows(root: str, backend: str) -> dict[str, dict[str, Any]]:
    return {row["ref"]: row for row in admin(root)["keys"][backend]}


def gauge(root: str, backend: str) -> float:
    for family in text_string_to_metric_families(httpx.get(f"{root}/metrics").text):
        for sample in family.samples:
            if (sample.name == "gateway_key_pool_available_keys"
                    and sample.labels.get("backend") == backend):
                return float(sample.value)
    raise AssertionError(f"no key pool gauge for backend {backend}")


def seen_keys(sim: str, since: int = 0) -> list[str | None]:
    return [r["auth"] for r in sim_requests(sim, since) if r["path"].startswith("/v1/")]


def last_seq(sim: str) -> int:
    records = sim_requests(sim)
    return int(records[-1]["seq"]) if records else 0


@contextlib.contextmanager
def file_keyring(folder: Path) -> Iterator[PlaintextKeyring]:
    """A real keyring backend with its file in `folder`; the previous backend is restored."""
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(folder / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


@pytest.fixture
def pooled_sim() -> Iterator[str]:
    with running_sim(SimOptions(valid_keys=(K0, K1), seed=3)) as root:
        yield root


# -- rate limits and cooldowns -------------------------------------------------------------

def test_429_cools_only_that_key_and_it_comes_back_after_retry_after(
    pooled_sim: str, tmp_path: Path
) -> None:
    env = {"POOL_KEY": f"{K0},{K1}", "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    cfg = config({"a": (pooled_sim, ("POOL_KEY",))}, [{"id": "alpha", "backend": "a"}],
                 tmp_path / "s.db")
    with running_gateway(cfg, env) as root:
        sim_script(pooled_sim, [{"status": 429, "retry_after": 2}])
        first = ask(root, "alpha")
        assert first.http_response.status_code == 200
        # The cold key K0 got the 429; the same request moved to K1 at once.
        assert seen_keys(pooled_sim) == [K0, K1]
        mark = last_seq(pooled_sim)
        asked_at = time.time()
        rows = key_rows(root, "a")
        # A lower bound of the cooldown's end (both processes read the same wall clock).
        cooling_until = asked_at + rows["POOL_KEY[0]"]["cooldown_secs"]
        assert rows["POOL_KEY[0]"]["rate_limits"] == 1
        assert rows["POOL_KEY[0]"]["available"] is False
        assert 1.0 < rows["POOL_KEY[0]"]["cooldown_secs"] <= 2.0
        assert gauge(root, "a") == 1.0
        ask(root, "alpha")
        while time.time() < cooling_until - 0.5:
            ask(root, "alpha")
        during = [r for r in sim_requests(pooled_sim, mark) if r["at"] < cooling_until]
        assert during and {r["auth"] for r in during} == {K1}
        # No traffic needed for the gauge to see the cooldown end.
        wait_for(lambda: gauge(root, "a") == 2.0, timeout=5.0)
        mark = last_seq(pooled_sim)
        ask(root, "alpha")
        assert seen_keys(pooled_sim, mark) == [K0]  # the lighter key is back in use
        assert key_rows(root, "a")["POOL_KEY[0]"]["successes"] == 1


def test_all_keys_cooling_skips_the_model_or_answers_upstream_rate_limited(
    pooled_sim: str, sim_b: str, tmp_path: Path
) -> None:
    env = {"POOL_KEY": f"{K0},{K1}", "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    cfg = config(
        {"a": (pooled_sim, ("POOL_KEY",)), "b": (sim_b, ())},
        [{"id": "alpha", "backend": "a", "fallbacks": ["beta"]},
         {"id": "solo", "backend": "a"},
         {"id": "beta", "backend": "b"}],
        tmp_path / "s.db",
    )
    with running_gateway(cfg, env) as root:
        sim_script(pooled_sim, [{"status": 429, "retry_after": 30}] * 2)
        served = ask(root, "alpha")
        assert served.parse().model == "beta"
        assert seen_keys(pooled_sim) == [K0, K1]
        assert gauge(root, "a") == 0.0
        mark = last_seq(pooled_sim)
        assert ask(root, "alpha").parse().model == "beta"
        with pytest.raises(openai.RateLimitError) as refused:
            ask(root, "solo")
        assert last_seq(pooled_sim) == mark  # skipped: nothing was sent to the cooling keys
        error = refused.value
        assert error.code == "upstream_rate_limited"
        assert 20 <= int(error.response.headers["retry-after"]) <= 30


# -- rejected keys -------------------------------------------------------------------------

def test_401_marks_the_key_unusable_and_the_next_key_serves_the_same_request(
    tmp_path: Path,
) -> None:
    env = {"MIXED": f"{BAD},{K1}", "ALL_BAD": f"{BAD},sk-also-revoked-3333dddd",
           "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    with running_sim(SimOptions(valid_keys=(K1,))) as sim:
        cfg = config(
            {"a": (sim, ("MIXED",)), "dead": (sim, ("ALL_BAD",))},
            [{"id": "alpha", "backend": "a"}, {"id": "doomed", "backend": "dead"}],
            tmp_path / "s.db",
            failover=FailoverConfig(max_retries=0, max_wait_secs=0.0),
        )
        with running_gateway(cfg, env) as root:
            raw = ask(root, "alpha")  # max_retries = 0: the key switch is not a retry
            assert raw.http_response.status_code == 200
            assert raw.headers["x-gateway-failovers"] == "0"
            assert seen_keys(sim) == [BAD, K1]
            rows = key_rows(root, "a")
            assert rows["MIXED[0]"]["unusable"] is True and rows["MIXED[0]"]["failures"] == 1
            assert rows["MIXED[1]"]["successes"] == 1
            mark = last_seq(sim)
            ask(root, "alpha")
            assert seen_keys(sim, mark) == [K1]

            response = httpx.post(f"{root}/v1/chat/completions", json={
                "model": "doomed", "messages": [{"role": "user", "content": "x"}]})
            assert response.status_code == 502
            assert response.json()["error"]["type"] == "upstream_error"
            assert "401" not in response.text and "Incorrect API key" not in response.text
            assert not any(row["available"] for row in key_rows(root, "dead").values())

            # Reload: the marks are cleared (statistics kept) and the key is tried again.
            reloaded = admin(root, "/admin/reload", "POST")["keys"]["a"]
            assert [row["unusable"] for row in reloaded] == [False, False]
            assert reloaded[0]["failures"] == 1
            assert gauge(root, "a") == 2.0


def test_every_lease_is_released_after_success_error_and_disconnect(
    pooled_sim: str, tmp_path: Path
) -> None:
    env = {"POOL_KEY": f"{K0},{K1}", "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    cfg = config({"a": (pooled_sim, ("POOL_KEY",))}, [{"id": "alpha", "backend": "a"}],
                 tmp_path / "s.db", failover=FailoverConfig(max_retries=0, max_wait_secs=0.0),
                 circuit_breaker={"failure_threshold": 100})

    def in_flight() -> int:
        return sum(row["in_flight"] for row in admin(root)["keys"]["a"])

    with running_gateway(cfg, env) as root:
        ask(root, "alpha")
        sim_script(pooled_sim, [{"status": 500}])
        with pytest.raises(openai.APIStatusError):
            ask(root, "alpha")
        assert in_flight() == 0
        # A stream the client drops after two chunks.
        sim_script(pooled_sim, [{"token_delay_ms": 100}])
        with httpx.stream("POST", f"{root}/v1/chat/completions", json={
            "model": "alpha", "stream": True, "messages": [{"role": "user", "content": "s"}],
        }) as response:
            chunks = response.iter_lines()
            next(chunks)
            next(chunks)
            assert in_flight() == 1
        wait_for(lambda: in_flight() == 0, timeout=3.0)
        # A non-streaming client that gives up while the upstream is still thinking.
        sim_script(pooled_sim, [{"headers_delay_ms": 600}])
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(f"{root}/v1/chat/completions", timeout=0.2, json={
                "model": "alpha", "messages": [{"role": "user", "content": "u"}]})
        wait_for(lambda: in_flight() == 0, timeout=3.0)
        ask(root, "alpha")
        assert in_flight() == 0


# -- where keys come from ------------------------------------------------------------------

def test_a_variable_not_in_the_environment_is_read_from_the_os_keyring(tmp_path: Path) -> None:
    value = "sk-from-the-keyring-4444eeee"
    with file_keyring(tmp_path) as ring, running_sim(SimOptions(valid_keys=(value,))) as sim:
        ring.set_password("gateway", "RING_KEY", value)
        cfg = config({"a": (sim, ("RING_KEY",))}, [{"id": "alpha", "backend": "a"}],
                     tmp_path / "s.db")
        with running_gateway(cfg, {"GATEWAY_ADMIN_KEY": ADMIN_KEY}) as root:
            assert ask(root, "alpha").http_response.status_code == 200
            assert seen_keys(sim) == [value]
            row = key_rows(root, "a")["RING_KEY"]
            assert row["source"] == "keyring" and row["masked"] == "sk-…eeee"


def test_a_backend_without_a_key_is_skipped_and_reported(
    sim_a: str, sim_b: str, tmp_path: Path
) -> None:
    env = {"A_KEY": K0, "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    models: list[dict[str, Any]] = [
        {"id": "keyed", "backend": "a"},
        {"id": "keyless", "backend": "n", "input_per_mtok": 0.0, "output_per_mtok": 0.0},
        {"id": "keyless-fb", "backend": "n", "fallbacks": ["keyed"]},
    ]
    with file_keyring(tmp_path):  # an empty real keyring: the variable is nowhere
        cfg = config({"a": (sim_a, ("A_KEY",)), "n": (sim_b, ("NOT_SET_ANYWHERE",))}, models,
                     tmp_path / "s.db")
        with running_gateway(cfg, env) as root:
            for _ in range(5):  # the free keyless model would win auto if it were usable
                assert ask(root, "auto").parse().model == "keyed"
            assert ask(root, "keyless-fb").parse().model == "keyed"
            with pytest.raises(openai.InternalServerError) as refused:
                ask(root, "keyless")
            assert refused.value.status_code == 503
            assert refused.value.code == "no_backend_available"
            assert seen_keys(sim_b) == []
            assert httpx.get(f"{root}/readyz").status_code == 200
            assert key_rows(root, "n")["NOT_SET_ANYWHERE"]["missing"] is True
            assert gauge(root, "n") == 0.0
        only_missing = config({"n": (sim_b, ("NOT_SET_ANYWHERE",))}, models[1:2],
                              tmp_path / "t.db")
        with running_gateway(only_missing, env) as root:
            assert httpx.get(f"{root}/readyz").status_code == 503
        toml = tmp_path / "gateway.toml"
        toml.write_text(
            f'[[backends]]\nname = "n"\nbase_url = "{sim_b}/v1"\n'
            'api_key_env = ["NOT_SET_ANYWHERE"]\n'
            '[[models]]\nid = "keyless"\nbackend = "n"\n'
        )
        out = io.StringIO()
        assert check_config(toml, out, io.StringIO(), env={}) == 0
        assert "warning: NOT_SET_ANYWHERE is not set" in out.getvalue()


def test_admin_reload_picks_up_a_key_added_to_the_keyring(tmp_path: Path) -> None:
    value = "sk-added-later-5555ffff"
    with file_keyring(tmp_path) as ring, running_sim(SimOptions(valid_keys=(value,))) as sim:
        cfg = config({"a": (sim, ("LATE_KEY",))}, [{"id": "alpha", "backend": "a"}],
                     tmp_path / "s.db")
        with running_gateway(cfg, {"GATEWAY_ADMIN_KEY": ADMIN_KEY}) as root:
            with pytest.raises(openai.InternalServerError):
                ask(root, "alpha")
            assert httpx.post(f"{root}/admin/reload").status_code == 401
            ring.set_password("gateway", "LATE_KEY", value)
            with pytest.raises(openai.InternalServerError):  # keys are never resolved per request
                ask(root, "alpha")
            rows = admin(root, "/admin/reload", "POST")["keys"]["a"]
            assert [(r["ref"], r["masked"], r["available"]) for r in rows] == [
                ("LATE_KEY", "sk-…ffff", True)]
            assert ask(root, "alpha").http_response.status_code == 200
            assert seen_keys(sim) == [value]


def test_sighup_re_resolves_the_keys_of_a_served_gateway(tmp_path: Path) -> None:
    value = "sk-after-sighup-6666abcd"
    with running_sim(SimOptions(valid_keys=(value,))) as sim:
        toml = tmp_path / "gateway.toml"
        toml.write_text(
            '[state]\npath = "state.db"\n'
            f'[[backends]]\nname = "a"\nbase_url = "{sim}/v1"\napi_key_env = "HUP_KEY"\n'
            '[[models]]\nid = "alpha"\nbackend = "a"\n'
        )
        # The served gateway's keyring is a real file keyring under XDG_DATA_HOME.
        env = {"GATEWAY_ADMIN_KEY": ADMIN_KEY, "XDG_DATA_HOME": str(tmp_path), "HUP_KEY": "",
               "PYTHON_KEYRING_BACKEND": "keyrings.alt.file.PlaintextKeyring"}
        with running_gateway_process(toml, env=env, log_dir=tmp_path) as served:
            root = served.root
            assert key_rows(root, "a")["HUP_KEY"]["missing"] is True
            ring = PlaintextKeyring()  # the very file the served gateway's keyring reads
            ring.file_path = str(tmp_path / "python_keyring" / "keyring_pass.cfg")
            ring.set_password("gateway", "HUP_KEY", value)
            served.process.send_signal(signal.SIGHUP)
            wait_for(lambda: key_rows(root, "a")["HUP_KEY"].get("masked") == "sk-…abcd",
                     timeout=5.0)
            assert ask(root, "alpha").http_response.status_code == 200
            assert seen_keys(sim) == [value]
            assert served.running
            log = served.log_tail(100_000)
        assert "SIGHUP" in log and value[3:-4] not in log


# -- statistics and secrecy ----------------------------------------------------------------

def test_per_key_statistics_survive_a_restart_masked(pooled_sim: str, tmp_path: Path) -> None:
    env = {"POOL_KEY": f"{K0},{K1}", "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    cfg = config({"a": (pooled_sim, ("POOL_KEY",))}, [{"id": "alpha", "backend": "a"}],
                 tmp_path / "s.db")
    with running_gateway(cfg, env) as root:
        for _ in range(4):
            ask(root, "alpha")
        before = key_rows(root, "a")
    with running_gateway(cfg, env) as root:
        after = key_rows(root, "a")
    assert sum(row["requests"] for row in after.values()) == 4
    for ref in ("POOL_KEY[0]", "POOL_KEY[1]"):
        for field in ("requests", "successes", "failures", "rate_limits", "tokens"):
            assert after[ref][field] == before[ref][field]
        assert after[ref]["tokens"] > 0 and after[ref]["avg_latency_ms"] > 0
    assert after["POOL_KEY[0]"]["masked"] == "sk-…aaaa"
    assert after["POOL_KEY[1]"]["masked"] == "sk-…bbbb"


def test_no_key_value_reaches_logs_metrics_status_or_error_bodies(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    canaries = {
        "good": "sk-CANARY-good-7f3a9c1e5b2d",
        "rejected": "sk-CANARY-revoked-0e8d4c2a",
        "limited": "sk-CANARY-limited-91b7d3f5",
    }
    env = {"LEAK_KEY": f"{canaries['rejected']},{canaries['good']}",
           "LIMITED_KEY": canaries["limited"], "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    caplog.set_level(logging.DEBUG)
    seen: list[str] = []
    sim_options = SimOptions(valid_keys=(canaries["good"], canaries["limited"]))
    with running_sim(sim_options) as sim, running_sim(sim_options) as sim2:
        cfg = config(
            {"a": (sim, ("LEAK_KEY",)), "l": (sim2, ("LIMITED_KEY",))},
            [{"id": "alpha", "backend": "a"}, {"id": "limited", "backend": "l"}],
            tmp_path / "s.db", failover=FailoverConfig(max_retries=0, max_wait_secs=0.0),
        )
        with running_gateway(cfg, env) as root:
            ask(root, "alpha")  # 401 on the first key, then served by the second
            sim_script(sim, [
                {"status": 400, "message": f"bad request from {canaries['good']}"},
                {"status": 500}, {"status": 429, "retry_after": 1},
            ])
            sim_script(sim2, [{"status": 429}])
            for model in ("alpha", "alpha", "alpha", "limited", "limited"):
                response = httpx.post(f"{root}/v1/chat/completions", json={
                    "model": model, "messages": [{"role": "user", "content": "leak?"}]})
                seen += [response.text, repr(response.headers)]
            with httpx.stream("POST", f"{root}/v1/chat/completions", json={
                "model": "alpha", "stream": True, "messages": [{"role": "user", "content": "s"}],
            }) as response:
                seen.append(response.read().decode())
            seen.append(httpx.get(f"{root}/metrics").text)
            seen.append(httpx.get(f"{root}/admin/status",
                                  headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text)
            seen.append(httpx.post(f"{root}/admin/reload",
                                   headers={"Authorization": f"Bearer {ADMIN_KEY}"}).text)
        assert {r["auth"] for r in sim_requests(sim)} >= {canaries["rejected"], canaries["good"]}
    assert any("bad request from sk-…" in text for text in seen)  # the upstream 400 passed on
    seen += [caplog.text, *(repr(r.args) + r.getMessage() for r in caplog.records)]
    assert len(caplog.records) > 20  # DEBUG logging really ran (httpx, gateway, uvicorn)
    for value in canaries.values():
        secret_part = value[3:-4]  # what the mask never shows
        for text in seen:
            assert secret_part not in text
