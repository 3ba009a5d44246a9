"""The benchmark, one command: `python -m bench.run [--quick] [--litellm] [--long]`.

Starts a fast upstream (bench/upstream.py, or `gateway sim --tokens 64` with
`--upstream sim`), the gateway (`gateway serve`, every feature on: see bench/setup.py) and,
with `--litellm`, LiteLLM's proxy against the same upstream; pins the gateway (and LiteLLM) to
the first core and the upstream plus the load generator to the other; then, round by round,
runs each scenario against every target back to back (direct, gateway with an explicit model,
gateway with `model: "auto"`, LiteLLM), so that targets are compared under the same machine
load. Scenarios: non-stream and stream, 1 and 50 clients, time to first token at 1 client,
and "sp20": 20 clients streaming from a second upstream that paces its events 2 ms apart, so
that the gateway reads one event at a time (the zero-delay upstream lets several events pile
up per read, which flatters the per-chunk cost). Prints a table of medians over the rounds
(with min-max) and writes every raw number to bench/results/bench-<time>.json. `--long` then
runs 100,000 requests and plots RSS (`--long-only`: just that).

Definitions: added latency = gateway percentile - direct percentile (same round); CPU per
request = gateway utime+stime over a run / requests completed in it; per relayed chunk = CPU
per stream / SSE events the upstream sends per stream; peak RSS = VmHWM at the end. For the
"direct" target the CPU figures are the upstream's own.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench import loadgen, procs, report, setup

RESULTS = Path(__file__).resolve().parent / "results"
SCENARIOS = (("ns1", False, 1), ("ns50", False, 50), ("s1", True, 1), ("s50", True, 50),
             ("sp20", True, 20))
TOKENS = 64
PACED_GAP_MS = 2.0


@dataclass
class Target:
    name: str
    service: procs.Service
    model: str
    api_key: str | None
    path: str = "/v1/chat/completions"
    # (port, model) of the paced scenario; None: the target does not run it.
    paced: tuple[int, str] | None = None
    min_seconds: float = 0.0  # a slow target needs longer runs to complete any request
    samples: dict[str, list[dict[str, float | None]]] = field(default_factory=dict)

    def url(self, paced: bool = False) -> str:
        port = self.paced[0] if paced and self.paced else self.service.port
        return f"http://127.0.0.1:{port}{self.path}"


def start_upstream(kind: str, cpus: set[int], folder: Path, gap_ms: float = 0.0,
                   name: str = "upstream") -> procs.Service:
    port = procs.free_port()
    if kind == "sim":
        argv = [sys.executable, "-m", "gateway", "sim", "--tokens", str(TOKENS),
                "--port", str(port)]
    else:
        argv = [sys.executable, "-m", "bench.upstream", "--tokens", str(TOKENS),
                "--port", str(port), "--gap-ms", str(gap_ms)]
    service = procs.start(name, argv, port, cpus, folder)
    procs.wait_http(service, "/v1/models")
    return service


def start_gateway(upstream: procs.Service, cpus: set[int], folder: Path,
                  log_level: str, source: Path | None = None,
                  name: str = "gateway", paced: procs.Service | None = None) -> procs.Service:
    """`gateway serve`; with `source`, the gateway package of another tree (A/B runs)."""
    port = procs.free_port()
    folder = folder / name
    folder.mkdir(exist_ok=True)
    config = setup.gateway_config(
        folder, port, f"http://127.0.0.1:{upstream.port}/v1", log_level=log_level,
        paced_url=None if paced is None else f"http://127.0.0.1:{paced.port}/v1",
    )
    env = setup.gateway_env(dict(os.environ))
    if source is not None:
        env["PYTHONPATH"] = str(source.resolve())
    argv = [sys.executable, "-m", "gateway", "serve", "--config", str(config)]
    service = procs.start(name, argv, port, cpus, folder, env=env,
                          cwd=None if source is None else source.resolve())
    procs.wait_http(service, "/healthz")
    return service


Scripts = dict[tuple[str, bool, bool], Path]


def measure(target: Target, scripts: Scripts, name: str, stream: bool, clients: int,
            seconds: float, paced: bool = False) -> dict[str, float | None]:
    service = target.service
    cpu_before = service.cpu_seconds()
    result = loadgen.run_wrk(target.url(paced), scripts[(target.name, stream, paced)], clients,
                             max(seconds, target.min_seconds))
    cpu = service.cpu_seconds() - cpu_before
    sample: dict[str, float | None] = {
        "rate": result.rate, "requests": result.requests, "p50_ms": result.p50_ms,
        "p99_ms": result.p99_ms, "mean_ms": result.mean_ms,
        "errors": result.status_errors + result.socket_errors,
        "cpu_s": cpu, "cpu_per_req_ms": 1000 * cpu / result.ok if result.ok else None,
        "rss_kib": service.tree_memory_kib(),
    }
    if result.status_errors or result.socket_errors:
        print(f"  ! {target.name} {name}: {result.status_errors} non-2xx, "
              f"{result.socket_errors} socket errors", file=sys.stderr)
    return sample


def measure_ttft(target: Target, count: int) -> dict[str, float | None]:
    body = loadgen.request_body(target.model, True)
    samples = loadgen.ttft_samples(target.service.port, body, target.api_key, count)
    good = [s for s in samples if s.ok]
    ttft = [s.ttft_s * 1000 for s in good]
    total = [s.total_s * 1000 for s in good]
    return {
        "ttft_p50_ms": loadgen.percentile(ttft, 50), "ttft_p99_ms": loadgen.percentile(ttft, 99),
        "total_p50_ms": loadgen.percentile(total, 50), "ok": len(good), "count": len(samples),
    }


def run_rounds(targets: list[Target], folder: Path, rounds: int, seconds: float,
               ttft_count: int, only: set[str] | None = None) -> None:
    scripts: Scripts = {}
    for t in targets:
        for stream, paced in ((False, False), (True, False), (True, True)):
            if paced and t.paced is None:
                continue
            model = t.paced[1] if paced and t.paced else t.model
            scripts[(t.name, stream, paced)] = loadgen.write_script(
                folder, f"{t.name}-{'s' if stream else 'ns'}{'-paced' if paced else ''}",
                loadgen.request_body(model, stream), t.api_key,
            )
    print("warming up ...", flush=True)
    for t in targets:
        for stream in (False, True):
            loadgen.run_wrk(t.url(), scripts[(t.name, stream, False)], 50, 1)
        loadgen.ttft_samples(t.service.port, loadgen.request_body(t.model, True), t.api_key, 20)
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} (load {procs.loadavg()})", flush=True)
        for name, stream, clients in SCENARIOS:
            if only is not None and name not in only:
                continue
            paced = name.startswith("sp")
            for t in targets:
                if paced and t.paced is None:
                    continue
                sample = measure(t, scripts, name, stream, clients, seconds, paced)
                t.samples.setdefault(name, []).append(sample)
                cpu = sample["cpu_per_req_ms"]
                print(f"  {name:5} {t.name:13} {sample['rate']:9.1f}/s  "
                      f"p50 {sample['p50_ms']:7.2f} ms  p99 {sample['p99_ms']:7.2f} ms  "
                      f"cpu/req {'-' if cpu is None else f'{cpu:6.3f}'} ms", flush=True)
        for t in targets if only is None or "ttft" in only else ():
            sample = measure_ttft(t, ttft_count)
            t.samples.setdefault("ttft", []).append(sample)
            print(f"  ttft  {t.name:13} p50 {sample['ttft_p50_ms']:7.2f} ms  "
                  f"p99 {sample['ttft_p99_ms']:7.2f} ms", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="1 round of 2 s runs")
    parser.add_argument("--rounds", type=int, default=None)
    parser.add_argument("--seconds", type=float, default=None, help="length of one wrk run")
    parser.add_argument("--litellm", action="store_true", help="also run LiteLLM's proxy")
    parser.add_argument("--long", action="store_true", help="100,000 requests, RSS plot")
    parser.add_argument("--long-requests", type=int, default=100_000)
    parser.add_argument("--long-only", action="store_true", help="only the long run")
    parser.add_argument("--upstream", choices=("fast", "sim"), default="fast")
    parser.add_argument("--log-level", default="INFO", help="the gateway's server.log_level")
    parser.add_argument("--label", default="", help="a name for this run in the JSON")
    parser.add_argument("--only", default=None,
                        help="comma-separated subset of ns1,ns50,s1,s50,ttft")
    parser.add_argument("--no-auto", action="store_true", help="skip the model=auto target")
    parser.add_argument("--ref", type=Path, default=None,
                        help="folder holding another gateway package: also measured, as "
                             "'gateway-ref', in the same rounds (before/after comparisons)")
    args = parser.parse_args(argv)
    if not loadgen.have_wrk():
        print("wrk is not installed (apt-get install -y wrk)", file=sys.stderr)
        return 2
    rounds = args.rounds or (1 if args.quick else 3)
    seconds = args.seconds or (2.0 if args.quick else 5.0)
    ttft_count = 100 if args.quick else 300
    gw_cpus, load_cpus = procs.cores()
    procs.pin_self(load_cpus)
    RESULTS.mkdir(exist_ok=True)
    services: list[procs.Service] = []
    with tempfile.TemporaryDirectory(prefix="gateway-bench-") as tmp:
        folder = Path(tmp)
        try:
            upstream = start_upstream(args.upstream, load_cpus, folder)
            services.append(upstream)
            paced = start_upstream("fast", load_cpus, folder, PACED_GAP_MS, "upstream-paced")
            services.append(paced)
            gateway = start_gateway(upstream, gw_cpus, folder, args.log_level, paced=paced)
            services.append(gateway)
            gw_paced = (gateway.port, setup.PACED_MODEL)
            targets = [
                Target("direct", upstream, setup.EXPLICIT_MODEL, None,
                       paced=(paced.port, setup.PACED_MODEL)),
                Target("gateway", gateway, setup.EXPLICIT_MODEL, setup.CLIENT_KEY,
                       paced=gw_paced),
                Target("gateway-auto", gateway, "auto", setup.CLIENT_KEY),
            ]
            if args.ref is not None:
                ref = start_gateway(upstream, gw_cpus, folder, args.log_level, args.ref,
                                    name="gateway-ref", paced=paced)
                services.append(ref)
                targets.insert(1, Target("gateway-ref", ref, setup.EXPLICIT_MODEL,
                                         setup.CLIENT_KEY,
                                         paced=(ref.port, setup.PACED_MODEL)))
            litellm_note = None
            if args.litellm:
                import bench.litellm as litellm

                started = litellm.start(upstream, gw_cpus, folder)
                if isinstance(started, str):
                    litellm_note = started
                    print(f"LiteLLM skipped: {started}", file=sys.stderr)
                else:
                    services.append(started)
                    targets.append(Target("litellm", started, setup.EXPLICIT_MODEL,
                                          litellm.MASTER_KEY, min_seconds=10.0))
            if args.long_only:
                import bench.long as long

                long.run(gateway, upstream, folder, RESULTS, args.long_requests)
                return 0
            busy_before = procs.busy_processes({s.pid for s in services})
            load_before = procs.loadavg()
            began = time.time()
            if args.no_auto:
                targets = [t for t in targets if t.name != "gateway-auto"]
            only = set(args.only.split(",")) if args.only else None
            run_rounds(targets, folder, rounds, seconds, ttft_count, only)
            peaks: dict[str, float] = {
                t.name: t.service.memory_kib("VmHWM") for t in targets
            }
            if args.litellm and any(t.name == "litellm" for t in targets):
                peaks["litellm"] = max(s.get("rss_kib") or 0 for x in targets
                                       if x.name == "litellm"
                                       for v in x.samples.values() for s in v)
            busy_after = procs.busy_processes({s.pid for s in services})
            result = {
                "label": args.label, "started": began, "date": time.strftime("%Y-%m-%d %H:%M"),
                "machine": procs.machine(), "pinning": {"gateway": sorted(gw_cpus),
                                                       "upstream+load": sorted(load_cpus)},
                "upstream": args.upstream, "tokens": TOKENS, "rounds": rounds,
                "seconds": seconds, "events_per_stream": TOKENS + 4,
                "paced_gap_ms": PACED_GAP_MS,
                "loadavg": [load_before, procs.loadavg()],
                "other_processes": {"before": busy_before, "after": busy_after},
                "litellm": litellm_note, "peak_rss_kib": peaks,
                "samples": {t.name: t.samples for t in targets},
            }
            result["summary"] = report.summarise(result)
            out = RESULTS / f"bench-{time.strftime('%Y%m%d-%H%M%S')}.json"
            out.write_bytes(orjson.dumps(result, option=orjson.OPT_INDENT_2))
            print()
            print(report.table(result))
            print(f"\nraw numbers: {out}")
            if args.long:
                import bench.long as long

                long.run(gateway, upstream, folder, RESULTS, args.long_requests)
        finally:
            for service in reversed(services):
                service.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())

