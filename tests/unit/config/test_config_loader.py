"""load_config: path choice, layering (defaults < file < env < flags), paths, TOML errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.config.models import GatewayConfig, Mode, Task

REPO = Path(__file__).resolve().parents[3]

MINIMAL = """
[[backends]]
name = "sim"
base_url = "http://127.0.0.1:9100/v1"

[[models]]
id = "m1"
backend = "sim"
"""


def write(folder: Path, text: str, name: str = "gateway.toml") -> Path:
    path = folder / name
    path.write_text(text, encoding="utf-8")
    return path


def test_example_config_loads() -> None:
    config = load_config(REPO / "config.example.toml", env={})
    assert isinstance(config, GatewayConfig)
    ids = [model.id for model in config.models]
    assert {"gpt-4o", "gpt-4o-mini", "sim-fast"} <= set(ids)
    assert {backend.name for backend in config.backends} == {"openai", "sim"}
    sim = next(b for b in config.backends if b.name == "sim")
    assert sim.base_url == "http://127.0.0.1:9100/v1"
    assert sim.api_key_env == ()
    assert any(model.fallbacks for model in config.models)
    assert config.source == (REPO / "config.example.toml").resolve()


def test_empty_file_gets_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.server.port == 8080
    assert config.server.host == "127.0.0.1"
    assert config.routing.default_mode is Mode.AUTO
    assert config.routing.priors_file is None
    assert config.failover.max_retries == 2
    assert config.state.backend == "memory"
    assert config.auth.admin_key_env == "GATEWAY_ADMIN_KEY"
    assert config.backends == () and config.models == ()


def test_missing_sections_get_defaults_next_to_given_ones(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[server]\nport = 9001\n" + MINIMAL), env={})
    assert config.server.port == 9001
    assert config.server.max_body_bytes == 10 * 1024 * 1024
    assert config.circuit_breaker.failure_threshold == 3
    assert config.models[0].tasks == (Task.GENERATE, Task.CODE, Task.REASONING, Task.CLASSIFY)


def test_price_zero_is_valid(tmp_path: Path) -> None:
    text = MINIMAL + "input_per_mtok = 0.0\noutput_per_mtok = 0.0\n"
    config = load_config(write(tmp_path, text), env={})
    assert config.models[0].input_per_mtok == 0.0


def test_path_from_gateway_config_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 7000\n", name="custom.toml")
    assert load_config(env={"GATEWAY_CONFIG": str(path)}).server.port == 7000


def test_default_path_is_gateway_toml_in_working_dir(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write(tmp_path, "[server]\nport = 7001\n")
    monkeypatch.chdir(tmp_path)
    assert load_config(env={}).server.port == 7001


def test_missing_file_is_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError) as caught:
        load_config(missing, env={})
    assert str(caught.value) == f"{missing}: -: file not found"


def test_env_overrides_server_port_and_state_backend(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8081\n[state]\nbackend = 'memory'\n")
    env = {"GATEWAY_SERVER__PORT": "9000", "GATEWAY_STATE__BACKEND": "redis"}
    config = load_config(path, env=env)
    assert config.server.port == 9000
    assert config.state.backend == "redis"


def test_env_names_are_case_insensitive_and_coerced(tmp_path: Path) -> None:
    env = {
        "gateway_failover__include_prefix": "false",
        "GATEWAY_SPEND__HOURLY_USD": "2.5",
        "GATEWAY_AUTH__ADMIN_KEY_ENV": "MY_ADMIN",
    }
    config = load_config(write(tmp_path, ""), env=env)
    assert config.failover.include_prefix is False
    assert config.spend.hourly_usd == 2.5
    assert config.auth.admin_key_env == "MY_ADMIN"


def test_cli_override_beats_env_and_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8081\nhost = '10.0.0.1'\n")
    env = {"GATEWAY_SERVER__PORT": "9000", "GATEWAY_SERVER__HOST": "0.0.0.0"}
    config = load_config(path, env=env, cli_overrides={"server.port": 9100, "server.host": None})
    assert config.server.port == 9100
    assert config.server.host == "0.0.0.0"  # flag not given (None): the environment stands


def test_env_does_not_reach_array_tables(tmp_path: Path) -> None:
    env = {
        "GATEWAY_MODELS__0__ID": "hijack",
        "GATEWAY_BACKENDS__0__BASE_URL": "http://evil.example/v1",
        "GATEWAY_AUTH__CLIENTS": '[{"name": "x", "key_env": "X"}]',
        "GATEWAY_AUTH__CLIENTS__0__NAME": "x",
    }
    config = load_config(write(tmp_path, MINIMAL), env=env)
    assert [model.id for model in config.models] == ["m1"]
    assert config.backends[0].base_url == "http://127.0.0.1:9100/v1"
    assert config.auth.clients == ()


def test_unrelated_gateway_variables_are_not_overrides(tmp_path: Path) -> None:
    env = {"GATEWAY_ADMIN_KEY": "secret", "GATEWAY_SERVER": "not json", "GATEWAY_X__Y": "1"}
    assert load_config(write(tmp_path, ""), env=env).server.port == 8080


def test_unknown_env_key_in_a_section_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), env={"GATEWAY_SERVER__PROT": "1"})
    assert caught.value.key == "server.prot"
    assert "GATEWAY_SERVER__PROT" in caught.value.problem


def test_bad_env_value_names_key_and_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), env={"GATEWAY_SERVER__PORT": "eighty"})
    assert caught.value.key == "server.port"
    assert "must be an integer" in caught.value.problem
    assert "GATEWAY_SERVER__PORT" in caught.value.problem


def test_unknown_cli_key_rejected(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, ""), env={}, cli_overrides={"models.id": "x"})
    assert caught.value.key == "models.id"


def test_relative_paths_resolve_against_the_config_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "etc"
    folder.mkdir()
    text = "[routing]\npriors_file = 'bench.json'\n[state]\npath = 'data/state.db'\n"
    path = write(folder, text)
    monkeypatch.chdir(tmp_path)
    config = load_config(Path("etc/gateway.toml"), env={})
    assert config.routing.priors_file == folder.resolve() / "bench.json"
    assert config.state.path == folder.resolve() / "data/state.db"
    assert config.source == path.resolve()


def test_default_state_path_also_resolves_against_the_folder(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, ""), env={})
    assert config.state.path == tmp_path.resolve() / "gateway-state.db"


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere" / "priors.json"
    config = load_config(write(tmp_path, f"[routing]\npriors_file = '{target}'\n"), env={})
    assert config.routing.priors_file == target


def test_toml_syntax_error_names_line_and_column(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nport = 8080\nhost = = 'x'\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "line 3, column 8" in message
    assert "\n" not in message


def test_toml_error_at_end_of_document_still_names_a_position(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "[server]\nhost = 'unterminated\n"), env={})
    assert "line" in caught.value.problem and "column" in caught.value.problem


def test_source_is_not_a_file_key(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, "source = '/etc/passwd'\n"), env={})
    assert (caught.value.key, caught.value.problem) == ("source", "unknown key")


def test_default_mode_accepts_the_alias_spelling(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "[routing]\ndefault_mode = 'auto:fast'\n"), env={})
    assert config.routing.default_mode is Mode.FAST


def test_result_is_frozen(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MINIMAL), env={})
    with pytest.raises(ValueError):
        config.server.port = 1  # type: ignore[misc]
