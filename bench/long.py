"""Long run: 100,000 requests through the gateway, RSS recorded over time, a PNG plot.

Load comes in wrk segments of a few seconds at 50 clients, alternating non-stream and stream
(both paths allocate differently); after every segment the gateway's RSS and the cumulative
request count are recorded. Growth is measured from the end of warm-up (the first 10% of the
requests, when pools, caches and metric children fill) to the end, as issue 7 asks: flat
means < 5%. The plot is written with matplotlib if it is installed; the numbers always go to
JSON next to it.
"""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from bench import loadgen, procs, setup

SEGMENT_SECS = 3.0


def run(gateway: procs.Service, upstream: procs.Service, folder: Path, results: Path,
        total: int) -> dict[str, object]:
    url = f"http://127.0.0.1:{gateway.port}/v1/chat/completions"
    scripts = [
        loadgen.write_script(folder, f"long-{kind}", loadgen.request_body(model, stream),
                             setup.CLIENT_KEY)
        for kind, model, stream in (("ns", setup.EXPLICIT_MODEL, False),
                                    ("s", setup.EXPLICIT_MODEL, True),
                                    ("auto-ns", "auto", False))
    ]
    began = time.monotonic()
    points: list[tuple[float, int, int]] = [(0.0, 0, gateway.memory_kib())]
    done = errors = segment = 0
    print(f"long run: {total} requests ...", flush=True)
    while done < total:
        result = loadgen.run_wrk(url, scripts[segment % len(scripts)], 50, SEGMENT_SECS)
        segment += 1
        done += result.requests
        errors += result.status_errors + result.socket_errors
        points.append((time.monotonic() - began, done, gateway.memory_kib()))
        print(f"  {done:7d} requests  RSS {points[-1][2] / 1024:6.1f} MB", flush=True)
    warm = next(p for p in points if p[1] >= total * 0.1)
    growth = (points[-1][2] - warm[2]) / warm[2]
    summary: dict[str, object] = {
        "requests": done, "errors": errors, "seconds": points[-1][0],
        "rss_start_mb": points[0][2] / 1024, "rss_after_warmup_mb": warm[2] / 1024,
        "rss_end_mb": points[-1][2] / 1024, "rss_max_mb": max(p[2] for p in points) / 1024,
        "growth_after_warmup": growth, "peak_rss_mb": gateway.memory_kib("VmHWM") / 1024,
        "points": points,
    }
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (results / f"long-{stamp}.json").write_bytes(orjson.dumps(summary, option=orjson.OPT_INDENT_2))
    png = results / f"long-{stamp}.png"
    if _plot(points, png, growth):
        summary["plot"] = str(png)
    print(f"long run: {done} requests, {errors} errors, RSS {warm[2] / 1024:.1f} MB after "
          f"warm-up -> {points[-1][2] / 1024:.1f} MB at the end ({100 * growth:+.1f}%)"
          + (f", plot {png}" if "plot" in summary else ""))
    return summary


def _plot(points: list[tuple[float, int, int]], path: Path, growth: float) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.plot([p[1] for p in points], [p[2] / 1024 for p in points], marker=".")
    ax.set_xlabel("requests served (non-stream, stream and auto-routed, 50 clients)")
    ax.set_ylabel("gateway RSS (MB)")
    ax.set_ylim(bottom=0)
    ax.set_title(f"Gateway memory over {points[-1][1]:,} requests "
                 f"(growth after warm-up {100 * growth:+.1f}%)")
    ax.grid(True, alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return True
