"""Load generators: `wrk` for throughput and latency, a raw-socket client for stream TTFT.

wrk (C, one thread) sends pre-built POSTs from a small Lua script and reports completed
requests, non-2xx/3xx answers, socket errors and latency percentiles (HdrHistogram, µs); its
own cost is a small fraction of a core at the rates here, so the direct-to-upstream run shows
the ceiling of the setup. For a stream, wrk's latency is that of the whole response.

Time to first token needs a client that looks inside the body: `ttft_samples` keeps one
keep-alive connection per worker, writes a pre-built request and timestamps the first bytes
holding a non-empty `"content":"…"` delta. It runs on uvloop when installed. Its own
overhead is the same towards the upstream and the gateway, so it cancels in the difference.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import orjson

_CONTENT = re.compile(rb'"content":"[^"]')
_LUA = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
{auth}
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '\\nWRK_RESULT {{"requests":%d,"duration_us":%d,"bytes":%d,"status_errors":%d,'
    .. '"socket_errors":%d,"p50_us":%d,"p99_us":%d,"mean_us":%f}}\\n',
    summary.requests, summary.duration, summary.bytes, e.status,
    e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.mean))
end
"""


def have_wrk() -> bool:
    return shutil.which("wrk") is not None


def request_body(model: str, stream: bool, *, usage: bool = True) -> bytes:
    body: dict[str, object] = {
        "model": model,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Write a short friendly greeting for a new colleague."},
        ],
        "max_tokens": 64,
    }
    if stream:
        body["stream"] = True
        if usage:
            body["stream_options"] = {"include_usage": True}
    return orjson.dumps(body)


@dataclass
class WrkResult:
    requests: int
    duration_s: float
    status_errors: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    mean_ms: float

    @property
    def rate(self) -> float:
        return self.requests / self.duration_s if self.duration_s else 0.0

    @property
    def ok(self) -> int:
        return self.requests - self.status_errors


def write_script(folder: Path, name: str, body: bytes, api_key: str | None) -> Path:
    auth = f'wrk.headers["Authorization"] = "Bearer {api_key}"' if api_key else ""
    lua_body = "[==[" + body.decode() + "]==]"
    path = folder / f"{name}.lua"
    path.write_text(_LUA.format(body=lua_body, auth=auth))
    return path


def run_wrk(url: str, script: Path, connections: int, seconds: float) -> WrkResult:
    argv = [
        "wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--timeout", "10s",
        "-s", str(script), url,
    ]
    out = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 60).stdout
    for line in out.splitlines():
        if line.startswith("WRK_RESULT "):
            data = orjson.loads(line[len("WRK_RESULT "):])
            return WrkResult(
                requests=data["requests"],
                duration_s=data["duration_us"] / 1e6,
                status_errors=data["status_errors"],
                socket_errors=data["socket_errors"],
                p50_ms=data["p50_us"] / 1000,
                p99_ms=data["p99_us"] / 1000,
                mean_ms=data["mean_us"] / 1000,
            )
    raise RuntimeError(f"wrk printed no result:\n{out[-2000:]}")


def _http_request(port: int, path: str, body: bytes, api_key: str | None) -> bytes:
    head = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if api_key:
        head.append(f"Authorization: Bearer {api_key}")
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@dataclass
class StreamSample:
    ttft_s: float
    total_s: float
    ok: bool


async def _stream_worker(port: int, request: bytes, count: int) -> list[StreamSample]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    samples: list[StreamSample] = []
    try:
        for _ in range(count):
            started = time.perf_counter()
            writer.write(request)
            buffer = b""
            ttft: float | None = None
            while True:
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("server closed the connection")
                buffer += data
                if ttft is None and _CONTENT.search(buffer):
                    ttft = time.perf_counter() - started
                if buffer.endswith(b"\r\n0\r\n\r\n"):
                    break
            total = time.perf_counter() - started
            ok = buffer.startswith(b"HTTP/1.1 200") and b"data: [DONE]" in buffer
            samples.append(StreamSample(ttft if ttft is not None else total, total, ok))
    finally:
        writer.close()
    return samples


async def _ttft(port: int, request: bytes, count: int, clients: int) -> list[StreamSample]:
    per_client = max(1, count // clients)
    results = await asyncio.gather(
        *(_stream_worker(port, request, per_client) for _ in range(clients))
    )
    return [s for worker in results for s in worker]


def ttft_samples(
    port: int, body: bytes, api_key: str | None, count: int, clients: int = 1,
    path: str = "/v1/chat/completions",
) -> list[StreamSample]:
    """`count` streamed requests over `clients` connections; one sample per stream."""
    request = _http_request(port, path, body, api_key)
    try:
        import uvloop
    except ImportError:
        return asyncio.run(_ttft(port, request, count, clients))
    return uvloop.run(_ttft(port, request, count, clients))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * (len(ordered) - 1))))
    return ordered[index]
