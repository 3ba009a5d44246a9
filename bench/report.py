"""Turn a benchmark's raw samples into figures, a Markdown table, and before/after tables.

Every figure is computed per round and then summarised as the median with the min and max
over the rounds; "added" figures subtract the direct-to-upstream value of the same round, so
machine load that drifts between rounds cancels as far as it can.

`python -m bench.report A.json [B.json]` prints the table of one run, or a before/after table
of the gateway figures of two runs.
"""

from __future__ import annotations

import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

Samples = dict[str, list[dict[str, float | None]]]

# (key, label, unit, issue-7 target, per-round value from (target samples, direct, round))
_Figure = tuple[str, str, str, str, Callable[[Samples, Samples, int, int], float | None]]


def _get(samples: Samples, scenario: str, key: str, r: int) -> float | None:
    rows = samples.get(scenario) or []
    return rows[r].get(key) if r < len(rows) else None


def _added(scenario: str, key: str) -> Callable[[Samples, Samples, int, int], float | None]:
    def value(s: Samples, d: Samples, r: int, events: int) -> float | None:
        a, b = _get(s, scenario, key, r), _get(d, scenario, key, r)
        return None if a is None or b is None else a - b
    return value


def _plain(scenario: str, key: str, scale: float = 1.0) -> Callable[..., float | None]:
    def value(s: Samples, d: Samples, r: int, events: int) -> float | None:
        v = _get(s, scenario, key, r)
        return None if v is None else v * scale
    return value


def _per_chunk(scenario: str) -> Callable[[Samples, Samples, int, int], float | None]:
    def value(s: Samples, d: Samples, r: int, events: int) -> float | None:
        v = _get(s, scenario, "cpu_per_req_ms", r)
        return None if v is None else 1000 * v / events
    return value


FIGURES: list[_Figure] = [
    ("added_p50_ns1", "added latency, non-stream, 1 client, p50", "ms", "<= 1",
     _added("ns1", "p50_ms")),
    ("added_p99_ns1", "added latency, non-stream, 1 client, p99", "ms", "<= 3",
     _added("ns1", "p99_ms")),
    ("added_ttft_p50", "TTFT added, stream, 1 client, p50", "ms", "<= 1",
     _added("ttft", "ttft_p50_ms")),
    ("added_ttft_p99", "TTFT added, stream, 1 client, p99", "ms", "",
     _added("ttft", "ttft_p99_ms")),
    ("added_s1_p50", "added latency, whole stream, 1 client, p50", "ms", "",
     _added("s1", "p50_ms")),
    ("lat_p50_ns1", "latency, non-stream, 1 client, p50", "ms", "", _plain("ns1", "p50_ms")),
    ("ttft_p50", "TTFT, stream, 1 client, p50", "ms", "", _plain("ttft", "ttft_p50_ms")),
    ("rate_ns1", "throughput, non-stream, 1 client", "req/s", "", _plain("ns1", "rate")),
    ("rate_ns50", "throughput, non-stream, 50 clients", "req/s", ">= 1000",
     _plain("ns50", "rate")),
    ("rate_s1", "throughput, stream, 1 client", "streams/s", "", _plain("s1", "rate")),
    ("rate_s50", "throughput, stream, 50 clients", "streams/s", ">= 15x LiteLLM",
     _plain("s50", "rate")),
    ("p99_ns50", "latency, non-stream, 50 clients, p99", "ms", "", _plain("ns50", "p99_ms")),
    ("cpu_ns50", "CPU per request, non-stream (50 clients)", "ms", "<= 1",
     _plain("ns50", "cpu_per_req_ms")),
    ("cpu_s50", "CPU per stream (50 clients)", "ms", "", _plain("s50", "cpu_per_req_ms")),
    ("cpu_chunk", "CPU per relayed chunk (50 clients)", "µs", "<= 40", _per_chunk("s50")),
    ("rate_sp20", "throughput, paced stream (2 ms/event), 20 clients", "streams/s", "",
     _plain("sp20", "rate")),
    ("cpu_chunk_paced", "CPU per relayed chunk, one event per read (paced)", "µs", "<= 40",
     _per_chunk("sp20")),
    ("rss_max", "RSS under load, max", "MB", "<= 100",
     lambda s, d, r, e: max((x.get("rss_kib") or 0 for v in s.values() for x in v), default=0)
     / 1024 if r == 0 else None),
]


