"""Hostile clients on raw sockets against real predictor and router processes: oversized and
slow request heads, stalled bodies, silent and surplus connections, a CR/LF in a V2 id; the
memory a process holds (its RSS) must not grow with what a client sends. Also: where they
listen, the repository extension, ids and versions through the routers, and the log line of
a client error.

The "edge" processes run with short deadlines and a small connection bound (EDGE_FLAGS), so
the deadline tests take seconds; the defaults are in `serving.constants`."""

from __future__ import annotations

import json
import socket
import time

import httpx
import psutil
import pytest

from airflow_project.serving.constants import MAX_HEAD_BYTES
from tests.integration.serving.conftest import start_predictor, start_router, stop

pytestmark = pytest.mark.integration

HEAD_S, BODY_S, MAX_CONN = 2.0, 2.0, 16
EDGE_FLAGS = ("--header-timeout", str(HEAD_S), "--body-timeout", str(BODY_S), "--max-connections", str(MAX_CONN))
SLACK_S = 4.0  # a busy machine: never tuned down to what it happens to show
V1 = "/v1/models/wachttijden:predict"
V2 = "/v2/models/wachttijden/infer"
ROW = {"TYPE_WACHTTIJD": "Behandeling", "SPECIALISME": "Orthopedie (305)",
       "ROAZ_REGIO": "Acute Zorg Oost", "TYPE_ZORGINSTELLING": "Ziekenhuis"}
MIB = 1024 * 1024


@pytest.fixture(scope="module")
def edge_predictor(tmp_path_factory, mlflow_server, registered):
    p = start_predictor(tmp_path_factory.mktemp("edge-predictor"), "models:/wachttijden@champion", mlflow_server,
                        extra=EDGE_FLAGS)
    yield p
    stop(p.proc)


@pytest.fixture(scope="module")
def edge_router(tmp_path_factory, primary):
    r = start_router(tmp_path_factory.mktemp("edge-router"), {
        "mode": "mirror", "mirror": {"primary": "p", "shadow": "p", "percentage": 0},
        "services": {"p": primary.url}}, extra=EDGE_FLAGS)
    yield r
    stop(r.proc)


@pytest.fixture(params=["predictor", "router"])
def edge(request, edge_predictor, edge_router):
    """A predictor or a router; `.health` is a GET it answers 200 (the router runs its graph for
    any other path)."""
    proc = edge_predictor if request.param == "predictor" else edge_router
    proc.health = b"/v2/health/live" if request.param == "predictor" else b"/readyz"
    return proc


def _get(proc) -> bytes:
    return b"GET " + proc.health + b" HTTP/1.1\r\nHost: x\r\n\r\n"


def _addr(proc) -> tuple[str, int]:
    host, port = proc.url.removeprefix("http://").split(":")
    return host, int(port)


def _rss(proc) -> int:
    return psutil.Process(proc.proc.pid).memory_info().rss


def _read_until_closed(sock: socket.socket, timeout: float) -> tuple[bytes, float]:
    """What the server sends until it closes (or resets) the connection, and when that was."""
    sock.settimeout(timeout)
    got = b""
    try:
        while chunk := sock.recv(65536):
            got += chunk
    except (ConnectionResetError, TimeoutError):
        pass
    return got, time.monotonic()


def _closed(sock: socket.socket) -> bool:
    sock.settimeout(0.5)
    try:
        return sock.recv(1) == b""
    except (ConnectionResetError, BrokenPipeError):
        return True
    except TimeoutError:
        return False


def _still_serves(proc) -> None:
    r = httpx.post(proc.url + V1, json={"instances": [ROW]}, timeout=30)
    assert r.status_code == 200, r.text


