"""The predictor's edge, in process (the app `build_app()` builds, fast path included): no
control plane on the data plane, readiness that means "answers", versioned paths, the spec's
shapes, compressed bodies, request ids, the answering version, and one WARNING line per
client error. Raw-socket bounds are in test_bounded_http (and, on real processes, in
tests/integration/serving/test_serving_edge_live.py)."""

from __future__ import annotations

import gzip
import json
import logging
import zlib

import pytest

from tests.unit.serving.test_serving_predictor import ROW, V1, V2, v2_body

VERSION = "7"  # the unit model's version (conftest)


@pytest.fixture
def logs():
    """Every record of the predictor's loggers and KServe's (which does not propagate)."""
    records: list[logging.LogRecord] = []

    class Capture(logging.Handler):
        def emit(self, record):
            if not any(r is record for r in records):  # seen by two of the loggers below
                records.append(record)

    handler = Capture(level=logging.DEBUG)
    names = ["", "kserve", "airflow_project", "uvicorn"]
    for name in names:
        logging.getLogger(name).addHandler(handler)
    yield records
    for name in names:
        logging.getLogger(name).removeHandler(handler)


# ------------------------------------------------------------------ no control plane
@pytest.mark.parametrize("path", ["/v2/repository/models/wachttijden/unload", "/v2/repository/models/wachttijden/load",
                                  "/v2/repository/index"])
def test_the_model_repository_extension_is_not_served(client, path):
    r = client.post(path, json={})
    assert r.status_code == 404, r.text
    assert client.get("/v2/models/wachttijden/ready").status_code == 200  # still in service
    assert client.post(V1, json={"instances": [ROW]}).status_code == 200
    assert "model_repository_extension" not in client.get("/v2").json()["extensions"]


def test_grpc_repository_calls_are_refused_too(served):
    import asyncio

    with pytest.raises(NotImplementedError):
        asyncio.run(served.server.model_repository_extension.unload("wachttijden"))
    assert served.server.dataplane.model_registry.get_model("wachttijden") is not None


def test_readiness_is_true_only_while_the_model_answers(client, model, monkeypatch):
    paths = ["/v2/health/ready", "/v2/models/wachttijden/ready", f"/v2/models/wachttijden/versions/{VERSION}/ready",
             "/v1/models/wachttijden"]
    assert [client.get(p).status_code for p in paths] == [200] * 4
    monkeypatch.setattr(model, "ready", False)  # what KServe's stop() (and an unload) does
    assert [client.get(p).status_code for p in paths] == [503] * 4
    monkeypatch.setattr(model, "ready", True)

    def broken(rows):
        raise RuntimeError("table gone")

    monkeypatch.setattr(model.predictor, "predict", broken)
    assert [client.get(p).status_code for p in paths] == [503] * 4
    assert "not ready" in client.get("/v2/health/ready").json()["error"]
    assert client.get("/v2/health/live").status_code == 200  # alive, not ready


# ------------------------------------------------------------------ versioned paths
def test_versioned_paths_answer_for_the_loaded_version(client):
    meta = client.get(f"/v2/models/wachttijden/versions/{VERSION}")
    assert meta.status_code == 200 and meta.json()["versions"] == [VERSION]
    assert client.get(f"/v2/models/wachttijden/versions/{VERSION}/ready").json() == {"name": "wachttijden",
                                                                                     "ready": True}
    versioned = client.post(f"/v2/models/wachttijden/versions/{VERSION}/infer", json=v2_body([ROW]))
    plain = client.post(V2, json=v2_body([ROW]))
    assert versioned.status_code == 200, versioned.text
    assert versioned.json() == plain.json() and versioned.json()["model_version"] == VERSION


@pytest.mark.parametrize("path", ["/v2/models/wachttijden/versions/8", "/v2/models/wachttijden/versions/8/ready",
                                  "/v2/models/wachttijden/versions/8/infer"])
def test_any_other_version_is_a_json_404_naming_the_loaded_one(client, path):
    r = client.post(path, json=v2_body([ROW])) if path.endswith("infer") else client.get(path)
    assert r.status_code == 404
    assert "version '8' is not served here" in r.json()["error"] and f"serves version {VERSION}" in r.json()["error"]
    other = client.get("/v2/models/other/versions/1/ready")
    assert other.status_code == 404 and "'other' is not served here" in other.json()["error"]


