"""One socket write per response: the transport proxy and uvicorn's protocol using it."""

from __future__ import annotations

import asyncio
import types

import pytest

from airflow_project.serving.write_coalescing import HTTP_PROTOCOL, CoalescingTransport


class RecordingTransport:
    """The parts of an asyncio transport that uvicorn's protocol uses; records writes."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False
        self.reading = True

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))  # also after close: the tests assert there is none

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def get_extra_info(self, name: str, default=None):
        return {"peername": ("127.0.0.1", 50000), "sockname": ("127.0.0.1", 8080)}.get(name, default)

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True


async def _next_iteration() -> None:
    await asyncio.sleep(0)
    await asyncio.sleep(0)


def test_writes_in_one_iteration_become_one_write_in_order():
    async def scenario():
        real = RecordingTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        t.writelines([b"{", b"}"])
        assert real.writes == []  # nothing reaches the socket within the iteration
        await _next_iteration()
        assert real.writes == [b"HTTP/1.1 200 OK\r\n\r\n{}"]
        t.write(b"next")
        await _next_iteration()
        return real.writes

    assert asyncio.run(scenario()) == [b"HTTP/1.1 200 OK\r\n\r\n{}", b"next"]


def _write_then(payload: bytes, action) -> RecordingTransport:
    """Write `payload` through a coalescing transport, call `action(proxy, real)` within the
    same iteration, let the loop run on; return the real transport."""

    async def scenario():
        real = RecordingTransport()
        proxy = CoalescingTransport(real, asyncio.get_running_loop())
        proxy.write(payload)
        action(proxy, real)
        await _next_iteration()  # a scheduled flush that finds nothing left does not write
        return real

    return asyncio.run(scenario())


def test_close_writes_what_is_pending_first():
    real = _write_then(b"last response", lambda proxy, real: proxy.close())
    assert real.writes == [b"last response"] and real.closed


def test_abort_drops_what_is_pending():
    real = _write_then(b"never sent", lambda proxy, real: proxy.abort())
    assert real.writes == [] and real.aborted


def test_nothing_is_written_to_a_transport_that_is_closing():
    # the connection was lost before the flush
    real = _write_then(b"for a client that went away", lambda proxy, real: setattr(real, "closed", True))
    assert real.writes == []


def test_empty_writes_are_ignored_and_the_rest_is_the_real_transport():
    async def scenario():
        real = RecordingTransport()
        t = CoalescingTransport(real, asyncio.get_running_loop())
        t.write(b"")
        size_empty = t.get_write_buffer_size()
        t.write(b"abc")
        size = t.get_write_buffer_size()
        t.pause_reading()
        paused = not real.reading
        await _next_iteration()
        return real, size_empty, size, paused, t.get_extra_info("peername")

    real, size_empty, size, paused, peer = asyncio.run(scenario())
    assert size_empty == 7 and size == 7 + 3  # the real buffer plus what is pending
    assert paused and peer == ("127.0.0.1", 50000)
    assert real.writes == [b"abc"]


async def _json_app(scope, receive, send):
    await receive()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"application/json"), (b"content-length", b"2")]})
    await send({"type": "http.response.body", "body": b"{}"})


def _serve_bytes(request: bytes, app=_json_app) -> RecordingTransport:
    """Feed `request` to uvicorn's (coalescing) httptools protocol; return what it wrote."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def scenario():
        protocol = HTTP_PROTOCOL(Config(app, lifespan="off"), ServerState(), {}, asyncio.get_running_loop())
        real = RecordingTransport()
        protocol.connection_made(real)
        protocol.data_received(request)
        for _ in range(20):
            await asyncio.sleep(0)
        return real

    return asyncio.run(scenario())


def test_uvicorn_writes_headers_and_body_of_a_response_in_one_write():
    assert HTTP_PROTOCOL != "auto", "httptools is a locked dependency"
    real = _serve_bytes(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
    assert len(real.writes) == 1, real.writes
    head, _, body = real.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"content-length: 2" in head and body == b"{}"
    assert not real.closed  # keep-alive


def test_a_prediction_of_the_built_predictor_app_is_one_write(served):
    """The served app (fast path in front of KServe) under the one-write protocol."""
    import json

    from tests.unit.serving.test_serving_predictor import ROW, V1

    body = json.dumps({"instances": [ROW]}).encode()
    request = (f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    real = _serve_bytes(request, served.app)
    assert len(real.writes) == 1, real.writes
    head, _, answer = real.writes[0].partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK") and b"x-request-id: " in head
    assert json.loads(answer) == {"predictions": served.app.model.predictor.predict([tuple(ROW.values())])}


def test_connection_close_request_gets_its_whole_response_before_the_close():
    real = _serve_bytes(b"POST / HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}")
    assert len(real.writes) == 1 and real.writes[0].endswith(b"\r\n\r\n{}")
    assert real.closed


def test_the_predictor_gives_kserves_uvicorn_server_its_protocol_and_host():
    from kserve.protocol.rest.server import RESTServer

    from airflow_project.serving.bounded_http import (
        BoundedHttpToolsProtocol,
        ReadLimits,
        http_protocol,
    )
    from airflow_project.serving.kserve_compat import use_predictor_http

    module = types.SimpleNamespace(RESTServer=RESTServer)
    use_predictor_http(module)
    assert issubclass(module.RESTServer, RESTServer)
    rest = module.RESTServer("kserve.model_server:app", None, None, 0)
    assert rest.config.http is http_protocol() is BoundedHttpToolsProtocol
    assert issubclass(rest.config.http, HTTP_PROTOCOL)  # one write per response, bounded reads on top
    assert rest.config.host == "127.0.0.1"  # KServe hard-codes 0.0.0.0
    use_predictor_http(module, "0.0.0.0", ReadLimits(head_timeout=3))
    rest = module.RESTServer("kserve.model_server:app", None, None, 0)
    assert rest.config.host == "0.0.0.0" and rest.config.http.limits == ReadLimits(head_timeout=3)
    untouched = RESTServer("kserve.model_server:app", None, None, 0)  # kserve itself untouched
    assert (untouched.config.http, untouched.config.host) == ("auto", "0.0.0.0")


def test_build_app_leaves_kserve_starting_the_predictor_protocol(served):
    """`build_app()` (what serve() runs) has ModelServer.start() build the one-write, bounded server."""
    from kserve import model_server

    from airflow_project.serving.bounded_http import BoundedHttpToolsProtocol

    rest = model_server.RESTServer("kserve.model_server:app", served.server.dataplane,
                                   served.server.model_repository_extension, 0)
    assert issubclass(rest.config.http, BoundedHttpToolsProtocol) and rest.config.host == "127.0.0.1"


@pytest.mark.parametrize("module", ["loadtest.floor_app", "airflow_project.serving.router"])
def test_floor_and_router_serve_with_the_same_protocol(module, monkeypatch):
    import importlib

    import uvicorn

    from airflow_project.serving.bounded_http import BoundedHttpToolsProtocol

    seen = {}
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: seen.update(kw))
    mod = importlib.import_module(module)
    if module == "loadtest.floor_app":
        mod.main(["--port", "1"])
    else:
        from airflow_project.serving.router import MirrorConfig, Router, serve_router

        serve_router(Router(graph=None, resolve_url=str, client=None, mirror=MirrorConfig("a", "b")), "127.0.0.1", 1)
    assert seen["http"] is BoundedHttpToolsProtocol
