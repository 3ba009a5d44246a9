"""Client keys, model allowlists and the admin key, through the OpenAI SDK.

The matrix: no key, wrong key, a right key asking for a model it may not use, and the admin
route without and with its key, each with the contract's status, error type and code, and
an `x-request-id`. Plus: `auto` and `/v1/models` only ever see a client's allowed models, an
open gateway says so loudly at start, and key comparison does the same work for every token.
"""

from __future__ import annotations

import functools
import hashlib
import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import openai
import pytest
from starlette.requests import Request

from gateway.api.auth import Authenticator
from gateway.config.models import AuthConfig, ClientConfig, GatewayConfig, ServerConfig
from gateway.errors import AuthenticationFailed, RouteNotFound
from tests.harness import running_gateway, sim_config

TEAM_A_KEY = "sk-team-a-0123456789"
TEAM_B_KEY = "sk-team-b-9876543210"
ADMIN_KEY = "adm-secret-key-42"
ALIASES = {"auto", "auto:fast", "auto:best"}

# "premium" is the most expensive model: under auto:fast the router would never pick it if it
# could choose, so team-a always being served by it shows the allowlist is applied first.
MODELS: list[dict[str, Any]] = [
    {"id": "cheap", "backend": "a"},
    {"id": "also-cheap", "backend": "a", "input_per_mtok": 0.01, "output_per_mtok": 0.01},
    {"id": "premium", "backend": "a", "input_per_mtok": 30.0, "output_per_mtok": 60.0},
]


def auth_config() -> AuthConfig:
    return AuthConfig(clients=(
        ClientConfig(name="team-a", key_sha256=hashlib.sha256(TEAM_A_KEY.encode()).hexdigest(),
                     models=("premium",)),
        ClientConfig(name="team-b", key_env="TEAM_B_KEY"),
        ClientConfig(name="team-c", key_env="TEAM_C_KEY_NOT_SET"),
    ))


@pytest.fixture(scope="module")
def gateway(sim_a: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    config = sim_config({"a": sim_a}, MODELS, auth=auth_config(),
                        state_path=tmp_path_factory.mktemp("auth") / "s.db")
    env = {"TEAM_B_KEY": TEAM_B_KEY, "GATEWAY_ADMIN_KEY": ADMIN_KEY}
    with running_gateway(config, env) as root:
        yield root


def sdk(root: str, key: str = "unused", *, v1: bool = True) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{root}/v1" if v1 else root, api_key=key, max_retries=0,
                         timeout=20)


NO_KEY = {"Authorization": openai.Omit()}


def every_v1_route(client: openai.OpenAI, headers: dict[str, Any]) -> list[Callable[[], Any]]:
    chat: Any = [{"role": "user", "content": "hi"}]
    return [
        lambda: client.chat.completions.create(model="cheap", messages=chat,
                                               extra_headers=headers),
        lambda: client.chat.completions.create(model="cheap", messages=chat, stream=True,
                                               extra_headers=headers),
        lambda: client.completions.create(model="cheap", prompt="hi", extra_headers=headers),
        lambda: client.embeddings.create(model="cheap", input="hi", extra_headers=headers),
        lambda: client.models.list(extra_headers=headers),
        lambda: client.models.retrieve("cheap", extra_headers=headers),
        lambda: client.post("/feedback", body={"request_id": "r", "score": 1.0},
                            cast_to=object, options={"headers": headers}),
    ]


def expect_error(call: Callable[[], Any], error: type[openai.APIStatusError], status: int,
                 error_type: str, code: str) -> openai.APIStatusError:
    with pytest.raises(error) as raised:
        call()
    exc = raised.value
    assert exc.status_code == status
    assert exc.body == {"message": exc.body["message"],  # type: ignore[index]
                        "type": error_type, "param": exc.param, "code": code}
    assert exc.type == error_type and exc.code == code
    assert exc.response.headers["x-request-id"]
    return exc


def test_no_key_is_401_on_every_v1_route(gateway: str) -> None:
    for call in every_v1_route(sdk(gateway), NO_KEY):
        exc = expect_error(call, openai.AuthenticationError, 401,
                           "authentication_error", "invalid_api_key")
        assert "authorization" not in exc.request.headers
        assert exc.response.headers["x-should-retry"] == "false"