def summarise(result: dict[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    samples: dict[str, Samples] = result["samples"]
    direct = samples.get("direct", {})
    events = int(result.get("events_per_stream", 68))
    out: dict[str, dict[str, dict[str, float]]] = {}
    for name, own in samples.items():
        figures: dict[str, dict[str, float]] = {}
        for key, _label, _unit, _target, compute in FIGURES:
            if name == "direct" and key.startswith("added"):
                continue
            values = [compute(own, direct, r, events) for r in range(result["rounds"])]
            present = [v for v in values if v is not None]
            if present:
                figures[key] = {"median": statistics.median(present), "min": min(present),
                                "max": max(present)}
        peak = result.get("peak_rss_kib", {}).get(name)
        if peak:
            figures["rss_peak"] = {"median": peak / 1024, "min": peak / 1024, "max": peak / 1024}
        out[name] = figures
    return out


def _cell(fig: dict[str, float] | None, rounds: int) -> str:
    if fig is None:
        return "—"
    digits = 2 if abs(fig["median"]) < 100 else 0
    text = f"{fig['median']:.{digits}f}"
    if rounds > 1 and fig["min"] != fig["max"]:
        text += f" ({fig['min']:.{digits}f}–{fig['max']:.{digits}f})"
    return text


def table(result: dict[str, Any]) -> str:
    summary = result["summary"]
    names = list(summary)
    rounds = result["rounds"]
    rows = ["| figure | unit | " + " | ".join(names) + " | target |",
            "|---|---|" + "---|" * len(names) + "---|"]
    labels = [(k, lab, u, t) for k, lab, u, t, _ in FIGURES]
    labels.append(("rss_peak", "RSS peak (VmHWM)", "MB", "<= 100"))
    for key, label, unit, target in labels:
        cells = [_cell(summary[n].get(key), rounds) for n in names]
        rows.append(f"| {label} | {unit} | " + " | ".join(cells) + f" | {target} |")
    if "litellm" in summary:
        rows.append("")
        rows.append(ratio_lines(summary))
    return "\n".join(rows)


def ratio_lines(summary: dict[str, dict[str, dict[str, float]]]) -> str:
    lite = summary["litellm"]
    lines = []
    for key, what in (("rate_ns50", "non-stream throughput"), ("rate_s50", "stream throughput")):
        if key in lite and key in summary["gateway"] and lite[key]["median"]:
            ratio = summary["gateway"][key]["median"] / lite[key]["median"]
            lines.append(f"gateway / LiteLLM, {what} at 50 clients: {ratio:.1f}x")
    return "\n".join(lines)


def compare(before: dict[str, Any], after: dict[str, Any], target: str = "gateway") -> str:
    a, b = before["summary"][target], after["summary"][target]
    rows = [f"| figure ({target}) | unit | before | after | change |", "|---|---|---|---|---|"]
    for key, label, unit, _t, _ in FIGURES:
        if key in a and key in b:
            x, y = a[key]["median"], b[key]["median"]
            change = f"{y / x:.2f}x" if x and not key.startswith("added") else f"{y - x:+.2f}"
            rows.append(f"| {label} | {unit} | {x:.3f} | {y:.3f} | {change} |")
    return "\n".join(rows)


def main(argv: list[str]) -> int:
    runs = [orjson.loads(Path(p).read_bytes()) for p in argv]
    if len(runs) == 1:
        print(table(runs[0]))
    elif len(runs) == 2:
        for target in ("gateway", "gateway-auto"):
            if target in runs[0]["summary"] and target in runs[1]["summary"]:
                print(compare(runs[0], runs[1], target))
                print()
    else:
        print("usage: python -m bench.report RUN.json [AFTER.json]", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
