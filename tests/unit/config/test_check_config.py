"""check_config: exit codes, masked keys, warnings for unresolved key variables."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from gateway.checkconfig import check_config

CONFIG = """
[[backends]]
name = "openai"
base_url = "https://api.openai.com/v1"
api_key_env = ["OPENAI_API_KEY", "OPENAI_API_KEY_2"]

[[backends]]
name = "sim"
base_url = "http://127.0.0.1:9100/v1"

[[models]]
id = "gpt-4o-mini"
backend = "openai"
input_per_mtok = 0.15
output_per_mtok = 0.60
fallbacks = ["sim-fast"]

[[models]]
id = "sim-fast"
backend = "sim"
tasks = ["generate"]
"""

KEY_A = "sk-proj-AAAAAAAAAAAAAAAAAAAAa1b2"
KEY_B = "sk-proj-BBBBBBBBBBBBBBBBBBBBc3d4"


def no_keyring(service: str, username: str) -> str | None:
    return None


def run(path: Path, env: dict[str, str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = check_config(path, out=out, err=err, env=env, keyring_lookup=no_keyring)
    return code, out.getvalue(), err.getvalue()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "gateway.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_valid_config_lists_models_backends_and_masked_keys(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": f"{KEY_A}, {KEY_B}", "OPENAI_API_KEY_2": "sk-single-key-99zz"}
    code, out, err = run(write(tmp_path, CONFIG), env)
    assert code == 0
    assert err == ""
    assert "gpt-4o-mini" in out and "sim-fast" in out
    assert "$0.15" in out and "$0.60" in out
    assert "https://api.openai.com/v1" in out and "http://127.0.0.1:9100/v1" in out
    assert "OPENAI_API_KEY[0]  sk-…a1b2" in out
    assert "OPENAI_API_KEY[1]  sk-…c3d4" in out
    assert "OPENAI_API_KEY_2  sk-…99zz" in out
    assert "warning: OPENAI_API_KEY" not in out


def test_key_values_never_printed(tmp_path: Path) -> None:
    env = {"OPENAI_API_KEY": f"{KEY_A},{KEY_B}", "OPENAI_API_KEY_2": KEY_B}
    _, out, err = run(write(tmp_path, CONFIG), env)
    for key in (KEY_A, KEY_B):
        assert key not in out + err
        assert key[3:-4] not in out + err


def test_unresolved_variable_is_a_warning_not_an_error(tmp_path: Path) -> None:
    code, out, _ = run(write(tmp_path, CONFIG), {"OPENAI_API_KEY": KEY_A})
    assert code == 0
    assert "warning: OPENAI_API_KEY_2 is not set (env or keyring)" in out.splitlines()
    assert "OPENAI_API_KEY  sk-…a1b2" in out


def test_invalid_config_exits_2_with_one_line_on_stderr(tmp_path: Path) -> None:
    path = write(tmp_path, CONFIG.replace('backend = "sim"', 'backend = "nowhere"'))
    code, out, err = run(path, {})
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith(f"{path}: models[sim-fast].backend: unknown backend 'nowhere'")


def test_missing_file_exits_2(tmp_path: Path) -> None:
    code, _, err = run(tmp_path / "absent.toml", {})
    assert code == 2
    assert "file not found" in err


def test_toml_error_exits_2(tmp_path: Path) -> None:
    code, _, err = run(write(tmp_path, "[server\n"), {})
    assert code == 2
    assert "line 1" in err


def test_open_gateway_is_warned(tmp_path: Path) -> None:
    _, out, _ = run(write(tmp_path, CONFIG), {"OPENAI_API_KEY": KEY_A, "OPENAI_API_KEY_2": KEY_B})
    assert "open" in out and "no client keys" in out


def test_default_streams_are_looked_up_at_call_time(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = check_config(write(tmp_path, "[server\n"), env={}, keyring_lookup=no_keyring)
    captured = capsys.readouterr()
    assert code == 2
    assert captured.out == "" and "line 1" in captured.err