# ------------------------------------------------------------------ the spec's shapes
def test_answers_have_no_nulls_where_the_spec_has_objects(client):
    fast = client.post(V2, json=v2_body([ROW])).json()
    kserves = client.post(V2, json=dict(v2_body([ROW]), outputs=[{"name": "predictions"}]))  # KServe's own path
    assert kserves.status_code == 200, kserves.text
    for answer in (fast, kserves.json()):
        assert "parameters" not in answer and all("parameters" not in o for o in answer["outputs"])
        assert None not in answer.values()
    meta = client.get("/v2/models/wachttijden").json()
    assert meta["versions"] == [VERSION] and None not in meta.values()
    server = client.get("/v2").json()
    assert set(server) == {"name", "version", "extensions"} and isinstance(server["extensions"], list)
    assert client.get("/v2/").json() == server  # the spec's spelling


@pytest.mark.parametrize("body", [b"{bad", b"[1, 2]", b'{"inputs": 3}', b'{"inputs": [{"name": "x"}]}'])
def test_malformed_or_invalid_v2_bodies_are_400(client, body):
    r = client.post(V2, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert r.json()["error"]


# ------------------------------------------------------------------ Content-Encoding
def _deflate(data: bytes) -> bytes:
    return zlib.compress(data)


def _raw_deflate(data: bytes) -> bytes:
    c = zlib.compressobj(wbits=-zlib.MAX_WBITS)
    return c.compress(data) + c.flush()


@pytest.mark.parametrize("coding,encode", [("gzip", gzip.compress), ("deflate", _deflate),
                                           ("deflate", _raw_deflate), ("x-gzip", gzip.compress)])
@pytest.mark.parametrize("path,body", [(V1, {"instances": [ROW]}), (V2, v2_body([ROW]))], ids=["v1", "v2"])
def test_compressed_bodies_are_decoded(client, coding, encode, path, body):
    raw = json.dumps(body).encode()
    r = client.post(path, content=encode(raw), headers={"content-type": "application/json", "content-encoding": coding})
    plain = client.post(path, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text
    assert r.json() == plain.json()


def test_a_compressed_body_reaching_kserves_path_is_decoded_too(client):
    raw = json.dumps(dict(v2_body([ROW]), outputs=[{"name": "predictions"}])).encode()
    r = client.post(V2, content=gzip.compress(raw), headers={"content-type": "application/json",
                                                              "content-encoding": "gzip"})
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == client.post(V2, json=v2_body([ROW])).json()["outputs"][0]["data"]


def test_the_size_limit_applies_to_the_decoded_body(client, max_body):
    bomb = gzip.compress(b'{"instances": [' + b" " * (max_body * 50) + b"]}")
    assert len(bomb) < max_body
    r = client.post(V1, content=bomb, headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 413 and "decodes to more than the limit" in r.json()["error"]


def test_other_encodings_are_415_naming_the_accepted_ones_and_bad_data_is_400(client):
    raw = json.dumps({"instances": [ROW]}).encode()
    r = client.post(V1, content=raw, headers={"content-type": "application/json", "content-encoding": "br"})
    assert r.status_code == 415 and "gzip, deflate" in r.json()["error"]
    assert r.headers["accept-encoding"] == "gzip, deflate" and r.headers["x-request-id"]
    r = client.post(V1, content=b"not gzip", headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400 and "not gzip data" in r.json()["error"]
    r = client.post(V1, content=gzip.compress(raw)[:-12],
                    headers={"content-type": "application/json", "content-encoding": "gzip"})
    assert r.status_code == 400 and "ends early" in r.json()["error"]


# ------------------------------------------------------------------ request ids, versions
def _raw_answer(served, path: str, body: bytes, *headers: bytes) -> tuple[bytes, dict[bytes, bytes], bytes]:
    """(status line, headers, body) of the served app's answer, as bytes on the wire (the test
    client would re-encode header values as ASCII)."""
    from tests.unit.serving.test_serving_write_coalescing import _serve_bytes

    request = b"\r\n".join([f"POST {path} HTTP/1.1".encode(), b"host: x", b"content-type: application/json",
                             b"content-length: %d" % len(body), *headers, b"", body])
    written = b"".join(_serve_bytes(request, served.app).writes)
    head, _, answer = written.partition(b"\r\n\r\n")
    status, *lines = head.split(b"\r\n")
    return status, dict(line.split(b": ", 1) for line in lines), answer


@pytest.mark.parametrize("rid", ["ünïcode-ïd-☃", "plain-1", "with space and\ttab"])
@pytest.mark.parametrize("path,body", [(V1, {"instances": [ROW]}), (V2, {k: v for k, v in v2_body([ROW]).items()
                                                                          if k != "id"}),
                                       (V2, dict(v2_body([ROW]), id=None, outputs=[{"name": "predictions"}]))],
                         ids=["v1", "v2", "v2 kserve"])
def test_a_valid_request_id_is_kept_byte_for_byte(served, rid, path, body):
    raw = rid.encode()
    status, headers, answer = _raw_answer(served, path, json.dumps(body).encode(), b"x-request-id: " + raw)
    assert status == b"HTTP/1.1 200 OK", answer
    assert headers[b"x-request-id"] == raw
    if path == V2:
        assert json.loads(answer)["id"] == rid  # not its latin-1 reading


def test_an_invalid_request_id_is_replaced_and_said_in_the_log(served, logs):
    status, headers, _ = _raw_answer(served, V1, json.dumps({"instances": [ROW]}).encode(),
                                     b"x-request-id: \xff\xfe not utf-8")
    assert status == b"HTTP/1.1 200 OK"
    new = headers[b"x-request-id"].decode()
    assert len(new) == 36
    said = [m.getMessage() for m in logs if m.levelno == logging.WARNING and "x-request-id" in m.getMessage()]
    assert said and new in said[-1]


@pytest.mark.parametrize("body_id", ["line\r\nbreak", "nul\x00", "tab\tok-but-\x7f"])
def test_a_v2_id_that_is_not_a_header_value_never_breaks_the_answer(client, body_id):
    for body in (dict(v2_body([ROW]), id=body_id),  # the fast path
                 dict(v2_body([ROW]), id=body_id, outputs=[{"name": "predictions"}])):  # KServe's path
        r = client.post(V2, json=body)
        assert r.status_code == 200, r.text
        assert r.json()["id"] == body_id  # echoed in the body, where JSON can carry it
        assert len(r.headers["x-request-id"]) == 36  # a generated header value instead


@pytest.mark.parametrize("kserves_path", [False, True], ids=["fast path", "kserve's path"])
@pytest.mark.parametrize("path", [V1, V2])
def test_every_prediction_says_its_version_and_request_id(client, path, kserves_path):
    headers = {"content-type": "application/json", "x-request-id": "rid-v"}
    body = {"instances": [ROW]} if path == V1 else v2_body([ROW])
    if kserves_path and path == V1:
        headers["content-type"] = "text/plain; charset=x"  # not JSON-readable: KServe's V1 route
    elif kserves_path:
        body["outputs"] = [{"name": "predictions"}]
    r = client.post(path, content=json.dumps(body).encode(), headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["x-model-version"] == VERSION
    assert r.headers["x-request-id"] == "rid-v"


@pytest.mark.parametrize("method,path", [("GET", "/v2/health/ready"), ("GET", "/nope"), ("POST", "/v1/models/x:predict"),
                                         ("POST", V2), ("GET", "/metrics"), ("GET", "/v2/models")])
def test_every_answer_carries_a_request_id(client, method, path):
    r = client.request(method, path, content=b"{}", headers={"content-type": "application/json"})
    assert r.headers.get("x-request-id"), (r.status_code, dict(r.headers))
    assert client.request(method, path, content=b"{}", headers={"content-type": "application/json",
                                                                "x-request-id": "mine"}).headers["x-request-id"] == "mine"


# ------------------------------------------------------------------ logging
def test_a_client_error_is_one_warning_line_without_a_traceback(client, logs):
    cases = [(V1, {"instances": []}), (V2, {"inputs": 3}), ("/v1/models/other:predict", {"instances": [ROW]})]
    for path, body in cases:
        del logs[:]
        r = client.post(path, json=body)
        assert 400 <= r.status_code < 500
        serious = [m for m in logs if m.levelno >= logging.ERROR or m.exc_info]
        warnings = [m for m in logs if m.levelno == logging.WARNING]
        assert not serious, [m.getMessage() for m in serious]
        assert len(warnings) == 1 and str(r.status_code) in warnings[0].getMessage(), \
            [m.getMessage() for m in warnings]


def test_a_server_error_keeps_its_traceback(client, model, monkeypatch, logs):
    def broken(payload, headers=None, response_headers=None):
        raise RuntimeError("boom")

    monkeypatch.setattr(model, "predict", broken)  # KServe's path calls it
    r = client.post(V2, json=dict(v2_body([ROW]), outputs=[{"name": "predictions"}]))
    assert r.status_code == 500
    assert any(m.levelno == logging.ERROR and m.exc_info for m in logs)


# ------------------------------------------------------------------ methods
@pytest.mark.parametrize("path", ["/v2/health/live", "/v2/health/ready", "/v2/models/wachttijden/ready",
                                  "/v1/models/wachttijden", "/"])
def test_head_on_health_endpoints(client, path):
    r = client.head(path)
    assert r.status_code == 200 and r.content == b""
    assert int(r.headers["content-length"]) == len(client.get(path).content)


@pytest.mark.parametrize("path", [V1, V2, f"/v2/models/wachttijden/versions/{VERSION}/infer", "/v1/models/other:predict"])
@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_other_methods_on_predict_paths_are_a_clear_405(client, path, method):
    r = client.request(method, path)
    assert r.status_code == 405, r.text
    assert r.headers["allow"] == "POST" and "predictions are POST" in r.json()["error"]
