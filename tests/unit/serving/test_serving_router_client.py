"""The router's step clients (`H1Client`, and `AiohttpClient` it hands https to) against real sockets on 127.0.0.1."""

from __future__ import annotations

import asyncio
import json

import pytest

from airflow_project.serving.router import MirrorConfig, Router
from airflow_project.serving.step_client import AiohttpClient, H1Client, StepAnswer

pytestmark = pytest.mark.parametrize("Client", [H1Client, AiohttpClient])


async def _upstream(behaviour, close_after_response=False):
    """A tiny HTTP/1.1 keep-alive server; returns (server, port, seen requests)."""
    seen: list[tuple[str, dict, bytes]] = []

    async def handle(reader, writer):
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.lower(): v.strip() for k, v in (x.split(":", 1) for x in lines[1:] if x)}
                body = await reader.readexactly(int(headers.get("content-length", "0")))
                seen.append((lines[0], headers, body))
                status, payload, delay = behaviour(body)
                if delay:
                    await asyncio.sleep(delay)
                writer.write(f"HTTP/1.1 {status} X\r\nX-Model-Version: 7\r\ncontent-length: {len(payload)}\r\n\r\n"
                             .encode() + payload)
                await writer.drain()
                if close_after_response:  # without telling the client: a stale keep-alive
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1], seen


def test_pooled_client_posts_keeps_alive_and_forwards_headers(Client):
    async def scenario():
        server, port, seen = await _upstream(lambda body: (200, b'{"predictions": [1.5]}', 0))
        url = f"http://127.0.0.1:{port}"
        router = Router(graph={"spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [
            {"serviceName": "a"}, {"serviceName": "b", "data": "$response"}]}}}},
            resolve_url=lambda name: f"{url}/{name}", client=Client(timeout=5))
        results = [await router.handle(b'{"instances": [1]}', {"x-request-id": "r1", "cookie": "c"}) for _ in range(3)]
        await router.client.aclose()
        server.close()
        return results, seen

    results, seen = asyncio.run(scenario())
    assert results == [StepAnswer(b'{"predictions": [1.5]}', 200, b"7")] * 3  # with the version it said
    assert [s[0] for s in seen] == ["POST /a HTTP/1.1", "POST /b HTTP/1.1"] * 3
    assert seen[0][2] == b'{"instances": [1]}' and seen[1][2] == b'{"predictions": [1.5]}'
    for _, headers, _ in seen:
        assert headers["x-request-id"] == "r1"
        assert headers["content-type"] == "application/json"
        assert "cookie" not in headers


def test_pooled_client_non_2xx_is_returned_as_is(Client):
    async def scenario():
        server, port, _ = await _upstream(lambda body: (400, b'{"error": "bad"}', 0))
        client = Client(timeout=5)
        out = await client.post(f"http://127.0.0.1:{port}/x", b"{}", {"content-type": "application/json"})
        await client.aclose()
        server.close()
        return out

    assert asyncio.run(scenario()) == StepAnswer(b'{"error": "bad"}', 400, b"7")


def test_pooled_client_refused_and_timeout_are_500(Client):
    async def scenario():
        server, port, _ = await _upstream(lambda body: (200, b"{}", 1.0))
        slow = f"http://127.0.0.1:{port}"
        dead = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        dead_port = dead.sockets[0].getsockname()[1]
        dead.close()
        await dead.wait_closed()
        seq = lambda: {"spec": {"nodes": {"root": {"routerType": "Sequence", "steps": [{"serviceName": "a"}]}}}}
        refused = Router(graph=seq(), resolve_url=lambda n: f"http://127.0.0.1:{dead_port}/x", client=Client(timeout=5))
        timeout = Router(graph=seq(), resolve_url=lambda n: slow + "/x", client=Client(timeout=0.2))
        out = [await refused.handle(b"{}", {}), await timeout.handle(b"{}", {})]
        for r in (refused, timeout):
            await r.client.aclose()
        server.close()
        return out

    (b1, s1, v1), (b2, s2, v2) = asyncio.run(scenario())
    assert v1 is v2 is None
    assert s1 == s2 == 500
    assert json.loads(b1)["error"] == json.loads(b2)["error"] == "Failed to process request"
    assert "Post" in json.loads(b1)["cause"] and "Timeout" in json.loads(b2)["cause"]


def test_pooled_client_mirror_fire_and_forget(Client):
    async def scenario():
        server, port, seen = await _upstream(lambda body: (200, b'{"predictions": [2.0]}', 0))
        base = f"http://127.0.0.1:{port}"
        router = Router(graph=None, resolve_url=lambda n: f"{base}/{n}", client=Client(timeout=5),
                        mirror=MirrorConfig("primary", "shadow"))
        out = await router.handle(b"{}", {})
        await asyncio.sleep(0.2)
        await router.client.aclose()
        server.close()
        return out, sorted(s[0] for s in seen)

    out, lines = asyncio.run(scenario())
    assert out == StepAnswer(b'{"predictions": [2.0]}', 200, b"7")  # the primary's
    assert lines == ["POST /primary HTTP/1.1", "POST /shadow HTTP/1.1"]


def test_stale_keep_alive_connection_is_retried(Client):
    async def scenario():
        server, port, seen = await _upstream(lambda body: (200, b'{"predictions": [1.0]}', 0), close_after_response=True)
        client = Client(timeout=5)
        out = []
        for _ in range(3):
            out.append(await client.post(f"http://127.0.0.1:{port}/x", b"{}", {"content-type": "application/json"}))
            await asyncio.sleep(0.05)  # let the close arrive
        await client.aclose()
        server.close()
        return out, len(seen)

    out, n = asyncio.run(scenario())
    assert out == [StepAnswer(b'{"predictions": [1.0]}', 200, b"7")] * 3
    assert n == 3
