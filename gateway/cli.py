"""The `gateway` command: serve, demo, sim, check-config.

A bad config is one line on stderr naming the file, the key and the problem, and exit 2.

`serve --workers N` (N > 1) runs N uvicorn worker processes on one listening socket; each
worker builds its own app from `worker_app()`, which reads the config the supervisor checked
(its path in `GATEWAY_CONFIG`, the flags as `GATEWAY_SERVER__*`). Workers are replicas, so
they need shared state: with `state.backend = "memory"` the command refuses to start (exit 2).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import uvicorn
from uvicorn.supervisors import Multiprocess

from gateway.config.errors import ConfigError
from gateway.config.loader import CONFIG_ENV, config_path, load_config
from gateway.config.models import GatewayConfig
from gateway.logs import configure_logging
from gateway.store.base import StoreCorrupt

if TYPE_CHECKING:
    from fastapi import FastAPI


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except (ConfigError, StoreCorrupt) as error:
        print(str(error), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 0
    return result


def _parser() -> argparse.ArgumentParser:
    from gateway.sim.options import add_arguments as add_sim_arguments

    parser = argparse.ArgumentParser(prog="gateway", description="OpenAI-compatible LLM gateway")
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="run the gateway")
    serve.add_argument("--config", type=Path, default=None)
    serve.add_argument("--host", default=None)
    serve.add_argument("--port", type=int, default=None)
    serve.add_argument("--workers", type=_positive_int, default=1,
                       help="worker processes (more than 1 needs state.backend = redis)")
    serve.set_defaults(run=_serve)

    demo = commands.add_parser("demo", help="the gateway plus simulated upstreams, no keys")
    demo.add_argument("--port", type=int, default=8080)
    demo.add_argument("--host", default="127.0.0.1")
    demo.set_defaults(run=_demo)

    sim = commands.add_parser("sim", help="the simulated OpenAI-compatible upstream")
    sim.add_argument("--port", type=int, default=9100)
    sim.add_argument("--host", default="127.0.0.1")
    add_sim_arguments(sim)
    sim.set_defaults(run=_sim)

    check = commands.add_parser("check-config", help="validate a config file")
    check.add_argument("path", type=Path)
    check.set_defaults(run=_check)
    return parser


def server_config(
    app: object, config: GatewayConfig, host: str, port: int, **options: Any
) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop=_fastest_loop(),
        http=_fastest_http(),
        lifespan="on",
        access_log=False,
        # No uvicorn logging config: its loggers reach the root handler, which writes JSON.
        log_config=None,
        log_level="warning",
        # How long in-flight requests (streams) may run on after SIGTERM; 0 = cut at once.
        # uvicorn only hands it to asyncio.wait_for, which takes fractions too.
        timeout_graceful_shutdown=config.server.drain_timeout_secs,  # type: ignore[arg-type]
        timeout_keep_alive=30,
        **options,
    )


def _fastest_loop() -> str:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return "asyncio"
    return "uvloop"


def _fastest_http() -> str:
    try:
        import httptools  # noqa: F401
    except ImportError:
        return "h11"
    return "httptools"


def _serve(args: argparse.Namespace) -> int:
    from gateway.app import create_app

    config = load_config(
        args.config, cli_overrides={"server.host": args.host, "server.port": args.port}
    )
    if args.workers > 1:
        _refuse_unshared_state(config, args.workers)
    configure_logging(config.server.log_level)
    # Before uvicorn: a bad priors file or state file is one line and exit 2, not a traceback
    # from inside the lifespan.
    from gateway.learning import check_learned_state

    check_learned_state(config)
    if args.workers > 1:
        return _serve_workers(config, args.workers)
    app = create_app(config)
    server = uvicorn.Server(server_config(app, config, config.server.host, config.server.port))
    signal.signal(signal.SIGTERM, _exit_cleanly)
    server.run()
    # A lifespan that failed (uvicorn has logged why) must not look like a clean exit.
    return 0 if server.started else 1


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _refuse_unshared_state(config: GatewayConfig, workers: int) -> None:
    if config.state.backend == "memory":
        raise ConfigError(
            config.source or config_path(None, os.environ), "state.backend",
            f'--workers {workers} needs "redis": with "memory" every worker would keep its own '
            "spend windows, circuit breakers, key cooldowns and statistics",
        )


def _serve_workers(config: GatewayConfig, workers: int) -> int:
    # The workers are spawned, not forked: they rebuild the config from the environment.
    os.environ[CONFIG_ENV] = str(config.source)
    os.environ["GATEWAY_SERVER__HOST"] = config.server.host
    os.environ["GATEWAY_SERVER__PORT"] = str(config.server.port)
    uv_config = server_config(
        "gateway.cli:worker_app", config, config.server.host, config.server.port,
        factory=True, workers=workers,
    )
    # The supervisor drains its workers on SIGTERM/SIGINT and restarts them on SIGHUP.
    Multiprocess(uv_config, sockets=[uv_config.bind_socket()]).run()
    return 0


def worker_app() -> FastAPI:
    """The app of one `serve --workers N` worker (a uvicorn factory, see the module docstring)."""
    from gateway.app import create_app

    config = load_config(None)
    configure_logging(config.server.log_level)
    return create_app(config)


def _exit_cleanly(signum: int, frame: object) -> None:
    """SIGTERM outside uvicorn's own handler: before it is installed, or re-raised after it.

    uvicorn drains on SIGTERM, then raises the signal again with the handler that was there
    before it started, so that the default action kills the process (exit status 143). A
    drained gateway has saved its state and is done: that is a clean exit, status 0.
    """
    raise SystemExit(0)


def _demo(args: argparse.Namespace) -> int:
    from gateway.demo import run_demo

    configure_logging("INFO")
    asyncio.run(run_demo(args.host, args.port))
    return 0


def _sim(args: argparse.Namespace) -> int:
    from gateway.sim.options import options_from_args
    from gateway.sim.server import serve_sim

    asyncio.run(serve_sim(options_from_args(args), args.host, args.port))
    return 0


def _check(args: argparse.Namespace) -> int:
    from gateway.checkconfig import check_config

    return check_config(args.path)
