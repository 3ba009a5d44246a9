"""Key resolution (env, then a real keyring backend) and the Secret/mask helpers."""

from __future__ import annotations

import copy
import pickle
from collections.abc import Iterator
from pathlib import Path

import keyring
import pytest
from keyring.backends import fail
from keyring.errors import KeyringError
from keyrings.alt.file import PlaintextKeyring

from gateway.config.models import BackendConfig, ClientConfig
from gateway.keys.resolve import (
    KEYRING_SERVICE,
    resolve_backend_keys,
    resolve_client_key,
    resolve_secret,
)
from gateway.secrets import Secret, mask, matches, sha256_hex


@pytest.fixture
def file_keyring(tmp_path: Path) -> Iterator[PlaintextKeyring]:
    """A real keyring backend whose file lives in tmp_path; the previous backend is restored."""
    previous = keyring.get_keyring()
    backend = PlaintextKeyring()
    backend.file_path = str(tmp_path / "keyring_pass.cfg")
    keyring.set_keyring(backend)
    try:
        yield backend
    finally:
        keyring.set_keyring(previous)


def openai(*variables: str) -> BackendConfig:
    return BackendConfig(name="openai", base_url="https://api.openai.com/v1", api_key_env=variables)


# --- masking and Secret ---------------------------------------------------------------------


def test_mask_shows_first_three_and_last_four() -> None:
    assert mask("sk-proj-abcdefghija1b2") == "sk-…a1b2"


def test_mask_short_keys_never_whole() -> None:
    assert mask("12345678") == "…78"
    assert mask("abcde") == "…de"
    for short in ("", "a", "ab", "abcd"):
        assert mask(short) == "…"
    for length in range(0, 12):
        key = "k" * length
        assert mask(key).replace("…", "") != key or length == 0


def test_secret_repr_and_str_never_contain_the_value() -> None:
    value = "sk-live-0123456789abcdef"
    secret = Secret(value)
    for shown in (repr(secret), str(secret), f"{secret}", f"{secret!r}", repr([secret])):
        assert value not in shown
        assert "0123456789" not in shown
    assert str(secret) == "sk-…cdef"
    assert secret.reveal() == value


def test_secret_equality_hash_and_copy() -> None:
    assert Secret("sk-aaaaaaaaaa") == Secret("sk-aaaaaaaaaa")
    assert Secret("sk-aaaaaaaaaa") != Secret("sk-aaaaaaaaab")
    assert len({Secret("x" * 10), Secret("x" * 10)}) == 1
    secret = Secret("sk-copyable-key")
    assert copy.deepcopy(secret) is secret
    with pytest.raises(TypeError):
        pickle.dumps(secret)


def test_matches_is_plain_equality() -> None:
    assert matches("token", "token")
    assert not matches("token", "tokem")
    assert matches("clé", "clé".encode())
    assert matches(Secret("abc"), "abc")


def test_sha256_hex() -> None:
    assert sha256_hex("test") == (
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    )


# --- environment --------------------------------------------------------------------------


def test_single_key_has_bare_ref(file_keyring: PlaintextKeyring) -> None:
    resolution = resolve_backend_keys(openai("OPENAI_API_KEY"), env={"OPENAI_API_KEY": "sk-one1"})
    assert resolution.backend == "openai"
    assert [(k.ref, k.secret.reveal(), k.env_var) for k in resolution.keys] == [
        ("OPENAI_API_KEY", "sk-one1", "OPENAI_API_KEY")
    ]
    assert resolution.missing == ()


def test_comma_separated_values_are_split_stripped_and_indexed(
    file_keyring: PlaintextKeyring,
) -> None:
    env = {"OPENAI_API_KEY": " sk-a1 , sk-b2,, ", "OPENAI_API_KEY_2": "sk-c3"}
    resolution = resolve_backend_keys(openai("OPENAI_API_KEY", "OPENAI_API_KEY_2"), env=env)
    assert [(k.ref, k.secret.reveal()) for k in resolution.keys] == [
        ("OPENAI_API_KEY[0]", "sk-a1"),
        ("OPENAI_API_KEY[1]", "sk-b2"),
        ("OPENAI_API_KEY_2", "sk-c3"),
    ]
    assert all(k.source == "env" for k in resolution.keys)


def test_missing_variable_is_listed(file_keyring: PlaintextKeyring) -> None:
    env = {"OPENAI_API_KEY": "sk-a1", "OPENAI_API_KEY_2": ""}
    resolution = resolve_backend_keys(openai("OPENAI_API_KEY", "OPENAI_API_KEY_2", "X"), env=env)
    assert [k.ref for k in resolution.keys] == ["OPENAI_API_KEY"]
    assert resolution.missing == ("OPENAI_API_KEY_2", "X")


