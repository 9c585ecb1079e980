"""The predictor's raw-ASGI fast path (`server.PredictFastPath`): same answers as KServe's
FastAPI path for valid requests, and every bad input delegated to KServe unchanged."""

from __future__ import annotations

import json
import logging

import pytest

from airflow_project.serving.constants import PREDICTION_LOGGER
from tests.unit.serving.test_serving_predictor import BAD_V1, BAD_V2, ROW, V1, V2, v2_body


@pytest.fixture(scope="module")
def fast(served, model, max_body):
    """The KServe app (as `build_app()` built it) behind a fast path of its own, plus a
    counter of requests that reached KServe."""
    from fastapi.testclient import TestClient

    from airflow_project.serving.server import fast_path_app

    delegated: list[str] = []
    app = served.kserve_app

    async def counting(scope, receive, send):
        if scope["type"] == "http":
            delegated.append(scope["path"])
        await app(scope, receive, send)

    wrapped = fast_path_app(counting, model, max_body)
    with TestClient(wrapped, raise_server_exceptions=False) as c:
        c.delegated = delegated
        yield c


def _post(c, path, body, **headers):
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return c.post(path, content=raw, headers={"content-type": "application/json", **headers})


def _delegated(fast, kserve_client, path, body):
    """The fast path's answer, after checking KServe gave it, exactly as KServe alone does."""
    fast.delegated.clear()
    got = _post(fast, path, body)
    assert fast.delegated == [path]
    want = _post(kserve_client, path, body)
    assert (got.status_code, got.content) == (want.status_code, want.content)
    return got


ROWS = [ROW, dict(ROW, SPECIALISME="Orthopedie (305)"), dict(ROW, ROAZ_REGIO="Onbekende regio"),
        {k: "never seen" for k in ROW}]
VALID = [
    ("v1 one row", V1, {"instances": [ROW]}),
    ("v1 rows", V1, {"instances": ROWS}),
    ("v2 pd", V2, v2_body(ROWS)),
    ("v2 no content type", V2, v2_body(ROWS, pd_content_type=False)),
    ("v2 2d", V2, v2_body(ROWS, shape_2d=True)),
    ("v2 no id", V2, {k: v for k, v in v2_body(ROWS).items() if k != "id"}),
    ("v2 empty id", V2, dict(v2_body(ROWS), id="")),
    ("v2 null parameters", V2, dict(v2_body(ROWS), parameters=None)),
]


@pytest.mark.parametrize("rid", [None, "rid-42"])
@pytest.mark.parametrize("case,path,body", VALID, ids=[c[0] for c in VALID])
def test_valid_requests_are_answered_identically_without_kserve(fast, kserve_client, case, path, body, rid):
    headers = {"x-request-id": rid} if rid else {}
    fast.delegated.clear()
    got = _post(fast, path, body, **headers)
    assert fast.delegated == []  # answered by the fast path
    want = _post(kserve_client, path, body, **headers)
    assert got.status_code == want.status_code == 200
    assert got.headers["content-type"] == want.headers["content-type"]
    if path == V2 and not rid and not body.get("id"):  # generated ids differ: compare the rest
        g, w = got.json(), want.json()
        assert g.pop("id") == got.headers["x-request-id"]
        w.pop("id")
        assert g == w
    else:
        assert got.content == want.content  # byte for byte
    if rid:
        assert got.headers["x-request-id"] == rid
    elif path == V2 and body.get("id"):
        assert got.headers["x-request-id"] == body["id"]  # the id the log line carries
    else:
        assert len(got.headers["x-request-id"]) == 36  # a generated uuid


@pytest.mark.parametrize("case,body,message", BAD_V1, ids=[c[0] for c in BAD_V1])
def test_bad_v1_is_delegated(fast, kserve_client, case, body, message):
    got = _delegated(fast, kserve_client, V1, body)
    assert got.status_code == 400
    assert message in got.json()["error"]


