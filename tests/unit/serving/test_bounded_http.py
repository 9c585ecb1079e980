"""Bounded reads (`serving.bounded_http`): uvicorn's httptools protocol as the predictor and
the router run it, fed bytes on a recording transport with an injected loop (no sockets; the
same attacks on real processes are in tests/integration/serving/test_serving_edge_live.py)."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_project.serving import bounded_http
from airflow_project.serving.bounded_http import FEED_SLICE, ReadLimits, http_protocol
from airflow_project.serving.constants import MAX_HEAD_BYTES, MAX_REQUEST_LINE_BYTES
from tests.unit.serving.test_serving_write_coalescing import RecordingTransport


class Transport(RecordingTransport):
    def __init__(self) -> None:
        super().__init__()
        self.eof = False

    def write_eof(self) -> None:
        self.eof = True


async def _echo_app(scope, receive, send):
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            seen.append("disconnect")
            return
        body += message.get("body", b"")
        if not message.get("more_body", False):
            break
    out = json.dumps({"got": len(body)}).encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(out)).encode())]})
    await send({"type": "http.response.body", "body": out})


seen: list[str] = []


class Conn:
    """One connection of the bounded protocol on a recording transport."""

    def __init__(self, limits: ReadLimits | None = None, connections: int = 0) -> None:
        from uvicorn.config import Config
        from uvicorn.server import ServerState

        state = ServerState()
        for _ in range(connections):
            state.connections.add(object())  # type: ignore[arg-type]
        self.protocol = http_protocol(limits)(Config(_echo_app, lifespan="off", timeout_keep_alive=5), state, {},
                                              asyncio.get_running_loop())
        self.real = Transport()
        self.fed = 0
        self.protocol.connection_made(self.real)
        feed = self.protocol.parser.feed_data

        def counting(data):
            self.fed += len(data)
            return feed(data)

        self.protocol.parser = _Parser(self.protocol.parser, counting)

    def send(self, data: bytes) -> None:
        self.protocol.data_received(data)

    async def settle(self, seconds: float = 0.0) -> None:
        await asyncio.sleep(seconds)
        for _ in range(20):
            await asyncio.sleep(0)

    @property
    def written(self) -> bytes:
        return b"".join(self.real.writes)

    def answers(self) -> list[tuple[int, bytes]]:
        out, rest = [], self.written
        while rest:
            head, _, rest = rest.partition(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            length = int(next(line.split(b": ")[1] for line in head.split(b"\r\n") if line.lower().startswith(b"content-length")))
            out.append((status, rest[:length]))
            rest = rest[length:]
        return out


class _Parser:
    """The real parser with `feed_data` counted (it is a C type: attributes cannot be set)."""

    def __init__(self, parser, feed) -> None:
        self._parser, self.feed_data = parser, feed

    def __getattr__(self, name):
        return getattr(self._parser, name)


def run(scenario):
    return asyncio.run(scenario())


def request(path: str = "/", body: bytes = b"{}", *headers: bytes) -> bytes:
    return b"\r\n".join([f"POST {path} HTTP/1.1".encode(), b"host: x", *headers,
                         b"content-length: %d" % len(body), b"", body])


# ------------------------------------------------------------------ sizes
def test_a_head_over_the_cap_is_431_after_at_most_one_slice_more_and_the_rest_is_discarded():
    async def scenario():
        c = Conn()
        c.send(b"POST / HTTP/1.1\r\nhost: x\r\nx-big: ")
        for _ in range(64):  # 8 MiB of one header value, in 128 KiB reads
            c.send(b"a" * (128 * 1024))
        await c.settle()
        return c

    c = run(scenario)
    (status, body), = c.answers()
    assert status == 431 and b"larger than 65536 bytes" in body
    assert c.fed <= MAX_HEAD_BYTES + FEED_SLICE  # what the parser (and its header buffer) ever got
    assert c.real.eof and b"connection: close" in c.written and b"x-request-id: " in c.written
    assert c.real.closed  # more than LINGER_BYTES discarded: closed


@pytest.mark.parametrize("over", [1, 100, FEED_SLICE - 1])
def test_a_whole_head_just_over_the_cap_in_one_read_is_431_and_one_at_the_cap_is_served(over):
    def head(size: int) -> bytes:
        start = b"GET / HTTP/1.1\r\nhost: x\r\nx-fill: "
        return start + b"f" * (size - len(start) - 4) + b"\r\n\r\n"

    async def scenario():
        refused, served = Conn(), Conn()
        refused.send(head(MAX_HEAD_BYTES + over))
        served.send(head(MAX_HEAD_BYTES))
        await refused.settle()
        return refused, served

    refused, served = run(scenario)
    assert [s for s, _ in refused.answers()] == [431]
    assert [s for s, _ in served.answers()] == [200]


def test_many_small_reads_of_a_head_count_too():
    async def scenario():
        c = Conn()
        c.send(b"GET / HTTP/1.1\r\n")
        for i in range(MAX_HEAD_BYTES // 100 + 10):
            c.send(b"x-h%d: %s\r\n" % (i, b"v" * 90))
        await c.settle()
        return c

    c = run(scenario)
    assert [s for s, _ in c.answers()] == [431]
    assert c.fed <= MAX_HEAD_BYTES + FEED_SLICE


def test_a_head_just_under_the_guarantee_is_served_even_behind_a_large_pipelined_body():
    headers = [b"x-h%d: %s" % (i, b"v" * 1000) for i in range((MAX_HEAD_BYTES - FEED_SLICE) // 1010 - 1)]
    big = request("/", b"x" * (300 * 1024))

    async def scenario():
        c = Conn()
        c.send(big + request("/", b"{}", *headers) + request("/", b"[]"))  # one read, three requests
        await c.settle()
        return c

    c = run(scenario)
    assert c.answers() == [(200, b'{"got": 307200}'), (200, b'{"got": 2}'), (200, b'{"got": 2}')]


def test_a_long_request_target_is_414():
    async def scenario():
        c = Conn()
        c.send(b"GET /" + b"a" * MAX_REQUEST_LINE_BYTES + b" HTTP/1.1\r\nhost: x\r\n\r\n")
        await c.settle()
        return c

    (status, body), = run(scenario).answers()
    assert status == 414 and b"longer than 8192 bytes" in body


def test_a_malformed_request_is_a_json_400_and_a_close():
    async def scenario():
        c = Conn()
        c.send(b"GARBAGE\x00 / HTTP/1.1\r\n\r\n")
        await c.settle()
        return c

    c = run(scenario)
    (status, body), = c.answers()
    assert status == 400 and json.loads(body)["error"].startswith("malformed HTTP request")
    assert c.real.eof


# ------------------------------------------------------------------ deadlines
FAST = ReadLimits(head_timeout=0.05, body_timeout=0.08)


def test_a_half_sent_head_is_408_after_the_head_deadline():
    async def scenario():
        c = Conn(FAST)
        c.send(b"POST / HTTP/1.1\r\nhost: x\r\nx-slow: ")
        await c.settle(0.02)
        early = list(c.real.writes)
        await c.settle(0.1)
        return early, c

    early, c = run(scenario)
    assert early == []
    (status, body), = c.answers()
    assert status == 408 and b"request head not complete within 0.05 s" in body


def test_a_silent_new_connection_is_closed_after_the_head_deadline():
    async def scenario():
        c = Conn(FAST)
        await c.settle(0.1)
        return c

    c = run(scenario)
    assert c.real.writes == [] and c.real.closed


def test_a_stalled_body_is_408_after_the_body_deadline_and_the_app_stops_waiting():
    async def scenario():
        seen.clear()
        c = Conn(FAST)
        c.send(b"POST / HTTP/1.1\r\nhost: x\r\ncontent-length: 100\r\n\r\n0123456789")  # 10 of 100 bytes
        await c.settle(0.2)
        return c

    c = run(scenario)
    (status, body), = c.answers()
    assert status == 408 and b"request body not complete within 0.08 s" in body
    assert seen == ["disconnect"]


def test_an_idle_keep_alive_connection_keeps_its_own_timeout():
    async def scenario():
        c = Conn(FAST)
        c.send(request("/", b"{}"))
        await c.settle(0.15)  # past both deadlines, within the keep-alive timeout (5 s)
        c.send(request("/", b"{}"))
        await c.settle()
        return c

    c = run(scenario)
    assert [s for s, _ in c.answers()] == [200, 200] and not c.real.closed


def test_requests_arriving_whole_arm_no_timer():
    async def scenario():
        c = Conn()
        c.protocol._cancel_deadline()  # the new connection's own head deadline
        armed = []
        real_arm = c.protocol._arm
        c.protocol._arm = lambda *a: (armed.append(a), real_arm(*a))
        for _ in range(3):
            c.send(request("/", b'{"x": 1}'))
            await c.settle()
        return armed

    assert run(scenario) == []


# ------------------------------------------------------------------ connections
def test_connections_over_the_bound_are_503():
    async def scenario():
        c = Conn(ReadLimits(max_connections=4), connections=4)
        c.send(request("/", b"{}"))  # what it sends meanwhile is discarded
        await c.settle()
        return c

    c = run(scenario)
    (status, body), = c.answers()
    assert status == 503 and b"more than 4 connections" in body
    assert c.protocol not in c.protocol.connections  # takes no place


def test_a_refused_connection_is_closed_after_the_linger(monkeypatch):
    monkeypatch.setattr(bounded_http, "LINGER_S", 0.05)

    async def scenario():
        c = Conn()
        c.send(b"BAD\x00\r\n\r\n")
        await c.settle()
        open_after_answer = not c.real.closed
        await c.settle(0.1)
        return open_after_answer, c.real.closed

    assert run(scenario) == (True, True)


def test_limits_must_be_positive():
    with pytest.raises(ValueError, match="head_timeout"):
        ReadLimits(head_timeout=0)
    with pytest.raises(ValueError, match="max_head"):
        ReadLimits(max_head=FEED_SLICE)