def test_wrong_key_is_401_on_every_v1_route(gateway: str) -> None:
    headers = {"x-request-id": "my-own-id-7"}
    for call in every_v1_route(sdk(gateway, "sk-wrong"), headers):
        exc = expect_error(call, openai.AuthenticationError, 401,
                           "authentication_error", "invalid_api_key")
        assert exc.response.headers["x-request-id"] == "my-own-id-7"
        assert "sk-wrong" not in exc.response.text


def test_an_empty_bearer_token_is_401(
    gateway: str,
) -> None:
    # team-c's variable is unset: no empty or absent token may stand in for its key.
    for header in ("Bearer", "Bearer x", "Basic " + TEAM_A_KEY, TEAM_A_KEY):
        response = httpx.get(f"{gateway}/v1/models", headers={"Authorization": header})
        assert response.status_code == 401, header


def test_unknown_v1_routes_need_a_key_before_they_are_404(gateway: str) -> None:
    for method, path in (("GET", "/v1/assistants"), ("GET", "/v1/chat/completions")):
        stranger = httpx.request(method, f"{gateway}{path}")
        assert stranger.status_code == 401, path
        assert stranger.json()["error"]["code"] == "invalid_api_key"
        client = httpx.request(method, f"{gateway}{path}",
                               headers={"Authorization": f"Bearer {TEAM_A_KEY}"})
        assert client.status_code in (404, 405), path
        assert client.headers["x-request-id"]


def test_right_key_with_a_disallowed_model_is_403(gateway: str) -> None:
    team_a = sdk(gateway, TEAM_A_KEY)
    chat: Any = [{"role": "user", "content": "hi"}]
    for stream in (False, True):
        exc = expect_error(
            functools.partial(team_a.chat.completions.create, model="cheap", messages=chat,
                              stream=stream),
            openai.PermissionDeniedError, 403, "permission_error", "model_not_allowed",
        )
        assert exc.param == "model"
    expect_error(lambda: team_a.embeddings.create(model="cheap", input="x"),
                 openai.PermissionDeniedError, 403, "permission_error", "model_not_allowed")
    # An unknown model is still a 404, whoever asks.
    expect_error(lambda: team_a.chat.completions.create(model="nope", messages=chat),
                 openai.NotFoundError, 404, "invalid_request_error", "model_not_found")


def test_right_key_gets_its_allowed_model(gateway: str) -> None:
    team_a = sdk(gateway, TEAM_A_KEY)
    reply = team_a.chat.completions.with_raw_response.create(
        model="premium", messages=[{"role": "user", "content": "hi"}]
    )
    assert reply.parse().model == "premium"
    assert reply.headers["x-request-id"]
    # team-b's key comes from its environment variable, and "*" allows every model.
    team_b = sdk(gateway, TEAM_B_KEY)
    assert team_b.chat.completions.create(
        model="cheap", messages=[{"role": "user", "content": "hi"}]
    ).model == "cheap"


def test_auto_only_considers_the_clients_models(gateway: str) -> None:
    team_a = sdk(gateway, TEAM_A_KEY)
    for i in range(6):
        reply = team_a.chat.completions.with_raw_response.create(
            model="auto:fast", messages=[{"role": "user", "content": f"pick one {i}"}]
        )
        assert reply.headers["x-gateway-model"] == "premium"
        assert reply.parse().model == "premium"
    # Given the choice, auto:fast does not pick the expensive model: the test can fail.
    team_b = sdk(gateway, TEAM_B_KEY)
    picks = {
        team_b.chat.completions.with_raw_response.create(
            model="auto:fast", messages=[{"role": "user", "content": f"pick {i}"}]
        ).headers["x-gateway-model"]
        for i in range(6)
    }
    assert "premium" not in picks


def test_models_list_and_retrieve_show_only_allowed_models(gateway: str) -> None:
    team_a = sdk(gateway, TEAM_A_KEY)
    assert {m.id for m in team_a.models.list()} == {"premium"} | ALIASES
    assert team_a.models.retrieve("premium").id == "premium"
    expect_error(lambda: team_a.models.retrieve("cheap"), openai.NotFoundError, 404,
                 "invalid_request_error", "model_not_found")
    team_b = sdk(gateway, TEAM_B_KEY)
    assert {m.id for m in team_b.models.list()} == {m["id"] for m in MODELS} | ALIASES


