"""The deployment files hold together, checked without a Docker engine.

docker-compose.yml parses and every file it (and the Dockerfile) refers to exists; the
services nginx and Prometheus name exist; the replicas run on Redis; the commands the
containers run parse with the gateway's own CLI; deploy/gateway.toml loads (also with the
compose environment) and matches the simulator's demo models; the Grafana dashboard parses,
its queries name only metrics gateway/metrics.py defines, and (with promtool installed) they
and the Prometheus config are valid.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from gateway.cli import _parser
from gateway.config.loader import load_config
from gateway.metrics import CONTRACT, Metrics
from gateway.sim.demo import demo_models

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "gateway.json"
METRIC_NAME = re.compile(r"\bgateway_[a-z0-9_]+\b")


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def services() -> dict[str, Any]:
    found: dict[str, Any] = compose()["services"]
    return found


def gateway_services() -> dict[str, Any]:
    return {name: s for name, s in services().items() if name.startswith("gateway")}


def host_path(volume: str) -> Path | None:
    source = volume.split(":", 1)[0]
    return (ROOT / source).resolve() if source.startswith((".", "/")) else None


def exposed_metric_names() -> set[str]:
    """Every sample name the gateway's registry can expose (from metrics.py itself)."""
    names: set[str] = set()
    for family in Metrics().registry.collect():
        if family.type == "counter":
            names.add(f"{family.name}_total")
        elif family.type == "histogram":
            names |= {f"{family.name}_{s}" for s in ("bucket", "sum", "count")}
        else:
            names.add(family.name)
    return names


def dashboard_queries() -> list[str]:
    board = orjson.loads(DASHBOARD.read_bytes())
    queries = [
        target["expr"]
        for panel in board["panels"]
        for target in panel.get("targets", [])
    ]
    for variable in board["templating"]["list"]:
        query = variable.get("query")
        queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def test_compose_parses_and_every_referenced_file_exists() -> None:
    data = compose()
    assert {"gateway-1", "gateway-2", "sim", "redis", "nginx", "prometheus", "grafana"} <= set(
        data["services"]
    )
    named_volumes = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        build = service.get("build")
        if build is not None:
            context = ROOT / (build if isinstance(build, str) else build.get("context", "."))
            dockerfile = build.get("dockerfile", "Dockerfile") if isinstance(build, dict) else (
                "Dockerfile"
            )
            assert (context / dockerfile).is_file(), name
        else:
            assert service.get("image"), f"{name} has neither build nor image"
        for volume in service.get("volumes", []):
            path = host_path(volume)
            if path is None:
                assert volume.split(":", 1)[0] in named_volumes, (name, volume)
            else:
                assert path.exists(), (name, volume)
                assert ROOT in path.parents, (name, volume)  # nothing outside the repo


def test_the_replicas_share_state_through_redis_with_append_only_persistence() -> None:
    replicas = gateway_services()
    assert len(replicas) >= 2
    for name, service in replicas.items():
        env = service["environment"]
        assert env["GATEWAY_STATE__BACKEND"] == "redis", name
        assert env["GATEWAY_STATE__REDIS_URL"].startswith("redis://redis:"), name
        assert env["GATEWAY_SERVER__HOST"] == "0.0.0.0", name
        assert "redis" in service["depends_on"], name
        # Longer than the drain, so a stop lets streams finish before the SIGKILL.
        assert float(service["stop_grace_period"].removesuffix("s")) > 30, name
    redis = services()["redis"]
    command = redis["command"]
    assert command[command.index("--appendonly") + 1] == "yes"
    assert any(v.endswith(":/data") for v in redis["volumes"])


def test_the_containers_commands_parse_with_the_gateway_cli() -> None:
    sim = services()["sim"]["command"]
    assert sim[0] == "gateway"
    args = _parser().parse_args(sim[1:])
    assert args.demo_models and args.port == 9100 and args.host == "0.0.0.0"
    dockerfile = (ROOT / "Dockerfile").read_text()
    cmd = re.search(r'^CMD \[(.*)\]$', dockerfile, re.M)
    assert cmd is not None
    argv = orjson.loads(f"[{cmd.group(1)}]")
    assert argv[:2] == ["gateway", "serve"]
    _parser().parse_args(argv[1:])


def test_nginx_balances_the_replicas_and_does_not_buffer_streams() -> None:
    conf = (DEPLOY / "nginx.conf").read_text()
    upstream = re.search(r"upstream gateway \{(.*?)\}", conf, re.S)
    assert upstream is not None
    servers = {s.split(":")[0] for s in re.findall(r"server\s+([\w.-]+:\d+)", upstream.group(1))}
    assert servers == set(gateway_services())
    assert re.search(r"^\s*proxy_buffering off;", conf, re.M)
    assert re.search(r"^\s*proxy_http_version 1\.1;", conf, re.M)
    # A POST is never replayed on another replica (that would bill a completion twice).
    retries = re.findall(r"^\s*proxy_next_upstream\s+([^;]*);", conf, re.M)
    assert all("non_idempotent" not in r for r in retries)
    nginx = services()["nginx"]
    assert "./deploy/nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]


def test_prometheus_scrapes_every_replica_directly() -> None:
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    targets = {t for c in jobs["gateway"]["static_configs"] for t in c["targets"]}
    assert targets == {f"{name}:8080" for name in gateway_services()}
    for rule_file in config.get("rule_files", []):
        assert (DEPLOY / rule_file).is_file()


