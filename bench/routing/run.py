"""Routing benchmark: `.venv/bin/python -m bench.routing.run [--requests N] [--concurrency C]`.

Two `gateway sim` processes (the demo's strong, mid and cheap models on one, the flaky model
on its own) and, per arm, a fresh `gateway serve` process with its own state file and the demo
priors. Arms: `auto`, `auto:best`, `auto:fast`, and each model alone (explicit model id, no
fallbacks). Every arm sends the same workload (bench/routing/drive.py) with feedback from the
sim's verdicts; at `--flip-at` (default: half way) the flaky model starts failing. Prints a
table and the issue's checks, writes bench/results/routing.json and bench/results/routing.png.
Exit status 0 when every check passes, 1 otherwise.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import httpx
import orjson

from bench.routing import report
from bench.routing.drive import Result, run_arm, workload
from bench.routing.world import FLAKY, Process, gateway_config, models, start_sim, true_quality
from tests.procs import free_port, start_gateway

RESULTS = Path(__file__).resolve().parent.parent / "results"


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    flip_at = args.requests // 2 if args.flip_at is None else args.flip_at
    singles = [m.name for m in models()]
    arms = [*report.MODES, *singles, *(["auto (no priors)"] if args.no_priors_arm else [])]
    if args.arms:
        arms = [a for a in arms if a in args.arms.split(",")]
    requests = workload(args.requests, seed=args.seed)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="bench-routing-") as tmp:
        folder = Path(tmp)
        main_sim = start_sim("sim-main", tuple(m for m in models() if m.name != FLAKY),
                             free_port(), folder)
        flaky_sim = start_sim("sim-flaky", tuple(m for m in models() if m.name == FLAKY),
                              free_port(), folder)
        try:
            series = {
                arm: _run(arm, requests, folder, main_sim, flaky_sim, flip_at, args.concurrency)
                for arm in arms
            }
        finally:
            main_sim.stop()
            flaky_sim.stop()
    summaries = {
        arm: report.summarise(results, flip_at, routed=arm.startswith("auto"))
        for arm, results in series.items()
    }
    if not {*report.MODES, *singles} <= set(summaries):  # a subset (--arms): table only
        print(report.table(summaries, next(iter(summaries))))
        return 0
    verdict = report.checks(summaries, singles)
    print()
    print(report.table(summaries, verdict["best_single_model"]))
    print()
    for name, ok in verdict["pass"].items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    elapsed = time.monotonic() - started
    print(f"\n{args.requests} requests per arm, {len(arms)} arms, {elapsed:.0f} s")
    RESULTS.mkdir(parents=True, exist_ok=True)
    payload = _payload(args, flip_at, summaries, verdict, elapsed)
    (RESULTS / "routing.json").write_bytes(orjson.dumps(payload, option=orjson.OPT_INDENT_2))
    report.plot(series, flip_at, RESULTS / "routing.png")
    print(f"wrote {RESULTS / 'routing.json'} and {RESULTS / 'routing.png'}")
    return 0 if all(verdict["pass"].values()) else 1


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.routing.run", description=__doc__)
    parser.add_argument("--requests", type=int, default=2000, help="requests per arm")
    parser.add_argument("--concurrency", type=int, default=24, help="requests in flight")
    parser.add_argument("--flip-at", type=int, default=None,
                        help="request at which the flaky model starts failing (default: half)")
    parser.add_argument("--seed", type=int, default=11, help="seed of the workload")
    parser.add_argument("--arms", default=None,
                        help="comma-separated subset of arms (the checks need them all)")
    parser.add_argument("--no-priors-arm", action="store_true",
                        help="also run `auto` without the benchmark priors")
    return parser


def _run(
    arm: str, requests: list[Any], folder: Path, main_sim: Process, flaky_sim: Process,
    flip_at: int, concurrency: int,
) -> list[Result]:
    for sim in (main_sim, flaky_sim):
        httpx.post(f"{sim.root}/_sim/reset", trust_env=False).raise_for_status()
    name = arm.replace(" ", "-").replace(":", "-").replace("(", "").replace(")", "")
    config = gateway_config(folder, name, main_sim.root, flaky_sim.root,
                            priors="no priors" not in arm)
    gateway = start_gateway(config, log_dir=folder)
    sims = {m.name: (flaky_sim if m.name == FLAKY else main_sim).root for m in models()}
    model = arm.split(" ")[0]
    t0 = time.monotonic()
    try:
        results = _run_loop(
            run_arm(gateway.root, model, requests, sims, flaky_sim.root, flip_at, concurrency)
        )
    finally:
        gateway.stop()
    print(f"{arm:<18} {time.monotonic() - t0:5.1f} s", file=sys.stderr, flush=True)
    return results


def _run_loop(coro: Coroutine[Any, Any, list[Result]]) -> list[Result]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run(coro)
    return uvloop.run(coro)


def _payload(
    args: argparse.Namespace, flip_at: int, summaries: dict[str, Any], verdict: dict[str, Any],
    elapsed: float,
) -> dict[str, Any]:
    return {
        "requests_per_arm": args.requests,
        "concurrency": args.concurrency,
        "flaky_fails_from_request": flip_at,
        "seed": args.seed,
        "elapsed_secs": round(elapsed, 1),
        "models": {
            m.name: {
                "quality": dict(m.quality), "expected_quality": true_quality(m),
                "input_per_mtok": m.input_per_mtok, "output_per_mtok": m.output_per_mtok,
                "latency_ms": m.ttft_ms + 24 * m.token_delay_ms,
            }
            for m in models()
        },
        "arms": summaries,
        "checks": verdict,
    }


if __name__ == "__main__":
    sys.exit(main())