def test_admin_status_needs_the_admin_key(gateway: str) -> None:
    def call(key: str) -> Any:
        return sdk(gateway, key or "unused", v1=False).get(
            "/admin/status", cast_to=object, options={"headers": {} if key else NO_KEY}
        )

    for key in ("", "wrong", TEAM_A_KEY, TEAM_B_KEY):
        exc = expect_error(functools.partial(call, key), openai.AuthenticationError, 401,
                           "authentication_error", "invalid_api_key")
        assert ADMIN_KEY not in exc.response.text
    status = call(ADMIN_KEY)
    assert isinstance(status, dict)
    assert set(status) >= {"version", "uptime_secs", "models", "spend", "keys", "failover"}
    assert set(status["models"]) == {m["id"] for m in MODELS}
    assert set(status["spend"]["clients"]) == {"team-a", "team-b", "team-c"}


def test_without_an_admin_key_variable_the_admin_routes_do_not_exist(
    sim_a: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    config = sim_config({"a": sim_a}, MODELS, state_path=tmp_path / "s.db")
    with running_gateway(config, env={}) as root:
        for key in ("", "anything", ADMIN_KEY):
            headers = {"Authorization": f"Bearer {key}"} if key else NO_KEY
            admin = functools.partial(sdk(root, v1=False).get, "/admin/status",
                                      cast_to=object, options={"headers": headers})
            expect_error(admin, openai.NotFoundError, 404, "invalid_request_error", "not_found")
        # An open gateway serves anyone, with or without a key.
        assert {m.id for m in sdk(root).models.list(extra_headers=NO_KEY)} >= ALIASES
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("open" in w and "no client keys" in w for w in warnings), warnings


def test_a_client_key_variable_that_is_not_set_is_named_in_a_warning(
    sim_a: str, tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway")
    config = sim_config({"a": sim_a}, MODELS, auth=auth_config(), state_path=tmp_path / "s.db")
    with running_gateway(config, env={"TEAM_B_KEY": TEAM_B_KEY}):
        pass
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("team-c" in w and "TEAM_C_KEY_NOT_SET" in w for w in warnings), warnings
    assert not any("open" in w and "no client keys" in w for w in warnings)
    assert not any(TEAM_B_KEY in w for w in warnings)


def _request(token: str | None) -> Request:
    headers = [] if token is None else [(b"authorization", f"Bearer {token}".encode())]
    return Request({"type": "http", "method": "GET", "path": "/v1/models", "headers": headers,
                    "query_string": b"", "server": ("test", 80), "scheme": "http"})


def test_every_token_costs_the_same_comparisons() -> None:
    """Structural: first client, last client, wrong or missing token — same work each time."""
    keys = [f"sk-client-{i}" for i in range(5)]
    config = GatewayConfig(server=ServerConfig(), auth=AuthConfig(clients=tuple(
        ClientConfig(name=f"c{i}", key_sha256=hashlib.sha256(k.encode()).hexdigest())
        for i, k in enumerate(keys)
    )))
    calls: list[tuple[int, int]] = []

    def counting_compare(a: bytes, b: bytes) -> bool:
        calls.append((len(a), len(b)))
        return a == b

    auth = Authenticator(config, {"GATEWAY_ADMIN_KEY": ADMIN_KEY}, compare=counting_compare,
                         keyring_lookup=lambda service, name: None)
    counts = []
    for token, expected in [(keys[0], "c0"), (keys[-1], "c4"), ("sk-nobody", None),
                            ("x" * 500, None), (None, None)]:
        calls.clear()
        if expected is None:
            with pytest.raises(AuthenticationFailed):
                auth.client_for(_request(token))
        else:
            client = auth.client_for(_request(token))
            assert client is not None and client.name == expected
        counts.append(len(calls))
        # Digests, not tokens, are compared: the token's length is not measured either.
        assert set(calls) == {(32, 32)}
    assert counts == [len(keys)] * 5
    for token in (ADMIN_KEY, "wrong", None):
        calls.clear()
        if token == ADMIN_KEY:
            auth.check_admin(_request(token))
        else:
            with pytest.raises(AuthenticationFailed):
                auth.check_admin(_request(token))
        assert calls == [(32, 32)]
    no_admin = Authenticator(config, {}, keyring_lookup=lambda service, name: None)
    with pytest.raises(RouteNotFound):
        no_admin.check_admin(_request(ADMIN_KEY))
