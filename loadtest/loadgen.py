"""The benchmark's load generator: closed-loop HTTP/1.1 keep-alive, asyncio + uvloop + httptools.

    python -m loadtest.loadgen --url URL --bodies FILE.json --concurrency C --duration S
                               [--warmup W] [--host-header H] [--expect v1|v2|none] [--cpu N]

Why not Locust for the benchmark: Locust rounds response times below 100 ms to whole
milliseconds and costs ~100 us of CPU per request in gevent; the targets compare p50s
of about a millisecond within 15 %. This generator keeps a fixed number of connections,
each sending the next pre-encoded request as soon as the previous answer is complete
(closed loop), timestamps with `perf_counter_ns`, and parses responses with httptools
(llhttp, the parser uvicorn uses): a few microseconds of client CPU per request.

Every request of the measured window is recorded (no sampling); errors are non-2xx
answers and transport failures. During warm-up the first response of each connection is
decoded and checked (`--expect`). Prints one JSON object (the result) on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from array import array
from urllib.parse import urlsplit

import httptools


class _Conn(asyncio.Protocol):
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.transport: asyncio.Transport | None = None
        self.waiter: asyncio.Future | None = None
        self.keep_body = False
        self.body = bytearray()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(exc)

    def on_body(self, body: bytes) -> None:
        if self.keep_body:
            self.body += body

    def on_message_complete(self) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(self.parser.get_status_code())

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(exc or ConnectionResetError("connection closed by the server"))

    def _fail(self, exc: BaseException) -> None:
        waiter, self.waiter = self.waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)
        self.transport = None


def _request_bytes(method: str, path: str, host: str, body: bytes, extra: dict[str, str] | None = None) -> bytes:
    more = "".join(f"{k}: {v}\r\n" for k, v in (extra or {}).items())
    head = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: keep-alive\r\n{more}\r\n").encode()
    return head + body


def _check_body(body: bytes, expect: str) -> str | None:
    if expect == "none":
        return None
    try:
        doc = json.loads(body)
        if expect == "v1":
            assert isinstance(doc["predictions"], list) and doc["predictions"]
        else:
            assert isinstance(doc["outputs"][0]["data"], list) and doc["outputs"][0]["data"]
    except Exception as exc:  # noqa: BLE001 - any shape problem is reported, not raised
        return f"unexpected {expect} body ({type(exc).__name__}): {body[:200]!r}"
    return None


def percentile(sorted_values: list[int] | array, q: float) -> float:
    """Nearest-rank percentile (q in 0..100) of sorted values."""
    if not sorted_values:
        return float("nan")
    rank = max(1, min(len(sorted_values), int(-(-q * len(sorted_values) // 100))))
    return float(sorted_values[rank - 1])


async def run(url: str, bodies: list[bytes], concurrency: int, duration: float, warmup: float,
              host_header: str | None = None, expect: str = "none", timeout: float = 30.0,
              headers: dict[str, str] | None = None) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    requests = [_request_bytes("POST", path, host_header or parts.netloc, b, headers) for b in bodies]
    loop = asyncio.get_running_loop()
    t_start = time.perf_counter_ns()
    measure_from = t_start + int(warmup * 1e9)
    end = measure_from + int(duration * 1e9)
    latencies = array("q")
    statuses: dict[int, int] = {}
    errors: list[str] = []
    error_count = 0
    checked = 0

    async def worker(n: int) -> None:
        nonlocal error_count, checked
        conn: _Conn | None = None
        i = n * 7919
        first = True
        while True:
            if conn is None or conn.transport is None:
                try:
                    _, conn = await loop.create_connection(_Conn, host, port)
                except OSError as exc:
                    error_count += 1
                    if len(errors) < 20:
                        errors.append(f"connect: {exc}")
                    await asyncio.sleep(0.05)
                    if time.perf_counter_ns() >= end:
                        return
                    continue
            request = requests[i % len(requests)]
            i += 1
            conn.keep_body = first
            conn.body.clear()
            fut = loop.create_future()
            conn.waiter = fut
            t0 = time.perf_counter_ns()
            if t0 >= end:
                conn.waiter = None
                conn.transport.close()
                return
            conn.transport.write(request)
            try:
                status = await asyncio.wait_for(fut, timeout)
            except (TimeoutError, OSError, httptools.HttpParserError) as exc:
                if t0 >= measure_from:
                    error_count += 1
                    if len(errors) < 20:
                        errors.append(f"{type(exc).__name__}: {exc}")
                if conn.transport is not None:
                    conn.transport.close()
                conn = None
                continue
            t1 = time.perf_counter_ns()
            if first:
                first = False
                problem = _check_body(bytes(conn.body), expect) if 200 <= status < 300 else None
                checked += 1
                if problem:
                    error_count += 1
                    if len(errors) < 20:
                        errors.append(problem)
            if t0 >= measure_from:
                latencies.append(t1 - t0)
                statuses[status] = statuses.get(status, 0) + 1
                if not 200 <= status < 300:
                    error_count += 1
                    if len(errors) < 20:
                        errors.append(f"HTTP {status}")

    await asyncio.gather(*(worker(n) for n in range(concurrency)))
    measured = (time.perf_counter_ns() - measure_from) / 1e9
    values = sorted(latencies)
    ms = 1e6
    return {
        "url": url,
        "concurrency": concurrency,
        "duration_s": round(measured, 3),
        "warmup_s": warmup,
        "requests": len(values),
        "errors": error_count,
        "error_samples": errors,
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "checked_bodies": checked,
        "throughput_rps": round(len(values) / measured, 1) if measured > 0 else 0.0,
        "latency_ms": {
            "mean": round(sum(values) / len(values) / ms, 4) if values else None,
            "p50": round(percentile(values, 50) / ms, 4),
            "p90": round(percentile(values, 90) / ms, 4),
            "p95": round(percentile(values, 95) / ms, 4),
            "p99": round(percentile(values, 99) / ms, 4),
            "p999": round(percentile(values, 99.9) / ms, 4),
            "max": round(values[-1] / ms, 4) if values else None,
        },
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m loadtest.loadgen")
    p.add_argument("--url", required=True)
    p.add_argument("--bodies", required=True, help="JSON file: a list of request bodies (objects)")
    p.add_argument("--concurrency", type=int, default=8)
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--host-header")
    p.add_argument("--expect", choices=["v1", "v2", "none"], default="none")
    p.add_argument("--header", action="append", default=[], help="extra request header 'Name: value'")
    p.add_argument("--cpu", type=int, action="append", help="pin this process to these CPUs")
    args = p.parse_args(argv)
    if args.cpu:
        os.sched_setaffinity(0, set(args.cpu))
    with open(args.bodies, encoding="utf-8") as fh:
        bodies = [json.dumps(b, separators=(",", ":"), ensure_ascii=False).encode() for b in json.load(fh)]
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args.url, bodies, args.concurrency, args.duration, args.warmup,
                             args.host_header, args.expect,
                             headers={k.strip(): v.strip() for k, v in (h.split(":", 1) for h in args.header)}))
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