# ------------------------------------------------------------------ sizes and memory
def test_huge_and_many_unfinished_heads_are_refused_and_memory_stays_flat(edge):
    _still_serves(edge)
    before = _rss(edge)
    with socket.create_connection(_addr(edge), timeout=30) as sock:  # one 64 MiB header
        sock.sendall(b"POST " + V1.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
        sent = 0
        try:
            while sent < 64 * MIB:
                sock.sendall(b"a" * MIB)
                sent += MIB
        except (BrokenPipeError, ConnectionResetError):
            pass  # refused early: the server stopped reading
        answer, _ = _read_until_closed(sock, 10)
    assert sent < 64 * MIB, "the server read a 64 MiB header"
    assert answer == b"" or answer.startswith(b"HTTP/1.1 431 "), answer[:200]
    socks = []
    for _ in range(10):  # unfinished 8 MiB heads, held open at once
        s = socket.create_connection(_addr(edge), timeout=30)
        s.sendall(b"GET " + edge.health + b" HTTP/1.1\r\nHost: x\r\nX-Big: ")
        try:
            for _ in range(8):
                s.sendall(b"b" * MIB)
        except (BrokenPipeError, ConnectionResetError):
            pass
        socks.append(s)
    grown = _rss(edge) - before
    for s in socks:
        s.close()
    assert grown < 16 * MIB, f"RSS grew by {grown / MIB:.1f} MiB"
    _still_serves(edge)


def test_a_head_over_the_cap_is_a_431_the_client_reads(edge):
    with socket.create_connection(_addr(edge), timeout=30) as sock:
        sock.sendall(b"GET " + edge.health + b" HTTP/1.1\r\nHost: x\r\nX-Big: " + b"c" * (MAX_HEAD_BYTES + 10)
                     + b"\r\n\r\n")
        answer, _ = _read_until_closed(sock, 10)
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 431 Request Header Fields Too Large", answer[:300]
    assert b"connection: close" in rest and b'"error"' in rest


def test_a_long_request_line_is_414_and_a_bad_one_400(edge):
    for line, want in ((b"GET /" + b"d" * 9000 + b" HTTP/1.1", b"414"), (b"G\x01T / HTTP/1.1", b"400")):
        with socket.create_connection(_addr(edge), timeout=30) as sock:
            sock.sendall(line + b"\r\nHost: x\r\n\r\n")
            answer, _ = _read_until_closed(sock, 10)
        assert answer.split(b" ", 2)[1] == want, answer[:200]


# ------------------------------------------------------------------ deadlines
def test_a_half_sent_head_gets_408_and_a_close_within_the_head_deadline(edge):
    with socket.create_connection(_addr(edge), timeout=30) as sock:
        start = time.monotonic()
        sock.sendall(b"POST " + V1.encode() + b" HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        answer, closed_at = _read_until_closed(sock, HEAD_S + SLACK_S)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert closed_at - start < HEAD_S + SLACK_S


def test_a_body_shorter_than_its_content_length_gets_408_within_the_body_deadline(edge):
    body = json.dumps({"instances": [ROW]}).encode()
    with socket.create_connection(_addr(edge), timeout=30) as sock:
        sock.sendall(f"POST {V1} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                     f"Content-Length: {len(body) + 100}\r\n\r\n".encode() + body)
        start = time.monotonic()
        answer, closed_at = _read_until_closed(sock, BODY_S + SLACK_S)
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert closed_at - start < BODY_S + SLACK_S


def test_a_silent_connection_is_closed_and_a_keep_alive_one_is_not_cut_short(edge):
    silent = socket.create_connection(_addr(edge), timeout=30)
    kept = socket.create_connection(_addr(edge), timeout=30)
    kept.sendall(_get(edge))
    assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
    time.sleep(HEAD_S + 1.0)
    assert _closed(silent)
    kept.sendall(_get(edge))  # idle past the head deadline: still open
    assert kept.recv(65536).startswith(b"HTTP/1.1 200 ")
    silent.close()
    kept.close()


def test_connections_over_the_bound_get_503_and_the_server_recovers(edge):
    time.sleep(0.5)  # connections of earlier tests are gone
    held = [socket.create_connection(_addr(edge), timeout=30) for _ in range(MAX_CONN)]
    for s in held:
        s.sendall(_get(edge))
        assert s.recv(65536).startswith(b"HTTP/1.1 200 ")
    with socket.create_connection(_addr(edge), timeout=30) as extra:
        extra.sendall(_get(edge))
        answer, _ = _read_until_closed(extra, 10)
    assert answer.startswith(b"HTTP/1.1 503 "), answer[:200]
    for s in held:
        s.close()
    time.sleep(0.5)
    _still_serves(edge)


# ------------------------------------------------------------------ the rest of the edge
def test_a_crlf_in_a_v2_id_is_answered_and_keeps_the_connection(edge_predictor):
    body = json.dumps({"id": "evil\r\nx-injected: 1", "inputs": [
        {"name": f, "datatype": "BYTES", "shape": [1], "data": [ROW[f]]} for f in ROW]}).encode()
    request = (f"POST {V2} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(body)}\r\n\r\n").encode() + body
    with socket.create_connection(_addr(edge_predictor), timeout=30) as sock:
        for _ in range(2):  # the same connection, twice
            sock.sendall(request)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                assert chunk, f"connection dropped: {answer[:300]!r}"
                answer += chunk
            head, _, payload = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ")
            assert b"x-injected" not in head.lower()
            assert json.loads(payload)["id"] == "evil\r\nx-injected: 1"


@pytest.mark.parametrize("which", ["predictor", "router"])
def test_servers_listen_on_127_0_0_1_by_default(which, primary, edge_router):
    proc = primary if which == "predictor" else edge_router
    listening = {c.laddr.ip for c in psutil.Process(proc.proc.pid).net_connections(kind="inet")
                 if c.status == psutil.CONN_LISTEN}
    assert listening == {"127.0.0.1"}


def test_the_model_cannot_be_unloaded_over_the_data_plane(edge_predictor):
    for path in ("/v2/repository/models/wachttijden/unload", "/v2/repository/models/wachttijden/load",
                 "/v2/repository/index"):
        assert httpx.post(edge_predictor.url + path, json={}).status_code == 404
    assert httpx.get(edge_predictor.url + "/v2/models/wachttijden/ready").status_code == 200
    _still_serves(edge_predictor)


def test_a_client_error_is_one_warning_line_in_the_log(edge_predictor):
    mark = len(edge_predictor.log_lines())
    r = httpx.post(edge_predictor.url + V2, json={"inputs": 3}, headers={"x-request-id": "it-warn"})
    assert r.status_code == 400
    time.sleep(0.5)
    new = edge_predictor.log_lines()[mark:]
    assert not any("Traceback" in line or " ERROR " in line for line in new), new
    warnings = [line for line in new if "WARNING" in line and "-> 400" in line]
    assert len(warnings) == 1, new


@pytest.mark.parametrize("mode", ["graph", "mirror"])
def test_routers_pass_on_the_request_id_and_the_answering_version(mode, primary, shadow, registered, router_factory):
    from tests.integration.serving.test_serving_live import graph_config

    router = router_factory(graph_config(primary, shadow, mode))
    r = httpx.post(router.url + V1, json={"instances": [ROW]}, headers={"x-request-id": "it-ids"})
    assert r.status_code == 200, r.text
    assert r.headers["x-request-id"] == "it-ids"
    assert r.headers["x-model-version"] == registered["champion"][0]  # the primary answers
    generated = httpx.post(router.url + V1, json={"instances": [ROW]})
    assert len(generated.headers["x-request-id"]) == 36
    assert httpx.get(router.url + "/readyz").headers["x-request-id"]
