"""Over-limit bodies get a 413 that every client reads: the predictor and the router write
the answer, then read and discard the rest of the body before closing (a lingering close),
so Python's urllib (which sends the whole body before reading) and a raw socket both see
the 413 instead of a connection reset. The body is 7x the 4 MiB limit."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from airflow_project.serving.constants import MAX_BODY_BYTES

pytestmark = pytest.mark.integration

V1 = "/v1/models/wachttijden:predict"
BODY = b'{"instances": [' + b" " * (7 * MAX_BODY_BYTES) + b"]}"
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


@pytest.fixture(params=["predictor", "router"])
def url(request, primary, shadow, router_factory) -> str:
    if request.param == "predictor":
        return primary.url + V1
    router = router_factory({"mode": "mirror", "mirror": {"primary": "p", "shadow": "s", "percentage": 100},
                             "services": {"p": primary.url, "s": shadow.url}})
    return router.url + V1


def test_urllib_reads_the_413(url: str) -> None:
    for _ in range(3):  # every time, not by luck of timing
        request = urllib.request.Request(url, data=BODY, headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as info:
            NO_PROXY.open(request, timeout=60)
        assert info.value.code == 413
        assert b"exceeds the limit of 4194304 bytes" in info.value.read()


def test_a_raw_socket_reads_the_413_and_a_clean_close(url: str) -> None:
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(BODY)}\r\n\r\n").encode()
    with socket.create_connection((parts.hostname, parts.port), timeout=60) as sock:
        sock.sendall(head + BODY)  # all of it, before reading anything
        answer = b""
        while chunk := sock.recv(65536):  # ends with the server's FIN, not a reset
            answer += chunk
    status, _, rest = answer.partition(b"\r\n")
    assert status == b"HTTP/1.1 413 Request Entity Too Large"
    assert b"connection: close" in rest.lower() and b"exceeds the limit" in rest
