"""The gateway config a benchmark runs with: every feature on, one fast upstream.

Features on: client authentication (one client key), routing (three models, `model: "auto"`
for the routed scenarios, fallbacks for the explicit ones), circuit breakers, a key pool
holding two keys, spend limits (per request, hourly and daily, global and per client, so every
request reserves and settles through the store), metrics, and the default INFO request log
(written to a file, as a deployment would).

The limits are far above what a run spends, so no request is refused: the benchmark measures
the cost of checking them, not of hitting them.
"""

from __future__ import annotations

from pathlib import Path

CLIENT_KEY = "bench-client-key"
UPSTREAM_KEYS = "sk-bench-upstream-1,sk-bench-upstream-2"
EXPLICIT_MODEL = "bench-a"
PACED_MODEL = "bench-paced"
MODELS = ("bench-a", "bench-b", "bench-c")


def gateway_env(base: dict[str, str]) -> dict[str, str]:
    env = dict(base)
    env["BENCH_CLIENT_KEY"] = CLIENT_KEY
    env["BENCH_UPSTREAM_KEY"] = UPSTREAM_KEYS
    env["GATEWAY_ADMIN_KEY"] = "bench-admin-key"
    # The benchmark's own environment must not leak proxies or a config into the gateway.
    for name in ("GATEWAY_CONFIG", "HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        env.pop(name, None)
    return env


def gateway_config(folder: Path, port: int, upstream_url: str, log_level: str = "INFO",
                   paced_url: str | None = None) -> Path:
    """Write the gateway's TOML into `folder` and return its path."""
    models = []
    for i, model in enumerate(MODELS):
        others = [m for m in MODELS if m != model]
        models.append(
            f"""
[[models]]
id = "{model}"
backend = "upstream"
upstream_model = "{model}"
input_per_mtok = {0.15 * (i + 1):.2f}
output_per_mtok = {0.60 * (i + 1):.2f}
fallbacks = {others!r}
""".replace("'", '"')
        )
    text = f"""
[server]
host = "127.0.0.1"
port = {port}
log_level = "{log_level}"

[auth]
admin_key_env = "GATEWAY_ADMIN_KEY"
[[auth.clients]]
name = "bench"
key_env = "BENCH_CLIENT_KEY"
models = ["*"]
spend = {{ per_request_usd = 10.0, hourly_usd = 1000000.0, daily_usd = 10000000.0 }}

[routing]
default_mode = "auto"

[circuit_breaker]
failure_threshold = 3
cooldown_secs = 60

[spend]
default_output_tokens = 1024
per_request_usd = 10.0
hourly_usd = 1000000.0
daily_usd = 10000000.0

[failover]
max_retries = 2
commit_after_tokens = 1

[state]
backend = "memory"
path = "{folder / 'gateway-state.db'}"

[[backends]]
name = "upstream"
kind = "openai"
base_url = "{upstream_url}"
api_key_env = ["BENCH_UPSTREAM_KEY"]
timeout_secs = 30
{''.join(models)}
{_paced(paced_url)}
"""
    path = folder / "gateway.toml"
    path.write_text(text)
    return path


def _paced(url: str | None) -> str:
    """A backend whose streams are paced in time, for per-chunk CPU at one event per read."""
    if url is None:
        return ""
    return f"""
[[backends]]
name = "paced"
kind = "openai"
base_url = "{url}"
api_key_env = ["BENCH_UPSTREAM_KEY"]
timeout_secs = 30

[[models]]
id = "{PACED_MODEL}"
backend = "paced"
upstream_model = "{PACED_MODEL}"
input_per_mtok = 0.15
output_per_mtok = 0.60
tasks = ["embed"]  # so that model=auto never routes chat here; explicit use ignores tasks
"""
