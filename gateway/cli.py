"""The `gateway` command: serve, demo, sim, check-config.

A bad config is one line on stderr naming the file, the key and the problem, and exit 2.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

import uvicorn

from gateway.config.errors import ConfigError
from gateway.config.loader import load_config
from gateway.config.models import GatewayConfig


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        result: int = args.run(args)
    except ConfigError as error:
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
    serve.add_argument("--workers", type=int, default=1)
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


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format='{"ts":"%(asctime)s","level":"%(levelname)s","logger":"%(name)s","msg":%(message)r}',
        stream=sys.stderr,
    )


def server_config(app: object, config: GatewayConfig, host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,  # type: ignore[arg-type]
        host=host,
        port=port,
        loop=_fastest_loop(),
        http=_fastest_http(),
        lifespan="on",
        access_log=False,
        log_level="warning",
        timeout_graceful_shutdown=int(config.server.drain_timeout_secs) or None,
        timeout_keep_alive=30,
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
    configure_logging(config.server.log_level)
    app = create_app(config)
    server = uvicorn.Server(server_config(app, config, config.server.host, config.server.port))
    server.run()
    return 0


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