@pytest.mark.parametrize("case,body,status,message", BAD_V2, ids=[c[0] for c in BAD_V2])
def test_bad_v2_is_delegated(fast, kserve_client, case, body, status, message):
    got = _delegated(fast, kserve_client, V2, body)
    assert got.status_code == status and message in got.json()["error"]


COERCED_V2 = [  # valid for KServe (pydantic coerces or ignores), but not canonical: delegated
    ("float shape", dict(v2_body([ROW]), inputs=[dict(i, shape=[1.0]) for i in v2_body([ROW])["inputs"]])),
    ("outputs requested", dict(v2_body([ROW]), outputs=[{"name": "predictions"}])),
    ("input parameters", dict(v2_body([ROW]), inputs=[dict(i, parameters={}) for i in v2_body([ROW])["inputs"]])),
    ("extra top-level field", dict(v2_body([ROW]), extra=1)),
    ("other parameters", dict(v2_body([ROW]), parameters={"content_type": "pd", "x": 1})),
]


@pytest.mark.parametrize("case,body", COERCED_V2, ids=[c[0] for c in COERCED_V2])
def test_uncommon_v2_forms_are_delegated(fast, kserve_client, case, body):
    _delegated(fast, kserve_client, V2, body)


RAW_BAD = [b"{bad", b"", b"\xff\xfe", b'{"instances": [', b"[" * 5000 + b"]" * 5000, b'{"a": NaN}', b"null", b"[]",
           b'{"instances": [' + json.dumps(ROW).encode() + b'], "instances": 3}']


@pytest.mark.parametrize("path", [V1, V2])
@pytest.mark.parametrize("body", RAW_BAD)
def test_malformed_bodies_are_delegated(fast, kserve_client, path, body):
    got = _delegated(fast, kserve_client, path, body)
    assert 400 <= got.status_code < 500


def test_other_content_types_paths_and_methods_are_delegated(fast, kserve_client):
    body = json.dumps({"instances": [ROW]}).encode()
    cases = [
        ("POST", V1, {"content-type": "image/png"}),
        ("POST", V1, {"content-type": "application/json", "ce-specversion": "1.0", "ce-id": "1",
                      "ce-source": "s", "ce-type": "t"}),
        ("POST", "/v1/models/other:predict", {"content-type": "application/json"}),
        ("POST", "/v2/models/other/infer", {"content-type": "application/json"}),
        ("GET", "/v2/models", {}),
    ]
    for method, path, headers in cases:
        fast.delegated.clear()
        got = fast.request(method, path, content=body, headers=headers)
        assert fast.delegated == [path], (method, path, headers)
        want = kserve_client.request(method, path, content=body, headers=headers)
        assert (got.status_code, got.content) == (want.status_code, want.content)
    fast.delegated.clear()
    got = fast.post(V2, content=b"{}xxxx", headers={"content-type": "application/octet-stream",
                                                       "inference-header-content-length": "2"})
    assert fast.delegated == [V2] and got.status_code == 400


@pytest.mark.parametrize("content_type", [None, "application/octet-stream", "text/plain; charset=utf-8",
                                          "application/x-www-form-urlencoded", "application/json; charset=utf-8"])
@pytest.mark.parametrize("case,path,body", [VALID[0], VALID[2]], ids=["v1", "v2"])
def test_json_without_a_json_content_type_is_read_as_json(fast, kserve_client, content_type, case, path, body):
    """No Content-Type (tritonclient's JSON mode), a generic one, or JSON with parameters and
    no binary-extension header: the body is JSON, answered as KServe answers it as JSON."""
    headers = {"x-request-id": "rid-1"} | ({"content-type": content_type} if content_type else {})
    fast.delegated.clear()
    got = fast.post(path, content=json.dumps(body).encode(), headers=headers)
    assert fast.delegated == []
    want = _post(kserve_client, path, body, **{"x-request-id": "rid-1"})
    assert (got.status_code, got.content) == (want.status_code, want.content) and got.status_code == 200