def test_backend_without_key_variables_needs_no_key(file_keyring: PlaintextKeyring) -> None:
    local = BackendConfig(name="sim", base_url="http://127.0.0.1:9100/v1")
    resolution = resolve_backend_keys(local, env={})
    assert resolution.keys == () and resolution.missing == ()


def test_the_same_key_twice_is_pooled_once(file_keyring: PlaintextKeyring) -> None:
    env = {"A": "sk-same", "B": "sk-same,sk-other"}
    resolution = resolve_backend_keys(openai("A", "B"), env=env)
    assert [k.ref for k in resolution.keys] == ["A", "B[1]"]


def test_resolved_key_repr_masks(file_keyring: PlaintextKeyring) -> None:
    resolution = resolve_backend_keys(openai("K"), env={"K": "sk-very-secret-9876"})
    assert "very-secret" not in repr(resolution)


# --- keyring ----------------------------------------------------------------------------------


def test_keyring_used_when_variable_not_set(file_keyring: PlaintextKeyring) -> None:
    file_keyring.set_password(KEYRING_SERVICE, "OPENAI_API_KEY_2", "sk-from-keyring-1,sk-kr-2")
    env = {"OPENAI_API_KEY": "sk-env-1"}
    resolution = resolve_backend_keys(openai("OPENAI_API_KEY", "OPENAI_API_KEY_2"), env=env)
    assert [(k.ref, k.secret.reveal(), k.source) for k in resolution.keys] == [
        ("OPENAI_API_KEY", "sk-env-1", "env"),
        ("OPENAI_API_KEY_2[0]", "sk-from-keyring-1", "keyring"),
        ("OPENAI_API_KEY_2[1]", "sk-kr-2", "keyring"),
    ]
    assert resolution.missing == ()


def test_environment_wins_over_keyring(file_keyring: PlaintextKeyring) -> None:
    file_keyring.set_password(KEYRING_SERVICE, "K", "sk-keyring")
    resolution = resolve_backend_keys(openai("K"), env={"K": "sk-env"})
    assert [k.secret.reveal() for k in resolution.keys] == ["sk-env"]


def test_keyring_entries_of_other_services_are_ignored(file_keyring: PlaintextKeyring) -> None:
    file_keyring.set_password("not-gateway", "K", "sk-other-service")
    assert resolve_backend_keys(openai("K"), env={}).missing == ("K",)


def test_no_keyring_backend_is_skipped_silently() -> None:
    previous = keyring.get_keyring()
    keyring.set_keyring(fail.Keyring())
    try:
        resolution = resolve_backend_keys(openai("K"), env={})
    finally:
        keyring.set_keyring(previous)
    assert resolution.keys == () and resolution.missing == ("K",)


def test_broken_keyring_backend_is_skipped_silently(tmp_path: Path) -> None:
    class Broken(PlaintextKeyring):
        def get_password(self, service: str, username: str) -> str | None:
            raise KeyringError("locked")

    previous = keyring.get_keyring()
    keyring.set_keyring(Broken())
    try:
        assert resolve_backend_keys(openai("K"), env={}).missing == ("K",)
    finally:
        keyring.set_keyring(previous)


def test_injected_lookup_is_used() -> None:
    calls: list[tuple[str, str]] = []

    def lookup(service: str, username: str) -> str | None:
        calls.append((service, username))
        return "sk-injected"

    resolution = resolve_backend_keys(openai("K"), env={}, keyring_lookup=lookup)
    assert calls == [("gateway", "K")]
    assert resolution.keys[0].secret.reveal() == "sk-injected"


# --- client and single secrets ------------------------------------------------------------


def test_client_key_sha256_is_returned_as_is() -> None:
    client = ClientConfig(name="a", key_sha256="A" * 64)
    assert resolve_client_key(client, env={}) == "a" * 64


def test_client_key_env_is_hashed(file_keyring: PlaintextKeyring) -> None:
    client = ClientConfig(name="a", key_env="TEAM_A_KEY")
    assert resolve_client_key(client, env={"TEAM_A_KEY": "test\n"}) == sha256_hex("test")
    assert resolve_client_key(client, env={}) is None


def test_client_key_from_keyring(file_keyring: PlaintextKeyring) -> None:
    file_keyring.set_password(KEYRING_SERVICE, "TEAM_A_KEY", "tok")
    client = ClientConfig(name="a", key_env="TEAM_A_KEY")
    assert resolve_client_key(client, env={}) == sha256_hex("tok")


def test_resolve_secret(file_keyring: PlaintextKeyring) -> None:
    secret = resolve_secret("GATEWAY_ADMIN_KEY", env={"GATEWAY_ADMIN_KEY": "adm-123456789"})
    assert secret is not None and secret.reveal() == "adm-123456789"
    assert resolve_secret("GATEWAY_ADMIN_KEY", env={}) is None
