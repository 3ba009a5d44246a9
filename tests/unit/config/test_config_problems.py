"""Every invalid config becomes one ConfigError line naming the file, the key and the problem."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config.errors import ConfigError
from gateway.config.loader import load_config

BACKENDS = """
[[backends]]
name = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = "OPENAI_API_KEY"

[[backends]]
name = "sim"
base_url = "http://127.0.0.1:9100/v1"
"""

TWO_MODELS = """
[[models]]
id = "small"
backend = "sim"
fallbacks = ["big"]

[[models]]
id = "big"
backend = "openai"
"""


def error_for(tmp_path: Path, text: str) -> ConfigError:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as caught:
        load_config(path, env={})
    error = caught.value
    assert str(error).startswith(f"{path}: {error.key}: ")
    assert "\n" not in str(error)
    return error


def test_unknown_top_level_key_with_suggestion(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[circuit_breakr]\nfailure_threshold = 3\n")
    assert error.key == "circuit_breakr"
    assert error.problem.startswith("unknown key")
    assert "circuit_breaker" in error.problem


def test_unknown_key_inside_a_model_names_the_model(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "input_per_mtk = 1.0\n")
    assert error.key == "models[big].input_per_mtk"
    assert "unknown key" in error.problem and "input_per_mtok" in error.problem


def test_negative_price_rejected(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "input_per_mtok = -1.0\n")
    assert error.key == "models[big].input_per_mtok"
    assert error.problem.startswith("must be >= 0")


def test_model_without_id_is_named_by_index(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "[[models]]\nbackend = 'sim'\n")
    assert error.key == "models[2].id"
    assert error.problem == "required key is missing"


def test_wrong_type(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server]\nport = 'eighty'\n")
    assert error.key == "server.port"
    assert "must be an integer" in error.problem


def test_port_out_of_range(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server]\nport = 70000\n")
    assert (error.key, error.problem) == ("server.port", "must be <= 65535 (got 70000)")


def test_invalid_default_mode(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[routing]\ndefault_mode = 'cheap'\n")
    assert error.key == "routing.default_mode"
    assert "'auto', 'fast' or 'best'" in error.problem


def test_invalid_task_names_the_position(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "tasks = ['generate', 'poetry']\n")
    assert error.key == "models[big].tasks[1]"


def test_models_as_a_single_table(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[models]\nid = 'x'\n")
    assert error.key == "models"
    assert "[[models]]" in error.problem


def test_bad_sha256_is_not_echoed(tmp_path: Path) -> None:
    text = (
        BACKENDS
        + TWO_MODELS
        + ("[[auth.clients]]\nname = 'team-a'\nkey_sha256 = 'sk-live-raw-token-pasted-here'\n")
    )
    error = error_for(tmp_path, text)
    assert error.key == "auth.clients[team-a].key_sha256"
    assert "sk-live-raw-token-pasted-here" not in str(error)


def test_model_naming_unknown_backend(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + "[[models]]\nid = 'x'\nbackend = 'anthropic'\n")
    assert error.key == "models[x].backend"
    assert "unknown backend 'anthropic'" in error.problem


def test_fallback_naming_unknown_model(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "fallbacks = ['ghost']\n")
    assert error.key == "models[big].fallbacks"
    assert "unknown model 'ghost'" in error.problem


def test_model_falling_back_to_itself(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "fallbacks = ['big']\n")
    assert error.key == "models[big].fallbacks"
    assert "itself" in error.problem


def test_duplicate_model_id(tmp_path: Path) -> None:
    error = error_for(
        tmp_path, BACKENDS + TWO_MODELS + "[[models]]\nid = 'small'\nbackend = 'sim'\n"
    )
    assert error.key == "models[small].id"
    assert "duplicate model id 'small'" in error.problem


def test_duplicate_backend_name(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + "[[backends]]\nname = 'sim'\nbase_url = 'http://x/v1'\n")
    assert error.key == "backends[sim].name"
    assert "duplicate backend name" in error.problem


def test_duplicate_client_name(tmp_path: Path) -> None:
    client = "[[auth.clients]]\nname = 'team-a'\nkey_env = 'K'\n"
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + client + client)
    assert error.key == "auth.clients[team-a].name"
    assert "duplicate client name" in error.problem


def test_client_needs_a_key(tmp_path: Path) -> None:
    error = error_for(tmp_path, BACKENDS + TWO_MODELS + "[[auth.clients]]\nname = 'team-a'\n")
    assert error.key == "auth.clients[team-a]"
    assert "key_sha256 or key_env" in error.problem


def test_client_with_both_keys(tmp_path: Path) -> None:
    text = (
        BACKENDS
        + TWO_MODELS
        + (f"[[auth.clients]]\nname = 'team-a'\nkey_env = 'K'\nkey_sha256 = '{'a' * 64}'\n")
    )
    error = error_for(tmp_path, text)
    assert error.key == "auth.clients[team-a]"
    assert "not both" in error.problem


def test_client_naming_unknown_model(tmp_path: Path) -> None:
    text = (
        BACKENDS
        + TWO_MODELS
        + ("[[auth.clients]]\nname = 'team-a'\nkey_env = 'K'\nmodels = ['small', 'ghost']\n")
    )
    error = error_for(tmp_path, text)
    assert error.key == "auth.clients[team-a].models"
    assert "unknown model 'ghost'" in error.problem


def test_client_star_and_known_models_are_fine(tmp_path: Path) -> None:
    text = (
        BACKENDS
        + TWO_MODELS
        + (
            "[[auth.clients]]\nname = 'a'\nkey_env = 'K'\nmodels = ['*']\n"
            "[[auth.clients]]\nname = 'b'\nkey_env = 'K2'\nmodels = ['small', 'big']\n"
        )
    )
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    assert len(load_config(path, env={}).auth.clients) == 2


@pytest.mark.parametrize("alias", ["auto", "auto:fast", "auto:best"])
def test_model_id_equal_to_router_alias(tmp_path: Path, alias: str) -> None:
    error = error_for(tmp_path, BACKENDS + f"[[models]]\nid = '{alias}'\nbackend = 'sim'\n")
    assert error.key == f"models[{alias}].id"
    assert "reserved" in error.problem


def test_backend_url_must_be_http(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[[backends]]\nname = 'x'\nbase_url = 'api.openai.com/v1'\n")
    assert error.key == "backends[x].base_url"


def test_further_problems_are_counted(tmp_path: Path) -> None:
    error = error_for(tmp_path, "[server]\nport = -1\nmax_body_bytes = 0\n")
    assert error.key == "server.port"
    assert error.problem.endswith("; and 1 more problem")