def test_a_v2_body_without_content_type_that_is_not_valid_gets_kserves_json_answer(fast, kserve_client):
    """Delegated as JSON, so the error is about the body, not a missing binary header."""
    body = dict(v2_body([ROW]), outputs=[{"name": "nope"}])
    fast.delegated.clear()
    got = fast.post(V2, content=json.dumps(body).encode())
    want = _post(kserve_client, V2, body)
    assert fast.delegated == [V2]
    assert (got.status_code, got.content) == (want.status_code, want.content)
    assert "inference-header-content-length" not in got.text


@pytest.mark.parametrize("path", [V1, V2])
def test_size_limit(fast, max_body, path):
    big = {"instances": [ROW] * (max_body // 100)}
    fast.delegated.clear()
    r = _post(fast, path, big)
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    def chunks():  # no Content-Length: counted while streaming, then handed to KServe's guard
        for _ in range(max_body // 1000 + 2):
            yield b" " * 1000

    r = fast.post(path, content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413, r.text
    assert fast.delegated == [path, path]

    def valid_chunks():  # a valid streamed body below the limit is answered by the fast path
        raw = json.dumps({"instances": [ROW]}).encode()
        yield raw[:10]
        yield raw[10:]

    fast.delegated.clear()
    r = fast.post(V1, content=valid_chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 200 and fast.delegated == []


def test_log_line_and_metrics(fast):
    records: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record):
            records.append(record.getMessage())

    def count():
        text = fast.get("/metrics").text
        line = next(x for x in text.splitlines() if x.startswith('request_predict_seconds_count{model_name="wachttijden"}'))
        return float(line.split()[-1])

    before = count()
    handler = Capture()
    logging.getLogger(PREDICTION_LOGGER).addHandler(handler)
    try:
        r1 = _post(fast, V1, {"instances": [ROW, ROW]}, **{"x-request-id": "abc-123"})
        r2 = _post(fast, V2, v2_body([ROW]))
    finally:
        logging.getLogger(PREDICTION_LOGGER).removeHandler(handler)
    assert count() == before + 2
    assert len(records) == 2
    line = json.loads(records[0])
    assert line["event"] == "prediction"
    assert line["request_id"] == "abc-123"
    assert (line["model_name"], line["model_version"], line["protocol"]) == ("wachttijden", "7", "v1")
    assert line["inputs"] == [ROW, ROW]
    assert line["outputs"] == r1.json()["predictions"]
    assert line["client"] == "testclient:50000"  # the line is the request's access record
    v2 = json.loads(records[1])
    assert v2["protocol"] == "v2"
    assert v2["request_id"] == "req-1" == r2.json()["id"] == r2.headers["x-request-id"]


class _UvicornCycle:
    """Stands in for uvicorn's RequestResponseCycle: the app gets its bound `send`, and
    uvicorn writes its access line when the response starts if `access_log` is still set."""

    def __init__(self) -> None:
        self.access_log = True
        self.messages: list[dict] = []

    async def send(self, message: dict) -> None:
        self.messages.append(message)


def _call(app, path: str, body: bytes) -> _UvicornCycle:
    import asyncio

    scope = {"type": "http", "method": "POST", "path": path, "query_string": b"", "root_path": "",
             "scheme": "http", "http_version": "1.1", "server": ("127.0.0.1", 8080),
             "client": ("10.0.0.7", 41000), "raw_path": path.encode(),
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]}
    messages = [{"type": "http.request", "body": body, "more_body": False}]

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    cycle = _UvicornCycle()
    asyncio.run(app(scope, receive, cycle.send))
    return cycle


def test_uvicorn_access_line_is_skipped_only_for_fast_path_answers(fast):
    answered = _call(fast.app, V1, json.dumps({"instances": [ROW]}).encode())
    assert answered.messages[0]["status"] == 200
    assert answered.access_log is False  # its prediction line is the access record
    fast.delegated.clear()
    bad = _call(fast.app, V1, json.dumps({"instances": [dict(ROW, EXTRA="x")]}).encode())
    assert fast.delegated == [V1] and bad.messages[0]["status"] == 400
    assert bad.access_log is True  # KServe answered: uvicorn writes its access line