def test_dockerfile_is_slim_non_root_with_a_healthcheck() -> None:
    text = (ROOT / "Dockerfile").read_text()
    froms = re.findall(r"^FROM (\S+)", text, re.M)
    assert froms and all(image == "python:3.11-slim" for image in froms)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and user[-1] not in ("root", "0")
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, re.M | re.S)
    assert healthcheck is not None and "/healthz" in healthcheck.group(1)
    # Every COPY source exists and is let through by .dockerignore's allowlist.
    allowed = [
        line.removeprefix("!").rstrip("/")
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.startswith("!")
    ]
    for line in re.findall(r"^COPY (?!--from)(.*)$", text, re.M):
        *sources, _ = shlex.split(line)
        for source in sources:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") in allowed, source
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    readme = pyproject["project"].get("readme")
    assert readme is None or readme in allowed, "the build needs the readme pyproject names"


def test_every_data_file_of_the_package_is_in_the_wheel() -> None:
    """The image installs a wheel, which (unlike `pip install -e`) has only declared data."""
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = pyproject["tool"]["setuptools"].get("package-data", {}).get("gateway", [])
    package = ROOT / "gateway"
    data = {
        p.relative_to(package) for p in package.rglob("*")
        if p.is_file() and p.suffix not in (".py", ".pyc") and "__pycache__" not in p.parts
    }
    declared = {p.relative_to(package) for pattern in patterns for p in package.glob(pattern)}
    assert data <= declared, data - declared


def test_deploy_config_loads_alone_and_with_the_compose_environment() -> None:
    path = DEPLOY / "gateway.toml"
    alone = load_config(path, env={})
    assert alone.state.backend == "memory"
    for name, service in gateway_services().items():
        env = {k: str(v) for k, v in service["environment"].items() if "${" not in str(v)}
        config = load_config(path, env=env)
        assert config.state.backend == "redis", name
        assert config.state.redis_url == env["GATEWAY_STATE__REDIS_URL"]
        assert config.server.port == 8080
    # The models are the simulator's demo models, at the simulator's prices.
    sims = {m.name: m for m in demo_models()}
    assert {m.id for m in alone.models} == set(sims)
    for model in alone.models:
        sim = sims[model.id]
        assert (model.input_per_mtok, model.output_per_mtok) == (
            sim.input_per_mtok, sim.output_per_mtok
        )
        assert model.context_window == sim.context_window
    backend = alone.backends[0]
    assert backend.base_url == "http://sim:9100/v1"


def test_grafana_provisioning_points_at_the_dashboards_and_prometheus() -> None:
    grafana = services()["grafana"]
    mounts = dict(v.split(":")[:2] for v in grafana["volumes"] if v.startswith("./"))
    provisioning = DEPLOY / "grafana" / "provisioning"
    datasources = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())
    source = datasources["datasources"][0]
    assert source["type"] == "prometheus" and source["url"] == "http://prometheus:9090"
    providers = yaml.safe_load((provisioning / "dashboards" / "dashboards.yml").read_text())
    path = providers["providers"][0]["options"]["path"]
    assert mounts["./deploy/grafana/dashboards"] == path
    assert mounts["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    board = orjson.loads(DASHBOARD.read_bytes())
    uids = {
        p["datasource"]["uid"] for p in board["panels"] if isinstance(p.get("datasource"), dict)
    }
    assert uids == {source["uid"]}


def test_dashboard_queries_name_only_metrics_that_exist_and_cover_the_contract() -> None:
    exposed = exposed_metric_names()
    used: set[str] = set()
    for query in dashboard_queries():
        names = set(METRIC_NAME.findall(query))
        assert names, query
        assert names <= exposed, (query, names - exposed)
        used |= names
    base = {re.sub(r"_(bucket|sum|count)$", "", n) for n in used}
    assert set(CONTRACT) <= base, set(CONTRACT) - base
    titles = " ".join(p["title"].lower() for p in orjson.loads(DASHBOARD.read_bytes())["panels"])
    for topic in ("request rate", "errors", "latency", "first token", "spend per hour",
                  "circuit", "failovers", "keys"):
        assert topic in titles, topic


def test_alert_rules_name_only_metrics_that_exist() -> None:
    rules = yaml.safe_load((DEPLOY / "alerts.yml").read_text())
    exposed = exposed_metric_names()
    for group in rules["groups"]:
        for rule in group["rules"]:
            names = set(METRIC_NAME.findall(rule["expr"]))
            assert names and names <= exposed, rule["alert"]


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool is not installed")
def test_promtool_accepts_the_prometheus_config_and_every_dashboard_query(
    tmp_path: Path,
) -> None:
    checked = subprocess.run(["promtool", "check", "config", str(DEPLOY / "prometheus.yml")],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    # promtool parses PromQL in rule files: one recording rule per dashboard query, with
    # Grafana's variables replaced by what they expand to.
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query_{i}",
         "expr": query.replace("$__rate_interval", "1m").replace("$instance", ".*")}
        for i, query in enumerate(dashboard_queries()) if not query.startswith("label_values")
    ]}]}
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules))
    checked = subprocess.run(["promtool", "check", "rules", str(path)],
                             capture_output=True, text=True, timeout=30)
    assert checked.returncode == 0, checked.stdout + checked.stderr
